"""A wrong setting stops start-up with one clear line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.postgres import free_port

ROOT = Path(__file__).resolve().parents[1]


def run_worker(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "TEMPORAL_"))}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "worker.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("env", "expected"), [
    ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"),
    ({"DATABASE_URL": f"postgresql://u@127.0.0.1:{free_port()}/x"}, "cannot reach PostgreSQL"),
    ({"TEMPORAL_ADDRESS": "no-port-here"}, "TEMPORAL_ADDRESS"),
    ({"OTEL_TRACES_EXPORTER": "carrier-pigeon"}, "OTEL_TRACES_EXPORTER"),
    ({"MENTORING_API_TOKENS": '{"t": "admin"}'}, "MENTORING_API_TOKENS"),
])
def test_bad_setting_gives_one_clear_line(env: dict[str, str], expected: str):
    result = run_worker(env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("[mentoring] cannot start:")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_unreachable_temporal_gives_one_clear_line(database_url: str):
    result = run_worker({"DATABASE_URL": database_url, "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"})
    assert result.returncode == 2, result.stderr
    assert "cannot connect to Temporal" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_tls_certificate_gives_one_clear_line(database_url: str, tmp_path: Path):
    result = run_worker({"DATABASE_URL": database_url, "TEMPORAL_TLS": "true",
                         "TEMPORAL_TLS_CERT": str(tmp_path / "client.pem")})
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot read TEMPORAL_TLS_CERT" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


async def test_an_edited_migration_gives_one_clear_line(database_url: str):
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:  # as if 0001 had been edited after it was applied here
        await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    finally:
        await conn.close()
    result = run_worker({"DATABASE_URL": database_url, "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"})
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot be migrated" in lines[0], result.stderr


def test_without_smtp_the_outbox_must_be_named(monkeypatch: pytest.MonkeyPatch):
    """Outside --dev, e-mails (names, addresses) are not written beside the installed code unless
    someone chose that folder."""
    from settings import Settings

    for name in ("SMTP_HOST", "OUTBOX_DIR", "STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert "set SMTP_HOST to send them, or OUTBOX_DIR" in (Settings().outbox_problem() or "")
    assert Settings(outbox_dir="/srv/mentoring/outbox").outbox_problem() is None
    assert Settings(smtp_host="mail.example.org").outbox_problem() is None
    monkeypatch.setenv("STATE_DIR", "/srv/mentoring")
    assert Settings().outbox_problem() is None
