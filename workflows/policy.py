"""The programme's clock: every durable wait of a pair, its deadline and its default.

Durations are ISO 8601 strings (``P14D``, ``PT24H``, ``P2W``) because that is what HR types in
the Temporal UI's JSON form and what the `PairNominated` event records. Years and months are
refused: they have no fixed length, and a deadline must mean the same thing on replay.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from events.lifecycle import DEFAULT_WAITS
from workflows.errors import excerpt
from workflows.payloads import checking_new_input

_DURATION = re.compile(
    r"P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?"
)
MAX_WAIT = timedelta(days=2 * 366)
"""The longest any wait may be: a pair lasts months, and a typo of extra digits must not pass."""


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration of weeks, days, hours, minutes and seconds, as a positive timedelta.

    Raises ValueError with a message written for the person who typed it.
    """
    shown = excerpt(text)
    value = text.strip().upper()
    date_part = value[1:].partition("T")[0] if value.startswith("P") else ""
    if "Y" in date_part or "M" in date_part:
        raise ValueError(
            f"{shown} uses years or months, which have no fixed length: "
            "give days or weeks instead (for example P30D or P4W)"
        )
    match = _DURATION.fullmatch(value)
    if not match or value in ("P", "PT") or value.endswith("T"):
        raise ValueError(
            f"{shown} is not an ISO 8601 duration: write for example P14D (14 days), "
            "P2W (2 weeks) or PT24H (24 hours)"
        )
    if any(len(v) > 7 for v in match.groupdict().values() if v is not None):
        # More digits than any wait needs, and than timedelta holds.
        raise ValueError(f"{shown} is far too long for a wait: check the number")
    parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    duration = timedelta(**parts)
    if duration <= timedelta(0):
        raise ValueError(f"{shown} is zero: a deadline must be later than its start")
    return duration


def _checked(text: str, info: ValidationInfo) -> str:
    if parse_duration(text) > MAX_WAIT and checking_new_input(info):
        raise ValueError(f"{excerpt(text)} is longer than two years, the longest wait a pair may have: "
                         "check the number")
    return text.strip().upper()


IsoDuration = Annotated[
    str,
    AfterValidator(_checked),
    Field(json_schema_extra={"pattern": r"^[Pp](\d+[Ww])?(\d+[Dd])?([Tt](\d+[Hh])?(\d+[Mm])?(\d+[Ss])?)?$"}),
]


class Policy(BaseModel):
    """How long each wait may last before its consequence (ISO 8601 durations).

    Every field is optional: a programme overrides only what differs from the defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    motivation_reminder_after: IsoDuration = Field(
        DEFAULT_WAITS["motivation_reminder_after"], description="remind the mentor to confirm their motivation")
    motivation_expires_after: IsoDuration = Field(
        DEFAULT_WAITS["motivation_expires_after"], description="without the mentor's confirmation, the nomination lapses")
    invitation_reminder_after: IsoDuration = Field(
        DEFAULT_WAITS["invitation_reminder_after"], description="remind the mentee of the invitation")
    invitation_expires_after: IsoDuration = Field(
        DEFAULT_WAITS["invitation_expires_after"], description="without an answer, the invitation expires and the pair closes politely")
    preparation_reminder_after: IsoDuration = Field(
        DEFAULT_WAITS["preparation_reminder_after"], description="preparation idle this long: remind whoever has something pending")
    preparation_escalation_after: IsoDuration = Field(
        DEFAULT_WAITS["preparation_escalation_after"], description="preparation idle this long: flag at risk and escalate to HR")
    session_reminder_before: IsoDuration = Field(
        DEFAULT_WAITS["session_reminder_before"], description="reminder sent this long before each confirmed session")
    stall_nudge_after: IsoDuration = Field(
        DEFAULT_WAITS["stall_nudge_after"], description="no session activity this long: nudge both people")
    at_risk_after: IsoDuration = Field(
        DEFAULT_WAITS["at_risk_after"], description="no session activity this long: flag at risk and escalate to HR")
    lapse_after: IsoDuration = Field(
        DEFAULT_WAITS["lapse_after"], description="no activity this long (preparation or sessions): close the pair as lapsed")
    final_evaluation_within: IsoDuration = Field(
        DEFAULT_WAITS["final_evaluation_within"], description="after the last session, how long the final evaluations are awaited")
    first_follow_up_after: IsoDuration = Field(
        DEFAULT_WAITS["first_follow_up_after"], description="first follow-up, counted from the last session")
    second_follow_up_after: IsoDuration = Field(
        DEFAULT_WAITS["second_follow_up_after"], description="second follow-up, counted from the last session")
    follow_up_answer_within: IsoDuration = Field(
        DEFAULT_WAITS["follow_up_answer_within"], description="after the second follow-up, how long answers are awaited before completion")

    def duration(self, name: str) -> timedelta:
        return parse_duration(getattr(self, name))

    def in_force(self) -> dict[str, str]:
        """Every duration as recorded in the `PairNominated` event."""
        return self.model_dump()

    @model_validator(mode="after")
    def _in_order(self) -> Policy:
        problems = []
        for earlier, later, why in _ORDER:
            if self.duration(earlier) >= self.duration(later):
                problems.append(
                    f"{earlier} ({getattr(self, earlier)}) must be shorter than {later} "
                    f"({getattr(self, later)}): {why}"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self


_ORDER = [
    ("motivation_reminder_after", "motivation_expires_after", "the reminder comes before the nomination lapses"),
    ("invitation_reminder_after", "invitation_expires_after", "the reminder comes before the invitation expires"),
    ("preparation_reminder_after", "preparation_escalation_after", "HR is escalated to after the reminder"),
    ("preparation_escalation_after", "lapse_after", "the pair lapses only after HR was escalated to"),
    ("stall_nudge_after", "at_risk_after", "the nudge comes before the escalation"),
    ("at_risk_after", "lapse_after", "the pair lapses only after HR was escalated to"),
    ("first_follow_up_after", "second_follow_up_after", "the follow-ups come in this order"),
]
