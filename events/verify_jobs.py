"""A full verify of the log's chains as a resumable background job.

Verifying a million events takes seconds to minutes: not something to run inside an HTTP
request. A job checks the streams a range at a time (each range in one consistent snapshot),
records its progress after each, and whoever finds it unfinished and unclaimed (a session-level
advisory lock marks the process running it) resumes it where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field, computed_field

from events.store import _verify

log = logging.getLogger("mentoring.verify_jobs")
_LOCK_BASE = 0x76657269  # + the job's id: one runner per job across processes
STREAMS_PER_RANGE = 500


class VerifyJob(BaseModel):
    """A job as the API shows it."""

    id: int
    status: str = Field(description="running, or done")
    requested_at: datetime
    requested_by: str | None
    streams_checked: int
    events_checked: int
    first_bad: dict[str, Any] | None
    finished_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool | None:
        """None while running."""
        return None if self.status != "done" else self.first_bad is None


async def start_job(pool: asyncpg.Pool, requested_by: str | None) -> int:
    return int(await pool.fetchval("INSERT INTO verify_jobs (requested_by) VALUES ($1) RETURNING id", requested_by))


async def read_job(pool: asyncpg.Pool, job_id: int) -> VerifyJob | None:
    row = await pool.fetchrow(
        "SELECT id, status, requested_at, requested_by, streams_checked, events_checked, first_bad::text AS first_bad,"
        " finished_at FROM verify_jobs WHERE id = $1", job_id)
    if row is None:
        return None
    return VerifyJob(**{**dict(row), "first_bad": json.loads(row["first_bad"]) if row["first_bad"] else None})


async def run_job(pool: asyncpg.Pool, job_id: int, *, streams_per_range: int = STREAMS_PER_RANGE) -> bool:
    """Run (or resume) the job to its end; False when another process runs it."""
    async with pool.acquire() as lock_conn:
        if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_BASE + job_id):
            return False
        try:
            while await _one_range(pool, job_id, streams_per_range):
                pass
            return True
        finally:
            await lock_conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_BASE + job_id)


async def _one_range(pool: asyncpg.Pool, job_id: int, streams_per_range: int) -> bool:
    """Check the next range of streams and record it; False once the job is done."""
    async with pool.acquire() as conn:
        job = await conn.fetchrow("SELECT status, after_stream, first_bad::text AS first_bad FROM verify_jobs WHERE id = $1",
                                  job_id)
        if job is None or job["status"] == "done":
            return False
        after = job["after_stream"]
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # The range ends at the Nth stream head after `after`; the last range is open-ended,
            # so streams with events but no head are checked too.
            upto = await conn.fetchval(
                "SELECT max(stream_id) FROM (SELECT stream_id FROM event_streams WHERE $1::text IS NULL OR stream_id > $1"
                " ORDER BY stream_id LIMIT $2) heads", after, streams_per_range)
            heads = await conn.fetchval(
                "SELECT count(*) FROM event_streams WHERE ($1::text IS NULL OR stream_id > $1)", after)
            last_range = heads <= streams_per_range
            report = await _verify(conn, after, None if last_range else upto)
        found = report.first_bad
        first = json.loads(job["first_bad"]) if job["first_bad"] else None
        if found is not None and (first is None or _earlier(found.position, first.get("position"))):
            first = {"position": found.position, "stream_id": found.stream_id, "version": found.version,
                     "event_id": str(found.event_id) if found.event_id else None, "reason": found.reason,
                     "description": str(found)}
        await conn.execute(
            "UPDATE verify_jobs SET after_stream = $2, streams_checked = streams_checked + $3,"
            " events_checked = events_checked + $4, first_bad = $5::jsonb, progress_at = now(),"
            " status = CASE WHEN $6 THEN 'done' ELSE status END, finished_at = CASE WHEN $6 THEN now() END"
            " WHERE id = $1", job_id, upto, report.streams_checked, report.events_checked,
            first, last_range)
        return not last_range


def _earlier(position: int | None, other: int | None) -> bool:
    """Findings without a position (a stream head) come after those with one, as in verify()."""
    if other is None:
        return position is not None
    return position is not None and position < other


async def resume_unfinished(pool: asyncpg.Pool) -> None:
    """Run every job left unfinished by a process that died (those running elsewhere are skipped)."""
    for row in await pool.fetch("SELECT id FROM verify_jobs WHERE status = 'running' ORDER BY id"):
        try:
            await run_job(pool, row["id"])
        except (asyncpg.PostgresError, OSError):
            log.exception("verify job %s failed; it is resumed later", row["id"])


def run_in_background(pool: asyncpg.Pool, job_id: int) -> asyncio.Task[bool]:
    return asyncio.create_task(run_job(pool, job_id), name=f"verify-job-{job_id}")
