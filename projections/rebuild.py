"""Rebuild read models without downtime: fill fresh shadow tables from position zero, swap them in.

1. Each projection gets a shadow schema `rebuild_<name>_<n>` holding empty copies of its tables
   (`LIKE ... INCLUDING ALL`: same columns, defaults, constraints and indexes).
2. The whole log is read once, batch by batch, and each batch applied to every shadow. Events
   skipped earlier with `resume --skip` are skipped again, and the events of a parked stream
   from the one it stopped on wait for `resume` as they do live, so the result matches the live
   model (resume a parked stream before or after a rebuild, not during it).
   Meanwhile the live read models keep serving and following the log.
3. The swap is one transaction: lock the projections' checkpoint rows (a live runner waits at
   most one batch), apply to the shadows what was appended meanwhile, rename each live schema to
   `retired_<name>_<n>` and its shadow to the live name, set the checkpoint to where the shadow
   stands and the status to running. Queries see the old tables until the commit, then the new.
4. The retired schemas are dropped after the commit.

A failed rebuild drops its shadows and leaves the live read models untouched. Privileges granted
table by table are not copied by LIKE: grant read access through the schema's default
privileges (ALTER DEFAULT PRIVILEGES ... ON TABLES and ON SCHEMAS), which new ones receive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import asyncpg

from events.store import Checkpoint, PostgresEventStore
from projections.base import Projection, quoted
from projections.connections import connect, disconnect
from projections.range_digest import START, AppliedRange
from projections.runner import REBUILD_LOCK_CLASS, Batch, Failure, apply_batch, lock_key, register

Progress = Callable[[int, int], None]  # (events done, events in the log when we started)


class RebuildError(Exception):
    """The rebuild could not finish; the live read models are unchanged."""


@dataclass(frozen=True)
class RebuildReport:
    projections: list[str]
    events: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def rebuild(
    store: PostgresEventStore, projections: Sequence[Projection], *, dsn: str | None = None,
    batch_size: int = 5000, on_progress: Progress | None = None,
) -> RebuildReport:
    """Rebuild `projections` from the whole log into shadows, then swap them in atomically."""
    if not projections:
        raise RebuildError("no projection to rebuild")
    names = sorted(p.name for p in projections)
    started = time.perf_counter()
    conn = await connect(store, dsn)
    shadows: dict[str, str] = {}
    try:
        for name in names:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)",
                                       REBUILD_LOCK_CLASS, lock_key(name)):
                raise RebuildError(f"a rebuild of {name} is already running elsewhere")
        await register(conn, names)
        suffix = str(time.time_ns() // 1_000_000)
        deferred: list[str] = []
        for projection in projections:
            await _drop_leftovers(conn, projection.name)
            shadows[projection.name] = await _create_shadow(conn, projection, suffix)
            deferred += await _defer_lookup_indexes(conn, shadows[projection.name])
        parked_at_start = await _parked_streams(conn, names)
        skipped = await _not_applied(conn, names, parked_at_start)
        total = await conn.fetchval("SELECT count(*) FROM events")

        if on_progress:
            on_progress(0, total)
        done, checkpoint, applied = await _fill_shadows(
            store, dsn, conn, projections, shadows, skipped, batch_size,
            (lambda n: on_progress(n, max(total, n))) if on_progress else None)
        await _build_indexes(store, dsn, deferred)
        for projection in projections:  # fresh statistics before queries meet the new tables
            for table in projection.tables:
                await conn.execute(f"ANALYZE {quoted(shadows[projection.name])}.{quoted(table)}")

        retired, late = await _swap(conn, store, projections, shadows, skipped, parked_at_start, checkpoint,
                                    applied, batch_size, suffix)
        shadows.clear()  # they are live now
        for schema in retired:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(schema)} CASCADE")
        done += late
        if on_progress:
            on_progress(done, done)
        return RebuildReport(names, done, time.perf_counter() - started)
    finally:
        try:
            for schema in shadows.values():
                await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(schema)} CASCADE")
        finally:
            await disconnect(store, dsn, conn)


async def _fill_shadows(
    store: PostgresEventStore, dsn: str | None, reader: asyncpg.Connection,
    projections: Sequence[Projection], shadows: dict[str, str], skipped: dict[str, NotApplied],
    batch_size: int, on_progress: Callable[[int], None] | None,
) -> tuple[int, Checkpoint, AppliedRange]:
    """Apply the whole log to the shadows; the events applied, where the shadows stand, and the
    range's digest.

    The log is read once, a batch ahead, and decoded once; each projection applies it on its own
    connection, so PostgreSQL writes one shadow while Python folds the next. Their commits need
    not wait for the disk: the swap's own commit, made durable, carries them all.
    """
    workers = {p.name: await connect(store, dsn) for p in projections}
    try:
        for worker in workers.values():
            await worker.execute("SET synchronous_commit TO off")
        done, checkpoint, applied = 0, Checkpoint(), START
        ahead = asyncio.create_task(store.read_all_raw(reader, checkpoint, batch_size))
        while rows := await ahead:
            checkpoint = Checkpoint(rows[-1]["transaction_id"], rows[-1]["position"])
            applied = applied.extended(r["event_id"] for r in rows)
            # A short batch is the head of the log: stop there, or a steady flow of appends
            # would keep us reading for ever. The swap applies what came since.
            at_head = len(rows) < batch_size
            if not at_head:
                ahead = asyncio.create_task(store.read_all_raw(reader, checkpoint, batch_size))
            batch = Batch(store, rows)
            outcomes = await asyncio.gather(*(
                _apply_to_shadow(workers[p.name], p, shadows[p.name], batch, skipped[p.name])
                for p in projections), return_exceptions=True)
            failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failed is not None:
                if not at_head:
                    await asyncio.gather(ahead, return_exceptions=True)
                raise failed
            done += len(rows)
            if on_progress:
                on_progress(done)
            if at_head:
                break
        return done, checkpoint, applied
    finally:
        for worker in workers.values():
            await disconnect(store, dsn, worker)


async def _apply_to_shadow(conn: asyncpg.Connection, projection: Projection, shadow: str,
                           batch: Batch, not_applied: NotApplied) -> None:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL search_path TO {quoted(shadow)}, public")
        failure = await not_applied.apply(conn, projection, batch)
        if failure is not None:
            raise RebuildError(
                f"projection {projection.name} cannot apply the {failure.event_type} event at "
                f"position {failure.position} ({failure.error}); fix the projection, or skip the "
                "event on the live projection first (`mentoring projections resume --skip`)")


async def _apply_next_batch(
    conn: asyncpg.Connection, store: PostgresEventStore, projections: Sequence[Projection],
    shadows: dict[str, str], skipped: dict[str, NotApplied], after: Checkpoint, batch_size: int,
) -> tuple[list[asyncpg.Record], Checkpoint]:
    """Apply the batch after `after` to every shadow on one connection (inside the swap)."""
    rows = await store.read_all_raw(conn, after, batch_size)
    if not rows:
        return [], after
    batch = Batch(store, rows)
    for projection in projections:
        async with conn.transaction():  # a savepoint per projection: a failure undoes only its own
            await conn.execute(
                f"SET LOCAL search_path TO {quoted(shadows[projection.name])}, public")
            failure = await skipped[projection.name].apply(conn, projection, batch)
            if failure is not None:
                raise RebuildError(
                    f"projection {projection.name} cannot apply the {failure.event_type} event "
                    f"at position {failure.position} ({failure.error})")
    return rows, Checkpoint(rows[-1]["transaction_id"], rows[-1]["position"])


async def _swap(
    conn: asyncpg.Connection, store: PostgresEventStore, projections: Sequence[Projection],
    shadows: dict[str, str], skipped: dict[str, NotApplied], parked_at_start: set[tuple[str, str, int, int, int]],
    checkpoint: Checkpoint, applied: AppliedRange, batch_size: int, suffix: str,
) -> tuple[list[str], int]:
    """Swap the shadows in; the retired schemas and how many late events were applied."""
    retired, late = [], 0
    async with conn.transaction():
        # In name order, like every other taker of these rows, so two swaps cannot deadlock.
        await conn.execute(
            """SELECT name FROM projection_checkpoints WHERE name = ANY($1::text[])
               ORDER BY name FOR UPDATE""", [p.name for p in projections])
        if await _parked_streams(conn, [p.name for p in projections]) != parked_at_start:
            raise RebuildError("streams were parked or resumed while the rebuild ran, so the rebuilt read "
                               "models would not match what the live ones applied: run the rebuild again")
        while True:  # what was appended while we filled the shadows, up to the head
            rows, checkpoint = await _apply_next_batch(
                conn, store, projections, shadows, skipped, checkpoint, batch_size)
            late += len(rows)
            applied = applied.extended(r["event_id"] for r in rows)
            if len(rows) < batch_size:
                break  # what comes later, the live runner applies after the swap
        for projection in projections:
            live, old = projection.name, f"retired_{projection.name}_{suffix}"
            await conn.execute(f"ALTER SCHEMA {quoted(live)} RENAME TO {quoted(old)}")
            await conn.execute(
                f"ALTER SCHEMA {quoted(shadows[projection.name])} RENAME TO {quoted(live)}")
            retired.append(old)
        await conn.execute(
            """UPDATE projection_checkpoints SET transaction_id = $2, position = $3,
                      status = 'running', updated_at = now(), applied_events = $4, range_digest = $5
               WHERE name = ANY($1::text[])""",
            [p.name for p in projections], checkpoint.transaction_id, checkpoint.position,
            applied.events, applied.digest)
        # A failure the rebuilt code got past is settled by the rebuild.
        await conn.execute(
            """UPDATE projection_failures SET resolved_at = now(), resolution = 'rebuilt',
                      resolved_by = 'rebuild'
               WHERE projection = ANY($1::text[]) AND resolved_at IS NULL
              AND NOT EXISTS (SELECT FROM projection_parked p WHERE p.failure_id = projection_failures.id)""",
            [p.name for p in projections])
    return retired, late


async def _create_shadow(conn: asyncpg.Connection, projection: Projection, suffix: str) -> str:
    shadow = f"rebuild_{projection.name}_{suffix}"
    await conn.execute(f"CREATE SCHEMA {quoted(shadow)}")
    for table in projection.tables:
        await conn.execute(
            f"CREATE TABLE {quoted(shadow)}.{quoted(table)} "
            f"(LIKE {quoted(projection.name)}.{quoted(table)} INCLUDING ALL)")
    return shadow


async def _defer_lookup_indexes(conn: asyncpg.Connection, shadow: str) -> list[str]:
    """Drop the shadow's indexes that only serve queries, and return the statements that build
    them again. Built once over the filled tables, they cost a fraction of keeping them up to date
    row by row; the indexes behind constraints stay, as the upserts need them."""
    rows = await conn.fetch(
        """SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
             FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = $1 AND NOT i.indisunique
              AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid)""", shadow)
    for row in rows:
        await conn.execute(f"DROP INDEX {row['name']}")
    return [row["definition"] for row in rows]


async def _build_indexes(store: PostgresEventStore, dsn: str | None, definitions: list[str]) -> None:
    """Build the deferred indexes, two at a time (one per core of a small server)."""
    pending = list(definitions)

    async def builder() -> None:
        conn = await connect(store, dsn)
        try:
            await conn.execute("SET maintenance_work_mem TO '256MB'")
            while pending:
                await conn.execute(pending.pop())
        finally:
            await disconnect(store, dsn, conn)

    await asyncio.gather(*(builder() for _ in range(min(2, len(pending)))))


async def _drop_leftovers(conn: asyncpg.Connection, name: str) -> None:
    """Schemas left by a rebuild that crashed (we hold the rebuild lock: nobody else uses them)."""
    leftovers = await conn.fetch(
        "SELECT nspname FROM pg_namespace WHERE nspname ~ ('^(rebuild|retired)_' || $1 || '_[0-9]+$')",
        name)
    for row in leftovers:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(row['nspname'])} CASCADE")


async def _parked_streams(conn: asyncpg.Connection, names: list[str]) -> set[tuple[str, str, int, int, int]]:
    rows = await conn.fetch("""SELECT projection, stream_id, transaction_id, position, failure_id
                                 FROM projection_parked WHERE projection = ANY($1::text[])""", names)
    return {(r["projection"], r["stream_id"], r["transaction_id"], r["position"], r["failure_id"]) for r in rows}


@dataclass(frozen=True)
class NotApplied:
    """What the live projection did not apply, and the rebuilt one must not either."""

    skipped: frozenset = frozenset()  # event ids skipped with resume --skip (recorded)
    waiting: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # parked streams, from where

    async def apply(self, conn: asyncpg.Connection, projection: Projection, batch: Batch) -> Failure | None:
        _last, failure = await apply_batch(conn, projection, batch, self.skipped, self.waiting)
        return failure


async def _not_applied(conn: asyncpg.Connection, names: list[str],
                       parked: set[tuple[str, str, int, int, int]]) -> dict[str, NotApplied]:
    skipped = await _skipped_events(conn, names)
    waiting = _waiting(parked)
    return {name: NotApplied(skipped.get(name, frozenset()), waiting.get(name, {})) for name in names}


async def _skipped_events(conn: asyncpg.Connection, names: list[str]) -> dict[str, frozenset]:
    """Per projection, the events the live one skipped (recorded)."""
    rows = await conn.fetch(
        """SELECT projection, array_agg(event_id) AS ids FROM projection_failures
           WHERE projection = ANY($1::text[]) AND resolution = 'skipped' GROUP BY projection""",
        names)
    return {r["projection"]: frozenset(r["ids"]) for r in rows}


def _waiting(parked: set[tuple[str, str, int, int, int]]) -> dict[str, dict[str, tuple[int, int]]]:
    """Per projection, its parked streams and the event each stopped on: from there, they wait for
    `resume`, rebuilt or not."""
    waiting: dict[str, dict[str, tuple[int, int]]] = {}
    for projection, stream, transaction_id, position, _failure in parked:
        waiting.setdefault(projection, {})[stream] = (transaction_id, position)
    return waiting


@contextmanager
def rich_progress(description: str = "rebuilding") -> Iterator[Progress]:
    """A progress bar with events/s and the time left, as an `on_progress` callback."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("events"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
        TextColumn("left"), TimeRemainingColumn(),
    ) as bar:
        task = bar.add_task(description, total=None, rate="")
        started = time.perf_counter()

        def update(done: int, total: int) -> None:
            elapsed = time.perf_counter() - started
            rate = f"{done / elapsed:,.0f}/s" if elapsed > 0 and done else ""
            bar.update(task, completed=done, total=total, rate=rate)

        yield update
