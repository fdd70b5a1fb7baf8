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
from temporalio.exceptions import ApplicationError

from events.messages import ProgrammeFiguresRequest
from events.programme import ProgrammeFigures
from events.store import PostgresEventStore
from projections.queries import figures_from_log


class ProgrammeHealth:
    """Register `ProgrammeHealth(store).programme_figures`."""

    def __init__(self, store: PostgresEventStore) -> None:
        self._store = store

    @activity.defn(name="programme_figures")
    async def programme_figures(self, request: ProgrammeFiguresRequest) -> ProgrammeFigures:
        # The pairs come from the programme's own stream, not from the request: the workflow's
        # history then holds a few ids per check, not the whole cohort's.
        result = await figures_from_log(self._store, request.stream_id, request.as_of)
        if result is None:
            raise ApplicationError(f"no programme stream {request.stream_id}", non_retryable=True)
        return result if request.with_stages else result.model_copy(update={"stage_of": {}})
