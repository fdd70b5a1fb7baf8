"""Shared fixtures: one real PostgreSQL server per test session, a fresh database per test.

Each test gets its own database cloned from a migrated template, so tests never see each other's
events and the migrations run once, not per test.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from devstack.postgres import EmbeddedPostgres, free_port
from events.migrations import migrate
from events.store import PostgresEventStore, create_pool

_TEMPLATE = "mentoring_template"
_counter = itertools.count(1)

# The session's key-encryption key, shared by every worker and client the tests start (their
# payloads to Temporal are encrypted): the end-of-session replay reads them all.
TEST_KEK = base64.b64encode(os.urandom(32)).decode()
os.environ["MENTORING_KEK"] = TEST_KEK
CREATED_DATABASES: list[str] = []
"""Every database the session created, for the data keys of the histories it left."""


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedPostgres:
    data_dir: Path = tmp_path_factory.mktemp("pg") / "data"
    server = EmbeddedPostgres(data_dir, free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def migrated_template(postgres_server: EmbeddedPostgres) -> str:
    admin = await asyncpg.connect(postgres_server.admin_url())
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {_TEMPLATE}")
        await admin.execute(f"CREATE DATABASE {_TEMPLATE}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(postgres_server.admin_url(_TEMPLATE))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return _TEMPLATE


async def create_database(server: EmbeddedPostgres, template: str | None) -> str:
    name = f"test_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(server.admin_url())
    try:
        clause = f" TEMPLATE {template}" if template else ""
        await admin.execute(f"CREATE DATABASE {name}{clause}")
    finally:
        await admin.close()
    CREATED_DATABASES.append(server.admin_url(name))
    return server.admin_url(name)


@pytest.fixture
async def database_url(postgres_server: EmbeddedPostgres, migrated_template: str) -> str:
    """A fresh, migrated database for one test."""
    return await create_database(postgres_server, migrated_template)


@pytest.fixture
async def empty_database_url(postgres_server: EmbeddedPostgres) -> str:
    """A fresh database with no schema at all (for migration tests)."""
    return await create_database(postgres_server, None)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresEventStore]:
    pool = await create_pool(database_url, min_size=1, max_size=12)
    store = PostgresEventStore(pool)
    yield store
    await store.close()
    try:  # close() waits for every connection to come back: a leaked one would hang the suite
        await asyncio.wait_for(pool.close(), 30)
    except TimeoutError:
        pool.terminate()
        raise AssertionError("a pool connection was never given back (leaked by the test or "
                             "the code under test)") from None
