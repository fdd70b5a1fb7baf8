"""The dev server ignores the worker's OpenTelemetry settings (`make run` with a documented
OTEL_TRACES_EXPORTER=console used to stop: the server read the variable and refused its value)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from devstack.postgres import free_port
from devstack.temporal import TemporalDevServer


async def test_the_dev_server_starts_whatever_the_otel_settings(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    server = TemporalDevServer(tmp_path / "temporal.db", port=free_port(), ui_port=free_port(),
                               headless=True)
    server.start()
    try:
        client = await Client.connect(server.address)
        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
        assert info.server_version  # it runs, and answers
    finally:
        server.stop()
