"""Read models built from the event log, the runner that keeps them current, rebuild, and queries.

    base.py               the Projection interface
    pair_fold.py          the facts of one pair, folded from its events (shared by several models)
    pair_overview.py ...  one module per read model
    runner.py             checkpoints, batches, the advisory lock, failures and resume
    connections.py        the dedicated connections the runner and rebuild work on
    rebuild.py            shadow build from position zero and atomic swap
    queries.py            the audit queries behind the `mentoring` command and the HTTP API
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from projections.audit_trail import AuditTrail
from projections.base import Projection
from projections.consent_register import ConsentRegister
from projections.mentor_recognition import MentorRecognition
from projections.pair_overview import PairOverview
from projections.programme_funnel import ProgrammeFunnel
from projections.programme_reports import ProgrammeReports
from projections.session_calendar import SessionCalendar

if TYPE_CHECKING:
    import asyncpg

    from settings import Settings


def all_projections() -> list[Projection]:
    """Every read model of the project, as the worker runs them."""
    return [PairOverview(), ProgrammeFunnel(), ConsentRegister(), AuditTrail(),
            MentorRecognition(), SessionCalendar(), ProgrammeReports()]


def start_projection_runner(pool: asyncpg.Pool, settings: Settings) -> asyncio.Task:
    """The worker's projection runner, as a task (cancel it to stop)."""
    from events.store import PostgresEventStore
    from projections.runner import ProjectionRunner

    store = PostgresEventStore(pool)
    runner = ProjectionRunner(store, all_projections(), dsn=settings.database_url or None)

    async def run_projections() -> None:
        try:
            await runner.run_forever()
        finally:
            await store.close()  # gives the listening connection back, so the pool can close

    return asyncio.create_task(run_projections(), name="projection-runner")
