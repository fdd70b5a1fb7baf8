"""Replay: recorded histories of full lifecycles must replay against the current code. A change
that would alter what an old history did is caught here, before it reaches running pairs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import temporalio.workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflow.pairs import Harness, full_lifecycle
from workflows.pair import MentoringPair

HISTORIES = Path(__file__).resolve().parent / "histories"


def _replayer() -> Replayer:
    return Replayer(workflows=[MentoringPair], data_converter=pydantic_data_converter)


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
])
async def test_a_patch_keeps_older_pairs_replaying(monkeypatch: pytest.MonkeyPatch, old: str,
                                                   patch_id: str):
    """Each change of behaviour is guarded by workflow.patched(patch_id): the notice
    "sessions_open", the event FinalEvaluationWindowClosed.

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
