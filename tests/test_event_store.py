"""The event store against a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
import pytest

from events.base import EventMetadata, NewEvent
from events.pair import MentorMotivationConfirmed, PairNominated
from events.store import (
    Checkpoint,
    ConcurrencyError,
    EventIdConflict,
    PostgresEventStore,
    create_pool,
)

META = EventMetadata(actor="hr-007", workflow_id="wf-1", run_id="run-1", correlation_id="c-1",
                     causation_id="cause-1", trace_id="trace-1")


def nomination(pair_id: str = "p1") -> PairNominated:
    return PairNominated(pair_id=pair_id, programme_id="prog-A", mentor_id="E100", mentee_id="E900",
                         topics=["mobile apps"], sessions_planned=6, nominated_by="hr-007",
                         policy={"invitation_expires_after": "P14D"})


def new(ev, event_id: uuid.UUID | None = None) -> NewEvent:
    return NewEvent.of(ev, event_id or uuid.uuid4())


async def test_append_then_read_stream_in_order_with_metadata(store: PostgresEventStore):
    first = await store.append("pair-p1", 0, [new(nomination())], META)
    second = await store.append(
        "pair-p1", 1, [new(MentorMotivationConfirmed(mentor_id="E100"))], META
    )
    assert (first.version, second.version) == (1, 2)
    assert not first.duplicate and not second.duplicate
    events = await store.read_stream("pair-p1")
    assert [e.event_type for e in events] == ["PairNominated", "MentorMotivationConfirmed"]
    assert [e.version for e in events] == [1, 2]
    assert isinstance(events[0].domain_event(), PairNominated)
    assert events[0].domain_event().mentor_id == "E100"
    for recorded in events:
        assert recorded.metadata == {
            "actor": "hr-007", "workflow_id": "wf-1", "run_id": "run-1", "correlation_id": "c-1",
            "causation_id": "cause-1", "trace_id": "trace-1",
        }
        assert recorded.recorded_at is not None


async def test_stale_expected_version_raises_concurrency_error(store: PostgresEventStore):
    await store.append("pair-p1", 0, [new(nomination())], META)
    with pytest.raises(ConcurrencyError) as raised:
        await store.append("pair-p1", 0, [new(MentorMotivationConfirmed(mentor_id="E100"))], META)
    assert (raised.value.expected, raised.value.actual) == (0, 1)
    assert len(await store.read_stream("pair-p1")) == 1


@pytest.mark.parametrize(("existing", "expected"), [(1, 5), (0, 3), (2, 1)])
async def test_any_wrong_expected_version_is_a_conflict(store: PostgresEventStore, existing: int,
                                                        expected: int):
    for version in range(existing):
        await store.append("pair-p1", version, [new(MentorMotivationConfirmed(mentor_id="E100"))], META)
    with pytest.raises(ConcurrencyError) as raised:
        await store.append("pair-p1", expected, [new(MentorMotivationConfirmed(mentor_id="X"))], META)
    assert (raised.value.expected, raised.value.actual) == (expected, existing)
    assert await store.stream_version("pair-p1") == existing


async def test_two_writers_creating_one_stream_exactly_one_wins(store: PostgresEventStore):
    results = await asyncio.gather(*(
        store.append("pair-new", 0, [new(nomination(who))], META) for who in ("A", "B", "C")),
        return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1, results
    assert all(isinstance(r, ConcurrencyError) for r in results if isinstance(r, BaseException))
    assert [e.version for e in await store.read_stream("pair-new")] == [1]


async def test_an_event_id_of_another_stream_is_refused_and_nothing_moves(store: PostgresEventStore):
    event_id = uuid.uuid4()
    await store.append("pair-p1", 0, [new(nomination(), event_id)], META)
    with pytest.raises(EventIdConflict):
        await store.append("pair-p2", 0, [new(nomination("other")), new(nomination("x"), event_id)], META)
    assert await store.read_stream("pair-p2") == []
    assert await store.stream_version("pair-p2") == 0
    assert (await store.verify()).ok


async def test_retried_append_is_a_no_op_that_reports_success(store: PostgresEventStore):
    batch = [new(nomination()), new(MentorMotivationConfirmed(mentor_id="E100"))]
    first = await store.append("pair-p1", 0, batch, META)
    again = await store.append("pair-p1", 0, batch, META)
    assert again.duplicate
    assert again.positions == first.positions and again.version == 2
    assert len(await store.read_stream("pair-p1")) == 2


async def test_known_event_id_with_different_payload_is_an_error(store: PostgresEventStore):
    event_id = uuid.uuid4()
    await store.append("pair-p1", 0, [new(nomination(), event_id)], META)
    with pytest.raises(EventIdConflict):
        await store.append("pair-p1", 1, [new(nomination("other"), event_id)], META)
    assert len(await store.read_stream("pair-p1")) == 1


async def test_two_concurrent_writers_same_version_exactly_one_wins(store: PostgresEventStore):
    await store.append("pair-p1", 0, [new(nomination())], META)
    for _round in range(10):
        version = await store.stream_version("pair-p1")
        results = await asyncio.gather(
            store.append("pair-p1", version, [new(MentorMotivationConfirmed(mentor_id="A"))], META),
            store.append("pair-p1", version, [new(MentorMotivationConfirmed(mentor_id="B"))], META),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1, results
        assert len(losers) == 1 and isinstance(losers[0], ConcurrencyError)
    assert [e.version for e in await store.read_stream("pair-p1")] == list(range(1, 12))


async def _read_everything(store: PostgresEventStore, after: Checkpoint) -> tuple[list, Checkpoint]:
    seen = []
    while batch := await store.read_all(after, limit=100):
        seen += batch
        after = Checkpoint(batch[-1].transaction_id, batch[-1].position)
    return seen, after


async def test_catch_up_reader_never_skips_a_late_commit(store: PostgresEventStore, database_url):
    """Force the classic hazard: a lower position commits after a higher one was read."""
    await store.append("pair-p0", 0, [new(nomination("p0"))], META)
    seen, checkpoint = await _read_everything(store, Checkpoint())
    assert [e.stream_id for e in seen] == ["pair-p0"]

    slow = await asyncpg.connect(database_url)
    try:
        slow_tx = slow.transaction()
        await slow_tx.start()
        slow_event = new(nomination("slow"))
        await slow.execute(
            "SELECT * FROM append_events($1, 0, $2, $3, $4, $5::jsonb[], $6::jsonb[])",
            "pair-slow", [slow_event.event_id], [slow_event.event_type], [1],
            ['{"pair_id": "slow"}'], ['{"actor": "hr"}'],
        )
        # A later append takes a higher position and commits first.
        fast = await store.append("pair-fast", 0, [new(nomination("fast"))], META)
        slow_position = await slow.fetchval("SELECT position FROM events WHERE stream_id='pair-slow'")
        assert slow_position < fast.positions[0], "the hazard needs the slow append to hold the lower position"

        # A naive reader ordered by position alone moves past the slow event's position...
        naive_seen = await store.pool.fetch(
            "SELECT position FROM events WHERE position > $1 ORDER BY position", checkpoint.position
        )
        assert [r["position"] for r in naive_seen] == fast.positions
        naive_checkpoint = fast.positions[0]

        # ...while ours holds back until the older transaction ends.
        during, checkpoint = await _read_everything(store, checkpoint)
        assert during == []
        await slow_tx.commit()
    finally:
        await slow.close()

    after, checkpoint = await _read_everything(store, checkpoint)
    assert [e.stream_id for e in after] == ["pair-slow", "pair-fast"]
    # The naive reader would never see the slow event again.
    naive_after = await store.pool.fetch(
        "SELECT position FROM events WHERE position > $1", naive_checkpoint
    )
    assert slow_position not in [r["position"] for r in naive_after]


async def test_transactions_that_write_no_events_hold_no_reader_back(store: PostgresEventStore, database_url):
    """An idle session holding a transaction id, in this database and in another one, and a
    transaction holding a row lock: none of them writes events, so readers go on past them."""
    idle = await asyncpg.connect(database_url)
    elsewhere = await asyncpg.connect(database_url.rsplit("/", 1)[0] + "/postgres")
    try:
        for conn in (idle, elsewhere):
            await conn.execute("BEGIN")
            assert await conn.fetchval("SELECT pg_current_xact_id()") is not None  # it holds an id
        await idle.execute("SELECT * FROM projection_checkpoints FOR UPDATE")
        first = await store.append("pair-a", 0, [new(nomination("a"))], META)
        seen, _ = await _read_everything(store, Checkpoint())
        assert [e.position for e in seen] == first.positions
    finally:
        await idle.close()
        await elsewhere.close()


async def test_a_transaction_that_writes_first_must_declare_itself_a_writer(store: PostgresEventStore):
    """Its id exists before it appends, so a reader could already be past it: refused, unless it
    declared itself first (write_transaction); then readers wait for it, as for any append."""
    event = new(nomination("late"))
    async with store.pool.acquire() as conn, conn.transaction():
        # A setting cannot stand in for the lock (an older draft trusted one).
        await conn.execute("SET LOCAL mentoring.event_writer = 'on'")
        await conn.execute("CREATE TEMP TABLE scratch (x int) ON COMMIT DROP; INSERT INTO scratch VALUES (1)")
        with pytest.raises(asyncpg.PostgresError, match="before any other write of their transaction") as refused:
            await store.append("pair-late", 0, [event], META, conn=conn)
        assert refused.value.sqlstate == "ES428"
    assert await store.pool.fetchval("SELECT count(*) FROM events WHERE stream_id = 'pair-late'") == 0

    seen, checkpoint = await _read_everything(store, Checkpoint())
    async with store.write_transaction() as slow:
        await slow.fetchval("SELECT pg_current_xact_id()")  # its id, before any event
        fast = await store.append("pair-fast", 0, [new(nomination("fast"))], META)
        during, checkpoint = await _read_everything(store, checkpoint)
        assert during == []  # held back by the declared writer, which may still append below it
        await store.append("pair-late", 0, [event], META, conn=slow)
    after, _ = await _read_everything(store, checkpoint)
    assert [e.stream_id for e in after] == ["pair-late", "pair-fast"] and after[1].position == fast.positions[0]


async def test_a_writer_left_idle_in_its_transaction_is_ended_and_holds_readers_back_no_longer(
        store: PostgresEventStore, database_url):
    """A frozen appender (its process stopped mid-transaction) holds the writer's lock: the server
    ends its transaction once idle past the pool's limit, and readers go on."""
    frozen_pool = await create_pool(database_url, max_size=1, idle_in_transaction_ms=500)
    try:
        async with frozen_pool.acquire() as frozen:
            await frozen.execute("BEGIN")
            await frozen.execute("SELECT events_begin_write()")
            await frozen.fetchval("SELECT pg_current_xact_id()")
            later = await store.append("pair-after", 0, [new(nomination("after"))], META)
            assert (await _read_everything(store, Checkpoint()))[0] == []  # held back while it lives
            await asyncio.sleep(1.5)
            seen, _ = await _read_everything(store, Checkpoint())
            assert [e.position for e in seen] == later.positions
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
                await frozen.fetchval("SELECT 1")  # its session was ended
    finally:
        await frozen_pool.close()


async def test_read_all_follows_commit_order_across_many_writers(store: PostgresEventStore):
    async def writer(n: int) -> None:
        for i in range(15):
            await store.append(f"pair-w{n}", i, [new(MentorMotivationConfirmed(mentor_id=f"{n}"))], META)

    reader_seen: list = []
    checkpoint = Checkpoint()

    async def reader() -> None:
        nonlocal checkpoint
        for _ in range(200):
            batch, checkpoint = await _read_everything(store, checkpoint)
            reader_seen.extend(batch)
            await asyncio.sleep(0.002)

    await asyncio.gather(reader(), *(writer(n) for n in range(8)))
    batch, checkpoint = await _read_everything(store, checkpoint)
    reader_seen.extend(batch)
    positions = [e.position for e in reader_seen]
    assert len(positions) == len(set(positions)) == 8 * 15


async def test_notify_wakes_a_waiting_reader(store: PostgresEventStore, database_url: str):
    await store.start_listening()
    waiter = asyncio.create_task(store.wait_for_events(timeout=10))
    await asyncio.sleep(0.1)
    async with _other_process(database_url) as writer:  # as another worker would
        await writer.append("pair-p1", 0, [new(nomination())], META)
    assert await waiter is True
    assert await store.wait_for_events(timeout=0.05) is False


async def test_a_dead_listening_connection_is_replaced(store: PostgresEventStore, database_url: str):
    await store.start_listening()
    await store.pool.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE query LIKE 'LISTEN%' AND datname = current_database() AND pid <> pg_backend_pid()")
    for _ in range(50):  # the client notices the closed socket asynchronously
        if not store.listening:
            break
        await asyncio.sleep(0.02)
    # Notifications may have been lost while it was down: the reader is told to look.
    assert await store.wait_for_events(timeout=0.05) is True
    waiter = asyncio.create_task(store.wait_for_events(timeout=10))
    await asyncio.sleep(0.1)
    async with _other_process(database_url) as writer:
        await writer.append("pair-p2", 0, [new(nomination())], META)
    assert await waiter is True


@contextlib.asynccontextmanager
async def _other_process(database_url: str):
    pool = await create_pool(database_url, min_size=1, max_size=2)
    writer = PostgresEventStore(pool)
    try:
        yield writer
    finally:
        await writer.close()
        await pool.close()


@pytest.mark.parametrize("statement", [
    "UPDATE events SET payload = '{}'::jsonb",
    "DELETE FROM events",
    "TRUNCATE events",
])
async def test_log_refuses_update_delete_truncate(store: PostgresEventStore, statement: str):
    await store.append("pair-p1", 0, [new(nomination())], META)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await store.pool.execute(statement)
    assert len(await store.read_stream("pair-p1")) == 1


async def test_every_event_carries_the_trace_of_its_caller(store: PostgresEventStore):
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("tests")  # a provider of our own, not the global one
    untold = META.model_copy(update={"trace_id": None})
    with tracer.start_as_current_span("activity append_events") as span:
        await store.append("pair-p1", 0, [new(nomination())], untold)
    await store.append("pair-p1", 1, [new(MentorMotivationConfirmed(mentor_id="E100"))],
                       META.model_copy(update={"trace_id": "0af7651916cd43dd8448eb211c80319c"}))
    await store.append("pair-p1", 2, [new(MentorMotivationConfirmed(mentor_id="E101"))], untold)
    traced, given, untraced = await store.read_stream("pair-p1")
    assert traced.metadata["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert given.metadata["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert "trace_id" not in untraced.metadata  # no tracing configured: nothing invented


async def test_readers_waiting_together_share_one_listening_connection(store: PostgresEventStore):
    await asyncio.gather(*(store.wait_for_events(timeout=0.05) for _ in range(5)))
    listening = await store.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' "
        "AND datname = current_database()")
    assert listening == 1  # a second one would never go back to the pool
