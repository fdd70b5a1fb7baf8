"""`make run` in a test: `worker.py --dev` brings the whole stack up, Ctrl-C stops all of it,
and the next start finds the same workflows and events."""

from __future__ import annotations

import json
import socket
import stat
import urllib.request
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.conftest import ROOT, WorkerProcess, dev_stack_setup, temporal_cli

EXAMPLE_INPUT = ROOT / "examples" / "pair-input.json"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_dev_stack_runs_stops_cleanly_and_keeps_its_data(tmp_path: Path):
    setup = dev_stack_setup(tmp_path / "state")
    ports = setup.ports
    stack = WorkerProcess(setup.env, ["--dev"])
    server = setup.cli_server(tmp_path)

    stack.start()
    database_url = setup.database_url  # with the password the stack generated
    try:
        # No open doors: the state folder is its owner's only, and the database wants a password.
        state = tmp_path / "state"
        assert stat.S_IMODE(state.stat().st_mode) & 0o066 == 0, "others may list or change the state folder"
        for secret in ("postgres-password", "api-tokens.json", "temporal.db", "kek"):
            assert stat.S_IMODE((state / secret).stat().st_mode) == 0o600, secret
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{ports['pg']}/mentoring")
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(f"postgresql://postgres:guess@127.0.0.1:{ports['pg']}/mentoring")
        assert any(f"http://127.0.0.1:{ports['ui']}" in line for line in stack.lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['ui']}/", timeout=10) as page:
            assert page.status == 200  # the Web UI answers
        # ... and reads and writes payloads through the stack's codec server.
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['ui']}/api/v1/settings", timeout=10) as page:
            codec = json.loads(page.read())["Codec"]
        assert codec["Endpoint"] == f"http://127.0.0.1:{ports['api']}/codec", codec
        # HR's dashboard is served with the API: its address in the banner, its sign-in page up.
        assert any(f"http://localhost:{ports['api']}/dashboard" in line for line in stack.lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['api']}/dashboard/sign-in", timeout=10) as page:
            assert page.status == 200 and b'name="token"' in page.read()
        attributes = temporal_cli(server, "operator", "search-attribute", "list")
        assert "MentoringStage" in attributes.stdout and "MentoringProgramme" in attributes.stdout

        started = temporal_cli(server, "workflow", "start", "--type", "MentoringPair",
                               "--task-queue", "mentoring", "--workflow-id", "pair-restart-check",
                               "--input-file", str(EXAMPLE_INPUT))
        assert started.returncode == 0, started.stderr
        conn = await asyncpg.connect(database_url)
        try:
            for _ in range(100):
                count = await conn.fetchval("SELECT count(*) FROM events")
                if count:
                    break
                await __import__("asyncio").sleep(0.1)
            assert count >= 1, "the nomination was not recorded"
        finally:
            await conn.close()
        assert stack.interrupt() == 0, "\n".join(stack.lines[-20:])
    finally:
        stack.kill()
    for name, port in ports.items():
        assert not _listening(port), f"{name} still listening on {port} after Ctrl-C"

    stack.start()
    try:
        described = temporal_cli(server, "workflow", "describe", "--workflow-id", "pair-restart-check")
        assert described.returncode == 0, described.stderr
        assert json.loads(described.stdout)["workflowExecutionInfo"]["type"]["name"] == "MentoringPair"
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM events") >= count
        finally:
            await conn.close()
        assert stack.interrupt() == 0
    finally:
        stack.kill()
