"""Benchmark of the dashboard: a programme of 2,000 pairs, its page and its report.

    python -m bench.dashboard                  2,000 pairs on a throw-away embedded server
    python -m bench.dashboard --pairs 500      a quicker look

In one run, on the same server: realistic pair stories (every kind of ending, spread over two
years) are appended for one programme, the projection runner builds the read models, then each
of these is timed (p50, p95 over --samples requests, served in-process by the API):
- the baseline: the programme's funnel as JSON (`GET /audit/funnel`), one existing read-model query;
- the figures alone (`dashboard.figures.dashboard`, every query the page makes);
- the page (`GET /dashboard?programme=...`): the figures, seven charts drawn, the HTML;
- the programme's report as a PDF.
The last line printed is one JSON object. Target: the page in under a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable

import httpx

from api.app import create_app
from bench.projections import (
    APPEND_STORY,
    Population,
    bench_database,
    percentile,
    say,
    story_arrays,
)
from events.store import PostgresEventStore, create_pool
from projections import all_projections
from projections.runner import ProjectionRunner

PROGRAMME = "prog-000"
TOKEN = {"bench-token": "hr"}


async def timed(call: Callable[[], Awaitable[object]], samples: int) -> tuple[float, float]:
    for _ in range(2):  # warm the caches and prepared statements
        await call()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return round(percentile(times, 0.5), 1), round(percentile(times, 0.95), 1)


async def run(args: argparse.Namespace) -> dict:
    from dashboard.figures import dashboard

    async with bench_database(args.database_url) as url:
        pool = await create_pool(url, min_size=2, max_size=10)
        store = PostgresEventStore(pool)
        try:
            population = Population(programmes=1)
            started = time.perf_counter()
            for _ in range(args.pairs):
                await pool.fetch(APPEND_STORY, *story_arrays(population.next_story()))
            say(f"appended {args.pairs:,} pairs' stories in {time.perf_counter() - started:,.1f}s")
            runner = ProjectionRunner(store, all_projections(), dsn=url, batch_size=2000)
            await runner.run_until_caught_up(timeout=3600)
            events = await pool.fetchval("SELECT count(*) FROM events")
            say(f"read models built from {events:,} events")

            app = create_app(pool, TOKEN)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://bench") as client:
                signed_in = await client.post("/dashboard/sign-in", data={"token": "bench-token"})
                assert signed_in.status_code == 303, signed_in.text
                headers = {"Authorization": "Bearer bench-token"}

                async def funnel() -> None:
                    answer = await client.get("/audit/funnel", params={"programme": PROGRAMME}, headers=headers)
                    answer.raise_for_status()

                async def page() -> None:
                    answer = await client.get("/dashboard", params={"programme": PROGRAMME})
                    answer.raise_for_status()
                    assert answer.text.count("<svg") == 7

                async def report() -> None:
                    answer = await client.get(f"/dashboard/programmes/{PROGRAMME}/report.pdf")
                    answer.raise_for_status()

                figures = await dashboard(pool, PROGRAMME)
                say(f"the programme: {figures.pairs:,} pairs, {figures.alive:,} alive, "
                    f"{len(figures.alive_over_time)} weeks, {len(figures.needing_hr)} needing HR")
                baseline = await timed(funnel, args.samples)
                say(f"baseline, the funnel as JSON: p50 {baseline[0]} ms, p95 {baseline[1]} ms")
                alone = await timed(lambda: dashboard(pool, PROGRAMME), args.samples)
                say(f"the figures alone: p50 {alone[0]} ms, p95 {alone[1]} ms")
                whole = await timed(page, args.samples)
                say(f"the dashboard page: p50 {whole[0]} ms, p95 {whole[1]} ms "
                    f"(x{whole[1] / baseline[1]:.1f} the funnel's p95)")
                pdf = await timed(report, max(3, args.samples // 4))
                say(f"the report PDF: p50 {pdf[0]} ms, p95 {pdf[1]} ms")
        finally:
            await pool.close()
    return {"bench": "dashboard", "pairs": args.pairs, "events": events,
            "funnel_json_ms_p50": baseline[0], "funnel_json_ms_p95": baseline[1],
            "figures_ms_p50": alone[0], "figures_ms_p95": alone[1],
            "page_ms_p50": whole[0], "page_ms_p95": whole[1],
            "page_vs_funnel_json_p95": round(whole[1] / baseline[1], 1),
            "report_pdf_ms_p50": pdf[0], "report_pdf_ms_p95": pdf[1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=20, help="requests timed per kind")
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server to use (a fresh database is created and dropped)")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args))
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
