"""Rebuild without downtime: shadow build from position zero, atomic swap, same rows as live."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from events.store import PostgresEventStore
from projections import all_projections
from projections.rebuild import RebuildError, rebuild
from projections.runner import REBUILD_LOCK_CLASS, lock_key, resume
from tests.projections import lifecycles as story
from tests.projections.conftest import (
    Ledger,
    event_positions,
    ledger_state,
    make_runner,
    snapshot_all,
)


def _stories() -> list[story.PairStory]:
    makers = story.STORIES
    return [makers[i % len(makers)](f"p{i}", mentor_id=f"M{i % 4}", mentee_id=f"S{i}",
                                    programme_id=f"prog-{i % 2}") for i in range(14)]


async def _write_interleaved(store: PostgresEventStore, stories: list[story.PairStory],
                             between=None) -> None:
    """Write the stories a few steps at a time, round robin, like concurrent workflows do."""
    cursor = dict.fromkeys(range(len(stories)), 0)
    while cursor:
        for i in list(cursor):
            start = cursor[i]
            await story.write(store, stories[i], from_step=start, to_step=start + 3)
            cursor[i] = start + 3
            if cursor[i] >= len(stories[i].steps):
                del cursor[i]
        if between is not None:
            await between()


async def test_rebuilt_read_models_equal_the_incrementally_built_ones(
        store: PostgresEventStore, database_url: str):
    # Incremental: small batches, caught up again and again while the log grows.
    runner = make_runner(store, database_url, batch_size=3)
    await _write_interleaved(store, _stories(), between=runner.run_until_caught_up)
    await runner.run_until_caught_up()
    incremental = await snapshot_all(store.pool)
    assert sum(len(rows) for model in incremental.values() for rows in model.values()) > 400
    indexes_before = await _indexes(store.pool)
    assert any(not unique for _schema, _table, unique, _columns in indexes_before)  # the deferred kind

    progress: list[tuple[int, int]] = []
    report = await rebuild(store, all_projections(), dsn=database_url, batch_size=1000,
                           on_progress=lambda done, total: progress.append((done, total)))
    rebuilt = await snapshot_all(store.pool)
    for name in incremental:
        for table in incremental[name]:
            assert rebuilt[name][table] == incremental[name][table], f"{name}.{table}"

    events = await store.pool.fetchval("SELECT count(*) FROM events")
    assert report.events == events and progress[0] == (0, events) and progress[-1][0] == events
    statuses = await runner.status()
    assert {(s.status, s.behind) for s in statuses} == {("running", 0)}
    leftovers = await store.pool.fetchval(
        "SELECT count(*) FROM pg_namespace WHERE nspname ~ '^(rebuild|retired)_'")
    assert leftovers == 0
    # The lookup indexes, dropped while the shadows filled, are all back, on the same columns.
    assert await _indexes(store.pool) == indexes_before


async def _indexes(pool: asyncpg.Pool) -> list[tuple[str, str, bool, str]]:
    """Every read model's indexes: schema, table, unique or not, and the indexed columns."""
    rows = await pool.fetch(
        """SELECT n.nspname AS schema, t.relname AS table, i.indisunique AS unique,
                  regexp_replace(pg_get_indexdef(i.indexrelid), '^.* USING ', '') AS columns
             FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = ANY($1::text[])""", [p.name for p in all_projections()])
    return sorted((r["schema"], r["table"], r["unique"], r["columns"]) for r in rows)


async def test_rebuild_while_live_runner_and_appends_go_on(store: PostgresEventStore,
                                                           database_url: str):
    stories = _stories()
    await story.write_all(store, stories[:7])
    runner = make_runner(store, database_url, batch_size=20)
    task = asyncio.create_task(runner.run_forever())
    try:
        appends = asyncio.create_task(_write_interleaved(store, stories[7:]))
        await rebuild(store, all_projections(), dsn=database_url, batch_size=50)
        await appends
        total = await store.pool.fetchval("SELECT count(*) FROM events")
        for _ in range(500):
            if await store.pool.fetchval("SELECT count(*) FROM audit_trail.entries") == total \
                    and all(s.behind == 0 for s in await runner.status()):
                break
            await asyncio.sleep(0.02)
        live = await snapshot_all(store.pool)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # The live runner went on after the swap without applying anything twice or losing it:
    # a second rebuild from scratch gives exactly the same rows.
    await rebuild(store, all_projections(), dsn=database_url)
    assert await snapshot_all(store.pool) == live


async def test_rebuild_skips_what_was_skipped_live(store: PostgresEventStore, database_url: str,
                                                   ledger_tables):
    await story.write(store, story.full_lifecycle("p1"))
    positions = await event_positions(store.pool)
    poisoned = Ledger(poison_at=positions[5])
    runner = make_runner(store, database_url, [poisoned])
    await runner.run_until_caught_up()
    await resume(store.pool, "ledger", skip=True)
    await runner.run_until_caught_up()
    live = await ledger_state(store.pool)
    await rebuild(store, [poisoned], dsn=database_url)
    assert await ledger_state(store.pool) == live
    assert positions[5] not in live[0] and live[1] == len(positions) - 1


async def test_rebuild_leaves_a_parked_stream_waiting_as_live(store: PostgresEventStore, database_url: str,
                                                             ledger_tables):
    await story.write_all(store, [story.full_lifecycle("p1"), story.declined_by_mentee("p2")])
    p1 = [r["position"] for r in await store.pool.fetch(
        "SELECT position FROM events WHERE stream_id = 'pair-p1' ORDER BY position")]
    poisoned = Ledger(poison_at=p1[5])
    runner = make_runner(store, database_url, [poisoned])
    assert (await runner.run_until_caught_up())[0].parked == 1
    live = await ledger_state(store.pool)
    await rebuild(store, [poisoned], dsn=database_url)
    assert await ledger_state(store.pool) == live and p1[5] not in live[0] and p1[4] in live[0]
    assert (await runner.run_until_caught_up())[0].parked == 1  # still waiting for resume


async def test_a_rebuild_refuses_to_swap_when_a_stream_was_parked_meanwhile(
        store: PostgresEventStore, database_url: str, ledger_tables):
    """The rebuilt read model would hold events the live one parked (or miss ones it resumed)."""
    await story.write(store, story.full_lifecycle("p1"))
    positions = await event_positions(store.pool)
    await make_runner(store, database_url, [Ledger()]).run_until_caught_up()
    live = await ledger_state(store.pool)

    gated = Ledger(gate_at=positions[5])  # the rebuild's fill stops there until the gate opens
    rebuilding = asyncio.create_task(rebuild(store, [gated], dsn=database_url, batch_size=10))
    await asyncio.wait_for(gated.reached_gate.wait(), 30)
    failure = await store.pool.fetchval(
        """INSERT INTO projection_failures (projection, position, transaction_id, event_id, event_type, error)
           SELECT 'ledger', position, transaction_id::text::bigint, event_id, event_type, 'meanwhile'
             FROM events WHERE position = $1 RETURNING id""", positions[20])
    await store.pool.execute(
        """INSERT INTO projection_parked (projection, stream_id, position, transaction_id, event_id, event_type,
                                          error, failure_id)
           SELECT 'ledger', stream_id, position, transaction_id::text::bigint, event_id, event_type, 'meanwhile', $2
             FROM events WHERE position = $1""", positions[20], failure)
    gated.gate.set()
    with pytest.raises(RebuildError, match="parked or resumed while the rebuild ran"):
        await rebuilding
    assert await ledger_state(store.pool) == live  # the live read model is untouched


async def test_failed_rebuild_names_the_event_and_leaves_live_untouched(
        store: PostgresEventStore, database_url: str, ledger_tables):
    await story.write(store, story.declined_by_mentee("p1"))
    positions = await event_positions(store.pool)
    await make_runner(store, database_url, [Ledger()]).run_until_caught_up()
    live = await ledger_state(store.pool)
    with pytest.raises(RebuildError, match=f"position {positions[2]}"):
        await rebuild(store, [Ledger(poison_at=positions[2])], dsn=database_url)
    assert await ledger_state(store.pool) == live
    assert await store.pool.fetchval(
        "SELECT count(*) FROM pg_namespace WHERE nspname ~ '^(rebuild|retired)_'") == 0


async def test_a_second_rebuild_of_the_same_projection_is_refused(store: PostgresEventStore,
                                                                   database_url: str):
    other = await asyncpg.connect(database_url)
    try:
        await other.execute("SELECT pg_advisory_lock($1, $2)", REBUILD_LOCK_CLASS,
                            lock_key("audit_trail"))
        with pytest.raises(RebuildError, match="already running"):
            await rebuild(store, all_projections(), dsn=database_url)
    finally:
        await other.close()
