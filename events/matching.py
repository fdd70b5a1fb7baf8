"""What a programme's workflow and the matching activity exchange: who may be paired, under which
rules, and the suggestion with its reasons. Pseudonymous ids, time zones, weekly windows and
topic ids from the programme's catalogue only: nothing here names a person.
"""

from __future__ import annotations

from datetime import date, time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[Weekday, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeeklyWindow(_Shape):
    """A weekly slot, in the person's own time zone, when they can meet."""

    weekday: Weekday
    start: time
    end: time

    @model_validator(mode="after")
    def _ordered(self) -> WeeklyWindow:
        if self.end <= self.start:
            raise ValueError("end must be after start (a window stays within one day)")
        return self


class Candidate(_Shape):
    """A person matching may pair: a mentor (a junior) or a senior who volunteered."""

    employee_id: str
    time_zone: str
    availability: list[WeeklyWindow] = Field(min_length=1)
    topics: list[str] = Field(description="catalogue ids: offered by a mentor, wished by a senior")
    management_chain: list[str] = Field(
        default_factory=list, description="employee ids of the person's managers, up the line")
    capacity: int = Field(1, ge=1, le=10, description="a mentor's mentees at most (seniors: 1)")


class MatchingRules(_Shape):
    """Hard rules (never broken) and the weights of the fit a suggestion maximises."""

    min_weekly_overlap_minutes: int = Field(
        60, ge=0, le=10_080, description="a pair must share at least this much time a week")
    good_weekly_overlap_minutes: int = Field(
        180, ge=1, le=10_080, description="more shared time than this adds nothing to the fit")
    topic_weight: float = Field(0.6, ge=0, le=1)
    overlap_weight: float = Field(0.3, ge=0, le=1)
    load_weight: float = Field(0.1, ge=0, le=1, description="spreads mentees over mentors")
    week_of: date | None = Field(
        None, description="the week whose clocks compare the time zones (daylight saving); "
        "the matching's own date when absent")


class MatchingRequest(_Shape):
    programme_id: str
    mentors: list[Candidate]
    seniors: list[Candidate]
    rules: MatchingRules = MatchingRules()


class SuggestedPair(_Shape):
    senior_id: str
    mentor_id: str
    score: float = Field(description="0 to 1: the weighted fit of topics, shared time and mentor load")
    topics: list[str] = Field(description="the senior's wished topics the mentor offers")
    weekly_overlap_minutes: int
    reasons: list[str]


class Unmatched(_Shape):
    employee_id: str
    role: Literal["mentor", "senior"]
    reason: str


class MatchSuggestion(_Shape):
    programme_id: str
    pairs: list[SuggestedPair]
    unmatched: list[Unmatched]
    total_score: float
