"""A pair whose final-evaluation window closes with one evaluation missing: the read models show
it moving on to follow-ups when the window closed, not a month later at the first follow-up."""

from __future__ import annotations

from datetime import datetime, timedelta

from events.store import PostgresEventStore
from projections import queries
from tests.projections.conftest import make_runner
from tests.workflow.conftest import harness, temporal_env  # noqa: F401  (fixtures)
from tests.workflow.pairs import Harness, lifecycle_without_final_evaluations


async def test_window_closed_moves_the_pair_to_follow_up_in_the_read_models(
        harness: Harness, store: PostgresEventStore, database_url: str):  # noqa: F811
    pair = await lifecycle_without_final_evaluations(harness)
    events = await store.read_stream(pair.stream_id)
    closed = next(e for e in events if e.event_type == "FinalEvaluationWindowClosed")
    first_follow_up = next(e for e in events if e.event_type == "FollowUpSent")
    closed_at = datetime.fromisoformat(closed.metadata["occurred_at"])
    assert datetime.fromisoformat(first_follow_up.metadata["occurred_at"]) - closed_at > timedelta(days=10)

    pair_id = events[0].payload["pair_id"]
    before = await queries.pair_as_of(store, pair_id, closed_at - timedelta(seconds=1))
    after = await queries.pair_as_of(store, pair_id, closed_at + timedelta(seconds=1))
    assert (before.stage, after.stage) == ("final_evaluation", "follow_up")

    await make_runner(store, database_url).run_until_caught_up()
    report = await queries.pair_report(store.pool, pair_id)
    assert report.overview.stage == "completed"
    summary = next(e.summary for e in report.trail if e.action == "FinalEvaluationWindowClosed")
    assert summary == "final evaluation window closed; given by: mentor"
