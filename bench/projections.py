"""Benchmark of the projections: rebuild throughput, live lag, audit query latency.

    python -m bench.projections                     1,000,000 events on a throw-away embedded server
    python -m bench.projections --events 50000      a quicker run
    python -m bench.projections --database-url URL  a server of yours (a fresh database is created)

In one run, on the same server:
1. generate a log of realistic pair lifecycles over many programmes (valid hash-chained events,
   written through the store's `append_events` function, one pair's story per call, from
   several tasks; a first slice of 50,000 is timed to estimate the rest);
2. read the whole log sequentially (the floor any projection pays), then rebuild every read model
   from it, and compare events/s;
3. run the projection runner under a sustained append load (500 events/s by default) and measure
   the lag from an append's commit to its visibility in every read model (p50, p95);
4. time the audit queries: a pair's trail, a person's trail, a programme's funnel (p50, p95).
The last line printed is one JSON object with the figures. Targets: rebuild >= 20,000 events/s,
lag p95 < 500 ms, pair trail p95 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import asyncpg

from events.base import NewEvent
from events.migrations import migrate
from events.store import Checkpoint, PostgresEventStore, create_pool
from projections import all_projections, queries
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from tests.projections import lifecycles as story

# How often each ending happens in the generated programmes (weights).
_MIX = [(story.full_lifecycle, 50), (story.declined_by_mentee, 8), (story.declined_by_mentor, 5),
        (story.expired_invitation, 7), (story.withdrawn_during_sessions, 10),
        (story.lapsed_after_risk, 10), (story.replaced_mentor, 10)]
APPEND_STORY = """SELECT out_position FROM append_events($1, 0, $2, $3, $4, $5, $6)"""


def say(message: str) -> None:
    print(message, flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the log -------------------------------------------------------------------------------------

class Population:
    """Programmes, people and stories, drawn from a seeded random generator (reproducible)."""

    def __init__(self, seed: int = 7, programmes: int = 200) -> None:
        self.random = random.Random(seed)
        self.programmes = [f"prog-{i:03d}" for i in range(programmes)]
        self.makers = [m for m, _ in _MIX]
        self.weights = [w for _, w in _MIX]
        self.count = 0

    def next_story(self) -> story.PairStory:
        r, n = self.random, self.count
        self.count += 1
        programme = r.choice(self.programmes)
        people = {"programme_id": programme, "mentor_id": f"M{r.randrange(5000):05d}",
                  "mentee_id": f"S{r.randrange(20000):05d}",
                  "hr_id": f"hr-{programme[-3:]}"}
        maker = r.choices(self.makers, self.weights)[0]
        s = maker(f"b{n:07d}", **people)
        # Spread the pairs over two years, so stage times and as-of queries look like real ones.
        shift = timedelta(days=r.randrange(730), minutes=r.randrange(1440))
        for step in s.steps:
            step.at += shift
        return s


def story_arrays(s: story.PairStory) -> tuple:
    """One pair's whole story as the arrays `append_events` takes, one metadata per event."""
    ids, types, versions, payloads, metadata = [], [], [], [], []
    for step in s.steps:
        meta = story.metadata(s, step).model_dump(mode="json", exclude_none=True)
        for event in step.events:
            ids.append(uuid.uuid4())
            types.append(event.event_type)
            versions.append(event.schema_version)
            payloads.append(event.model_dump(mode="json"))
            metadata.append(meta)
    return s.stream_id, ids, types, versions, payloads, metadata


async def generate(pool: asyncpg.Pool, population: Population, events: int, *,
                   writers: int = 8) -> int:
    """Append stories until `events` are written; one call per story, `writers` in parallel."""
    written = 0
    queue: asyncio.Queue = asyncio.Queue(maxsize=writers * 4)

    async def writer() -> None:
        while (arrays := await queue.get()) is not None:
            await pool.fetch(APPEND_STORY, *arrays)

    tasks = [asyncio.create_task(writer()) for _ in range(writers)]
    try:
        while written < events:
            s = population.next_story()
            await queue.put(story_arrays(s))
            written += s.event_count()
        for _ in tasks:
            await queue.put(None)
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return written


# --- measurements ---------------------------------------------------------------------------------

async def plain_read(store: PostgresEventStore, batch_size: int = 2000) -> tuple[int, float, float]:
    """Read the whole log in commit order: rows only, then rows decoded as RecordedEvents."""
    async def read(decode: bool) -> tuple[int, float]:
        started, count, after = time.perf_counter(), 0, Checkpoint()
        async with store.pool.acquire() as conn:
            while rows := await store.read_all_raw(conn, after, batch_size):
                if decode:
                    [store.to_recorded(r) for r in rows]
                count += len(rows)
                after = Checkpoint(rows[-1]["transaction_id"], rows[-1]["position"])
        return count, count / (time.perf_counter() - started)

    count, raw_rate = await read(decode=False)
    _count, decoded_rate = await read(decode=True)
    return count, raw_rate, decoded_rate


class Pace:
    """Hands out permission to append at a steady rate of events per second."""

    def __init__(self, rate: float) -> None:
        self.rate, self.next = rate, time.perf_counter()

    async def take(self, events: int) -> None:
        now = time.perf_counter()
        at = max(self.next, now)
        self.next = at + events / self.rate
        if at > now:
            await asyncio.sleep(at - now)


async def measure_lag(store: PostgresEventStore, dsn: str, population: Population, *,
                      rate: float, seconds: float) -> dict:
    """Append at `rate` events/s for `seconds` while the runner follows; lag to every read model."""
    names = [p.name for p in all_projections()]
    runner = ProjectionRunner(store, all_projections(), dsn=dsn, batch_size=500, poll_interval=1.0)
    running = asyncio.create_task(runner.run_forever())
    appended: dict[int, float] = {}  # position -> when its append returned (commit)
    lags: list[float] = []
    pace, stop = Pace(rate), asyncio.Event()
    sent = 0

    async def workflow() -> None:
        # One pair's workflow: its steps in order, each one append, at the shared pace.
        nonlocal sent
        while not stop.is_set():
            s, version = population.next_story(), 0
            for step in s.steps:
                if stop.is_set():
                    return
                await pace.take(len(step.events))
                result = await store.append(
                    s.stream_id, version, [NewEvent.of(e, uuid.uuid4()) for e in step.events],
                    story.metadata(s, step))
                done = time.perf_counter()
                for position in result.positions:
                    appended[position] = done
                version += len(step.events)
                sent += len(step.events)

    async def watcher() -> None:
        # Poll which appended events every projection's checkpoint has passed.
        while not stop.is_set() or appended:
            pending = list(appended)
            if pending:
                seen = await store.pool.fetch(
                    """WITH cp AS (SELECT transaction_id, position FROM projection_checkpoints
                                   WHERE name = ANY($2::text[]))
                       SELECT e.position FROM events e WHERE e.position = ANY($1::bigint[])
                         AND NOT EXISTS (SELECT 1 FROM cp WHERE (cp.transaction_id, cp.position)
                                         < (e.transaction_id::text::bigint, e.position))""",
                    pending, names)
                now = time.perf_counter()
                for r in seen:
                    lags.append(now - appended.pop(r["position"]))
            await asyncio.sleep(0.005)

    # Let the runner catch up with the generated log first: lag is about live following.
    await runner.run_until_caught_up(timeout=3600)
    watch = asyncio.create_task(watcher())
    workflows = [asyncio.create_task(workflow()) for _ in range(64)]
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*workflows)
    elapsed = time.perf_counter() - started
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watch, 30)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    return {"lag_ms_p50": round(percentile(lags, 0.5) * 1000, 1),
            "lag_ms_p95": round(percentile(lags, 0.95) * 1000, 1),
            "lag_events": len(lags), "append_events_per_s": round(sent / elapsed)}


async def measure_queries(pool: asyncpg.Pool, store: PostgresEventStore, samples: int) -> dict:
    r = random.Random(11)
    pairs = [row["pair_id"] for row in await pool.fetch(
        "SELECT pair_id FROM pair_overview.pairs TABLESAMPLE SYSTEM (5) LIMIT $1", samples)]
    actors = [row["mentee_id"] for row in await pool.fetch(
        "SELECT mentee_id FROM pair_overview.pairs TABLESAMPLE SYSTEM (5) LIMIT $1", samples)]
    programmes = [row["programme_id"] for row in await pool.fetch(
        "SELECT DISTINCT programme_id FROM pair_overview.pairs")]

    async def timed(call: Callable[[], Awaitable[object]]) -> float:
        started = time.perf_counter()
        await call()
        return (time.perf_counter() - started) * 1000

    figures = {}
    queries_by_label: dict[str, list[Callable[[], Awaitable[object]]]] = {
        "pair_trail": [functools.partial(queries.pair_report, pool, p) for p in pairs],
        "actor_trail": [functools.partial(queries.actor_report, pool, a) for a in actors],
        "funnel": [functools.partial(queries.funnel_report, pool, g)
                   for g in (r.choice(programmes) for _ in range(samples))],
    }
    for label, calls in queries_by_label.items():
        for call in calls[:5]:  # warm the caches and prepared statements
            await call()
        times = [await timed(call) for call in calls]
        figures[f"{label}_ms_p50"] = round(percentile(times, 0.5), 2)
        figures[f"{label}_ms_p95"] = round(percentile(times, 0.95), 2)
    return figures


# --- the run -------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def bench_database(database_url: str | None) -> AsyncIterator[str]:
    """A fresh, migrated database: on the given server, or on an embedded one in a temp folder."""
    server = None
    folder = None
    if database_url is None:
        from devstack.postgres import EmbeddedPostgres, free_port

        folder = tempfile.TemporaryDirectory(prefix="bench-projections-")
        server = EmbeddedPostgres(Path(folder.name) / "data", free_port())
        say(f"starting an embedded PostgreSQL in {folder.name}")
        await asyncio.to_thread(server.start)
        database_url = server.admin_url()
    name = f"bench_projections_{int(time.time())}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        yield url
    finally:
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        if server is not None:
            await asyncio.to_thread(server.stop)
        if folder is not None:
            folder.cleanup()


async def run(args: argparse.Namespace) -> dict:
    async with bench_database(args.database_url) as url:
        pool = await create_pool(url, min_size=2, max_size=20)
        store = PostgresEventStore(pool)
        population = Population()
        try:
            first = min(args.events, 50_000)
            started = time.perf_counter()
            written = await generate(pool, population, first)
            rate = written / (time.perf_counter() - started)
            say(f"generated {written:,} events at {rate:,.0f} events/s; "
                f"{args.events:,} will take about {args.events / rate:,.0f}s")
            if written < args.events:
                written += await generate(pool, population, args.events - written)
            generation_s = time.perf_counter() - started
            say(f"generated {written:,} events ({population.count:,} pairs) in {generation_s:,.1f}s")
            await pool.execute("VACUUM ANALYZE events")

            count, raw_rate, decoded_rate = await plain_read(store)
            say(f"plain sequential read of {count:,} events: {raw_rate:,.0f} rows/s, "
                f"{decoded_rate:,.0f} events/s decoded")
            report = await rebuild(store, all_projections(), dsn=url, batch_size=args.batch_size)
            say(f"rebuild of all {len(report.projections)} read models: {report.events:,} events in "
                f"{report.seconds:,.1f}s = {report.events_per_second:,.0f} events/s")

            lag = await measure_lag(store, url, population, rate=args.rate, seconds=args.lag_seconds)
            say(f"lag under {lag['append_events_per_s']} events/s: p50 {lag['lag_ms_p50']} ms, "
                f"p95 {lag['lag_ms_p95']} ms over {lag['lag_events']:,} events")

            latency = await measure_queries(pool, store, args.samples)
            say("query latency: " + ", ".join(f"{k} {v} ms" for k, v in latency.items()))
        finally:
            await store.close()
            await pool.close()
    return {
        "bench": "projections", "events": written, "pairs": population.count, "generation_s": round(generation_s, 1),
        "generation_events_per_s": round(written / generation_s),
        "plain_read_rows_per_s": round(raw_rate), "plain_read_events_per_s": round(decoded_rate),
        "rebuild_events_per_s": round(report.events_per_second),
        "rebuild_vs_plain_read": round(report.events_per_second / decoded_rate, 2),
        **lag, **latency,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server to use (a fresh database is created and dropped)")
    parser.add_argument("--batch-size", type=int, default=5000, help="rebuild batch size")
    parser.add_argument("--rate", type=float, default=500, help="append load, events/s")
    parser.add_argument("--lag-seconds", type=float, default=20)
    parser.add_argument("--samples", type=int, default=200, help="queries timed per kind")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args))
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
