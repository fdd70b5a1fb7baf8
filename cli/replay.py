"""Replaying a recorded workflow history against this code, and where to reset a frozen pair.

A pair whose history no longer replays (a non-determinism error) stays Running with a failed
workflow task. The error names the first history event the code does not produce; the workflow
task that produced that event is the reset point: a reset there drops what that task decided and
lets the current code decide again from the same history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from codec.encryption import key_ids_in
from workflows.payloads import DATA_CONVERTER

_BAD_EVENT = re.compile(r"HistoryEvent\(id: (\d+)")
_MESSAGE = re.compile(r"\[TMPRL1100\][^\"]*")  # the SDK's message, without its Rust wrapping


@dataclass(frozen=True)
class ReplayDiagnosis:
    workflow_id: str
    events: int
    error: str | None = None  # None: the history replays
    bad_event_id: int | None = None
    reset_event_id: int | None = None  # the WorkflowTaskCompleted that produced the bad event
    activities_after_reset: int = 0  # steps the log may already hold, which a reset decides again

    @property
    def replays(self) -> bool:
        return self.error is None


def is_encrypted(history_json: str) -> bool:
    """Whether the history holds payloads of the encrypting codec (replaying needs their keys)."""
    history = WorkflowHistory.from_json("replayed", history_json)
    found: set[str] = set()
    for event in history.events:
        key_ids_in(event, found)
    return bool(found)


async def diagnose(history_json: str, workflow_id: str = "replayed",
                   data_converter: DataConverter = DATA_CONVERTER) -> ReplayDiagnosis:
    from workflows import WORKFLOWS

    history = WorkflowHistory.from_json(workflow_id, history_json)
    result = await Replayer(workflows=WORKFLOWS, data_converter=data_converter) \
        .replay_workflow(history, raise_on_replay_failure=False)
    if result.replay_failure is None:
        return ReplayDiagnosis(workflow_id, len(history.events))
    error = str(result.replay_failure)
    error = (message.group(0) if (message := _MESSAGE.search(error)) else error)
    found = _BAD_EVENT.search(error)
    if found is None:
        return ReplayDiagnosis(workflow_id, len(history.events), error=error)
    bad = int(found.group(1))
    reset = _task_that_produced(history.events[bad - 1])
    later = history.events[reset:] if reset else []
    return ReplayDiagnosis(
        workflow_id, len(history.events), error=error, bad_event_id=bad, reset_event_id=reset,
        activities_after_reset=sum(1 for e in later if e.HasField("activity_task_scheduled_event_attributes")))


def _task_that_produced(event: HistoryEvent) -> int | None:
    """Command events record the workflow task that completed with them."""
    attributes = event.WhichOneof("attributes")
    if attributes is None:
        return None
    task = getattr(getattr(event, attributes), "workflow_task_completed_event_id", 0)
    return int(task) or None
