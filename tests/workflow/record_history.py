"""Record the history of a full pair lifecycle for the replay tests.

    python -m tests.workflow.record_history [file [lifecycle]]
        file       default: tests/workflow/histories/full_lifecycle.json
        lifecycle  a name in tests.workflow.pairs.LIFECYCLES, default: full

Starts what the tests use (embedded PostgreSQL, the time-skipping Temporal test server), runs a
pair from nomination to completion with the current code, and writes its Temporal history as
JSON. Run it when the workflow changes on purpose (and guard the change with workflow.patched(),
keeping the older history files so that tests/workflow/test_replay.py proves they still replay).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.heartbeat import HeartbeatWhileRunning
from devstack.postgres import EmbeddedPostgres, free_port
from events.migrations import migrate
from events.store import PostgresEventStore, create_pool
from tests.workflow.conftest import TEST_SERVER, register_search_attributes
from tests.workflow.pairs import LIFECYCLES, Harness, notification_activity
from workflows.pair import MentoringPair
from workflows.payloads import DATA_CONVERTER

HISTORIES = Path(__file__).resolve().parent / "histories"


async def record(target: Path, lifecycle: str = "full") -> None:
    with tempfile.TemporaryDirectory() as folder:
        server = EmbeddedPostgres(Path(folder) / "data", free_port())
        server.start()
        try:
            conn = await asyncpg.connect(server.admin_url())
            await conn.execute("CREATE DATABASE history")
            await conn.close()
            conn = await asyncpg.connect(server.admin_url("history"))
            await migrate(conn)
            await conn.close()
            pool = await create_pool(server.admin_url("history"))
            env = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=str(TEST_SERVER), data_converter=DATA_CONVERTER)
            try:
                await register_search_attributes(env.client)
                harness = Harness(env, PostgresEventStore(pool), f"record-{uuid.uuid4()}")
                async with Worker(env.client, task_queue=harness.task_queue, workflows=[MentoringPair],
                                  activities=harness.activities() + [notification_activity(pool, harness)],
                                  interceptors=[HeartbeatWhileRunning()]):
                    pair = await LIFECYCLES[lifecycle](harness)
                history = await pair.handle.fetch_history()
            finally:
                await env.shutdown()
                await pool.close()
        finally:
            server.stop()
    target.write_text(history.to_json() + "\n", encoding="utf-8")
    print(f"wrote {target}: {len(history.events)} history events")


if __name__ == "__main__":
    asyncio.run(record(Path(sys.argv[1]) if len(sys.argv) > 1 else HISTORIES / "full_lifecycle.json",
                       *sys.argv[2:3]))
