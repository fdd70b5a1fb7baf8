"""Matching a programme's seniors with its mentors: the suggestion that maximises the total fit
under the hard rules, with the reasons for each pair and for each person left out.

Pure functions (plus the activity that runs them: heavy computation stays out of workflow tasks).
The fit of a senior with a mentor is, with the programme's weights:
- topics: the share of the senior's wished topics the mentor offers (none: never paired);
- shared time: the minutes a week both are available, in their own time zones, compared on the
  clocks of one week (daylight saving), counted in 5-minute steps; below the minimum: never paired;
- load: a mentor's first mentee adds the whole load weight, each further one less, so mentees
  spread over mentors rather than pile on the best-fitting ones.
Never paired either: a junior with someone in their own management chain (either way round).

The assignment is SciPy's `linear_sum_assignment` over seniors x (one column per mentor place,
plus one "left out" column per senior at no fit): the optimum of the total fit, which a greedy
pass can only equal or fall short of (the property tests hold it to that).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from scipy.optimize import linear_sum_assignment
from temporalio import activity

from events.matching import (
    WEEKDAYS,
    Candidate,
    MatchingRequest,
    MatchSuggestion,
    SuggestedPair,
    Unmatched,
)

STEP_MINUTES = 5
STEPS_PER_WEEK = 7 * 24 * 60 // STEP_MINUTES
_NEVER = 1e6  # the cost of a forbidden cell: never chosen, as a "left out" cell costs 0


def weekly_steps(person: Candidate, monday: date) -> np.ndarray:
    """The 5-minute steps of the week (from Monday 00:00 UTC) in which the person is available."""
    zone = ZoneInfo(person.time_zone)
    week_start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    steps = np.zeros(STEPS_PER_WEEK, dtype=bool)
    for window in person.availability:
        day = monday + timedelta(days=WEEKDAYS.index(window.weekday))
        start = datetime.combine(day, window.start, tzinfo=zone).astimezone(UTC)
        end = datetime.combine(day, window.end, tzinfo=zone).astimezone(UTC)
        first = int((start - week_start).total_seconds() // 60) // STEP_MINUTES
        last = -(-int((end - week_start).total_seconds() // 60) // STEP_MINUTES)  # rounded up
        for step in range(first, last):  # a window that crosses the week's edge wraps round
            steps[step % STEPS_PER_WEEK] = True
    return steps


def _steps(people: list[Candidate], monday: date) -> np.ndarray:
    matrix = np.zeros((len(people), STEPS_PER_WEEK), dtype=np.float32)
    for row, person in enumerate(people):
        matrix[row] = weekly_steps(person, monday)
    return matrix


@dataclass(frozen=True)
class Fit:
    """Seniors x mentors: what matching compares."""

    common_topics: np.ndarray  # number of the senior's wished topics the mentor offers
    overlap_minutes: np.ndarray
    in_chain: np.ndarray  # bool: one is in the other's management chain
    allowed: np.ndarray  # bool: every hard rule holds
    base: np.ndarray  # the fit before the mentor's load, 0 where not allowed


def fit(request: MatchingRequest, today: date) -> Fit:
    seniors, mentors, rules = request.seniors, request.mentors, request.rules
    week = rules.week_of or today
    monday = week - timedelta(days=week.weekday())
    topics = sorted({t for p in (*seniors, *mentors) for t in p.topics})
    index = {t: i for i, t in enumerate(topics)}

    def incidence(people: list[Candidate]) -> np.ndarray:
        matrix = np.zeros((len(people), len(topics)), dtype=np.float32)
        for row, person in enumerate(people):
            for topic in set(person.topics):
                matrix[row, index[topic]] = 1
        return matrix

    wished, offered = incidence(seniors), incidence(mentors)
    common = wished @ offered.T
    overlap = (_steps(seniors, monday) @ _steps(mentors, monday).T) * STEP_MINUTES
    in_chain = np.zeros((len(seniors), len(mentors)), dtype=bool)
    mentor_at = {m.employee_id: j for j, m in enumerate(mentors)}
    senior_at = {s.employee_id: i for i, s in enumerate(seniors)}
    for i, senior in enumerate(seniors):
        for boss in senior.management_chain:
            if boss in mentor_at:
                in_chain[i, mentor_at[boss]] = True
    for j, mentor in enumerate(mentors):
        for boss in mentor.management_chain:
            if boss in senior_at:
                in_chain[senior_at[boss], j] = True
    wished_count = np.maximum(wished.sum(axis=1, keepdims=True), 1)
    allowed = (common > 0) & (overlap >= rules.min_weekly_overlap_minutes) & ~in_chain
    base = (rules.topic_weight * common / wished_count
            + rules.overlap_weight * np.minimum(overlap, rules.good_weekly_overlap_minutes)
            / rules.good_weekly_overlap_minutes)
    return Fit(common, overlap, in_chain, allowed, np.where(allowed, base, 0.0))


def load_bonus(load_weight: float, place: int, capacity: int) -> float:
    """The load term of a mentor's place `place` (0 = first mentee) out of `capacity`."""
    return load_weight * (1 - place / capacity)


def suggest(request: MatchingRequest, today: date) -> MatchSuggestion:
    """The pairs that maximise the total fit, each with its reasons; who is left out, and why."""
    seniors, mentors, rules = request.seniors, request.mentors, request.rules
    if not seniors or not mentors:
        alone = "no mentor enrolled" if not mentors else "no senior enrolled"
        return MatchSuggestion(programme_id=request.programme_id, pairs=[], total_score=0.0, unmatched=[
            *(Unmatched(employee_id=s.employee_id, role="senior", reason=alone) for s in seniors),
            *(Unmatched(employee_id=m.employee_id, role="mentor", reason=alone) for m in mentors)])
    scores = fit(request, today)
    places = [(j, k) for j, m in enumerate(mentors) for k in range(min(m.capacity, len(seniors)))]
    cost = np.full((len(seniors), len(places) + len(seniors)), 0.0)
    for column, (j, k) in enumerate(places):
        bonus = load_bonus(rules.load_weight, k, mentors[j].capacity)
        cost[:, column] = np.where(scores.allowed[:, j], -(scores.base[:, j] + bonus), _NEVER)
    rows, columns = linear_sum_assignment(cost)
    pairs: list[SuggestedPair] = []
    matched_seniors: set[int] = set()
    mentees: dict[int, int] = {}
    for i, column in zip(rows.tolist(), columns.tolist(), strict=True):
        if column >= len(places) or cost[i, column] >= _NEVER:
            continue  # left out
        j, k = places[column]
        matched_seniors.add(i)
        mentees[j] = mentees.get(j, 0) + 1
        pairs.append(_pair(request, scores, i, j, k, -float(cost[i, column])))
    pairs.sort(key=lambda p: (p.mentor_id, -p.score, p.senior_id))
    unmatched = [Unmatched(employee_id=s.employee_id, role="senior", reason=_senior_left_out(request, scores, i))
                 for i, s in enumerate(seniors) if i not in matched_seniors]
    unmatched += [Unmatched(employee_id=m.employee_id, role="mentor", reason=_mentor_left_out(request, scores, j))
                  for j, m in enumerate(mentors) if j not in mentees]
    return MatchSuggestion(programme_id=request.programme_id, pairs=pairs, unmatched=unmatched,
                           total_score=round(sum(p.score for p in pairs), 6))


def _pair(request: MatchingRequest, scores: Fit, i: int, j: int, place: int, score: float) -> SuggestedPair:
    senior, mentor = request.seniors[i], request.mentors[j]
    topics = sorted(set(senior.topics) & set(mentor.topics))
    minutes = int(scores.overlap_minutes[i, j])
    return SuggestedPair(
        senior_id=senior.employee_id, mentor_id=mentor.employee_id, score=round(score, 6), topics=topics,
        weekly_overlap_minutes=minutes,
        reasons=[f"covers {len(topics)} of the {len(set(senior.topics))} topic(s) wished: {', '.join(topics)}",
                 f"{minutes // 60} h {minutes % 60:02d} a week when both are available",
                 f"mentee {place + 1} of the mentor's {mentor.capacity} at most"])


def _senior_left_out(request: MatchingRequest, scores: Fit, i: int) -> str:
    rules = request.rules
    if not request.seniors[i].topics:
        return "wished no topic of the catalogue"
    topical = scores.common_topics[i] > 0
    if not topical.any():
        return "no mentor offers a topic they wish"
    timely = topical & (scores.overlap_minutes[i] >= rules.min_weekly_overlap_minutes)
    if not timely.any():
        return (f"no mentor offering their topics shares {rules.min_weekly_overlap_minutes} minutes "
                "a week of availability with them")
    if not (timely & ~scores.in_chain[i]).any():
        return "the mentors who fit them are in their management chain (or they in theirs)"
    return "the mentors who fit them are taken, up to their capacity, by seniors they fit as well or better"


def _mentor_left_out(request: MatchingRequest, scores: Fit, j: int) -> str:
    rules = request.rules
    if not request.mentors[j].topics:
        return "offers no topic of the catalogue"
    topical = scores.common_topics[:, j] > 0
    if not topical.any():
        return "no senior wishes a topic they offer"
    timely = topical & (scores.overlap_minutes[:, j] >= rules.min_weekly_overlap_minutes)
    if not timely.any():
        return (f"no senior wishing their topics shares {rules.min_weekly_overlap_minutes} minutes a "
                "week of availability with them")
    if not (timely & ~scores.in_chain[:, j]).any():
        return "the seniors who fit them are in their management chain (or they in theirs)"
    return "the seniors who fit them are matched with mentors who fit them as well or better"


@activity.defn(name="suggest_matches")
async def suggest_matches(request: MatchingRequest) -> MatchSuggestion:
    """The matching, run off the workflow task; its date is the activity's (in history)."""
    today = activity.info().started_time.date()
    activity.logger.info("matching %d senior(s) with %d mentor(s)", len(request.seniors), len(request.mentors))
    return await asyncio.to_thread(suggest, request, today)  # seconds of CPU: the worker goes on
