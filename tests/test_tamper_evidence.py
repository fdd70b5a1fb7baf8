"""The hash chain: an altered, deleted or reordered event is found and named.

Tampering needs the append-only triggers out of the way, as a superuser attacker would do:
`session_replication_role = replica` turns triggers off for the session.
"""

from __future__ import annotations

import uuid

import pytest

from events.base import EventMetadata, NewEvent
from events.pair import MentorMotivationConfirmed, PairNominated
from events.store import PostgresEventStore

META = EventMetadata(actor="hr-1")


async def _three_streams(store: PostgresEventStore) -> None:
    for pair in ("a", "b", "c"):
        await store.append(f"pair-{pair}", 0, [NewEvent.of(PairNominated(
            pair_id=pair, programme_id="P", mentor_id="M", mentee_id="S", topics=["x"],
            sessions_planned=2, nominated_by="hr-1", policy={}), uuid.uuid4())], META)
        for version in range(1, 4):
            await store.append(f"pair-{pair}", version, [NewEvent.of(
                MentorMotivationConfirmed(mentor_id=f"M{version}"), uuid.uuid4())], META)


async def _tamper(store: PostgresEventStore, *statements: str) -> None:
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        for statement in statements:
            await conn.execute(statement)


async def _position(store: PostgresEventStore, stream: str, version: int) -> int:
    return await store.pool.fetchval(
        "SELECT position FROM events WHERE stream_id = $1 AND version = $2", stream, version)


async def test_untouched_log_verifies(store: PostgresEventStore):
    await _three_streams(store)
    report = await store.verify()
    assert report.ok, report.first_bad
    assert (report.events_checked, report.streams_checked) == (12, 3)


async def test_altered_payload_is_named(store: PostgresEventStore):
    await _three_streams(store)
    target = await _position(store, "pair-b", 2)
    await _tamper(store, f"""UPDATE events SET payload = jsonb_set(payload, '{{mentor_id}}', '"EVIL"')
                            WHERE position = {target}""")
    report = await store.verify()
    assert not report.ok
    assert report.first_bad.position == target
    assert "altered" in report.first_bad.reason


async def test_deleted_event_is_named(store: PostgresEventStore):
    await _three_streams(store)
    await _tamper(store, "DELETE FROM events WHERE stream_id = 'pair-c' AND version = 2")
    report = await store.verify()
    assert not report.ok
    assert report.first_bad.position == await _position(store, "pair-c", 3)
    assert report.first_bad.stream_id == "pair-c" and report.first_bad.version == 3
    assert "missing" in report.first_bad.reason


async def test_deleted_last_event_is_found_through_the_stream_head(store: PostgresEventStore):
    await _three_streams(store)
    await _tamper(store, "DELETE FROM events WHERE stream_id = 'pair-a' AND version = 4")
    report = await store.verify()
    assert not report.ok
    assert report.first_bad.stream_id == "pair-a"
    assert "removed" in report.first_bad.reason


async def test_reordered_pair_is_named(store: PostgresEventStore):
    await _three_streams(store)
    second = await _position(store, "pair-a", 2)
    await _tamper(
        store,
        "UPDATE events SET version = 1000 WHERE stream_id = 'pair-a' AND version = 2",
        "UPDATE events SET version = 2 WHERE stream_id = 'pair-a' AND version = 3",
        "UPDATE events SET version = 3 WHERE stream_id = 'pair-a' AND version = 1000",
    )
    report = await store.verify()
    assert not report.ok
    assert report.first_bad.stream_id == "pair-a" and report.first_bad.version == 2
    assert report.first_bad.position != second  # the event now standing at version 2 is the moved one
    assert "chain" in report.first_bad.reason


async def test_first_bad_event_is_the_earliest_in_the_log(store: PostgresEventStore):
    await _three_streams(store)
    early = await _position(store, "pair-a", 3)
    late = await _position(store, "pair-c", 1)
    assert early < late
    await _tamper(
        store,
        f"UPDATE events SET metadata = '{{\"actor\": \"x\"}}' WHERE position IN ({early}, {late})",
    )
    report = await store.verify()
    assert report.first_bad.position == early


@pytest.mark.parametrize("column", ["event_type", "stream_id"])
async def test_altered_envelope_is_detected(store: PostgresEventStore, column: str):
    await _three_streams(store)
    target = await _position(store, "pair-b", 1)
    await _tamper(store, f"UPDATE events SET {column} = {column} || 'x' WHERE position = {target}")
    report = await store.verify()
    assert not report.ok
