"""The log agrees with Temporal: pairs whose workflow ended without recording its end.

A pair's workflow records its own end (completed, withdrawn, cancelled, ...). Terminate, a run
timeout or a failure end it without a word: the log would show the pair open for ever. The
reconciler, run by the worker every `RECONCILE_INTERVAL_SECONDS`, finds the pair streams with no
closing event, asks Temporal about each one's workflow (the workflow id is the stream id) and
records `PairEndedInTemporal` for those that ended; `drift` lists every disagreement, both ways,
for `mentoring audit drift`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from codec.keys import DataKeys
from events.base import EventMetadata, NewEvent
from events.pair import PairEndedInTemporal
from events.store import ConcurrencyError, PostgresEventStore
from projections.pair_fold import ENDINGS

log = logging.getLogger("mentoring.reconcile")
RECONCILER = "reconciler"
_S = WorkflowExecutionStatus
# What Temporal says, as the event records it; a workflow still running (or continued as new,
# whose latest run is what describe shows) agrees with an open pair.
_ENDED = {_S.WORKFLOW_EXECUTION_STATUS_TERMINATED: "terminated", _S.WORKFLOW_EXECUTION_STATUS_TIMED_OUT: "timed_out",
          _S.WORKFLOW_EXECUTION_STATUS_FAILED: "failed", _S.WORKFLOW_EXECUTION_STATUS_CANCELED: "canceled"}
_LIVE = {_S.WORKFLOW_EXECUTION_STATUS_RUNNING, _S.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW}

_PAIR_STREAMS = """
SELECT s.stream_id, s.version,
       (SELECT e.event_type FROM events e WHERE e.stream_id = s.stream_id AND e.event_type = ANY($1::text[])
         LIMIT 1) AS ending,
       (SELECT p.stage FROM pair_overview.pairs p WHERE p.pair_id = substr(s.stream_id, 6)) AS stage
  FROM event_streams s
 WHERE s.stream_id LIKE 'pair-%'
"""


class Disagreement(BaseModel):
    model_config = ConfigDict(frozen=True)

    stream_id: str
    log_says: str = Field(description='"open", or the closing event')
    temporal_says: str = Field(description='the workflow\'s status, or "not found"')
    recorded: bool = Field(False, description="the end Temporal saw was recorded by this pass")


@dataclass(frozen=True)
class _Workflow:
    status: str
    run_id: str = ""
    closed_at: datetime | None = None


async def _workflow(client: Client, workflow_id: str) -> _Workflow:
    try:
        described = await client.workflow_service.describe_workflow_execution(DescribeWorkflowExecutionRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return _Workflow("not found")
        raise
    info = described.workflow_execution_info
    status = WorkflowExecutionStatus.Name(info.status).removeprefix("WORKFLOW_EXECUTION_STATUS_").lower()
    if info.status in _ENDED:
        status = _ENDED[info.status]
    elif info.status in _LIVE:
        status = "running"
    closed = info.close_time.ToDatetime(tzinfo=UTC) if info.HasField("close_time") else None
    return _Workflow(status, info.execution.run_id, closed)


async def drift(client: Client, store: PostgresEventStore, *, record: bool = False) -> list[Disagreement]:
    """Every pair on which the log and Temporal disagree; with `record`, the ends Temporal saw
    and the log missed are recorded (PairEndedInTemporal)."""
    found = []
    for row in await store.pool.fetch(_PAIR_STREAMS, list(ENDINGS)):
        stream_id, ending = row["stream_id"], row["ending"]
        workflow = await _workflow(client, stream_id)
        if ending is None and workflow.status != "running":
            recorded = record and workflow.status in _ENDED.values() and await _record_end(
                store, stream_id, row["version"], row["stage"] or "unknown", workflow)
            found.append(Disagreement(stream_id=stream_id, log_says="open", temporal_says=workflow.status,
                                      recorded=recorded))
        elif ending is not None and workflow.status == "running":
            found.append(Disagreement(stream_id=stream_id, log_says=ending, temporal_says="running"))
    return found


async def _record_end(store: PostgresEventStore, stream_id: str, version: int, stage: str,
                      workflow: _Workflow) -> bool:
    fact = PairEndedInTemporal(status=workflow.status, stage=stage,
                               closed_at=workflow.closed_at or datetime.now(UTC), run_id=workflow.run_id)
    try:
        await store.append(stream_id, version, [NewEvent.of(fact, uuid.uuid4())], EventMetadata(
            actor=RECONCILER, workflow_id=stream_id, run_id=workflow.run_id, correlation_id=stream_id.removeprefix("pair-"),
            occurred_at=fact.closed_at))
    except ConcurrencyError:
        return False  # something was appended meanwhile: the next pass looks again
    log.info("recorded the end of %s: its workflow %s in Temporal", stream_id, workflow.status)
    return True


async def reconcile_forever(client: Client, store: PostgresEventStore, interval: float,
                            keys: DataKeys | None = None) -> None:
    """The worker's reconciler: one pass every `interval` seconds, errors logged and retried.
    With `keys`, each pass also destroys the keys of erased people's workflows that have closed
    since (codec/shredding.py)."""
    from codec.shredding import shred_closed

    while True:
        try:
            await drift(client, store, record=True)
        except Exception:  # a pass that fails (Temporal or PostgreSQL away) is retried next time
            log.exception("reconciling the log with Temporal failed; retrying in %s s", interval)
        if keys is not None:
            try:
                await shred_closed(client, keys)
            except Exception:
                log.exception("destroying the keys of closed workflows failed; retrying in %s s", interval)
        await asyncio.sleep(interval)
