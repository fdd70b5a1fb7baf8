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

from events.messages import ProgrammeFiguresRequest
from events.programme import ProgrammeFigures
from events.store import PostgresEventStore
from projections.programme_figures import figures


class ProgrammeHealth:
    """Register `ProgrammeHealth(store).programme_figures`."""

    def __init__(self, store: PostgresEventStore) -> None:
        self._store = store

    @activity.defn(name="programme_figures")
    async def programme_figures(self, request: ProgrammeFiguresRequest) -> ProgrammeFigures:
        streams = await self._store.read_streams([request.stream_id, *request.pair_workflow_ids])
        programme = streams.pop(request.stream_id)
        result = figures(programme, streams, request.as_of)
        return result if request.with_stages else result.model_copy(update={"stage_of": {}})
