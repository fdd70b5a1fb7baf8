"""Domain events of a programme (stream `programme-<programme_id>`): ids, catalogue topic ids and
the matching profile people gave (time zone, weekly availability, management chain, capacity);
names and e-mail addresses stay in the erasable `people` table."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from events.base import DomainEvent, event
from events.matching import Candidate, MatchingRules, SuggestedPair, Unmatched

PROGRAMME_STREAM_PREFIX = "programme-"


def programme_stream(programme_id: str) -> str:
    """The programme's stream id, which is also its workflow id."""
    return f"{PROGRAMME_STREAM_PREFIX}{programme_id}"


@event
class ProgrammeOpened(DomainEvent):
    event_type = "ProgrammeOpened"
    programme_id: str
    hr_owners: list[str]
    enrolment_closes: date
    matching_on: date
    sessions_end: date
    topics: dict[str, str] = Field(description="the catalogue: id -> label")
    sessions_planned: int
    training_modules: list[str] = Field(default_factory=list)
    policy: dict[str, Any]
    matching: MatchingRules


@event
class MentorsNominated(DomainEvent):
    event_type = "MentorsNominated"
    mentors: list[Candidate]
    nominated_by: str


@event
class MentorConfirmedForProgramme(DomainEvent):
    event_type = "MentorConfirmedForProgramme"
    mentor_id: str


@event
class SeniorEnrolled(DomainEvent):
    """A senior takes part of their own will: how their request came, when, who entered it."""

    event_type = "SeniorEnrolled"
    senior: Candidate
    channel: str
    requested_on: date
    entered_by: str


@event
class ParticipantWithdrew(DomainEvent):
    event_type = "ParticipantWithdrew"
    employee_id: str
    role: Literal["mentor", "senior"]
    reason: str
    recorded_by: str


@event
class MatchesSuggested(DomainEvent):
    event_type = "MatchesSuggested"
    pairs: list[SuggestedPair]
    unmatched: list[Unmatched]
    total_score: float
    requested_by: str


class AcceptedPair(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    senior_id: str
    mentor_id: str
    pair_workflow_id: str


@event
class MatchesAccepted(DomainEvent):
    """HR accepted these suggested pairs: each starts as a pair, where the senior still consents."""

    event_type = "MatchesAccepted"
    pairs: list[AcceptedPair]
    accepted_by: str


class PairNotStarted(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pair_workflow_id: str
    problem: str


@event
class PairsStarted(DomainEvent):
    """The pair workflows a batch started (or found started before), and any it could not start."""

    event_type = "PairsStarted"
    started: list[str]
    not_started: list[PairNotStarted] = Field(default_factory=list)
