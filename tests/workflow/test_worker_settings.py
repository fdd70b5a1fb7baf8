"""The worker as worker.py builds it follows the settings that size it."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from events.store import PostgresEventStore
from settings import Settings
from worker import build_worker


async def test_the_workers_cache_of_workflows_is_the_settings(temporal_env: WorkflowEnvironment,
                                                                store: PostgresEventStore):
    # Each on a task queue of its own: a client may hold one worker per queue.
    default = build_worker(temporal_env.client, store.pool, Settings(temporal_task_queue="cache-default"))
    sized = build_worker(temporal_env.client, store.pool,
                         Settings(temporal_task_queue="cache-sized", worker_max_cached_workflows=12_000))
    assert default.config()["max_cached_workflows"] == 1000
    assert sized.config()["max_cached_workflows"] == 12_000
