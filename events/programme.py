"""Domain events of a programme (stream `programme-<programme_id>`): ids, catalogue topic ids and
the matching profile people gave (time zone, weekly availability, management chain, capacity);
names and e-mail addresses stay in the erasable `people` table."""

from __future__ import annotations

from datetime import date, datetime, timedelta
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
    at_sessions_end: Literal["cancel_open_pairs", "let_pairs_finish"] = "cancel_open_pairs"
    health_every: timedelta = timedelta(hours=1)
    digest_every: timedelta = timedelta(days=7)


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


# --- collective sessions -------------------------------------------------------------------------

class GroupInvitee(BaseModel):
    """A pair invited to a group session: its senior comes, with the pair's mentor if they like."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pair_workflow_id: str
    senior_id: str
    mentor_id: str


@event
class GroupSessionScheduled(DomainEvent):
    """HR set a collective session on a catalogue topic, led by one or more mentors, for some pairs."""

    event_type = "GroupSessionScheduled"
    session_no: int
    topic: str = Field(description="catalogue id")
    starts_at: datetime
    duration_minutes: int
    leaders: list[str] = Field(description="the mentors who lead it")
    pairs: list[GroupInvitee]
    scheduled_by: str


@event
class GroupSessionHeld(DomainEvent):
    """The session took place: who attended (employee ids); each attending pair's trail shows it."""

    event_type = "GroupSessionHeld"
    session_no: int
    attended: list[str]
    recorded_by: str
    pairs_attending: list[str] = Field(default_factory=list,
                                       description="pair workflow ids with someone who came")


@event
class GroupSessionInvitationsSent(DomainEvent):
    """The collective session's invitation (or its cancellation), with an .ics, went to these people."""

    event_type = "GroupSessionInvitationsSent"
    session_no: int
    kind: str
    sent_to: list[str]
    not_reached: list[str] = Field(default_factory=list)


@event
class GroupSessionCancelled(DomainEvent):
    event_type = "GroupSessionCancelled"
    session_no: int
    reason: str
    cancelled_by: str


@event
class GroupSessionFeedbackGiven(DomainEvent):
    event_type = "GroupSessionFeedbackGiven"
    session_no: int
    employee_id: str
    rating: int


# --- health, close and report --------------------------------------------------------------------

class ProgrammeFigures(BaseModel):
    """The programme's figures, folded from its own stream and its pairs' streams (ids and counts
    only): what its current details, the weekly digest and the close report show."""

    model_config = ConfigDict(extra="forbid")

    as_of: datetime
    mentors_nominated: int = 0
    mentors_confirmed: int = 0
    seniors_enrolled: int = 0
    enrolled_by_channel: dict[str, int] = Field(default_factory=dict)
    withdrawn_from_programme: int = 0
    pairs_started: int = 0
    pairs_per_stage: dict[str, int] = Field(default_factory=dict, description="stage -> pairs, now")
    reached: dict[str, int] = Field(default_factory=dict,
                                    description="funnel: pairs that got as far as each step")
    outcomes: dict[str, int] = Field(default_factory=dict, description="how closed pairs ended")
    at_risk: list[str] = Field(default_factory=list, description="pair workflow ids at risk now")
    consent: dict[str, int] = Field(default_factory=dict,
                                    description="invited, consented, declined, expired, awaiting, "
                                    "closed_unanswered")
    sessions_held: int = 0
    sessions_this_month: int = 0
    no_shows: int = 0
    group_sessions_held: int = 0
    group_attendances: int = 0
    ratings: dict[str, float | int | None] = Field(default_factory=dict,
                                                   description="pairs' sessions (count, average), group sessions")
    still_using: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="the seniors' answers: 'first' / 'second' follow-up -> yes / no")
    abandoned: int = Field(0, description="pairs that ended without completing after the senior consented "
                           "(not counting those the programme wound down at the sessions' end)")
    wound_down: int = Field(0, description="pairs cancelled by the programme at the sessions' end")
    abandonment_rate: float | None = None
    mentors_recognised: list[str] = Field(default_factory=list,
                                          description="mentors with a completed pair")
    hr_next: list[str] = Field(default_factory=list, description="what HR must do next")
    stage_of: dict[str, str] = Field(default_factory=dict,
                                     description="pair workflow id -> stage, only when asked for")

@event
class PairsExtended(DomainEvent):
    """HR keeps these pairs going past the sessions' end (they are not wound down)."""

    event_type = "PairsExtended"
    pair_workflow_ids: list[str]
    extended_by: str


@event
class ProgrammeSessionsEnded(DomainEvent):
    """The sessions' end came: pairs still before or in their sessions were wound down as the
    policy says (`cancelled`), the extended ones and those past their sessions go on (`kept`)."""

    event_type = "ProgrammeSessionsEnded"
    policy: Literal["cancel_open_pairs", "let_pairs_finish"]
    cancelled: list[str]
    kept: list[str]


@event
class ProgrammeDigestSent(DomainEvent):
    """The weekly digest went to the HR owners, with these figures."""

    event_type = "ProgrammeDigestSent"
    recipients: list[str]
    figures: ProgrammeFigures


@event
class ProgrammeClosed(DomainEvent):
    """Every pair is closed (the last follow-up is in): the programme ends with its report."""

    event_type = "ProgrammeClosed"
    report: ProgrammeFigures
