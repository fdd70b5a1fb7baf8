"""Personal data, kept out of the hash-chained log: contact details and private comments.

`people` holds names, e-mails and time zones by pseudonymous employee id; `private_notes` holds
feedback comments by the id of the event that mentions them. Both can be erased on request
without touching the log (see events/migrations/0002_personal_data.sql).
"""

from __future__ import annotations

import asyncpg
from temporalio import activity

from events.messages import PrivateNoteRequest, RegisterPeopleRequest

# A new nomination brings fresh contact details: they replace the old ones, and a person erased
# before is registered again (erased_at cleared) because HR provided their data anew.
_UPSERT_PERSON = """
INSERT INTO people (employee_id, display_name, email, time_zone, updated_at, erased_at)
VALUES ($1, $2, $3, $4, now(), NULL)
ON CONFLICT (employee_id) DO UPDATE
   SET display_name = EXCLUDED.display_name, email = EXCLUDED.email,
       time_zone = EXCLUDED.time_zone, updated_at = now(), erased_at = NULL
 WHERE (people.display_name, people.email, people.time_zone, people.erased_at)
       IS DISTINCT FROM (EXCLUDED.display_name, EXCLUDED.email, EXCLUDED.time_zone, NULL)
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
