"""Nobody but an event writer holds the projections back: a transaction left open for a minute by
someone else (here an idle session holding a transaction id) no longer freezes them, while an open
event writer still does (the no-skip rule) and `mentoring projections status` names it."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest
from typer.testing import CliRunner

from cli.main import app
from events.store import PostgresEventStore
from projections.audit_trail import AuditTrail
from tests.projections import lifecycles as story
from tests.projections.conftest import make_runner
from tests.projections.test_runner import _eventually, running

HOLD_SECONDS = 60.0
APPEND_FOR_SECONDS = 50.0  # then the last ten seconds leave every event time to be applied


async def applied_position(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT position FROM projection_checkpoints WHERE name = 'audit_trail'") or 0


async def test_an_unrelated_transaction_open_for_a_minute_does_not_freeze_the_projections(
        store: PostgresEventStore, database_url: str):
    runner = make_runner(store, database_url, [AuditTrail()])
    unrelated = await asyncpg.connect(database_url)
    lags: list[float] = []
    try:
        await unrelated.execute("BEGIN")
        await unrelated.fetchval("SELECT pg_current_xact_id()")  # it holds a transaction id, and waits
        opened = time.monotonic()
        async with running(runner):
            number = 0
            while time.monotonic() - opened < APPEND_FOR_SECONDS:
                number += 1
                appended = await story.write(store, story.PairStory(f"p-{number}").nominate())
                assert appended == 1
                position = await store.pool.fetchval("SELECT max(position) FROM events")
                started = time.monotonic()
                while await applied_position(store.pool) < position and time.monotonic() - opened < HOLD_SECONDS:
                    await asyncio.sleep(0.02)
                lags.append(time.monotonic() - started)
                # Every event appended so far was applied while the unrelated transaction stays open.
                assert await applied_position(store.pool) >= position, (number, lags[-1])
                await asyncio.sleep(max(0.0, 0.5 - lags[-1]))
            assert await unrelated.fetchval("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")
    finally:
        await unrelated.close()
    lags.sort()
    print(f"\n{len(lags)} events appended during a {HOLD_SECONDS:.0f} s unrelated transaction; applied after "
          f"p50 {lags[len(lags) // 2] * 1000:.0f} ms, p95 {lags[int(len(lags) * 0.95)] * 1000:.0f} ms, "
          f"max {lags[-1] * 1000:.0f} ms")
    assert len(lags) >= 50


async def test_an_open_event_writer_holds_readers_back_and_status_names_it(store: PostgresEventStore,
                                                                           database_url: str):
    runner = make_runner(store, database_url, [AuditTrail()])
    async with store.write_transaction() as writer:
        await writer.fetchval("SELECT pg_current_xact_id()")  # declared, with its id, not appended yet
        writer_pid = await writer.fetchval("SELECT pg_backend_pid()")
        await story.write(store, story.PairStory("p-after").nominate())
        with pytest.raises(TimeoutError):  # held back: the writer may still append below the new event
            await runner.run_until_caught_up(timeout=1.0)
        [trail] = [s for s in await runner.status() if s.name == "audit_trail"]
        assert trail.behind == 1 and trail.waiting_for is not None and trail.waiting_for.pid == writer_pid
        shown = await asyncio.to_thread(CliRunner().invoke, app, ["projections", "status", "--json",
                                                                  "--database-url", database_url])
        [trail_json] = [s for s in json.loads(shown.output) if s["name"] == "audit_trail"]
        assert trail_json["waiting_for"]["pid"] == writer_pid
        table = await asyncio.to_thread(CliRunner().invoke, app, ["projections", "status",
                                                                  "--database-url", database_url])
        assert f"oldest open event writer: pid {writer_pid}" in table.output
    async with running(runner):
        async def caught_up():
            return await applied_position(store.pool) == await store.pool.fetchval("SELECT max(position) FROM events")
        await _eventually(caught_up)
