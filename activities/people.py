"""Personal data, kept out of the hash-chained log: contact details and private comments.

`people` holds names, e-mails and time zones by pseudonymous employee id; `private_notes` holds
feedback comments by the id of the event that mentions them. Both can be erased on request
without touching the log (see events/migrations/0002_personal_data.sql).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio import activity

from activities.database_errors import refused_data_is_final
from codec.shredding import mark_all_for_shredding, mark_for_shredding, workflows_naming
from events.base import DomainEvent, EventMetadata, NewEvent
from events.messages import PrivateNoteRequest, RegisterPeopleRequest
from events.people import (
    ContactDetailsChanged,
    ErasureReason,
    PersonalDataErased,
    person_stream,
)
from events.store import PostgresEventStore
from projections.pair_fold import LIVE_STAGES
from workflows.inputs import ContactChange

# A nomination registers a person it does not know yet, and never changes one it knows: contact
# details change only by an explicit, recorded act (`change_contact`), not as a side effect of a
# nomination, which could be refused ("already nominated") or typed by someone else. The insert
# is atomic, so two pairs registering one person at the same moment keep the first details.
# An erased person stays erased: a later nomination is no consent to store their data again.
_REGISTER_PERSON = """
INSERT INTO people (employee_id, display_name, email, time_zone, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (employee_id) DO NOTHING
"""

# Idempotent on the event id: a retried activity finds its note already there and changes nothing.
_INSERT_NOTE = """
INSERT INTO private_notes (event_id, pair_id, author_id, body, shared, kind)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (event_id) DO NOTHING
"""


class PeopleActivities:
    """Register `PeopleActivities(pool).register_people` and `.record_private_note`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn(name="register_people")
    @refused_data_is_final
    async def register_people(self, request: RegisterPeopleRequest) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(_REGISTER_PERSON, [
                (p.employee_id, p.display_name, p.email, p.time_zone) for p in request.people
            ])
            # A nomination naming someone erased brought their details into this workflow's
            # input again: its keys go too, once it has closed.
            erased = await conn.fetchval(
                "SELECT count(*) FROM people WHERE employee_id = ANY($1::text[]) AND erased_at IS NOT NULL",
                [p.employee_id for p in request.people])
            if erased and activity.in_activity():
                await mark_for_shredding(conn, activity.info().workflow_id or "", by="erasure (named again)")

    @activity.defn(name="record_private_note")
    @refused_data_is_final
    async def record_private_note(self, request: PrivateNoteRequest) -> None:
        await self._pool.execute(
            _INSERT_NOTE, request.event_id, request.pair_id, request.author_id, request.body,
            request.shared, request.kind,
        )


# --- erasure on request ---------------------------------------------------------------------------

_ERASE_PERSON = """
UPDATE people SET display_name = NULL, email = NULL, erased_at = now(), updated_at = now()
 WHERE employee_id = $1 AND erased_at IS NULL
"""
_ERASE_NOTES = """
UPDATE private_notes SET body = NULL, erased_at = now()
 WHERE author_id = $1 AND erased_at IS NULL
"""


class UnknownPerson(LookupError):
    """No contact details are kept for this employee id (never registered, or already erased)."""


_CHANGE_CONTACT = """
UPDATE people SET display_name = coalesce($2, display_name), email = coalesce($3, email),
                  time_zone = coalesce($4, time_zone), updated_at = now()
 WHERE employee_id = $1 AND erased_at IS NULL
"""


async def change_contact(store: PostgresEventStore, change: ContactChange, *, by: str) -> Sequence[str]:
    """Change a person's contact details, the one way they change; the log records which fields
    changed and who changed them (never the values). Returns the fields changed."""
    fields = change.fields_changed()
    stream = person_stream(change.employee_id)
    async with store.write_transaction() as conn:
        updated = await conn.execute(_CHANGE_CONTACT, change.employee_id, change.display_name,
                                     change.email, change.time_zone)
        if updated == "UPDATE 0":
            raise UnknownPerson(f"no contact details are kept for {change.employee_id}: unknown id, "
                                "or erased (an erased person is not registered again)")
        fact = ContactDetailsChanged(employee_id=change.employee_id, fields=fields)
        await _record_for_person(store, conn, stream, fact, by)
    return fields


async def _record_for_person(store: PostgresEventStore, conn: asyncpg.Connection, stream: str,
                             fact: DomainEvent, by: str) -> None:
    version = await conn.fetchval(
        "SELECT version FROM event_streams WHERE stream_id = $1", stream) or 0
    await store.append(stream, version, [NewEvent.of(fact, uuid.uuid4())],
                       EventMetadata(actor=by, correlation_id=stream,
                                     occurred_at=datetime.now(UTC)), conn=conn)


@dataclass(frozen=True)
class Erased:
    """What an erasure removed: the count of private comments, and the contact details as they
    were (for the caller to clear the outbox with, then forget)."""

    notes: int
    email: str | None
    display_name: str | None
    workflows: list[str]  # marked for their keys to be destroyed (codec/shredding.py)


async def erase_person(store: PostgresEventStore, employee_id: str, *, by: str,
                       reason: ErasureReason) -> Erased:
    """Erase a person's name, e-mail and private comments; record the erasure in the log.

    The log keeps only pseudonymous ids, so its hash chain is untouched. Raises UnknownPerson
    when there is nothing (left) to erase.
    """
    stream = person_stream(employee_id)
    async with store.pool.acquire() as conn, conn.transaction():  # the erasure and its record
        # In the same transaction: the erasure never happens without its reach into Temporal. The
        # log is read first, before this transaction declares itself an event writer.
        workflows = await workflows_naming(conn, employee_id)
        await conn.execute("SELECT events_begin_write()")
        before = await conn.fetchrow(
            "SELECT email, display_name FROM people WHERE employee_id = $1 AND erased_at IS NULL FOR UPDATE",
            employee_id)
        erased = await conn.execute(_ERASE_PERSON, employee_id)
        if erased == "UPDATE 0" or before is None:
            raise UnknownPerson(
                f"no personal data is kept for {employee_id}: unknown id, or already erased")
        notes = int((await conn.execute(_ERASE_NOTES, employee_id)).split()[-1])
        fact = PersonalDataErased(employee_id=employee_id, reason=reason, notes_erased=notes)
        await _record_for_person(store, conn, stream, fact, by)
        await mark_all_for_shredding(conn, workflows, by=by)
    return Erased(notes=notes, email=before["email"], display_name=before["display_name"], workflows=workflows)


# --- erasure reaches running pairs ------------------------------------------------------------------

_RUNNING_PAIRS = """
SELECT pair_id, CASE WHEN mentor_id = $1 THEN 'mentor' ELSE 'mentee' END AS role
  FROM pair_overview.pairs
 WHERE (mentor_id = $1 OR mentee_id = $1)
   AND stage = ANY($2::text[])
 ORDER BY pair_id
"""


async def withdraw_from_running_pairs(pool: asyncpg.Pool, client: Any, employee_id: str,
                                      reason: ErasureReason) -> list[tuple[str, str]]:
    """Before an erasure: the person leaves every pair still running, as their own act and
    without penalty (each pair records `PairWithdrawn` and tells the other person). Returns each
    pair's workflow id with what happened; a pair that ended meanwhile is left as it is.

    The pairs come from the `pair_overview` read model, which follows the log within moments."""
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.service import RPCError

    outcomes = []
    for row in await pool.fetch(_RUNNING_PAIRS, employee_id, list(LIVE_STAGES)):
        workflow_id = f"pair-{row['pair_id']}"
        request = {"recorded_by": employee_id, "role": row["role"],
                   "reason": "left_company" if reason == "left_company" else "personal"}
        try:
            await client.get_workflow_handle(workflow_id).execute_update("withdraw", request)
            outcomes.append((workflow_id, "withdrawn"))
        except WorkflowUpdateFailedError as exc:
            outcomes.append((workflow_id, f"not withdrawn: {str(exc.cause or exc).splitlines()[0]}"))
        except RPCError as exc:  # closed meanwhile (or gone past retention): nothing to withdraw from
            outcomes.append((workflow_id, f"not running: {exc.message}"))
    return outcomes
