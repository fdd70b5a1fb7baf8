"""A programme from matching to its close report, through Temporal and PostgreSQL: a collective
session (a time that does not fit is refused with a better one), the programme's health read from
its pairs' logs, HR ending the sessions (the pair still waiting is wound down, the one past its
sessions goes on), the weekly digest, and the close once the last follow-up is in; then the
report as the CLI, the read model and the roll-up show it, and the history replayed.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHistory
from temporalio.worker import Replayer

from events.programme import ProgrammeFigures
from events.store import PostgresEventStore
from projections import queries
from tests.projections.conftest import make_runner
from tests.workflow.pairs import Harness, Pair, current_details, search_attributes
from tests.workflow.test_programme import (
    EXAMPLE,
    HR,
    _act,
    _cli,
    _refused,
    _wait_for_events,
    dated,
    mentor,
    senior,
    start_programme,
)
from workflows.payloads import DATA_CONVERTER
from workflows.programme import MentoringProgramme
from workflows.programme_state import GroupSession, ProgrammeAck, ProgrammeState

PARIS = ZoneInfo("Europe/Paris")
RECORDED = Path(__file__).resolve().parent / "histories" / "programme"


async def _open(harness: Harness) -> tuple[Any, str]:
    data = dated(copy.deepcopy(EXAMPLE), await harness.now())
    data["programme_id"] = f"close-{uuid.uuid4().hex[:8]}"
    data["sessions_planned"] = 1
    data["health_every"] = "P7D"  # weekly: the test skips months, and each check is an activity
    data["policy"] = {"motivation_reminder_after": "P30D", "motivation_expires_after": "P60D"}
    handle = await start_programme(harness, data)
    return handle, data["programme_id"]


def _next_tuesday(now: datetime, at: int, minute: int = 0) -> datetime:
    day = now.astimezone(PARIS).date() + timedelta(days=2)
    while day.weekday() != 1:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, at, minute, tzinfo=PARIS)


async def _pair(harness: Harness, workflow_id: str, mentor_id: str, senior_id: str) -> Pair:
    handle = harness.client.get_workflow_handle(workflow_id)
    harness.started.append(handle)
    await _wait_for_events(harness.store, workflow_id)
    pair = Pair(harness, handle, {"mentor": {"employee_id": mentor_id}, "mentee": {"employee_id": senior_id},
                                  "nominated_by": {"employee_id": HR}})
    await pair.wait_for(lambda s: s.version >= 2)
    return pair


async def test_a_programme_runs_to_its_close_report(harness: Harness, store: PostgresEventStore,
                                                    database_url: str, monkeypatch: pytest.MonkeyPatch):
    handle, programme_id = await _open(harness)
    await _act(handle, "nominate_mentors", recorded_by=HR, mentors=[
        mentor("M1", ["privacy", "social-networks"], capacity=2), mentor("M2", ["consumer-app"])])
    for who in ("M1", "M2"):
        await _act(handle, "confirm_programme_motivation", recorded_by=who)
    for who, topic, end in (("S1", "privacy", "12:00"), ("S2", "social-networks", "11:00"),
                            ("S3", "consumer-app", "12:00")):
        await _act(handle, "enrol_senior", recorded_by=who, senior=senior(who, [topic], end=end),
                   request={"channel": "self_service", "requested_on": "2026-11-20"})
    await _act(handle, "suggest_matches", recorded_by=HR)
    await _act(handle, "accept_matches", recorded_by=HR)
    state = await handle.query("state", result_type=ProgrammeState)
    assert len(state.pairs_started) == 3
    by_senior = {w[-2:]: w for w in state.pairs_started}
    first = await _pair(harness, by_senior["S1"], "M1", "S1")
    declined = await _pair(harness, by_senior["S2"], "M1", "S2")
    waiting = await _pair(harness, by_senior["S3"], "M2", "S3")
    await first.prepare()
    await declined.act("decline_mentoring", recorded_by="M1", reason="no_time")

    # The programme's health, read from its pairs' logs: its current details and search attributes.
    await harness.skip(days=7, seconds=5)
    as_programme = Pair(harness, handle, {"mentor": {"employee_id": "-"}, "mentee": {"employee_id": "-"},
                                          "nominated_by": {"employee_id": HR}})
    health = await handle.query("figures", result_type=ProgrammeFigures)
    assert health.pairs_per_stage == {"sessions": 1, "declined": 1, "awaiting_motivation": 1}, health
    assert health.reached["consented"] == 1 and health.consent["declined"] == 0
    assert any("mentor(s) to confirm their motivation" in todo for todo in health.hr_next), health.hr_next
    details = await current_details(as_programme)
    assert "**Programme:** running" in details and "**Pairs:** 3 started" in details, details
    assert "Person " not in details
    assert (await search_attributes(as_programme))["MentoringStage"] == "running"

    # A collective session at a time S2 cannot make (S2 is free until 11:00): refused, naming S2
    # and the nearest time that fits everyone; at that time it is set, and everyone gets an .ics.
    too_late = _next_tuesday(await harness.now(), 10, 30)
    refusal = await _refused(handle, "propose_group_session", recorded_by=HR, topic="privacy", leaders=["M2"],
                             seniors=["S1", "S2"], starts_at=too_late.isoformat(), duration_minutes=60)
    assert "1 invited senior(s) cannot come: S2" in refusal and "Europe/Paris" in refusal
    suggested = datetime.fromisoformat(refusal.split("fits most: ")[1].split(" (")[0])
    assert suggested.astimezone(PARIS).time().hour == 9 and suggested > too_late and "2 of 2 can come" in refusal
    for bad, expected in (({"topic": "cooking"}, "not in the programme's catalogue"),
                          ({"leaders": ["S3"]}, "led by mentors of the programme"),
                          ({"seniors": ["S9"]}, "not a senior with a pair"),
                          ({"recorded_by": "S1"}, "not an HR owner"),
                          ({"duration_minutes": 5}, "duration_minutes"),
                          ({"starts_at": suggested.replace(tzinfo=None).isoformat()}, "needs its UTC offset"),
                          ({}, "only seniors who consented")):  # S2's pair ended before S2 was asked
        payload = {"recorded_by": HR, "topic": "privacy", "leaders": ["M2"], "seniors": ["S1", "S2"],
                   "starts_at": suggested.isoformat(), "duration_minutes": 60, **bad}
        assert expected in await _refused(handle, "propose_group_session", **payload), bad
    before = len(harness.sent)
    session = GroupSession.model_validate(await _act(
        handle, "propose_group_session", recorded_by=HR, topic="privacy", leaders=["M2"], seniors=["S1"],
        starts_at=suggested.isoformat(), duration_minutes=60))
    invitations = harness.sent[before:]
    assert sorted(r.recipient_id for r in invitations) == ["M1", "M2", "S1"]
    assert all(r.kind == "group_session_invitation" and r.session and r.session.format == "group"
               for r in invitations)
    assert "not begun yet" in await _refused(handle, "record_group_attendance", recorded_by=HR,
                                             session_no=session.session_no, attended=["S1"])
    await harness.skip(seconds=(suggested - await harness.now()).total_seconds() + 60)
    assert "not invited to collective session" in await _refused(
        handle, "record_group_attendance", recorded_by=HR, session_no=1, attended=["S1", "S3"])
    await _act(handle, "record_group_attendance", recorded_by=HR, session_no=1, attended=["S1", "M2"])
    await _act(handle, "rate_group_session", recorded_by="S1", session_no=1, rating=5)
    assert "did not attend" in await _refused(handle, "rate_group_session", recorded_by="S2", session_no=1, rating=2)

    # One pair goes through its session and evaluations; one mentor declined; one pair waits.
    await first.hold_session()
    for role, who in (("mentor", "M1"), ("mentee", "S1")):
        await first.act("give_final_evaluation", recorded_by=who, by_role=role, rating=5, would_recommend=True)

    # HR ends the sessions: the pair still waiting for its mentor is wound down (cancelled in
    # Temporal, where it records why); the one past its sessions goes on to its follow-ups.
    assert "not a pair this programme started" in await _refused(handle, "extend_pairs", recorded_by=HR,
                                                                 pair_workflow_ids=["pair-elsewhere"])
    assert "not an HR owner" in await _refused(handle, "end_sessions", recorded_by="M1")
    ack = ProgrammeAck.model_validate(await _act(handle, "end_sessions", recorded_by=HR))
    assert "1 pair(s) wound down" in ack.recorded, ack
    ended = await handle.query("state", result_type=ProgrammeState)
    assert ended.sessions_ended and ended.wound_down == [waiting.handle.id]
    await waiting.wait_for(lambda s: s.stage.value == "cancelled")
    assert "ended already" in await _refused(handle, "end_sessions", recorded_by=HR)

    for days, still_using in ((30, True), (90, False)):
        await harness.skip(days=(30 if days == 30 else 60) + 1)
        await first.wait_for(lambda s, d=days: d in s.follow_ups_sent)
        await first.handle.signal("answer_follow_up", {"recorded_by": "S1", "days_after_end": days,
                                                        "by_role": "mentee", "still_using": still_using})
    await harness.skip(days=15)  # the answers' window closes: the pair completes
    await first.wait_for(lambda s: s.stage.value == "completed")

    # The next health check sees every pair ended: the programme closes with its report.
    await harness.skip(days=7, seconds=5)
    for _ in range(300):  # (not handle.result(): on the time-skipping server it skips years)
        if (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED:
            break
        await asyncio.sleep(0.05)
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    report = await handle.query("figures", result_type=ProgrammeFigures)
    assert report.pairs_started == 3
    assert report.outcomes == {"completed": 1, "mentor_declined": 1, "cancelled": 1}
    assert report.reached["completed"] == 1 and report.reached["consented"] == 1
    assert report.consent["consented"] == 1
    assert report.still_using == {"first": {"yes": 1, "no": 0}, "second": {"yes": 0, "no": 1}}
    assert (report.group_sessions_held, report.group_attendances) == (1, 2)
    assert report.ratings["group_sessions_average"] == 5 and report.ratings["sessions_count"] == 2
    assert report.mentors_recognised == ["M1"] and report.abandonment_rate == 0
    events = await store.read_stream(f"programme-{programme_id}")
    types = [e.event_type for e in events]
    assert types[-1] == "ProgrammeClosed" and types.count("ProgrammeSessionsEnded") == 1
    digests = [e for e in events if e.event_type == "ProgrammeDigestSent"]
    assert len(digests) >= 12 and digests[0].payload["recipients"] == [HR]  # weekly, over 3 months
    assert any(r.kind == "programme_digest" and r.recipient_id == HR and r.summary for r in harness.sent)

    # The report everywhere HR reads it: the CLI (the same figures), the read model, the roll-up,
    # and the attending pair's own trail shows the collective session.
    runner = make_runner(store, database_url)
    await runner.run_until_caught_up()
    shown = await _cli(harness, monkeypatch, "audit", "programme", programme_id, "--json",
                       "--database-url", database_url)
    assert shown.exit_code == 0, shown.output
    as_cli = queries.ProgrammeReport.model_validate_json(shown.output)
    assert as_cli.closed and as_cli.figures == report
    table = await _cli(harness, monkeypatch, "audit", "programme", programme_id, "--database-url", database_url)
    assert "closed" in table.output and "completed" in table.output, table.output
    rollup = await queries.programme_rollup(store.pool, datetime(2000, 1, 1, tzinfo=UTC))
    assert programme_id in rollup.programmes and rollup.group_sessions_held >= 1
    trail = await queries.pair_report(store.pool, first.handle.id)
    assert trail is not None and "GroupSessionHeld" in [e.action for e in trail.trail]
    other = await queries.pair_report(store.pool, waiting.handle.id)
    assert other is not None and "GroupSessionHeld" not in [e.action for e in other.trail]
    assert "Person S1" not in json.dumps([e.payload for e in events])

    history = await handle.fetch_history()
    replayer = Replayer(workflows=[MentoringProgramme], data_converter=DATA_CONVERTER)
    await replayer.replay_workflow(history)
    if os.environ.get("RECORD_PROGRAMME_HISTORY"):  # when the workflow changes on purpose (README)
        (RECORDED / "close.json").write_text(history.to_json(), encoding="utf-8")


@pytest.mark.parametrize("name", sorted(p.name for p in RECORDED.glob("*.json")))
async def test_recorded_programme_histories_replay(name: str):
    """A programme runs for months: a change that would alter what a recorded run did is caught
    here, before it reaches running programmes (guard it with workflow.patched())."""
    text = (RECORDED / name).read_text(encoding="utf-8")
    replayer = Replayer(workflows=[MentoringProgramme], data_converter=DATA_CONVERTER)
    result = await replayer.replay_workflow(WorkflowHistory.from_json(f"programme-replay-{name}", text))
    assert result.replay_failure is None
