"""Whatever button HR presses in the Temporal UI, the log and the read models agree with Temporal:
a cancelled pair records its end and tells its people."""

from __future__ import annotations

import contextlib

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.service import RPCError

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
