"""Every audit query, checked against a log written by REAL `MentoringPair` runs.

The other projection tests build their logs from synthetic stories (lifecycles.py). Here the time-
skipping Temporal test server runs the real workflow with the real activities, writing to this
module's own PostgreSQL database: two programmes, ten pairs, one per branch of the lifecycle
(completion with both follow-ups, the mentor's silence, the mentee's decline, an expired invitation,
a withdrawal mid-sessions, a no-show then a lapse, an escalation then back on track, a pair still
at risk, a replaced mentor, a pause and resume). Then the projection runner catches up, and each
query is checked against what the workflows did: the stage each workflow reported (its `state`
query) at moments along the way, the scenario as driven, and the events table itself.

The scenarios run one after the other because the test server's clock is shared: a pair left open
sees its own timers fire whenever the clock moves on for another. Pairs that end run first; the
pairs left open are started last, and the clock moves little once they are.
"""

from __future__ import annotations

import asyncio
import copy
import json
import statistics
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from api.app import create_app
from cli.main import app as cli_app
from devstack.postgres import EmbeddedPostgres
from events.base import RecordedEvent
from events.store import PostgresEventStore, create_pool
from projections import all_projections, queries
from projections.rebuild import rebuild
from projections.runner import ProjectionStatus
from tests.conftest import create_database
from tests.projections.conftest import make_runner, snapshot_all
from tests.workflow.conftest import temporal_env, worker_harness  # noqa: F401  (a fixture)
from tests.workflow.pairs import (
    EXAMPLE,
    FEEDBACK,
    HR,
    PREPARED,
    SESSION,
    Harness,
    Pair,
    both,
    pair_input,
    timeline_of,
)
from workflows.pair_state import PairOutcome, PairState

PROG_A, PROG_B = "wfruns-A", "wfruns-B"
TOKENS = {"hr-token": "hr", "auditor-token": "auditor"}
AUDITOR = {"Authorization": "Bearer auditor-token"}
HR_TOKEN = {"Authorization": "Bearer hr-token"}


def without_names(answer: object) -> object:
    """An answer with every person's display name blanked, and free text left out, as an auditor
    receives it."""
    if isinstance(answer, dict):
        return {k: (None if k == "display_name" else [] if k in ("shared_comments", "objectives") else without_names(v))
                for k, v in answer.items()}
    if isinstance(answer, list):
        return [without_names(v) for v in answer]
    return answer
NEW_MENTOR = {"employee_id": "J10", "display_name": "Junior 10", "email": "junior10@example.com",
              "time_zone": "Europe/Rome", "topics_mastered": ["mobile apps"]}
# The default policy (workflows/policy.py), which every pair here runs with.
MOTIVATION_EXPIRES_AFTER, INVITATION_EXPIRES_AFTER = timedelta(days=7), timedelta(days=14)


# --- driving the workflows -------------------------------------------------------------------------

@dataclass
class Run:
    """One pair driven through the real workflow, and what the workflow said along the way."""

    name: str
    programme: str
    pair: Pair
    outcome: str | None  # how it ended (the funnel's outcome), None if still running
    consented: bool
    path: list[str]  # the stages the scenario takes it through, in order
    seen: list[tuple[datetime, PairState]] = field(default_factory=list)  # (moment, state then)
    final: PairState | None = None
    result: PairOutcome | None = None

    @property
    def pair_id(self) -> str:
        return self.pair.stream_id.removeprefix("pair-")

    @property
    def mentee(self) -> str:
        return self.pair.mentee_id


@dataclass
class World:
    store: PostgresEventStore
    database_url: str
    runs: dict[str, Run]
    statuses: list[ProjectionStatus]
    now: datetime  # the test server's clock when the runs were over
    extra: dict[str, Any] = field(default_factory=dict)


def people(programme: str, n: int) -> dict[str, Any]:
    """The example input with pair n's own people: mentor Jn, mentee Sn (nominated by HR001)."""
    mentor = {**copy.deepcopy(EXAMPLE["mentor"]), "employee_id": f"J{n}",
              "display_name": f"Junior {n}", "email": f"junior{n}@example.com"}
    mentee = {**copy.deepcopy(EXAMPLE["mentee"]), "employee_id": f"S{n}",
              "display_name": f"Senior {n}", "email": f"senior{n}@example.com"}
    return pair_input(programme_id=programme, mentor=mentor, mentee=mentee)


async def start(h: Harness, runs: dict[str, Run], name: str, programme: str, n: int, *,
                outcome: str | None, consented: bool, path: str) -> Run:
    run = Run(name, programme, await h.start(people(programme, n)), outcome, consented,
              [_STAGE_NAMES[word] for word in path.split()])
    runs[name] = run
    await see(h, run)
    return run


_STAGE_NAMES = {"nominated": "awaiting_motivation", "invited": "mentee_invited",
                "preparation": "preparation", "sessions": "sessions",
                "evaluation": "final_evaluation", "follow_up": "follow_up", "completed": "completed",
                "declined": "declined", "expired": "expired", "withdrawn": "withdrawn",
                "lapsed": "lapsed"}


async def see(h: Harness, run: Run) -> None:
    """Note the workflow's own state once it has settled (a notice may still be on its way after
    a timer), then move the clock on a little, so that the next facts come strictly after this
    moment: pair_as_of at it must show exactly this state."""
    state = await run.pair.state()
    while True:
        await asyncio.sleep(0.2)
        again = await run.pair.state()
        if again.version == state.version:
            break
        state = again
    run.seen.append((await h.now(), state))
    await h.skip(minutes=1)


async def drive(h: Harness) -> tuple[dict[str, Run], dict[str, Any]]:
    runs: dict[str, Run] = {}
    extra: dict[str, Any] = {}

    # 1. Programme A, nomination to completion, both follow-ups answered.
    full = await start(h, runs, "completed", PROG_A, 1, outcome="completed", consented=True,
                       path="nominated invited preparation sessions evaluation follow_up completed")
    p = full.pair
    await p.act("confirm_motivation", recorded_by=p.mentor_id)
    await see(h, full)
    await p.act("accept_invitation", recorded_by=p.mentee_id, channel="email")
    await see(h, full)
    await p.prepare_rest()
    await see(h, full)
    extra["hr_since"] = full.seen[-1][0]  # prepared: the sessions start
    await p.hold_session(topics=("social networks",), mentor_rating=4, mentee_rating=5)
    await see(h, full)
    await p.hold_session(topics=("mobile apps", "social networks"), mentor_rating=4, mentee_rating=4)
    await see(h, full)
    extra["hr_until"] = full.seen[-1][0]  # both sessions held (their feedback given)
    await p.act("give_final_evaluation", recorded_by=p.mentor_id, by_role="mentor", rating=5,
                would_recommend=True)
    await p.act("give_final_evaluation", recorded_by=p.mentee_id, by_role="mentee", rating=4,
                would_recommend=True)
    await see(h, full)
    for days, skip in ((30, 31), (90, 61)):
        await h.skip(days=skip)
        await p.wait_for(lambda s, d=days: d in s.follow_ups_sent)
        for role, who in (("mentor", p.mentor_id), ("mentee", p.mentee_id)):
            await p.handle.signal("answer_follow_up", {"recorded_by": who, "days_after_end": days,
                                                       "by_role": role, "still_using": True})
        if days == 30:
            await p.wait_for(lambda s: len(s.follow_up_answers) == 2)
            await see(h, full)
    full.result = await p.handle.result()

    # 2. The mentee declines; HR enters the answer that came by e-mail.
    declined = await start(h, runs, "declined", PROG_A, 2, outcome="mentee_declined", consented=False,
                           path="nominated invited declined")
    await declined.pair.act("confirm_motivation", recorded_by="J2")
    await see(h, declined)
    await declined.pair.act("decline_invitation", recorded_by=HR, channel="email")
    declined.result = await declined.pair.handle.result()

    # 3. The mentor never answers: a reminder, then the nomination lapses (7 days).
    silent = await start(h, runs, "motivation_expired", PROG_A, 3, outcome="motivation_expired",
                         consented=False, path="nominated expired")
    silent.result = await silent.pair.handle.result()

    # 4. The mentee never answers: a reminder, then the invitation expires (14 days).
    unanswered = await start(h, runs, "invitation_expired", PROG_A, 4, outcome="invitation_expired",
                             consented=False, path="nominated invited expired")
    await unanswered.pair.act("confirm_motivation", recorded_by="J4")
    await see(h, unanswered)
    unanswered.result = await unanswered.pair.handle.result()

    # 5. One session held, a second one proposed, then the mentee withdraws.
    withdrawn = await start(h, runs, "withdrawn", PROG_A, 5, outcome="withdrawn", consented=True,
                            path="nominated invited preparation sessions withdrawn")
    p = withdrawn.pair
    await p.prepare(channel="ui")
    await p.hold_session(mentor_rating=4, mentee_rating=3)
    second = await p.session_slot()
    p.session_starts[2] = second
    await p.act("propose_session", recorded_by=HR, starts_at=second.isoformat(), topics=["apps"])
    await see(h, withdrawn)
    await p.act("withdraw", recorded_by=p.mentee_id, role="mentee", reason="personal")
    withdrawn.result = await p.handle.result()

    # 6. A no-show; then nothing happens: nudged, flagged at risk, escalated, lapsed.
    no_show = await start(h, runs, "no_show_lapsed", PROG_A, 6, outcome="lapsed", consented=True,
                          path="nominated invited preparation sessions lapsed")
    p = no_show.pair
    await p.prepare(channel="in_person")
    starts = await p.session_slot()
    p.session_starts[1] = starts
    await p.act("propose_session", recorded_by=HR, starts_at=starts.isoformat(), topics=["apps"])
    await p.act("confirm_session", recorded_by=HR, session_no=1)
    await p.skip_past(starts + timedelta(minutes=20))
    await p.wait_for(lambda s: s.session(1).reminder_sent)
    await p.act("record_no_show", recorded_by=HR, session_no=1, absent="mentee")
    await see(h, no_show)
    no_show.result = await p.handle.result()

    # --- the pairs left open: the clock moves on once for all three, then hardly at all -------
    back = await start(h, runs, "back_on_track", PROG_A, 7, outcome=None, consented=True,
                       path="nominated invited preparation")
    risky = await start(h, runs, "at_risk", PROG_A, 8, outcome=None, consented=True,
                        path="nominated invited preparation")
    paused = await start(h, runs, "paused", PROG_B, 11, outcome=None, consented=True,
                         path="nominated invited preparation sessions")
    for run, channel in ((back, "integration"), (risky, "ui")):
        await run.pair.act("confirm_motivation", recorded_by=run.pair.mentor_id)
        await run.pair.act("accept_invitation", recorded_by=run.mentee, channel=channel)
        await see(h, run)
    await paused.pair.act("confirm_motivation", recorded_by="J11")
    await see(h, paused)
    await paused.pair.act("pause", recorded_by=HR, reason="leave")
    await see(h, paused)
    await h.skip(days=22)  # preparation idle past 21 days: both preparing pairs are escalated
    for run in (back, risky):
        await run.pair.wait_for(lambda s: s.at_risk)
        await see(h, run)
    await paused.pair.act("resume", recorded_by=HR)
    await see(h, paused)  # mentee_invited again, its expiry moved on by the pause
    await paused.pair.act("accept_invitation", recorded_by="S11", channel="integration")
    await paused.pair.prepare_rest()
    await back.pair.act("agree_curriculum", recorded_by="J7", topics=["social networks"],
                        objectives=["post once a week"])
    await see(h, back)

    # 9. Programme B: a session with the first mentor, who is replaced; the newcomer confirms,
    # trains, is signed off; the mentee's feedback on the first session comes only then.
    replaced = await start(h, runs, "replaced", PROG_B, 9, outcome=None, consented=True,
                           path="nominated invited preparation sessions nominated preparation sessions evaluation")
    p = replaced.pair
    await p.prepare()
    await p.hold_session(feedback=False, topics=("social networks",))
    await see(h, replaced)
    await p.act("replace_mentor", recorded_by=HR, new_mentor=NEW_MENTOR, reason="mentor_left")
    p.mentor_id = "J10"
    await see(h, replaced)
    await p.act("confirm_motivation", recorded_by="J10")
    for module in ("reverse-mentoring-basics", "confidentiality"):
        await p.act("complete_training_module", recorded_by="J10", module=module)
    await p.act("sign_off_mentor", recorded_by=HR)
    await p.act("give_feedback", recorded_by="S9", session_no=1, by_role="mentee", rating=3,
                engaging=True)
    await p.hold_session(topics=("mobile apps",), mentor_rating=4, mentee_rating=5)
    await see(h, replaced)

    # 11 (continued). The resumed pair plans its first session, then moves it: still ahead.
    p = paused.pair
    tuesday = await p.session_slot()
    await p.act("propose_session", recorded_by=HR, starts_at=tuesday.isoformat(), topics=["apps"])
    await p.act("confirm_session", recorded_by=HR, session_no=1)
    thursday = datetime.combine(tuesday.date() + timedelta(days=2), time(15, 0), tuesday.tzinfo)
    await p.act("reschedule_session", recorded_by=HR, session_no=1, starts_at=thursday.isoformat())
    p.session_starts[1] = thursday
    await see(h, paused)

    for run in runs.values():
        run.final = await run.pair.state()
    return runs, extra


@pytest.fixture(scope="module")
async def world(temporal_env, postgres_server: EmbeddedPostgres,  # noqa: F811
                migrated_template: str) -> AsyncIterator[World]:
    database_url = await create_database(postgres_server, migrated_template)
    pool = await create_pool(database_url, min_size=1, max_size=12)
    store = PostgresEventStore(pool)
    try:
        async with worker_harness(temporal_env, store) as harness:
            runs, extra = await drive(harness)
            now = await harness.now()
        # The workflows left open are terminated now (nothing is recorded for that): the log is
        # exactly what the runs wrote. Then the read models catch up with it.
        statuses = await make_runner(store, database_url).run_until_caught_up()
        yield World(store, database_url, runs, statuses, now, extra)
    finally:
        await store.close()
        await pool.close()


# --- reading the log back ---------------------------------------------------------------------------

def at_of(event: RecordedEvent) -> datetime:
    return datetime.fromisoformat(event.metadata["occurred_at"])


async def stream(world: World, run: Run) -> list[RecordedEvent]:
    return await world.store.read_stream(run.pair.stream_id)


def runs_in(world: World, programme: str) -> list[Run]:
    return [r for r in world.runs.values() if r.programme == programme]


def as_json(model) -> Any:
    return json.loads(model.model_dump_json())


def close(a: datetime | timedelta | None, b: datetime | timedelta, seconds: float = 5) -> bool:
    """Equal but for the moments between a workflow's steps (each append is a workflow task)."""
    return a is not None and abs(a - b) <= timedelta(seconds=seconds)


# --- the runs themselves, and the runner -----------------------------------------------------------

async def test_the_workflows_ended_as_driven_and_every_projection_caught_up(world: World):
    for run in world.runs.values():
        if run.outcome is None:
            assert run.result is None and not run.final.closed, run.name
        else:
            assert run.result.stage == run.final.stage.value, run.name
    assert {r.name: r.final.stage.value for r in world.runs.values()} == {
        "completed": "completed", "declined": "declined", "motivation_expired": "expired",
        "invitation_expired": "expired", "withdrawn": "withdrawn", "no_show_lapsed": "lapsed",
        "back_on_track": "preparation", "at_risk": "preparation", "replaced": "final_evaluation",
        "paused": "sessions"}

    # No parked failure: every projection applied every real event.
    assert {s.name for s in world.statuses} == {p.name for p in all_projections()}
    for status in world.statuses:
        assert (status.status, status.behind, status.failure) == ("running", 0, None), status
    failures = await world.store.pool.fetch("SELECT projection, event_type, error FROM projection_failures")
    assert failures == []


async def test_verify_log_checks_every_event_of_every_stream(world: World):
    result = await queries.verify_log(world.store)
    total = await world.store.pool.fetchval("SELECT count(*) FROM events")
    assert (result.ok, result.first_bad) == (True, None)
    assert (result.events_checked, result.streams_checked) == (total, len(world.runs))


# --- pair trail ------------------------------------------------------------------------------------

def expected_actor(event: RecordedEvent, run: Run, mentor: str, previous: str | None) -> str:
    """Who the scenario says did it: people for their own acts, HR for its own, timers as system.
    A fact that follows from another in the same append (back on track after an activity, the
    calendar cancellations of a closing) is recorded as done by the same actor (`previous`)."""
    kind, payload = event.event_type, event.payload
    if kind in ("PairBackOnTrack", "SessionCancelled"):
        return previous
    if kind == "PairWithdrawn":
        return run.mentee  # the only withdrawal driven here: the mentee's own
    if kind in ("FeedbackGiven", "FinalEvaluationGiven", "FollowUpAnswered"):
        return mentor if payload["by_role"] == "mentor" else run.mentee
    if kind in ("MentorMotivationConfirmed", "CurriculumAgreed", "TrainingModuleCompleted"):
        return mentor
    if kind == "MenteeConsentGiven":
        return run.mentee
    if kind in ("MenteeInvited", "NotificationSent", "FollowUpSent", "PairCompleted",
                "MentorMotivationExpired", "InvitationExpired", "PairNudged", "PairFlaggedAtRisk",
                "EscalatedToHr", "PairLapsed"):
        return "system"
    return HR  # nomination, onboarding, sign-off, sessions, pause, replacement, declines entered


def expected_trail(events: list[RecordedEvent], run: Run, mentors: list[str]) -> list[tuple]:
    """(position, action, actor, at) per event; `mentors` in order (a replacement moves on)."""
    mentor, rest, previous, trail = mentors[0], iter(mentors[1:]), None, []
    for e in events:
        if e.event_type == "MentorReplaced":
            mentor = next(rest)
        actor = expected_actor(e, run, mentor, previous)
        if e.event_type != "NotificationSent":
            previous = actor
        trail.append((e.position, e.event_type, actor, at_of(e)))
    return trail


async def test_pair_trail_of_the_completed_pair(world: World):
    run = world.runs["completed"]
    report = await queries.pair_report(world.store.pool, run.pair_id)
    events = await stream(world, run)
    assert timeline_of(events) == PREPARED + SESSION + FEEDBACK + SESSION + both(
        "final_evaluation_request") + FEEDBACK + ["FinalEvaluationGiven"] * 2 + [
        "FollowUpSent", *both("follow_up"), "FollowUpAnswered", "FollowUpAnswered"] * 2 + [
        "PairCompleted"]
    # One trail line per event of the stream, in order, with its position, actor and time.
    assert [(t.position, t.action, t.actor, t.at) for t in report.trail] == expected_trail(
        events, run, ["J1"])
    assert {t.subject for t in report.trail} == {run.pair.stream_id}
    positions = [t.position for t in report.trail]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert {t.workflow_id for t in report.trail} == {run.pair.stream_id}
    assert {t.correlation_id for t in report.trail} == {run.pair_id}
    summaries = {t.action: t.summary for t in report.trail}
    assert summaries["MenteeConsentGiven"] == "mentee S1 gave consent by email (entered by S1)"
    assert summaries["PairCompleted"] == "completed with 2 session(s) held"
    notices = [t.summary for t in report.trail if t.action == "NotificationSent"]
    assert "session_reminder for session 2 sent to S1 (mentee) by outbox" in notices
    assert "follow_up sent to J1 (mentor) by outbox" in notices  # the mail folder


async def test_pair_trail_of_every_pair_matches_the_events_table(world: World):
    for run in world.runs.values():
        report = await queries.pair_report(world.store.pool, run.pair_id)
        events = await stream(world, run)
        mentors = ["J9", "J10"] if run.name == "replaced" else [run.pair.mentor_id]
        assert [(t.position, t.action, t.actor, t.at) for t in report.trail] == expected_trail(
            events, run, mentors), run.name
        assert report.overview.pair_id == run.pair_id


async def test_pair_trail_of_the_replaced_mentor(world: World):
    run = world.runs["replaced"]
    report = await queries.pair_report(world.store.pool, run.pair_id)
    actions = [(t.action, t.actor) for t in report.trail if t.actor != "system"]
    replaced_at = actions.index(("MentorReplaced", HR))
    before, after = actions[:replaced_at], actions[replaced_at + 1:]
    assert ("MentorMotivationConfirmed", "J9") in before and ("MentorMotivationConfirmed", "J10") in after
    assert [a for a in after if a[0] == "TrainingModuleCompleted"] == [("TrainingModuleCompleted", "J10")] * 2
    assert after[after.index(("MentorSignedOff", HR)) + 1] == ("FeedbackGiven", "S9")  # session 1, late
    line = next(t for t in report.trail if t.action == "MentorReplaced")
    assert line.summary == "mentor J9 replaced by J10 by HR001 (mentor_left)"


# --- actor trail -----------------------------------------------------------------------------------

async def test_actor_trail_of_a_mentee_with_since_and_until(world: World):
    run = world.runs["completed"]
    everything = await queries.actor_report(world.store.pool, "S1")
    assert everything.actor.display_name == "Senior 1"
    assert [e.action for e in everything.entries] == [
        "MenteeConsentGiven", "FeedbackGiven", "FeedbackGiven", "FinalEvaluationGiven",
        "FollowUpAnswered", "FollowUpAnswered"]
    assert {e.pair_id for e in everything.entries} == {run.pair_id}
    mine = [e for e in await stream(world, run) if e.metadata["actor"] == "S1"]
    assert [(x.position, x.at) for x in everything.entries] == [(e.position, at_of(e)) for e in mine]

    # From the end of preparation to the end of the sessions: the two feedbacks only.
    since, until = world.extra["hr_since"], world.extra["hr_until"]
    window = await queries.actor_report(world.store.pool, "S1", since, until)
    assert [e.action for e in window.entries] == ["FeedbackGiven", "FeedbackGiven"]
    assert all(since <= e.at < until for e in window.entries)
    assert (await queries.actor_report(world.store.pool, "S1", until=everything.entries[0].at)).entries == []


async def test_actor_trail_of_hr_across_pairs_and_of_system(world: World):
    pool = world.store.pool
    rows = await pool.fetch("SELECT position, stream_id, event_type, metadata FROM events "
                            "WHERE metadata->>'actor' = $1", HR)
    by_hr = sorted((datetime.fromisoformat(r["metadata"]["occurred_at"]), r["position"])
                   for r in rows)
    report = await queries.actor_report(pool, HR)
    assert report.actor.display_name == "Claire Petit"
    assert [e.position for e in report.entries] == [p for _, p in by_hr]
    assert Counter(e.action for e in report.entries)["PairNominated"] == len(world.runs)
    assert {e.pair_id for e in report.entries if e.action == "MenteeDeclined"} == {
        world.runs["declined"].pair_id}

    # Between the end of the full pair's preparation and its last session: HR proposed,
    # confirmed and recorded its two sessions, and nothing else (no other pair ran then).
    window = await queries.actor_report(pool, HR, world.extra["hr_since"], world.extra["hr_until"])
    assert [e.action for e in window.entries] == ["SessionProposed", "SessionConfirmed", "SessionHeld"] * 2
    assert {e.pair_id for e in window.entries} == {world.runs["completed"].pair_id}

    timers = await queries.actor_report(pool, "system")
    assert {"PairLapsed", "MentorMotivationExpired", "InvitationExpired", "PairFlaggedAtRisk",
            "FollowUpSent", "PairCompleted"} <= {e.action for e in timers.entries}
    back = await queries.actor_report(pool, "J7")  # the curriculum put the pair back on track
    assert [e.action for e in back.entries][-2:] == ["CurriculumAgreed", "PairBackOnTrack"]


# --- consent register ------------------------------------------------------------------------------

def consent_story(run: Run) -> list[tuple]:
    """(answer, person, role, channel, recorded_by, actor) as each scenario was driven."""
    n = run.pair.data["mentor"]["employee_id"]
    s = run.mentee
    confirmed = ("motivation_confirmed", n, "mentor", None, None, n)
    invited = ("invited", s, "mentee", "email", None, "system")

    def consent(channel: str) -> tuple:
        return ("consent_given", s, "mentee", channel, s, s)

    return {
        "completed": [confirmed, invited, consent("email")],
        "declined": [confirmed, invited, ("declined", s, "mentee", "email", HR, HR)],
        "motivation_expired": [("expired", n, "mentor", None, None, "system")],
        "invitation_expired": [confirmed, invited, ("expired", s, "mentee", None, None, "system")],
        "withdrawn": [confirmed, invited, consent("ui"), ("withdrawn", s, "mentee", None, None, s)],
        "no_show_lapsed": [confirmed, invited, consent("in_person")],
        "back_on_track": [confirmed, invited, consent("integration")],
        "at_risk": [confirmed, invited, consent("ui")],
        "paused": [confirmed, invited, consent("integration")],
        "replaced": [confirmed, invited, consent("email"),
                     ("motivation_confirmed", "J10", "mentor", None, None, "J10")],
    }[run.name]


_CONSENT_EVENTS = {"MentorMotivationConfirmed", "MentorDeclined", "MentorMotivationExpired",
                   "MenteeInvited", "MenteeConsentGiven", "MenteeDeclined", "InvitationExpired",
                   "PairWithdrawn"}


@pytest.mark.parametrize("programme", [PROG_A, PROG_B])
async def test_consent_register_has_every_invitation_and_answer(world: World, programme: str):
    report = await queries.consent_report(world.store.pool, programme)
    runs = runs_in(world, programme)
    for run in runs:
        entries = [e for e in report.entries if e.pair_id == run.pair_id]
        assert [(e.answer, e.person_id, e.role, e.channel, e.recorded_by, e.actor)
                for e in entries] == consent_story(run), run.name
        events = [e for e in await stream(world, run) if e.event_type in _CONSENT_EVENTS]
        assert [(e.position, e.at) for e in entries] == [(x.position, at_of(x)) for x in events]
        for entry, event in zip(entries, events, strict=True):
            assert entry.programme_id == programme
            if entry.answer == "invited":
                assert entry.expires_at == datetime.fromisoformat(event.payload["expires_at"])
                assert close(entry.expires_at - entry.at, INVITATION_EXPIRES_AFTER)
            if entry.answer == "withdrawn":
                assert entry.reason == "personal"

    mentee = [e for run in runs for e in consent_story(run) if e[2] == "mentee"]
    assert report.summary == queries.ConsentSummary(
        invited=sum(e[0] == "invited" for e in mentee),
        consented=sum(e[0] == "consent_given" for e in mentee),
        declined=sum(e[0] == "declined" for e in mentee),
        expired=sum(e[0] == "expired" for e in mentee),
        withdrawn=sum(e[0] == "withdrawn" for e in mentee),
        pairs_with_sessions_before_consent=[])
    if programme == PROG_A:  # the branches of A, counted by hand
        assert (report.summary.invited, report.summary.consented, report.summary.declined,
                report.summary.expired, report.summary.withdrawn) == (7, 5, 1, 1, 1)
    # Entries are in time order; the expired mentor nomination shows too (role mentor).
    assert [e.at for e in report.entries] == sorted(e.at for e in report.entries)


# --- funnel ----------------------------------------------------------------------------------------

def _days(start: datetime, end: datetime) -> float:
    return (end - start) / timedelta(days=1)


@pytest.mark.parametrize("programme", [PROG_A, PROG_B])
async def test_funnel_counts_rates_and_medians(world: World, programme: str):
    report = await queries.funnel_report(world.store.pool, programme)
    runs = runs_in(world, programme)
    invited = [r for r in runs if r.name != "motivation_expired"]
    consented = [r for r in runs if r.consented]
    outcomes = Counter(r.outcome for r in runs if r.outcome)
    assert (report.pairs, report.invited, report.consented, report.active) == (
        len(runs), len(invited), len(consented), sum(r.outcome is None for r in runs))
    assert report.outcomes == dict(outcomes)

    def rate(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    assert report.consent_rate == rate(len(consented), len(invited))
    assert report.decline_rate == rate(outcomes["mentor_declined"] + outcomes["mentee_declined"], len(runs))
    assert report.expiry_rate == rate(outcomes["motivation_expired"] + outcomes["invitation_expired"],
                                      len(runs))
    assert report.withdrawal_rate == rate(outcomes["withdrawn"], len(runs))
    assert report.completion_rate == rate(outcomes["completed"], len(consented))
    assert report.abandonment_rate == rate(outcomes["withdrawn"] + outcomes["lapsed"], len(consented))
    if programme == PROG_A:
        assert (report.pairs, report.invited, report.consented, report.active) == (8, 7, 5, 2)
        assert (report.consent_rate, report.completion_rate, report.abandonment_rate) == (
            round(5 / 7, 4), 0.2, 0.4)

    # Where the pairs are now, and which stages they went through.
    stages = {s.stage: s for s in report.stages}
    now = Counter(r.final.stage.value for r in runs)
    assert {s: f.pairs_now for s, f in stages.items() if f.pairs_now} == dict(now)
    reached: Counter[str] = Counter()
    for run in runs:
        assert {s.stage.value for _, s in run.seen} <= set(run.path), run.name  # as the workflow saw it
        assert run.path[-1] == run.final.stage.value, run.name
        reached.update(set(run.path))
    assert {s: f.pairs_reached for s, f in stages.items() if f.pairs_reached} == dict(reached)
    # Each pair's stays, in order: the stages it went through; all but the current one ended.
    visits = await world.store.pool.fetch(
        "SELECT pair_id, stage, left_at FROM programme_funnel.stage_visits WHERE programme_id = $1 "
        "ORDER BY pair_id, visit", programme)
    for run in runs:
        mine = [(v["stage"], v["left_at"] is not None) for v in visits if v["pair_id"] == run.pair_id]
        assert mine == [(stage, i < len(run.path) - 1) for i, stage in enumerate(run.path)], run.name

    # Median days in the first two stages, from the events themselves.
    stays: dict[str, list[float]] = {"awaiting_motivation": [], "mentee_invited": []}
    for run in runs:
        events = await stream(world, run)
        entered, stage = at_of(events[0]), "awaiting_motivation"
        for e in events[1:]:
            if stage == "awaiting_motivation" and e.event_type in (
                    "MentorMotivationConfirmed", "MentorDeclined", "MentorMotivationExpired"):
                stays[stage].append(_days(entered, at_of(e)))
                entered, stage = at_of(e), ("mentee_invited" if e.event_type ==
                                            "MentorMotivationConfirmed" else None)
            elif stage == "mentee_invited" and e.event_type in (
                    "MenteeConsentGiven", "MenteeDeclined", "InvitationExpired"):
                stays[stage].append(_days(entered, at_of(e)))
                stage = None
            elif e.event_type == "MentorReplaced":
                entered, stage = at_of(e), "awaiting_motivation"
    for stage, days in stays.items():
        assert stages[stage].finished_stays == len(days), stage
        assert abs(stages[stage].median_days - statistics.median(days)) <= 0.006, stage
    if programme == PROG_A:
        # The paused pair is in B; in A the longest waits are the 7 and 14 days of the expiries.
        assert abs(max(stays["awaiting_motivation"]) - 7) < 0.01
        assert abs(max(stays["mentee_invited"]) - 14) < 0.01
    for figures in report.stages:
        assert (figures.median_days is None) == (figures.finished_stays == 0), figures


# --- the read models --------------------------------------------------------------------------------

async def test_pair_overview_matches_each_workflows_own_state(world: World):
    for run in world.runs.values():
        overview = (await queries.pair_report(world.store.pool, run.pair_id)).overview
        state = run.final
        # A closed pair is no longer at risk (the workflow keeps its last flag: nothing is due).
        assert (overview.stage, overview.sessions_planned, overview.sessions_held, overview.at_risk,
                overview.paused, overview.mentor.employee_id) == (
            state.stage.value, state.sessions_planned, state.sessions_held,
            state.at_risk and not state.closed, state.paused is not None, state.mentor_id), run.name
        assert overview.mentee.display_name == f"Senior {run.mentee[1:]}"
        events = await stream(world, run)
        ratings = [e.payload["rating"] for e in events if e.event_type == "FeedbackGiven"]
        assert overview.ratings == len(ratings)
        assert overview.average_rating == (round(sum(ratings) / len(ratings), 2) if ratings else None)
        assert overview.ended_at == (at_of(events[-1 - _closing_tail(events)]) if run.outcome else None)

    # The scenarios' own numbers.
    def overview(name: str):
        return queries.pair_report(world.store.pool, world.runs[name].pair_id)

    full = (await overview("completed")).overview
    assert (full.sessions_held, full.average_rating, full.ratings) == (2, 4.25, 4)  # 4+5, 4+4
    replaced = (await overview("replaced")).overview
    assert (replaced.mentor.employee_id, replaced.mentor.display_name) == ("J10", "Junior 10")
    assert (replaced.sessions_held, replaced.average_rating) == (2, 4.0)  # 3 late, then 4 and 5
    assert (await overview("at_risk")).overview.at_risk is True
    assert (await overview("back_on_track")).overview.at_risk is False

    # The next deadline of the open pair (a confirmed, rescheduled session) is its workflow's.
    paused = (await overview("paused")).overview
    final = world.runs["paused"].final
    assert paused.next_deadline_kind == final.next_deadline_kind is not None
    assert close(paused.next_deadline, final.next_deadline)
    assert paused.next_deadline > world.now and paused.paused is False
    for name in ("completed", "withdrawn", "no_show_lapsed"):
        assert (await overview(name)).overview.next_deadline is None


def _closing_tail(events: list[RecordedEvent]) -> int:
    """How many events follow the closing fact (calendar cancellations and goodbye notices)."""
    closing = {"PairCompleted", "MenteeDeclined", "MentorMotivationExpired", "InvitationExpired",
               "PairWithdrawn", "PairLapsed"}
    index = max(i for i, e in enumerate(events) if e.event_type in closing)
    return len(events) - 1 - index


async def test_mentor_recognition_credits_who_held_each_session(world: World):
    pool = world.store.pool
    mentors = {r["mentor_id"]: dict(r) for r in await pool.fetch(
        "SELECT mentor_id, pairs, sessions_given, rating_sum, rating_count FROM mentor_recognition.mentors")}
    topics: dict[str, dict[str, int]] = {}
    for r in await pool.fetch("SELECT mentor_id, topic, sessions FROM mentor_recognition.topics"):
        topics.setdefault(r["mentor_id"], {})[r["topic"]] = r["sessions"]

    def given(mentor: str) -> tuple:
        m = mentors[mentor]
        average = round(m["rating_sum"] / m["rating_count"], 2) if m["rating_count"] else None
        return m["pairs"], m["sessions_given"], average

    # (pairs, sessions given, mentees' average rating), as the scenarios ran.
    assert given("J1") == (1, 2, 4.5) and topics["J1"] == {"social networks": 2, "mobile apps": 1}
    assert given("J5") == (1, 1, 3.0) and topics["J5"] == {"social networks": 1}
    assert given("J6") == (1, 0, None) and "J6" not in topics  # the no-show is not a session given
    # The replaced mentor keeps the session they held, and the mentee's late rating of it.
    assert given("J9") == (1, 1, 3.0) and topics["J9"] == {"social networks": 1}
    assert given("J10") == (1, 1, 5.0) and topics["J10"] == {"mobile apps": 1}
    for n in (2, 3, 4, 7, 8, 11):
        assert given(f"J{n}") == (1, 0, None)
    assert set(mentors) == {f"J{n}" for n in range(1, 12)}

    # Cross-check with the log: every SessionHeld is credited to exactly one mentor.
    held = await pool.fetchval("SELECT count(*) FROM events WHERE event_type = 'SessionHeld'")
    assert sum(m["sessions_given"] for m in mentors.values()) == held


async def test_session_calendar_upcoming_and_past_per_person(world: World):
    pool = world.store.pool

    async def calendar(person: str) -> tuple[list[tuple], list[tuple]]:
        rows = await pool.fetch(
            """SELECT pair_id, session_no, status, starts_at, mentor_id, topics_covered
               FROM session_calendar.sessions WHERE mentor_id = $1 OR mentee_id = $1
               ORDER BY starts_at""", person)
        upcoming = [tuple(r.values()) for r in rows
                    if r["starts_at"] > world.now and r["status"] in ("proposed", "confirmed")]
        past = [tuple(r.values()) for r in rows if r["starts_at"] <= world.now]
        return upcoming, past

    def run(name: str) -> Run:
        return world.runs[name]

    full, paused = run("completed"), run("paused")
    starts = full.pair.session_starts
    past_sessions = [(full.pair_id, 1, "held", starts[1], "J1", ["social networks"]),
                     (full.pair_id, 2, "held", starts[2], "J1", ["mobile apps", "social networks"])]
    assert await calendar("S1") == await calendar("J1") == ([], past_sessions)

    ahead = [(paused.pair_id, 1, "confirmed", paused.pair.session_starts[1], "J11", None)]
    assert await calendar("S11") == await calendar("J11") == (ahead, [])

    withdrawn = run("withdrawn")
    starts = withdrawn.pair.session_starts
    assert await calendar("S5") == ([], [
        (withdrawn.pair_id, 1, "held", starts[1], "J5", ["social networks"]),
        (withdrawn.pair_id, 2, "cancelled", starts[2], "J5", None)])  # cancelled on withdrawal
    assert await calendar("S6") == ([], [(run("no_show_lapsed").pair_id, 1, "missed",
                                          run("no_show_lapsed").pair.session_starts[1], "J6", None)])

    replaced = run("replaced")
    starts = replaced.pair.session_starts
    first = (replaced.pair_id, 1, "held", starts[1], "J9", ["social networks"])
    second = (replaced.pair_id, 2, "held", starts[2], "J10", ["mobile apps"])
    assert await calendar("J9") == ([], [first])
    assert await calendar("J10") == ([], [second])
    assert await calendar("S9") == ([], [first, second])
    assert await calendar("S2") == ([], [])


# --- the past, folded from the raw log ---------------------------------------------------------------

async def test_pair_as_of_shows_the_stage_the_workflow_reported_then(world: World):
    checked = 0
    for run in world.runs.values():
        for moment, state in run.seen:
            then = await queries.pair_as_of(world.store, run.pair_id, moment)
            assert then.existed
            assert (then.stage, then.consent_given, then.mentor_motivated, then.sessions_held,
                    then.at_risk, then.paused, then.mentor_id) == (
                state.stage.value, state.consent_given, state.mentor_motivated,
                state.sessions_held, state.at_risk, state.paused is not None, state.mentor_id), (
                run.name, moment)
            assert [(s.session_no, s.status, s.starts_at) for s in then.sessions] == [
                (s.session_no, s.status, s.starts_at) for s in state.sessions]
            assert then.events_applied == state.version  # every event up to then, none after
            # The deadline the read models name is the workflow's own (one lifecycle module).
            assert then.next_deadline_kind == state.next_deadline_kind, (run.name, moment, state.stage)
            if state.next_deadline is None:
                assert then.next_deadline is None, (run.name, state.stage)
            else:
                assert close(then.next_deadline, state.next_deadline), (
                    run.name, state.stage, then.next_deadline, state.next_deadline)
            checked += 1
    assert checked >= 25


async def test_pair_as_of_mid_lifecycle_moments(world: World):
    store = world.store
    full = world.runs["completed"]
    stages = [(await queries.pair_as_of(store, full.pair_id, m)).stage for m, _ in full.seen]
    assert stages == ["awaiting_motivation", "mentee_invited", "preparation", "sessions", "sessions",
                      "final_evaluation", "follow_up", "follow_up"]
    before = await queries.pair_as_of(store, full.pair_id, full.seen[0][0] - timedelta(days=1))
    assert (before.existed, before.events_applied) == (False, 0)

    # The lapsed pair, between being flagged at risk and lapsing: at risk, in the sessions stage.
    lapsed = world.runs["no_show_lapsed"]
    events = {e.event_type: e for e in await stream(world, lapsed)}
    flagged = at_of(events["PairFlaggedAtRisk"])
    assert flagged < at_of(events["PairLapsed"])
    then = await queries.pair_as_of(store, lapsed.pair_id, flagged + timedelta(hours=1))
    assert (then.stage, then.at_risk, then.outcome, [s.status for s in then.sessions]) == (
        "sessions", True, None, ["missed"])
    end = await queries.pair_as_of(store, lapsed.pair_id, world.now)
    assert (end.stage, end.outcome, end.at_risk, end.ended_at) == (
        "lapsed", "lapsed", False, at_of(events["PairLapsed"]))

    # The expiries: once the reminder went out, the deadline named is when the pair did expire.
    for name, reminder, kind, ending in (
            ("invitation_expired", "invitation_reminder", "invitation_expiry", "InvitationExpired"),
            ("motivation_expired", "motivation_reminder", "motivation_expiry", "MentorMotivationExpired")):
        run = world.runs[name]
        events = await stream(world, run)
        reminded = next(e for e in events if e.event_type == "NotificationSent" and e.payload["kind"] == reminder)
        waiting = await queries.pair_as_of(store, run.pair_id, at_of(reminded))
        assert waiting.next_deadline_kind == kind, name
        assert close(waiting.next_deadline, at_of(next(e for e in events if e.event_type == ending))), name

    # The pause: no deadline while paused; after it, the same deadline comes that much later.
    paused = world.runs["paused"]
    (invited_at, invited), (paused_at, _), (resumed_at, resumed) = paused.seen[1:4]
    during = await queries.pair_as_of(store, paused.pair_id, paused_at)
    after = await queries.pair_as_of(store, paused.pair_id, resumed_at)
    before = await queries.pair_as_of(store, paused.pair_id, invited_at)
    assert (during.stage, during.paused, during.next_deadline) == ("mentee_invited", True, None)
    assert (after.stage, after.paused) == ("mentee_invited", False)
    assert after.next_deadline_kind == before.next_deadline_kind == invited.next_deadline_kind
    pause_length = resumed.clock_start - invited.clock_start
    assert pause_length > timedelta(days=22)
    assert close(after.next_deadline, before.next_deadline + pause_length)


# --- two doors, one answer ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def api(world: World) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(world.store.pool, TOKENS))
    async with httpx.AsyncClient(transport=transport, base_url="http://audit") as client:
        yield client


async def test_the_command_and_the_api_give_the_same_answers(world: World, api: httpx.AsyncClient):
    full, replaced = world.runs["completed"], world.runs["replaced"]
    since, until = world.extra["hr_since"].isoformat(), world.extra["hr_until"].isoformat()
    middle = full.seen[3][0].isoformat()
    pool, store = world.store.pool, world.store
    doors = [
        (["audit", "pair", full.pair_id], f"/audit/pairs/{full.pair_id}", {},
         queries.pair_report(pool, full.pair_id)),
        (["audit", "pair", replaced.pair_id], f"/audit/pairs/{replaced.pair_id}", {},
         queries.pair_report(pool, replaced.pair_id)),
        (["audit", "consent", "--programme", PROG_A], "/audit/consent", {"programme": PROG_A},
         queries.consent_report(pool, PROG_A)),
        (["audit", "consent", "--programme", PROG_B], "/audit/consent", {"programme": PROG_B},
         queries.consent_report(pool, PROG_B)),
        (["audit", "funnel", "--programme", PROG_A], "/audit/funnel", {"programme": PROG_A},
         queries.funnel_report(pool, PROG_A)),
        (["audit", "funnel", "--programme", PROG_B], "/audit/funnel", {"programme": PROG_B},
         queries.funnel_report(pool, PROG_B)),
        (["audit", "actor", HR, "--since", since, "--until", until], f"/audit/actors/{HR}",
         {"since": since, "until": until},
         queries.actor_report(pool, HR, world.extra["hr_since"], world.extra["hr_until"])),
        (["audit", "as-of", middle, "pair", full.pair_id], f"/audit/pairs/{full.pair_id}/as-of",
         {"time": middle}, queries.pair_as_of(store, full.pair_id, full.seen[3][0])),
        (["audit", "verify"], "/audit/verify", {}, queries.verify_log(store)),
    ]
    cli = CliRunner()
    for args, path, params, direct in doors:
        result = await asyncio.to_thread(cli.invoke, cli_app,
                                         [*args, "--json", "--database-url", world.database_url])
        assert result.exit_code == 0, result.output
        over_http = await api.get(path, headers=HR_TOKEN, params=params)
        assert over_http.status_code == 200, over_http.text
        assert json.loads(result.output) == over_http.json() == as_json(await direct), path
        # An auditor reads the same facts, people by id only.
        audited = (await api.get(path, headers=AUDITOR, params=params)).json()
        assert audited == without_names(over_http.json()), path
        if path.startswith("/audit/pairs/") and not path.endswith("as-of"):
            assert over_http.json()["overview"]["mentee"]["display_name"], "HR sees names"

    # The command's tables tell the same story.
    table = await asyncio.to_thread(cli.invoke, cli_app, ["audit", "consent", "--programme", PROG_A,
                                                          "--database-url", world.database_url])
    assert "7 invited, 5 consented, 1 declined, 1 expired, 1 withdrawn" in table.output
    assert "sessions before consent: none" in table.output


# --- last: a rebuild from the real log gives the same read models, row for row -----------------------

async def test_a_rebuild_from_the_real_log_gives_the_same_read_models(world: World):
    before = await snapshot_all(world.store.pool)
    await rebuild(world.store, all_projections(), dsn=world.database_url, batch_size=37)
    assert await snapshot_all(world.store.pool) == before
