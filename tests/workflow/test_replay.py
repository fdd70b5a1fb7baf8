"""Replay: recorded histories of full lifecycles must replay against the current code. A change
that would alter what an old history did is caught here, before it reaches running pairs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import temporalio.workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from cli.replay import diagnose
from tests.workflow.pairs import Harness, full_lifecycle
from workflows.pair import MentoringPair
from workflows.payloads import DATA_CONVERTER

HISTORIES = Path(__file__).resolve().parent / "histories"


def _replayer() -> Replayer:
    return Replayer(workflows=[MentoringPair], data_converter=DATA_CONVERTER)


def _patches(name: str) -> set[str]:
    """The patch ids a recorded history carries (markers written by workflow.patched())."""
    history = json.loads((HISTORIES / name).read_text(encoding="utf-8"))
    return {
        json.loads(base64.b64decode(marker["details"]["patch-data"]["payloads"][0]["data"]))["id"]
        for event in history["events"]
        if (marker := event.get("markerRecordedEventAttributes", {})).get("markerName") == "core_patch"
    }


@pytest.mark.parametrize("name", sorted(p.name for p in HISTORIES.glob("*.json")))
async def test_recorded_histories_replay(name: str):
    text = (HISTORIES / name).read_text(encoding="utf-8")
    result = await _replayer().replay_workflow(WorkflowHistory.from_json(f"pair-replay-{name}", text))
    assert result.replay_failure is None


async def test_a_fresh_history_of_the_current_code_replays(harness: Harness):
    pair = await full_lifecycle(harness)
    history = await pair.handle.fetch_history()
    result = await _replayer().replay_workflow(history)
    assert result.replay_failure is None


@pytest.mark.parametrize(("old", "patch_id"), [
    ("full_lifecycle_before_sessions_open_notice.json", "sessions-open-notice"),
    ("without_final_evaluations_before_window_event.json", "evaluation-window-closed-event"),
    ("late_confirmation_before_decisions_from_history.json", "decisions-from-history"),
    ("same_day_follow_ups_before_numbered.json", "numbered-follow-ups"),
])
async def test_a_patch_keeps_older_pairs_replaying(monkeypatch: pytest.MonkeyPatch, old: str,
                                                   patch_id: str):
    """Each change of behaviour is guarded by workflow.patched(patch_id): the notice
    "sessions_open", the event FinalEvaluationWindowClosed, decisions taken from the history alone
    (a durable timer even for a deadline already past, among others).

    The older history, recorded before the change, lacks that patch marker and replays (above)
    because patched() answers False for it. Without the guard, the same history no longer
    replays: the code would do what the recorded run never did.
    """
    assert patch_id not in _patches(old)

    real_patched = temporalio.workflow.patched
    monkeypatch.setattr(temporalio.workflow, "patched",  # this guard removed, the others kept
                        lambda pid, **kw: True if pid == patch_id else real_patched(pid, **kw))
    history = WorkflowHistory.from_json("pair-unguarded", (HISTORIES / old).read_text(encoding="utf-8"))
    result = await _replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert isinstance(result.replay_failure, temporalio.workflow.NondeterminismError)
    assert "Nondeterminism error" in str(result.replay_failure)


STUCK = HISTORIES / "stuck"
"""Histories of pairs that froze after worker kills, recorded before decisions were taken from the
history alone: a fresh worker answered a query after a timer fired, ran the timer's step with the
clock of the task before, saw the deadline "not yet due" and started a timer for the remainder.
No deterministic code can replay such a history; README, "Reliability", says how to repair one."""
REPLAYS_DESPITE_THE_KILLS = "pair-chaos-930cb3-M026-S026.json"


@pytest.mark.parametrize("name", sorted(p.name for p in STUCK.glob("*.json")))
async def test_histories_frozen_by_a_stale_clock_fail_as_they_did(name: str):
    history = WorkflowHistory.from_json(name, (STUCK / name).read_text(encoding="utf-8"))
    result = await _replayer().replay_workflow(history, raise_on_replay_failure=False)
    if name == REPLAYS_DESPITE_THE_KILLS:  # a worker failed on it once; its history is sound
        assert result.replay_failure is None
    else:
        assert isinstance(result.replay_failure, temporalio.workflow.NondeterminismError)
        # A timer started where the code, knowing the timer had fired, acts on the deadline.
        assert "does not handle HistoryEvent" in str(result.replay_failure)
        assert "TimerStarted" in str(result.replay_failure)


@pytest.mark.parametrize(("name", "reset_to", "activities_after"), [
    ("pair-chaos-fbb52d-M038-S038.json", 369, 0),
    ("pair-chaos-930cb3-M029-S029.json", 369, 5),
])
async def test_the_operator_is_told_where_to_reset_a_frozen_pair(name: str, reset_to: int,
                                                                  activities_after: int):
    found = await diagnose((STUCK / name).read_text(encoding="utf-8"), name)
    assert not found.replays and found.error.startswith("[TMPRL1100] Nondeterminism error")
    assert (found.bad_event_id, found.reset_event_id) == (reset_to + 1, reset_to)
    assert found.activities_after_reset == activities_after
    assert (await diagnose((STUCK / REPLAYS_DESPITE_THE_KILLS).read_text(encoding="utf-8"))).replays


def _with_start_input(name: str, change) -> str:
    """A recorded history whose start input is changed by `change` (a dict -> None)."""
    history = json.loads((HISTORIES / name).read_text(encoding="utf-8"))
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
    data = json.loads(base64.b64decode(started["data"]))
    change(data)
    started["data"] = base64.b64encode(json.dumps(data).encode()).decode()
    return json.dumps(history)


async def test_a_pair_accepted_before_today_s_input_checks_replays_as_it_ran():
    """Inputs the checks added since would refuse (a wait over two years, the nominating HR also the
    mentee, a control character in a name) were accepted by pairs started before them: those
    pairs replay, their input read as it was accepted (patch input-checks-2026-11)."""
    def older_input(data: dict) -> None:
        data["policy"] = {**data.get("policy", {}), "lapse_after": "P800D"}
        data["nominated_by"]["employee_id"] = data["mentee"]["employee_id"]
        data["mentor"]["display_name"] = "Léa\tMartin\x07"

    text = _with_start_input("full_lifecycle_decisions_from_history.json", older_input)
    result = await _replayer().replay_workflow(WorkflowHistory.from_json("pair-replay-older-input", text))
    assert result.replay_failure is None
    # The same input, started today, is refused.
    from pydantic import ValidationError

    from workflows.inputs import PairInput
    from workflows.payloads import AS_RECORDED
    history = json.loads(text)
    payload = history["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
    data = json.loads(base64.b64decode(payload["data"]))
    with pytest.raises(ValidationError):
        PairInput.model_validate(data)
    assert PairInput.model_validate(data, context=AS_RECORDED).policy.lapse_after == "P800D"
