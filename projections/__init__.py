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
import contextlib
from typing import TYPE_CHECKING

from projections.audit_trail import AuditTrail
from projections.base import Projection
from projections.consent_register import ConsentRegister
from projections.mentor_recognition import MentorRecognition
from projections.pair_overview import PairOverview
from projections.programme_funnel import ProgrammeFunnel
from projections.session_calendar import SessionCalendar

if TYPE_CHECKING:
    import asyncpg

    from settings import Settings


class ApiUnavailable(RuntimeError):
    """The audit API could not start; the message is one line for the operator."""


def all_projections() -> list[Projection]:
    """Every read model of the project, as the worker runs them."""
    return [PairOverview(), ProgrammeFunnel(), ConsentRegister(), AuditTrail(),
            MentorRecognition(), SessionCalendar()]


async def start_projections_and_api(pool: asyncpg.Pool, settings: Settings) -> list[asyncio.Task]:
    """The worker's projection runner and audit API, as tasks (cancel them to stop).

    Imported lazily: `projections` does not depend on `api` at import time; this function only
    exists so that worker.py has one call to make.
    """
    import uvicorn

    from api.app import create_app
    from events.store import PostgresEventStore
    from projections.runner import ProjectionRunner

    store = PostgresEventStore(pool)
    runner = ProjectionRunner(store, all_projections(), dsn=settings.database_url or None)

    async def run_projections() -> None:
        try:
            await runner.run_forever()
        finally:
            await store.close()  # gives the listening connection back, so the pool can close

    class _Server(uvicorn.Server):
        # The worker owns SIGINT/SIGTERM; uvicorn must not take them over.
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    server = _Server(uvicorn.Config(
        create_app(pool, settings.mentoring_api_tokens), host=settings.api_host,
        port=settings.api_port, log_level="warning", lifespan="on",
    ))

    async def serve_until_stopped() -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot listen: make it an ordinary error
            raise ApiUnavailable(
                f"the audit API cannot listen on {settings.api_host}:{settings.api_port} "
                "(API_HOST / API_PORT): is the port taken?") from None

    async def serve_api() -> None:
        serving = asyncio.ensure_future(serve_until_stopped())
        try:
            await asyncio.shield(serving)
        except asyncio.CancelledError:
            server.should_exit = True  # finish requests in flight, then stop
            await serving
            raise

    return [asyncio.create_task(run_projections(), name="projection-runner"),
            asyncio.create_task(serve_api(), name="audit-api")]
