"""Collective sessions: whether a time fits every invited senior, and the nearest that fits most.

Pure (no I/O, no clock): the programme's validator runs it on the update's arguments, so a time
that does not fit is refused with the names of who cannot come and a better time, and nothing is
recorded. Times are compared in each senior's own time zone, daylight saving included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import workflows.timezones as timezones
from events.matching import WEEKDAYS, Candidate

STEP = timedelta(minutes=15)
SEARCH = timedelta(days=14)  # how far ahead the suggestion looks: two weeks of agendas


def fits(person: Candidate, starts_at: datetime, minutes: int) -> bool:
    """The session lies inside one of the person's weekly windows, in their time zone."""
    local = timezones.to_local(starts_at, person.time_zone)
    local_end = local + timedelta(minutes=minutes)
    if local_end.date() != local.date():  # windows stay within one day
        return False
    weekday = WEEKDAYS[local.weekday()]
    start, end = local.time().replace(tzinfo=None), local_end.time().replace(tzinfo=None)
    return any(w.weekday == weekday and w.start <= start and end <= w.end for w in person.availability)


@dataclass(frozen=True)
class Alternative:
    starts_at: datetime
    can_come: int
    cannot_come: list[str]


def cannot_come(people: Sequence[Candidate], starts_at: datetime, minutes: int) -> list[str]:
    return [p.employee_id for p in people if not fits(p, starts_at, minutes)]


def nearest_fit(people: Sequence[Candidate], starts_at: datetime, minutes: int) -> Alternative | None:
    """The time within two weeks after `starts_at` (on the quarter hour) that most of `people` can
    attend, the earliest among equals; None if nobody can come at any of them."""
    moment = _next_quarter(starts_at)
    best: Alternative | None = None
    for _ in range(int(SEARCH / STEP)):
        missing = cannot_come(people, moment, minutes)
        count = len(people) - len(missing)
        if count and (best is None or count > best.can_come):
            best = Alternative(moment, count, missing)
            if not missing:
                break
        moment += STEP
    return best


def _next_quarter(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    past = (moment.minute % 15) * 60 + moment.second + moment.microsecond / 1e6
    return moment if past == 0 else moment + timedelta(seconds=15 * 60 - past)
