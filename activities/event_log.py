"""Appending a workflow's decided events to the event store.

The workflow decides the event ids and the stream version it expects, so this activity can be
retried or re-run freely: the store's append is idempotent by event id. What retrying cannot fix
is reported as a final (non-retryable) error with a type the workflow can recognise.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.database_errors import refused_data_is_final
from events.messages import (
    EVENT_ID_CONFLICT,
    STREAM_CONFLICT,
    AppendRequest,
    AppendResponse,
    LoggedEvent,
    ReadStreamRequest,
    ReadStreamResponse,
)
from events.store import ConcurrencyError, EventIdConflict, EventStore


class EventLogActivities:
    """Activities over the event store. Register `append_events` and `read_stream`."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    @activity.defn(name="append_events")
    @refused_data_is_final
    async def append_events(self, request: AppendRequest) -> AppendResponse:
        try:
            result = await self._store.append(
                request.stream_id, request.expected_version, request.events, request.metadata
            )
        except ConcurrencyError as exc:
            raise ApplicationError(
                f"stream {exc.stream_id} is at version {exc.actual}, not {exc.expected}: another "
                "writer appended to it first",
                type=STREAM_CONFLICT, non_retryable=True,
            ) from None
        except EventIdConflict:
            raise ApplicationError(
                f"an event id of this append to {request.stream_id} is already recorded with a "
                "different content: a workflow reused an event id",
                type=EVENT_ID_CONFLICT, non_retryable=True,
            ) from None
        if result.duplicate:
            activity.logger.info("append to %s was already recorded (retry)", request.stream_id)
        # Temporal's clock, not the database's: workflows count in it (and under the
        # time-skipping test server the two differ by months).
        return AppendResponse(version=result.version, positions=result.positions,
                              duplicate=result.duplicate, appended_at=activity.info().started_time)

    @activity.defn(name="read_stream")
    async def read_stream(self, request: ReadStreamRequest) -> ReadStreamResponse:
        """The facts a workflow run has not seen: after a Reset, the log holds what the run it
        replaced recorded past the reset point."""
        recorded = await self._store.read_stream(request.stream_id, request.after_version + 1)
        return ReadStreamResponse(events=[LoggedEvent(
            version=e.version, event_type=e.event_type, payload=e.payload,
            actor=str(e.metadata.get("actor", "unknown")), run_id=e.metadata.get("run_id"),
            recorded_at=e.recorded_at) for e in recorded])
