"""What HR types: the pair's start input and the payload of each human action (update).

Pydantic models are the one description of these shapes: the workflow validates with them, the
published JSON Schema (`schemas/pair-input.schema.json`, `python -m workflows.schema`) is generated
from them, and the Temporal client sends them. Messages are written for HR (see workflows/errors.py).
"""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from events import matching
from workflows import timezones
from workflows.errors import excerpt
from workflows.payloads import checking_new_input
from workflows.policy import Policy

# --- building blocks -----------------------------------------------------------------------------

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]{0,63}")
_PROGRAMME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _employee_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError(
            "must be the pseudonymous employee id HR uses: letters, digits, '.' or '_', "
            "at most 64 characters, no spaces or hyphens"
        )
    return value


def _programme_id(value: str) -> str:
    if not _PROGRAMME.fullmatch(value):
        raise ValueError("must be letters, digits, '.', '_' or '-', at most 64 characters")
    return value


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value.strip()):
        raise ValueError("is not an e-mail address (expected name@domain.tld)")
    return value.strip()


def _time_zone(value: str) -> str:
    if not timezones.is_known(value):
        raise ValueError(
            "is not a known time zone: use an IANA name such as Europe/Paris, America/New_York or UTC"
        )
    return value


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value.casefold() in seen:
            raise ValueError(f"{excerpt(value)} is listed twice")
        seen.add(value.casefold())
    return values


EARLIEST_SESSION_YEAR, LATEST_SESSION_YEAR = 2000, 2999


def _session_time(value: datetime, info: ValidationInfo) -> datetime:
    # Only the calendar's sanity here (arithmetic on year 1 or 9999 overflows); the rule that a
    # session is in the future and within reach is the pair's (workflows/rules.py).
    if checking_new_input(info) and not EARLIEST_SESSION_YEAR <= value.year <= LATEST_SESSION_YEAR:
        raise ValueError(f"must be a date and time between {EARLIEST_SESSION_YEAR} and {LATEST_SESSION_YEAR}")
    return value


# The checks are ours (their messages are written for HR); the schema hints mirror them.
EmployeeId = Annotated[str, AfterValidator(_employee_id),
                       Field(json_schema_extra={"pattern": f"^{_ID.pattern}$"})]
ProgrammeId = Annotated[str, AfterValidator(_programme_id),
                        Field(json_schema_extra={"pattern": f"^{_PROGRAMME.pattern}$"})]
Email = Annotated[str, AfterValidator(_email), Field(json_schema_extra={"format": "email"})]
TimeZoneName = Annotated[str, AfterValidator(_time_zone),
                         Field(json_schema_extra={"examples": ["Europe/Paris", "America/New_York", "UTC"]})]
Topic = Annotated[str, Field(min_length=1, max_length=120)]
Topics = Annotated[list[Topic], Field(min_length=1, max_length=30), AfterValidator(_unique)]
Weekday = Annotated[
    matching.Weekday,  # one list of weekdays, shared with matching
    BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v),
]
WEEKDAYS = list(matching.WEEKDAYS)
Role = Literal["mentor", "mentee", "hr"]
Participant = Literal["mentor", "mentee"]
Comment = Annotated[str, Field(min_length=1, max_length=4000)]


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab, CR and LF aside
_LINE_BREAK = re.compile(r"[\r\n]")
MULTILINE_FIELDS = frozenset({"comment", "objectives"})
"""Free text, where line breaks are welcome; everywhere else (names, e-mails, ids) a CR or LF could
forge an e-mail header."""


def _printable(value: Any, multiline: bool) -> Any:
    """Reject what PostgreSQL cannot store (NUL) and what would break a line of an e-mail."""
    for text in value if isinstance(value, list) else [value]:
        if not isinstance(text, str):
            continue
        if _CONTROL.search(text):
            raise ValueError("contains a control character (such as NUL), which cannot be stored: "
                             "remove it and send again")
        if not multiline and _LINE_BREAK.search(text):
            raise ValueError("must be on one line (no line break)")
    return value


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        if not checking_new_input(info):
            return value
        return _printable(value, multiline=info.field_name in MULTILINE_FIELDS)


class ContactChange(_Form):
    """A change of someone's contact details (`mentoring people update`): the only way they change."""

    employee_id: EmployeeId
    display_name: str | None = Field(None, min_length=1, max_length=200)
    email: Email | None = None
    time_zone: TimeZoneName | None = None

    @model_validator(mode="after")
    def _something(self) -> ContactChange:
        if not self.fields_changed():
            raise ValueError("give at least one of display_name, email, time_zone")
        return self

    def fields_changed(self) -> list[Literal["display_name", "email", "time_zone"]]:
        changed: list[Literal["display_name", "email", "time_zone"]] = []
        if self.display_name is not None:
            changed.append("display_name")
        if self.email is not None:
            changed.append("email")
        if self.time_zone is not None:
            changed.append("time_zone")
        return changed


# --- the start input -----------------------------------------------------------------------------

class AvailabilityWindow(_Form):
    """A weekly slot in the mentee's own time zone when sessions may take place."""

    weekday: Weekday
    start: time = Field(description="local start, e.g. 09:00")
    end: time = Field(description="local end, e.g. 12:00")

    @model_validator(mode="after")
    def _ordered(self) -> AvailabilityWindow:
        if self.start.tzinfo or self.end.tzinfo:
            raise ValueError("give local times without an offset: the mentee's time_zone applies")
        if self.end <= self.start:
            raise ValueError("end must be after start (a window stays within one day)")
        return self

    def label(self) -> str:
        return f"{self.weekday.capitalize()} {self.start:%H:%M}-{self.end:%H:%M}"


class Person(_Form):
    employee_id: EmployeeId
    display_name: str = Field(min_length=1, max_length=200)
    email: Email
    time_zone: TimeZoneName = Field(description="IANA time zone, e.g. Europe/Paris")


class Mentor(Person):
    """The junior who mentors."""

    topics_mastered: list[Topic] = Field(default_factory=list)


class Mentee(Person):
    """The senior who learns; sessions are scheduled inside their availability."""

    availability: list[AvailabilityWindow] = Field(min_length=1, max_length=21)
    topics_wished: list[Topic] = Field(default_factory=list)


class HrManager(_Form):
    """The HR programme manager who nominates the pair and receives its escalations."""

    employee_id: EmployeeId
    display_name: str = Field(min_length=1, max_length=200)
    email: Email
    time_zone: TimeZoneName = "UTC"


class PairInput(_Form):
    """Start a mentoring pair: the one JSON object the Temporal UI's Start Workflow form sends."""

    model_config = ConfigDict(title="MentoringPair input", json_schema_extra={
        "$comment": "generated by `python -m workflows.schema` from workflows/inputs.py",
    })

    programme_id: ProgrammeId
    mentor: Mentor
    mentee: Mentee
    topics: Topics = Field(description="what the mentor will transmit")
    sessions_planned: int = Field(6, ge=1, le=24)
    nominated_by: HrManager
    training_modules: Annotated[list[Topic], Field(min_length=1, max_length=20), AfterValidator(_unique)] = Field(
        default_factory=lambda: ["reverse-mentoring-basics", "confidentiality"],
        description="modules the mentor completes before HR signs them off",
    )
    policy: Policy = Field(default_factory=Policy)
    hr_team: Annotated[list[EmployeeId], Field(max_length=10), AfterValidator(_unique)] = Field(
        default_factory=list,
        description="other HR people who may act for this pair, besides nominated_by (employee ids)")

    @model_validator(mode="after")
    def _roles_apart(self, info: ValidationInfo) -> PairInput:
        if self.mentor.employee_id == self.mentee.employee_id:
            raise ValueError("mentor and mentee must be two different people")
        hr = {self.nominated_by.employee_id, *self.hr_team}
        if checking_new_input(info) and hr & {self.mentor.employee_id, self.mentee.employee_id}:
            raise ValueError("the HR people of a pair (nominated_by, hr_team) can be neither its mentor "
                             "nor its mentee: someone else records the pair's HR acts")
        return self

    @property
    def pair_id(self) -> str:
        return pair_id(self.programme_id, self.mentor.employee_id, self.mentee.employee_id)


def pair_id(programme_id: str, mentor_id: str, mentee_id: str) -> str:
    """Unique per programme and people; employee ids have no '-', so the id reads back unambiguously."""
    return f"{programme_id}-{mentor_id}-{mentee_id}"


def pair_workflow_id(programme_id: str, mentor_id: str, mentee_id: str) -> str:
    """The workflow id to start a pair with: Temporal refuses a second start while one runs.

    It equals the pair's event stream id (`events.pair.pair_stream`).
    """
    return f"pair-{pair_id(programme_id, mentor_id, mentee_id)}"


# --- the human actions (updates) -----------------------------------------------------------------

class _Action(_Form):
    """Base of update payloads; the workflow reads them itself (workflows/payloads.py), so a bad
    one is refused in words naming the update and the field."""

    recorded_by: EmployeeId = Field(description="who enters this action (the person, or HR on their behalf)")


class ConfirmMotivation(_Action):
    """The mentor says yes: recorded_by must be the mentor themself."""


class DeclineMentoring(_Action):
    reason: Literal["no_time", "not_interested", "not_confident", "other"]


class InvitationAnswer(_Action):
    channel: Literal["ui", "email", "integration", "in_person"] = "ui"


class AgreeCurriculum(_Action):
    topics: Topics
    objectives: Annotated[list[Annotated[str, Field(min_length=1, max_length=300)]], Field(min_length=1, max_length=20)]


class CompleteTrainingModule(_Action):
    module: Topic


class OnboardMentee(_Action):
    """The senior received the onboarding: what to expect, ground rules, confidentiality."""


class SignOffMentor(_Action):
    """HR signs the mentor off as ready: recorded_by is the HR person signing."""


SessionTime = Annotated[datetime, AfterValidator(_session_time)]


class ProposeSession(_Action):
    starts_at: SessionTime = Field(
        description="start; without an offset it is read in the mentee's time zone, e.g. 2026-03-03T10:00")
    duration_minutes: int = Field(60, ge=15, le=240)
    format: Literal["individual", "group"] = "individual"
    topics: Topics


class SessionRef(_Action):
    session_no: int = Field(ge=1, le=100)


class ConfirmSession(SessionRef):
    pass


class RescheduleSession(SessionRef):
    starts_at: SessionTime = Field(description="new start; without an offset, the mentee's time zone")


class CancelSession(SessionRef):
    cancelled_by: Role
    reason: Literal["agenda_conflict", "illness", "travel", "other"]


class RecordSessionHeld(SessionRef):
    topics_covered: Topics


class RecordNoShow(SessionRef):
    absent: Literal["mentor", "mentee", "both"]


class GiveFeedback(SessionRef):
    by_role: Participant
    rating: int = Field(ge=1, le=5)
    engaging: bool
    topics_covered: list[Topic] = Field(default_factory=list)
    comment: Comment | None = Field(None, description="kept private to the pair, out of the event log")
    share_comment: bool = Field(False, description="the author agrees to show the comment to HR")


class GiveFinalEvaluation(_Action):
    by_role: Participant
    rating: int = Field(ge=1, le=5)
    would_recommend: bool
    comment: Comment | None = None
    share_comment: bool = False


class PausePair(_Action):
    reason: Literal["agenda", "leave", "workload", "reorganisation", "other"]


class ResumePair(_Action):
    pass


class WithdrawPair(_Action):
    role: Role = Field(description="who withdraws: mentor, mentee (then recorded_by is that person) or hr")
    reason: Literal["no_time", "not_useful", "mismatch", "left_company", "personal", "other"]


class ReplaceMentor(_Action):
    new_mentor: Mentor
    reason: Literal["mentor_left", "mentor_unavailable", "mismatch", "other"]


class ExtendPair(_Action):
    additional_sessions: int = Field(ge=1, le=12)


class FollowUpAnswer(_Action):
    """Signal payload: an answer to a follow-up (is the senior still using what was learnt?)."""

    days_after_end: int = Field(ge=0, le=3660)
    by_role: Participant
    still_using: bool
    follow_up_no: int | None = Field(None, ge=1, le=2, description=(
        "which follow-up, 1 or 2: needed only when both were sent the same day after the end "
        "(otherwise the oldest one this person has not answered)"))


UPDATE_FORMS: dict[str, type[_Action]] = {
    "confirm_motivation": ConfirmMotivation, "decline_mentoring": DeclineMentoring,
    "accept_invitation": InvitationAnswer, "decline_invitation": InvitationAnswer,
    "agree_curriculum": AgreeCurriculum, "complete_training_module": CompleteTrainingModule,
    "onboard_mentee": OnboardMentee, "sign_off_mentor": SignOffMentor,
    "propose_session": ProposeSession, "confirm_session": ConfirmSession,
    "reschedule_session": RescheduleSession, "cancel_session": CancelSession,
    "record_session_held": RecordSessionHeld, "record_no_show": RecordNoShow,
    "give_feedback": GiveFeedback, "give_final_evaluation": GiveFinalEvaluation,
    "pause": PausePair, "resume": ResumePair, "withdraw": WithdrawPair,
    "replace_mentor": ReplaceMentor, "extend": ExtendPair,
}
"""The form each update of `MentoringPair` reads its one JSON object into (README, tests, schema)."""
SIGNAL_FORMS: dict[str, type[_Action]] = {"answer_follow_up": FollowUpAnswer}
