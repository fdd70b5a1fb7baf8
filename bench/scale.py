"""Thousands of live pairs on one worker, and what the project costs over bare Temporal.

    make bench-scale                              # 10,000 pairs (half an hour or more on 2 cores)
    python -m bench.scale --pairs 1000            # a quicker look

The stack is `make run`'s: an embedded PostgreSQL, the Temporal dev server, and `worker.py` in a
process of its own (Temporal worker, projections, sealer, API). The one setting it changes, on
both sides: WORKER_MAX_CACHED_WORKFLOWS, to hold every pair alive (unless already set). The run,
for each side:

1. 100 pairs are started, then `confirm_motivation` is sent to 60 of them at 20 a second: the
   update latency with 100 pairs alive.
2. The rest are started, `--concurrency` at a time: the start rate (until each pair's first
   notice is recorded). Meanwhile the worker's memory and the projections' lag are sampled.
3. `confirm_motivation` again, at 20 a second for `--update-seconds`, to other pairs: the latency
   with every pair alive.
4. Every other pair's reminder was set to fall due at the same moment (each pair's policy says so,
   counted from its start; the moment leaves room for starting them all at half the first 100's
   pace, and for the updates): the time from that moment until every reminder notice is recorded.
   The pairs updated are left out (they are no longer waiting for the mentor).

The other side is bench/bare.py: the same activities, timers and updates in a bare workflow
(no event store, no projection, no codec), on its own worker process and task queue, against
the same Temporal server. Printed: a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client

import demo
from bench.programme import fresh_database, percentile, say, servers
from devstack.postgres import free_port
from workflows.inputs import pair_workflow_id

REPOSITORY = Path(__file__).resolve().parents[1]
FIRST_PAIRS = 100
FIRST_UPDATES = 60
WAIT_LIMIT_S = 3600.0


@dataclass
class Side:
    """One side of the comparison: how to start a pair, update it, and count what it recorded."""

    name: str
    worker_pid: int
    start: Callable[[int, int], Awaitable[None]]  # (index, reminder after seconds)
    update: Callable[[int], Awaitable[None]]
    requests_recorded: Callable[[], Awaitable[int]]  # first notices recorded (one per pair)
    reminders_recorded: Callable[[], Awaitable[int]]
    bytes_used: Callable[[], Awaitable[dict[str, int]]]
    lag: Callable[[], Awaitable[tuple[int, float]]] | None = None  # (events behind, seconds)
    samples: dict[str, list[float]] = field(default_factory=lambda: {"rss_mb": [], "behind": [], "lag_s": []})


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def sample(side: Side, stop: asyncio.Event) -> None:
    while not stop.is_set():
        side.samples["rss_mb"].append(rss_mb(side.worker_pid))
        if side.lag is not None:
            with contextlib.suppress(Exception):
                behind, lag = await side.lag()
                side.samples["behind"].append(behind)
                side.samples["lag_s"].append(lag)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def wait_until(count: Callable[[], Awaitable[int]], target: int, what: str) -> float | None:
    began = time.monotonic()
    shown = -1
    while time.monotonic() - began < WAIT_LIMIT_S:
        done = await count()
        if done >= target:
            return time.monotonic() - began
        if done // 1000 != shown:  # progress, every thousand
            shown = done // 1000
            say(f"  {what}: {done}/{target}")
        await asyncio.sleep(0.5)
    say(f"  {what}: gave up after {WAIT_LIMIT_S:.0f} s")
    return None


async def paced_updates(side: Side, indexes: list[int], per_second: float) -> list[float]:
    """Send one update every 1/per_second seconds (each on its own pair), whatever the answers take."""
    latencies: list[float] = []

    async def one(index: int) -> None:
        began = time.perf_counter()
        await side.update(index)
        latencies.append((time.perf_counter() - began) * 1000)

    tasks = []
    began = time.monotonic()
    for n, index in enumerate(indexes):
        await asyncio.sleep(max(0.0, began + n / per_second - time.monotonic()))
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    return latencies


async def drive(side: Side, args: argparse.Namespace) -> dict[str, Any]:
    say(f"{side.name}: {args.pairs} pairs")
    before = await side.bytes_used()
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(side, stop))
    burst_at = time.time() + 86_400.0  # the first pairs' reminders: not in this run
    semaphore = asyncio.Semaphore(args.concurrency)
    late = 0

    async def start(index: int) -> None:
        nonlocal late
        async with semaphore:
            after = math.ceil(burst_at - time.time())
            late += after < 1
            await side.start(index, max(1, after))

    figures: dict[str, Any] = {}
    began = time.monotonic()
    await asyncio.gather(*(start(i) for i in range(FIRST_PAIRS)))
    first_s = await wait_until(side.requests_recorded, FIRST_PAIRS, "first pairs nominated")
    first = await paced_updates(side, list(range(FIRST_UPDATES)), args.updates_per_second)
    # The reminders' moment: after every other pair has started, at the first pairs' pace (with room),
    # and after the updates: the workflows count from their own start, so it must not come sooner.
    rate = FIRST_PAIRS / first_s if first_s else 1.0
    burst_at = time.time() + (args.burst_after if args.burst_after is not None else
                              1.5 * (args.pairs - FIRST_PAIRS) / rate + 2 * args.update_seconds + 60)
    say(f"  the reminders fall due in {burst_at - time.time():.0f} s")

    rest_began = time.monotonic()
    await asyncio.gather(*(start(i) for i in range(FIRST_PAIRS, args.pairs)))
    all_started = await wait_until(side.requests_recorded, args.pairs, "pairs nominated")
    start_s = time.monotonic() - rest_began
    figures["start_rate_per_s"] = round((args.pairs - FIRST_PAIRS) / start_s, 1) if all_started is not None else None
    updated = list(range(FIRST_PAIRS, FIRST_PAIRS + int(args.updates_per_second * args.update_seconds)))
    updated = [i for i in updated if i < args.pairs]
    full = await paced_updates(side, updated, args.updates_per_second)

    expected = args.pairs - FIRST_PAIRS - len(updated)
    wait = burst_at - time.time()
    if wait > 0:
        say(f"  waiting {wait:.0f} s for the reminders' moment")
        await asyncio.sleep(wait)
    else:  # the starts or the updates ran past it: the burst's figure is then too short
        say(f"  the reminders' moment passed {-wait:.0f} s ago, during the starts or the updates")
    figures["burst_missed_by_s"] = round(max(0.0, -wait), 1)
    figures["reminders_before_their_moment"] = await side.reminders_recorded()
    burst = await wait_until(side.reminders_recorded, expected, "reminders recorded")
    stop.set()
    await sampler
    after = await side.bytes_used()
    for label, values in (("100", first), ("all", full)):
        figures[f"update_p50_ms_{label}"] = round(statistics.median(values), 1)
        figures[f"update_p95_ms_{label}"] = round(percentile(values, 0.95), 1)
        figures[f"update_p99_ms_{label}"] = round(percentile(values, 0.99), 1)
    figures.update({
        "reminder_burst_s": round(burst, 1) if burst is not None else None,
        "reminders": expected, "late_starts": late,
        "worker_rss_mb": round(rss_mb(side.worker_pid), 1),
        "worker_peak_rss_mb": round(rss_mb(side.worker_pid, "VmHWM"), 1),
        "total_s": round(time.monotonic() - began, 1),
    })
    for store, used in after.items():
        figures[f"{store}_bytes_per_pair"] = round((used - before.get(store, 0)) / args.pairs)
    if side.samples["behind"]:
        figures["projection_max_behind"] = int(max(side.samples["behind"]))
        figures["projection_max_lag_s"] = round(max(side.samples["lag_s"]), 2)
    return figures


# --- the project's side ----------------------------------------------------------------------------

def temporal_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in (folder / "temporal").glob("temporal.db*"))


@contextlib.contextmanager
def process(command: list[str], env: dict[str, str], log: Path):
    with log.open("w") as out:
        child = subprocess.Popen(command, cwd=REPOSITORY, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield child
        finally:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def cache_for(pairs: int) -> dict[str, str]:
    """The one setting thousands of pairs need on each side: a cache of workflows holding every
    pair alive (else those beyond the SDK's 1,000 replay their history for each task); unless
    WORKER_MAX_CACHED_WORKFLOWS is set already."""
    return {"WORKER_MAX_CACHED_WORKFLOWS": os.environ.get("WORKER_MAX_CACHED_WORKFLOWS", str(max(1000, pairs + 200)))}


async def ours(args: argparse.Namespace, folder: Path, url: str, address: str) -> dict[str, Any]:
    from projections import all_projections
    from projections.runner import projection_status
    from runtime import connect_temporal, data_keys, open_database
    from settings import Settings
    from workflows.policy import Policy

    kek = base64.b64encode(os.urandom(32)).decode()
    queue = f"bench-scale-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "DATABASE_URL": url, "TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": queue,
           "MENTORING_KEK": kek, "STATE_DIR": str(folder / "state"), "OUTBOX_DIR": str(folder / "outbox"),
           "API_PORT": str(free_port()), "MENTORING_API_TOKENS": json.dumps({uuid.uuid4().hex: "hr"}),
           **cache_for(args.pairs)}
    settings = Settings(database_url=url, temporal_address=address, temporal_task_queue=queue, mentoring_kek=kek)
    pool = await open_database(url, max_size=4)  # migrated before the worker comes up
    try:
        client = await connect_temporal(settings, data_keys(settings, pool))
        with process([sys.executable, "worker.py"], env, folder / "worker.log") as worker:
            tag = uuid.uuid4().hex[:6]
            today = datetime.now(UTC)
            handles: dict[int, Any] = {}
            mentors: dict[int, str] = {}

            async def start(index: int, reminder_after: int) -> None:
                pair = demo.demo_input(f"scale-{tag}", today)
                mentor, mentee = f"SM{index:06d}", f"SS{index:06d}"
                # Days, as in production, but the mentor's reminder: due at the burst's moment.
                policy = Policy(motivation_reminder_after=f"PT{reminder_after}S", motivation_expires_after="P7D")
                pair = pair.model_copy(update={
                    "mentor": pair.mentor.model_copy(update={"employee_id": mentor, "email": f"m{index}@example.com"}),
                    "mentee": pair.mentee.model_copy(update={"employee_id": mentee, "email": f"s{index}@example.com"}),
                    "policy": policy})
                handles[index] = await client.start_workflow(
                    "MentoringPair", pair, task_queue=queue, id=pair_workflow_id(pair.programme_id, mentor, mentee))
                mentors[index] = mentor

            async def update(index: int) -> None:
                await handles[index].execute_update("confirm_motivation", {"recorded_by": mentors[index]})

            async def notices(kind: str) -> int:
                return await pool.fetchval(
                    "SELECT count(*) FROM events WHERE event_type = 'NotificationSent' AND payload->>'kind' = $1", kind)

            async def used() -> dict[str, int]:
                return {"postgres": await pool.fetchval("SELECT pg_database_size(current_database())"),
                        "temporal": temporal_bytes(folder)}

            names = [p.name for p in all_projections()]

            async def lag() -> tuple[int, float]:
                statuses = await projection_status(pool, names)
                now = datetime.now(UTC)
                waiting = [(now - s.oldest_waiting_since).total_seconds() for s in statuses if s.oldest_waiting_since]
                return max(s.behind for s in statuses), max(waiting, default=0.0)

            side = Side("mentoring", worker.pid, start, update, lambda: notices("motivation_request"),
                        lambda: notices("motivation_reminder"), used, lag)
            return await drive(side, args)
    finally:
        await pool.close()


async def bare(args: argparse.Namespace, folder: Path, address: str) -> dict[str, Any]:
    queue = f"bench-bare-{uuid.uuid4().hex[:6]}"
    outbox = folder / "bare-outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    client = await Client.connect(address)
    with process([sys.executable, "-m", "bench.bare", address, queue, str(outbox)],
                 {**os.environ, **cache_for(args.pairs)},
                 folder / "bare-worker.log") as worker:
        handles: dict[int, Any] = {}
        tag = uuid.uuid4().hex[:6]

        async def start(index: int, reminder_after: int) -> None:
            pair_id = f"{tag}-{index}"
            handles[index] = await client.start_workflow(
                "BarePair", {"pair_id": pair_id, "reminder_after_s": reminder_after}, id=f"bare-{pair_id}",
                task_queue=queue)

        async def update(index: int) -> None:
            await handles[index].execute_update("confirm_motivation", {"recorded_by": f"SM{index}",
                                                                       "pair_id": f"{tag}-{index}"})

        async def files(suffix: str) -> int:
            return sum(1 for _ in outbox.glob(f"*{suffix}"))

        async def used() -> dict[str, int]:
            return {"temporal": temporal_bytes(folder)}

        side = Side("bare", worker.pid, start, update, lambda: files("-request.txt"),
                    lambda: files("-reminder.txt"), used)
        return await drive(side, args)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


async def run(args: argparse.Namespace, folder: Path, admin_url: str, address: str) -> dict[str, Any]:
    async with fresh_database(admin_url) as url:
        mine = await ours(args, folder, url, address)
    baseline = await bare(args, folder, address)
    return {
        "bench": "scale", "active_pairs": args.pairs,
        "update_p95_ms": mine["update_p95_ms_all"], "reminder_burst_s": mine["reminder_burst_s"],
        "overhead_vs_bare": ratio(baseline["start_rate_per_s"], mine["start_rate_per_s"]),
        "update_p95_vs_bare": ratio(mine["update_p95_ms_all"], baseline["update_p95_ms_all"]),
        "reminder_burst_vs_bare": ratio(mine["reminder_burst_s"], baseline["reminder_burst_s"]),
        "mentoring": mine, "bare": baseline,
    }


def table(figures: dict[str, Any]) -> str:
    mine, base = figures["mentoring"], figures["bare"]
    rows = [("pairs started per second", "start_rate_per_s"),
            ("update p50 / p95 / p99 ms, 100 pairs", ("update_p50_ms_100", "update_p95_ms_100", "update_p99_ms_100")),
            (f"update p50 / p95 / p99 ms, {figures['active_pairs']} pairs",
             ("update_p50_ms_all", "update_p95_ms_all", "update_p99_ms_all")),
            ("reminder burst: s until all recorded", "reminder_burst_s"),
            ("worker RSS now / peak (MB)", ("worker_rss_mb", "worker_peak_rss_mb")),
            ("PostgreSQL bytes per pair", "postgres_bytes_per_pair"),
            ("Temporal bytes per pair", "temporal_bytes_per_pair"),
            ("projections: max events behind / max lag s", ("projection_max_behind", "projection_max_lag_s"))]
    lines = [f"{'':<48}{'mentoring':>22}{'bare Temporal':>22}"]
    for label, keys in rows:
        keys = keys if isinstance(keys, tuple) else (keys,)
        shown = [" / ".join(str(side.get(k, "-")) for k in keys) for side in (mine, base)]
        lines.append(f"{label:<48}{shown[0]:>22}{shown[1]:>22}")
    lines.append(f"overhead vs bare: start rate x{figures['overhead_vs_bare']}, update p95 "
                 f"x{figures['update_p95_vs_bare']}, reminder burst x{figures['reminder_burst_vs_bare']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10_000, help="pairs alive at once")
    parser.add_argument("--concurrency", type=int, default=50, help="starts in flight at once")
    parser.add_argument("--updates-per-second", type=float, default=20.0)
    parser.add_argument("--update-seconds", type=float, default=20.0, help="how long the updates run with every pair alive")
    parser.add_argument("--burst-after", type=float, default=None,
                        help="seconds from the first 100 pairs' nomination to the reminders' moment (default: "
                             "room for starting the others at half their pace, and for the updates)")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server to use (a fresh database is created and dropped)")
    args = parser.parse_args(argv)
    if args.pairs < FIRST_PAIRS + args.updates_per_second * args.update_seconds + 1:
        parser.error(f"--pairs must leave room for the updates: at least "
                     f"{int(FIRST_PAIRS + args.updates_per_second * args.update_seconds + 1)}")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        with servers(folder, args.database_url) as (admin_url, address):
            figures = asyncio.run(run(args, folder, admin_url, address))
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(table(figures), flush=True)
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
