"""Personal data, kept out of the hash-chained log: contact details and private comments.

`people` holds names, e-mails and time zones by pseudonymous employee id; `private_notes` holds
feedback comments by the id of the event that mentions them. Both can be erased on request
without touching the log (see events/migrations/0002_personal_data.sql).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
from temporalio import activity

from events.base import EventMetadata, NewEvent
from events.messages import PrivateNoteRequest, RegisterPeopleRequest
from events.people import ErasureReason, PersonalDataErased, person_stream
from events.store import PostgresEventStore

# A new nomination brings fresh contact details: they replace the old ones. An erased person
# stays erased: erasure was their request, and a later nomination is no consent to store their
# data again (notices to them are recorded as NotificationFailed; HR sees who was not told).
_UPSERT_PERSON = """
INSERT INTO people (employee_id, display_name, email, time_zone, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (employee_id) DO UPDATE
   SET display_name = EXCLUDED.display_name, email = EXCLUDED.email,
       time_zone = EXCLUDED.time_zone, updated_at = now()
 WHERE people.erased_at IS NULL
   AND (people.display_name, people.email, people.time_zone)
       IS DISTINCT FROM (EXCLUDED.display_name, EXCLUDED.email, EXCLUDED.time_zone)
"""

# Idempotent on the event id: a retried activity finds its note already there and changes nothing.
_INSERT_NOTE = """
INSERT INTO private_notes (event_id, pair_id, author_id, body, shared)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (event_id) DO NOTHING
"""


class PeopleActivities:
    """Register `PeopleActivities(pool).register_people` and `.record_private_note`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn(name="register_people")
    async def register_people(self, request: RegisterPeopleRequest) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(_UPSERT_PERSON, [
                (p.employee_id, p.display_name, p.email, p.time_zone) for p in request.people
            ])

    @activity.defn(name="record_private_note")
    async def record_private_note(self, request: PrivateNoteRequest) -> None:
        await self._pool.execute(
            _INSERT_NOTE, request.event_id, request.pair_id, request.author_id, request.body,
            request.shared,
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


async def erase_person(store: PostgresEventStore, employee_id: str, *, by: str,
                       reason: ErasureReason) -> int:
    """Erase a person's name, e-mail and private comments; record the erasure in the log.

    The log keeps only pseudonymous ids, so its hash chain is untouched. Returns the number of
    private comments erased. Raises UnknownPerson when there is nothing (left) to erase.
    """
    stream = person_stream(employee_id)
    async with store.pool.acquire() as conn, conn.transaction():  # the erasure and its record
        erased = await conn.execute(_ERASE_PERSON, employee_id)
        if erased == "UPDATE 0":
            raise UnknownPerson(
                f"no personal data is kept for {employee_id}: unknown id, or already erased")
        notes = int((await conn.execute(_ERASE_NOTES, employee_id)).split()[-1])
        fact = PersonalDataErased(employee_id=employee_id, reason=reason, notes_erased=notes)
        version = await conn.fetchval(
            "SELECT version FROM event_streams WHERE stream_id = $1", stream) or 0
        await store.append(stream, version, [NewEvent.of(fact, uuid.uuid4())],
                           EventMetadata(actor=by, correlation_id=stream,
                                         occurred_at=datetime.now(UTC)), conn=conn)
    return notes
