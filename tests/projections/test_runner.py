"""The runner: live following, one runner per projection, take-over, crashes, parked streams,
failures, resume."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from events.store import PostgresEventStore
from projections.audit_trail import AuditTrail
from projections.runner import NothingToResume, ProjectionRunner, resume
from tests.projections import lifecycles as story
from tests.projections.conftest import Ledger, event_positions, ledger_state, make_runner


async def _eventually(check, timeout: float = 10.0, interval: float = 0.02):
    """Wait until `check()` returns a truthy value; return it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still not true after {timeout}s: {check.__name__}")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running(runner: ProjectionRunner):
    task = asyncio.create_task(runner.run_forever())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_runner_follows_the_log_live(store: PostgresEventStore, runner: ProjectionRunner):
    await story.write(store, story.full_lifecycle("p-early"))
    async with running(runner):
        late = story.declined_by_mentee("p-late")
        written = await story.write(store, late)

        async def declined_is_visible():
            return await store.pool.fetchval(
                "SELECT stage = 'declined' FROM pair_overview.pairs WHERE pair_id = 'p-late'")

        await _eventually(declined_is_visible)
        expected = story.full_lifecycle("x").event_count() + written

        async def every_event_in_the_trail():  # each read model follows on its own
            return await store.pool.fetchval("SELECT count(*) FROM audit_trail.entries") == expected

        await _eventually(every_event_in_the_trail)
        assert await every_event_in_the_trail()


async def test_two_runners_each_projection_runs_in_one_of_them(
        store: PostgresEventStore, database_url: str):
    first, second = make_runner(store, database_url), make_runner(store, database_url)
    async with running(first), running(second):
        stories = [story.full_lifecycle(f"p{i}", mentor_id=f"M{i}") for i in range(6)]
        await asyncio.gather(*(story.write(store, s) for s in stories))
        total = sum(s.event_count() for s in stories)

        async def all_applied():
            return await store.pool.fetchval("SELECT count(*) FROM audit_trail.entries") == total

        await _eventually(all_applied)
        for name in first.names:
            holders = [r.backend_pid(name) for r in (first, second) if r.backend_pid(name)]
            assert len(holders) == 1, name
        sessions = await store.pool.fetchval("SELECT sum(sessions_given) FROM mentor_recognition.mentors")
        assert sessions == 6 * 3


async def test_second_runner_takes_over_when_the_first_dies_mid_batch(
        store: PostgresEventStore, database_url: str, ledger_tables):
    await story.write(store, story.full_lifecycle("p1"))
    positions = await event_positions(store.pool)
    # The first runner stops inside its second batch, after applying part of it.
    doomed = Ledger(gate_at=positions[13])
    first = make_runner(store, database_url, [doomed], batch_size=10)
    second = make_runner(store, database_url, [Ledger()], batch_size=10)
    first_task = asyncio.create_task(first.run_forever())
    try:
        await asyncio.wait_for(doomed.reached_gate.wait(), 10)
        async with running(second):
            await asyncio.sleep(0.3)
            assert second.backend_pid("ledger") is None  # the lock is taken: it waits
            applied, _ = await ledger_state(store.pool)
            assert applied == positions[:10]  # the half-done batch is not visible

            # The first process dies: its connection goes, and its lock with it.
            await store.pool.execute("SELECT pg_terminate_backend($1)", first.backend_pid("ledger"))
            first_task.cancel()
            await asyncio.gather(first_task, return_exceptions=True)

            async def second_runs_it():
                return second.backend_pid("ledger")

            await _eventually(second_runs_it)
            more = story.declined_by_mentee("p2")
            await story.write(store, more)
            everything = await event_positions(store.pool)

            async def caught_up():
                return (await ledger_state(store.pool))[1] == len(everything)

            await _eventually(caught_up)
            assert await ledger_state(store.pool) == (everything, len(everything))
            statuses = {s.name: s for s in await second.status()}
            assert statuses["ledger"].held_by_pid == second.backend_pid("ledger")
            assert statuses["ledger"].behind == 0
    finally:
        first_task.cancel()
        await asyncio.gather(first_task, return_exceptions=True)


async def test_connection_killed_mid_transaction_nothing_doubled_nothing_lost(
        store: PostgresEventStore, database_url: str, ledger_tables):
    await story.write(store, story.full_lifecycle("p1"))
    positions = await event_positions(store.pool)
    ledger = Ledger(gate_at=positions[25])
    runner = make_runner(store, database_url, [ledger, AuditTrail()], batch_size=20)
    async with running(runner):
        await asyncio.wait_for(ledger.reached_gate.wait(), 10)
        victim = runner.backend_pid("ledger")
        await store.pool.execute("SELECT pg_terminate_backend($1)", victim)
        ledger.gate.set()  # the projection goes on writing into a transaction that is gone

        async def reconnected_and_caught_up():
            state = await ledger_state(store.pool)
            return runner.backend_pid("ledger") not in (None, victim) and state[1] == len(positions)

        await _eventually(reconnected_and_caught_up)
    assert await ledger_state(store.pool) == (positions, len(positions))
    failures = await store.pool.fetchval("SELECT count(*) FROM projection_failures")
    assert failures == 0  # a lost connection is not the event's fault


async def stream_positions(pool, stream_id: str) -> list[int]:
    return [r["position"] for r in await pool.fetch(
        "SELECT position FROM events WHERE stream_id = $1 ORDER BY position", stream_id)]


async def test_a_bad_event_parks_its_stream_and_every_other_stream_goes_on(
        store: PostgresEventStore, database_url: str, ledger_tables):
    await story.write_all(store, [story.full_lifecycle("p1"), story.declined_by_mentee("p2")])
    positions = await event_positions(store.pool)
    p1 = await stream_positions(store.pool, "pair-p1")
    poison = p1[5]
    ledger = Ledger(poison_at=poison)
    runner = make_runner(store, database_url, [ledger, AuditTrail()], batch_size=10)

    statuses = {s.name: s for s in await runner.run_until_caught_up()}
    assert statuses["audit_trail"].status == "running" and statuses["audit_trail"].parked == 0
    parked = statuses["ledger"]
    assert (parked.status, parked.behind, parked.parked) == ("running", 0, 1)
    assert parked.first_parked is not None and parked.first_parked.stream_id == "pair-p1"
    assert parked.first_parked.position == poison and "cannot make sense" in parked.first_parked.error
    # Everything but the parked stream from its bad event on.
    waiting = [p for p in p1 if p >= poison]
    assert await ledger_state(store.pool) == ([p for p in positions if p not in waiting],
                                              len(positions) - len(waiting))
    # Events appended to a parked stream wait too; other streams' go on.
    await story.write(store, story.declined_by_mentor("p3"))
    statuses = {s.name: s for s in await runner.run_until_caught_up()}
    assert (await ledger_state(store.pool))[1] == len(await event_positions(store.pool)) - len(waiting)

    # Resuming without a fix parks it again at the same event, and says so again.
    result = await resume(store.pool, "ledger")
    assert result.streams == ["pair-p1"] and result.event_position == poison
    again = {s.name: s for s in await runner.run_until_caught_up()}["ledger"]
    assert again.parked == 1 and again.first_parked.position == poison
    assert not again.first_parked.retry_requested

    # Skipping it is recorded, and the rest of the stream is applied.
    await resume(store.pool, "ledger", skip=True, by="hr-ops")
    done = {s.name: s for s in await runner.run_until_caught_up()}["ledger"]
    assert (done.status, done.behind, done.parked, done.failure) == ("running", 0, 0, None)
    everything = await event_positions(store.pool)
    assert await ledger_state(store.pool) == ([p for p in everything if p != poison], len(everything) - 1)
    history = await store.pool.fetch(
        "SELECT position, stream_id, resolution, resolved_by FROM projection_failures ORDER BY id")
    assert [tuple(r.values()) for r in history] == [
        (poison, "pair-p1", "retried", "operator"), (poison, "pair-p1", "skipped", "hr-ops")]

    with pytest.raises(NothingToResume, match="no parked stream"):
        await resume(store.pool, "ledger")


async def test_a_fixed_projection_applies_a_parked_stream_again(
        store: PostgresEventStore, database_url: str, ledger_tables):
    await story.write(store, story.declined_by_mentee("p1"))
    positions = await event_positions(store.pool)
    ledger = Ledger(poison_at=positions[2])
    runner = make_runner(store, database_url, [ledger])
    assert (await runner.run_until_caught_up())[0].parked == 1
    ledger.poison_at = None  # the fix is deployed
    await resume(store.pool, "ledger", stream="pair-p1")
    status = (await runner.run_until_caught_up())[0]
    assert (status.status, status.parked) == ("running", 0)
    assert await ledger_state(store.pool) == (positions, len(positions))


async def test_a_live_runner_applies_a_resumed_stream(
        store: PostgresEventStore, database_url: str, ledger_tables):
    await story.write(store, story.declined_by_mentee("p1"))
    positions = await event_positions(store.pool)
    ledger = Ledger(poison_at=positions[1])
    runner = make_runner(store, database_url, [ledger])
    async with running(runner):
        async def parked():
            return (await runner.status())[0].parked == 1

        await _eventually(parked)
        await resume(store.pool, "ledger", skip=True)

        async def caught_up():
            return (await ledger_state(store.pool))[1] == len(positions) - 1

        await _eventually(caught_up)
        # Everything but the skipped event, each once, and nothing parked any more.
        applied, count = await ledger_state(store.pool)
        assert (applied, count) == ([p for p in positions if p != positions[1]], len(positions) - 1)
        assert (await runner.status())[0].parked == 0


async def test_when_too_many_streams_fail_the_projection_stops_until_resumed(
        store: PostgresEventStore, database_url: str, ledger_tables):
    """Every stream failing says the projection is at fault, not the events: it stops as a whole."""
    await story.write_all(store, [story.declined_by_mentee(f"p{n}") for n in range(3)])
    firsts = [(await stream_positions(store.pool, f"pair-p{n}"))[0] for n in range(3)]
    ledger = Ledger(poison_at=set(firsts))
    runner = make_runner(store, database_url, [ledger], max_parked=2)
    status = (await runner.run_until_caught_up())[0]
    assert (status.status, status.parked) == ("failed", 0)
    assert status.failure is not None and status.failure.position == firsts[0]
    assert await ledger_state(store.pool) == ([], 0)
    ledger.poison_at = None
    await resume(store.pool, "ledger")
    status = (await runner.run_until_caught_up())[0]
    assert status.status == "running" and (await ledger_state(store.pool))[1] == len(await event_positions(store.pool))


async def test_reading_is_never_ahead_of_an_open_append(store: PostgresEventStore,
                                                        database_url: str, ledger_tables):
    """An append still open holds the runner back; when it commits, nothing was skipped."""
    await story.write(store, story.declined_by_mentee("p0"))
    runner = make_runner(store, database_url, [Ledger()])
    slow = await asyncpg.connect(database_url)
    try:
        tx = slow.transaction()
        await tx.start()
        await slow.execute(
            "SELECT * FROM append_events('pair-slow', 0, ARRAY[gen_random_uuid()], "
            "ARRAY['PairNominated'], ARRAY[1], ARRAY['{}'::jsonb], ARRAY['{\"actor\": \"hr\"}'::jsonb])")
        await story.write(store, story.declined_by_mentor("p-fast"))
        async with running(runner):
            await asyncio.sleep(0.5)
            applied, _ = await ledger_state(store.pool)
            assert len(applied) == story.declined_by_mentee("x").event_count()
            await tx.commit()
            everything = await event_positions(store.pool)

            async def all_applied():
                return (await ledger_state(store.pool))[0] == everything

            await _eventually(all_applied)
    finally:
        await slow.close()


async def test_event_that_cannot_be_read_is_recorded_like_a_bad_event(
        store: PostgresEventStore, database_url: str):
    """An event of a type this code knows only in a newer shape, with no upcaster to get there."""
    import uuid
    from typing import ClassVar

    from events.base import DomainEvent, EventMetadata, EventRegistry, NewEvent
    from events.store import PostgresEventStore as Store

    class Thing(DomainEvent):
        event_type: ClassVar[str] = "Thing"
        schema_version: ClassVar[int] = 2
        size: int

    registry = EventRegistry()
    registry.register(Thing)
    strict = Store(store.pool, registry=registry)
    await story.write(store, story.declined_by_mentor("p1"))
    await store.append("pair-p1", 2, [NewEvent(event_id=uuid.uuid4(), event_type="Thing",
                                               schema_version=1, payload={"size": 1})],
                       EventMetadata(actor="hr"))
    bad = await store.pool.fetchval("SELECT position FROM events WHERE event_type = 'Thing'")
    await story.write(store, story.declined_by_mentor("p2"))
    status = (await make_runner(strict, database_url, [AuditTrail()]).run_until_caught_up())[0]
    assert status.status == "running" and status.parked == 1 and status.first_parked.position == bad
    assert "no upcaster for Thing from schema version 1" in status.first_parked.error
    # The other pair's events are all there; the first pair's before the unreadable one.
    assert await store.pool.fetchval("SELECT count(*) FROM audit_trail.entries") == 2 + 2


async def test_skipping_asks_which_stream_when_several_are_parked(
        store: PostgresEventStore, database_url: str, ledger_tables):
    await story.write_all(store, [story.declined_by_mentee(f"p{n}") for n in range(2)])
    firsts = [(await stream_positions(store.pool, f"pair-p{n}"))[0] for n in range(2)]
    runner = make_runner(store, database_url, [Ledger(poison_at=set(firsts))])
    assert (await runner.run_until_caught_up())[0].parked == 2
    with pytest.raises(NothingToResume, match="several parked streams: name the one"):
        await resume(store.pool, "ledger", skip=True)
    result = await resume(store.pool, "ledger", skip=True, stream="pair-p1")
    assert (result.streams, result.event_position) == (["pair-p1"], firsts[1])
    status = (await runner.run_until_caught_up())[0]
    assert status.parked == 1 and status.first_parked.stream_id == "pair-p0"
