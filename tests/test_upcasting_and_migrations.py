"""Schema evolution: old event versions load as current ones; migrations apply once, safely."""

from __future__ import annotations

import asyncio
import uuid
from typing import ClassVar

import asyncpg

from events.base import DomainEvent, EventMetadata, EventRegistry, NewEvent
from events.migrations import available_migrations, migrate
from events.store import PostgresEventStore


class FeedbackV1(DomainEvent):
    """The first shape of an event: one free-form 'topics' string."""

    event_type: ClassVar[str] = "TestFeedback"
    schema_version: ClassVar[int] = 1
    rating: int
    topics: str


class FeedbackV2(DomainEvent):
    """Its current shape: a list of topics and an explicit 'engaging' flag."""

    event_type: ClassVar[str] = "TestFeedback"
    schema_version: ClassVar[int] = 2
    rating: int
    topics: list[str]
    engaging: bool


async def test_v1_event_is_upcast_to_v2_on_read(store: PostgresEventStore):
    await store.append("pair-u", 0, [NewEvent.of(FeedbackV1(rating=4, topics="mobile, search"),
                                                 uuid.uuid4())], EventMetadata(actor="hr"))
    registry = EventRegistry()
    registry.register(FeedbackV2)

    @registry.upcaster("TestFeedback", from_version=1)
    def split_topics(payload: dict) -> dict:
        payload["topics"] = [t.strip() for t in payload["topics"].split(",") if t.strip()]
        payload["engaging"] = payload["rating"] >= 4
        return payload

    reader = PostgresEventStore(store.pool, registry)
    [recorded] = await reader.read_stream("pair-u")
    assert recorded.stored_schema_version == 1 and recorded.schema_version == 2
    loaded = recorded.domain_event(registry)
    assert loaded == FeedbackV2(rating=4, topics=["mobile", "search"], engaging=True)
    # The log itself is unchanged: upcasting happens on read only.
    stored = await store.pool.fetchval("SELECT payload FROM events WHERE stream_id = 'pair-u'")
    assert stored == {"rating": 4, "topics": "mobile, search"}


async def test_migrations_apply_once_even_from_two_processes_at_once(empty_database_url: str):
    first, second = await asyncpg.connect(empty_database_url), await asyncpg.connect(empty_database_url)
    try:
        applied = await asyncio.gather(migrate(first), migrate(second))
        assert sorted(len(a) for a in applied) == [0, len(available_migrations())]
        assert await migrate(first) == []  # and a third run finds nothing to do
        rows = await first.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [m.version for m in available_migrations()]
    finally:
        await first.close()
        await second.close()


class CurriculumAgreedV1(DomainEvent):
    """How CurriculumAgreed was recorded before its objectives moved out of the log."""

    event_type: ClassVar[str] = "CurriculumAgreed"
    schema_version: ClassVar[int] = 1
    topics: list[str]
    objectives: list[str]


async def test_old_curricula_read_without_their_objectives(store: PostgresEventStore):
    """Objectives recorded in the log by older versions stay in the stored payload (the log is
    never rewritten) but every reader gets their count only, as for new pairs."""
    from events.pair import CurriculumAgreed

    await store.append("pair-old-curriculum", 0, [NewEvent.of(CurriculumAgreedV1(
        topics=["social networks"], objectives=["help Jane Doe post"]), uuid.uuid4())], EventMetadata(actor="E1"))
    [recorded] = await store.read_stream("pair-old-curriculum")
    assert (recorded.stored_schema_version, recorded.schema_version) == (1, 2)
    assert recorded.payload == {"topics": ["social networks"], "objectives_count": 1}
    assert recorded.domain_event() == CurriculumAgreed(topics=["social networks"], objectives_count=1)
