"""What the commitment over the whole log costs, and how long proving things with it takes.

    make bench-ledger                          # 200,000 events
    python -m bench.ledger --events 1000000    # the 1M figure

Same run, same server: appends (8 writers, one pair's story per call) with no sealer, then with
the worker's sealer running beside them (every 0.5 s); sealing alone (events/s); a signed
checkpoint over the whole log; `verify --against` (every leaf recomputed from the events); the
per-stream chains' verify; a pair's bundle exported and checked by the stand-alone verifier.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.projections import Population, bench_database, generate, say
from events.ledger import export_stream, seal, take_checkpoint, verify_against
from events.store import PostgresEventStore, create_pool
from verifier.mentoring_verify import verify_bundle


async def run(args: argparse.Namespace) -> dict[str, Any]:
    key = Ed25519PrivateKey.generate()
    async with bench_database(args.database_url) as url:
        pool = await create_pool(url, min_size=2, max_size=20)
        try:
            population = Population()
            half = args.append_events
            began = time.perf_counter()
            plain = await generate(pool, population, half)
            plain_rate = plain / (time.perf_counter() - began)
            say(f"appends, no sealer: {plain_rate:,.0f} events/s")
            await seal(pool)

            async def sealer() -> None:
                while True:
                    await seal(pool)
                    await asyncio.sleep(0.5)

            sealing = asyncio.create_task(sealer())
            began = time.perf_counter()
            beside = await generate(pool, population, half)
            beside_rate = beside / (time.perf_counter() - began)
            sealing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sealing
            say(f"appends, sealer beside them: {beside_rate:,.0f} events/s")

            rest = max(args.events - plain - beside, 0)
            if rest:
                say(f"generating {rest:,} more events")
                await generate(pool, population, rest)
            total = await pool.fetchval("SELECT count(*) FROM events")
            began = time.perf_counter()
            sealed = await seal(pool)
            seal_s = time.perf_counter() - began
            say(f"sealed {sealed:,} events in {seal_s:,.1f} s")

            began = time.perf_counter()
            checkpoint = await take_checkpoint(pool, key)
            checkpoint_s = time.perf_counter() - began
            began = time.perf_counter()
            report = await verify_against(pool, checkpoint)
            against_s = time.perf_counter() - began
            assert report.ok, report.problem
            say(f"verify --against over {total:,} events: {against_s:,.1f} s")
            began = time.perf_counter()
            chains = await PostgresEventStore(pool).verify()
            chains_s = time.perf_counter() - began
            assert chains.ok
            stream = await pool.fetchval("SELECT stream_id FROM events ORDER BY position LIMIT 1")
            began = time.perf_counter()
            bundle = await export_stream(pool, stream, key)
            export_s = time.perf_counter() - began
            began = time.perf_counter()
            assert verify_bundle(bundle) == []
            offline_ms = (time.perf_counter() - began) * 1000
        finally:
            await pool.close()
    return {
        "bench": "ledger", "events": total, "append_events_per_s": round(plain_rate),
        "append_with_sealer_events_per_s": round(beside_rate),
        "append_ratio_with_sealer": round(beside_rate / plain_rate, 3),
        "seal_events_per_s": round(sealed / seal_s) if sealed else None,
        "checkpoint_s": round(checkpoint_s, 2), "verify_against_s": round(against_s, 1),
        "verify_chains_s": round(chains_s, 1), "export_pair_s": round(export_s, 2),
        "bundle_events": len(bundle["events"]), "offline_verify_ms": round(offline_ms, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="the log's size at the end")
    parser.add_argument("--append-events", type=int, default=30_000, help="events appended in each append phase")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server to use (a fresh database)")
    args = parser.parse_args(argv)
    if args.events < 1 or args.append_events < 1:
        parser.error("--events and --append-events must be at least 1")
    figures = asyncio.run(run(args))
    rows = [("appends, no sealer (events/s)", f"{figures['append_events_per_s']:,}"),
            ("appends, sealer beside them (events/s)", f"{figures['append_with_sealer_events_per_s']:,} "
                                                      f"(x{figures['append_ratio_with_sealer']})"),
            ("sealing (events/s)", f"{figures['seal_events_per_s']:,}" if figures["seal_events_per_s"] else "-"),
            ("signed checkpoint (s)", str(figures["checkpoint_s"])),
            (f"verify --against, {figures['events']:,} events (s)", str(figures["verify_against_s"])),
            ("verify of the stream chains (s)", str(figures["verify_chains_s"])),
            (f"export of one pair ({figures['bundle_events']} events) (s)", str(figures["export_pair_s"])),
            ("offline check of its bundle (ms)", str(figures["offline_verify_ms"]))]
    width = max(len(label) for label, _ in rows)
    print("\n".join(f"{label:<{width}}  {value}" for label, value in rows), flush=True)
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
