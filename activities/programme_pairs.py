"""Starting the pairs a programme's HR accepted: one `MentoringPair` workflow each.

Idempotent by workflow id: a retried or re-run batch finds the pairs it started already there
(Temporal refuses a second start of the same id, running or closed) and starts nothing twice.
Names and e-mail addresses come from the `people` table here, so they never enter the programme's
history; a person erased meanwhile cannot be paired, and the outcome says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from events.messages import (
    PairStartOutcome,
    PairToStart,
    StartPairsRequest,
    StartPairsResponse,
    WindDownRequest,
    WindDownResponse,
)

START_CONCURRENCY = 8
_CONTACTS = "SELECT employee_id, display_name, email, time_zone FROM people WHERE employee_id = ANY($1::text[])"


class ProgrammePairs:
    """Register `ProgrammePairs(client, pool).start_pairs` and `.wind_down_pairs`."""

    def __init__(self, client: Client, pool: asyncpg.Pool) -> None:
        self._client, self._pool = client, pool

    @activity.defn(name="start_pairs")
    async def start_pairs(self, request: StartPairsRequest) -> StartPairsResponse:
        return await self.start_each(request, on_progress=activity.heartbeat)

    async def start_each(self, request: StartPairsRequest,
                         on_progress: Callable[[int], None] = lambda _done: None) -> StartPairsResponse:
        """Start each pair not started yet, reporting how many are done (the activity heartbeats)."""
        ids = sorted({i for p in request.pairs for i in (p.mentor_id, p.mentee_id, p.nominated_by)})
        contacts = {r["employee_id"]: r for r in await self._pool.fetch(_CONTACTS, ids)}
        # A few starts in flight at once: each is a round trip to the server, which takes many
        # more per second than one caller waiting for each answer in turn.
        limit, done = asyncio.Semaphore(START_CONCURRENCY), 0

        async def start(pair: PairToStart) -> PairStartOutcome:
            nonlocal done
            async with limit:
                outcome = await self._start(pair, contacts)
            done += 1
            on_progress(done)
            return outcome

        outcomes = await asyncio.gather(*(start(p) for p in request.pairs))
        return StartPairsResponse(outcomes=list(outcomes))

    @activity.defn(name="wind_down_pairs")
    async def wind_down_pairs(self, request: WindDownRequest) -> WindDownResponse:
        """Ask Temporal to cancel each pair: the pair records `PairCancelled` itself, with its
        sessions ahead cancelled and its people told. Asking twice, or asking a pair that has
        closed meanwhile, changes nothing."""
        for done, workflow_id in enumerate(request.pair_workflow_ids):
            activity.heartbeat(done)
            try:
                await self._client.get_workflow_handle(workflow_id).cancel()
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:  # NOT_FOUND: closed already (or never ran)
                    raise
        return WindDownResponse(cancelled=list(request.pair_workflow_ids))

    async def _start(self, pair: PairToStart, contacts: dict[str, Any]) -> PairStartOutcome:
        missing = [i for i in (pair.mentor_id, pair.mentee_id, pair.nominated_by) if i not in contacts]
        if missing:
            return PairStartOutcome(workflow_id=pair.workflow_id, started=False,
                                    problem=f"no contact details for {', '.join(missing)} (erased?)")
        try:
            await self._client.start_workflow(
                "MentoringPair", _pair_input(pair, contacts), id=pair.workflow_id, task_queue=pair.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        except WorkflowAlreadyStartedError:
            return PairStartOutcome(workflow_id=pair.workflow_id, started=False)
        return PairStartOutcome(workflow_id=pair.workflow_id, started=True)


def _pair_input(pair: PairToStart, contacts: dict[str, Any]) -> dict[str, Any]:
    """The pair's start input, as HR would type it in the Start Workflow form."""
    def person(employee_id: str, time_zone: str) -> dict[str, Any]:
        row = contacts[employee_id]
        return {"employee_id": employee_id, "display_name": row["display_name"], "email": row["email"],
                "time_zone": time_zone}

    hr = contacts[pair.nominated_by]
    return {
        "programme_id": pair.programme_id,
        "mentor": {**person(pair.mentor_id, pair.mentor_time_zone), "topics_mastered": pair.mentor_topics},
        "mentee": {**person(pair.mentee_id, pair.mentee_time_zone), "availability": [w.model_dump(mode="json") for w in pair.mentee_availability],
                   "topics_wished": pair.mentee_topics},
        "topics": pair.topics,
        "sessions_planned": pair.sessions_planned,
        "nominated_by": {"employee_id": pair.nominated_by, "display_name": hr["display_name"],
                         "email": hr["email"], "time_zone": hr["time_zone"]},
        "hr_team": pair.hr_team,
        "training_modules": pair.training_modules,
        "policy": pair.policy,
    }
