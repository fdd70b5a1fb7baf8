"""The event store: a small interface and its PostgreSQL implementation (asyncpg).

    append(stream_id, expected_version, events, metadata)   optimistic, idempotent by event id
    read_stream(stream_id)                                   one stream, in version order
    read_all(after, limit)                                   everything after a checkpoint
    wait_for_events(timeout)                                 LISTEN/NOTIFY wake-up for readers
    verify()                                                 the hash chain, first bad event named

Catch-up readers follow a `Checkpoint` of (transaction id, position) and only ever see events of
transactions older than every event writer still open (see 0001_event_store.sql). A sequence
alone is not enough: positions are taken in one order and committed in another.

The readers' horizon (0015_writers_horizon.sql): an event writer declares itself before it has a
transaction id (a shared advisory lock, taken by `append_events`, or by `events_begin_write()`
first in a transaction that writes other rows too: `write_transaction()`), and readers wait only
for those. A transaction open elsewhere on the server (another database, an idle session, a
projection's own lock, a rebuild's swap) no longer holds every reader back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

import asyncpg
from opentelemetry import trace

from events.base import EventMetadata, EventRegistry, NewEvent, RecordedEvent, default_registry

NOTIFY_CHANNEL = "mentoring_events"
GENESIS_HASH = bytes(32)
_tracer = trace.get_tracer("mentoring.events")


class EventStoreError(Exception):
    """Base of the store's errors."""


class ConcurrencyError(EventStoreError):
    """Another writer appended to the stream first: re-read it and decide again."""

    def __init__(self, stream_id: str, expected: int, actual: int | None) -> None:
        self.stream_id, self.expected, self.actual = stream_id, expected, actual
        super().__init__(f"stream {stream_id} is at version {actual}, expected {expected}")


class EventIdConflict(EventStoreError):
    """An event id is already in the log with a different content: the caller reused an id."""


@dataclass(frozen=True, order=True)
class Checkpoint:
    """Where a catch-up reader stands: after the event at (transaction_id, position)."""

    transaction_id: int = 0
    position: int = 0


@dataclass(frozen=True)
class AppendResult:
    stream_id: str
    version: int  # the stream's version after this append
    positions: list[int]
    duplicate: bool  # true when every event was already recorded (a retried append)


@dataclass(frozen=True)
class TamperFinding:
    """The first event where the log no longer matches its hash chain."""

    position: int | None
    stream_id: str
    version: int | None
    event_id: UUID | None
    reason: str

    def __str__(self) -> str:
        where = f"position {self.position}" if self.position is not None else "stream head"
        return f"{where}, stream {self.stream_id}, version {self.version}: {self.reason}"


@dataclass(frozen=True)
class VerifyReport:
    events_checked: int
    streams_checked: int
    first_bad: TamperFinding | None

    @property
    def ok(self) -> bool:
        return self.first_bad is None


class EventStore(Protocol):
    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent],
        metadata: EventMetadata,
    ) -> AppendResult: ...

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]: ...

    async def read_all(self, after: Checkpoint, limit: int = 1000) -> list[RecordedEvent]: ...

    async def wait_for_events(self, timeout: float) -> bool: ...

    async def verify(self) -> VerifyReport: ...


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


EVENT_WRITER_LOCK = (0x6C6F6777, 1)  # 'logw': the advisory lock event writers hold (0015_writers_horizon.sql)

IDLE_IN_TRANSACTION_MS = 60_000
"""A transaction left idle this long is ended by the server: an event writer whose process froze
mid-append would otherwise hold every reader back for as long as its kernel answers TCP."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, statement_timeout_ms: int | None = None,
                      idle_in_transaction_ms: int = IDLE_IN_TRANSACTION_MS) -> asyncpg.Pool:
    server_settings = {"idle_in_transaction_session_timeout": str(idle_in_transaction_ms)}
    if statement_timeout_ms:
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init_connection,
                                     server_settings=server_settings)


_COLUMNS = """position, transaction_id::text::bigint AS transaction_id, stream_id, version,
              event_id, event_type, schema_version, payload, metadata, recorded_at"""

_APPEND = """SELECT out_position AS position, out_version AS version, out_duplicate AS duplicate
             FROM append_events($1, $2, $3, $4, $5, $6, $7)"""

# Only transactions older than the oldest one still open: their events can no longer change, so
# a reader that moves past them never misses one committed later at a lower position.
_READ_ALL = f"""SELECT {_COLUMNS} FROM events
    WHERE (transaction_id, position) > ($1::text::xid8, $2)
      AND transaction_id < (SELECT events_horizon())
    ORDER BY events.transaction_id, events.position
    LIMIT $3"""


_READ_STREAM_RANGE = f"""SELECT {_COLUMNS} FROM events
    WHERE stream_id = $1 AND (transaction_id, position) >= ($2::text::xid8, $3)
      AND (transaction_id, position) <= ($4::text::xid8, $5)
    ORDER BY events.transaction_id, events.position"""


_WAKE_DELAY = 0.01
_NOTIFY = f"SELECT set_config('synchronous_commit', 'off', true), pg_notify('{NOTIFY_CHANNEL}', '')"


class PostgresEventStore:
    """The event store over one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool, registry: EventRegistry | None = None) -> None:
        self._pool = pool
        self._registry = registry or default_registry
        self._listener: asyncpg.Connection | None = None
        self._wakeup = asyncio.Event()
        self._listening_lock = asyncio.Lock()
        self._wake_pending = False
        self._waker: asyncio.Task[None] | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    @asynccontextmanager
    async def write_transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that writes other rows and appends events (pass it to `append` as
        `conn`): it declares itself an event writer before its first write, as readers require
        (see "The readers' horizon" in the module's text)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT events_begin_write()")
            yield conn

    async def append(
        self, stream_id: str, expected_version: int, events: Sequence[NewEvent],
        metadata: EventMetadata, *, conn: asyncpg.Connection | None = None,
    ) -> AppendResult:
        """Append to one stream; on `conn`, inside the caller's transaction (it commits it)."""
        if not events:
            raise ValueError("append needs at least one event")
        meta = metadata.model_dump(mode="json", exclude_none=True)
        with _tracer.start_as_current_span(
            "event_store.append",
            attributes={"stream_id": stream_id, "expected_version": expected_version,
                        "event_count": len(events)},
        ) as span:
            if "trace_id" not in meta:
                # The trace of the caller (a workflow's activity, through Temporal's tracing
                # interceptor), so an auditor can go from an event to everything that led to it.
                context = span.get_span_context()
                if not context.is_valid:
                    context = trace.get_current_span().get_span_context()
                if context.is_valid:
                    meta["trace_id"] = format(context.trace_id, "032x")
            try:
                rows = await (conn or self._pool).fetch(
                    _APPEND,
                    stream_id, expected_version,
                    [e.event_id for e in events], [e.event_type for e in events],
                    [e.schema_version for e in events], [e.payload for e in events],
                    [meta] * len(events),
                )
            except asyncpg.PostgresError as exc:
                if exc.sqlstate == "ES409":
                    actual = getattr(exc, "detail", None)
                    raise ConcurrencyError(
                        stream_id, expected_version, int(actual) if actual else None
                    ) from None
                if exc.sqlstate == "ES422":
                    raise EventIdConflict(str(exc)) from None
                raise
        self._wake_readers()
        return AppendResult(
            stream_id=stream_id,
            version=max(r["version"] for r in rows),
            positions=[r["position"] for r in rows],
            duplicate=all(r["duplicate"] for r in rows),
        )

    def _recorded(self, row: asyncpg.Record) -> RecordedEvent:
        version, payload = self._registry.upcast(row["event_type"], row["schema_version"], row["payload"])
        return RecordedEvent.from_row(
            row["position"], row["transaction_id"], row["stream_id"], row["version"], row["event_id"],
            row["event_type"], version, row["schema_version"], payload, row["metadata"], row["recorded_at"])

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        with _tracer.start_as_current_span("event_store.read_stream", attributes={"stream_id": stream_id}):
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version",
                stream_id, from_version,
            )
        return [self._recorded(r) for r in rows]

    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
        """Several whole streams in one round trip (a programme and its pairs), each in order."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM events WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, version",
            list(stream_ids),
        )
        streams: dict[str, list[RecordedEvent]] = {s: [] for s in stream_ids}
        for row in rows:
            streams[row["stream_id"]].append(self._recorded(row))
        return streams

    async def stream_version(self, stream_id: str) -> int:
        version = await self._pool.fetchval(
            "SELECT version FROM event_streams WHERE stream_id = $1", stream_id
        )
        return version or 0

    async def read_all(self, after: Checkpoint, limit: int = 1000) -> list[RecordedEvent]:
        """Events committed after `after`, in commit-safe order; never one that could be skipped."""
        with _tracer.start_as_current_span("event_store.read_all", attributes={"limit": limit}):
            rows = await self._pool.fetch(
                _READ_ALL,
                str(after.transaction_id), after.position, limit,
            )
        return [self._recorded(r) for r in rows]

    async def read_all_raw(
        self, conn: asyncpg.Connection, after: Checkpoint, limit: int = 1000
    ) -> list[asyncpg.Record]:
        """The same read on a caller's connection (a projection's transaction), without upcasting."""
        return await conn.fetch(
            _READ_ALL,
            str(after.transaction_id), after.position, limit,
        )

    async def read_stream_raw(self, conn: asyncpg.Connection, stream_id: str, start: Checkpoint,
                              end: Checkpoint) -> list[asyncpg.Record]:
        """One stream's events from the one at `start` to the one at `end` (both included), in
        commit order, without upcasting: what a projection parked on that stream left unapplied."""
        return await conn.fetch(_READ_STREAM_RANGE, stream_id, str(start.transaction_id), start.position,
                                str(end.transaction_id), end.position)

    def to_recorded(self, row: asyncpg.Record) -> RecordedEvent:
        return self._recorded(row)

    # --- wake-up -------------------------------------------------------------------------------

    def _wake_readers(self) -> None:
        """Notify listeners after a commit, coalesced: at most one NOTIFY in flight per store.

        Not inside append_events: a notifying transaction holds a server-wide lock from its
        pre-commit to the end of its WAL flush, so notifying appends would commit one at a time.
        This NOTIFY commits without waiting for the flush (it is only a hint), so its hold of that
        lock is short, and one NOTIFY covers every append that committed while the previous was
        being sent.
        """
        self._wake_pending = True
        if self._waker is None or self._waker.done():
            self._waker = asyncio.create_task(self._send_wakeups())

    async def _send_wakeups(self) -> None:
        while self._wake_pending:
            await asyncio.sleep(_WAKE_DELAY)  # one NOTIFY for all the appends of the next moment
            self._wake_pending = False
            try:
                await self._pool.execute(_NOTIFY)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                return  # readers poll anyway

    async def start_listening(self) -> None:
        # One at a time: two readers of this store (two runners, say) would each take a
        # connection, and the one overwritten would never go back to the pool.
        async with self._listening_lock:
            await self._start_listening()

    async def _start_listening(self) -> None:
        if self._listener is not None and not self.listening:
            # The listening connection died (server restart, network): take a new one, and
            # report a wake-up, since notifications sent meanwhile were lost.
            with contextlib.suppress(asyncpg.InterfaceError):
                await self._pool.release(self._listener)
            self._listener = None
            self._wakeup.set()
        if self._listener is None:
            listener = await self._pool.acquire()
            try:
                await listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
            except BaseException:
                await self._pool.release(listener)
                raise
            self._listener = listener

    @property
    def listening(self) -> bool:
        """Whether this store holds a live LISTEN connection."""
        if self._listener is None:
            return False
        try:
            return not self._listener.is_closed()
        except asyncpg.InterfaceError:  # the pool took the broken connection back already
            return False

    def _on_notify(self, *_args: object) -> None:
        self._wakeup.set()

    async def wait_for_events(self, timeout: float) -> bool:
        """Wait until an append is notified or `timeout` passes; True if woken by an append.

        Only a hint: readers still catch up from their checkpoint, and poll on timeout, because a
        notification can arrive before the events it announces become readable.
        """
        await self.start_listening()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._wakeup.clear()

    async def close(self) -> None:
        if self._waker is not None:
            await asyncio.gather(self._waker, return_exceptions=True)
        if self._listener is not None:
            listener, alive, self._listener = self._listener, self.listening, None
            try:
                if alive:
                    await listener.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            finally:
                with contextlib.suppress(asyncpg.InterfaceError):  # already given back
                    await self._pool.release(listener)

    # --- tamper evidence -----------------------------------------------------------------------

    async def verify(self) -> VerifyReport:
        """Recompute every stream's hash chain; name the first bad event by global position."""
        with _tracer.start_as_current_span("event_store.verify"):
            async with self._pool.acquire() as conn, conn.transaction(
                isolation="repeatable_read", readonly=True
            ):
                return await _verify(conn)


# The hashed text is rebuilt here rather than by the stored function event_hash_input(), so that
# verification does not trust code that lives inside the database it checks.
# Streams in (after, upto]; NULL bounds are open.
_IN_RANGE = "($1::text IS NULL OR stream_id > $1) AND ($2::text IS NULL OR stream_id <= $2)"
_VERIFY_QUERY = f"""
SELECT position, stream_id, version, event_id, prev_hash, hash,
       convert_to(jsonb_build_array(position, stream_id, version, event_id, event_type,
           schema_version, payload, metadata,
           (extract(epoch FROM recorded_at) * 1000000)::bigint)::text, 'UTF8') AS hashed
FROM events WHERE {_IN_RANGE} ORDER BY stream_id, version
"""


async def _verify(conn: asyncpg.Connection, after: str | None = None, upto: str | None = None) -> VerifyReport:
    """The chains of the streams in (after, upto], the whole log by default (a background job
    checks it a range at a time: events/verify_jobs.py)."""
    heads = {r["stream_id"]: (r["version"], bytes(r["last_hash"])) for r in await conn.fetch(
        f"SELECT stream_id, version, last_hash FROM event_streams WHERE {_IN_RANGE}", after, upto)}
    findings: list[TamperFinding] = []
    checked = streams = 0
    current: str | None = None
    expected_version, prev, broken = 1, GENESIS_HASH, False

    def close_stream(stream_id: str, last_version: int, last_hash: bytes) -> None:
        head = heads.pop(stream_id, None)
        if head is None:
            findings.append(TamperFinding(None, stream_id, last_version, None,
                                          "stream has events but no head record"))
        elif not broken and head != (last_version, last_hash):
            findings.append(TamperFinding(
                None, stream_id, head[0], None,
                f"stream head says version {head[0]} but the log ends at version {last_version}:"
                " events at the end of the stream were removed or replaced"))

    last_version, last_hash = 0, GENESIS_HASH
    async for row in conn.cursor(_VERIFY_QUERY, after, upto, prefetch=2000):
        checked += 1
        if row["stream_id"] != current:
            if current is not None:
                close_stream(current, last_version, last_hash)
            current, expected_version, prev, broken = row["stream_id"], 1, GENESIS_HASH, False
            streams += 1
        if broken:
            last_version, last_hash = row["version"], bytes(row["hash"])
            continue
        reason = None
        if row["version"] != expected_version:
            reason = (f"expected version {expected_version} here: "
                      f"{row['version'] - expected_version} event(s) before it are missing")
        elif bytes(row["prev_hash"]) != prev:
            reason = "does not chain to the previous event of its stream (removed or reordered)"
        elif hashlib.sha256(prev + bytes(row["hashed"])).digest() != bytes(row["hash"]):
            reason = "content does not match its hash (altered)"
        if reason:
            findings.append(TamperFinding(row["position"], row["stream_id"], row["version"],
                                          row["event_id"], reason))
            broken = True  # the rest of this stream follows from the first break
        prev = bytes(row["hash"])
        expected_version = row["version"] + 1
        last_version, last_hash = row["version"], prev
    if current is not None:
        close_stream(current, last_version, last_hash)
    for stream_id, (version, _hash) in heads.items():
        if version > 0:
            findings.append(TamperFinding(None, stream_id, version, None,
                                          "stream head exists but all its events are missing"))
    first = min(findings, key=lambda f: (f.position is None, f.position or 0), default=None)
    return VerifyReport(events_checked=checked, streams_checked=streams, first_bad=first)


@asynccontextmanager
async def open_store(dsn: str, **pool_args: int) -> AsyncIterator[PostgresEventStore]:
    pool = await create_pool(dsn, **pool_args)
    store = PostgresEventStore(pool)
    try:
        yield store
    finally:
        await store.close()
        await pool.close()


def checkpoint_of(event: RecordedEvent) -> Checkpoint:
    return Checkpoint(event.transaction_id, event.position)


__all__ = [
    "AppendResult", "Checkpoint", "ConcurrencyError", "EventIdConflict", "EventStore",
    "EventStoreError", "PostgresEventStore", "TamperFinding", "VerifyReport", "checkpoint_of",
    "create_pool", "open_store",
]
