"""Benchmark of the event store's append against its ceiling and its peer.

    python -m bench.event_store                 12 cases, 2 rounds of 2 s each: about a minute
    python -m bench.event_store --seconds 3     3 s per case and round, steadier figures

One throw-away embedded PostgreSQL (fsync on), one run, one event shape (a PairNominated-like
payload of ~300 bytes of JSON plus ~150 bytes of metadata), and three ways of writing it:

* store          `PostgresEventStore.append`: optimistic concurrency, idempotency by event id,
                 hash chain, commit-order-safe reads, readers woken; one asyncpg pool per writer count;
* raw insert     the ceiling: one autocommit INSERT statement per append (a single-row VALUES, or
                 the 5 rows in one statement) into a table of the same columns with only a
                 bigserial primary key: no triggers, no checks, no unique ids, no chain;
* eventsourcing  the peer: `PostgresApplicationRecorder.insert_events` of the `eventsourcing`
                 library (LOCK TABLE + NOTIFY + INSERT in one transaction) over synchronous
                 psycopg, so its writers are threads; it has its own database on the same server.

Each runs with 1 and 8 concurrent writers appending 1 or 5 events per call. A writer writes its
own streams, a new one every 20 events (pairs are separate streams), so writers never contend on
a stream: what is measured is the cost of each guarantee, and whether concurrent commits can
still share a WAL flush. Every log starts with 10,000 events (a store in service is not empty),
and the cases take turns over the rounds so that a slow spell of the disk hits them all alike.

The last line printed is one JSON object. The issue's targets, for 8 writers and single-event
appends: vs_raw_insert >= 0.6 and vs_eventsourcing >= 3 (our events/s over theirs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

from devstack.postgres import EmbeddedPostgres, free_port
from events.base import EventMetadata, NewEvent
from events.migrations import migrate
from events.store import PostgresEventStore, create_pool

WRITERS = (1, 8)
BATCHES = (1, 5)
CASES = ("raw insert", "store", "eventsourcing")
EVENTS_PER_STREAM = 20
PREFILL_EVENTS = 10_000

EVENT_TYPE = "PairNominated"
PAYLOAD = {  # about 300 bytes as JSON
    "pair_id": "pair-7f3c2a91", "programme_id": "prog-042", "mentor_id": "M01234",
    "mentee_id": "S05678", "sessions_planned": 6, "nominated_by": "hr-partner-17",
    "topics": ["generative AI at work", "social media", "accessibility"],
    "policy": {"invitation_timeout": "P7D", "session_interval": "P14D", "risk_after": "P30D"},
}
METADATA = EventMetadata(actor="hr-partner-17", workflow_id="pair-7f3c2a91",
                         run_id="3b0f1c5e-9a7d-4f2e-8c61-0d2b7e4a9f10",
                         correlation_id="nominate-7f3c2a91")
META_JSON = METADATA.model_dump(mode="json", exclude_none=True)
ES_TOPIC = f"events.pair:{EVENT_TYPE}"

RAW_TABLE = """CREATE TABLE raw_events (
    position bigserial PRIMARY KEY, transaction_id xid8 DEFAULT pg_current_xact_id(),
    stream_id text, version bigint, event_id uuid, event_type text, schema_version integer,
    payload jsonb, metadata jsonb, recorded_at timestamptz, prev_hash bytea, hash bytea)"""
RAW_INSERT_ONE = """INSERT INTO raw_events (stream_id, version, event_id, event_type,
        schema_version, payload, metadata, recorded_at, prev_hash, hash)
    VALUES ($1, $2 + 1, $3, $4, 1, $5, $6, clock_timestamp(), $7, $7)"""
RAW_INSERT_MANY = """INSERT INTO raw_events (stream_id, version, event_id, event_type,
        schema_version, payload, metadata, recorded_at, prev_hash, hash)
    SELECT $1, $2 + n, id, $4, 1, p, $6, clock_timestamp(), $7, $7
    FROM unnest($3::uuid[], $5::jsonb[]) WITH ORDINALITY AS t(id, p, n)"""
RAW_PREFILL = f"""INSERT INTO raw_events (stream_id, version, event_id, event_type,
        schema_version, payload, metadata, recorded_at, prev_hash, hash)
    SELECT 'prefill-' || (g / {EVENTS_PER_STREAM}), g % {EVENTS_PER_STREAM} + 1,
           gen_random_uuid(), $2, 1, $3, $4,
           clock_timestamp(), $5, $5
    FROM generate_series(0, $1 - 1) AS g"""
ZERO_HASH = bytes(32)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    user, system, *_ = os.times()
    return user + system


@dataclass
class Result:
    """One case, summed over its rounds."""

    case: str
    writers: int
    batch: int
    events: int = 0
    seconds: float = 0.0
    client_cpu: float = 0.0  # this process: the drivers, the store's Python side, the threads
    latencies: list[float] = field(default_factory=list)

    def add(self, events: int, seconds: float, cpu: float, latencies: list[float]) -> None:
        self.events += events
        self.seconds += seconds
        self.client_cpu += cpu
        self.latencies += latencies

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def appends_per_s(self) -> float:
        return self.events_per_s / self.batch

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def client_us_per_event(self) -> float:
        return self.client_cpu / self.events * 1e6


class Streams:
    """One writer's streams: a new stream every EVENTS_PER_STREAM events."""

    def __init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:12]
        self.count = 0
        self.stream = ""
        self.version = EVENTS_PER_STREAM

    def next(self, batch: int) -> tuple[str, int]:
        """The stream to append `batch` events to, and its version before them."""
        if self.version + batch > EVENTS_PER_STREAM:
            self.count += 1
            self.stream, self.version = f"pair-{self.prefix}-{self.count}", 0
        expected = self.version
        self.version += batch
        return self.stream, expected


# --- the writers ---------------------------------------------------------------------------------

Append = Callable[[Streams, int], Awaitable[None]]


async def run_tasks(append: Append, writers: int, batch: int,
                    seconds: float) -> tuple[int, list[float]]:
    """Asyncio writers appending until the deadline: events appended, latency of each append."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def writer() -> int:
        streams, done = Streams(), 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await append(streams, batch)
            latencies.append(time.perf_counter() - start)
            done += batch
        return done

    return sum(await asyncio.gather(*(writer() for _ in range(writers)))), latencies


def store_append(store: PostgresEventStore) -> Append:
    async def append(streams: Streams, batch: int) -> None:
        stream, expected = streams.next(batch)
        events = [NewEvent(event_id=uuid.uuid4(), event_type=EVENT_TYPE, schema_version=1,
                           payload=PAYLOAD) for _ in range(batch)]
        await store.append(stream, expected, events, METADATA)
    return append


def raw_append(pool: asyncpg.Pool) -> Append:
    async def append(streams: Streams, batch: int) -> None:
        stream, expected = streams.next(batch)
        if batch == 1:
            await pool.execute(RAW_INSERT_ONE, stream, expected, uuid.uuid4(), EVENT_TYPE,
                               PAYLOAD, META_JSON, ZERO_HASH)
        else:
            await pool.execute(RAW_INSERT_MANY, stream, expected,
                               [uuid.uuid4() for _ in range(batch)], EVENT_TYPE,
                               [PAYLOAD] * batch, META_JSON, ZERO_HASH)
    return append


def stored_events(originator: uuid.UUID, version: int, batch: int) -> list[StoredEvent]:
    return [StoredEvent(originator_id=originator, originator_version=version + i, topic=ES_TOPIC,
                        state=json.dumps({"payload": PAYLOAD, "metadata": META_JSON}).encode())
            for i in range(1, batch + 1)]


def run_threads(recorder: PostgresApplicationRecorder, writers: int, batch: int, seconds: float,
                stop: threading.Event) -> tuple[int, list[float]]:
    """Threads appending through the eventsourcing recorder until the deadline (or `stop`)."""
    latencies: list[float] = []
    counts = [0] * writers
    deadline = time.perf_counter() + seconds

    def writer(index: int) -> None:
        originator, version = uuid.uuid4(), EVENTS_PER_STREAM
        while time.perf_counter() < deadline and not stop.is_set():
            if version + batch > EVENTS_PER_STREAM:
                originator, version = uuid.uuid4(), 0
            events = stored_events(originator, version, batch)
            start = time.perf_counter()
            recorder.insert_events(events)
            latencies.append(time.perf_counter() - start)
            version += batch
            counts[index] += batch

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), latencies


# --- the run -------------------------------------------------------------------------------------

async def create_databases(server: EmbeddedPostgres) -> tuple[str, str]:
    admin = await asyncpg.connect(server.admin_url())
    try:
        for name in ("bench_store", "bench_eventsourcing"):
            await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(server.admin_url("bench_store"))
    try:
        await migrate(conn)
        await conn.execute(RAW_TABLE)
    finally:
        await conn.close()
    return "bench_store", "bench_eventsourcing"


async def prefill(store: PostgresEventStore, recorder: PostgresApplicationRecorder) -> None:
    streams = PREFILL_EVENTS // EVENTS_PER_STREAM
    events = [[NewEvent(event_id=uuid.uuid4(), event_type=EVENT_TYPE, schema_version=1,
                        payload=PAYLOAD) for _ in range(EVENTS_PER_STREAM)] for _ in range(streams)]
    for i, chunk in enumerate(events):
        await store.append(f"prefill-{i}", 0, chunk, METADATA)
    await store.pool.execute(RAW_PREFILL, PREFILL_EVENTS, EVENT_TYPE, PAYLOAD, META_JSON, ZERO_HASH)
    for _ in range(streams):
        await asyncio.to_thread(recorder.insert_events,
                                stored_events(uuid.uuid4(), 0, EVENTS_PER_STREAM))


async def bench(server: EmbeddedPostgres, rounds: int, seconds: float,
                warmup: float) -> list[Result]:
    ours, theirs = await create_databases(server)
    pools = {w: await create_pool(server.admin_url(ours), min_size=w, max_size=w) for w in WRITERS}
    stores = {w: PostgresEventStore(pool) for w, pool in pools.items()}
    stop_threads = threading.Event()
    datastores = {w: PostgresDatastore(theirs, "127.0.0.1", server.port, "postgres", server.password or "",
                                       pool_size=w) for w in WRITERS}
    try:
        recorders = {w: PostgresApplicationRecorder(d) for w, d in datastores.items()}
        for recorder in recorders.values():
            recorder.create_table()  # once for the table, then for each datastore's type adapter
        progress(f"prefilling each log with {PREFILL_EVENTS} events")
        await prefill(stores[8], recorders[8])

        async def turn(case: str, writers: int, batch: int, s: float) -> tuple[int, list[float]]:
            if case == "eventsourcing":
                return await asyncio.to_thread(run_threads, recorders[writers], writers, batch, s,
                                               stop_threads)
            append = (store_append(stores[writers]) if case == "store"
                      else raw_append(pools[writers]))
            return await run_tasks(append, writers, batch, s)

        results = {(c, w, b): Result(c, w, b) for w in WRITERS for b in BATCHES for c in CASES}
        for r in range(1, rounds + 1):
            for (case, writers, batch), result in results.items():
                await turn(case, writers, batch, warmup)
                cpu, start = cpu_seconds(), time.perf_counter()
                events, latencies = await turn(case, writers, batch, seconds)
                elapsed = time.perf_counter() - start
                result.add(events, elapsed, cpu_seconds() - cpu, latencies)
                progress(f"  round {r}/{rounds}  {case:<13} writers={writers} batch={batch}: "
                         f"{events / elapsed:7.0f} events/s")
        return list(results.values())
    finally:
        stop_threads.set()  # on Ctrl-C: let the threads finish their append before closing
        await asyncio.get_running_loop().shutdown_default_executor()
        for writers, pool in pools.items():
            await stores[writers].close()
            await pool.close()
        for datastore in datastores.values():
            datastore.close()


def report(results: list[Result]) -> dict:
    by = {(r.case, r.writers, r.batch): r for r in results}

    def eps(case: str, writers: int, batch: int) -> float:
        return by[(case, writers, batch)].events_per_s

    print(f"{'case':<14} {'writers':>7} {'events/append':>13} {'events/s':>9} {'appends/s':>9} "
          f"{'p50 ms':>7} {'client us/ev':>12} {'vs raw':>7}")
    for r in sorted(results, key=lambda r: (r.writers, r.batch, CASES.index(r.case))):
        print(f"{r.case:<14} {r.writers:>7} {r.batch:>13} {r.events_per_s:>9.0f} "
              f"{r.appends_per_s:>9.0f} {r.p50_ms:>7.2f} {r.client_us_per_event:>12.0f} "
              f"{r.events_per_s / eps('raw insert', r.writers, r.batch):>7.2f}")

    def ratios(writers: int, batch: int) -> tuple[float, float]:
        ours = eps("store", writers, batch)
        return (round(ours / eps("raw insert", writers, batch), 3),
                round(ours / eps("eventsourcing", writers, batch), 3))

    vs_raw, vs_es = ratios(8, 1)
    summary = {
        "bench": "event_store", "writers": 8, "events_per_append": 1,
        "events_per_s": round(eps("store", 8, 1)),
        "vs_raw_insert": vs_raw, "vs_eventsourcing": vs_es,
        "raw_insert_events_per_s": round(eps("raw insert", 8, 1)),
        "eventsourcing_events_per_s": round(eps("eventsourcing", 8, 1)),
    }
    for writers, batch in ((1, 1), (1, 5), (8, 5)):
        key = f"w{writers}_b{batch}"
        summary[f"{key}_events_per_s"] = round(eps("store", writers, batch))
        summary[f"{key}_vs_raw_insert"], summary[f"{key}_vs_eventsourcing"] = ratios(writers, batch)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="turns each case takes")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured time per turn")
    parser.add_argument("--warmup", type=float, default=0.3, help="untimed run before each turn")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the server on kill too

    folder = Path(tempfile.mkdtemp(prefix="bench-event-store-"))
    server = EmbeddedPostgres(folder / "data", free_port())
    try:
        progress(f"starting an embedded PostgreSQL on port {server.port} in {folder}")
        server.start()
        results = asyncio.run(bench(server, args.rounds, args.seconds, args.warmup))
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(report(results)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
