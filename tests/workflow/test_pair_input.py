"""The start input: bad input fails the workflow at once with a message for HR, never a workflow
task retried forever; the published JSON Schema matches the model; a pair starts once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from tests.workflow.pairs import EXAMPLE, HR, MENTEE, MENTOR, Harness, json_plain, pair_input
from workflows.inputs import PairInput, pair_workflow_id
from workflows.policy import Policy, parse_duration
from workflows.schema import SCHEMA_FILE, pair_input_schema

ROOT = Path(__file__).resolve().parents[2]


async def _failure_of(harness: Harness, handle) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "InvalidPairInput" and cause.non_retryable
    assert cause.failure.stack_trace == ""  # the UI shows the message, not a Python traceback
    # Failed at once: the first workflow task failed the workflow, no task was retried.
    history = await handle.fetch_history()
    types = [e.event_type for e in history.events]
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in types
    assert types[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    # ... and nothing reached the event log.
    assert await harness.store.pool.fetchval("SELECT count(*) FROM events") == 0
    return cause


async def test_bad_fields_are_each_named_for_hr(harness: Harness):
    data = json.loads(json.dumps(EXAMPLE))
    data["mentee"]["time_zone"] = "Europe/Pariss"
    data["mentor"]["email"] = "lea.martin-at-example.com"
    data["mentee"]["availability"][1]["end"] = "13:00"  # before its 14:00 start
    data["sessions_planned"] = 0
    data["policy"] = {"invitation_reminder_after": "P20D", "lapse_after": "P2M"}
    data["nominated_by"].pop("email")
    data["colour"] = "blue"
    handle = await harness.start_raw(json_plain(json.dumps(data).encode()))
    message = (await _failure_of(harness, handle)).message

    assert message.startswith("This pair cannot start: 7 problem(s) in its input:")
    expected = [
        "- mentor.email: is not an e-mail address",
        "- mentee.time_zone: is not a known time zone: use an IANA name such as Europe/Paris",
        "- mentee.availability[1]: end must be after start",
        "- sessions_planned: should be greater than or equal to 1",
        "- nominated_by.email: is required",
        "- policy.lapse_after: 'P2M' uses years or months, which have no fixed length",
        "- colour: is not a field of this form",
    ]
    for line in expected:
        assert line in message, f"{line!r} not in:\n{message}"
    # The policy's cross-field rule is checked once its fields parse: here it names the order.
    data["policy"] = {"invitation_reminder_after": "P20D"}
    handle = await harness.start_raw(json_plain(json.dumps(data).encode()))
    message = (await _failure_of(harness, handle)).message
    assert ("- policy: invitation_reminder_after (P20D) must be shorter than invitation_expires_after "
            "(P14D): the reminder comes before the invitation expires") in message
    # Written for HR: no traceback, no server path, no personal data echoed back.
    for leak in ("Traceback", "/work/", ".py", "lea.martin", "Léa", "Bernard", "pydantic"):
        assert leak not in message


@pytest.mark.parametrize(("payload", "says"), [
    (b'{"programme_id": "digital-2026", "mentor": ', "its input is not valid JSON (invalid JSON: EOF while parsing"),
    (b'[{"programme_id": "digital-2026"}]', "its input must be one JSON object (fields between { and }), not a list"),
    (b'"pair please"', "its input must be one JSON object (fields between { and }), not a text"),
    (None, "no input was sent, and it takes one JSON object"),
])
async def test_malformed_json_or_not_an_object(harness: Harness, payload: bytes | None, says: str):
    handle = await harness.start_raw(None if payload is None else json_plain(payload))
    message = (await _failure_of(harness, handle)).message
    assert says in message, message
    assert "/formats/pair-input.schema.json" in message and "schemas/" not in message  # never a repository path


async def test_a_running_pair_cannot_be_nominated_twice_nor_renominated_after_it_ended(harness: Harness):
    data = pair_input()
    pair = await harness.start(data)
    from temporalio.exceptions import WorkflowAlreadyStartedError

    with pytest.raises(WorkflowAlreadyStartedError):  # Temporal refuses the same workflow id
        await harness.client.start_workflow("MentoringPair", data, id=pair.handle.id,
                                            task_queue=harness.task_queue)
    await pair.act("withdraw", recorded_by=HR, role="hr", reason="mismatch")
    await pair.handle.result()
    before = await pair.timeline()

    # The workflow id is free again once the run closed, but the pair's stream exists: the
    # nomination's append expects version 0 and the event store refuses it.
    again = await harness.client.start_workflow("MentoringPair", data, id=pair.handle.id,
                                                task_queue=harness.task_queue)
    with pytest.raises(WorkflowFailureError) as failed:
        await again.result()
    assert failed.value.cause.type == "PairAlreadyNominated"
    assert "was already nominated in programme" in failed.value.cause.message
    assert await pair.timeline() == before


def test_example_input_and_ids():
    example = PairInput.model_validate_json((ROOT / "examples" / "pair-input.json").read_text())
    assert example.pair_id == "digital-2026-E1042-E0007"
    assert pair_workflow_id("digital-2026", MENTOR, MENTEE) == "pair-digital-2026-E1042-E0007"
    assert example.policy.duration("invitation_expires_after").days == 14
    assert example.policy.in_force()["lapse_after"] == "P60D"  # defaults fill the rest


def test_the_published_schema_is_up_to_date():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == pair_input_schema(), (
        "schemas/pair-input.schema.json is out of date: run python -m workflows.schema")
    schema = json.loads(pair_input_schema())
    assert set(schema["required"]) == {"programme_id", "mentor", "mentee", "topics", "nominated_by"}
    assert schema["$defs"]["Policy"]["properties"]["invitation_expires_after"]["default"] == "P14D"


@pytest.mark.parametrize(("text", "days", "seconds"), [
    ("P14D", 14, 0), ("PT24H", 1, 0), ("P2W", 14, 0), ("p1dt2h30m", 1, 9000), ("PT90S", 0, 90),
])
def test_iso_durations(text: str, days: int, seconds: int):
    parsed = parse_duration(text)
    assert (parsed.days, parsed.seconds) == (days, seconds)


@pytest.mark.parametrize(("text", "says"), [
    ("P1M", "years or months"), ("P1Y2D", "years or months"), ("14D", "not an ISO 8601 duration"),
    ("P", "not an ISO 8601 duration"), ("PT", "not an ISO 8601 duration"), ("P1DT", "not an ISO 8601"),
    ("P0D", "is zero"), ("P9999999999D", "far too long"), ("-P1D", "not an ISO 8601"),
])
def test_bad_iso_durations(text: str, says: str):
    with pytest.raises(ValueError, match=says):
        parse_duration(text)


def test_a_policy_wait_is_at_most_two_years():
    assert Policy(lapse_after="P731D").duration("lapse_after").days == 731
    with pytest.raises(ValueError, match="'P800D' is longer than two years"):
        Policy(lapse_after="P800D")


def test_policy_defaults_are_the_issue_s():
    assert Policy().in_force() == {
        "motivation_reminder_after": "P3D", "motivation_expires_after": "P7D",
        "invitation_reminder_after": "P7D", "invitation_expires_after": "P14D",
        "preparation_reminder_after": "P10D", "preparation_escalation_after": "P21D",
        "session_reminder_before": "PT24H", "stall_nudge_after": "P30D", "at_risk_after": "P45D",
        "lapse_after": "P60D", "final_evaluation_within": "P14D", "first_follow_up_after": "P30D",
        "second_follow_up_after": "P90D", "follow_up_answer_within": "P14D",
    }


async def test_text_that_cannot_be_stored_or_e_mailed_is_refused_at_the_start(harness: Harness):
    """A NUL reached PostgreSQL and froze the pair in an activity retried for ever; a line break
    in a name forged an e-mail header. Both are refused by field, before anything is recorded."""
    data = json.loads(json.dumps(EXAMPLE))
    data["mentor"]["display_name"] = "Léa\r\nBcc: someone@example.org"
    data["topics"] = ["social networks", "mobile\u0000apps"]
    handle = await harness.start_raw(json_plain(json.dumps(data).encode()))
    message = (await _failure_of(harness, handle)).message
    assert "- mentor.display_name: must be on one line (no line break)" in message
    assert "- topics: contains a control character (such as NUL), which cannot be stored" in message
    assert "someone@example.org" not in message and "Léa" not in message
