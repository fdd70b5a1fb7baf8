"""`make demo`: one mentoring pair, nomination to completion, against the running stack.

    make run     # in one terminal: the whole stack (worker.py --dev)
    make demo    # in another: this script

The pair runs on a policy of seconds instead of days, so its whole lifecycle (motivation, consent,
preparation, two sessions with their reminders and feedback, the final evaluations and both
follow-ups) takes well under a minute. Each step is printed as it happens, with who did it (a
pseudonymous id) and the stage the pair is then in; open the printed Web UI link to watch the
workflow move along.

The people are fictional and their names appear only in the start input; the printed steps, like
the event log, carry ids only. Settings come from the environment, as for the worker
(settings.py): TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TASK_QUEUE, TEMPORAL_UI_PORT.

Exit status: 0 when the pair completed, 1 when the demo failed, 2 when the stack is not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time as clock
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from settings import Settings
from workflows.inputs import (
    AgreeCurriculum,
    AvailabilityWindow,
    CompleteTrainingModule,
    ConfirmMotivation,
    ConfirmSession,
    FollowUpAnswer,
    GiveFeedback,
    GiveFinalEvaluation,
    HrManager,
    InvitationAnswer,
    Mentee,
    Mentor,
    OnboardMentee,
    PairInput,
    ProposeSession,
    RecordSessionHeld,
    SignOffMentor,
    pair_workflow_id,
)
from workflows.pair_state import ActionResult, PairOutcome, PairState, answer_key
from workflows.policy import Policy
from workflows.timezones import zone

Out = Callable[[str], Any]

MENTOR, MENTEE, HR = "DEMO1001", "DEMO2001", "DEMOHR01"
WHO = {MENTOR: f"mentor {MENTOR}", MENTEE: f"mentee {MENTEE}", HR: f"HR {HR}", "system": "system (timer)"}
SESSIONS = 2
TRAINING_MODULES = ["reverse-mentoring-basics", "confidentiality"]
TOPICS = ["social networks", "protecting personal data"]

# Seconds where production has days. The waits the demo does not exercise (reminders, expiries,
# escalations) get a few minutes: they never fire in a normal run, yet a demo interrupted midway
# leaves no pair running for long: it expires, lapses or completes by itself within minutes.
DEMO_POLICY = Policy(
    motivation_reminder_after="PT1M", motivation_expires_after="PT2M",
    invitation_reminder_after="PT1M", invitation_expires_after="PT2M",
    preparation_reminder_after="PT1M", preparation_escalation_after="PT2M",
    stall_nudge_after="PT1M", at_risk_after="PT2M", lapse_after="PT3M",
    session_reminder_before="PT3S",
    final_evaluation_within="PT1M",
    first_follow_up_after="PT5S", second_follow_up_after="PT10S", follow_up_answer_within="PT4S",
)
SESSION_LEAD = timedelta(seconds=6)  # a session starts this long after it is proposed

# The mentee is available every day 07:00-22:00 in their time zone: the first of these zones
# where it is now daytime, so a session a few seconds ahead falls inside a window.
DAY_START, DAY_END = time(7, 0), time(22, 0)
MENTEE_ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

WAIT_MARGIN = 30.0  # seconds a timer may be late (a busy worker) before the demo gives up


class DemoError(Exception):
    """The demo cannot go on; the message is one line for the person running it."""


class StackNotRunning(DemoError):
    """The stack (Temporal, or the worker) is not there: exit status 2."""


# --- the pair ------------------------------------------------------------------------------------

def mentee_time_zone(now: datetime) -> str:
    for name in MENTEE_ZONES:
        local = now.astimezone(zone(name)).time()
        if time(DAY_START.hour, 30) <= local <= time(DAY_END.hour - 1, 0):
            return name
    return MENTEE_ZONES[0]  # unreachable: the three zones cover every hour of the day


def demo_input(programme_id: str, now: datetime) -> PairInput:
    """The start input: fictional people, a policy of seconds."""
    return PairInput(
        programme_id=programme_id,
        mentor=Mentor(employee_id=MENTOR, display_name="Alex Example (demo)",
                      email="alex.example@example.com", time_zone="Europe/Paris",
                      topics_mastered=TOPICS),
        mentee=Mentee(employee_id=MENTEE, display_name="Sam Sample (demo)",
                      email="sam.sample@example.com", time_zone=mentee_time_zone(now),
                      availability=[AvailabilityWindow(weekday=day, start=DAY_START, end=DAY_END)
                                    for day in WEEKDAYS],
                      topics_wished=TOPICS[1:]),
        topics=TOPICS,
        sessions_planned=SESSIONS,
        nominated_by=HrManager(employee_id=HR, display_name="Robin Demo (HR)",
                               email="robin.demo@example.com"),
        training_modules=TRAINING_MODULES,
        policy=DEMO_POLICY,
    )


def web_ui_url(settings: Settings, workflow_id: str) -> str:
    host = settings.temporal_address.rpartition(":")[0]
    return (f"http://{host}:{settings.temporal_ui_port}/namespaces/"
            f"{quote(settings.temporal_namespace, safe='')}/workflows/{quote(workflow_id, safe='')}")


def _seconds(policy_field: str) -> int:
    return int(DEMO_POLICY.duration(policy_field).total_seconds())


def _days_in_production(policy_field: str) -> int:
    return Policy().duration(policy_field).days


# --- driving it ----------------------------------------------------------------------------------

class _Run:
    """One demo run: the workflow handle, the clock and the printing."""

    def __init__(self, handle: WorkflowHandle, out: Out) -> None:
        self.handle, self.out, self.started = handle, out, clock.monotonic()

    def say(self, text: str) -> None:
        self.out(f"{clock.monotonic() - self.started:5.1f}s  {text}")

    def step(self, action: str, who: str, stage: str) -> None:
        self.say(f"{action:<50} {WHO.get(who, who):<17} -> {stage}")

    async def act(self, update: str, request: Any, action: str) -> ActionResult:
        """A human action, as HR or the person enters it in the UI (an update)."""
        try:
            result = await self.handle.execute_update(update, request, result_type=ActionResult)
        except WorkflowUpdateFailedError as exc:
            reason = str(exc.cause or exc).splitlines()[0]
            raise DemoError(f"{update} was rejected: {reason}") from None
        self.step(action, request.recorded_by, result.stage)
        return result

    async def state(self) -> PairState:
        return await self.handle.query("state", result_type=PairState)

    async def wait_for(self, done: Callable[[PairState], bool], what: str, expected_s: float) -> PairState:
        """Poll the pair's state until a timer has acted (the worker fires timers, not us)."""
        deadline = clock.monotonic() + expected_s + WAIT_MARGIN
        while True:
            try:
                state = await self.state()
                if done(state):
                    return state
                if state.closed:
                    raise DemoError(f"the pair ended as {state.stage.value} while waiting for {what}")
            except WorkflowQueryFailedError:
                pass  # the first workflow task has not run yet
            if clock.monotonic() > deadline:
                raise DemoError(f"{what} did not happen within {expected_s + WAIT_MARGIN:.0f} s: "
                                "is the worker running (`make run`)?")
            await asyncio.sleep(0.2)

    async def hold_session(self, topic: str) -> None:
        starts = (datetime.now(UTC) + SESSION_LEAD).replace(microsecond=0) + timedelta(seconds=1)
        proposed = await self.act("propose_session", ProposeSession(
            recorded_by=HR, starts_at=starts, duration_minutes=60, topics=[topic]),
            f"proposes a session at {starts:%H:%M:%S} UTC")
        number = proposed.session_no
        if number is None:
            raise DemoError("propose_session did not say which session it created")
        await self.act("confirm_session", ConfirmSession(recorded_by=HR, session_no=number),
                       f"confirms session {number} (both agreed)")
        before = _seconds("session_reminder_before")
        lead = max((starts - datetime.now(UTC)).total_seconds() - before, 0)
        self.say(f"waiting for the reminder of session {number} "
                 f"({_days_in_production('session_reminder_before')} day before in production, "
                 f"{before} s in this demo)...")
        state = await self.wait_for(lambda s: s.require_session(number).reminder_sent,
                                    f"the reminder of session {number}", lead)
        self.step(f"sends the reminder of session {number} to both", "system", state.stage.value)
        wait = (starts - datetime.now(UTC)).total_seconds()
        self.say(f"waiting for session {number} to start ({max(wait, 0):.0f} s)...")
        await self._record_held(number, starts, topic)
        for role, who, rating in (("mentor", MENTOR, 4), ("mentee", MENTEE, 5)):
            await self.act("give_feedback", GiveFeedback(
                recorded_by=who, session_no=number, by_role=role, rating=rating, engaging=True,
                topics_covered=[topic]), f"gives feedback on session {number} ({rating}/5)")

    async def _record_held(self, number: int, starts: datetime, topic: str) -> None:
        """The outcome is accepted once the session has started, by the workflow's clock."""
        await asyncio.sleep(max((starts - datetime.now(UTC)).total_seconds(), 0) + 0.3)
        request = RecordSessionHeld(recorded_by=HR, session_no=number, topics_covered=[topic])
        for _ in range(20):  # the server's clock may be a little behind ours
            try:
                await self.act("record_session_held", request, f"records session {number} as held")
                return
            except DemoError as exc:
                if "once it has started" not in str(exc):
                    raise
            await asyncio.sleep(0.5)
        await self.act("record_session_held", request, f"records session {number} as held")

    async def follow_up(self, number: int, policy_field: str, answer: bool) -> None:
        ordinal = "first" if number == 1 else "second"
        self.say(f"waiting for the {_days_in_production(policy_field)}-day follow-up "
                 f"({_seconds(policy_field)} s after the last session in this demo)...")
        state = await self.wait_for(lambda s: len(s.follow_ups_sent) >= number,
                                    f"the {ordinal} follow-up", _seconds(policy_field))
        self.step(f"sends the {ordinal} follow-up to both", "system", state.stage.value)
        if not answer:
            return
        days = state.follow_ups_sent[-1]

        def answered(by_role: str) -> Callable[[PairState], bool]:
            return lambda s: answer_key(days, number, by_role) in s.follow_up_answers

        for role, who in (("mentor", MENTOR), ("mentee", MENTEE)):
            # A signal, as an e-mail integration sends it: no reply, so read the state back. With
            # a policy of seconds both follow-ups are "0 days after the end": the number says which.
            await self.handle.signal("answer_follow_up", FollowUpAnswer(
                recorded_by=who, days_after_end=days, by_role=role, still_using=True, follow_up_no=number))
            state = await self.wait_for(answered(role), f"the {role}'s follow-up answer", 0)
            self.step(f"answers the {ordinal} follow-up (still using it)", who, state.stage.value)


async def run_demo(client: Client, settings: Settings, out: Out = print) -> str:
    """Drive one pair from nomination to completion; return its workflow id.

    Raises DemoError (one-line message) when a step is rejected, a timer does not fire in time or
    the pair ends otherwise than completed.
    """
    now = datetime.now(UTC)
    programme_id = f"demo-{now:%Y%m%d-%H%M%S}"
    nomination = demo_input(programme_id, now)
    workflow_id = pair_workflow_id(programme_id, MENTOR, MENTEE)

    out("Reverse-mentoring demo: one pair from nomination to completion, on a policy of seconds.")
    out(f"  pair      {nomination.pair_id}")
    out(f"  people    mentor {MENTOR}, mentee {MENTEE}, HR {HR} (fictional; ids only from here on)")
    out(f"  mentee    available every day {DAY_START:%H:%M}-{DAY_END:%H:%M} "
        f"({nomination.mentee.time_zone})")
    out(f"  Web UI    {web_ui_url(settings, workflow_id)}")
    out("")
    try:
        handle = await client.start_workflow(
            "MentoringPair", nomination, id=workflow_id, task_queue=settings.temporal_task_queue,
            result_type=PairOutcome)
    except WorkflowAlreadyStartedError:
        raise DemoError(f"a workflow {workflow_id} already runs: wait a second and run the demo again") from None
    run = _Run(handle, out)
    state = await run.wait_for(lambda s: s.stage.value != "nominated", "the nomination", 0)
    run.step("nominates the pair", HR, state.stage.value)

    # 2-3. the mentor says yes themself; the senior consents
    await run.act("confirm_motivation", ConfirmMotivation(recorded_by=MENTOR), "confirms their motivation")
    await run.act("accept_invitation", InvitationAnswer(recorded_by=MENTEE, channel="email"),
                  "accepts the invitation (consent)")
    # 4. preparation on both sides, then HR's sign-off
    await run.act("agree_curriculum", AgreeCurriculum(
        recorded_by=MENTOR, topics=TOPICS,
        objectives=["publish a first post", "tune privacy settings"]), "agrees the curriculum")
    for module in TRAINING_MODULES:
        await run.act("complete_training_module", CompleteTrainingModule(recorded_by=MENTOR, module=module),
                      f"completes training module {module}")
    await run.act("onboard_mentee", OnboardMentee(recorded_by=HR), "records the mentee's onboarding")
    await run.act("sign_off_mentor", SignOffMentor(recorded_by=HR), "signs the mentor off")
    # 5. sessions, each with its reminder, then feedback from both
    for topic in TOPICS[:SESSIONS]:
        await run.hold_session(topic)
    # 6. the final evaluations
    for role, who, rating in (("mentor", MENTOR, 5), ("mentee", MENTEE, 4)):
        await run.act("give_final_evaluation", GiveFinalEvaluation(
            recorded_by=who, by_role=role, rating=rating, would_recommend=True),
            f"gives the final evaluation ({rating}/5)")
    # 7. the follow-ups, both answered: the pair completes with the last answer.
    await run.follow_up(1, "first_follow_up_after", answer=True)
    await run.follow_up(2, "second_follow_up_after", answer=True)
    try:
        outcome: PairOutcome = await asyncio.wait_for(handle.result(), WAIT_MARGIN)
    except TimeoutError:
        raise DemoError("the pair did not complete in time: is the worker running (`make run`)?") from None
    except WorkflowFailureError as exc:
        raise DemoError(f"the workflow failed: {str(exc.cause or exc).splitlines()[0]}") from None
    run.step("closes the answer window: the pair ends", "system", outcome.stage)
    if outcome.stage != "completed":
        raise DemoError(f"the pair ended as {outcome.stage}, not completed")

    out("")
    out(f"Done in {clock.monotonic() - run.started:.0f} s: {outcome.sessions_held} sessions held, "
        f"{outcome.stream_version} events in the pair's stream {workflow_id}.")
    out(f"  Web UI    {web_ui_url(settings, workflow_id)}")
    out(f"  audit     {audit_hint(nomination.pair_id)}")
    return workflow_id


def audit_hint(pair_id: str) -> str:
    """The audit command for the pair; it reads the same settings (DATABASE_URL, or else the
    embedded PostgreSQL of `make run`)."""
    command = Path(sys.executable).parent / "mentoring"
    if command.exists():
        with contextlib.suppress(ValueError):
            command = command.relative_to(Path.cwd())
        return f"{command} audit pair {pair_id}"
    return f"mentoring audit pair {pair_id}"


# --- the command ---------------------------------------------------------------------------------

async def check_worker(client: Client, settings: Settings, wait_s: float = 5.0) -> None:
    """A worker polls the task queue, else the pair would wait forever for its first step."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    request = DescribeTaskQueueRequest(
        namespace=settings.temporal_namespace,
        task_queue=TaskQueue(name=settings.temporal_task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
    deadline = clock.monotonic() + wait_s
    while True:
        try:
            described = await client.workflow_service.describe_task_queue(request)
        except RPCError as exc:
            raise StackNotRunning(f"Temporal at {settings.temporal_address} does not answer: {exc.message}: "
                                  "start the stack first with `make run` in another terminal") from None
        if described.pollers:
            return
        if clock.monotonic() > deadline:
            raise StackNotRunning(
                f"no worker polls task queue '{settings.temporal_task_queue}' on "
                f"{settings.temporal_address}: start the stack first with `make run` in another terminal")
        await asyncio.sleep(0.5)


async def _main(settings: Settings, out: Out) -> str:
    from runtime import StartupError, temporal_client

    async with contextlib.AsyncExitStack() as stack:
        try:
            client = await stack.enter_async_context(temporal_client(settings))
        except StartupError as exc:
            raise StackNotRunning(
                f"{exc}: start the stack first with `make run` in another terminal") from None
        await check_worker(client, settings)
        return await run_demo(client, settings, out)


def main(argv: list[str] | None = None, out: Out | None = None) -> int:
    import argparse

    from settings import SettingsError, load_settings

    argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    out = out or say
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        asyncio.run(_main(settings, out))
        return 0
    except StackNotRunning as exc:
        print(f"demo: {exc}", file=sys.stderr, flush=True)
        return 2
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("demo interrupted: the pair stays in the stack and ends by itself within minutes",
              file=sys.stderr, flush=True)
        return 130
    except (RPCError, OSError) as exc:  # the stack went away midway
        print(f"demo failed: lost the stack at {settings.temporal_address}: "
              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr, flush=True)
        return 1


def _exit(code: int) -> None:
    """Exit without interpreter teardown. The Temporal client's Rust threads may still call into
    Python while it finalizes, which aborts a short-lived client process now and then ("Fatal
    Python error: PyGILState_Release", temporalio/sdk-python#300) and would turn a clean exit
    status into a crash. Everything is done by now: flush the output and leave."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main(sys.argv[1:]))
