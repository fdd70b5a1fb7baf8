"""Matching as pure functions: every suggestion keeps every hard rule and every mentor's capacity,
its total fit is never below a greedy pass's, and everyone left out is told why.

The hard rules are checked here independently of the module's vectorised arithmetic: topics as
sets, the management chain by membership, shared time minute by minute with the standard library.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activities.matching import fit, load_bonus, suggest
from events.matching import WEEKDAYS, Candidate, MatchingRequest, MatchingRules, WeeklyWindow

TODAY = date(2026, 11, 30)
ZONES = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC"]
TOPICS = ["social-networks", "privacy", "consumer-app", "mobile", "ai-tools"]


def shared_minutes(a: Candidate, b: Candidate, week_of: date = TODAY) -> int:
    """Minutes a week both are available, minute by minute (slow and plain)."""
    monday = week_of - timedelta(days=week_of.weekday())
    start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)

    def minutes(person: Candidate) -> set[int]:
        found: set[int] = set()
        zone = ZoneInfo(person.time_zone)
        for window in person.availability:
            day = monday + timedelta(days=WEEKDAYS.index(window.weekday))
            begin = datetime.combine(day, window.start, tzinfo=zone).astimezone(UTC)
            end = datetime.combine(day, window.end, tzinfo=zone).astimezone(UTC)
            first = int((begin - start).total_seconds() // 60)
            found |= {m % (7 * 24 * 60) for m in range(first, first + int((end - begin).total_seconds() // 60))}
        return found

    return len(minutes(a) & minutes(b))


def may_pair(senior: Candidate, mentor: Candidate, rules: MatchingRules) -> bool:
    return (bool(set(senior.topics) & set(mentor.topics))
            and shared_minutes(senior, mentor) >= rules.min_weekly_overlap_minutes
            and senior.employee_id not in mentor.management_chain
            and mentor.employee_id not in senior.management_chain)


def greedy_total(request: MatchingRequest) -> float:
    """The best next (senior, mentor place) first, until nothing fits: the baseline to beat."""
    scores = fit(request, TODAY)
    taken: set[int] = set()
    load = [0] * len(request.mentors)
    total = 0.0
    while True:
        best: tuple[float, int, int] | None = None
        for i in range(len(request.seniors)):
            if i in taken:
                continue
            for j, mentor in enumerate(request.mentors):
                if scores.allowed[i, j] and load[j] < mentor.capacity:
                    value = float(scores.base[i, j]) + load_bonus(request.rules.load_weight, load[j], mentor.capacity)
                    if best is None or value > best[0]:
                        best = (value, i, j)
        if best is None:
            return total
        value, i, j = best
        taken.add(i)
        load[j] += 1
        total += value


@st.composite
def windows(draw: st.DrawFn) -> list[WeeklyWindow]:
    found = []
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(6 * 4, 19 * 4))  # quarter hours
        length = draw(st.integers(2, 16))
        end = min(start + length, 24 * 4 - 1)
        found.append(WeeklyWindow(weekday=draw(st.sampled_from(WEEKDAYS)),
                                  start=time(start // 4, start % 4 * 15), end=time(end // 4, end % 4 * 15)))
    return found


@st.composite
def requests(draw: st.DrawFn) -> MatchingRequest:
    n_mentors, n_seniors = draw(st.integers(0, 7)), draw(st.integers(0, 10))
    mentor_ids = [f"M{j}" for j in range(n_mentors)]
    senior_ids = [f"S{i}" for i in range(n_seniors)]
    everyone = mentor_ids + senior_ids

    def person(employee_id: str, capacity: int) -> Candidate:
        return Candidate(employee_id=employee_id, time_zone=draw(st.sampled_from(ZONES)),
                         availability=draw(windows()),
                         topics=draw(st.lists(st.sampled_from(TOPICS), max_size=3, unique=True)),
                         management_chain=draw(st.lists(st.sampled_from(everyone), max_size=2, unique=True))
                         if everyone else [], capacity=capacity)

    return MatchingRequest(
        programme_id="p1",
        mentors=[person(m, draw(st.integers(1, 3))) for m in mentor_ids],
        seniors=[person(s, 1) for s in senior_ids],
        rules=MatchingRules(min_weekly_overlap_minutes=draw(st.sampled_from([0, 30, 60])), week_of=TODAY))


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_a_suggestion_keeps_every_rule_and_beats_or_equals_greedy(request: MatchingRequest):
    suggestion = suggest(request, TODAY)
    seniors = {s.employee_id: s for s in request.seniors}
    mentors = {m.employee_id: m for m in request.mentors}
    matched = [p.senior_id for p in suggestion.pairs]
    assert len(matched) == len(set(matched)), "a senior suggested twice"
    for mentor in request.mentors:
        assert sum(p.mentor_id == mentor.employee_id for p in suggestion.pairs) <= mentor.capacity
    for pair in suggestion.pairs:
        senior, mentor = seniors[pair.senior_id], mentors[pair.mentor_id]
        assert may_pair(senior, mentor, request.rules), pair
        assert pair.weekly_overlap_minutes == shared_minutes(senior, mentor)
        assert pair.topics == sorted(set(senior.topics) & set(mentor.topics))
        assert 0 < pair.score <= 1 and len(pair.reasons) == 3
    left_out = {u.employee_id for u in suggestion.unmatched if u.role == "senior"}
    assert left_out == set(seniors) - set(matched) and all(u.reason for u in suggestion.unmatched)
    assert {u.employee_id for u in suggestion.unmatched if u.role == "mentor"} == \
        set(mentors) - {p.mentor_id for p in suggestion.pairs}
    assert suggestion.total_score >= greedy_total(request) - 1e-6
    # Nobody fit was left out while a mentor who fits them had room.
    for senior_id in left_out:
        for mentor in request.mentors:
            if may_pair(seniors[senior_id], mentor, request.rules):
                assert sum(p.mentor_id == mentor.employee_id for p in suggestion.pairs) == mentor.capacity


def _person(employee_id: str, topics: list[str], *, zone: str = "Europe/Paris", day: str = "tuesday",
            start: time = time(9), end: time = time(12), chain: list[str] | None = None,
            capacity: int = 1) -> Candidate:
    return Candidate(employee_id=employee_id, time_zone=zone, topics=topics, capacity=capacity,
                     availability=[WeeklyWindow(weekday=day, start=start, end=end)],  # type: ignore[arg-type]
                     management_chain=chain or [])


def test_the_solver_gives_up_a_good_pair_for_a_better_total():
    # Greedy would pair S1 with M1 (its best fit) and leave S2, who fits only M1, out.
    m1 = _person("M1", ["privacy", "mobile"])
    m2 = _person("M2", ["privacy"], start=time(11), end=time(12))
    s1 = _person("S1", ["privacy", "mobile"])
    s2 = _person("S2", ["mobile"])
    suggestion = suggest(MatchingRequest(programme_id="p", mentors=[m1, m2], seniors=[s1, s2]), TODAY)
    assert {(p.senior_id, p.mentor_id) for p in suggestion.pairs} == {("S1", "M2"), ("S2", "M1")}
    assert suggestion.unmatched == []


@pytest.mark.parametrize(("senior", "reason"), [
    (_person("S1", ["ai-tools"]), "no mentor offers a topic they wish"),
    (_person("S1", ["privacy"], day="friday"), "shares 60 minutes a week"),
    (_person("S1", ["privacy"], chain=["M1"]), "management chain"),
    (_person("S1", []), "wished no topic"),
])
def test_who_is_left_out_is_told_why(senior: Candidate, reason: str):
    mentor = _person("M1", ["privacy"])
    suggestion = suggest(MatchingRequest(programme_id="p", mentors=[mentor], seniors=[senior]), TODAY)
    assert suggestion.pairs == []
    [senior_out] = [u for u in suggestion.unmatched if u.role == "senior"]
    assert reason in senior_out.reason


def test_a_junior_is_never_paired_with_a_manager_above_them():
    junior = _person("M1", ["privacy"], chain=["S9", "S1"])  # S1 is the junior's manager's manager
    suggestion = suggest(MatchingRequest(programme_id="p", mentors=[junior], seniors=[
        _person("S1", ["privacy"]), _person("S2", ["privacy"])]), TODAY)
    assert [(p.senior_id, p.mentor_id) for p in suggestion.pairs] == [("S2", "M1")]


def test_time_zones_are_compared_on_the_clocks_of_the_week_matched():
    # Paris 15:00 is New York 09:00 most of the year, but 10:00 in the weeks when the United
    # States already keep summer time and Europe does not yet (March 2027: the 14th to the 28th).
    senior = _person("S1", ["privacy"], start=time(15), end=time(16))
    mentor = _person("M1", ["privacy"], zone="America/New_York", start=time(10), end=time(11))
    for week, minutes in ((date(2027, 3, 16), 60), (date(2027, 4, 13), 0)):
        rules = MatchingRules(min_weekly_overlap_minutes=30, week_of=week)
        suggestion = suggest(MatchingRequest(programme_id="p", mentors=[mentor], seniors=[senior],
                                             rules=rules), TODAY)
        assert [p.weekly_overlap_minutes for p in suggestion.pairs] == ([minutes] if minutes else [])


def test_a_mentor_takes_up_to_their_capacity_and_mentees_spread_first():
    mentors = [_person("M1", ["privacy"], capacity=2), _person("M2", ["privacy"], capacity=2)]
    seniors = [_person(f"S{i}", ["privacy"]) for i in range(5)]
    suggestion = suggest(MatchingRequest(programme_id="p", mentors=mentors, seniors=seniors), TODAY)
    loads = sorted(sum(p.mentor_id == m for p in suggestion.pairs) for m in ("M1", "M2"))
    assert loads == [2, 2]
    [out] = [u for u in suggestion.unmatched if u.role == "senior"]
    assert "taken, up to their capacity" in out.reason
