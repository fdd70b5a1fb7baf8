"""The audit queries: what the `mentoring audit` command and the HTTP API both answer.

Each query is parameterised SQL over the read models (ids are bound, never spliced into SQL), and
returns a pydantic model, so the two doors give the same answers in the same JSON. Names come
from the `people` table at query time: an erased person shows as null, everywhere at once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeAlias

import asyncpg
from pydantic import BaseModel, Field

from events.pair import pair_stream
from events.programme import ProgrammeFigures, programme_stream
from events.store import PostgresEventStore
from projections.base import PAIR_STREAM_PREFIX, actor_of, occurred_at
from projections.pair_fold import STAGES, PairFacts, fold, next_deadline
from projections.programme_figures import figures

# A pool or one connection: the queries only call fetch, fetchrow and fetchval, which both have.
Db: TypeAlias = asyncpg.Pool | asyncpg.Connection


# --- shapes ----------------------------------------------------------------------------------------

class Person(BaseModel):
    employee_id: str
    display_name: str | None = Field(description="null when unknown or erased")

    def id_only(self) -> Person:
        return self.model_copy(update={"display_name": None})


class PairOverview(BaseModel):
    pair_id: str
    programme_id: str
    stage: str
    stage_since: datetime
    mentor: Person
    mentee: Person
    nominated_by: str
    nominated_at: datetime
    sessions_planned: int
    sessions_held: int
    average_rating: float | None = Field(description="session feedback from both sides, 1 to 5")
    ratings: int
    at_risk: bool
    paused: bool
    next_deadline: datetime | None
    next_deadline_kind: str | None
    last_activity_at: datetime = Field(description="last event recorded by a person, not a timer")
    ended_at: datetime | None


class TrailEntry(BaseModel):
    position: int
    at: datetime = Field(description="business time of the fact")
    recorded_at: datetime
    actor: str
    action: str
    subject: str = Field(description="the stream the event belongs to, e.g. pair-<id>")
    pair_id: str | None
    summary: str
    correlation_id: str | None
    workflow_id: str | None


class ConsentEntry(BaseModel):
    position: int
    at: datetime
    pair_id: str
    programme_id: str | None
    person_id: str
    role: str
    answer: str = Field(description="invited, consent_given, declined, expired, withdrawn, "
                                    "motivation_confirmed")
    channel: str | None
    recorded_by: str | None
    actor: str
    expires_at: datetime | None
    reason: str | None


class SessionEntry(BaseModel):
    pair_id: str
    session_no: int
    starts_at: datetime
    duration_minutes: int
    format: str
    topics: list[str]
    status: str
    topics_covered: list[str] | None


class SharedComment(BaseModel):
    """A feedback comment its author chose to share; the others are never shown."""

    event_id: str = Field(description="the FeedbackGiven / FinalEvaluationGiven event it belongs to")
    author_id: str
    written_at: datetime
    body: str


class PairReport(BaseModel):
    overview: PairOverview
    sessions: list[SessionEntry]
    consent: list[ConsentEntry]
    trail: list[TrailEntry]
    shared_comments: list[SharedComment] = Field(default_factory=list)
    objectives: list[str] = Field(default_factory=list, description="the curriculum's objectives, kept apart "
                                  "from the log (erasable); empty once erased")

    def seen_by(self, role: str) -> PairReport:
        """What `role` may read: HR everything; anyone else people by id only, and none of the
        comments and objectives, which their authors shared with HR, not with auditors."""
        if role == "hr":
            return self
        return self.model_copy(update={
            "shared_comments": [], "objectives": [],
            "overview": self.overview.model_copy(update={
                "mentor": self.overview.mentor.id_only(), "mentee": self.overview.mentee.id_only()})})


class ActorReport(BaseModel):
    actor: Person
    since: datetime | None
    until: datetime | None
    entries: list[TrailEntry]
    next_after: str | None = Field(None, description="more entries follow: pass this as `after` for the next page")


class AccessEntry(BaseModel):
    id: int
    at: datetime
    token_name: str | None = Field(description="role and token fingerprint; none: no token sent")
    role: str | None
    method: str
    route: str
    path_params: dict[str, Any]
    query_params: dict[str, Any]
    status: int
    answer_bytes: int
    duration_ms: float


async def access_log(db: Db, since: datetime, *, limit: int = 1000, after_id: int | None = None,
                     token: str | None = None) -> list[AccessEntry]:
    rows = await db.fetch(
        """SELECT id, at, token_name, role, method, route, path_params::text AS path_params,
                  query_params::text AS query_params, status, answer_bytes, duration_ms
             FROM api_access WHERE at >= $1 AND id > coalesce($2, 0) AND ($3::text IS NULL OR token_name = $3)
            ORDER BY id LIMIT $4""", since, after_id, token, limit)
    return [AccessEntry(**{**dict(r), "path_params": json.loads(r["path_params"]),
                           "query_params": json.loads(r["query_params"])}) for r in rows]


class ConsentSummary(BaseModel):
    invited: int = Field(description="mentees invited")
    consented: int
    declined: int = Field(description="mentees who declined")
    expired: int = Field(description="invitations that lapsed unanswered")
    withdrawn: int
    pairs_with_sessions_before_consent: list[str] = Field(
        description="pairs with a session starting before the mentee's recorded consent "
                    "(must be empty: nobody is forced)")


class ConsentReport(BaseModel):
    programme_id: str
    summary: ConsentSummary
    entries: list[ConsentEntry]


class StageFigures(BaseModel):
    stage: str
    pairs_now: int = Field(description="pairs in this stage now")
    pairs_reached: int = Field(description="pairs that ever entered this stage")
    finished_stays: int = Field(description="stays in this stage that have ended")
    median_days: float | None = Field(description="median length of the finished stays, in days")


class FunnelReport(BaseModel):
    programme_id: str
    pairs: int = Field(description="pairs nominated")
    invited: int
    consented: int
    active: int = Field(description="pairs not ended yet")
    outcomes: dict[str, int] = Field(description="ended pairs per outcome")
    consent_rate: float | None = Field(description="consented / invited")
    decline_rate: float | None = Field(description="declined by mentor or mentee / nominated")
    expiry_rate: float | None = Field(description="motivation or invitation expired / nominated")
    withdrawal_rate: float | None = Field(description="withdrawn / nominated")
    completion_rate: float | None = Field(description="completed / consented (pairs that started)")
    abandonment_rate: float | None = Field(
        description="started pairs (consent given) that were withdrawn or lapsed / consented")
    stages: list[StageFigures]


class BadEvent(BaseModel):
    position: int | None
    stream_id: str
    version: int | None
    event_id: str | None
    reason: str
    description: str


class VerifyResult(BaseModel):
    ok: bool
    events_checked: int
    streams_checked: int
    first_bad: BadEvent | None


class SessionAsOf(BaseModel):
    session_no: int
    status: str
    starts_at: datetime


class PairAsOf(BaseModel):
    """A pair as it stood at `as_of`, folded from the raw log (business times up to then)."""

    pair_id: str
    as_of: datetime
    events_applied: int
    last_position: int | None
    existed: bool = Field(description="false if the pair was not nominated yet at that time")
    programme_id: str | None = None
    stage: str | None = None
    mentor_id: str | None = None
    mentee_id: str | None = None
    mentor_motivated: bool = False
    consent_given: bool = False
    at_risk: bool = False
    paused: bool = False
    sessions_planned: int = 0
    sessions_held: int = 0
    average_rating: float | None = None
    sessions: list[SessionAsOf] = []
    next_deadline: datetime | None = None
    next_deadline_kind: str | None = None
    outcome: str | None = None
    ended_at: datetime | None = None


# --- queries ---------------------------------------------------------------------------------------

_TRAIL_COLUMNS = """position, at, recorded_at, actor, action, stream_id AS subject, pair_id, summary,
                    correlation_id, workflow_id"""
_CONSENT_COLUMNS = """position, at, pair_id, programme_id, person_id, role, answer, channel,
                      recorded_by, actor, expires_at, reason"""

_PAIR = """
SELECT p.*, m.display_name AS mentor_name, s.display_name AS mentee_name
FROM pair_overview.pairs p
LEFT JOIN people m ON m.employee_id = p.mentor_id
LEFT JOIN people s ON s.employee_id = p.mentee_id
WHERE p.pair_id = $1
"""


async def pair_report(db: Db, pair_id: str) -> PairReport | None:
    """A pair's overview, sessions, consent entries and full trail; None if there is no such pair.

    The pair's workflow id (`pair-<pair id>`, what HR sees in the Temporal UI) is accepted too.
    """
    row = await db.fetchrow(_PAIR, pair_id)
    if row is None and pair_id.startswith(PAIR_STREAM_PREFIX):
        pair_id = pair_id.removeprefix(PAIR_STREAM_PREFIX)
        row = await db.fetchrow(_PAIR, pair_id)
    if row is None:
        return None
    overview = PairOverview(
        **{k: row[k] for k in PairOverview.model_fields if k in row.keys()},
        mentor=Person(employee_id=row["mentor_id"], display_name=row["mentor_name"]),
        mentee=Person(employee_id=row["mentee_id"], display_name=row["mentee_name"]),
        average_rating=round(row["rating_sum"] / row["rating_count"], 2) if row["rating_count"] else None,
        ratings=row["rating_count"],
    )
    sessions = await db.fetch(
        """SELECT pair_id, session_no, starts_at, duration_minutes, format, topics, status,
                  topics_covered
           FROM session_calendar.sessions WHERE pair_id = $1 ORDER BY session_no""", pair_id)
    consent = await db.fetch(
        f"SELECT {_CONSENT_COLUMNS} FROM consent_register.entries WHERE pair_id = $1 ORDER BY position",
        pair_id)
    trail = await db.fetch(
        f"""SELECT {_TRAIL_COLUMNS} FROM audit_trail.entries WHERE pair_id = $1
            OR position = ANY(ARRAY(SELECT position FROM audit_trail.pair_links WHERE pair_id = $1))
            ORDER BY position""",
        pair_id)
    # What is said stays with the pair: only what its author chose to share, and
    # nothing erased.
    shared = await db.fetch(
        """SELECT event_id::text, author_id, created_at AS written_at, body FROM private_notes
            WHERE pair_id = $1 AND shared AND erased_at IS NULL AND body IS NOT NULL AND kind = 'comment'
            ORDER BY created_at, event_id""", pair_id)
    objectives = await db.fetchval(
        """SELECT body FROM private_notes WHERE pair_id = $1 AND kind = 'curriculum_objectives'
            AND erased_at IS NULL AND body IS NOT NULL ORDER BY created_at DESC LIMIT 1""", pair_id)
    return PairReport(
        overview=overview,
        sessions=[SessionEntry(**dict(r)) for r in sessions],
        consent=[ConsentEntry(**dict(r)) for r in consent],
        trail=[TrailEntry(**dict(r)) for r in trail],
        shared_comments=[SharedComment(**dict(r)) for r in shared],
        objectives=json.loads(objectives) if objectives else [],  # a JSON list (an objective may span lines)
    )


async def actor_report(db: Db, actor_id: str, since: datetime | None = None,
                       until: datetime | None = None, *, limit: int | None = None,
                       after: tuple[datetime, int] | None = None) -> ActorReport:
    """Everything a person (or 'system') did, by business time, within [since, until); a page of
    `limit` entries after the (time, position) `after`, when given."""
    rows = await db.fetch(
        f"""SELECT {_TRAIL_COLUMNS} FROM audit_trail.entries
            WHERE actor = $1 AND ($2::timestamptz IS NULL OR at >= $2)
              AND ($3::timestamptz IS NULL OR at < $3)
              AND ($4::timestamptz IS NULL OR (at, position) > ($4, $5))
            ORDER BY at, position LIMIT $6""",
        actor_id, since, until, after[0] if after else None, after[1] if after else 0,
        None if limit is None else limit + 1)
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if more else rows
    name = await db.fetchval("SELECT display_name FROM people WHERE employee_id = $1", actor_id)
    return ActorReport(actor=Person(employee_id=actor_id, display_name=name), since=since,
                       until=until, entries=[TrailEntry(**dict(r)) for r in rows],
                       next_after=f"{rows[-1]['at'].isoformat()}|{rows[-1]['position']}" if more else None)


async def consent_report(db: Db, programme_id: str) -> ConsentReport:
    rows = await db.fetch(
        f"""SELECT {_CONSENT_COLUMNS} FROM consent_register.entries
            WHERE programme_id = $1 ORDER BY at, position""", programme_id)
    entries = [ConsentEntry(**dict(r)) for r in rows]
    mentee = [e for e in entries if e.role == "mentee"]
    forced = await db.fetch(
        """SELECT DISTINCT s.pair_id FROM session_calendar.sessions s
           WHERE s.programme_id = $1 AND NOT EXISTS (
               SELECT 1 FROM consent_register.entries c
               WHERE c.pair_id = s.pair_id AND c.answer = 'consent_given' AND c.at <= s.starts_at)
           ORDER BY s.pair_id""", programme_id)
    summary = ConsentSummary(
        invited=sum(e.answer == "invited" for e in mentee),
        consented=sum(e.answer == "consent_given" for e in mentee),
        declined=sum(e.answer == "declined" for e in mentee),
        expired=sum(e.answer == "expired" for e in mentee),
        withdrawn=sum(e.answer == "withdrawn" for e in entries),
        pairs_with_sessions_before_consent=[r["pair_id"] for r in forced],
    )
    return ConsentReport(programme_id=programme_id, summary=summary, entries=entries)


_FUNNEL_PAIRS = """
SELECT count(*) AS pairs, count(*) FILTER (WHERE invited) AS invited,
       count(*) FILTER (WHERE consented) AS consented,
       count(*) FILTER (WHERE outcome IS NULL) AS active,
       count(*) FILTER (WHERE consented AND outcome IN ('withdrawn', 'lapsed')) AS abandoned
FROM programme_funnel.pairs WHERE programme_id = $1
"""

_FUNNEL_STAGES = """
WITH now_in AS (SELECT stage, count(*) AS n FROM programme_funnel.pairs
                WHERE programme_id = $1 GROUP BY stage),
     stays AS (SELECT stage, count(DISTINCT pair_id) AS reached,
                      count(*) FILTER (WHERE left_at IS NOT NULL) AS finished,
                      percentile_cont(0.5) WITHIN GROUP (
                          ORDER BY extract(epoch FROM left_at - entered_at))
                          FILTER (WHERE left_at IS NOT NULL) AS median_seconds
               FROM programme_funnel.stage_visits WHERE programme_id = $1 GROUP BY stage)
SELECT coalesce(n.stage, s.stage) AS stage, coalesce(n.n, 0) AS pairs_now,
       coalesce(s.reached, 0) AS pairs_reached, coalesce(s.finished, 0) AS finished_stays,
       s.median_seconds
FROM now_in n FULL JOIN stays s ON s.stage = n.stage
"""


async def funnel_report(db: Db, programme_id: str) -> FunnelReport:
    totals = await db.fetchrow(_FUNNEL_PAIRS, programme_id)
    outcomes = dict(await db.fetch(
        """SELECT outcome, count(*) FROM programme_funnel.pairs
           WHERE programme_id = $1 AND outcome IS NOT NULL GROUP BY outcome ORDER BY outcome""",
        programme_id))
    by_stage = {r["stage"]: r for r in await db.fetch(_FUNNEL_STAGES, programme_id)}
    order = list(STAGES) + sorted(set(by_stage) - set(STAGES))
    stages = [
        StageFigures(
            stage=stage, pairs_now=r["pairs_now"], pairs_reached=r["pairs_reached"],
            finished_stays=r["finished_stays"],
            median_days=round(r["median_seconds"] / 86400, 2) if r["median_seconds"] is not None
            else None)
        if (r := by_stage.get(stage)) else
        StageFigures(stage=stage, pairs_now=0, pairs_reached=0, finished_stays=0, median_days=None)
        for stage in order
    ]
    pairs, invited, consented = totals["pairs"], totals["invited"], totals["consented"]
    return FunnelReport(
        programme_id=programme_id, pairs=pairs, invited=invited, consented=consented,
        active=totals["active"], outcomes=outcomes,
        consent_rate=_rate(consented, invited),
        decline_rate=_rate(outcomes.get("mentor_declined", 0) + outcomes.get("mentee_declined", 0),
                           pairs),
        expiry_rate=_rate(outcomes.get("motivation_expired", 0)
                          + outcomes.get("invitation_expired", 0), pairs),
        withdrawal_rate=_rate(outcomes.get("withdrawn", 0), pairs),
        completion_rate=_rate(outcomes.get("completed", 0), consented),
        abandonment_rate=_rate(totals["abandoned"], consented),
        stages=stages,
    )


async def verify_log(store: PostgresEventStore) -> VerifyResult:
    """Recompute the hash chain of the whole log; name the first bad event."""
    report = await store.verify()
    bad = report.first_bad
    return VerifyResult(
        ok=report.ok, events_checked=report.events_checked, streams_checked=report.streams_checked,
        first_bad=BadEvent(position=bad.position, stream_id=bad.stream_id, version=bad.version,
                           event_id=str(bad.event_id) if bad.event_id else None,
                           reason=bad.reason, description=str(bad)) if bad else None,
    )


async def pair_as_of(store: PostgresEventStore, pair_id: str, as_of: datetime) -> PairAsOf | None:
    """The pair as it stood at `as_of`, folded from its raw events; None if there is no such pair.

    Reads the log, not the read models: it answers even for a moment no read model kept.
    """
    as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    events = await store.read_stream(pair_stream(pair_id))
    if not events and pair_id.startswith(PAIR_STREAM_PREFIX):  # given the workflow id
        pair_id = pair_id.removeprefix(PAIR_STREAM_PREFIX)
        events = await store.read_stream(pair_stream(pair_id))
    if not events:
        return None
    facts: PairFacts | None = None
    applied, last_position = 0, None
    for event in events:
        at = occurred_at(event)
        if at > as_of:
            continue
        facts = fold(facts, pair_id, event.event_type, event.payload, at, actor_of(event))
        applied, last_position = applied + 1, event.position
    if facts is None:
        return PairAsOf(pair_id=pair_id, as_of=as_of, events_applied=applied,
                        last_position=last_position, existed=False)
    deadline = next_deadline(facts)
    return PairAsOf(
        pair_id=pair_id, as_of=as_of, events_applied=applied, last_position=last_position,
        existed=True, programme_id=facts.programme_id, stage=facts.stage,
        mentor_id=facts.mentor_id, mentee_id=facts.mentee_id,
        mentor_motivated=facts.mentor_motivated, consent_given=facts.consent_given,
        at_risk=facts.at_risk, paused=facts.paused_since is not None,
        sessions_planned=facts.sessions_planned, sessions_held=facts.sessions_held,
        average_rating=facts.average_rating,
        sessions=[SessionAsOf(session_no=n, status=s.status, starts_at=s.starts_at)
                  for n, s in sorted(facts.sessions.items())],
        next_deadline=deadline.due if deadline else None,
        next_deadline_kind=deadline.kind if deadline else None,
        outcome=facts.outcome, ended_at=facts.ended_at,
    )


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# --- programmes ----------------------------------------------------------------------------------

class ProgrammeReport(BaseModel):
    """A programme's report: the one recorded at its close, or, while it runs, its figures now
    (folded from the log, as the programme's own health check does)."""

    programme_id: str
    closed: bool
    closed_at: datetime | None = None
    figures: ProgrammeFigures


class Rollup(BaseModel):
    """The programmes closed since a day, added up: what HR reports over a year."""

    since: datetime
    programmes: list[str]
    pairs_started: int
    reached: dict[str, int]
    outcomes: dict[str, int]
    consent: dict[str, int]
    sessions_held: int
    group_sessions_held: int
    group_attendances: int
    average_session_rating: float | None
    still_using: dict[str, dict[str, int]]
    completion_rate: float | None
    abandonment_rate: float | None
    mentors_recognised: int


async def programme_report(store: PostgresEventStore, db: Db, programme_id: str) -> ProgrammeReport | None:
    """The close report from the read model; for a programme still open, its figures as of now."""
    row = await db.fetchrow("SELECT closed_at, report FROM programme_reports.reports WHERE programme_id = $1",
                            programme_id)
    if row is not None:
        return ProgrammeReport(programme_id=programme_id, closed=True, closed_at=row["closed_at"],
                               figures=ProgrammeFigures.model_validate(row["report"]))
    now = await figures_from_log(store, programme_stream(programme_id), datetime.now(UTC))
    return None if now is None else ProgrammeReport(programme_id=programme_id, closed=False, figures=now)


EndedCheck = Callable[[list[str]], Awaitable[set[str]]]


async def figures_from_log(store: PostgresEventStore, stream_id: str, as_of: datetime,
                           ended: EndedCheck | None = None) -> ProgrammeFigures | None:
    """A programme's figures folded from its stream and the streams of the pairs it started.

    `ended` tells which of the pairs with nothing in the log have ended in Temporal (the worker's
    activity asks Temporal; without it they count as still starting)."""
    events = await store.read_stream(stream_id)
    if not events:
        return None
    started: dict[str, None] = {}  # in the order they started, each once
    for event in events:
        if event.event_type == "PairsStarted":
            started.update(dict.fromkeys(event.payload["started"]))
    pairs = await store.read_streams(list(started))
    silent = [stream for stream, recorded in pairs.items() if not recorded]
    gone = await ended(silent) if ended and silent else set()
    return figures(events, pairs, as_of, ended_unrecorded=gone)


async def programme_rollup(db: Db, since: datetime) -> Rollup:
    rows = await db.fetch("""SELECT programme_id, report FROM programme_reports.reports
                             WHERE closed_at >= $1 ORDER BY closed_at, programme_id""", since)
    reports = [ProgrammeFigures.model_validate(r["report"]) for r in rows]

    def total(key: str) -> dict[str, int]:
        sums: dict[str, int] = {}
        for report in reports:
            for name, count in getattr(report, key).items():
                sums[name] = sums.get(name, 0) + count
        return sums

    rated = sum(int(r.ratings.get("sessions_count") or 0) for r in reports)
    rating_sum = sum(float(r.ratings.get("sessions_sum") or 0) for r in reports)
    still: dict[str, dict[str, int]] = {}
    for report in reports:
        for which, answers in report.still_using.items():
            for answer, count in answers.items():
                still.setdefault(which, {}).setdefault(answer, 0)
                still[which][answer] += count
    started = sum(r.pairs_started for r in reports)
    reached, outcomes, consent = total("reached"), total("outcomes"), total("consent")
    lost = sum(r.abandoned for r in reports)
    return Rollup(
        since=since, programmes=[r["programme_id"] for r in rows], pairs_started=started,
        reached=reached, outcomes=outcomes, consent=consent,
        sessions_held=sum(r.sessions_held for r in reports),
        group_sessions_held=sum(r.group_sessions_held for r in reports),
        group_attendances=sum(r.group_attendances for r in reports),
        average_session_rating=round(rating_sum / rated, 2) if rated else None,
        still_using=still,
        completion_rate=_rate(reached.get("completed", 0), started),
        abandonment_rate=_rate(lost, consent.get("consented", 0)),
        mentors_recognised=len({m for r in reports for m in r.mentors_recognised}))
