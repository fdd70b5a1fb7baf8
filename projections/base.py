"""What a projection is: a name, the tables it owns, and how it applies events to them.

A projection's tables live in a PostgreSQL schema of the same name (see 0003_projections.sql).
Its SQL names them unqualified: the runner points `search_path` at the live schema and a rebuild
at a fresh shadow copy, so the same code fills either.

A projection keeps no state in memory between calls: everything it needs is in its tables. The
runner applies a batch and moves the checkpoint in one transaction, so a rolled-back batch (a
crash, a killed connection, a bad event) leaves nothing behind, and the batch is simply read again.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from datetime import datetime
from functools import lru_cache
from typing import ClassVar

import asyncpg

from events.base import RecordedEvent

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
PAIR_STREAM_PREFIX = "pair-"


class Projection:
    """Turns events into rows of its own tables. Subclasses set `name` and `tables`.

    Implement `apply` (one event) or, for speed, `apply_batch` (many events, few round trips);
    each default calls the other's one-event form.
    """

    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # The name becomes a schema name in DDL: keep it a plain identifier.
        name = cls.__dict__.get("name")
        if name is not None and not _IDENTIFIER.match(name):
            raise ValueError(f"projection name {name!r} must be lower-case letters, digits and _")

    async def apply(self, conn: asyncpg.Connection, event: RecordedEvent) -> None:
        await self.apply_batch(conn, [event])

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        if type(self).apply is Projection.apply:
            raise NotImplementedError(f"{type(self).__name__} implements neither apply nor apply_batch")
        for event in events:
            await self.apply(conn, event)


def occurred_at(event: RecordedEvent) -> datetime:
    """When the fact happened: the business time in the metadata, else when it was recorded."""
    return event.occurred_at


def actor_of(event: RecordedEvent) -> str:
    return event.actor


def pair_id_of(event: RecordedEvent) -> str | None:
    """The pair an event belongs to, from its stream id; None for other streams."""
    return _pair_of_stream(event.stream_id)


@lru_cache(maxsize=65536)  # asked several times per event by each projection during rebuilds
def _pair_of_stream(stream: str) -> str | None:
    return stream[len(PAIR_STREAM_PREFIX):] if stream.startswith(PAIR_STREAM_PREFIX) else None


def pair_events(events: Sequence[RecordedEvent],
                types: Collection[str] | None = None) -> list[tuple[str, RecordedEvent]]:
    """The events that belong to a pair (of the given types), with their pair id."""
    return [(pid, e) for e in events
            if (types is None or e.event_type in types) and (pid := _pair_of_stream(e.stream_id)) is not None]


def timestamp(value: str | datetime | None) -> datetime | None:
    """A payload time (ISO 8601 text in JSON) as a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def quoted(identifier: str) -> str:
    """A schema or table name for DDL; only names we generated or declared reach here."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", identifier):
        raise ValueError(f"not a plain identifier: {identifier!r}")
    return f'"{identifier}"'
