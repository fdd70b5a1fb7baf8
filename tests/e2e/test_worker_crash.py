"""A worker that crashes mid-lifecycle loses nothing and records nothing twice.

On the real dev server, `python worker.py` is killed with SIGKILL (no clean-up at all) twice:
right after an update was accepted, while its activity is in flight, and while the follow-up
timers are pending, with a follow-up answer sent while no worker runs. It is started again each
time. With a policy of seconds instead of days, the pair still reaches completion, and the log
holds every fact exactly once: versions 1..N, unique event ids, the lifecycle's exact sequence,
one delivered e-mail per notice, and an intact hash chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateStage

from devstack.temporal import TemporalDevServer
from events.store import PostgresEventStore, create_pool
from tests.e2e.conftest import WorkerProcess, worker_env
from tests.workflow.pairs import EXAMPLE, HR, MENTEE, MENTOR, PREPARED, both, timeline_of
from workflows.inputs import WEEKDAYS, pair_workflow_id
from workflows.pair_state import ActionResult, PairOutcome, PairState

T = TypeVar("T")

# Seconds instead of days where the pair has to wait; the ordering constraints still hold.
SHORT_POLICY = {
    "session_reminder_before": "PT3S",
    "final_evaluation_within": "PT60S",  # closed earlier by the two evaluations
    "first_follow_up_after": "PT3S",
    "second_follow_up_after": "PT8S",
    "follow_up_answer_within": "PT2S",
}
SESSION_LEAD = timedelta(seconds=6)

EXPECTED = PREPARED + [
    "SessionProposed", *both("session_invitation"), "SessionConfirmed", *both("session_reminder"),
    "SessionHeld", *both("feedback_request"), *both("final_evaluation_request"),
    "FeedbackGiven", "FeedbackGiven", "FinalEvaluationGiven", "FinalEvaluationGiven",
    "FollowUpSent", *both("follow_up"), "FollowUpAnswered",  # the answer sent while no worker ran
    "FollowUpSent", *both("follow_up"),
    "PairCompleted",
]


def mentee_zone() -> str:
    """A time zone where the next hour stays within today, so a session soon fits a window."""
    for name in ("UTC", "Asia/Tokyo", "America/New_York"):
        if clock(0, 5) <= datetime.now(ZoneInfo(name)).time() <= clock(22, 30):
            return name
    raise AssertionError("unreachable: these zones are never all near midnight")


def crash_input() -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    data["programme_id"] = f"crash-{uuid.uuid4().hex[:8]}"
    data["sessions_planned"] = 1
    data["training_modules"] = ["reverse-mentoring-basics", "confidentiality"]
    data["mentee"]["time_zone"] = mentee_zone()
    data["mentee"]["availability"] = [{"weekday": day, "start": "00:00", "end": "23:59"} for day in WEEKDAYS]
    data["policy"] = SHORT_POLICY
    return data


async def within(awaitable: Awaitable[T], what: str, timeout_s: float = 60) -> T:
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError:
        raise AssertionError(f"{what}: no answer in {timeout_s}s") from None


async def state_of(handle: WorkflowHandle) -> PairState:
    return await within(handle.query("state", result_type=PairState), "state query", 20)


async def wait_for(handle: WorkflowHandle, predicate: Callable[[PairState], bool], what: str,
                   timeout_s: float = 40) -> PairState:
    deadline = time.monotonic() + timeout_s
    while True:
        state = await state_of(handle)
        if predicate(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout_s}s; stage {state.stage.value}, "
                                 f"version {state.version}")
        await asyncio.sleep(0.2)


async def test_a_pair_survives_worker_crashes_and_records_each_fact_once(
        temporal_dev_server: TemporalDevServer, dev_client: Client, database_url: str, tmp_path: Path):
    task_queue = f"mentoring-crash-{uuid.uuid4().hex[:8]}"
    state_dir = tmp_path / "state"
    worker = WorkerProcess(worker_env(
        DATABASE_URL=database_url, TEMPORAL_ADDRESS=temporal_dev_server.address,
        TEMPORAL_TASK_QUEUE=task_queue, STATE_DIR=str(state_dir)))
    data = crash_input()
    workflow_id = pair_workflow_id(data["programme_id"], MENTOR, MENTEE)
    handle: WorkflowHandle | None = None

    async def act(update: str, **payload: Any) -> ActionResult:
        return await within(handle.execute_update(update, payload, result_type=ActionResult), update)

    try:
        worker.start()
        handle = await dev_client.start_workflow(
            "MentoringPair", data, id=workflow_id, task_queue=task_queue, result_type=PairOutcome,
            run_timeout=timedelta(minutes=5))
        await wait_for(handle, lambda s: s.stage.value == "awaiting_motivation", "nomination")
        await act("confirm_motivation", recorded_by=MENTOR)
        await act("accept_invitation", recorded_by=MENTEE, channel="email")
        await act("agree_curriculum", recorded_by=MENTOR, topics=["social networks"],
                  objectives=["publish a first post", "tune privacy settings"])
        first, second = data["training_modules"]

        # --- crash 1: the update is accepted (in the workflow's history), its append in flight -----
        pending = await within(handle.start_update(
            "complete_training_module", {"recorded_by": MENTOR, "module": first},
            wait_for_stage=WorkflowUpdateStage.ACCEPTED, result_type=ActionResult), "accept")
        worker.kill()
        worker.start()
        result = await within(pending.result(), "the accepted update's result after the crash", 90)
        assert result.stage == "preparation" and f"training modules: {second};" in result.waiting_for

        await act("complete_training_module", recorded_by=MENTOR, module=second)
        await act("onboard_mentee", recorded_by=HR)
        assert (await act("sign_off_mentor", recorded_by=HR)).stage == "sessions"

        # --- one session, a few seconds ahead, held once it has started ----------------------------
        starts_at = datetime.now(UTC) + SESSION_LEAD
        proposed = await act("propose_session", recorded_by=HR, starts_at=starts_at.isoformat(),
                             duration_minutes=15, topics=["social networks"])
        await act("confirm_session", recorded_by=HR, session_no=proposed.session_no)
        await wait_for(handle, lambda s: s.session(1).reminder_sent, "the session reminder")
        while datetime.now(UTC) <= starts_at + timedelta(milliseconds=300):  # the session's time
            await asyncio.sleep(0.1)
        held = await act("record_session_held", recorded_by=HR, session_no=1,
                         topics_covered=["social networks"])
        assert held.stage == "final_evaluation"
        await act("give_feedback", recorded_by=MENTOR, session_no=1, by_role="mentor", rating=4,
                  engaging=True, topics_covered=["social networks"])
        await act("give_feedback", recorded_by=MENTEE, session_no=1, by_role="mentee", rating=5,
                  engaging=True, comment="I finally understand my privacy settings")
        await act("give_final_evaluation", recorded_by=MENTOR, by_role="mentor", rating=5,
                  would_recommend=True)
        done = await act("give_final_evaluation", recorded_by=MENTEE, by_role="mentee", rating=4,
                         would_recommend=True, comment="Worth every minute")
        assert done.stage == "follow_up"

        # --- crash 2: while the follow-up timers are pending; an answer arrives meanwhile ----------
        # Killed once the first follow-up and its two notices are recorded: the crash hits a pair
        # waiting on its timers, not a notice in flight (that one would be retried only after its
        # activity's 2-minute start-to-close timeout).
        sent = done.stream_version + 3
        state = await wait_for(handle, lambda s: s.version == sent, "the first follow-up and its notices")
        assert state.follow_ups_sent == [0] and not state.follow_up_answers
        assert not (await handle.describe()).raw_description.pending_activities
        worker.kill()
        # Durations under a day give days_after_end 0 (days are what the follow-up e-mail states).
        await within(handle.signal("answer_follow_up", {
            "recorded_by": MENTEE, "days_after_end": 0, "by_role": "mentee", "still_using": True}),
            "signal while the worker is down", 20)
        worker.start()
        outcome = await within(handle.result(), "the pair's completion after the crashes", 90)
        assert worker.interrupt() == 0, "\n".join(worker.lines[-30:])
        history = await handle.fetch_history()
    finally:
        worker.kill()
        if handle is not None:  # a failed run leaves no pair running on the shared dev server
            with contextlib.suppress(Exception):  # never hide the test's own failure
                current = dev_client.get_workflow_handle(workflow_id)
                if (await current.describe()).status.name == "RUNNING":
                    await current.terminate(reason="test failed")

    # --- every fact once, in order -----------------------------------------------------------------
    pool = await create_pool(database_url, min_size=1, max_size=2)
    store = PostgresEventStore(pool)
    try:
        events = await store.read_stream(workflow_id)
        assert timeline_of(events) == EXPECTED
        assert [e.version for e in events] == list(range(1, len(events) + 1))
        assert len({e.event_id for e in events}) == len(events)
        assert await store.stream_version(workflow_id) == len(events)
        assert outcome == PairOutcome(pair_id=workflow_id.removeprefix("pair-"), stage="completed",
                                      sessions_held=1, stream_version=len(events))
        assert await pool.fetchval("SELECT count(*) FROM events") == len(events)  # no other stream
        answer = next(e for e in events if e.event_type == "FollowUpAnswered")
        assert (answer.payload["by_role"], answer.metadata["actor"]) == ("mentee", MENTEE)

        # One delivery per notice: one receipt, one .eml file, each recorded once in the log.
        notices = [e for e in events if e.event_type == "NotificationSent"]
        rows = await pool.fetch("SELECT notification_id, message_id FROM notifications_sent")
        assert len({r["notification_id"] for r in rows}) == len(rows) == len(notices)
        assert {r["message_id"] for r in rows} == {e.payload["message_id"] for e in notices}
        assert len({e.payload["message_id"] for e in notices}) == len(notices)
        assert len(list((state_dir / "outbox").glob("*.eml"))) == len(notices)
        assert await pool.fetchval("SELECT count(*) FROM private_notes WHERE kind = 'comment'") == 2
        assert await pool.fetchval(  # the curriculum's objectives, once, beside the log
            "SELECT count(*) FROM private_notes WHERE kind = 'curriculum_objectives'") == 1

        report = await store.verify()
        assert report.ok, report.first_bad
        assert report.events_checked == len(events)
    finally:
        await store.close()
        await pool.close()

    # The crashes show in the workflow's history; a replay that went wrong would show as a failed
    # workflow task (a non-determinism error), which is not allowed.
    kinds = [EventType.Name(e.event_type) for e in history.events]
    assert "EVENT_TYPE_WORKFLOW_TASK_FAILED" not in kinds
