"""A projection runner in a process of its own, for the fail-over test (it is frozen with SIGSTOP):
`python -m tests.projections.runner_process DSN` runs the test Ledger with the default lease."""

from __future__ import annotations

import asyncio
import sys

from events.store import PostgresEventStore, create_pool
from projections.runner import ProjectionRunner
from tests.projections.conftest import Ledger


async def main(dsn: str) -> None:
    pool = await create_pool(dsn, max_size=3)
    runner = ProjectionRunner(PostgresEventStore(pool), [Ledger()], dsn=dsn, poll_interval=0.1,
                              lock_retry_interval=0.2)
    await runner.run_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
