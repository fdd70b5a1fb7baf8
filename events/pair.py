"""The domain events of one mentoring pair, in lifecycle order (README, "The lifecycle").

Payloads carry pseudonymous ids (employee ids chosen by HR), never names, e-mails or free text:
contact details live in the erasable `people` table and private comments in `private_notes`,
so erasing a person never breaks the hash chain of the log. Stream id: ``pair-<pair_id>``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from events.base import DomainEvent, default_registry, event

Role = Literal["mentor", "mentee", "hr"]
SessionFormat = Literal["individual", "group"]


def pair_stream(pair_id: str) -> str:
    return f"pair-{pair_id}"


# --- 1. nomination -------------------------------------------------------------------------------

@event
class PairNominated(DomainEvent):
    event_type = "PairNominated"
    pair_id: str
    programme_id: str
    mentor_id: str
    mentee_id: str
    topics: list[str]
    sessions_planned: int = Field(ge=1)
    nominated_by: str
    policy: dict[str, str] = Field(description="durations in force, ISO 8601")
    hr_team: list[str] = Field(default_factory=list, description="other HR people who may act for the pair")


# --- 2. the mentor's motivation ------------------------------------------------------------------

@event
class MentorMotivationConfirmed(DomainEvent):
    event_type = "MentorMotivationConfirmed"
    mentor_id: str


@event
class MentorDeclined(DomainEvent):
    event_type = "MentorDeclined"
    mentor_id: str
    reason: str = Field(description="a reason code, not free text")


@event
class MentorMotivationExpired(DomainEvent):
    """The mentor did not confirm their motivation in time: the nomination lapses."""

    event_type = "MentorMotivationExpired"
    mentor_id: str


# --- 3. the senior's consent ----------------------------------------------------------------------

@event
class MenteeInvited(DomainEvent):
    event_type = "MenteeInvited"
    mentee_id: str
    channel: str
    expires_at: datetime


@event
class MenteeConsentGiven(DomainEvent):
    event_type = "MenteeConsentGiven"
    mentee_id: str
    channel: str = Field(description="how the answer reached us: ui, email, integration")
    recorded_by: str = Field(description="who entered the answer (the mentee, or HR on their behalf)")


@event
class MenteeDeclined(DomainEvent):
    event_type = "MenteeDeclined"
    mentee_id: str
    channel: str
    recorded_by: str


@event
class InvitationExpired(DomainEvent):
    event_type = "InvitationExpired"
    mentee_id: str


# --- 4. preparation -------------------------------------------------------------------------------

@event
class CurriculumAgreed(DomainEvent):
    """The curriculum's topics; its objectives are free text (they may name people), so they stay
    in the erasable `private_notes`, under this event's id, and the log keeps their count.
    Version 1 held the objectives themselves: read through the upcaster below, they are counted."""

    event_type = "CurriculumAgreed"
    schema_version = 2
    topics: list[str]
    objectives_count: int = Field(ge=0)


@default_registry.upcaster("CurriculumAgreed", from_version=1)
def _objectives_counted(payload: dict[str, Any]) -> dict[str, Any]:
    return {"topics": payload["topics"], "objectives_count": len(payload.get("objectives", []))}


@event
class TrainingModuleCompleted(DomainEvent):
    event_type = "TrainingModuleCompleted"
    mentor_id: str
    module: str


@event
class MenteeOnboarded(DomainEvent):
    event_type = "MenteeOnboarded"
    mentee_id: str


@event
class MentorSignedOff(DomainEvent):
    event_type = "MentorSignedOff"
    mentor_id: str
    signed_off_by: str


# --- 5. sessions ----------------------------------------------------------------------------------

@event
class SessionProposed(DomainEvent):
    event_type = "SessionProposed"
    session_no: int = Field(ge=1)
    starts_at: datetime
    duration_minutes: int
    format: SessionFormat
    topics: list[str]


@event
class SessionConfirmed(DomainEvent):
    event_type = "SessionConfirmed"
    session_no: int


@event
class SessionRescheduled(DomainEvent):
    event_type = "SessionRescheduled"
    session_no: int
    starts_at: datetime
    previous_starts_at: datetime


@event
class SessionCancelled(DomainEvent):
    event_type = "SessionCancelled"
    session_no: int
    cancelled_by: Role
    reason: str


@event
class SessionHeld(DomainEvent):
    event_type = "SessionHeld"
    session_no: int
    topics_covered: list[str]


@event
class SessionMissed(DomainEvent):
    event_type = "SessionMissed"
    session_no: int
    absent: Literal["mentor", "mentee", "both"]


# --- 6. feedback ----------------------------------------------------------------------------------

@event
class FeedbackGiven(DomainEvent):
    event_type = "FeedbackGiven"
    session_no: int
    by_role: Literal["mentor", "mentee"]
    rating: int = Field(ge=1, le=5)
    engaging: bool
    topics_covered: list[str]
    has_private_comment: bool = Field(description="the comment itself stays in private_notes")


@event
class FinalEvaluationGiven(DomainEvent):
    event_type = "FinalEvaluationGiven"
    by_role: Literal["mentor", "mentee"]
    rating: int = Field(ge=1, le=5)
    would_recommend: bool
    has_private_comment: bool


@event
class FinalEvaluationWindowClosed(DomainEvent):
    """The time for final evaluations ran out before both were given: follow-ups come next."""

    event_type = "FinalEvaluationWindowClosed"
    evaluations_from: list[Literal["mentor", "mentee"]] = Field(
        description="who gave theirs in time (the others were welcome, never forced)")


# --- health monitoring ----------------------------------------------------------------------------

@event
class PairNudged(DomainEvent):
    event_type = "PairNudged"
    stage: str
    idle_since: datetime


@event
class PairFlaggedAtRisk(DomainEvent):
    event_type = "PairFlaggedAtRisk"
    stage: str
    idle_since: datetime


@event
class EscalatedToHr(DomainEvent):
    event_type = "EscalatedToHr"
    stage: str
    reason: str


@event
class PairBackOnTrack(DomainEvent):
    """Activity resumed after the pair was flagged at risk: the flag is lifted."""

    event_type = "PairBackOnTrack"
    stage: str


@event
class PairLapsed(DomainEvent):
    event_type = "PairLapsed"
    stage: str
    idle_since: datetime


# --- at any time ----------------------------------------------------------------------------------

@event
class PairPaused(DomainEvent):
    event_type = "PairPaused"
    paused_by: str
    stage: str
    reason: str


@event
class PairResumed(DomainEvent):
    event_type = "PairResumed"
    resumed_by: str
    paused_days: float


@event
class PairWithdrawn(DomainEvent):
    event_type = "PairWithdrawn"
    withdrawn_by: str
    role: Role
    stage: str
    reason: str


@event
class PairCancelled(DomainEvent):
    """The pair's workflow was cancelled in Temporal (the Web UI's Request Cancellation, `temporal
    workflow cancel`): the pair closes politely, as on a withdrawal by HR."""

    event_type = "PairCancelled"
    stage: str
    requested_by: str = Field(description="the Temporal identity that asked (e-mail addresses masked)")
    with_reason: bool = Field(False, description="a reason was typed; its free text stays in Temporal")


@event
class PairEndedInTemporal(DomainEvent):
    """The pair's workflow ended without recording its own end (terminated, timed out, failed, or
    cancelled by older code): recorded afterwards by the reconciler, from what Temporal says."""

    event_type = "PairEndedInTemporal"
    status: Literal["terminated", "timed_out", "failed", "canceled"]
    stage: str
    closed_at: datetime
    run_id: str


@event
class MentorReplaced(DomainEvent):
    event_type = "MentorReplaced"
    previous_mentor_id: str
    new_mentor_id: str
    replaced_by: str
    reason: str


@event
class PairExtended(DomainEvent):
    event_type = "PairExtended"
    additional_sessions: int = Field(ge=1)
    extended_by: str


@event
class NotificationSent(DomainEvent):
    event_type = "NotificationSent"
    kind: str
    recipient_id: str
    channel: str
    message_id: str
    recipient_role: str | None = None
    session_no: int | None = Field(default=None, description="the session a session notice is about")


@event
class NotificationFailed(DomainEvent):
    """A notice that cannot be delivered, ever (the person was erased, the server refused the
    address): recorded so HR can see who was not told, while the pair goes on."""

    event_type = "NotificationFailed"
    kind: str
    recipient_id: str
    recipient_role: str | None = None
    reason: str = Field(description="RecipientUnavailable, DeliveryRefused or DeliveryTimedOut")
    session_no: int | None = None


@event
class NotificationSkipped(DomainEvent):
    """A notice not sent because it could no longer help (a session reminder handled after the
    session had begun, for instance when no worker was alive at its time): recorded, so nobody
    believes a reminder went out, and HR sees why it did not."""

    event_type = "NotificationSkipped"
    kind: str
    recipient_id: str
    recipient_role: str | None = None
    reason: str = Field(description="SessionAlreadyStarted")
    session_no: int | None = None


# --- 7. follow-ups and the end --------------------------------------------------------------------

@event
class FollowUpSent(DomainEvent):
    event_type = "FollowUpSent"
    days_after_end: int
    follow_up_no: int | None = Field(None, description="1 or 2 (absent in older pairs): tells apart "
                                     "follow-ups sent the same day after the end")


@event
class FollowUpAnswered(DomainEvent):
    event_type = "FollowUpAnswered"
    days_after_end: int
    still_using: bool
    by_role: Literal["mentor", "mentee"]
    follow_up_no: int | None = Field(None, description="which follow-up it answers (absent in older pairs)")


@event
class PairCompleted(DomainEvent):
    event_type = "PairCompleted"
    sessions_held: int
