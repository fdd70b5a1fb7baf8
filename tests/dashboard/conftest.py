"""The dashboard's fixtures: the projections' seeded database, and the API over it."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from events.store import PostgresEventStore
from tests.projections.conftest import seeded  # noqa: F401  (a fixture, used by name)

TOKENS = {"hr-token": "hr", "auditor-token": "auditor"}
UI = "http://temporal-ui.test/namespaces/default"


@pytest.fixture
async def app(store: PostgresEventStore):
    return create_app(store.pool, TOKENS, temporal_ui=UI)


@pytest.fixture
async def client(app):
    # https: the session cookie is Secure, so a client keeps it for https addresses only.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://dash.test") as client:
        yield client


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/dashboard/sign-in", data={"token": token})
