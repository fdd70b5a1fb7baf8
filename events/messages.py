"""What workflows and activities exchange: plain pydantic shapes, no I/O.

They live in `events/` because imports flow one way (workflows -> events, activities -> events):
both sides need the same shapes and neither may import the other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from events.base import EventMetadata, NewEvent
from events.matching import WeeklyWindow


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppendRequest(_Message):
    """Append events decided by a workflow; ids and expected version make a retry harmless."""

    stream_id: str
    expected_version: int = Field(ge=0)
    events: list[NewEvent] = Field(min_length=1)
    metadata: EventMetadata


class AppendResponse(_Message):
    version: int
    positions: list[int]
    duplicate: bool
    appended_at: datetime | None = Field(
        default=None, description="when the append ran, by Temporal's clock (the one workflows "
        "count in): the time the workflow folds the events with. Absent from older results.")


class ReadStreamRequest(_Message):
    """The facts of a stream after a version: what a run of a pair has not seen (after a Reset)."""

    stream_id: str
    after_version: int = Field(ge=0)


class LoggedEvent(_Message):
    """One fact as the log holds it, with who recorded it and when the log did."""

    version: int
    event_type: str
    payload: dict[str, Any]
    actor: str
    run_id: str | None = None
    recorded_at: datetime = Field(description=(
        "the append's time by the database's clock: within milliseconds of the time the recording "
        "run folded the fact with (its append activity's start), unlike the run's `workflow.now()`, "
        "which may be stale"))


class ReadStreamResponse(_Message):
    events: list[LoggedEvent]


class PersonContact(_Message):
    """Contact details, written to the erasable `people` table, never to the log."""

    employee_id: str
    display_name: str
    email: str
    time_zone: str = "UTC"


class RegisterPeopleRequest(_Message):
    people: list[PersonContact]


class CancelRequestQuery(_Message):
    """Which run's cancellation to look up in Temporal."""

    workflow_id: str
    run_id: str


class CancelRequest(_Message):
    """Who asked Temporal to cancel a run (its identity, e-mail addresses masked)."""

    identity: str
    with_reason: bool = False


class PrivateNoteRequest(_Message):
    """A feedback comment, or a curriculum's objectives: kept in `private_notes`, out of the log
    and the read models."""

    event_id: str
    pair_id: str
    author_id: str
    body: str
    shared: bool = False
    kind: Literal["comment", "curriculum_objectives"] = "comment"


class SessionDetails(_Message):
    """Enough to put a session in a calendar (.ics)."""

    session_no: int
    starts_at: datetime
    duration_minutes: int
    format: str
    topics: list[str]
    sequence: int = Field(default=0, description="iCalendar SEQUENCE: bumped on each reschedule")
    cancelled: bool = False


class NotificationRequest(_Message):
    """One message to one person. The activity looks the address up in `people` by id."""

    notification_id: str = Field(description="deterministic id from the workflow: a retry sends nothing twice")
    pair_id: str
    programme_id: str
    kind: str = Field(description="invitation, invitation_reminder, session_invitation, nudge, ...")
    recipient_id: str
    recipient_role: str
    counterpart_id: str | None = None
    deadline: datetime | None = None
    session: SessionDetails | None = None
    summary: list[str] = Field(default_factory=list, description="lines of figures (a programme's "
                               "digest): ids and counts only")


class NotificationReceipt(_Message):
    message_id: str
    channel: str
    already_sent: bool = False
    skipped: str | None = Field(
        default=None, description="why nothing was sent (a reminder that came too late to help); "
        "message_id and channel are then empty")


# Error types the event-log activity raises (ApplicationError.type), so workflows can tell them
# apart without importing the activity: both are final, retrying cannot help.
STREAM_CONFLICT = "EventStreamConflict"
"""The stream is not at the expected version: another writer appended first."""
EVENT_ID_CONFLICT = "EventIdConflict"
"""An event id is already recorded with a different content."""
DATA_REFUSED = "DataRefused"
"""PostgreSQL refused a value (a data error or a broken constraint): the same data would be
refused again, so no activity retries it; the workflow refuses the action that brought it."""

# Error types of the notification activity.
RECIPIENT_UNAVAILABLE = "RecipientUnavailable"
"""The person is unknown or erased: no address to write to, retrying cannot help."""
DELIVERY_REFUSED = "DeliveryRefused"
"""The mail server refused the recipient for good (a 5xx answer)."""
DELIVERY_FAILED = "DeliveryFailed"
"""The channel failed for now (server down, disk full): Temporal retries."""
UNDELIVERABLE = (RECIPIENT_UNAVAILABLE, DELIVERY_REFUSED)
SESSION_ALREADY_STARTED = "SessionAlreadyStarted"
"""Why a session reminder was skipped: it was handled after the session had begun."""
"""The final ones: the workflow records them and carries on."""


class PairToStart(_Message):
    """A pair a programme starts: everything its start input needs but names and e-mail addresses,
    which the activity reads from the `people` table (so they never enter the programme's history)."""

    workflow_id: str
    task_queue: str
    programme_id: str
    mentor_id: str
    mentor_time_zone: str
    mentor_topics: list[str]
    mentee_id: str
    mentee_time_zone: str
    mentee_availability: list[WeeklyWindow]
    mentee_topics: list[str]
    topics: list[str] = Field(min_length=1)
    nominated_by: str
    hr_team: list[str]
    sessions_planned: int
    training_modules: list[str]
    policy: dict[str, str]


class StartPairsRequest(_Message):
    pairs: list[PairToStart] = Field(min_length=1)


class PairStartOutcome(_Message):
    workflow_id: str
    started: bool = Field(description="false when it had been started before (a retry), or could not be")
    problem: str | None = Field(None, description="why it could not be started (nothing was)")


class StartPairsResponse(_Message):
    outcomes: list[PairStartOutcome]


class ProgrammeFiguresRequest(_Message):
    """Fold a programme's stream and its pairs' streams into its figures, as of a moment."""

    stream_id: str
    as_of: datetime
    with_stages: bool = Field(False, description="also each pair's stage (for winding pairs down)")


class WindDownRequest(_Message):
    """Ask Temporal to cancel these pairs (each records its own `PairCancelled`)."""

    pair_workflow_ids: list[str] = Field(min_length=1)
    reason: str


class WindDownResponse(_Message):
    cancelled: list[str] = Field(description="asked to cancel (or already closed: nothing to do)")
