"""Every activity heartbeats while it runs (activities/heartbeat.py), on the real dev server.

An activity three times longer than its heartbeat timeout completes in one attempt with the
interceptor; without it, Temporal ends the attempt at the first silent heartbeat timeout, which
is what lets a dead worker's work move on in seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.worker import Interceptor, Worker

from activities.heartbeat import HeartbeatWhileRunning

HEARTBEAT_TIMEOUT = timedelta(seconds=1)


@activity.defn(name="slow_step")
async def slow_step() -> int:
    await asyncio.sleep(3 * HEARTBEAT_TIMEOUT.total_seconds())
    return activity.info().attempt


@workflow.defn(name="SlowStep", sandboxed=False)
class SlowStep:
    @workflow.run
    async def run(self) -> int:
        return await workflow.execute_activity(
            "slow_step", start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=HEARTBEAT_TIMEOUT, result_type=int,
            retry_policy=RetryPolicy(maximum_attempts=1))


async def _run_slow_step(client: Client, interceptors: list[Interceptor]) -> int:
    queue = f"heartbeat-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[SlowStep], activities=[slow_step],
                      interceptors=interceptors):
        return await client.execute_workflow(SlowStep.run, id=queue, task_queue=queue,
                                             execution_timeout=timedelta(seconds=60))


async def test_an_activity_longer_than_its_heartbeat_timeout_completes_while_beating(dev_client: Client):
    assert await _run_slow_step(dev_client, [HeartbeatWhileRunning()]) == 1


async def test_without_the_beats_the_attempt_ends_at_the_heartbeat_timeout(dev_client: Client):
    with pytest.raises(WorkflowFailureError) as failure:
        await _run_slow_step(dev_client, [])
    assert "heartbeat" in str(failure.value.cause.cause).lower()
