"""Crypto-shredding on erasure: the workflows whose payloads hold a person's data lose their keys.

An erasure asks for the keys of every pair and programme whose log mentions the person (the
streams are the workflows: same ids). A workflow still running keeps its key until it closes (it
must still read its own history to go on); `shred_closed` destroys the keys of the closed ones:
its own key, and the keys of inputs typed for it in the Web UI, found in its history. The worker's
reconciler calls it every pass, so a running pair's keys go soon after it ends.

After that, every copy of those histories (Temporal's store, its backups, an exported file) holds
only ciphertext that nobody can read; the codec server shows an "erased" marker in their place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from codec.encryption import key_ids_in
from codec.keys import DataKeys

log = logging.getLogger("mentoring.shredding")

# Pairs and programmes whose events name the person (as a JSON string value anywhere in the
# payload: mentor, mentee, nominator, enrolled senior, replacement mentor...).
_WORKFLOWS_NAMING = """
SELECT DISTINCT ids.workflow_id FROM (
    SELECT stream_id, metadata->>'workflow_id' AS recorded_by FROM events
     WHERE (stream_id LIKE 'pair-%' OR stream_id LIKE 'programme-%')
       AND strpos(payload::text, to_jsonb($1::text)::text) > 0
) named, LATERAL (VALUES (named.stream_id), (named.recorded_by)) AS ids(workflow_id)
WHERE ids.workflow_id IS NOT NULL
ORDER BY 1
"""
_REQUEST = """
INSERT INTO key_shredding (workflow_id, requested_by) SELECT unnest($1::text[]), $2
ON CONFLICT (workflow_id) DO UPDATE
   SET requested_at = now(), requested_by = EXCLUDED.requested_by, done_at = NULL, keys_shredded = NULL
"""


@dataclass(frozen=True)
class Shredded:
    workflow_id: str
    keys: int


async def request_shredding(db: asyncpg.Pool | asyncpg.Connection, employee_id: str, *, by: str) -> list[str]:
    """Mark for shredding every workflow whose payloads hold `employee_id`'s data (its stream,
    and the workflow that recorded its events, where they differ); their ids. On a connection,
    inside the caller's transaction (the erasure's: both happen, or neither)."""
    workflow_ids = await workflows_naming(db, employee_id)
    await mark_all_for_shredding(db, workflow_ids, by=by)
    return workflow_ids


async def workflows_naming(db: asyncpg.Pool | asyncpg.Connection, employee_id: str) -> list[str]:
    """The workflows whose payloads hold `employee_id`'s data (a read of the whole log: an erasure
    makes it before it declares itself an event writer, so readers of the log do not wait on it)."""
    return [row["workflow_id"] for row in await db.fetch(_WORKFLOWS_NAMING, employee_id)]


async def mark_all_for_shredding(db: asyncpg.Pool | asyncpg.Connection, workflow_ids: list[str], *, by: str) -> None:
    if workflow_ids:
        await db.execute(_REQUEST, workflow_ids, by)


async def mark_for_shredding(db: asyncpg.Pool | asyncpg.Connection, workflow_id: str, *, by: str) -> None:
    await db.execute(_REQUEST, [workflow_id], by)


async def pending_shredding(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch("SELECT workflow_id FROM key_shredding WHERE done_at IS NULL ORDER BY requested_at")
    return [row["workflow_id"] for row in rows]


async def shred_closed(client: Client, keys: DataKeys, *, limit: int = 200) -> list[Shredded]:
    """Destroy the keys of the workflows marked for shredding that have closed; what was done.
    Those still running stay marked."""
    done = []
    for workflow_id in (await pending_shredding(keys.pool))[:limit]:
        try:  # one workflow Temporal cannot answer for must not hold up the others
            runs = await _runs(client, workflow_id)
            if runs is None:
                continue  # still running
            typed: set[str] = set()
            for run_id in runs:
                for event in await _history(client, workflow_id, run_id):
                    key_ids_in(event, typed)
        except RPCError as exc:
            log.warning("cannot read workflow %s to destroy its keys (retried next pass): %s", workflow_id, exc.message)
            continue
        async with keys.pool.acquire() as conn, conn.transaction():
            count = await keys.shred(conn, workflow_id, sorted(typed))
            await conn.execute("UPDATE key_shredding SET done_at = now(), keys_shredded = $2 WHERE workflow_id = $1",
                               workflow_id, count)
        log.info("destroyed %d data key(s) of workflow %s", count, workflow_id)
        done.append(Shredded(workflow_id, count))
    return done


async def _history(client: Client, workflow_id: str, run_id: str) -> list[HistoryEvent]:
    """A run's events; none when Temporal no longer has it (its retention passed)."""
    try:
        return list((await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()).events)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return []
        raise


async def _runs(client: Client, workflow_id: str) -> list[str] | None:
    """The run ids of `workflow_id` (its continued runs too), or None while one still runs. A
    workflow Temporal no longer knows (never started, or past retention) has no run left."""
    try:  # the raw call: nothing of the answer needs decoding
        described = await client.workflow_service.describe_workflow_execution(DescribeWorkflowExecutionRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return []
        raise
    info = described.workflow_execution_info
    if info.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING:
        return None
    runs = [info.execution.run_id]
    # Earlier runs of the chain (continue-as-new): each names the run it continued.
    run_id: str | None = info.execution.run_id
    while run_id is not None:
        events = await _history(client, workflow_id, run_id)
        if not events:
            break  # an older run past its retention: nothing of it is left to read
        started = events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id or None
        if run_id is not None:
            if run_id in runs:
                break
            runs.append(run_id)
    return runs
