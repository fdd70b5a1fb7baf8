"""One chaos run: two workers, a killer, C client drivers over N pairs, then the checks.

The servers are given (pytest's session fixtures, or `own_servers` for `python -m chaos`); the
run uses a fresh task queue and programme id, so it shares a server with anything else safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaos.checks import (
    Check,
    check_hash_chain,
    check_histories,
    check_log,
    check_notices,
    check_read_models,
    describe_unfinished,
    wait_for_projections,
)
from chaos.config import ChaosConfig
from chaos.driver import PairDriver, PairFailed, PairRun, Sample, describe, new_run
from chaos.killer import Killer
from chaos.report import ChaosReport, percentile, stall_figures
from chaos.stack import Worker, code_fingerprint, worker_env


async def run_chaos(config: ChaosConfig, *, temporal_address: str, database_url: str,
                    work_dir: Path, say: Callable[[str], None] = print) -> ChaosReport:
    from codec.keys import generate_kek_file
    from events.store import PostgresEventStore
    from runtime import connect_temporal, data_keys, open_database
    from settings import Settings

    began = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    programme_id = task_queue = f"chaos-{run_id}"
    seed = config.seed if config.seed is not None else random.randrange(2**32)
    state_dir, logs = work_dir / "state", work_dir / "logs"  # one STATE_DIR: one outbox for both
    logs.mkdir(parents=True, exist_ok=True)
    fingerprint = code_fingerprint()

    pool = await open_database(database_url, max_size=8)  # migrated, like the workers do
    if not (os.environ.get("MENTORING_KEK") or os.environ.get("MENTORING_KEK_FILE")):
        generate_kek_file(state_dir / "kek")  # the workers find it in their STATE_DIR
    settings = Settings(temporal_address=temporal_address, state_dir=state_dir)
    client = await connect_temporal(settings, data_keys(settings, pool))
    store = PostgresEventStore(pool)
    workers = [Worker(name, worker_env(DATABASE_URL=database_url, TEMPORAL_ADDRESS=temporal_address,
                                       TEMPORAL_TASK_QUEUE=task_queue, STATE_DIR=str(state_dir)),
                      logs / f"worker-{name}.log") for name in ("A", "B")]
    runs = [new_run(index, programme_id) for index in range(1, config.pairs + 1)]
    samples: list[Sample] = []
    stop = asyncio.Event()
    killer = Killer(workers, config.kills, config.kill_every, random.Random(seed), say,
                    active_pairs=lambda: sum(r.status == "running" for r in runs))
    killer_task: asyncio.Task | None = None
    figures: dict[str, Any] = {"run_id": run_id, "programme_id": programme_id, "seed": seed}
    try:
        for worker in workers:
            await asyncio.to_thread(worker.start)
        say(f"run {run_id}: {config.pairs} pairs, {config.clients} clients, up to {config.kills} "
            f"kills every {config.kill_every[0]:g}-{config.kill_every[1]:g} s; task queue "
            f"{task_queue}; logs in {logs}")
        started = time.monotonic()
        killer_task = asyncio.create_task(killer.run(stop, started), name="chaos-killer")
        queue: asyncio.Queue[PairRun] = asyncio.Queue()
        for run in runs:
            queue.put_nowait(run)

        async def client_loop() -> None:
            while not queue.empty():
                await _drive(queue.get_nowait(), client, config, programme_id, task_queue,
                             samples.append, say)

        await asyncio.gather(*(client_loop() for _ in range(config.clients)))
        drive_s = time.monotonic() - started
        stop.set()

        # --- checks -----------------------------------------------------------------------
        workers_check = Check("workers restart after each kill and stop cleanly")
        try:
            await killer_task
        except Exception as exc:
            workers_check.problems.append(f"the killer stopped: {describe(exc)}")
        checks = [await describe_unfinished(client, runs)]
        lag = await wait_for_projections(pool)
        for worker in workers:
            code = await asyncio.to_thread(worker.interrupt)
            if code != 0:
                workers_check.problems.append(
                    f"worker {worker.name} exited with {code} on Ctrl-C; see {worker.log_file}")
        failed, replays = await check_histories(client, runs, figures)
        checks += [
            failed, replays,
            await check_log(store, runs, figures),
            await check_notices(pool, state_dir / "outbox", figures),
            await check_hash_chain(store),
            await check_read_models(store, database_url, lag, figures),
            workers_check,
        ]
        code_check = Check("the workflow code stayed the same during the run")
        if code_fingerprint() != fingerprint:
            code_check.problems.append("workflows/, activities/, events/ or worker.py changed on "
                                       "disk: restarted workers ran other code; run again")
        checks.append(code_check)
    finally:
        stop.set()
        if killer_task is not None and not killer_task.done():
            killer_task.cancel()
            with contextlib.suppress(BaseException):
                await killer_task
        for worker in workers:
            worker.kill()
        await store.close()
        await pool.close()

    restarts = [k.restart_s for k in killer.kills]
    figures.update({
        "pairs": config.pairs, "completed": sum(r.status == "completed" for r in runs),
        "stuck": sum(r.status == "stuck" for r in runs),
        "failed": sum(r.status == "failed" for r in runs),
        "kills": len(killer.kills), "kills_wanted": config.kills, "clients": config.clients,
        "kill_every_s": list(config.kill_every), "pair_deadline_s": config.pair_deadline_s,
        "drive_s": round(drive_s, 1), "duration_s": round(time.monotonic() - began, 1),
        "stall": stall_figures(samples, runs),
        "worker_restart_s": {"p50_s": round(percentile(restarts, 50), 2),
                             "max_s": round(max(restarts), 2)} if restarts else {},
        "nondeterminism_log_lines": sum(w.nondeterminism_lines for w in workers),
        "transient_client_errors": sum(r.transient_errors for r in runs),
        "reminders_not_seen_by_driver": sum(not seen for r in runs for seen in r.reminder_seen.values()),
    })
    return ChaosReport(figures=figures, checks=checks, runs=runs, samples=samples)


async def _drive(run: PairRun, client: Any, config: ChaosConfig, programme_id: str,
                 task_queue: str, record: Callable[[Sample], None],
                 say: Callable[[str], None]) -> None:
    """One pair, within its deadline; the outcome goes into `run`, never raised."""
    driver = PairDriver(client, config, programme_id, task_queue, run, record)
    run.status, run.started = "running", time.monotonic()
    try:
        await asyncio.wait_for(driver.drive(), config.pair_deadline_s)
        run.status = "completed"
    except TimeoutError:
        driver.record_inflight()
        run.status = "stuck"
        run.detail = f"not completed within {config.pair_deadline_s:g} s"
    except PairFailed as exc:
        run.status, run.detail = "failed", str(exc)
    except Exception as exc:  # a permanent client error: reported with the pair, never raised
        run.status, run.detail = "failed", f"unexpected error: {describe(exc)}"
    finally:
        run.finished = time.monotonic()
    say(f"pair {run.label} ({run.sessions} session(s)) {run.status} in {run.seconds:.1f} s"
        + (f": {run.detail}" if run.detail else ""))
