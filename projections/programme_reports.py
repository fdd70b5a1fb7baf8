"""Read model: each closed programme's report, as its `ProgrammeClosed` event recorded it."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from events.base import RecordedEvent
from projections.base import Projection, occurred_at

_UPSERT = """
INSERT INTO reports (programme_id, position, closed_at, report) VALUES ($1, $2, $3, $4)
ON CONFLICT (programme_id) DO UPDATE SET
    position = EXCLUDED.position, closed_at = EXCLUDED.closed_at, report = EXCLUDED.report
"""


class ProgrammeReports(Projection):
    name = "programme_reports"
    tables = ("reports",)

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        rows = [(e.stream_id.removeprefix("programme-"), e.position, occurred_at(e), e.payload["report"])
                for e in events if e.event_type == "ProgrammeClosed"]
        if rows:
            await conn.executemany(_UPSERT, rows)
