"""Each read model's checkpoint records the range of the log it applied (a count and a digest of the
event ids in commit order), kept through batches, the search for a bad event, a skip and a
rebuild; `mentoring audit prove projections` recomputes it from the log and names a read model
whose range no longer matches (an event deleted or forged in the range it applied)."""

from __future__ import annotations

import asyncio
import hashlib
import json

import asyncpg
from typer.testing import CliRunner

from cli.main import app
from events.store import PostgresEventStore
from projections import all_projections
from projections.audit_trail import AuditTrail
from projections.range_digest import check_ranges
from projections.rebuild import rebuild
from projections.runner import resume
from tests.projections import lifecycles as story
from tests.projections.conftest import Ledger, event_positions, make_runner


async def digest_of_the_log_up_to(pool: asyncpg.Pool, position: int) -> tuple[int, str]:
    """The range's digest as the README defines it, computed here apart from the project's code."""
    ids = await pool.fetch("""SELECT event_id FROM events
                              WHERE (transaction_id, position) <= (SELECT transaction_id, position
                                                                   FROM events WHERE position = $1)
                              ORDER BY transaction_id, position""", position)
    digest = bytes(32)
    for row in ids:
        digest = hashlib.sha256(digest + row["event_id"].bytes).digest()
    return len(ids), digest.hex()


async def recorded(pool: asyncpg.Pool, name: str) -> tuple[int, str]:
    row = await pool.fetchrow("SELECT applied_events, range_digest FROM projection_checkpoints WHERE name = $1",
                              name)
    return row["applied_events"], row["range_digest"].hex()


async def test_the_range_is_kept_through_batches_a_parked_stream_a_stopped_projection_and_a_skip(
        store: PostgresEventStore, database_url: str, ledger_tables):
    await story.write_all(store, [story.full_lifecycle("p1"), story.declined_by_mentee("p2")])
    positions = await event_positions(store.pool)
    poison = positions[12]

    # A parked stream: the checkpoint goes on, the range holds every event read, parked or not.
    runner = make_runner(store, database_url, [Ledger(poison_at=poison), AuditTrail()], batch_size=10)
    await runner.run_until_caught_up()
    whole = await digest_of_the_log_up_to(store.pool, positions[-1])
    assert await recorded(store.pool, "ledger") == whole
    await resume(store.pool, "ledger", skip=True)
    await runner.run_until_caught_up()
    assert await recorded(store.pool, "ledger") == whole

    # A stopped projection: its checkpoint stands before the bad event; a skip moves it onto it.
    await story.write(store, story.declined_by_mentor("p3"))
    p3 = [r["position"] for r in await store.pool.fetch(
        "SELECT position FROM events WHERE stream_id = 'pair-p3' ORDER BY position")]
    stopping = make_runner(store, database_url, [Ledger(poison_at=p3[0])], batch_size=10, max_parked=0)
    await stopping.run_until_caught_up()
    assert await recorded(store.pool, "ledger") == whole
    await resume(store.pool, "ledger", skip=True)
    assert await recorded(store.pool, "ledger") == await digest_of_the_log_up_to(store.pool, p3[0])
    await stopping.run_until_caught_up()

    checks = {c.name: c for c in await check_ranges(store.pool)}
    assert checks["ledger"].status == checks["audit_trail"].status == "ok", checks
    whole = await digest_of_the_log_up_to(store.pool, p3[-1])
    assert (checks["ledger"].log_events, checks["ledger"].log_digest) == whole == await recorded(store.pool, "ledger")
    assert checks["audit_trail"].log_events == whole[0] - len(p3)  # it did not run since p3


async def test_a_rebuild_records_the_same_range_and_the_check_passes(seeded, store: PostgresEventStore,
                                                                       database_url: str):
    names = [p.name for p in all_projections()]
    before = {name: await recorded(store.pool, name) for name in names}
    assert len(set(before.values())) == 1  # every read model has applied the whole log
    await rebuild(store, all_projections(), dsn=database_url, batch_size=7)
    assert {name: await recorded(store.pool, name) for name in names} == before
    assert {c.status for c in await check_ranges(store.pool)} == {"ok"}


async def test_an_event_deleted_or_forged_in_an_applied_range_is_named(seeded, store: PostgresEventStore,
                                                                       database_url: str):
    proved = await asyncio.to_thread(CliRunner().invoke, app, ["audit", "prove", "projections", "--json",
                                                               "--database-url", database_url])
    assert proved.exit_code == 0, proved.output
    assert {c["status"] for c in json.loads(proved.output)} == {"ok"}
    in_range = await store.pool.fetchrow("SELECT * FROM events ORDER BY position OFFSET 5 LIMIT 1")

    async with store.pool.acquire() as conn:  # as a superuser would: the append-only triggers off
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("DELETE FROM events WHERE position = $1", in_range["position"])
        await conn.execute("RESET session_replication_role")
    caught = await asyncio.to_thread(CliRunner().invoke, app, ["audit", "prove", "projections", "--json",
                                                               "--database-url", database_url])
    assert caught.exit_code == 1
    checks = json.loads(caught.output)
    assert {c["status"] for c in checks} == {"differs"}
    assert all(c["log_events"] == c["recorded_events"] - 1 for c in checks)

    # Put back, the range is whole again; a forged event slipped in before the checkpoints is named.
    async with store.pool.acquire() as conn:
        await conn.execute("SET session_replication_role = replica")
        columns = list(in_range.keys())
        await conn.execute(
            f"INSERT INTO events ({', '.join(columns)}) "
            f"VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})", *in_range.values())
        assert {c.status for c in await check_ranges(store.pool)} == {"ok"}
        await conn.execute(
            """INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload, metadata,
                                   transaction_id, recorded_at, prev_hash, hash)
               SELECT stream_id, version + 100, gen_random_uuid(), event_type, schema_version, payload, metadata,
                      transaction_id, recorded_at, prev_hash, hash FROM events WHERE position = $1""",
            in_range["position"])
        await conn.execute("RESET session_replication_role")
    table = await asyncio.to_thread(CliRunner().invoke, app, ["audit", "prove", "projections",
                                                              "--database-url", database_url])
    assert table.exit_code == 1 and "differs" in table.output


async def test_read_models_built_before_ranges_are_rebuilt_once_at_start(seeded, store: PostgresEventStore,
                                                                          database_url: str):
    """As after an upgrade: a checkpoint without a range, its rows folded by the older lifecycle
    (no timers noted, deadlines named the old way). The worker's start rebuilds it, once."""
    from projections import rebuild_those_built_before_ranges
    from settings import Settings

    async with store.pool.acquire() as conn:
        await conn.execute("UPDATE projection_checkpoints SET applied_events = NULL, range_digest = NULL "
                           "WHERE name = 'pair_overview'")
        await conn.execute("UPDATE pair_overview.pairs SET next_deadline_kind = 'nomination lapses', "
                           "facts = facts - 'timers_fired'")
    settings = Settings(database_url=database_url)
    assert await rebuild_those_built_before_ranges(store.pool, store, settings) == ["pair_overview"]
    assert {c.name: c.status for c in await check_ranges(store.pool)}["pair_overview"] == "ok"
    kinds = {r["next_deadline_kind"] for r in await store.pool.fetch("SELECT next_deadline_kind FROM pair_overview.pairs")}
    assert "nomination lapses" not in kinds
    assert await store.pool.fetchval("SELECT bool_and(facts ? 'timers_fired') FROM pair_overview.pairs")
    assert await rebuild_those_built_before_ranges(store.pool, store, settings) == []
