"""Read models built from the event log, the runner that keeps them current, rebuild, and queries.

    base.py               the Projection interface
    pair_fold.py          the facts of one pair, folded from its events (shared by several models)
    pair_overview.py ...  one module per read model
    runner.py             checkpoints, batches, the advisory lock, failures and resume
    connections.py        the dedicated connections the runner and rebuild work on
    rebuild.py            shadow build from position zero and atomic swap
    range_digest.py       the range of the log each checkpoint applied, and its check
    proofs.py             a pair's read-model row against its refold from the log
    queries.py            the audit queries behind the `mentoring` command and the HTTP API
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import asyncpg

from projections.audit_trail import AuditTrail
from projections.base import Projection
from projections.consent_register import ConsentRegister
from projections.mentor_recognition import MentorRecognition
from projections.pair_overview import PairOverview
from projections.programme_funnel import ProgrammeFunnel
from projections.programme_health import ProgrammeHealth
from projections.programme_reports import ProgrammeReports
from projections.session_calendar import SessionCalendar

if TYPE_CHECKING:
    from events.store import PostgresEventStore
    from settings import Settings


def all_projections() -> list[Projection]:
    """Every read model of the project, as the worker runs them."""
    return [PairOverview(), ProgrammeFunnel(), ConsentRegister(), AuditTrail(),
            MentorRecognition(), SessionCalendar(), ProgrammeReports(), ProgrammeHealth()]


def start_projection_runner(pool: asyncpg.Pool, settings: Settings) -> asyncio.Task:
    """The worker's projection runner, as a task (cancel it to stop)."""
    from events.store import PostgresEventStore
    from projections.runner import ProjectionRunner

    store = PostgresEventStore(pool)
    runner = ProjectionRunner(store, all_projections(), dsn=settings.database_url or None)

    async def run_projections() -> None:
        upgrade = asyncio.create_task(rebuild_those_built_before_ranges(pool, store, settings))
        try:
            await runner.run_forever()
        finally:
            upgrade.cancel()
            await asyncio.gather(upgrade, return_exceptions=True)
            await store.close()  # gives the listening connection back, so the pool can close

    return asyncio.create_task(run_projections(), name="projection-runner")


log = logging.getLogger("projections")


async def rebuild_those_built_before_ranges(pool: asyncpg.Pool, store: PostgresEventStore,
                                            settings: Settings) -> list[str]:
    """Read models whose checkpoint moved before their range was recorded were also folded by an
    older lifecycle (deadlines counted otherwise): rebuilt once, in the background, while the live
    ones keep serving. Returns the names rebuilt; logs why not when it cannot (another process is
    rebuilding, or this role may not swap schemas: the owner runs `mentoring projections rebuild`)."""
    from projections.rebuild import RebuildError, rebuild

    stale = {r["name"] for r in await pool.fetch(
        "SELECT name FROM projection_checkpoints WHERE range_digest IS NULL")}
    chosen = [p for p in all_projections() if p.name in stale]
    if not chosen:
        return []
    names = [p.name for p in chosen]
    log.warning("read models %s were built before their range was recorded: rebuilding them in the background",
                ", ".join(names))
    try:
        report = await rebuild(store, chosen, dsn=settings.database_url or None)
    except (RebuildError, asyncpg.InsufficientPrivilegeError) as exc:
        log.error("could not rebuild %s (%s): run `mentoring projections rebuild` as the database's owner",
                  ", ".join(names), exc)
        return []
    log.info("rebuilt %s: %d events in %.1f s", ", ".join(names), report.events, report.seconds)
    return names
