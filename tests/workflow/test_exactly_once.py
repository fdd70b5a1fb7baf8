"""Exactly once: a retried activity writes nothing twice, and continue-as-new carries the pair's
state and stream version into the next run without losing or repeating an event."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

import events.pair as ev
from activities.event_log import EventLogActivities
from activities.heartbeat import HeartbeatWhileRunning
from activities.people import PeopleActivities
from events.base import EventMetadata, NewEvent
from events.messages import (
    EVENT_ID_CONFLICT,
    STREAM_CONFLICT,
    AppendRequest,
    AppendResponse,
    PersonContact,
    PrivateNoteRequest,
    RegisterPeopleRequest,
)
from events.store import PostgresEventStore
from tests.workflow.pairs import (
    FEEDBACK,
    HR,
    MENTEE,
    MENTOR,
    NOMINATION,
    PREPARED,
    SESSION,
    Harness,
    both,
    notification_activity,
)
from workflows.pair import MentoringPair
from workflows.pair_effects import HISTORY_LIMIT_MEMO


def _request(stream: str, expected: int, *events: ev.DomainEvent, ids: list[uuid.UUID] | None = None) -> AppendRequest:
    ids = ids or [uuid.uuid4() for _ in events]
    return AppendRequest(stream_id=stream, expected_version=expected,
                         events=[NewEvent.of(e, i) for e, i in zip(events, ids, strict=True)],
                         metadata=EventMetadata(actor=HR))


async def test_the_append_activity_run_twice_records_once(store: PostgresEventStore):
    log, run = EventLogActivities(store), ActivityEnvironment().run
    first = _request("pair-x", 0, ev.MentorMotivationConfirmed(mentor_id=MENTOR),
                     ev.MenteeInvited(mentee_id=MENTEE, channel="email", expires_at="2030-01-01T00:00:00Z"))
    appended = await run(log.append_events, first)
    assert appended.model_copy(update={"appended_at": None}) == AppendResponse(
        version=2, positions=[1, 2], duplicate=False)
    assert appended.appended_at == ActivityEnvironment().info.started_time  # Temporal's clock
    again = await run(log.append_events, first)
    assert (again.version, again.duplicate) == (2, True)
    # Even after the stream moved on, a late retry of the first append is recognised by its ids.
    await run(log.append_events, _request("pair-x", 2, ev.MenteeConsentGiven(
        mentee_id=MENTEE, channel="ui", recorded_by=MENTEE)))
    late = await run(log.append_events, first)
    assert late.duplicate and late.positions == [1, 2]
    assert [e.event_type for e in await store.read_stream("pair-x")] == [
        "MentorMotivationConfirmed", "MenteeInvited", "MenteeConsentGiven"]


async def test_what_a_retry_cannot_fix_is_final(store: PostgresEventStore):
    log, run = EventLogActivities(store), ActivityEnvironment().run
    event_id = uuid.uuid4()
    await run(log.append_events, _request("pair-y", 0, ev.MenteeOnboarded(mentee_id=MENTEE), ids=[event_id]))
    with pytest.raises(ApplicationError) as stale:  # another writer got version 1 first
        await run(log.append_events, _request("pair-y", 0, ev.MentorSignedOff(mentor_id=MENTOR, signed_off_by=HR)))
    assert (stale.value.type, stale.value.non_retryable) == (STREAM_CONFLICT, True)
    assert "is at version 1, not 0" in stale.value.message
    with pytest.raises(ApplicationError) as reused:  # same id, different content
        await run(log.append_events, _request("pair-y", 1, ev.MenteeOnboarded(mentee_id="E0008"), ids=[event_id]))
    assert (reused.value.type, reused.value.non_retryable) == (EVENT_ID_CONFLICT, True)
    assert len(await store.read_stream("pair-y")) == 1


async def test_people_and_private_notes_are_idempotent(store: PostgresEventStore):
    people, run = PeopleActivities(store.pool), ActivityEnvironment().run
    contact = PersonContact(employee_id=MENTEE, display_name="B. D.", email="b@example.com", time_zone="Europe/Paris")
    await run(people.register_people, RegisterPeopleRequest(people=[contact]))
    await run(people.register_people, RegisterPeopleRequest(people=[contact.model_copy(update={"email": "bd@example.com"})]))
    rows = await store.pool.fetch("SELECT employee_id, email FROM people")
    # Registering again changes nothing: contact details change only by `change_contact`.
    assert [tuple(r) for r in rows] == [(MENTEE, "b@example.com")]
    note = PrivateNoteRequest(event_id=str(uuid.uuid4()), pair_id="x", author_id=MENTEE, body="first")
    await run(people.record_private_note, note)
    await run(people.record_private_note, note.model_copy(update={"body": "retried"}))
    assert await store.pool.fetchval("SELECT string_agg(body, ',') FROM private_notes") == "first"


class _AppendThenLoseTheAnswer(EventLogActivities):
    """Appends, then fails the first attempt as if the worker died before reporting success."""

    attempts: Counter

    @activity.defn(name="append_events")
    async def append_events(self, request: AppendRequest) -> AppendResponse:
        response = await super().append_events(request)
        self.attempts[activity.info().attempt] += 1
        if activity.info().attempt == 1 and request.expected_version < 4:
            raise RuntimeError("worker lost after the append")
        return response


async def test_a_retried_append_through_temporal_writes_nothing_twice(harness: Harness):
    flaky = _AppendThenLoseTheAnswer(harness.store)
    flaky.attempts = Counter()
    people = PeopleActivities(harness.store.pool)
    queue = f"{harness.task_queue}-flaky"
    async with Worker(harness.client, task_queue=queue, workflows=[MentoringPair], activities=[
            flaky.append_events, people.register_people, people.record_private_note,
            notification_activity(harness.store.pool, harness)],
            interceptors=[HeartbeatWhileRunning()]):
        harness.task_queue = queue
        pair = await harness.start()
        await pair.act("decline_mentoring", recorded_by=MENTOR, reason="not_confident")
        await pair.handle.result()
    assert flaky.attempts[2] == 4  # each of the four appends ran twice...
    assert await pair.timeline() == NOMINATION + ["MentorDeclined", "NotificationSent:pair_closed>mentor"]
    assert (await harness.store.verify()).ok  # ...and each is in the log once


async def test_continue_as_new_carries_state_and_stream_version(harness: Harness):
    pair = await harness.start(memo={HISTORY_LIMIT_MEMO: 60})
    await pair.prepare()
    await pair.hold_session()
    await pair.hold_session()
    await pair.act("give_final_evaluation", recorded_by=MENTOR, by_role="mentor", rating=5, would_recommend=True)
    await pair.act("give_final_evaluation", recorded_by=MENTEE, by_role="mentee", rating=5, would_recommend=True)
    outcome = await pair.handle.result()  # the server skips to the follow-ups; nobody answers them
    assert (outcome.stage, outcome.sessions_held) == ("completed", 2)

    events = await harness.store.read_stream(pair.stream_id)
    runs = list(dict.fromkeys(e.metadata["run_id"] for e in events))
    assert len(runs) >= 3, "the small history limit should have continued the pair as new"
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    assert len({e.event_id for e in events}) == len(events)
    assert await pair.timeline() == PREPARED + SESSION + FEEDBACK + SESSION + [
        *both("final_evaluation_request"), *FEEDBACK, "FinalEvaluationGiven", "FinalEvaluationGiven",
        "FollowUpSent", *both("follow_up"), "FollowUpSent", *both("follow_up"), "PairCompleted"]
    # Each earlier run ended by continuing as new, its history short; the last one completed.
    for run_id in runs[:-1]:
        history = await harness.client.get_workflow_handle(pair.handle.id, run_id=run_id).fetch_history()
        assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        # Short: the limit (60) plus at most one step's worth (the first run holds the whole
        # preparation, whose curriculum now keeps its objectives apart: one more activity).
        assert len(history.events) < 130, Counter(EventType.Name(e.event_type) for e in history.events)
    assert outcome.stream_version == len(events)
