"""The processes of a chaos run: real servers on free ports, and `python worker.py` twice.

Small equivalents of the e2e helpers (tests/e2e/conftest.py), so that `python -m chaos` needs
neither pytest nor the test package: a worker is started exactly as in production, its output
goes to a log file, and it can be SIGKILLed and started again.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devstack.postgres import EmbeddedPostgres, free_port
from devstack.temporal import TemporalDevServer

ROOT = Path(__file__).resolve().parents[1]
READY_LINE = "Ctrl-C stops everything"
# The code a restarted worker loads: if it changes during a run, replays prove nothing.
CODE_FOLDERS = ("workflows", "activities", "events")


def worker_env(**settings: str) -> dict[str, str]:
    """This process's environment without the project's settings, plus `settings` and a free
    API port (two workers on one machine must not both take 8400). The key-encryption key is
    kept: the workers and the driver must read each other's payloads."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_", "TEMPORAL_", "OTEL_", "MENTORING_", "SMTP_"))
           or k in ("MENTORING_KEK", "MENTORING_KEK_FILE")}
    env.update({"API_PORT": str(free_port()), "PYTHONUNBUFFERED": "1", **settings})
    return env


@dataclass
class Worker:
    """`python worker.py` as its own process; every start appends its output to `log_file`."""

    name: str
    env: dict[str, str]
    log_file: Path
    process: subprocess.Popen | None = None
    recent: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=200))
    starts: int = 0
    nondeterminism_lines: int = 0  # worker log lines naming a non-determinism error, all starts

    def start(self, timeout_s: float = 90) -> float:
        """Start and wait until it polls its task queue; returns the seconds it took."""
        began = time.monotonic()
        self.recent.clear()
        self.starts += 1
        self.process = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=ROOT, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        ready = threading.Event()
        threading.Thread(target=self._collect, args=(self.process, ready), daemon=True).start()
        deadline = began + timeout_s
        while time.monotonic() < deadline:
            if ready.wait(0.05):
                return time.monotonic() - began
            if self.process.poll() is not None:
                break
        output = "\n".join(list(self.recent)[-40:])
        self.kill()
        raise RuntimeError(f"worker {self.name} did not become ready:\n{output}")

    def _collect(self, process: subprocess.Popen, ready: threading.Event) -> None:
        if process.stdout is None:
            return
        with open(self.log_file, "a", encoding="utf-8") as log:
            log.write(f"--- start {self.starts} of worker {self.name}, pid {process.pid} ---\n")
            for line in process.stdout:
                log.write(line)
                log.flush()  # a SIGKILL next must not lose what was printed
                line = line.rstrip("\n")
                self.recent.append(line)
                if READY_LINE in line:
                    ready.set()
                if "nondeterminism" in line.lower():
                    self.nondeterminism_lines += 1

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _running(self) -> subprocess.Popen | None:
        process = self.process
        return process if process is not None and process.poll() is None else None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing gets to clean up."""
        if (process := self._running()) is not None:
            process.kill()
            process.wait(30)

    def interrupt(self, timeout_s: float = 60) -> int | None:
        """Ctrl-C, as an operator stops it; returns the exit code (None if it was not running)."""
        if (process := self._running()) is None:
            return None
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9


@contextlib.contextmanager
def own_servers(work_dir: Path) -> Iterator[tuple[str, str]]:
    """PostgreSQL and the Temporal dev server on free 127.0.0.1 ports, data under `work_dir`;
    yields (database URL, Temporal address) and stops both afterwards."""
    postgres = EmbeddedPostgres(work_dir / "postgres", free_port())
    temporal = TemporalDevServer(work_dir / "temporal" / "temporal.db", port=free_port(),
                                 ui_port=free_port(), headless=True)
    try:
        postgres.start()
        temporal.start()
        yield postgres.url, temporal.address
    finally:
        temporal.stop()
        postgres.stop()


def code_fingerprint(root: Path = ROOT) -> str:
    """A hash of the workflow, activity and event code (plus worker.py) as it is on disk now."""
    digest = hashlib.sha256()
    files = sorted(p for folder in CODE_FOLDERS for p in (root / folder).rglob("*.py"))
    for path in [*files, root / "worker.py"]:
        digest.update(str(path.relative_to(root)).encode())
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
    return digest.hexdigest()
