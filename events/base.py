"""The shapes every event shares: domain events, their metadata, and the registry that reads them.

A domain event is a pydantic model with a type name and a schema version. When a type's shape
changes, its version goes up and an upcaster turns stored payloads of the old version into the
new shape on read, so old events load as current ones and the log itself is never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class DomainEvent(BaseModel):
    """Base of every domain event. Subclasses set `event_type` and, when reshaped, `schema_version`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class EventMetadata(BaseModel):
    """Who did it and in which context: recorded beside every event."""

    model_config = ConfigDict(extra="forbid")

    actor: str = Field(min_length=1, description="pseudonymous id of the person or 'system'")
    workflow_id: str | None = None
    run_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    trace_id: str | None = None
    occurred_at: datetime | None = Field(
        default=None, description="business time of the fact (the workflow's clock)"
    )


class NewEvent(BaseModel):
    """An event about to be appended: its id is decided by the caller, so a retry is recognised."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID
    event_type: str
    schema_version: int = Field(ge=1)
    payload: dict[str, Any]

    @classmethod
    def of(cls, event: DomainEvent, event_id: UUID) -> NewEvent:
        return cls(
            event_id=event_id,
            event_type=event.event_type,
            schema_version=event.schema_version,
            payload=event.model_dump(mode="json"),
        )


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as read back from the log, its payload already upcast to the current version.

    A plain slotted dataclass, not a pydantic model: every field comes typed from a column of our
    own table, and a rebuild builds a million of them, where validation (or even pydantic's
    unvalidated construction) was the largest single cost. Build them with `from_row`.
    """

    position: int
    transaction_id: int
    stream_id: str
    version: int
    event_id: UUID
    event_type: str
    schema_version: int
    stored_schema_version: int
    payload: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime
    # Resolved once here rather than by each projection for each event:
    occurred_at: datetime  # the business time in the metadata, else when it was recorded
    actor: str  # who did it, "unknown" when the metadata does not say

    @classmethod
    def from_row(cls, position: int, transaction_id: int, stream_id: str, version: int, event_id: UUID,
                 event_type: str, schema_version: int, stored_schema_version: int,
                 payload: dict[str, Any], metadata: dict[str, Any], recorded_at: datetime) -> RecordedEvent:
        at = metadata.get("occurred_at")
        occurred = recorded_at if at is None else at if isinstance(at, datetime) else datetime.fromisoformat(at)
        return cls(position, transaction_id, stream_id, version, event_id, event_type, schema_version,
                   stored_schema_version, payload, metadata, recorded_at, occurred,
                   metadata.get("actor") or "unknown")

    def domain_event(self, registry: EventRegistry | None = None) -> DomainEvent:
        return (registry or default_registry).load(self.event_type, self.payload)


E = TypeVar("E", bound=type[DomainEvent])
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnknownEventType(Exception):
    pass


class EventRegistry:
    """Maps type names to event classes and holds the upcasters between schema versions."""

    def __init__(self) -> None:
        self._types: dict[str, type[DomainEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, cls: E) -> E:
        existing = self._types.get(cls.event_type)
        if existing is not None and existing is not cls:
            raise ValueError(f"event type {cls.event_type!r} is registered twice")
        self._types[cls.event_type] = cls
        return cls

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function turning a payload of `from_version` into `from_version + 1`."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[(event_type, from_version)] = fn
            return fn

        return decorate

    def current_version(self, event_type: str) -> int | None:
        cls = self._types.get(event_type)
        return cls.schema_version if cls else None

    def upcast(self, event_type: str, schema_version: int, payload: dict[str, Any]) -> tuple[int, dict]:
        target = self.current_version(event_type)
        if target is None:
            return schema_version, payload  # unknown to this code: passed through untouched
        while schema_version < target:
            step = self._upcasters.get((event_type, schema_version))
            if step is None:
                raise UnknownEventType(
                    f"no upcaster for {event_type} from schema version {schema_version}"
                )
            payload = step(dict(payload))
            schema_version += 1
        return schema_version, payload

    def load(self, event_type: str, payload: dict[str, Any]) -> DomainEvent:
        cls = self._types.get(event_type)
        if cls is None:
            raise UnknownEventType(f"unknown event type {event_type!r}")
        return cls.model_validate(payload)

    def types(self) -> dict[str, type[DomainEvent]]:
        return dict(self._types)


default_registry = EventRegistry()
event = default_registry.register
