"""The programme's figures, read from the log: the programme's stream and its pairs' streams.

Why the programme reads the log on a timer rather than having each pair tell it of its stage:
the pairs' workflows stay as they are (no new command in histories already running, so no
version patch and nothing to replay differently); the programme's history grows by one activity
per check whatever the cohort's size, where a signal per stage change of 2,000 pairs would be tens
of thousands of events; and the figures are exact, folded by the same code as the read models,
with no projection lag and no way for a lost signal to leave a count wrong for ever.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from events.messages import ProgrammeFiguresRequest
from events.programme import ProgrammeFigures
from events.store import PostgresEventStore
from projections.queries import figures_from_log


class ProgrammeHealth:
    """Register `ProgrammeHealth(store, client).programme_figures`."""

    def __init__(self, store: PostgresEventStore, client: Client) -> None:
        self._store, self._client = store, client

    async def _ended(self, workflow_ids: list[str]) -> set[str]:
        """Which of these pairs, with nothing in the log, have ended in Temporal (cancelled or
        terminated while starting, or failed on their input): they will never record anything."""
        ended = set()
        for workflow_id in workflow_ids:
            try:
                described = await self._client.get_workflow_handle(workflow_id).describe()
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:  # gone past the namespace's retention
                    ended.add(workflow_id)
                    continue
                raise
            if described.status is not None and described.status != WorkflowExecutionStatus.RUNNING:
                ended.add(workflow_id)
        return ended

    @activity.defn(name="programme_figures")
    async def programme_figures(self, request: ProgrammeFiguresRequest) -> ProgrammeFigures:
        # The pairs come from the programme's own stream, not from the request: the workflow's
        # history then holds a few ids per check, not the whole cohort's.
        result = await figures_from_log(self._store, request.stream_id, request.as_of, self._ended)
        if result is None:
            raise ApplicationError(f"no programme stream {request.stream_id}", non_retryable=True)
        return result if request.with_stages else result.model_copy(update={"stage_of": {}})
