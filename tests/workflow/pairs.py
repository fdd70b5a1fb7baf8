"""Helpers for driving `MentoringPair` workflows in tests, the way HR does from the UI: a start
input as plain JSON, updates as JSON objects, time moved on with the time-skipping server, and
the outcome read back from PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import tempfile
import uuid
from collections.abc import Callable
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.event_log import EventLogActivities
from activities.matching import suggest_matches
from activities.people import PeopleActivities
from activities.programme_health import ProgrammeHealth
from activities.programme_pairs import ProgrammePairs
from activities.temporal_facts import TemporalFacts
from events.messages import NotificationReceipt, NotificationRequest
from events.store import PostgresEventStore
from workflows.inputs import pair_workflow_id
from workflows.pair_state import ActionResult, PairOutcome, PairState

MENTEE_TZ = "Europe/Paris"

EXAMPLE: dict[str, Any] = {
    "programme_id": "digital-2026",
    "mentor": {
        "employee_id": "E1042", "display_name": "Léa Martin", "email": "lea.martin@example.com",
        "time_zone": "Europe/Paris", "topics_mastered": ["social networks", "mobile apps"],
    },
    "mentee": {
        "employee_id": "E0007", "display_name": "Bernard Dupont",
        "email": "bernard.dupont@example.com", "time_zone": MENTEE_TZ,
        "availability": [
            {"weekday": "tuesday", "start": "09:00", "end": "12:00"},
            {"weekday": "thursday", "start": "14:00", "end": "17:00"},
        ],
        "topics_wished": ["protecting personal data"],
    },
    "topics": ["social networks", "protecting personal data"],
    "sessions_planned": 2,
    "nominated_by": {"employee_id": "HR001", "display_name": "Claire Petit",
                     "email": "claire.petit@example.com"},
}
MENTOR, MENTEE, HR = "E1042", "E0007", "HR001"


def pair_input(**changes: Any) -> dict[str, Any]:
    """The example input, with top-level fields replaced; a fresh programme id per call."""
    data = copy.deepcopy(EXAMPLE)
    data["programme_id"] = f"p{uuid.uuid4().hex[:10]}"
    data.update(changes)
    return data


def json_plain(data: bytes) -> RawValue:
    """A payload exactly as the Temporal UI's Start Workflow form sends it."""
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=data))


def notification_activity(pool: asyncpg.Pool, harness: Harness) -> Callable:
    """The real `send_notification` (real .eml files in the harness's outbox), which also keeps
    each request it was given, so tests can check a notice's recipient and calendar details."""
    from activities.notifications import MailFolderChannel, NotificationActivities

    real = NotificationActivities(pool, MailFolderChannel(harness.outbox)).send_notification

    @activity.defn(name="send_notification")
    async def send_notification(request: NotificationRequest) -> NotificationReceipt:
        if harness.mail_down:  # as the real channel reports a mail server that does not answer
            raise ApplicationError("the mail server did not answer (test)", type="DeliveryFailed")
        receipt = await real(request)
        if not receipt.already_sent and not receipt.skipped:
            harness.sent.append(request)
        return receipt

    return send_notification


class Harness:
    def __init__(self, env: WorkflowEnvironment, store: PostgresEventStore, task_queue: str) -> None:
        self.env, self.client, self.store, self.task_queue = env, env.client, store, task_queue
        self.sent: list[NotificationRequest] = []
        self.mail_down = False  # set: every delivery attempt fails, as with a mail server down
        self.started: list[WorkflowHandle] = []
        self.outbox = Path(tempfile.mkdtemp(prefix="mentoring-outbox-"))  # for the real mail channel

    def activities(self) -> list[Callable]:
        people = PeopleActivities(self.store.pool)
        log = EventLogActivities(self.store)
        return [log.append_events, log.read_stream, people.register_people, suggest_matches,
                ProgrammePairs(self.client, self.store.pool).start_pairs,
                ProgrammePairs(self.client, self.store.pool).wind_down_pairs,
                ProgrammeHealth(self.store, self.client).programme_figures,
                people.record_private_note, TemporalFacts(self.client).cancel_request]

    async def start(self, data: dict[str, Any] | None = None, *, memo: dict | None = None) -> Pair:
        data = data or pair_input()
        workflow_id = pair_workflow_id(data["programme_id"], data["mentor"]["employee_id"],
                                       data["mentee"]["employee_id"])
        handle = await self.client.start_workflow(
            "MentoringPair", data, id=workflow_id, task_queue=self.task_queue, memo=memo,
            result_type=PairOutcome)
        self.started.append(handle)
        pair = Pair(self, handle, data)
        await pair.wait_for(lambda s: s.version >= 2)  # nominated, mentor asked
        return pair

    async def start_raw(self, payload: RawValue | None) -> WorkflowHandle:
        args = [] if payload is None else [payload]
        handle = await self.client.start_workflow(
            "MentoringPair", args=args, id=f"pair-raw-{uuid.uuid4()}", task_queue=self.task_queue)
        self.started.append(handle)
        return handle

    async def stop_all(self) -> None:
        """Terminate what a test left running: the server's clock is shared by all tests, and it
        will not skip past a timer whose workflow task no worker is left to take."""
        for handle in self.started:
            with contextlib.suppress(RPCError):  # by id: the latest run, after continue-as-new too
                await self.client.get_workflow_handle(handle.id).terminate(reason="end of test")

    async def skip(self, **delta: float) -> None:
        """Move the test server's clock on (timers fire; nothing else waits)."""
        await self.env.sleep(timedelta(**delta))

    async def now(self) -> datetime:
        return await self.env.get_current_time()


class Pair:
    def __init__(self, harness: Harness, handle: WorkflowHandle, data: dict[str, Any]) -> None:
        self.harness, self.handle, self.data = harness, handle, data
        self.stream_id = handle.id
        # The pair's own people: the helpers below act as them (update mentor_id on a replacement).
        self.mentor_id = data["mentor"]["employee_id"]
        self.mentee_id = data["mentee"]["employee_id"]
        self.hr_id = data["nominated_by"]["employee_id"]
        self.session_starts: dict[int, datetime] = {}  # as proposed by hold_session

    async def act(self, update: str, **payload: Any) -> ActionResult:
        """Send an update as a JSON object, as HR does from the UI."""
        return await self.handle.execute_update(update, payload, result_type=ActionResult)

    async def rejection(self, update: str, **payload: Any) -> ApplicationError:
        """Send an update that must be rejected; return the rejection seen by the caller."""
        version = (await self.state()).version
        try:
            await self.handle.execute_update(update, payload, result_type=ActionResult)
        except WorkflowUpdateFailedError as exc:
            assert isinstance(exc.cause, ApplicationError), exc.cause
            assert exc.cause.failure.stack_trace == "", "a rejection shows HR a Python traceback"
            assert (await self.state()).version == version, "a rejected update recorded something"
            return exc.cause
        raise AssertionError(f"update {update} was accepted")

    async def state(self) -> PairState:
        return await self.handle.query("state", result_type=PairState)

    async def wait_for(self, predicate: Callable[[PairState], bool], timeout: float = 15) -> PairState:
        """Timers fire in the worker after the clock moved: wait until the state shows it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            state = await self.state()
            if predicate(state):
                return state
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"state not reached in {timeout}s: {state.model_dump_json(indent=1)}")
            await asyncio.sleep(0.05)

    async def timeline(self) -> list[str]:
        """The pair's stream as event types; notices as `NotificationSent:<kind>><role>`."""
        return timeline_of(await self.harness.store.read_stream(self.stream_id))

    async def prepare(self, channel: str = "email") -> None:
        """Nomination through sign-off: the mentor, the mentee and HR each do their part."""
        await self.act("confirm_motivation", recorded_by=self.mentor_id)
        await self.act("accept_invitation", recorded_by=self.mentee_id, channel=channel)
        await self.prepare_rest()

    async def prepare_rest(self) -> None:
        """Curriculum, training modules, the mentee's onboarding and HR's sign-off."""
        await self.act("agree_curriculum", recorded_by=self.mentor_id, topics=["social networks"],
                       objectives=["publish a first post", "tune privacy settings"])
        for module in ("reverse-mentoring-basics", "confidentiality"):
            await self.act("complete_training_module", recorded_by=self.mentor_id, module=module)
        await self.act("onboard_mentee", recorded_by=self.hr_id)
        await self.act("sign_off_mentor", recorded_by=self.hr_id)

    async def session_slot(self, days_ahead: float = 2, weekday: int = 1, at: time = time(10, 0)) -> datetime:
        """The first `weekday` (0 = Monday) at `at`, mentee's local time, at least `days_ahead` from now."""
        local_now = (await self.harness.now()).astimezone(ZoneInfo(MENTEE_TZ))
        day = (local_now + timedelta(days=days_ahead)).date()
        while day.weekday() != weekday:
            day += timedelta(days=1)
        return datetime.combine(day, at, tzinfo=ZoneInfo(MENTEE_TZ))

    async def hold_session(self, *, feedback: bool = True, topics: tuple[str, ...] = ("social networks",),
                           mentor_rating: int = 4, mentee_rating: int = 5) -> int:
        """Propose, confirm, let the day come (the reminder goes out), record it held."""
        starts = await self.session_slot()
        proposed = await self.act("propose_session", recorded_by=self.hr_id, starts_at=starts.isoformat(),
                                  duration_minutes=60, topics=["social networks"])
        number = proposed.session_no
        self.session_starts[number] = starts
        await self.act("confirm_session", recorded_by=self.hr_id, session_no=number)
        await self.skip_past(starts + timedelta(minutes=5))
        await self.wait_for(lambda s: s.session(number).reminder_sent)
        await self.act("record_session_held", recorded_by=self.hr_id, session_no=number,
                       topics_covered=list(topics))
        if feedback:
            await self.act("give_feedback", recorded_by=self.mentor_id, session_no=number, by_role="mentor",
                           rating=mentor_rating, engaging=True, topics_covered=list(topics))
            await self.act("give_feedback", recorded_by=self.mentee_id, session_no=number, by_role="mentee",
                           rating=mentee_rating, engaging=True,
                           comment="I finally understand my privacy settings", share_comment=False)
        return number

    async def skip_past(self, moment: datetime) -> None:
        now = await self.harness.now()
        if moment > now:
            await self.harness.env.sleep(moment - now)


def timeline_of(events: list[Any]) -> list[str]:
    labels = []
    for e in events:
        if e.event_type == "NotificationSent":
            labels.append(f"NotificationSent:{e.payload['kind']}>{e.payload['recipient_role']}")
        else:
            labels.append(e.event_type)
    return labels


async def search_attributes(pair: Pair) -> dict[str, Any]:
    """The pair's custom search attributes as the server holds them.

    Read raw: after an unset, the time-skipping test server keeps a `binary/null` value where a
    real server drops the attribute, and the SDK's describe() cannot decode that null. Here an
    unset attribute is simply absent, as on a real server.
    """
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
    from temporalio.converter import PayloadConverter

    client = pair.harness.client
    raw = await client.workflow_service.describe_workflow_execution(DescribeWorkflowExecutionRequest(
        namespace=client.namespace, execution=WorkflowExecution(workflow_id=pair.handle.id)))
    values = {}
    for name, payload in raw.workflow_execution_info.search_attributes.indexed_fields.items():
        # TemporalChangeVersion is Temporal's own: the patches the run went through.
        if payload.metadata.get("encoding") == b"binary/null" or name == "TemporalChangeVersion":
            continue
        value = PayloadConverter.default.from_payloads([payload])[0]
        if payload.metadata.get("type") == b"Datetime":
            value = datetime.fromisoformat(value)
        values[name] = value
    return values


async def current_details(pair: Pair) -> str:
    """The current-details text the UI shows, read through the SDK's built-in metadata query."""
    from temporalio.api.sdk.v1 import WorkflowMetadata

    metadata = await pair.handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


def both(kind: str) -> list[str]:
    return [f"NotificationSent:{kind}>mentor", f"NotificationSent:{kind}>mentee"]


NOMINATION = ["PairNominated", "NotificationSent:motivation_request>mentor"]
INVITATION = ["MentorMotivationConfirmed", "MenteeInvited", "NotificationSent:invitation>mentee"]
CONSENT = ["MenteeConsentGiven", "NotificationSent:preparation_started>mentor",
           "NotificationSent:mentee_onboarding>mentee"]
PREPARATION = ["CurriculumAgreed", "TrainingModuleCompleted", "TrainingModuleCompleted",
               "MenteeOnboarded", "MentorSignedOff"]
SESSIONS_OPEN = both("sessions_open")  # since the patch "sessions-open-notice"
PREPARED = NOMINATION + INVITATION + CONSENT + PREPARATION + SESSIONS_OPEN
SESSION = ["SessionProposed", *both("session_invitation"), "SessionConfirmed", *both("session_reminder"),
           "SessionHeld", *both("feedback_request")]
FEEDBACK = ["FeedbackGiven", "FeedbackGiven"]


async def two_sessions_held(harness: Harness) -> Pair:
    """A new pair, prepared, with both planned sessions held and their feedback given."""
    pair = await harness.start()
    await pair.prepare()
    await pair.hold_session()
    await pair.hold_session()
    return pair


async def full_lifecycle(harness: Harness) -> Pair:
    """Nomination to completion, with both follow-ups answered: the recorded replay history."""
    pair = await two_sessions_held(harness)
    await pair.act("give_final_evaluation", recorded_by=MENTOR, by_role="mentor", rating=5,
                   would_recommend=True)
    await pair.act("give_final_evaluation", recorded_by=MENTEE, by_role="mentee", rating=4,
                   would_recommend=True, comment="Worth every minute")
    for days in (30, 90):
        await harness.skip(days=days - (30 if days == 90 else 0) + 1)
        await pair.wait_for(lambda s, d=days: d in s.follow_ups_sent)
        for role, who in (("mentor", MENTOR), ("mentee", MENTEE)):
            await pair.handle.signal("answer_follow_up", {"recorded_by": who, "days_after_end": days,
                                                          "by_role": role, "still_using": True})
    await pair.handle.result()
    return pair


async def lifecycle_without_final_evaluations(harness: Harness) -> Pair:
    """Two sessions, then only the mentor evaluates: the window closes, follow-ups go unanswered."""
    pair = await two_sessions_held(harness)
    await pair.act("give_final_evaluation", recorded_by=MENTOR, by_role="mentor", rating=5,
                   would_recommend=True)
    await pair.handle.result()  # the test server skips to each deadline
    return pair


LIFECYCLES = {"full": full_lifecycle, "without_final_evaluations": lifecycle_without_final_evaluations}


async def lifecycle_with_a_late_confirmation(harness: Harness) -> Pair:
    """A session confirmed two hours before it starts: its reminder (24 hours before) is already
    due when the pair next waits. Then the pair is withdrawn, its sessions held."""
    pair = await harness.start()
    await pair.prepare()
    starts = await pair.session_slot()
    proposed = await pair.act("propose_session", recorded_by=HR, starts_at=starts.isoformat(),
                              duration_minutes=60, topics=["social networks"])
    await pair.skip_past(starts - timedelta(hours=2))
    await pair.act("confirm_session", recorded_by=HR, session_no=proposed.session_no)
    await pair.wait_for(lambda s: s.session(proposed.session_no).reminder_sent)
    await pair.act("withdraw", recorded_by=HR, role="hr", reason="other")
    await pair.handle.result()
    return pair


LIFECYCLES["late_confirmation"] = lifecycle_with_a_late_confirmation


async def lifecycle_with_same_day_follow_ups(harness: Harness) -> Pair:
    """Follow-ups hours apart (as in the demo's policy of seconds), both on day 0 after the end;
    both people answer each of them."""
    pair = await harness.start(pair_input(policy={
        "first_follow_up_after": "PT2H", "second_follow_up_after": "PT5H", "follow_up_answer_within": "PT2H"}))
    await pair.prepare()
    await pair.hold_session()
    await pair.hold_session()
    for who, role in ((MENTOR, "mentor"), (MENTEE, "mentee")):
        await pair.act("give_final_evaluation", recorded_by=who, by_role=role, rating=5, would_recommend=True)
    await harness.skip(hours=2, minutes=5)
    for number in (1, 2):
        await pair.wait_for(lambda s, n=number: len(s.follow_ups_sent) == n, timeout=30)
        for who, role in ((MENTOR, "mentor"), (MENTEE, "mentee")):
            await pair.handle.signal("answer_follow_up", {"recorded_by": who, "days_after_end": 0,
                                                          "by_role": role, "still_using": True})
        if number == 1:
            await pair.wait_for(lambda s: len(s.follow_up_answers) == 2)
            await harness.skip(hours=3, minutes=30)
    await pair.handle.result()
    return pair


LIFECYCLES["same_day_follow_ups"] = lifecycle_with_same_day_follow_ups
