"""A query answered by a fresh worker after a timer fired must not change what the pair does.

The path that froze pairs for ever: the worker holding a pair (its sticky worker) dies while the
pair waits on a timer; the timer fires while no worker holds the pair; HR (or the Web UI, which
queries a pair while its page is open) asks for the pair's `state`. A fresh worker answers that
query from the history, which ends with the timer's firing but without a new workflow task, so
the SDK runs the timer-fired step with the clock of the task *before* the timer fired, keeps that
state in its cache, and sends the commands it decided on the next real workflow task. A
workflow that decided "is the deadline due?" from `workflow.now()` saw "not yet", started a timer
for the remainder, and left a history that no replay can follow (a non-determinism error on the
next worker that does not have it cached).

Here the same happens on the real dev server with `worker.py` killed by SIGKILL; the pair must
send the reminder when its timer fires, its history must replay, and no workflow task may fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import timedelta

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Replayer

from devstack.temporal import TemporalDevServer
from tests.e2e.conftest import WorkerProcess, worker_env
from tests.workflow.pairs import MENTEE, MENTOR, pair_input
from workflows.inputs import pair_workflow_id
from workflows.pair import MentoringPair
from workflows.pair_state import PairOutcome, PairState

REMINDER_AFTER_S = 8


async def _history_kinds(handle: WorkflowHandle) -> list[str]:
    history = await handle.fetch_history()
    return [EventType.Name(e.event_type) for e in history.events]


async def _wait_for_history_event(handle: WorkflowHandle, kind: str, timeout_s: float, after: int = 0) -> int:
    """Wait until the history holds `kind` beyond index `after`; returns its index."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kinds = await _history_kinds(handle)
        found = [i for i, k in enumerate(kinds) if k == kind and i >= after]
        if found:
            return found[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {kind} in the history within {timeout_s}s")


async def test_a_query_answered_by_a_fresh_worker_after_a_timer_fired_keeps_the_pair_replayable(
        temporal_dev_server: TemporalDevServer, dev_client: Client, database_url: str, tmp_path):
    task_queue = f"mentoring-stale-{uuid.uuid4().hex[:8]}"
    env = dict(DATABASE_URL=database_url, TEMPORAL_ADDRESS=temporal_dev_server.address,
               TEMPORAL_TASK_QUEUE=task_queue, STATE_DIR=str(tmp_path / "state"))
    sticky, fresh = WorkerProcess(worker_env(**env)), WorkerProcess(worker_env(**env))
    data = pair_input(policy={"motivation_reminder_after": f"PT{REMINDER_AFTER_S}S"})
    workflow_id = pair_workflow_id(data["programme_id"], MENTOR, MENTEE)
    handle: WorkflowHandle | None = None
    try:
        sticky.start()
        handle = await dev_client.start_workflow(
            "MentoringPair", data, id=workflow_id, task_queue=task_queue, result_type=PairOutcome,
            run_timeout=timedelta(minutes=5))
        # The pair asked the mentor for their motivation and waits on the reminder's timer.
        await _wait_for_history_event(handle, "EVENT_TYPE_TIMER_STARTED", 60)
        sticky.kill()  # the worker that holds the pair in its cache dies: nothing cleans up
        # HR looks at the pair: the query waits for the dead worker, then goes to the pair's task
        # queue, where the fresh worker answers it from a history that by then ends with the
        # timer's firing (the workflow task it scheduled still waits for the dead worker).
        query = asyncio.ensure_future(handle.query("state", result_type=PairState))
        fresh.start()
        fired = await _wait_for_history_event(handle, "EVENT_TYPE_TIMER_FIRED", 60)
        state = await asyncio.wait_for(query, 60)
        assert state.stage.value == "awaiting_motivation"

        # The reminder is sent because its timer fired, whatever clock the query ran with.
        deadline = time.monotonic() + 90
        while "motivation_reminder" not in state.timers_fired:
            assert time.monotonic() < deadline, f"the reminder was never sent: {state}"
            await asyncio.sleep(0.5)
            state = await asyncio.wait_for(handle.query("state", result_type=PairState), 60)
        kinds = await _history_kinds(handle)
        assert "EVENT_TYPE_TIMER_STARTED" not in kinds[fired:fired + 8] or \
            kinds.index("EVENT_TYPE_ACTIVITY_TASK_SCHEDULED", fired) < \
            kinds.index("EVENT_TYPE_TIMER_STARTED", fired), \
            "after the timer fired, the pair started a timer again instead of sending the reminder"
        history = await handle.fetch_history()
    finally:
        sticky.kill()
        fresh.kill()
        if handle is not None:
            with contextlib.suppress(Exception):
                await handle.terminate(reason="test finished")

    assert "EVENT_TYPE_WORKFLOW_TASK_FAILED" not in kinds
    replay = await Replayer(workflows=[MentoringPair], data_converter=dev_client.data_converter) \
        .replay_workflow(history, raise_on_replay_failure=False)
    assert replay.replay_failure is None, replay.replay_failure
