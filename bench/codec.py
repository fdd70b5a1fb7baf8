"""What encrypting every payload costs a pair's lifecycle: the same pairs, same run, with and
without the payload codec.

    make bench-codec                       # 30 pairs per round, 2 rounds of each mode
    python -m bench.codec --pairs 100 --rounds 3

Each round starts `--pairs` pairs at once on a Temporal dev server, with the real worker
(activities writing to PostgreSQL), and drives each through its preparation: nomination, the
mentor's motivation, the senior's consent, the curriculum, two training modules, onboarding and
sign-off (8 updates, 9 activities per pair). Rounds alternate plain and encrypted, so drift on a
noisy machine falls on both. Printed: per mode, pairs per second and update latency; the ratios
encrypted/plain; the codec alone (encode + decode of one payload); then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

import demo
from bench.programme import fresh_database, percentile, say, servers
from codec.encryption import EncryptingCodec, encrypting_data_converter
from codec.keys import DataKeys, LocalKeyEncryptionKey
from settings import Settings
from workflows.inputs import pair_workflow_id
from workflows.pair_state import ActionResult, PairState
from workflows.payloads import DATA_CONVERTER


async def drive_pair(client: Client, task_queue: str, index: int, tag: str, latencies: list[float]) -> None:
    start = demo.demo_input(f"bc{tag}", datetime.now(UTC))
    mentor, mentee, hr = f"BM{index:05d}", f"BS{index:05d}", start.nominated_by.employee_id
    start = start.model_copy(update={
        "mentor": start.mentor.model_copy(update={"employee_id": mentor, "email": f"m{index}@example.com"}),
        "mentee": start.mentee.model_copy(update={"employee_id": mentee, "email": f"s{index}@example.com"})})
    handle = await client.start_workflow("MentoringPair", start, task_queue=task_queue,
                                         id=pair_workflow_id(start.programme_id, mentor, mentee))
    while True:  # nominated: the first workflow task and its activities are done
        try:
            if (await handle.query("state", result_type=PairState)).version >= 2:
                break
        except Exception:
            pass
        await asyncio.sleep(0.05)
    steps: list[tuple[str, dict[str, Any]]] = [
        ("confirm_motivation", {"recorded_by": mentor}),
        ("accept_invitation", {"recorded_by": mentee, "channel": "email"}),
        ("agree_curriculum", {"recorded_by": mentor, "topics": [start.topics[0]], "objectives": ["a first post"]}),
        *[("complete_training_module", {"recorded_by": mentor, "module": m}) for m in start.training_modules],
        ("onboard_mentee", {"recorded_by": hr}),
        ("sign_off_mentor", {"recorded_by": hr}),
    ]
    for name, payload in steps:
        began = time.perf_counter()
        await handle.execute_update(name, payload, result_type=ActionResult)
        latencies.append((time.perf_counter() - began) * 1000)
    await handle.terminate(reason="bench done")


async def one_round(mode: str, pairs: int, url: str, address: str, folder: Path, kek: LocalKeyEncryptionKey) -> dict[str, Any]:
    from runtime import open_database
    from worker import build_worker

    settings = Settings(database_url=url, temporal_address=address, state_dir=folder / "state",
                        temporal_task_queue=f"bench-codec-{mode}-{uuid.uuid4().hex[:6]}")
    pool = await open_database(url)
    try:
        converter = encrypting_data_converter(DataKeys(pool, kek)) if mode == "encrypted" else DATA_CONVERTER
        client = await Client.connect(address, data_converter=converter)
        latencies: list[float] = []
        tag = uuid.uuid4().hex[:8]
        async with build_worker(client, pool, settings):
            began = time.perf_counter()
            await asyncio.gather(*(drive_pair(client, settings.temporal_task_queue, i, tag, latencies)
                                   for i in range(pairs)))
            elapsed = time.perf_counter() - began
    finally:
        await pool.close()
    return {"mode": mode, "s": elapsed, "latencies": latencies}


async def codec_alone(url: str, kek: LocalKeyEncryptionKey, count: int = 5000) -> float:
    """Microseconds to encode and decode one ~1 KiB payload, its key cached."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        codec = EncryptingCodec(DataKeys(pool, kek), "pair-bench")
        payload = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({"x": "y" * 1000}).encode())
        await codec.decode(await codec.encode([payload]))  # the key, created and cached
        began = time.perf_counter()
        for _ in range(count):
            await codec.decode(await codec.encode([payload]))
        return (time.perf_counter() - began) / count * 1e6
    finally:
        await pool.close()


async def run(args: argparse.Namespace, folder: Path, admin_url: str, address: str) -> dict[str, Any]:
    kek = LocalKeyEncryptionKey(os.urandom(32))
    async with fresh_database(admin_url) as url:
        rounds = []
        for number in range(args.rounds):
            for mode in ("plain", "encrypted") if number % 2 == 0 else ("encrypted", "plain"):
                say(f"round {number + 1}: {args.pairs} pairs, {mode}")
                rounds.append(await one_round(mode, args.pairs, url, address, folder, kek))
        micro = await codec_alone(url, kek)
    figures: dict[str, Any] = {"bench": "codec", "pairs": args.pairs, "rounds": args.rounds}
    for mode in ("plain", "encrypted"):
        mine = [r for r in rounds if r["mode"] == mode]
        latencies = [ms for r in mine for ms in r["latencies"]]
        figures[f"{mode}_pairs_per_s"] = round(args.pairs * len(mine) / sum(r["s"] for r in mine), 2)
        figures[f"{mode}_update_p50_ms"] = round(statistics.median(latencies), 1)
        figures[f"{mode}_update_p95_ms"] = round(percentile(latencies, 0.95), 1)
    figures["lifecycle_ratio"] = round(figures["plain_pairs_per_s"] / figures["encrypted_pairs_per_s"], 3)
    figures["update_p50_ratio"] = round(figures["encrypted_update_p50_ms"] / figures["plain_update_p50_ms"], 3)
    figures["codec_roundtrip_us"] = round(micro, 1)
    return figures


def table(figures: dict[str, Any]) -> str:
    lines = [f"{'':<28}{'plain':>12}{'encrypted':>12}"]
    for label, key in (("pairs prepared per second", "pairs_per_s"), ("update p50 (ms)", "update_p50_ms"),
                       ("update p95 (ms)", "update_p95_ms")):
        lines.append(f"{label:<28}{figures[f'plain_{key}']:>12}{figures[f'encrypted_{key}']:>12}")
    lines.append(f"lifecycle time, encrypted / plain: x{figures['lifecycle_ratio']}; update p50: "
                 f"x{figures['update_p50_ratio']}; the codec alone: {figures['codec_roundtrip_us']} µs "
                 "to encode and decode a 1 KiB payload")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=30, help="pairs per round, driven at once")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each mode, alternating")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server to use (a fresh database is created and dropped)")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.rounds < 1:
        parser.error("--pairs and --rounds must be at least 1")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    folder = Path(tempfile.mkdtemp(prefix="bench-codec-"))
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
