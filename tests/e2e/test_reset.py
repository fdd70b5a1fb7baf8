"""Reset, one click away in the Temporal UI, leaves a pair usable and its log agreeing with Temporal.

A Reset starts a new run from an earlier workflow task: the new run knows only what happened up
to that point, while the log kept everything the replaced run recorded after it. The new run
must catch up with the log (never fail on the stale stream version), refuse an update decided
without the facts it had not seen, and go on; each fact stays in the log once, and every history
replays (the dev-server fixture replays them all when the session ends). Only the dev server
implements Reset (the time-skipping test server does not), so the worker runs here, in process.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import cast

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.heartbeat import HeartbeatWhileRunning
from activities.reconcile import drift
from events.store import PostgresEventStore
from tests.workflow.pairs import (
    CONSENT,
    INVITATION,
    NOMINATION,
    Harness,
    Pair,
    notification_activity,
    pair_input,
)
from workflows.pair import MentoringPair

CURRICULUM = {"topics": ["social networks"], "objectives": ["publish a first post"]}


class _DevServer:
    """What the harness needs of its environment, on the dev server (no time skipping here)."""

    def __init__(self, client: Client) -> None:
        self.client = client


@pytest.fixture
async def dev_harness(dev_client: Client, store: PostgresEventStore) -> AsyncIterator[Harness]:
    task_queue = f"mentoring-reset-{uuid.uuid4().hex[:8]}"
    harness = Harness(cast(WorkflowEnvironment, _DevServer(dev_client)), store, task_queue)
    async with Worker(dev_client, task_queue=task_queue, workflows=[MentoringPair],
                      activities=harness.activities() + [notification_activity(store.pool, harness)],
                      interceptors=[HeartbeatWhileRunning()]):
        try:
            yield harness
        finally:
            await harness.stop_all()


async def _reset(client: Client, pair: Pair, *, before_update: str | None = None,
                 before_timer_fired: bool = False) -> str:
    """What the UI's Reset does: a new run from a workflow task; here the first one, or the last
    one before `before_update` was accepted, or before a timer fired. Returns the new run's id."""
    history = await pair.handle.fetch_history()
    events = list(history.events)
    end = len(events)
    if before_timer_fired:
        end = next(i for i, e in enumerate(events) if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED)
    elif before_update is not None:
        accepted = next(i for i, e in enumerate(events)
                        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
                        and e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
                        == before_update)
        end = accepted - 1  # the task that accepted the update completes just before it
    completed = [e.event_id for e in events[:end]
                 if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
    point = completed[-1] if before_update or before_timer_fired else completed[0]
    reset = await client.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
        namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=pair.handle.id),
        reason="test: HR pressed Reset", workflow_task_finish_event_id=point, request_id=str(uuid.uuid4())))
    pair.handle = client.get_workflow_handle(pair.handle.id)  # the latest run from now on
    return reset.run_id


async def _consented(harness: Harness) -> tuple[Pair, int]:
    pair = await harness.start()
    await pair.act("confirm_motivation", recorded_by=pair.mentor_id)
    await pair.act("accept_invitation", recorded_by=pair.mentee_id, channel="email")
    version = (await pair.state()).version
    assert await pair.timeline() == NOMINATION + INVITATION + CONSENT
    return pair, version


async def test_a_reset_before_an_update_catches_up_when_temporal_reapplies_it(
        dev_harness: Harness, dev_client: Client, store: PostgresEventStore):
    pair, version = await _consented(dev_harness)
    await _reset(dev_client, pair, before_update="confirm_motivation")

    # Temporal hands the new run the updates accepted after the reset point again; the first one
    # finds the log ahead of the run: refused as decided without the facts the log holds (its
    # caller had its answer from the replaced run), and the run catches up with the log.
    state = await pair.wait_for(lambda s: s.version >= version, timeout=30)
    assert (state.stage.value, state.version) == ("preparation", version)
    assert state.mentor_motivated and state.consent_given
    refusals = [e.workflow_execution_update_completed_event_attributes.outcome.failure
                async for e in pair.handle.fetch_history_events()
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED
                and e.workflow_execution_update_completed_event_attributes.outcome.HasField("failure")]
    assert [r.application_failure_info.type for r in refusals][:1] == ["LogMovedOn"]
    assert "reset" in refusals[0].message and "send the update again" in refusals[0].message

    await pair.act("agree_curriculum", recorded_by=pair.mentor_id, **CURRICULUM)
    assert await pair.timeline() == NOMINATION + INVITATION + CONSENT + ["CurriculumAgreed"]
    assert not await drift(dev_client, store)


async def test_a_reset_to_the_first_task_finds_its_nomination_and_goes_on(
        dev_harness: Harness, dev_client: Client, store: PostgresEventStore):
    pair, version = await _consented(dev_harness)
    await _reset(dev_client, pair, before_update=None)

    # The new run nominates again: the log already holds the nomination (and all that followed),
    # so it catches up instead of failing as a second nomination.
    state = await pair.wait_for(lambda s: s.version >= version, timeout=30)
    assert state.stage.value == "preparation" and state.mentor_motivated and state.consent_given
    await pair.act("agree_curriculum", recorded_by=pair.mentor_id, **CURRICULUM)
    # Each fact once: the new run's first append (the nomination) found the log ahead, before
    # it had sent anything.
    assert await pair.timeline() == NOMINATION + INVITATION + CONSENT + ["CurriculumAgreed"]
    described = await pair.handle.describe()
    assert described.status is not None and described.status.name == "RUNNING"
    assert not await drift(dev_client, store)


async def test_a_reset_before_a_reminder_records_the_one_sent_again_and_goes_on(
        dev_harness: Harness, dev_client: Client, store: PostgresEventStore):
    pair = await dev_harness.start(pair_input(policy={"motivation_reminder_after": "PT2S"}))
    await pair.wait_for(lambda s: s.version >= 3)  # the reminder went out and is recorded
    await _reset(dev_client, pair, before_timer_fired=True)

    # The new run's reminder timer is already due: it fires, the reminder goes out again, and
    # its record finds the log ahead. The run catches up and records the second send (it
    # happened), then waits for the nomination's expiry like the replaced run did.
    state = await pair.wait_for(lambda s: s.version >= 4, timeout=30)
    reminder = "NotificationSent:motivation_reminder>mentor"
    assert await pair.timeline() == NOMINATION + [reminder, reminder]
    assert state.timers_fired == ["motivation_reminder"]
    assert state.next_deadline_kind == "motivation_expiry"
    result = await pair.act("confirm_motivation", recorded_by=pair.mentor_id)
    assert result.stage == "mentee_invited" and result.stream_version == (await store.stream_version(pair.stream_id))
    assert not await drift(dev_client, store)
