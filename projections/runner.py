"""The projection runner: catches each projection up from its checkpoint, then follows the log live.

- One transaction per batch, on the projection's own connection: read the events after the
  checkpoint, apply them, move the checkpoint. A crash anywhere rolls back all three, so an event
  is never applied twice nor lost.
- One process runs a projection at a time: a session advisory lock per projection, held by the
  very connection that does the work. If it dies, the lock goes with it (and so does any half
  applied batch); the other runners retry the lock every few seconds and the first to get it
  carries on from the committed checkpoint.
- Fail-over: a process that is frozen rather than dead (SIGSTOP, a stalled host) keeps its
  session, and the lock, for as long as its kernel answers TCP. So the holder renews a lease
  (`projection_leases`) every third of `lease_seconds`, from its pool; a runner that finds the
  lease expired ends the holder's session (`pg_terminate_backend`) and takes over. The dedicated
  connections also ask the server for short TCP keepalives, for hosts that vanish.
- An event a projection cannot apply parks its stream, for that projection only: the stream's
  later events wait with it (`projection_parked`, and the history in `projection_failures`), and
  every other stream goes on. `resume` asks the runner to apply the parked stream again (after a
  fix), or to skip the event it stopped on (recorded). When more than `max_parked` streams would
  be parked, the projection itself is at fault, not the events: it stops (`failed`) with its
  checkpoint just before the event, and waits for `resume` as a whole.
- Live, LISTEN/NOTIFY wakes the runner; a poll interval covers notifications lost or early
  (a notified event is readable only once every older transaction has ended).

Start it with `ProjectionRunner(store, all_projections(), dsn=database_url).run_forever()`.
The lock is a session lock: connect to PostgreSQL directly or through a session-mode pooler,
never a transaction-mode one (PgBouncer's `pool_mode = transaction` would drop it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from pydantic import BaseModel

from events.base import RecordedEvent
from events.store import EVENT_WRITER_LOCK, Checkpoint, PostgresEventStore
from projections.base import Projection, quoted
from projections.connections import connect, disconnect
from projections.range_digest import EMPTY as EMPTY_RANGE
from projections.range_digest import AppliedRange

log = logging.getLogger("mentoring.projections")

# Advisory locks in the two-key space (never overlaps the one-key space the migrations use).
RUNNER_LOCK_CLASS = 0x70726F6A  # 'proj'
REBUILD_LOCK_CLASS = 0x72626C64  # 'rbld'


def lock_key(name: str) -> int:
    """A stable 31-bit key per projection name (stable across processes and versions)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


class UnknownProjection(LookupError):
    pass


class NothingToResume(Exception):
    """Resume was asked for a projection that is not stopped on a failure."""


# --- what a batch did ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    """An event a projection could not apply."""

    position: int
    transaction_id: int
    event_id: object
    event_type: str
    error: str
    stream_id: str = ""

    @classmethod
    def of(cls, row: asyncpg.Record, exc: BaseException) -> Failure:
        return cls(row["position"], row["transaction_id"], row["event_id"], row["event_type"],
                   f"{type(exc).__name__}: {exc}"[:2000], row["stream_id"])


LEASE_SECONDS = 5.0
"""How long a runner may go without renewing its lease before another ends its session."""

MAX_PARKED = 100
"""More streams than this parked at once: the projection is at fault, not the events."""


class TooManyParked(Exception):
    """Parking one more stream would pass `max_parked`: the projection stops instead."""


@dataclass(frozen=True)
class Step:
    checkpoint: Checkpoint  # where the projection stands after the step
    read: int = 0
    applied: int = 0
    full: bool = False  # a whole batch was read: more is probably waiting
    stopped: bool = False  # the projection is failed: nothing was read
    failure: Failure | None = None


@dataclass
class Held:
    """A projection's checkpoint row, locked for the step's transaction."""

    checkpoint: Checkpoint
    running: bool
    applied: AppliedRange
    parked: set[str]  # streams whose events wait
    retry: bool  # resume asked for some of them to be applied again


def is_connection_problem(exc: BaseException) -> bool:
    """Trouble with the connection or the server, not with the event: retry, never record."""
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.PostgresConnectionError | OSError
                  | TimeoutError):
        return True
    # 08 connection, 40 serialisation/deadlock, 53 resources, 57 operator (terminated, cancelled),
    # 58 system error: all about the moment, not about the event.
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and sqlstate[:2] in {"08", "40", "53", "57", "58"}


class Batch:
    """Raw rows read from the log, decoded (upcast) once for all the projections applying them.

    A row that cannot be decoded (no upcaster, say) is kept with its error: each projection
    then fails on that very event, like on any event it cannot apply.
    """

    def __init__(self, store: PostgresEventStore, rows: Sequence[asyncpg.Record]) -> None:
        self.rows = rows
        self.errors: dict[int, Exception] = {}
        # Every event, when every row decoded (the usual case); None otherwise.
        self.complete: list[RecordedEvent] | None = None
        self.events: Sequence[RecordedEvent | None]  # row by row, None where decoding failed
        try:
            self.events = self.complete = [store.to_recorded(r) for r in rows]
        except Exception:
            events: list[RecordedEvent | None] = []
            for i, row in enumerate(rows):
                try:
                    events.append(store.to_recorded(row))
                except Exception as exc:
                    events.append(None)
                    self.errors[i] = exc
            self.events = events
            if not self.errors:  # decoded on the second try after all
                self.complete = [e for e in events if e is not None]

    def __len__(self) -> int:
        return len(self.rows)

    def event(self, index: int) -> RecordedEvent:
        """The event of row `index`; raises the error that kept it from decoding, if one did."""
        event = self.events[index]
        if event is None:
            raise self.errors[index]
        return event

    def checkpoint_at(self, index: int) -> Checkpoint:
        row = self.rows[index]
        return Checkpoint(row["transaction_id"], row["position"])


def waits(row: asyncpg.Record, parked: Mapping[str, tuple[int, int]]) -> bool:
    """Whether the row is an event of a parked stream, at or after the event it stopped on."""
    start = parked.get(row["stream_id"])
    return start is not None and (row["transaction_id"], row["position"]) >= start


async def apply_one(conn: asyncpg.Connection, projection: Projection, batch: Batch,
                    index: int) -> Failure | None:
    """Apply the batch's event `index` in a savepoint of its own; the failure if the event could not
    be applied (or decoded), its writes undone. Connection problems are raised, never returned."""
    try:
        event = batch.event(index)  # raises the error if the row did not decode
        async with conn.transaction():
            await projection.apply_batch(conn, [event])
    except Exception as exc:
        if is_connection_problem(exc):
            raise
        row = batch.rows[index]
        log.error("projection %s cannot apply event at position %s (%s)",
                  projection.name, row["position"], row["event_type"], exc_info=exc)
        return Failure.of(row, exc)
    return None


async def apply_batch(conn: asyncpg.Connection, projection: Projection, batch: Batch,
                      skip: frozenset = frozenset(),
                      parked: Mapping[str, tuple[int, int]] | None = None) -> tuple[int | None, Failure | None]:
    """Apply a batch; return the index of the last event applied and the failure that stopped us.

    The batch goes in whole first (fast). If it fails, its writes are rolled back to a savepoint
    and the events go in one by one, each in its own savepoint, to find the one that fails: the
    events before it stay applied. Connection problems are raised, never recorded.
    """
    rows = batch.rows
    parked = parked or {}
    if batch.complete is not None:
        if skip or parked:
            events = [e for e, row in zip(batch.complete, rows, strict=True)
                      if row["event_id"] not in skip and not waits(row, parked)]
        else:
            events = batch.complete
        try:
            async with conn.transaction():
                await projection.apply_batch(conn, events)
            return (len(rows) - 1 if rows else None), None
        except Exception as exc:
            if is_connection_problem(exc):
                raise
            log.debug("projection %s: batch failed (%s), isolating the event", projection.name, exc)
    last = None
    for i, row in enumerate(rows):
        if row["event_id"] not in skip and not waits(row, parked):
            failure = await apply_one(conn, projection, batch, i)
            if failure is not None:
                return last, failure
        last = i
    return last, None


async def apply_parking(conn: asyncpg.Connection, projection: Projection, batch: Batch,
                        parked: set[str], max_parked: int) -> list[Failure]:
    """Apply a batch but the events of parked streams, one event per savepoint; an event that
    fails parks its stream (added to `parked`) and the rest goes on. Returns the new failures.
    Raises TooManyParked rather than park more than `max_parked` streams."""
    failures: list[Failure] = []
    for i, row in enumerate(batch.rows):
        if row["stream_id"] in parked:
            continue
        failure = await apply_one(conn, projection, batch, i)
        if failure is not None:
            if len(parked) >= max_parked:
                raise TooManyParked()
            parked.add(row["stream_id"])
            failures.append(failure)
    return failures


# --- status --------------------------------------------------------------------------------------

class FailureInfo(BaseModel):
    position: int
    event_id: str
    event_type: str
    error: str
    failed_at: datetime


class OpenWriter(BaseModel):
    """The oldest transaction still open that declared itself an event writer: readers wait for
    it, since it may still append below their horizon (events/store.py, "The readers' horizon")."""

    pid: int | None  # None: a prepared transaction
    application_name: str | None
    state: str | None  # active, idle in transaction, ...
    open_seconds: float

    def described(self) -> str:
        who = f"pid {self.pid}" if self.pid is not None else "a prepared transaction"
        name = f" ({self.application_name})" if self.application_name else ""
        state = f", {self.state}" if self.state else ""
        return f"{who}{name}{state}, open {self.open_seconds:.0f} s"


class ParkedStream(BaseModel):
    """A stream a projection parked: the event it could not apply, and why."""

    stream_id: str
    position: int
    event_type: str
    error: str
    parked_at: datetime
    retry_requested: bool


class ProjectionStatus(BaseModel):
    """Where one projection stands, for operators (`mentoring projections status`)."""

    name: str
    status: str  # running, failed, or unregistered (no runner has started it yet)
    position: int
    transaction_id: int
    updated_at: datetime | None
    behind: int  # events committed after its checkpoint
    oldest_waiting_since: datetime | None  # recorded time of the first of those
    held_by_pid: int | None  # server pid of the connection running it, if any
    failure: FailureInfo | None
    waiting_for: OpenWriter | None = None  # when behind: the open event writer it waits for, if any
    parked: int = 0  # streams parked: an event of theirs could not be applied
    first_parked: ParkedStream | None = None  # the oldest of them


_STATUS = """
WITH wanted AS (SELECT * FROM unnest($1::text[], $2::int[]) AS w(name, lock_key))
SELECT w.name, c.status, c.updated_at,
       coalesce(c.transaction_id, 0) AS transaction_id, coalesce(c.position, 0) AS position,
       (SELECT l.pid FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.classid = $3::int::oid
           AND l.objid = w.lock_key::oid AND l.objsubid = 2 AND l.granted LIMIT 1) AS held_by_pid,
       (SELECT count(*) FROM events e
         WHERE (e.transaction_id, e.position)
               > (coalesce(c.transaction_id, 0)::text::xid8, coalesce(c.position, 0))) AS behind,
       (SELECT e.recorded_at FROM events e
         WHERE (e.transaction_id, e.position)
               > (coalesce(c.transaction_id, 0)::text::xid8, coalesce(c.position, 0))
         ORDER BY e.transaction_id, e.position LIMIT 1) AS oldest_waiting_since,
       f.position AS failed_position, f.event_id, f.event_type, f.error, f.failed_at,
       (SELECT count(*) FROM projection_parked pp WHERE pp.projection = w.name) AS parked,
       p.stream_id AS parked_stream, p.position AS parked_position, p.event_type AS parked_type,
       p.error AS parked_error, p.parked_at, p.retry AS parked_retry
FROM wanted w
LEFT JOIN projection_checkpoints c ON c.name = w.name
LEFT JOIN LATERAL (SELECT * FROM projection_failures pf
                    WHERE pf.projection = w.name AND pf.resolved_at IS NULL
                    AND NOT EXISTS (SELECT FROM projection_parked pp WHERE pp.failure_id = pf.id)
                    ORDER BY pf.id DESC LIMIT 1) f ON true
LEFT JOIN LATERAL (SELECT * FROM projection_parked pp WHERE pp.projection = w.name
                    ORDER BY pp.parked_at, pp.stream_id LIMIT 1) p ON true
ORDER BY w.name
"""


_OLDEST_OPEN_WRITER = """
SELECT a.pid, a.application_name, a.state,
       extract(epoch FROM now() - coalesce(a.xact_start, p.prepared)) AS open_seconds
  FROM pg_locks w
  LEFT JOIN pg_stat_activity a ON a.pid = w.pid
  LEFT JOIN pg_prepared_xacts p ON w.pid IS NULL AND w.virtualtransaction = '-1/' || p.transaction::text
 WHERE w.locktype = 'advisory' AND w.classid = $1::int::oid AND w.objid = $2::int::oid AND w.objsubid = 2
   AND w.granted AND w.database = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY coalesce(a.xact_start, p.prepared) NULLS LAST LIMIT 1
"""


async def projection_status(db: asyncpg.Pool | asyncpg.Connection,
                            names: Sequence[str]) -> list[ProjectionStatus]:
    rows = await db.fetch(_STATUS, list(names), [lock_key(n) for n in names], RUNNER_LOCK_CLASS)
    oldest = None
    if any(r["behind"] for r in rows):
        found = await db.fetchrow(_OLDEST_OPEN_WRITER, *EVENT_WRITER_LOCK)
        if found is not None:
            oldest = OpenWriter(pid=found["pid"], application_name=found["application_name"] or None,
                                state=found["state"], open_seconds=float(found["open_seconds"] or 0))
    return [
        ProjectionStatus(
            name=r["name"], status=r["status"] or "unregistered", position=r["position"],
            transaction_id=r["transaction_id"], updated_at=r["updated_at"], behind=r["behind"],
            oldest_waiting_since=r["oldest_waiting_since"], held_by_pid=r["held_by_pid"],
            failure=FailureInfo(position=r["failed_position"], event_id=str(r["event_id"]),
                                event_type=r["event_type"], error=r["error"],
                                failed_at=r["failed_at"]) if r["failed_position"] else None,
            waiting_for=oldest if r["behind"] else None,
            parked=r["parked"],
            first_parked=ParkedStream(stream_id=r["parked_stream"], position=r["parked_position"],
                                      event_type=r["parked_type"], error=r["parked_error"],
                                      parked_at=r["parked_at"], retry_requested=r["parked_retry"])
            if r["parked_stream"] is not None else None,
        )
        for r in rows
    ]


async def register(db: asyncpg.Pool | asyncpg.Connection, names: Sequence[str]) -> None:
    """Give each projection a checkpoint row (at the start of the log) if it has none."""
    await db.execute(
        """INSERT INTO projection_checkpoints (name, applied_events, range_digest)
           SELECT unnest($1::text[]), 0, $2 ON CONFLICT DO NOTHING""",
        list(names), EMPTY_RANGE,
    )


class ResumeResult(BaseModel):
    name: str
    skipped: bool
    event_position: int | None = None  # the event the stopped projection, or the one stream, failed on
    event_type: str | None = None
    streams: list[str] = []  # the parked streams to be applied again


async def resume(db: asyncpg.Pool, name: str, *, skip: bool = False, by: str = "operator",
                 stream: str | None = None) -> ResumeResult:
    """Apply again what a projection could not: its parked streams (all, or `stream`), or the
    event a stopped projection failed on. After a fix, or skipping the event (recorded).

    A runner that holds the projection picks the change up at its next poll.
    """
    async with db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """SELECT status, applied_events, range_digest FROM projection_checkpoints
               WHERE name = $1 FOR UPDATE""", name)
        if row is None:
            raise UnknownProjection(f"no projection named {name!r} has run in this database")
        if row["status"] == "failed":
            if stream is not None:
                raise NothingToResume(f"projection {name} is stopped as a whole (too many streams failed): "
                                      f"resume it without --stream first")
            return await _resume_stopped(conn, name, row, skip=skip, by=by)
        if skip and stream is None and await conn.fetchval(
                "SELECT count(*) FROM projection_parked WHERE projection = $1", name) > 1:
            raise NothingToResume(f"projection {name} has several parked streams: name the one whose event "
                                  "to skip with --stream (see `mentoring projections status`)")
        parks = await conn.fetch(
            """UPDATE projection_parked SET retry = true, skip_first = $3, retry_by = $4
               WHERE projection = $1 AND ($2::text IS NULL OR stream_id = $2)
               RETURNING stream_id, position, event_type""", name, stream, skip, by)
    if not parks:
        what = f"no parked stream {stream}" if stream else "no parked stream"
        raise NothingToResume(f"projection {name} is {row['status']} with {what}: nothing to resume")
    one = parks[0] if len(parks) == 1 else None
    return ResumeResult(name=name, skipped=skip, streams=sorted(p["stream_id"] for p in parks),
                        event_position=one["position"] if one else None,
                        event_type=one["event_type"] if one else None)


async def _resume_stopped(conn: asyncpg.Connection, name: str, row: asyncpg.Record, *, skip: bool,
                          by: str) -> ResumeResult:
    unparked = "AND NOT EXISTS (SELECT FROM projection_parked p WHERE p.failure_id = projection_failures.id)"
    failure = await conn.fetchrow(
        f"""SELECT id, position, transaction_id, event_id, event_type FROM projection_failures
            WHERE projection = $1 AND resolved_at IS NULL {unparked} ORDER BY id DESC LIMIT 1""", name)
    if failure is None:
        raise NothingToResume(f"projection {name} is failed but no open failure is recorded")
    if skip:
        # The checkpoint stands just before the bad event: move it onto the event itself
        # (the event is in the applied range's digest; projection_failures says it was skipped).
        applied = AppliedRange.from_row(row).extended([failure["event_id"]])
        await conn.execute(
            """UPDATE projection_checkpoints SET transaction_id = $2, position = $3,
                      status = 'running', updated_at = now(), applied_events = $4, range_digest = $5
               WHERE name = $1""",
            name, failure["transaction_id"], failure["position"], applied.events, applied.digest)
    else:
        await conn.execute(
            """UPDATE projection_checkpoints SET status = 'running', updated_at = now()
               WHERE name = $1""", name)
    await conn.execute(
        f"""UPDATE projection_failures SET resolved_at = now(), resolution = $2, resolved_by = $3
            WHERE projection = $1 AND resolved_at IS NULL {unparked}""",
        name, "skipped" if skip else "retried", by)
    return ResumeResult(name=name, skipped=skip, event_position=failure["position"],
                        event_type=failure["event_type"])


# --- the runner ----------------------------------------------------------------------------------

class ProjectionRunner:
    """Runs projections: `run_forever()` in the worker, `run_until_caught_up()` in tests and CLI.

    `dsn`: open one dedicated connection per projection (recommended, keeps the pool free for
    others); without it, those connections are taken from the store's pool for as long as the
    projection runs here, so size the pool for them.
    """

    def __init__(
        self, store: PostgresEventStore, projections: Sequence[Projection], *,
        dsn: str | None = None, batch_size: int = 500, poll_interval: float = 1.0,
        lock_retry_interval: float = 2.0, reconnect_delay: float = 1.0, max_parked: int = MAX_PARKED,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique: {names}")
        self.store = store
        self.projections = list(projections)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lock_retry_interval = lock_retry_interval
        self.reconnect_delay = reconnect_delay
        self.max_parked = max_parked
        self.lease_seconds = lease_seconds
        self._dsn = dsn
        self._wake = {name: asyncio.Event() for name in names}
        self._notified: set[str] = set()
        self._working: dict[str, asyncpg.Connection] = {}

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.projections]

    async def status(self) -> list[ProjectionStatus]:
        return await projection_status(self.store.pool, self.names)

    def backend_pid(self, name: str) -> int | None:
        """The server pid of the connection running `name` here (None if not running here)."""
        conn = self._working.get(name)
        return conn.get_server_pid() if conn is not None else None

    # --- forever -----------------------------------------------------------------------------

    async def run_forever(self) -> None:
        await register(self.store.pool, self.names)
        tasks = [asyncio.create_task(self._fan_out_wakeups(), name="projection-wakeups"),
                 asyncio.create_task(self._renew_leases(), name="projection-leases")]
        tasks += [asyncio.create_task(self._keep_running(p), name=f"projection-{p.name}")
                  for p in self.projections]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _fan_out_wakeups(self) -> None:
        # One listener for all projections, each with its own flag, so no wake-up is lost to a
        # projection that was busy when the notification came.
        while True:
            try:
                if await self.store.wait_for_events(self.poll_interval):
                    self._notified.update(self._wake)
                    for flag in self._wake.values():
                        flag.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the poll interval keeps projections moving meanwhile
                log.warning("projection wake-ups unavailable (%s); polling", exc)
                await asyncio.sleep(self.reconnect_delay)

    async def _keep_running(self, projection: Projection) -> None:
        name = projection.name
        holding = False
        while True:
            conn = None
            try:
                conn = await self._connect()
                if not await self._try_lock(conn, name):
                    if holding:
                        log.info("projection %s: now run by another process", name)
                    holding = False
                    await self._disconnect(conn)
                    conn = None
                    await self._end_a_frozen_holder(name)
                    await asyncio.sleep(self.lock_retry_interval)
                    continue
                await self._take_lease(conn, name)
                holding = True
                log.info("projection %s: running in this process", name)
                self._working[name] = conn
                await self._follow(conn, projection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                holding = False
                task = asyncio.current_task()  # always ours: this coroutine runs as a task
                if task is not None and task.cancelling():
                    # A rollback on a dead connection can replace our cancellation: keep it.
                    raise asyncio.CancelledError from exc
                if is_connection_problem(exc):
                    log.warning("projection %s: connection lost (%s); reconnecting", name, exc)
                else:
                    log.exception("projection %s: runner error; restarting it", name)
                await asyncio.sleep(self.reconnect_delay)
            finally:
                self._working.pop(name, None)
                if conn is not None:
                    await self._disconnect(conn)

    # --- leases ----------------------------------------------------------------------------------

    async def _take_lease(self, conn: asyncpg.Connection, name: str) -> None:
        await conn.execute(
            """INSERT INTO projection_leases (name, holder_pid, holder_started, expires_at)
               SELECT $1, pid, backend_start, now() + make_interval(secs => $2)
                 FROM pg_stat_activity WHERE pid = pg_backend_pid()
               ON CONFLICT (name) DO UPDATE SET holder_pid = EXCLUDED.holder_pid,
                   holder_started = EXCLUDED.holder_started, expires_at = EXCLUDED.expires_at""",
            name, self.lease_seconds)

    async def _renew_leases(self) -> None:
        """Every third of the lease, renew the leases of the projections this process holds, on a
        connection of its own: neither a batch in progress nor a busy pool may delay it."""
        conn: asyncpg.Connection | None = None
        try:
            while True:
                await asyncio.sleep(self.lease_seconds / 3)
                held = [(name, c.get_server_pid()) for name, c in list(self._working.items())]
                if not held:
                    continue
                try:
                    if conn is None or conn.is_closed():
                        conn = await self._connect()
                    await asyncio.wait_for(conn.execute(
                        """UPDATE projection_leases l SET expires_at = now() + make_interval(secs => $3)
                             FROM unnest($1::text[], $2::int[]) AS h(name, pid)
                            WHERE l.name = h.name AND l.holder_pid = h.pid""",
                        [n for n, _ in held], [p for _, p in held], self.lease_seconds), self.lease_seconds / 3)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the database is away: the projections' own loops say so
                    log.warning("projection leases not renewed (%s)", exc)
                    if conn is not None:
                        conn.terminate()
                        conn = None
        finally:
            if conn is not None:
                await self._disconnect(conn)

    async def _end_a_frozen_holder(self, name: str) -> None:
        """The lock is held elsewhere: if its holder's lease has expired, end its session."""
        try:
            frozen = await self.store.pool.fetchrow(
                """SELECT l.holder_pid, extract(epoch FROM now() - l.expires_at) AS overdue
                     FROM projection_leases l
                     JOIN pg_stat_activity a ON a.pid = l.holder_pid AND a.backend_start = l.holder_started
                     JOIN pg_locks k ON k.pid = l.holder_pid AND k.locktype = 'advisory' AND k.granted
                      AND k.classid = $2::int::oid AND k.objid = $3::int::oid AND k.objsubid = 2
                      AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                    WHERE l.name = $1 AND l.expires_at < now()""",
                name, RUNNER_LOCK_CLASS, lock_key(name))
            if frozen is None:
                return
            log.warning("projection %s: its runner (server pid %s) is %.1f s past its lease: ending its "
                        "session to take over", name, frozen["holder_pid"], frozen["overdue"])
            await self.store.pool.execute("SELECT pg_terminate_backend($1)", frozen["holder_pid"])
        except asyncio.CancelledError:
            raise
        except asyncpg.InsufficientPrivilegeError:
            log.error("projection %s: its runner is past its lease, but this role may not end its session: "
                      "run every worker as one database role, or grant it pg_signal_backend", name)
        except Exception as exc:
            log.warning("projection %s: could not check its runner's lease (%s)", name, exc)

    async def _follow(self, conn: asyncpg.Connection, projection: Projection) -> None:
        name = projection.name
        wake = self._wake[name]
        recheck: float | None = None
        while True:
            wake.clear()
            notified = name in self._notified  # woken by an append, not by a sibling
            self._notified.discard(name)
            step = await self._step(conn, projection)
            if step.applied:
                # Our open transaction may have hidden others' events from the siblings' reads
                # (readers stop below the oldest open transaction): let them look again.
                for other, flag in self._wake.items():
                    if other != name:
                        flag.set()
            if step.full:
                continue
            if not step.read and not step.stopped and (notified or recheck is not None):
                # An append was announced but is not readable yet: an older transaction is
                # still open. Look again soon (10, 20, 40, 80, 160 ms), not at the next poll.
                recheck = 0.01 if recheck is None else recheck * 2
                if recheck > 0.2:
                    recheck = None
            else:
                recheck = None
            timeout = min(recheck, self.poll_interval) if recheck else self.poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)

    # --- until caught up ---------------------------------------------------------------------

    async def run_until_caught_up(self, timeout: float = 60.0) -> list[ProjectionStatus]:
        """Bring every projection up to the last event committed now, then return their status.

        A projection run by another process is not taken over: we wait for it to get there.
        A projection that fails stops where it failed (see the status).
        """
        await register(self.store.pool, self.names)
        head_row = await self.store.pool.fetchrow(
            """SELECT transaction_id::text::bigint AS transaction_id, position FROM events
               ORDER BY transaction_id DESC, position DESC LIMIT 1""")
        head = Checkpoint(head_row["transaction_id"], head_row["position"]) if head_row else None
        deadline = asyncio.get_running_loop().time() + timeout
        for projection in self.projections:
            conn = await self._connect()
            try:
                if await self._try_lock(conn, projection.name):
                    try:
                        await self._catch_up(conn, projection, head, deadline)
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock($1, $2)",
                                           RUNNER_LOCK_CLASS, lock_key(projection.name))
                else:
                    await self._wait_for_other_runner(projection.name, head, deadline)
            finally:
                await self._disconnect(conn)
        return await self.status()

    async def _catch_up(self, conn: asyncpg.Connection, projection: Projection,
                        head: Checkpoint | None, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            step = await self._step(conn, projection)
            if step.full:
                continue
            if step.stopped or head is None or step.checkpoint >= head:
                return  # a stream parked on the way is no reason to stop short of the head
            if loop.time() > deadline:
                raise TimeoutError(f"projection {projection.name} did not reach the log head in time")
            await asyncio.sleep(0.01)  # an older transaction still hides the rest: it will end

    async def _wait_for_other_runner(self, name: str, head: Checkpoint | None,
                                     deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            row = await self.store.pool.fetchrow(
                "SELECT transaction_id, position, status FROM projection_checkpoints WHERE name = $1",
                name)
            if row["status"] != "running" or head is None or \
                    Checkpoint(row["transaction_id"], row["position"]) >= head:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"projection {name}, run by another process, is still behind")
            await asyncio.sleep(0.05)

    # --- one batch -----------------------------------------------------------------------------

    async def _step(self, conn: asyncpg.Connection, projection: Projection) -> Step:
        """Read the next batch after the checkpoint, apply it, move the checkpoint: one transaction.

        The batch goes in whole, with no savepoint (the live runner makes many small batches),
        but the events of parked streams. If it fails, that transaction is rolled back and a
        second one applies the batch event by event, parking the stream of an event that fails.
        """
        try:
            async with conn.transaction():
                begun = await self._begin_step(conn, projection)
                if isinstance(begun, Step):
                    return begun
                held, rows = begun
                batch = Batch(self.store, rows)
                if batch.complete is not None:
                    events = batch.complete if not held.parked else [
                        e for e in batch.complete if e.stream_id not in held.parked]
                    await projection.apply_batch(conn, events)
                    checkpoint = batch.checkpoint_at(len(batch) - 1)
                    await self._move_checkpoint(conn, projection.name, checkpoint, failed=False,
                                                applied=held.applied.extended(r["event_id"] for r in rows))
                    return Step(read=len(rows), applied=len(events),
                                full=len(rows) == self.batch_size, checkpoint=checkpoint)
        except Exception as exc:
            if is_connection_problem(exc):
                raise
        try:
            return await self._step_parking(conn, projection)
        except TooManyParked:
            return await self._step_finding_the_bad_event(conn, projection)

    async def _begin_step(self, conn: asyncpg.Connection, projection: Projection,
                          *, retry: bool = True) -> tuple[Held, list[asyncpg.Record]] | Step:
        """Lock the checkpoint, apply the parked streams `resume` asked for, read the next batch;
        or the step's end already (the projection stopped, nothing to read)."""
        held = await self._lock_checkpoint(conn, projection.name)
        if not held.running:
            return Step(stopped=True, checkpoint=held.checkpoint)
        if retry and held.retry:
            await self._retry_parked(conn, projection, held)
        rows = await self.store.read_all_raw(conn, held.checkpoint, self.batch_size)
        if not rows:
            return Step(checkpoint=held.checkpoint)
        return held, rows

    async def _step_parking(self, conn: asyncpg.Connection, projection: Projection) -> Step:
        name = projection.name
        async with conn.transaction():
            begun = await self._begin_step(conn, projection)
            if isinstance(begun, Step):
                return begun
            held, rows = begun
            batch = Batch(self.store, rows)
            parked = set(held.parked)
            failures = await apply_parking(conn, projection, batch, parked, self.max_parked)
            for failure in failures:
                await self._park(conn, name, failure)
            checkpoint = batch.checkpoint_at(len(batch) - 1)
            await self._move_checkpoint(conn, name, checkpoint, failed=False,
                                        applied=held.applied.extended(r["event_id"] for r in rows))
        return Step(read=len(rows), applied=sum(1 for r in rows if r["stream_id"] not in parked),
                    full=len(rows) == self.batch_size, checkpoint=checkpoint,
                    failure=failures[0] if failures else None)

    async def _step_finding_the_bad_event(self, conn: asyncpg.Connection,
                                          projection: Projection) -> Step:
        """Too many streams fail: the projection stops just before the event (status failed)."""
        name = projection.name
        async with conn.transaction():
            begun = await self._begin_step(conn, projection, retry=False)
            if isinstance(begun, Step):
                return begun
            held, rows = begun
            checkpoint, in_range = held.checkpoint, held.applied
            batch = Batch(self.store, rows)
            last, failure = await apply_batch(conn, projection, batch,
                                              parked=dict.fromkeys(held.parked, (0, 0)))
            applied = 0
            if last is not None:
                applied, checkpoint = last + 1, batch.checkpoint_at(last)
                in_range = in_range.extended(r["event_id"] for r in rows[:applied])
            if failure is not None:
                log.error("projection %s: more than %d streams fail, the projection stops at position %s",
                          name, self.max_parked, failure.position)
                await self._record_failure(conn, name, failure)
            await self._move_checkpoint(conn, name, checkpoint, failed=failure is not None, applied=in_range)
        return Step(read=len(rows), applied=applied,
                    full=len(rows) == self.batch_size and failure is None,
                    checkpoint=checkpoint, failure=failure)

    @staticmethod
    async def _record_failure(conn: asyncpg.Connection, name: str, failure: Failure) -> int:
        return await conn.fetchval(
            """INSERT INTO projection_failures
                   (projection, position, transaction_id, event_id, event_type, error, stream_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""",
            name, failure.position, failure.transaction_id, failure.event_id,
            failure.event_type, failure.error, failure.stream_id or None)

    async def _park(self, conn: asyncpg.Connection, name: str, failure: Failure) -> None:
        failure_id = await self._record_failure(conn, name, failure)
        await conn.execute(
            """INSERT INTO projection_parked (projection, stream_id, position, transaction_id, event_id,
                                              event_type, error, failure_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (projection, stream_id) DO UPDATE SET
                   position = EXCLUDED.position, transaction_id = EXCLUDED.transaction_id,
                   event_id = EXCLUDED.event_id, event_type = EXCLUDED.event_type, error = EXCLUDED.error,
                   failure_id = EXCLUDED.failure_id, parked_at = now(), retry = false, skip_first = false""",
            name, failure.stream_id, failure.position, failure.transaction_id, failure.event_id,
            failure.event_type, failure.error, failure_id)

    async def _retry_parked(self, conn: asyncpg.Connection, projection: Projection, held: Held) -> None:
        """Apply again the parked streams `resume` asked for, up to the checkpoint (the rest of each
        stream comes with the next batches). A stream that fails again stays parked, at the event
        that failed; the events before it stay applied."""
        name = projection.name
        for park in await conn.fetch(
                "SELECT * FROM projection_parked WHERE projection = $1 AND retry ORDER BY parked_at", name):
            rows = await self.store.read_stream_raw(conn, park["stream_id"],
                                                    Checkpoint(park["transaction_id"], park["position"]),
                                                    held.checkpoint)
            batch = Batch(self.store, rows)
            skipping = park["skip_first"] and bool(rows) and rows[0]["event_id"] == park["event_id"]
            failure = None
            for i in range(1 if skipping else 0, len(rows)):
                if (failure := await apply_one(conn, projection, batch, i)) is not None:
                    break
            await conn.execute(
                """UPDATE projection_failures SET resolved_at = now(), resolution = $2, resolved_by = $3
                   WHERE id = $1""",
                park["failure_id"], "skipped" if skipping else "retried", park["retry_by"] or "operator")
            if failure is None:
                await conn.execute("DELETE FROM projection_parked WHERE projection = $1 AND stream_id = $2",
                                   name, park["stream_id"])
                held.parked.discard(park["stream_id"])
                log.info("projection %s: stream %s applied again", name, park["stream_id"])
            else:
                await self._park(conn, name, failure)
                log.error("projection %s: stream %s fails again at position %s", name, park["stream_id"],
                          failure.position)

    @staticmethod
    async def _lock_checkpoint(conn: asyncpg.Connection, name: str) -> Held:
        """The checkpoint, locked for this transaction, with the streams parked; points
        search_path at the read model.

        FOR UPDATE: a rebuild's swap or a resume waits for this batch, and we for them.
        """
        row = await conn.fetchrow(
            """SELECT transaction_id, position, status, applied_events, range_digest,
                      set_config('search_path', $2, true),
                      ARRAY(SELECT stream_id FROM projection_parked WHERE projection = $1) AS parked,
                      EXISTS (SELECT FROM projection_parked WHERE projection = $1 AND retry) AS retry
               FROM projection_checkpoints WHERE name = $1 FOR UPDATE""",
            name, f"{quoted(name)}, public")
        if row is None:
            raise UnknownProjection(f"projection {name} has no checkpoint row")
        return Held(Checkpoint(row["transaction_id"], row["position"]), row["status"] == "running",
                    AppliedRange.from_row(row), set(row["parked"]), row["retry"])

    @staticmethod
    async def _move_checkpoint(conn: asyncpg.Connection, name: str, checkpoint: Checkpoint, *,
                               failed: bool, applied: AppliedRange) -> None:
        await conn.execute(
            """UPDATE projection_checkpoints
               SET transaction_id = $2, position = $3, status = $4, updated_at = now(),
                   applied_events = $5, range_digest = $6
               WHERE name = $1""",
            name, checkpoint.transaction_id, checkpoint.position, "failed" if failed else "running",
            applied.events, applied.digest)

    # --- connections and locks ---------------------------------------------------------------

    async def _connect(self) -> asyncpg.Connection:
        return await connect(self.store, self._dsn)

    async def _disconnect(self, conn: asyncpg.Connection) -> None:
        await disconnect(self.store, self._dsn, conn)

    @staticmethod
    async def _try_lock(conn: asyncpg.Connection, name: str) -> bool:
        return await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)",
                                   RUNNER_LOCK_CLASS, lock_key(name))
