"""`make demo-programme`: one programme, from enrolment to its close report, against the running stack.

    make run               # in one terminal: the whole stack (worker.py --dev)
    make demo-programme    # in another: this script

A cohort of 12 mentors and 20 seniors (fictional; ids only in what is printed) goes through the
same updates a person sends from the Temporal UI: HR nominates the mentors in bulk, each confirms
once, the seniors enrol of their own will (one through HR with their written request), one
withdraws, HR asks for the matching and accepts it, which starts one pair each. The pairs run on a
policy of seconds: their seniors consent (one declines), prepare, hold a session and answer the
follow-ups; HR holds one collective session; one pair is left waiting and is wound down when HR
ends the sessions. The programme closes by itself once every pair has ended, with its report.

Exit status: 0 when the programme closed with its report, 1 when the demo failed, 2 when the
stack is not running. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time as clock
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

import demo
from events.matching import MatchSuggestion
from events.programme import ProgrammeFigures
from settings import Settings
from workflows.inputs import pair_workflow_id
from workflows.pair_state import PairState
from workflows.programme_state import GroupSession, ProgrammeState

Out = Callable[[str], Any]

MENTORS, SENIORS = 12, 20
HR = "DEMOHR01"
TOPICS = {"social-networks": "Social networks", "privacy": "Protecting personal data",
          "consumer-app": "The company's consumer app", "ai-assistants": "AI assistants at work"}
WAIT_MARGIN = 60.0  # seconds a timer may be late on a busy machine before the demo gives up
CONCURRENCY = 8  # updates in flight at once, as a handful of people clicking at the same time
# The pair demo's policy of seconds, with the follow-ups' answers awaited longer: 17 pairs answer
# through one busy worker.
POLICY = demo.DEMO_POLICY.model_copy(update={
    "first_follow_up_after": "PT10S", "second_follow_up_after": "PT20S", "follow_up_answer_within": "PT1M"})


def mentor_id(n: int) -> str:
    return f"DEMOM{n:03d}"


def senior_id(n: int) -> str:
    return f"DEMOS{n:03d}"


def _topics(n: int, count: int) -> list[str]:
    ids = list(TOPICS)
    return [ids[(n + k) % len(ids)] for k in range(count)]


def _person(employee_id: str, zone: str) -> dict[str, Any]:
    # Every day 07:00-22:00 in a zone where it is now daytime: a session soon fits everyone.
    return {"employee_id": employee_id, "display_name": f"Demo person {employee_id[-3:]}",
            "email": f"{employee_id.lower()}@example.com", "time_zone": zone,
            "availability": [{"weekday": day, "start": demo.DAY_START.isoformat(), "end": demo.DAY_END.isoformat()}
                             for day in demo.WEEKDAYS]}


def programme_input(programme_id: str, now: datetime) -> dict[str, Any]:
    today = now.date()
    return {
        "programme_id": programme_id, "name": "Demo programme (fictional people)",
        "hr_owners": [{"employee_id": HR, "display_name": "Robin Demo (HR)", "email": "robin.demo@example.com"}],
        "dates": {"enrolment_closes": today.isoformat(), "matching_on": today.isoformat(),
                  "sessions_end": (today + timedelta(days=30)).isoformat()},
        "topics": [{"id": i, "label": label} for i, label in TOPICS.items()],
        "sessions_planned": 1,
        "policy": POLICY.in_force(),
        "health_every": "PT2S", "digest_every": "PT30S",
    }


class DemoError(Exception):
    """The demo cannot go on; the message is one line for the person running it."""


class _Run:
    def __init__(self, handle: WorkflowHandle, out: Out) -> None:
        self.handle, self.out, self.started = handle, out, clock.monotonic()
        self.limit = asyncio.Semaphore(CONCURRENCY)

    def say(self, text: str) -> None:
        self.out(f"{clock.monotonic() - self.started:6.1f}s  {text}")

    async def act(self, update: str, payload: dict[str, Any], handle: WorkflowHandle | None = None) -> Any:
        async with self.limit:
            for _ in range(100):
                try:
                    return await (handle or self.handle).execute_update(update, payload)
                except WorkflowUpdateFailedError as exc:
                    cause = exc.cause
                    if isinstance(cause, ApplicationError) and cause.type == "ProgrammeRenewing":
                        await asyncio.sleep(0.2)  # a fresh run of its history: nothing recorded, send again
                        continue
                    raise DemoError(f"{update} was rejected: {str(cause or exc).splitlines()[0]}") from None
            raise DemoError(f"{update}: the programme kept renewing its history")

    async def each(self, work: Sequence[Awaitable[Any]]) -> list[Any]:
        return list(await asyncio.gather(*work))

    async def programme(self) -> ProgrammeState:
        return await self.handle.query("state", result_type=ProgrammeState)

    async def wait(self, what: str, check: Callable[[], Awaitable[bool]], expected_s: float = 0) -> None:
        deadline = clock.monotonic() + expected_s + WAIT_MARGIN
        while not await check():
            if clock.monotonic() > deadline:
                raise DemoError(f"{what} did not happen in time: is the worker running (`make run`)?")
            await asyncio.sleep(0.3)

    async def pair_state(self, handle: WorkflowHandle) -> PairState | None:
        try:
            return await handle.query("state", result_type=PairState)
        except Exception:  # not started its first task yet (or just continued as new)
            return None


async def run_demo(client: Client, settings: Settings, out: Out = print) -> dict[str, Any]:
    now = datetime.now(UTC)
    programme_id = f"demo-{now:%Y%m%d-%H%M%S}"
    workflow_id = f"programme-{programme_id}"
    zone = demo.mentee_time_zone(now)
    out("Reverse-mentoring programme demo: a cohort from enrolment to its close report, on a policy of seconds.")
    out(f"  programme {programme_id}: {MENTORS} mentors, {SENIORS} seniors (fictional; ids only from here on)")
    out(f"  Web UI    {demo.web_ui_url(settings, workflow_id)}")
    out("")
    try:
        handle = await client.start_workflow("MentoringProgramme", programme_input(programme_id, now),
                                             id=workflow_id, task_queue=settings.temporal_task_queue)
    except WorkflowAlreadyStartedError:
        raise DemoError(f"{workflow_id} already runs: wait a second and run the demo again") from None
    run = _Run(handle, out)

    async def opened() -> bool:
        try:
            return (await run.programme()).version > 0
        except Exception:
            return False

    await run.wait("the programme's opening", opened)
    run.say(f"HR {HR} opens the programme ({len(TOPICS)} catalogue topics)")

    # Enrolment: mentors in bulk, each confirming once; seniors of their own will.
    await run.act("nominate_mentors", {"recorded_by": HR, "mentors": [
        {**_person(mentor_id(n), zone), "topics_offered": _topics(n, 2), "capacity": 2} for n in range(MENTORS)]})
    run.say(f"HR nominates {MENTORS} mentors in one update")
    await run.each([run.act("confirm_programme_motivation", {"recorded_by": mentor_id(n)}) for n in range(MENTORS)])
    run.say(f"{MENTORS} mentors confirm their motivation, each for themself")
    enrolments = []
    for n in range(SENIORS):
        who = senior_id(n)
        by_hr = n == 0  # one senior wrote to HR, who enters the written request
        enrolments.append(run.act("enrol_senior", {
            "recorded_by": HR if by_hr else who, "senior": {**_person(who, zone), "topics_wished": _topics(n, 1)},
            "request": {"channel": "email" if by_hr else "self_service", "requested_on": now.date().isoformat()}}))
    await run.each(enrolments)
    run.say(f"{SENIORS} seniors enrol of their own will ({SENIORS - 1} themselves, 1 by e-mail entered by HR)")
    await run.act("withdraw_from_programme", {"recorded_by": senior_id(SENIORS - 1), "employee_id": senior_id(SENIORS - 1),
                                              "reason": "workload"})
    run.say(f"senior {senior_id(SENIORS - 1)} withdraws, without penalty")

    # Matching, explained, then accepted: one pair each.
    await run.act("suggest_matches", {"recorded_by": HR})
    suggestion = await handle.query("matches", result_type=MatchSuggestion)
    run.say(f"HR asks for the matching: {len(suggestion.pairs)} pairs suggested (total fit "
            f"{suggestion.total_score:.2f}), {len(suggestion.unmatched)} left out")
    best = max(suggestion.pairs, key=lambda p: p.score)
    run.say(f"  e.g. {best.senior_id} with {best.mentor_id}: {'; '.join(best.reasons)}")
    await run.act("accept_matches", {"recorded_by": HR})
    state = await run.programme()
    run.say(f"HR accepts them all: {len(state.pairs_started)} MentoringPair workflows started")
    pairs = {p.senior_id: (p.mentor_id, client.get_workflow_handle(w)) for p in suggestion.pairs
             if (w := pair_workflow_id(programme_id, p.mentor_id, p.senior_id)) in state.pairs_started}

    async def all_nominated() -> bool:
        states = await asyncio.gather(*(run.pair_state(h) for _, h in pairs.values()))
        return all(s is not None and s.version > 0 for s in states)

    await run.wait("the pairs' nominations", all_nominated)
    seniors = sorted(pairs)
    declining, waiting, going = seniors[0], seniors[1], seniors[2:]

    # Each pair: the senior's own consent (one declines), preparation, one session with its
    # feedback, the final evaluations. One pair is left waiting for its mentor.
    await run.act("decline_invitation", {"recorded_by": declining, "channel": "email"},
                  await _motivated(run, pairs[declining]))
    run.say(f"senior {declining} declines the invitation (recorded, the pair closes politely)")
    began = clock.monotonic()
    await run.each([_prepare(run, senior, pairs[senior]) for senior in going])
    run.say(f"{len(going)} seniors consent; curricula, training, onboarding and sign-offs recorded")
    # Sessions a little ahead: planning takes 2 updates a pair where preparing took 9 (this
    # machine's pace), and the collective session must still be ahead when proposed.
    lead = (clock.monotonic() - began) * 2 / 9 + 15
    starts = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)

    # A collective session, for the pairs going on, led by two mentors.
    group_at = starts + timedelta(seconds=2)
    leaders = sorted({pairs[s][0] for s in going})[:2]
    session = GroupSession.model_validate(await run.act("propose_group_session", {
        "recorded_by": HR, "topic": "privacy", "leaders": leaders, "seniors": going[:6],
        "starts_at": group_at.isoformat(), "duration_minutes": 60}))
    run.say(f"HR sets collective session {session.session_no} on privacy at {group_at:%H:%M:%S} UTC, led by "
            f"{', '.join(leaders)}: {len(session.invited())} people get an .ics")
    await run.each([_plan(run, pairs[senior], starts) for senior in going])
    run.say(f"each pair's session proposed and confirmed for {starts:%H:%M:%S} UTC")

    await asyncio.sleep(max((group_at - datetime.now(UTC)).total_seconds(), 0) + 1)
    # Each pair on its own: the session held, feedback, final evaluations; then the follow-ups
    # (seconds here, 30 and 90 days in production), answered as they come.
    holds = asyncio.gather(*(_hold(run, senior, pairs[senior]) for senior in going))
    attended = going[:5] + leaders
    await _retry_until_begun(run, "record_group_attendance", {"recorded_by": HR, "session_no": session.session_no,
                                                              "attended": attended})
    await run.each([run.act("rate_group_session", {"recorded_by": who, "session_no": session.session_no,
                                                   "rating": 5}) for who in going[:5]])
    run.say(f"collective session {session.session_no} held: {len(attended)} attended, rated by {len(going[:5])}")
    await holds
    run.say(f"{len(going)} pair sessions held, with feedback from both; final evaluations given")
    follow_ups = asyncio.gather(*(_follow_ups(run, senior, pairs[senior]) for senior in going))

    await run.act("end_sessions", {"recorded_by": HR})
    ended = await run.programme()
    run.say(f"HR ends the sessions: {len(ended.wound_down)} pair still waiting wound down "
            f"({waiting}'s), the others go on to their follow-ups")

    await follow_ups
    run.say(f"{len(going)} pairs answered both follow-ups and completed")

    async def closed() -> bool:
        return (await run.programme()).closed

    await run.wait("the programme's close", closed, 10)
    report = await handle.query("figures", result_type=ProgrammeFigures)
    run.say(f"the programme closes by itself with its report: {report.reached.get('completed', 0)} completed, "
            f"outcomes {report.outcomes}, consent {report.consent}, "
            f"still using (seniors) {report.still_using}")
    out("")
    out(f"  report    mentoring audit programme {programme_id}")
    out(f"  pairs     Temporal UI, workflows filtered by MentoringProgramme = '{programme_id}'")
    line = {"demo": "programme", "programme_id": programme_id, "pairs_started": report.pairs_started,
            "pairs_completed": report.reached.get("completed", 0), "group_sessions": report.group_sessions_held,
            "wound_down": len(ended.wound_down), "report": True,
            "seconds": round(clock.monotonic() - run.started, 1)}
    out(json.dumps(line))
    return line


async def _motivated(run: _Run, pair: tuple[str, WorkflowHandle]) -> WorkflowHandle:
    mentor, handle = pair
    await run.act("confirm_motivation", {"recorded_by": mentor}, handle)
    return handle


async def _prepare(run: _Run, senior: str, pair: tuple[str, WorkflowHandle]) -> None:
    mentor, handle = pair[0], await _motivated(run, pair)
    await run.act("accept_invitation", {"recorded_by": senior, "channel": "ui"}, handle)
    state = await run.pair_state(handle)
    topics = state.topics if state else ["Social networks"]
    await run.act("agree_curriculum", {"recorded_by": mentor, "topics": topics,
                                       "objectives": ["a first step with the tool"]}, handle)
    for module in ("reverse-mentoring-basics", "confidentiality"):
        await run.act("complete_training_module", {"recorded_by": mentor, "module": module}, handle)
    await run.act("onboard_mentee", {"recorded_by": HR}, handle)
    await run.act("sign_off_mentor", {"recorded_by": HR}, handle)


async def _plan(run: _Run, pair: tuple[str, WorkflowHandle], starts: datetime) -> None:
    handle = pair[1]
    state = await run.pair_state(handle)
    topics = state.topics if state else ["Social networks"]
    result = await run.act("propose_session", {"recorded_by": HR, "starts_at": starts.isoformat(),
                                               "duration_minutes": 60, "topics": topics[:1]}, handle)
    await run.act("confirm_session", {"recorded_by": HR, "session_no": result["session_no"]}, handle)


async def _hold(run: _Run, senior: str, pair: tuple[str, WorkflowHandle]) -> None:
    mentor, handle = pair
    await _retry_until_begun(run, "record_session_held", {"recorded_by": HR, "session_no": 1,
                                                          "topics_covered": ["the basics"]}, handle)
    for role, who in (("mentor", mentor), ("mentee", senior)):
        await run.act("give_feedback", {"recorded_by": who, "session_no": 1, "by_role": role, "rating": 4,
                                        "engaging": True, "topics_covered": ["the basics"]}, handle)
    for role, who in (("mentor", mentor), ("mentee", senior)):
        await run.act("give_final_evaluation", {"recorded_by": who, "by_role": role, "rating": 5,
                                                "would_recommend": True}, handle)


async def _retry_until_begun(run: _Run, update: str, payload: dict[str, Any],
                             handle: WorkflowHandle | None = None) -> None:
    """The server's clock may be a little behind ours: the outcome waits for the start."""
    for _ in range(40):
        try:
            await run.act(update, payload, handle)
            return
        except DemoError as exc:
            if "begun" not in str(exc) and "once it has started" not in str(exc):
                raise
        await asyncio.sleep(0.5)
    await run.act(update, payload, handle)


async def _follow_ups(run: _Run, senior: str, pair: tuple[str, WorkflowHandle]) -> None:
    mentor, handle = pair
    for number in (1, 2):
        async def sent(n: int = number) -> bool:
            state = await run.pair_state(handle)
            return state is not None and len(state.follow_ups_sent) >= n

        await run.wait(f"follow-up {number} of {handle.id}", sent, 15)
        state = await run.pair_state(handle)
        days = state.follow_ups_sent[-1] if state else 0
        for role, who in (("mentor", mentor), ("mentee", senior)):
            await handle.signal("answer_follow_up", {"recorded_by": who, "days_after_end": days, "by_role": role,
                                                     "still_using": number == 1 or role == "mentor",
                                                     "follow_up_no": number})

    async def completed() -> bool:
        state = await run.pair_state(handle)
        return state is not None and state.closed

    await run.wait(f"the completion of {handle.id}", completed, 10)


async def _main(settings: Settings, out: Out) -> dict[str, Any]:
    from runtime import StartupError, temporal_client

    async with contextlib.AsyncExitStack() as stack:
        try:
            client = await stack.enter_async_context(temporal_client(settings))
        except StartupError as exc:
            raise demo.StackNotRunning(f"{exc}: start the stack first with `make run` in another terminal") from None
        await demo.check_worker(client, settings)
        return await run_demo(client, settings, out)


def main(argv: list[str] | None = None) -> int:
    from settings import SettingsError, load_settings

    argparse.ArgumentParser(prog="python -m demo_programme", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"demo-programme: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        asyncio.run(_main(settings, lambda line: print(line, flush=True)))
        return 0
    except demo.StackNotRunning as exc:
        print(f"demo-programme: {exc}", file=sys.stderr, flush=True)
        return 2
    except (DemoError, demo.DemoError) as exc:
        print(f"demo-programme failed: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("demo-programme interrupted: its pairs end by themselves within minutes", file=sys.stderr, flush=True)
        return 130
    except (RPCError, OSError) as exc:
        print(f"demo-programme failed: lost the stack at {settings.temporal_address}: "
              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    demo._exit(main())
