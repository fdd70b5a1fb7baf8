"""Collective sessions' times as pure functions: a session fits a person's weekly windows in their
own time zone (daylight saving included), and the suggestion is the nearest time most can attend."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from events.matching import Candidate, WeeklyWindow
from workflows.group_sessions import cannot_come, fits, nearest_fit


def person(employee_id: str, zone: str, *windows: tuple[str, str, str]) -> Candidate:
    return Candidate(employee_id=employee_id, time_zone=zone, topics=["privacy"],
                     availability=[WeeklyWindow(weekday=d, start=time.fromisoformat(s), end=time.fromisoformat(e))
                                   for d, s, e in windows])


PARIS_TUESDAY_MORNING = person("S1", "Europe/Paris", ("tuesday", "09:00", "12:00"))
NEW_YORK_TUESDAY_MORNING = person("S2", "America/New_York", ("tuesday", "09:00", "12:00"))


def test_a_session_fits_inside_a_window_in_the_persons_own_time_zone():
    # Tuesday 3 March 2026, 09:00 in Paris is 08:00 UTC (winter time).
    assert fits(PARIS_TUESDAY_MORNING, datetime(2026, 3, 3, 8, 0, tzinfo=UTC), 60)
    assert fits(PARIS_TUESDAY_MORNING, datetime(2026, 3, 3, 10, 0, tzinfo=UTC), 60)  # ends 12:00 sharp
    assert not fits(PARIS_TUESDAY_MORNING, datetime(2026, 3, 3, 10, 30, tzinfo=UTC), 60)  # ends 12:30
    assert not fits(PARIS_TUESDAY_MORNING, datetime(2026, 3, 4, 8, 0, tzinfo=UTC), 60)  # a Wednesday


def test_daylight_saving_moves_the_window_in_utc():
    # After 29 March 2026 Paris is UTC+2: 09:00 there is 07:00 UTC, and 08:00 UTC is 10:00.
    assert fits(PARIS_TUESDAY_MORNING, datetime(2026, 3, 31, 7, 0, tzinfo=UTC), 60)
    assert not fits(PARIS_TUESDAY_MORNING, datetime(2026, 3, 3, 7, 0, tzinfo=UTC), 60)


def test_the_refusal_names_who_cannot_come_and_the_suggestion_fits_everyone_it_can():
    # 09:00 Paris is 03:00 in New York: nobody in both windows that morning...
    at = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    assert cannot_come([PARIS_TUESDAY_MORNING, NEW_YORK_TUESDAY_MORNING], at, 60) == ["S2"]
    # ...but 09:00-10:00 in New York is 15:00-16:00 in Paris: outside S1's window. The best a
    # Tuesday can do is one of two; the earliest such time after the proposal is suggested.
    best = nearest_fit([PARIS_TUESDAY_MORNING, NEW_YORK_TUESDAY_MORNING], at + timedelta(minutes=1), 60)
    assert best is not None and best.can_come == 1
    assert best.starts_at == datetime(2026, 3, 3, 8, 15, tzinfo=UTC) and best.cannot_come == ["S2"]


def test_the_nearest_time_everyone_can_come_wins_over_an_earlier_one_for_fewer():
    late_paris = person("S3", "Europe/Paris", ("tuesday", "11:00", "12:00"))
    best = nearest_fit([PARIS_TUESDAY_MORNING, late_paris], datetime(2026, 3, 3, 8, 0, tzinfo=UTC), 60)
    assert best is not None and best.cannot_come == []
    assert best.starts_at == datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # 11:00 Paris


def test_nobody_available_gives_no_suggestion():
    assert nearest_fit([person("S4", "Europe/Paris", ("sunday", "03:00", "03:30"))],
                       datetime(2026, 3, 3, 8, 0, tzinfo=UTC), 60) is None
