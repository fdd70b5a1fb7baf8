"""Events about people rather than pairs. Stream id: ``person-<employee_id>``.

The log keeps pseudonymous employee ids for ever (the audit trail needs them); what erasure
removes lives outside it, in the `people` and `private_notes` tables.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from events.base import DomainEvent, event

ErasureReason = Literal["person_request", "left_company", "retention_expired", "other"]


def person_stream(employee_id: str) -> str:
    return f"person-{employee_id}"


@event
class PersonalDataErased(DomainEvent):
    """A person's name, e-mail and private comments were erased; their id stays in the log."""

    event_type = "PersonalDataErased"
    employee_id: str
    reason: ErasureReason
    notes_erased: int = Field(ge=0, description="private comments whose text was erased")


@event
class ContactDetailsChanged(DomainEvent):
    """A person's contact details were changed on purpose; which fields, never their values."""

    event_type = "ContactDetailsChanged"
    employee_id: str
    fields: list[Literal["display_name", "email", "time_zone"]] = Field(min_length=1)

