"""Fail-over for every kind of death: a runner frozen (SIGSTOP) keeps its session and its lock on the
server, so only its lease shows it is gone. Another process takes the projection over within
seconds, and nothing is applied twice, even when the frozen one wakes up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from events.store import PostgresEventStore
from projections.runner import LEASE_SECONDS
from tests.projections import lifecycles as story
from tests.projections.conftest import Ledger, event_positions, ledger_state, make_runner
from tests.projections.test_runner import _eventually, running

REPOSITORY = Path(__file__).resolve().parents[2]


async def test_a_frozen_runner_is_taken_over_within_seconds_and_nothing_is_applied_twice(
        store: PostgresEventStore, database_url: str, ledger_tables):
    await story.write(store, story.full_lifecycle("p1"))
    leader = subprocess.Popen([sys.executable, "-m", "tests.projections.runner_process", database_url],
                              cwd=REPOSITORY)
    try:
        async def leader_applied_everything():
            return (await ledger_state(store.pool))[1] == len(await event_positions(store.pool))

        await _eventually(leader_applied_everything, timeout=60)
        os.kill(leader.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        follower = make_runner(store, database_url, [Ledger()], lock_retry_interval=0.5)
        async with running(follower):
            await story.write(store, story.declined_by_mentee("p2"))

            async def follower_runs_it():
                return follower.backend_pid("ledger")

            await _eventually(follower_runs_it, timeout=60)
            took_over = time.monotonic() - frozen_at
            await _eventually(leader_applied_everything)
            # The frozen runner wakes up to a session that is gone: it applies nothing again.
            os.kill(leader.pid, signal.SIGCONT)
            await story.write(store, story.declined_by_mentor("p3"))
            await _eventually(leader_applied_everything)
            everything = await event_positions(store.pool)
            assert await ledger_state(store.pool) == (everything, len(everything))
            assert follower.backend_pid("ledger") is not None  # still the follower's
    finally:
        os.kill(leader.pid, signal.SIGCONT)
        leader.kill()
        leader.wait(10)
    print(f"\ntaken over {took_over:.1f} s after the runner froze (lease {LEASE_SECONDS:.0f} s)")
    assert took_over < 10
