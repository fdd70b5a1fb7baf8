"""Whatever button HR presses in the Temporal UI, the log and the read models agree with Temporal:
a cancelled pair records its end and tells its people."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.service import RPCError
from typer.testing import CliRunner

from activities.reconcile import drift
from cli.main import app
from events.store import PostgresEventStore
from tests.projections.conftest import make_runner
from tests.workflow.pairs import HR, PREPARED, Harness, both

CANCELLED_WITH_A_SESSION_AHEAD = ["PairCancelled", "SessionCancelled", *both("session_cancelled"),
                                  *both("pair_closed")]


async def test_request_cancellation_closes_the_pair_in_the_log_and_the_read_models(
        harness: Harness, store: PostgresEventStore, database_url: str):
    pair = await harness.start()
    await pair.prepare()
    starts = await pair.session_slot()
    proposed = await pair.act("propose_session", recorded_by=HR, starts_at=starts.isoformat(),
                              topics=["social networks"])
    await pair.act("confirm_session", recorded_by=HR, session_no=proposed.session_no)

    await pair.handle.cancel()  # what the UI's Request Cancellation sends
    with pytest.raises(WorkflowFailureError) as ended:
        await pair.handle.result()
    assert isinstance(ended.value.cause, CancelledError)  # Temporal shows it Canceled

    timeline = await pair.timeline()
    assert timeline[:len(PREPARED)] == PREPARED
    assert timeline[-len(CANCELLED_WITH_A_SESSION_AHEAD):] == CANCELLED_WITH_A_SESSION_AHEAD
    [cancelled] = [e for e in await store.read_stream(pair.stream_id) if e.event_type == "PairCancelled"]
    assert cancelled.payload["stage"] == "sessions"
    assert cancelled.payload["requested_by"] not in ("", "unknown")  # the client's identity
    assert cancelled.metadata["actor"].startswith("temporal:")

    await make_runner(store, database_url).run_until_caught_up()
    row = await store.pool.fetchrow("SELECT stage, facts->>'outcome' AS outcome, ended_at FROM pair_overview.pairs WHERE pair_id = $1",
                                    pair.stream_id.removeprefix("pair-"))
    assert (row["stage"], row["outcome"]) == ("cancelled", "cancelled") and row["ended_at"] is not None
    sessions = await store.pool.fetch("SELECT status FROM session_calendar.sessions WHERE pair_id = $1",
                                      pair.stream_id.removeprefix("pair-"))
    assert [s["status"] for s in sessions] == ["cancelled"]


async def test_a_cancellation_while_a_timer_waits_is_recorded_once(harness: Harness):
    pair = await harness.start()
    await harness.skip(days=1)
    await pair.handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await pair.handle.result()
    timeline = await pair.timeline()
    assert timeline.count("PairCancelled") == 1
    assert timeline[-2:] == ["PairCancelled", "NotificationSent:pair_closed>mentor"]


async def test_cancelling_an_ended_pair_adds_nothing(harness: Harness):
    pair = await harness.start()
    await pair.act("withdraw", recorded_by=HR, role="hr", reason="mismatch")
    await pair.handle.result()
    before = await pair.timeline()
    with contextlib.suppress(RPCError):  # a real server refuses it: the run is over
        await pair.handle.cancel()
    assert await pair.timeline() == before


async def test_a_terminated_pair_gets_its_end_recorded_by_the_reconciler(
        harness: Harness, store: PostgresEventStore, database_url: str):
    still_running = await harness.start()
    pair = await harness.start()
    await make_runner(store, database_url).run_until_caught_up()
    await pair.handle.terminate(reason="Léa left the company")  # Terminate: the workflow says nothing

    seen = await drift(harness.client, store)
    assert [(d.stream_id, d.log_says, d.temporal_says, d.recorded) for d in seen] == [
        (pair.stream_id, "open", "terminated", False)]
    assert (await drift(harness.client, store, record=True))[0].recorded
    [ended] = [e for e in await store.read_stream(pair.stream_id) if e.event_type == "PairEndedInTemporal"]
    assert (ended.payload["status"], ended.payload["stage"]) == ("terminated", "awaiting_motivation")
    assert ended.metadata["actor"] == "reconciler" and "Léa" not in json.dumps(ended.payload)

    assert await drift(harness.client, store) == []  # agreed now; the running pair never disagreed
    await make_runner(store, database_url).run_until_caught_up()
    stage = await store.pool.fetchval("SELECT stage FROM pair_overview.pairs WHERE pair_id = $1",
                                      pair.stream_id.removeprefix("pair-"))
    assert stage == "ended"
    assert (await still_running.state()).stage.value == "awaiting_motivation"


async def test_drift_is_listed_by_the_cli(harness: Harness, store: PostgresEventStore, database_url: str,
                                          monkeypatch: pytest.MonkeyPatch):
    pair = await harness.start()
    await pair.handle.terminate()
    monkeypatch.setenv("TEMPORAL_ADDRESS", harness.env.client.service_client.config.target_host)
    from settings import get_settings
    get_settings.cache_clear()
    try:
        listed = await asyncio.to_thread(CliRunner().invoke, app, ["audit", "drift", "--database-url", database_url])
    finally:
        get_settings.cache_clear()
    assert listed.exit_code == 1, listed.output
    assert pair.stream_id in listed.output and "terminated" in listed.output
