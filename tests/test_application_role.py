"""The application's role (migration 0011): it appends through `append_events` and keeps its own
tables, and cannot change, remove or unguard what the log holds, whatever SQL it sends."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from events.base import NewEvent
from events.pair import MentorMotivationConfirmed
from events.store import PostgresEventStore
from tests.test_tamper_evidence import META, _three_streams

ROLE = "SET LOCAL ROLE mentoring_app"


async def test_the_application_role_appends_through_the_function(store: PostgresEventStore):
    await _three_streams(store)
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute(ROLE)
        await store.append("pair-a", 4, [NewEvent.of(MentorMotivationConfirmed(mentor_id="M9"), uuid.uuid4())],
                           META, conn=conn)
        await conn.execute("UPDATE people SET time_zone = time_zone")  # its own tables: yes
        await conn.fetch("SELECT * FROM pair_overview.pairs")
    assert await store.stream_version("pair-a") == 5
    assert (await store.verify()).ok


@pytest.mark.parametrize("statement", [
    "UPDATE events SET payload = '{}'::jsonb",
    "DELETE FROM events",
    "TRUNCATE events",
    "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload, metadata,"
    " recorded_at, prev_hash, hash) SELECT 'pair-z', 1, gen_random_uuid(), event_type, schema_version, payload,"
    " metadata, recorded_at, prev_hash, hash FROM events LIMIT 1",
    "UPDATE event_streams SET version = 0",
    "DELETE FROM event_streams",
    "DELETE FROM log_leaves",
    "UPDATE log_checkpoints SET root = ''",
    "DELETE FROM api_access",
    "ALTER TABLE events DISABLE TRIGGER ALL",
    "SET session_replication_role = replica",
    "DROP TABLE events",
])
async def test_the_application_role_cannot_change_the_log(store: PostgresEventStore, statement: str):
    await _three_streams(store)
    async with store.pool.acquire() as conn:
        with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.CantChangeRuntimeParamError)):
            async with conn.transaction():
                await conn.execute(ROLE)
                await conn.execute(statement)
    assert await store.pool.fetchval("SELECT count(*) FROM events") == 12
