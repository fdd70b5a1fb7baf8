"""Fixtures for the projection tests: a runner on the test database, and read-model snapshots."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import pytest

from events.store import PostgresEventStore
from projections import all_projections
from projections.base import Projection, quoted
from projections.runner import ProjectionRunner


def make_runner(store: PostgresEventStore, database_url: str,
                projections: Sequence[Projection] | None = None, **options) -> ProjectionRunner:
    """A runner tuned for tests: short poll, lock-retry and reconnect intervals."""
    settings = {"poll_interval": 0.1, "lock_retry_interval": 0.05, "reconnect_delay": 0.05,
                **options}
    return ProjectionRunner(store, projections if projections is not None else all_projections(),
                            dsn=database_url, **settings)


@pytest.fixture
def runner(store: PostgresEventStore, database_url: str) -> ProjectionRunner:
    return make_runner(store, database_url)


async def snapshot(db: asyncpg.Pool | asyncpg.Connection, schema: str,
                   tables: Sequence[str]) -> dict[str, list[tuple]]:
    """Every row of a read model's tables, in a stable order, for row-for-row comparisons."""
    result = {}
    for table in tables:
        rows = await db.fetch(f"SELECT * FROM {quoted(schema)}.{quoted(table)}")
        result[table] = sorted((tuple(r.values()) for r in rows), key=repr)
    return result


async def snapshot_all(db: asyncpg.Pool | asyncpg.Connection,
                       projections: Sequence[Projection] | None = None) -> dict[str, dict]:
    return {p.name: await snapshot(db, p.name, p.tables)
            for p in (projections if projections is not None else all_projections())}


class Ledger(Projection):
    """A test projection that makes double or lost applications visible.

    Each event adds a row keyed by its position (a second application of the same event breaks
    the primary key) and adds one to a counter (which must end equal to the number of events).
    `gate_at`: block inside the transaction, after writing the batch's earlier events, until the
    test opens the gate (once). `poison_at`: raise when the event at that position (or one of
    those positions) is applied.
    """

    name = "ledger"
    tables = ("applied", "counter")

    def __init__(self, *, gate_at: int | None = None, poison_at: int | set[int] | None = None) -> None:
        import asyncio

        self.gate_at, self.poison_at = gate_at, poison_at
        self.reached_gate, self.gate = asyncio.Event(), asyncio.Event()

    def poisoned(self, position: int) -> bool:
        return position in self.poison_at if isinstance(self.poison_at, set) else position == self.poison_at

    async def apply_batch(self, conn, events) -> None:
        for event in events:
            if self.poisoned(event.position):
                raise ValueError(f"cannot make sense of event {event.position}")
            if event.position == self.gate_at and not self.gate.is_set():
                self.reached_gate.set()
                await self.gate.wait()
            await conn.execute("INSERT INTO applied (position, event_id) VALUES ($1, $2)",
                               event.position, event.event_id)
            # Everything comes from events, even the counter's row (a rebuild starts empty).
            await conn.execute("INSERT INTO counter (id, n) VALUES (1, 1) "
                               "ON CONFLICT (id) DO UPDATE SET n = counter.n + 1")


@pytest.fixture
async def ledger_tables(store: PostgresEventStore) -> None:
    await store.pool.execute("""
        CREATE SCHEMA ledger;
        CREATE TABLE ledger.applied (position bigint PRIMARY KEY, event_id uuid NOT NULL);
        CREATE TABLE ledger.counter (id integer PRIMARY KEY, n integer NOT NULL);
    """)


async def ledger_state(db) -> tuple[list[int], int]:
    positions = [r["position"] for r in await db.fetch(
        "SELECT position FROM ledger.applied ORDER BY position")]
    return positions, await db.fetchval("SELECT coalesce(max(n), 0) FROM ledger.counter")


async def event_positions(db) -> list[int]:
    return [r["position"] for r in await db.fetch("SELECT position FROM events ORDER BY position")]


@pytest.fixture
async def seeded(store: PostgresEventStore, database_url: str):
    """A small but complete database: programmes A and B, every kind of ending, people's names."""
    from tests.projections import lifecycles as story

    stories = {
        "p-full": story.full_lifecycle("p-full"),
        "p-declined": story.declined_by_mentee("p-declined", mentor_id="E101", mentee_id="E901"),
        "p-expired": story.expired_invitation("p-expired", mentor_id="E102", mentee_id="E902"),
        "p-withdrawn": story.withdrawn_during_sessions("p-withdrawn", mentor_id="E103",
                                                       mentee_id="E903"),
        "p-lapsed": story.lapsed_after_risk("p-lapsed", mentor_id="E104", mentee_id="E904"),
        "p-other": story.full_lifecycle("p-other", programme_id="prog-B", mentor_id="E105",
                                        mentee_id="E905"),
    }
    await story.write_all(store, list(stories.values()))
    await store.pool.executemany(
        "INSERT INTO people (employee_id, display_name, email) VALUES ($1, $2, $3)",
        [("E100", "Léa Junior", "lea@example.test"), ("E900", "Paul Senior", "paul@example.test"),
         ("hr-007", "Hana Ressources", "hana@example.test")])
    await make_runner(store, database_url).run_until_caught_up()
    return stories
