"""Whatever is typed into a pair's doors (start, updates, the signal), the pair answers in words
and keeps answering: no workflow task fails, no traceback or path is shown, nothing is recorded
by a refused input, and nobody records someone else's act."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.event_log import EventLogActivities
from activities.heartbeat import HeartbeatWhileRunning
from activities.people import PeopleActivities
from events.messages import RegisterPeopleRequest
from tests.workflow.pairs import (
    HR,
    MENTEE,
    MENTEE_TZ,
    MENTOR,
    Harness,
    Pair,
    current_details,
    json_plain,
    notification_activity,
    pair_input,
    two_sessions_held,
)
from workflows.inputs import PairInput, pair_workflow_id
from workflows.pair import MentoringPair
from workflows.pair_state import ActionResult, PairState
from workflows.payloads import AS_RECORDED

LEAKS = ("Traceback", "File \"", ".py", "/work/", "site-packages", "pydantic", "input_value", "@")  # no e-mail


async def workflow_task_failures(handle: WorkflowHandle) -> int:
    history = await handle.fetch_history()
    return sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history.events)


async def refusal(pair: Pair, update: str, *args: Any) -> ApplicationError:
    """Send `args` as the update's payloads, exactly as given; return the clean refusal."""
    version = (await pair.state()).version
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await pair.handle.execute_update(update, args=list(args), result_type=ActionResult)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), cause
    assert cause.failure.stack_trace == ""
    for leak in LEAKS:
        assert leak not in cause.message, f"{leak!r} shown to HR: {cause.message}"
    assert len(cause.message) < 2000
    assert (await pair.state()).version == version, "a refused update recorded something"
    return cause


def raw(data: bytes, encoding: bytes = b"json/plain") -> RawValue:
    return RawValue(Payload(metadata={"encoding": encoding}, data=data))


async def test_payloads_of_any_shape_are_refused_by_name_and_the_pair_answers_on(harness: Harness):
    pair = await harness.start()
    valid = json.dumps({"recorded_by": MENTOR}).encode()
    cases: list[tuple[tuple[Any, ...], str]] = [
        ((), "The update 'confirm_motivation' was refused: no input was sent"),
        ((json_plain(valid), json_plain(valid)), "2 inputs were sent, and it takes one JSON object"),
        ((raw(b"{not json"),), "its input is not valid JSON"),
        ((raw(b""),), "its input is not valid JSON"),
        ((raw(b"\xff\xfe\x00"),), "its input is not valid JSON"),
        ((raw(b"null"),), "not empty (null)"),
        ((raw(b"42"),), "not a number"),
        ((raw(valid, b"binary/plain"),), "its input must be JSON, and it came in another encoding (binary/plain)"),
        ((raw(b'{"recorded_by": "lea.martin@example.com"}'),), "- recorded_by: must be the pseudonymous"),
        ((raw(b'{"recorded_by": "E1042", "x@y.z": 1}'),), "- (a field with an unusual name): is not a field"),
        ((raw(json.dumps({"recorded_by": "E1042", "k" * 1_000_000: 1}).encode()),), "unusual name"),
    ]
    for args, says in cases:
        cause = await refusal(pair, "confirm_motivation", *args)
        assert cause.type == "InvalidUpdatePayload" and says in cause.message, cause.message
    # The pair still answers, and records an ordinary update.
    assert (await pair.act("confirm_motivation", recorded_by=MENTOR)).stage == "mentee_invited"
    assert await workflow_task_failures(pair.handle) == 0


async def test_a_bad_signal_is_ignored_counted_and_shown_never_failing_a_task(harness: Harness):
    pair = await harness.start()
    bad_signals: list[list[Any]] = [
        [],  # no argument
        [{"recorded_by": MENTEE, "days_after_end": 30, "by_role": "mentee", "still_using": True}] * 2,
        [raw(b"{broken json with lea@example.com")],
        [{"recorded_by": MENTOR, "days_after_end": 30, "by_role": "mentee", "still_using": True}],
        [{"recorded_by": MENTEE, "days_after_end": 30, "by_role": "mentee", "still_using": True}],
    ]
    for args in bad_signals:
        await pair.handle.signal("answer_follow_up", args=args)
    state = await pair.wait_for(lambda s: s.signals_ignored == len(bad_signals))
    assert state.version == 2  # nothing recorded
    assert f"**Signals ignored:** {len(bad_signals)}" in await current_details(pair)
    assert await workflow_task_failures(pair.handle) == 0
    assert (await pair.act("confirm_motivation", recorded_by=MENTOR)).stage == "mentee_invited"


@pytest.mark.parametrize(("args", "says"), [
    ([pair_input(), pair_input()], "2 inputs were sent, and it takes one JSON object"),
    ([pair_input(policy={"lapse_after": "P9999999999D"})], "- policy.lapse_after: 'P9999999999D' is far too long for a wait"),
    ([pair_input(policy={"lapse_after": "P800D"})], "- policy.lapse_after: 'P800D' is longer than two years"),
    ([pair_input(nominated_by={"employee_id": MENTOR, "display_name": "L", "email": "l@example.com"})],
     "can be neither its mentor nor its mentee"),
    ([pair_input(hr_team=[MENTEE])], "can be neither its mentor nor its mentee"),
    ([pair_input(topics=["ok", "x\u0000"])], "- topics: contains a control character"),
])
async def test_a_start_that_cannot_be_read_fails_at_once_in_words(harness: Harness, args: list[Any], says: str):
    handle = await harness.client.start_workflow("MentoringPair", args=args, id=f"bad-start-{uuid.uuid4()}",
                                                 task_queue=harness.task_queue)
    harness.started.append(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidPairInput"
    assert says in cause.message, cause.message
    assert cause.failure.stack_trace == ""
    assert await workflow_task_failures(handle) == 0
    assert await harness.store.pool.fetchval("SELECT count(*) FROM people") == 0


async def test_session_times_at_the_edges_get_a_clear_answer(harness: Harness):
    pair = await harness.start()
    await pair.prepare()
    for typed in ("0001-01-01T00:30+14:00", "9999-12-31T10:00", "1999-12-31T10:00:00Z"):
        cause = await refusal(pair, "propose_session", {"recorded_by": HR, "starts_at": typed, "topics": ["apps"]})
        assert cause.type == "InvalidUpdatePayload"
        assert "- starts_at: must be a date and time between 2000 and 2999" in cause.message
    far = (await pair.session_slot()) + timedelta(days=800)
    while far.weekday() != 1:
        far += timedelta(days=1)
    cause = await refusal(pair, "propose_session", {"recorded_by": HR, "starts_at": far.isoformat(),
                                                    "topics": ["apps"]})
    assert "is more than two years ahead" in cause.message


async def test_a_time_the_clocks_skip_is_refused_with_the_time_to_use(harness: Harness):
    data = pair_input()
    data["mentee"] = {**data["mentee"], "availability": [{"weekday": "sunday", "start": "01:00", "end": "05:00"}]}
    pair = await harness.start(data)
    await pair.prepare()
    now = (await harness.now()).astimezone(ZoneInfo(MENTEE_TZ))
    # The last Sunday of March, when Paris moves from 02:00 to 03:00 (a year ahead at most).
    year = now.year + 1
    day = max(datetime(year, 3, d) for d in range(25, 32) if datetime(year, 3, d).weekday() == 6)
    cause = await refusal(pair, "propose_session", {"recorded_by": HR, "starts_at": f"{day:%Y-%m-%d}T02:30",
                                                    "duration_minutes": 30, "topics": ["apps"]})
    assert cause.type == "RuleViolation"
    assert cause.message == (f"{day:%Y-%m-%d} 02:30 does not exist in Europe/Paris: the clocks go forward "
                             f"that night and skip it. Propose {day:%Y-%m-%d} 03:30 (the same moment on the "
                             "new clock) or another time.")
    # The time the clocks pass twice, on the last Sunday of October, is the first one (summer time).
    october = max(datetime(now.year if now.month < 10 else year, 10, d) for d in range(25, 32)
                  if datetime(now.year if now.month < 10 else year, 10, d).weekday() == 6)
    result = await pair.act("propose_session", recorded_by=HR, starts_at=f"{october:%Y-%m-%d}T02:30",
                            duration_minutes=30, topics=["apps"])
    session = (await pair.state()).session(result.session_no)
    assert session.starts_at == datetime.fromisoformat(f"{october:%Y-%m-%d}T00:30+00:00")  # 02:30 CEST


async def test_a_second_click_does_not_make_a_second_session(harness: Harness):
    pair = await harness.start()
    await pair.prepare()
    starts = (await pair.session_slot()).isoformat()
    first = await pair.act("propose_session", recorded_by=HR, starts_at=starts, topics=["apps"])
    cause = await refusal(pair, "propose_session", {"recorded_by": HR, "starts_at": starts, "topics": ["apps"]})
    assert cause.type == "RuleViolation"
    assert f"session {first.session_no} is already proposed" in cause.message
    assert len((await pair.state()).sessions) == 1


async def test_two_clicks_at_once_make_one_session(harness: Harness):
    """Both validators may run before either handler: the handler checks again under the lock."""
    pair = await harness.start()
    await pair.prepare()
    starts = (await pair.session_slot(weekday=3, at=time(15, 0))).isoformat()  # a Thursday
    payload = {"recorded_by": HR, "starts_at": starts, "topics": ["apps"]}
    results = await asyncio.gather(*(pair.handle.execute_update("propose_session", payload, result_type=ActionResult)
                                     for _ in range(2)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, WorkflowUpdateFailedError)]
    assert len(refused) == 1 and "is already proposed" in str(refused[0].cause), results
    assert len((await pair.state()).sessions) == 1
    assert await workflow_task_failures(pair.handle) == 0


async def test_each_act_is_recorded_only_by_whom_it_belongs_to(harness: Harness):
    data = pair_input(hr_team=["HR002"])
    pair = await harness.start(data)
    cause = await refusal(pair, "withdraw", {"recorded_by": "E9999", "role": "hr", "reason": "other"})
    assert cause.type == "NotAParticipant"
    assert cause.message == ("E9999 may not record 'withdraw' for this pair: it is recorded by the pair's HR "
                             "(HR001, HR002). Nothing was recorded.")
    for update, payload in [("pause", {"recorded_by": "E9999", "reason": "agenda"}),
                            ("extend", {"recorded_by": MENTOR, "additional_sessions": 1}),
                            ("decline_mentoring", {"recorded_by": HR, "reason": "no_time"})]:
        assert (await refusal(pair, update, payload)).type == "NotAParticipant"
    new_mentor = {**data["mentor"], "employee_id": "HR002"}
    cause = await refusal(pair, "replace_mentor", {"recorded_by": HR, "reason": "other", "new_mentor": new_mentor})
    assert cause.message.startswith("HR002 is HR for this pair and cannot be the new mentor")
    await pair.act("confirm_motivation", recorded_by=MENTOR)
    await pair.act("accept_invitation", recorded_by="HR002")  # HR enters the senior's written answer
    await pair.prepare_rest()
    await pair.hold_session(feedback=False)
    cause = await refusal(pair, "give_feedback", {"recorded_by": MENTOR, "session_no": 1, "by_role": "mentee",
                                                  "rating": 5, "engaging": True})
    assert cause.message.startswith("E1042 may not record 'give_feedback' for this pair: it is recorded by "
                                    "the mentee (E0007)")
    await pair.act("give_feedback", recorded_by=MENTEE, session_no=1, by_role="mentee", rating=5, engaging=True)
    assert (await pair.act("extend", recorded_by="HR002", additional_sessions=1)).stage == "sessions"


async def test_a_refused_nomination_does_not_rewrite_anyone_s_contact_details(harness: Harness):
    data = pair_input()
    pair = await harness.start(data)
    await pair.act("withdraw", recorded_by=HR, role="hr", reason="mismatch")
    await pair.handle.result()
    again = json.loads(json.dumps(data))
    again["mentee"]["email"] = "someone.else@example.com"
    again["mentee"]["display_name"] = "Someone Else"
    handle = await harness.client.start_workflow("MentoringPair", again, id=pair.handle.id,
                                                 task_queue=harness.task_queue)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert failed.value.cause.type == "PairAlreadyNominated"
    row = await harness.store.pool.fetchrow("SELECT display_name, email FROM people WHERE employee_id = $1", MENTEE)
    assert tuple(row) == (data["mentee"]["display_name"], data["mentee"]["email"])


async def test_an_update_sent_before_the_nomination_is_recorded_is_refused(harness: Harness):
    """The update arrives while the nomination's first activity (registering the people) runs:
    refused, and the log starts with PairNominated. The real activity, held at a gate."""
    people = PeopleActivities(harness.store.pool)
    registering, go_on = asyncio.Event(), asyncio.Event()

    @activity.defn(name="register_people")
    async def register_people_when_told(request: RegisterPeopleRequest) -> None:
        registering.set()
        await go_on.wait()
        await people.register_people(request)

    data = pair_input()
    queue = f"{harness.task_queue}-gated"
    activities = [EventLogActivities(harness.store).append_events, people.record_private_note,
                  register_people_when_told, notification_activity(harness.store.pool, harness)]
    async with Worker(harness.client, task_queue=queue, workflows=[MentoringPair], activities=activities,
                      interceptors=[HeartbeatWhileRunning()]):
        handle = await harness.client.start_workflow(
            "MentoringPair", data, id=pair_workflow_id(data["programme_id"], MENTOR, MENTEE), task_queue=queue)
        harness.started.append(handle)
        await asyncio.wait_for(registering.wait(), 10)
        withdraw = {"recorded_by": HR, "role": "hr", "reason": "other"}
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await handle.execute_update("withdraw", withdraw, result_type=ActionResult)
        assert "the pair is still being nominated" in str(failed.value.cause)
        go_on.set()
        pair = Pair(harness, handle, data)
        assert (await pair.wait_for(lambda s: s.version >= 2)).stage.value == "awaiting_motivation"
        assert (await pair.timeline())[0] == "PairNominated"
        # Once nominated, the same update is taken.
        assert (await handle.execute_update("withdraw", withdraw, result_type=ActionResult)).stage == "withdrawn"


async def test_a_value_the_database_refuses_refuses_the_action_and_the_pair_answers_on(harness: Harness):
    """PostgreSQL's own refusals (class 23: a constraint; class 22: a value too long) are final:
    the activity is not retried for ever, the update is refused in words, the pair goes on."""
    pool = harness.store.pool
    await pool.execute("ALTER TABLE private_notes ADD CONSTRAINT no_secrets CHECK (body NOT LIKE '%secret%')")
    await pool.execute("ALTER TABLE private_notes ALTER COLUMN body TYPE varchar(500)")
    await pool.execute("ALTER TABLE events ADD CONSTRAINT no_pause_for_leave "
                       "CHECK (payload->>'reason' IS DISTINCT FROM 'leave')")
    pair = await harness.start()
    await pair.prepare()
    await pair.hold_session(feedback=False)
    for comment, sqlstate in (("a secret", "23514"), ("x" * 600, "22001")):
        cause = await refusal(pair, "give_feedback", {"recorded_by": MENTEE, "session_no": 1, "by_role": "mentee",
                                                      "rating": 5, "engaging": True, "comment": comment})
        assert cause.type == "DataRefused" and f"SQLSTATE {sqlstate}" in cause.message, cause.message
        assert comment not in cause.message
    cause = await refusal(pair, "pause", {"recorded_by": HR, "reason": "leave"})
    assert cause.type == "DataRefused" and "constraint no_pause_for_leave" in cause.message
    await pair.act("give_feedback", recorded_by=MENTEE, session_no=1, by_role="mentee", rating=5,
                   engaging=True, comment="fine")
    assert (await pair.act("pause", recorded_by=HR, reason="agenda")).paused
    assert await workflow_task_failures(pair.handle) == 0


async def test_a_follow_up_answer_from_someone_else_is_ignored_and_counted(harness: Harness):
    pair = await two_sessions_held(harness)
    for who, role in ((MENTOR, "mentor"), (MENTEE, "mentee")):
        await pair.act("give_final_evaluation", recorded_by=who, by_role=role, rating=5, would_recommend=True)
    await harness.skip(days=31)
    await pair.wait_for(lambda s: 30 in s.follow_ups_sent)
    answer = {"days_after_end": 30, "by_role": "mentee", "still_using": True}
    await pair.handle.signal("answer_follow_up", {**answer, "recorded_by": MENTOR})  # not the mentee
    await pair.wait_for(lambda s: s.signals_ignored == 1)
    await pair.handle.signal("answer_follow_up", {**answer, "recorded_by": HR})  # HR passing it on
    state = await pair.wait_for(lambda s: "#1:mentee" in s.follow_up_answers)
    assert state.signals_ignored == 1
    assert (await pair.timeline()).count("FollowUpAnswered") == 1


def test_a_carried_state_is_read_as_it_was_accepted():
    """A continued run reads the state its predecessor carried with the checks of its day: a wait
    of 800 days was fine under the three-year limit of older code."""
    state = PairState.nominated(PairInput.model_validate(pair_input()), datetime(2026, 1, 1, tzinfo=UTC))
    carried = json.loads(state.model_dump_json())
    carried["policy"]["lapse_after"] = "P800D"
    with pytest.raises(ValidationError, match="longer than two years"):
        PairState.model_validate(carried)
    assert PairState.model_validate(carried, context=AS_RECORDED).policy.lapse_after == "P800D"
