"""A programme through Temporal and PostgreSQL: opened from the example input, mentors nominated in
bulk and confirming, seniors enrolling of their own will, someone withdrawing, and the matching HR
reads with its reasons; every step once in the programme's stream, contact details in `people`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer
from typer.testing import CliRunner

from activities.programme_pairs import ProgrammePairs
from cli.main import app
from events.matching import MatchSuggestion, WeeklyWindow
from events.messages import PairToStart, StartPairsRequest
from events.store import PostgresEventStore
from tests.projections.conftest import make_runner
from tests.workflow.pairs import Harness, Pair
from workflows.inputs import pair_workflow_id
from workflows.payloads import DATA_CONVERTER
from workflows.programme import MentoringProgramme
from workflows.programme_state import ProgrammeAck, ProgrammeState

EXAMPLE = json.loads((Path(__file__).resolve().parents[2] / "examples" / "programme-input.json").read_text())
HR = "HR001"


def dated(data: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The example's dates moved to the test server's clock (which other tests move on by years)."""
    today = now.date()
    data["dates"] = {"enrolment_closes": today.isoformat(), "matching_on": today.isoformat(),
                     "sessions_end": (today + timedelta(days=200)).isoformat()}
    return data


def _person(employee_id: str, *, zone: str = "Europe/Paris", day: str = "tuesday",
            start: str = "09:00", end: str = "12:00", chain: list[str] | None = None) -> dict[str, Any]:
    return {"employee_id": employee_id, "display_name": f"Person {employee_id}",
            "email": f"{employee_id.lower()}@example.com", "time_zone": zone,
            "availability": [{"weekday": day, "start": start, "end": end}], "management_chain": chain or []}


def mentor(employee_id: str, topics: list[str], capacity: int = 1, **where: Any) -> dict[str, Any]:
    return {**_person(employee_id, **where), "topics_offered": topics, "capacity": capacity}


def senior(employee_id: str, topics: list[str], **where: Any) -> dict[str, Any]:
    return {**_person(employee_id, **where), "topics_wished": topics}


async def start_programme(harness: Harness, data: dict[str, Any], *,
                          memo: dict[str, Any] | None = None) -> WorkflowHandle:
    """Start a programme as HR does from the UI; return once its opening is recorded."""
    handle = await harness.client.start_workflow("MentoringProgramme", data, id=f"programme-{data['programme_id']}",
                                                 task_queue=harness.task_queue, memo=memo)
    harness.started.append(handle)
    for _ in range(200):
        try:
            await handle.query("state", result_type=ProgrammeState)
            break
        except Exception:
            await harness.skip(seconds=0)
    return handle


async def _start(harness: Harness) -> tuple[WorkflowHandle, str]:
    data = dated(copy.deepcopy(EXAMPLE), await harness.now())
    data["programme_id"] = f"prog-{uuid.uuid4().hex[:8]}"
    return await start_programme(harness, data), f"programme-{data['programme_id']}"


async def _fails_at_once(harness: Harness, data: dict[str, Any]) -> ApplicationError:
    handle = await harness.client.start_workflow("MentoringProgramme", data, id=f"programme-bad-{uuid.uuid4().hex[:6]}",
                                                 task_queue=harness.task_queue)
    harness.started.append(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.type == "InvalidProgrammeInput"
    return failed.value.cause


async def _wait_for_events(store: PostgresEventStore, stream: str) -> Any:
    """The first event of a stream another workflow writes (a pair the programme started)."""
    for _ in range(300):
        events = await store.read_stream(stream)
        if events:
            return events[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing recorded in {stream}")


async def _cli(harness: Harness, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    """`mentoring ...` against the test server, as an operator runs it."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", harness.client.service_client.config.target_host)
    from settings import get_settings
    get_settings.cache_clear()
    try:
        return await asyncio.to_thread(CliRunner().invoke, app, list(args))
    finally:
        get_settings.cache_clear()


async def _act(handle: WorkflowHandle, update: str, **payload: Any) -> Any:
    return await handle.execute_update(update, payload)


async def _refused(handle: WorkflowHandle, update: str, **payload: Any) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(update, payload)
    assert isinstance(refused.value.cause, ApplicationError)
    return str(refused.value.cause)


async def test_a_programme_enrols_people_and_suggests_matches_with_reasons(harness: Harness, store: PostgresEventStore,
                                                                           database_url: str,
                                                                           monkeypatch: pytest.MonkeyPatch):
    handle, stream = await _start(harness)
    await _act(handle, "nominate_mentors", recorded_by=HR, mentors=[
        mentor("M1", ["privacy", "social-networks"], capacity=2),
        mentor("M2", ["consumer-app"], chain=["S3"]),  # S3 is M2's manager: never paired
        mentor("M3", ["ai-assistants"])])
    for who in ("M1", "M2"):
        await _act(handle, "confirm_programme_motivation", recorded_by=who)
    await _act(handle, "enrol_senior", recorded_by="S1", senior=senior("S1", ["privacy"]),
               request={"channel": "self_service", "requested_on": "2026-11-20"})
    await _act(handle, "enrol_senior", recorded_by=HR, senior=senior("S2", ["social-networks"]),
               request={"channel": "letter", "requested_on": "2026-11-18"})
    await _act(handle, "enrol_senior", recorded_by="S3", senior=senior("S3", ["consumer-app"]),
               request={"channel": "self_service", "requested_on": "2026-11-21"})
    await _act(handle, "enrol_senior", recorded_by="S4", senior=senior("S4", ["privacy"]),
               request={"channel": "self_service", "requested_on": "2026-11-21"})
    await _act(handle, "withdraw_from_programme", recorded_by="S4", employee_id="S4")

    ack = ProgrammeAck.model_validate(await _act(handle, "suggest_matches", recorded_by=HR))
    assert "2 pair(s) suggested" in ack.recorded and ack.counts["pairs_suggested"] == 2  # small: in history
    suggestion = await handle.query("matches", result_type=MatchSuggestion)
    assert {(p.senior_id, p.mentor_id) for p in suggestion.pairs} == {("S1", "M1"), ("S2", "M1")}
    assert all(len(p.reasons) == 3 and p.weekly_overlap_minutes == 180 for p in suggestion.pairs)
    left_out = {u.employee_id: u.reason for u in suggestion.unmatched}
    assert "management chain" in left_out["S3"]
    assert set(left_out) == {"S3", "M2"}  # M3 never confirmed: not a candidate; S4 withdrew
    assert await handle.query("matches", result_type=MatchSuggestion) == suggestion
    # The same from a terminal: a table, and --json.
    programme_id = handle.id.removeprefix("programme-")
    shown = await _cli(harness, monkeypatch, "programme", "matches", programme_id, "--database-url", database_url)
    assert shown.exit_code == 0, shown.output
    assert "2 pair(s) suggested" in shown.output and "management chain" in shown.output
    as_json = await _cli(harness, monkeypatch, "programme", "matches", programme_id, "--json",
                         "--database-url", database_url)
    assert MatchSuggestion.model_validate_json(as_json.output) == suggestion

    # HR accepts every suggestion: each becomes a MentoringPair, where the senior still consents.
    ack = ProgrammeAck.model_validate(await _act(handle, "accept_matches", recorded_by=HR))
    assert ack.counts["pairs_started"] == 2 and "2 pair(s) accepted" in ack.recorded
    state = await handle.query("state", result_type=ProgrammeState)
    programme_id = state.programme_id
    expected = sorted(pair_workflow_id(programme_id, "M1", s) for s in ("S1", "S2"))
    assert sorted(state.pairs_started) == expected and state.accepted == {"S1": "M1", "S2": "M1"}
    for workflow_id in expected:
        pair = harness.client.get_workflow_handle(workflow_id)
        harness.started.append(pair)
        nominated = await _wait_for_events(store, workflow_id)
        await Pair(harness, pair, {"mentor": {"employee_id": "M1"}, "mentee": {"employee_id": workflow_id[-2:]},
                                   "nominated_by": {"employee_id": HR}}).wait_for(lambda s: s.version >= 2)
        assert nominated.payload["programme_id"] == programme_id
        assert nominated.payload["topics"] in (["Protecting personal data"], ["Social networks"])  # catalogue labels
        assert nominated.payload["nominated_by"] == HR
    assert "accepted already" in await _refused(handle, "accept_matches", recorded_by=HR)

    events = await store.read_stream(stream)
    assert [e.event_type for e in events] == [
        "ProgrammeOpened", "MentorsNominated", "MentorConfirmedForProgramme", "MentorConfirmedForProgramme",
        "SeniorEnrolled", "SeniorEnrolled", "SeniorEnrolled", "SeniorEnrolled", "ParticipantWithdrew",
        "MatchesSuggested", "MatchesAccepted", "PairsStarted"]
    written = next(e for e in events if e.event_type == "SeniorEnrolled" and e.payload["senior"]["employee_id"] == "S2")
    assert (written.payload["channel"], written.payload["entered_by"]) == ("letter", HR)
    # Names and addresses went to the erasable table, never to the log.
    assert "Person S1" not in json.dumps([e.payload for e in events])
    names = await store.pool.fetch("SELECT employee_id FROM people WHERE employee_id = ANY($1::text[])",
                                   ["M1", "M2", "M3", "S1", "S2", "S3", "S4", HR])
    assert len(names) == 8
    # The read models take the programme's stream in their stride: its facts are in the audit trail.
    runner = make_runner(store, database_url)
    await runner.run_until_caught_up()
    statuses = await runner.status()
    assert statuses and all(s.failure is None for s in statuses), statuses  # (the pairs still write)
    actions = await store.pool.fetch("SELECT action FROM audit_trail.entries WHERE stream_id = $1 ORDER BY position",
                                     stream)
    assert [a["action"] for a in actions] == [e.event_type for e in events]
    # Its history replays against the code (the matching's result is the activity's, in history).
    replayer = Replayer(workflows=[MentoringProgramme], data_converter=DATA_CONVERTER)
    await replayer.replay_workflow(await handle.fetch_history())  # raises on a non-determinism


async def test_what_the_programme_refuses(harness: Harness, store: PostgresEventStore):
    handle, stream = await _start(harness)
    await _act(handle, "nominate_mentors", recorded_by=HR, mentors=[mentor("M1", ["privacy"])])
    version = (await handle.query("state", result_type=ProgrammeState)).version
    on_hr_word = {"channel": "self_service", "requested_on": "2026-11-20"}
    assert "never on HR's word" in await _refused(handle, "enrol_senior", recorded_by=HR,
                                                  senior=senior("S1", ["privacy"]), request=on_hr_word)
    assert "not in the programme's catalogue: cooking" in await _refused(
        handle, "enrol_senior", recorded_by="S1", senior=senior("S1", ["cooking"]),
        request={"channel": "self_service", "requested_on": "2026-11-20"})
    assert "not an HR owner" in await _refused(handle, "nominate_mentors", recorded_by="M1",
                                               mentors=[mentor("M9", ["privacy"])])
    assert "already enrolled in this programme as a mentor" in await _refused(
        handle, "enrol_senior", recorded_by="M1", senior=senior("M1", ["privacy"]),
        request={"channel": "self_service", "requested_on": "2026-11-20"})
    assert "confirms their own motivation" in await _refused(handle, "confirm_programme_motivation",
                                                             recorded_by="S9")
    assert "at least one mentor who confirmed" in await _refused(handle, "suggest_matches", recorded_by=HR)
    assert (await handle.query("state", result_type=ProgrammeState)).version == version  # nothing recorded


async def test_a_bad_programme_input_fails_at_once_naming_the_field(harness: Harness):
    data = copy.deepcopy(EXAMPLE)
    data["dates"]["sessions_end"] = "2026-01-01"
    assert "enrolment_closes <= matching_on < sessions_end" in str(await _fails_at_once(harness, data))


async def test_a_programme_whose_sessions_ended_already_does_not_start(harness: Harness):
    """Dates in order but in the past: it would close the moment it opened."""
    data = copy.deepcopy(EXAMPLE)
    data["dates"] = {"enrolment_closes": "2025-01-10", "matching_on": "2025-01-15", "sessions_end": "2025-06-30"}
    assert "dates.sessions_end 2025-06-30 is in the past" in str(await _fails_at_once(harness, data))


async def test_starting_a_pair_twice_starts_it_once(harness: Harness, store: PostgresEventStore):
    """The activity a retried batch runs again: the second time it starts nothing."""
    await store.pool.execute(
        "INSERT INTO people (employee_id, display_name, email, time_zone, updated_at) VALUES "
        "('M1', 'Mentor One', 'm1@example.com', 'UTC', now()), ('S1', 'Senior One', 's1@example.com', 'UTC', now()), "
        "('HR001', 'Claire Petit', 'claire@example.com', 'UTC', now())")
    programme = f"p{uuid.uuid4().hex[:8]}"
    pair = PairToStart(
        workflow_id=pair_workflow_id(programme, "M1", "S1"), task_queue=harness.task_queue, programme_id=programme,
        mentor_id="M1", mentor_time_zone="UTC", mentor_topics=["Privacy"], mentee_id="S1",
        mentee_time_zone="Europe/Paris", mentee_availability=[WeeklyWindow(weekday="tuesday", start=time(9), end=time(12))],
        mentee_topics=["Privacy"], topics=["Privacy"], nominated_by=HR, hr_team=[], sessions_planned=4,
        training_modules=["confidentiality"], policy={})
    gone = pair.model_copy(update={"workflow_id": pair_workflow_id(programme, "M1", "S9"), "mentee_id": "S9"})
    starts = ProgrammePairs(harness.client, store.pool).start_each
    first = await starts(StartPairsRequest(pairs=[pair, gone]))
    harness.started.append(harness.client.get_workflow_handle(pair.workflow_id))
    again = await starts(StartPairsRequest(pairs=[pair]))
    assert [(o.started, o.problem) for o in first.outcomes] == [(True, None), (False, "no contact details for S9 (erased?)")]
    assert [(o.started, o.problem) for o in again.outcomes] == [(False, None)]
    # Started once, with the people's contact details read from the `people` table. (Waited for
    # until it rests on a timer, as the harness does: the time-skipping server cannot skip time
    # for later tests past a workflow terminated in the middle of its first steps.)
    await Pair(harness, harness.client.get_workflow_handle(pair.workflow_id), {
        "mentor": {"employee_id": "M1"}, "mentee": {"employee_id": "S1"}, "nominated_by": {"employee_id": HR},
    }).wait_for(lambda state: state.version >= 2)
    history = await harness.client.get_workflow_handle(pair.workflow_id).fetch_history()
    [started] = [e for e in history.events if e.HasField("workflow_execution_started_event_attributes")]
    start_input = json.loads(started.workflow_execution_started_event_attributes.input.payloads[0].data)
    assert (start_input["mentor"]["display_name"], start_input["mentee"]["email"]) == ("Mentor One", "s1@example.com")
    assert (start_input["programme_id"], start_input["sessions_planned"]) == (programme, 4)


async def _until_accepted(handle: WorkflowHandle, update: str, **payload: Any) -> tuple[Any, int]:
    """Send an update as a client does, again while the programme is renewing its history."""
    refusals = 0
    while True:
        try:
            return await handle.execute_update(update, payload), refusals
        except WorkflowUpdateFailedError as refused:
            cause = refused.cause
            assert isinstance(cause, ApplicationError) and cause.type == "ProgrammeRenewing", cause
            assert "nothing was recorded; send this again" in str(cause)
            refusals += 1
            await asyncio.sleep(0.05)


async def test_a_busy_programme_renews_its_history_and_goes_on(harness: Harness, store: PostgresEventStore):
    """A cohort's updates keep coming: the programme continues as new all the same (refusing new
    updates for the moment the ones under way take), carrying its state, and nothing is lost."""
    data = dated(copy.deepcopy(EXAMPLE), await harness.now())
    data["programme_id"] = f"busy-{uuid.uuid4().hex[:8]}"
    handle = await start_programme(harness, data, memo={"continue_as_new_after_events": 60})
    first_run = handle.first_execution_run_id
    await _until_accepted(handle, "nominate_mentors", recorded_by=HR, mentors=[
        mentor(f"M{n}", ["privacy", "social-networks"], capacity=3) for n in range(4)])
    await asyncio.gather(*(_until_accepted(handle, "confirm_programme_motivation", recorded_by=f"M{n}")
                           for n in range(4)))
    await asyncio.gather(*(_until_accepted(
        handle, "enrol_senior", recorded_by=f"S{n}", senior=senior(f"S{n}", ["privacy"]),
        request={"channel": "self_service", "requested_on": "2026-11-20"}) for n in range(12)))
    await _until_accepted(handle, "suggest_matches", recorded_by=HR)
    for n in range(6):  # more updates after the suggestion, so a renewal carries it
        await _until_accepted(handle, "withdraw_from_programme", recorded_by=f"S{n + 6}", employee_id=f"S{n + 6}")

    state = await handle.query("state", result_type=ProgrammeState)
    assert (await handle.describe()).run_id != first_run, "the programme never continued as new"
    assert len(state.seniors) == 12 and len(state.mentors_confirmed) == 4 and len(state.withdrawn) == 6
    events = await store.read_stream(f"programme-{data['programme_id']}")
    assert state.version == len(events) == 1 + 1 + 4 + 12 + 1 + 6  # every update once, none twice
    suggestion = await handle.query("matches", result_type=MatchSuggestion)
    assert len(suggestion.pairs) == 12  # carried without its reasons, which stay in the log
    assert {p.senior_id for p in suggestion.pairs} == {f"S{n}" for n in range(12)}
    ack = ProgrammeAck.model_validate((await _until_accepted(handle, "accept_matches", recorded_by=HR,
                                                             seniors=[f"S{n}" for n in range(6)]))[0])
    assert ack.counts["pairs_started"] == 6  # the seniors still in the programme
    for workflow_id in (await handle.query("state", result_type=ProgrammeState)).pairs_started:
        pair = harness.client.get_workflow_handle(workflow_id)
        harness.started.append(pair)
        await _wait_for_events(store, workflow_id)
        await Pair(harness, pair, {"mentor": {"employee_id": "M0"}, "mentee": {"employee_id": "S0"},
                                   "nominated_by": {"employee_id": HR}}).wait_for(lambda s: s.version >= 2)
