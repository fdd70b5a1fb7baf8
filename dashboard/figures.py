"""The dashboard's figures, read from the read models: one programme's, or every programme's.

Every figure the pages draw comes from here, and the pages print the same numbers in a table
beside each chart, so what a person reads is what the read models hold (the browser test checks).
Ids only: names are added by the pages for HR, never for auditors.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
from pydantic import BaseModel

from events.lifecycle import Stage

# The funnel's steps, each a pair reaches once the fact is recorded (the same steps as the
# programme's own figures).
FUNNEL_STEPS = ("nominated", "consented", "prepared", "in sessions", "completed")
_PREPARED_OR_LATER = [Stage.SESSIONS, Stage.FINAL_EVALUATION, Stage.FOLLOW_UP, Stage.COMPLETED]
MAX_WEEKS = 104  # the time series show at most two years, up to now


class Count(BaseModel):
    label: str
    value: int


class LeftAt(BaseModel):
    """Pairs that ended without completing: the stage they left from, and how."""

    stage: str
    outcome: str
    pairs: int


class WeekAlive(BaseModel):
    week: date
    alive: int
    at_risk: int


class WeekSessions(BaseModel):
    week: date
    individual: int
    collective: int


class RatingCounts(BaseModel):
    rating: int
    session: int
    final: int


class FollowUpAdoption(BaseModel):
    days_after_end: int
    still_using: int
    not_using: int


class PairNeedingHr(BaseModel):
    pair_id: str
    programme_id: str
    stage: str
    reasons: list[str]
    mentor_id: str
    mentee_id: str
    since: datetime


class Dashboard(BaseModel):
    programme_id: str | None  # None: every programme
    programmes: list[str]
    as_of: datetime
    pairs: int
    alive: int
    at_risk: int
    funnel: list[Count]
    left: list[LeftAt]
    alive_over_time: list[WeekAlive]
    sessions_per_week: list[WeekSessions]
    ratings: list[RatingCounts]
    average_session_rating: float | None
    consent: list[Count]
    follow_ups: list[FollowUpAdoption]
    needing_hr: list[PairNeedingHr]  # the first LIST_LIMIT, longest waiting first
    needing_hr_count: int  # all of them


LIST_LIMIT = 500


async def programmes(db: asyncpg.Pool | asyncpg.Connection) -> list[str]:
    """Every programme with a pair, or opened (and not matched yet)."""
    rows = await db.fetch("""SELECT programme_id FROM pair_overview.pairs
                             UNION SELECT programme_id FROM programme_health.programmes ORDER BY 1""")
    return [r["programme_id"] for r in rows]


async def dashboard(db: asyncpg.Pool, programme_id: str | None, now: datetime | None = None) -> Dashboard:
    """Everything the dashboard shows, for one programme or (None) for all, as of `now`."""
    now = now or datetime.now(UTC)
    async with db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        # One snapshot: the funnel, the series and the list agree with each other.
        await conn.execute("SET LOCAL TimeZone TO 'UTC'")
        totals = await conn.fetchrow(_TOTALS, programme_id)
        needing = await conn.fetch(_NEEDING_HR, programme_id, now, LIST_LIMIT)
        return Dashboard(
            programme_id=programme_id, programmes=await programmes(conn), as_of=now,
            pairs=totals["pairs"], alive=totals["alive"], at_risk=totals["at_risk"],
            funnel=await _funnel(conn, programme_id),
            left=[LeftAt(**r) for r in await conn.fetch(_LEFT, programme_id)],
            alive_over_time=[WeekAlive(**r) for r in await conn.fetch(_ALIVE_BY_WEEK, programme_id, now, MAX_WEEKS)],
            sessions_per_week=[WeekSessions(**r) for r in await conn.fetch(_SESSIONS_BY_WEEK, programme_id, now,
                                                                            MAX_WEEKS)],
            ratings=_ratings(await conn.fetch(_RATINGS, programme_id)),
            average_session_rating=await conn.fetchval(_AVERAGE_SESSION_RATING, programme_id),
            consent=[Count(label=r["answer"], value=r["count"]) for r in await conn.fetch(_CONSENT, programme_id)],
            follow_ups=[FollowUpAdoption(**r) for r in await conn.fetch(_FOLLOW_UPS, programme_id)],
            needing_hr=[PairNeedingHr(**r) for r in needing],  # the row's all_needing is ignored
            needing_hr_count=needing[0]["all_needing"] if needing else 0,
        )


async def _funnel(conn: asyncpg.Connection, programme_id: str | None) -> list[Count]:
    row = await conn.fetchrow(_FUNNEL, programme_id, [str(s) for s in _PREPARED_OR_LATER])
    return [Count(label=step, value=row[i]) for i, step in enumerate(FUNNEL_STEPS)]


def _ratings(rows: list[asyncpg.Record]) -> list[RatingCounts]:
    found = {(r["kind"], r["rating"]): r["count"] for r in rows}
    return [RatingCounts(rating=n, session=found.get(("session", n), 0), final=found.get(("final", n), 0))
            for n in range(1, 6)]


def week_of(moment: datetime) -> date:
    """The Monday of the moment's week (UTC), as the series label their weeks."""
    day = moment.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


_IN = "($1::text IS NULL OR {0}programme_id = $1)"

_TOTALS = f"""
SELECT count(*) AS pairs,
       count(*) FILTER (WHERE ended_at IS NULL) AS alive,
       count(*) FILTER (WHERE ended_at IS NULL AND at_risk) AS at_risk
  FROM pair_overview.pairs WHERE {_IN.format('')}"""

_FUNNEL = f"""
SELECT count(*) AS nominated,
       count(*) FILTER (WHERE f.consented) AS consented,
       count(*) FILTER (WHERE EXISTS (SELECT FROM programme_funnel.stage_visits v
                                       WHERE v.pair_id = f.pair_id AND v.stage = ANY($2::text[]))) AS prepared,
       count(*) FILTER (WHERE EXISTS (SELECT FROM session_calendar.sessions s
                                       WHERE s.pair_id = f.pair_id AND s.status = 'held')) AS in_sessions,
       count(*) FILTER (WHERE f.outcome = 'completed') AS completed
  FROM programme_funnel.pairs f WHERE {_IN.format('f.')}"""

# The stage a pair was in before the visit that ended it.
_LEFT = f"""
SELECT coalesce(before.stage, 'nominated') AS stage, f.outcome, count(*)::int AS pairs
  FROM programme_funnel.pairs f
  LEFT JOIN LATERAL (SELECT v.stage FROM programme_funnel.stage_visits v
                      WHERE v.pair_id = f.pair_id AND v.visit < f.visits
                      ORDER BY v.visit DESC LIMIT 1) before ON true
 WHERE f.outcome IS NOT NULL AND f.outcome <> 'completed' AND {_IN.format('f.')}
 GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"""

# The weeks the series show: from the first nomination (at most $3 weeks back) to this one, each
# with its end (now, for this week). Times in UTC (the transaction sets it): a week starts on
# Monday at 00:00 UTC.
_WEEKS = f"""
chosen AS (SELECT pair_id, nominated_at, ended_at FROM pair_overview.pairs WHERE {_IN.format('')}),
first AS (SELECT CASE WHEN min(nominated_at) IS NOT NULL
                 THEN greatest(date_trunc('week', min(nominated_at)),
                               date_trunc('week', $2::timestamptz) - ($3 - 1) * interval '7 days')
                 END AS week FROM chosen),
weeks AS (SELECT w AS week, least(w + interval '7 days', $2::timestamptz) AS week_end
            FROM first, generate_series(first.week, date_trunc('week', $2::timestamptz), interval '7 days') AS w)"""

# Pairs alive at each week's end, and of them those in a spell at risk then.
_ALIVE_BY_WEEK = f"""
WITH {_WEEKS}
SELECT weeks.week::date AS week,
       (SELECT count(*) FROM chosen c WHERE c.nominated_at < weeks.week_end
           AND (c.ended_at IS NULL OR c.ended_at >= weeks.week_end))::int AS alive,
       (SELECT count(DISTINCT r.pair_id) FROM programme_health.risk_spells r JOIN chosen c USING (pair_id)
         WHERE r.since < weeks.week_end AND (r.until IS NULL OR r.until >= weeks.week_end)
           AND (c.ended_at IS NULL OR c.ended_at >= weeks.week_end))::int AS at_risk
  FROM weeks ORDER BY weeks.week"""

# Sessions held in each week (every week, with or without sessions).
_SESSIONS_BY_WEEK = f"""
WITH {_WEEKS},
     held AS (
       SELECT date_trunc('week', starts_at) AS week, 1 AS individual, 0 AS collective
         FROM session_calendar.sessions WHERE status = 'held' AND {_IN.format('')}
       UNION ALL
       SELECT date_trunc('week', at), 0, 1 FROM programme_health.group_sessions WHERE {_IN.format('')})
SELECT weeks.week::date AS week, coalesce(sum(held.individual), 0)::int AS individual,
       coalesce(sum(held.collective), 0)::int AS collective
  FROM weeks LEFT JOIN held ON held.week = weeks.week
 GROUP BY weeks.week ORDER BY weeks.week"""

_RATINGS = f"""
SELECT kind, rating, count(*)::int AS count FROM programme_health.ratings
 WHERE {_IN.format('')} GROUP BY kind, rating"""

_AVERAGE_SESSION_RATING = f"""
SELECT round(avg(rating), 2)::float FROM programme_health.ratings WHERE kind = 'session' AND {_IN.format('')}"""

# Each senior's answer to their pair's invitation: the latest of invited (no answer yet),
# consent given, declined, expired; a re-invitation after an expiry counts as the new question.
_CONSENT = f"""
SELECT answer, count(*)::int AS count FROM (
    SELECT DISTINCT ON (pair_id) pair_id,
           CASE answer WHEN 'invited' THEN 'awaiting_answer' ELSE answer END AS answer
      FROM consent_register.entries
     WHERE role = 'mentee' AND answer IN ('invited', 'consent_given', 'declined', 'expired')
       AND {_IN.format('')}
     ORDER BY pair_id, position DESC) AS latest
 GROUP BY answer ORDER BY answer"""

# Adoption as the seniors (mentees) answer it, as in the programme's report.
_FOLLOW_UPS = f"""
SELECT days_after_end, count(*) FILTER (WHERE still_using)::int AS still_using,
       count(*) FILTER (WHERE NOT still_using)::int AS not_using
  FROM programme_health.follow_ups WHERE by_role = 'mentee' AND {_IN.format('')}
 GROUP BY days_after_end ORDER BY days_after_end"""

# Since when each pair has needed HR: the earliest of its reasons' beginnings (the open spell at
# risk, the pause, the deadline that passed).
_NEEDING_HR = f"""
SELECT p.pair_id, p.programme_id, p.stage, p.mentor_id, p.mentee_id,
       array_remove(ARRAY[CASE WHEN p.at_risk THEN 'at risk' END,
                          CASE WHEN p.paused THEN 'paused' END,
                          CASE WHEN p.next_deadline < $2 THEN 'deadline passed' END], NULL) AS reasons,
       coalesce(least(
           CASE WHEN p.at_risk THEN (SELECT max(r.since) FROM programme_health.risk_spells r
                                      WHERE r.pair_id = p.pair_id AND r.until IS NULL) END,
           CASE WHEN p.paused THEN (p.facts ->> 'paused_since')::timestamptz END,
           CASE WHEN p.next_deadline < $2 THEN p.next_deadline END), p.stage_since) AS since,
       count(*) OVER () AS all_needing  -- counted before the LIMIT: the list is cut, the count is not
  FROM pair_overview.pairs p
 WHERE p.ended_at IS NULL AND (p.at_risk OR p.paused OR p.next_deadline < $2) AND {_IN.format('p.')}
 ORDER BY since, p.pair_id
 LIMIT $3"""
