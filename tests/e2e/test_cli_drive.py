"""A pair driven end to end through the Temporal CLI, the command-line twin of the Web UI.

`python worker.py` runs as in production (DATABASE_URL, TEMPORAL_ADDRESS, ...) against the real
dev server; the README's example input is started with `temporal workflow start --input-file`,
then each human action is a `temporal workflow update execute` with a JSON object, as HR would
type it. Checked: exit codes, update results, the `state` query, the search attributes HR filters
by (no names or e-mails), and the exact events in PostgreSQL. A wrong action and a wrong start
input must fail at once with a message for HR, recording nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from devstack.temporal import TemporalDevServer
from tests.e2e.conftest import ROOT, WorkerProcess, temporal_cli, worker_env
from tests.workflow.pairs import NOMINATION, PREPARED, both
from workflows.inputs import pair_workflow_id

EXAMPLE_INPUT = ROOT / "examples" / "pair-input.json"
EXAMPLE = json.loads(EXAMPLE_INPUT.read_text())
MENTOR = EXAMPLE["mentor"]["employee_id"]
MENTEE = EXAMPLE["mentee"]["employee_id"]
HR = EXAMPLE["nominated_by"]["employee_id"]
WORKFLOW_ID = pair_workflow_id(EXAMPLE["programme_id"], MENTOR, MENTEE)
PERSONAL = [p[key] for p in (EXAMPLE["mentor"], EXAMPLE["mentee"], EXAMPLE["nominated_by"])
            for key in ("display_name", "email")]
PERSONAL += [part for name in PERSONAL if "@" not in name for part in name.split()]  # "Dupont"


HR_TOKEN = "hr-cli-token"
CODEC: list[tuple[str, str]] = []  # the worker's codec server, as the Web UI reaches it


async def cli(server: TemporalDevServer, *args: str) -> Any:
    """Run the CLI off the event loop, through the worker's codec server as the UI does (payloads
    are encrypted in Temporal); the CompletedProcess."""
    return await asyncio.to_thread(temporal_cli, server, *args, timeout_s=60, codec=CODEC[-1] if CODEC else None)


async def update(server: TemporalDevServer, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """`temporal workflow update execute`, which must succeed: its JSON output."""
    done = await cli(server, "workflow", "update", "execute", "--workflow-id", WORKFLOW_ID,
                     "--name", name, "--input", json.dumps(payload))
    assert done.returncode == 0, f"{name}: exit {done.returncode}\n{done.stderr}\n{done.stdout}"
    output = json.loads(done.stdout)
    assert output["name"] == name
    return output


async def query_state(server: TemporalDevServer) -> dict[str, Any]:
    done = await cli(server, "workflow", "query", "--workflow-id", WORKFLOW_ID, "--name", "state")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["queryResult"][0]


async def describe(server: TemporalDevServer, workflow_id: str) -> dict[str, Any]:
    done = await cli(server, "workflow", "describe", "--workflow-id", workflow_id)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def decoded_search_attributes(described: dict[str, Any]) -> dict[str, Any]:
    fields = described["workflowExecutionInfo"].get("searchAttributes", {}).get("indexedFields", {})
    return {name: json.loads(base64.b64decode(value["data"])) for name, value in fields.items()}


async def eventually(check, what: str, timeout_s: float = 30):
    """Poll `check()` (async, returns a value or None) until it gives a value, or fail."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last is not None and last is not False:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not reached in {timeout_s}s (last: {last!r})")


async def events_of(conn: asyncpg.Connection, stream_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT version, event_id, event_type, payload::text, metadata::text FROM events"
        " WHERE stream_id = $1 ORDER BY version", stream_id)
    return [{"version": r["version"], "event_id": r["event_id"], "type": r["event_type"],
             "payload": json.loads(r["payload"]), "metadata": json.loads(r["metadata"])} for r in rows]


def labels(events: list[dict[str, Any]]) -> list[str]:
    """Event types; notices as `NotificationSent:<kind>><role>` (as in tests/workflow/pairs.py)."""
    return [f"NotificationSent:{e['payload']['kind']}>{e['payload']['recipient_role']}"
            if e["type"] == "NotificationSent" else e["type"] for e in events]


def next_slot(time_zone: str, days_ahead: int = 2) -> datetime:
    """The first Tuesday 10:00 or Thursday 15:00 (mentee's local time, inside the example's
    availability windows) at least `days_ahead` days from now: far enough that the 24-hour
    session reminder is not yet due while the test runs."""
    zone = ZoneInfo(time_zone)
    day = (datetime.now(zone) + timedelta(days=days_ahead)).date()
    while day.weekday() not in (1, 3):
        day += timedelta(days=1)
    hour = 10 if day.weekday() == 1 else 15
    return datetime(day.year, day.month, day.day, hour, 0)  # naive: read in the mentee's zone


async def test_a_pair_driven_through_the_temporal_cli(temporal_dev_server: TemporalDevServer,
                                                      database_url: str, tmp_path: Path):
    server = temporal_dev_server
    task_queue = f"mentoring-cli-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(worker_env(
        DATABASE_URL=database_url, TEMPORAL_ADDRESS=server.address,
        TEMPORAL_TASK_QUEUE=task_queue, STATE_DIR=str(tmp_path / "state"),
        MENTORING_API_TOKENS=json.dumps({HR_TOKEN: "hr"})))
    CODEC.append((f"http://127.0.0.1:{worker.env['API_PORT']}/codec", HR_TOKEN))
    conn = await asyncpg.connect(database_url)
    started = False
    try:
        worker.start()

        # --- nomination: the README's example input, verbatim --------------------------------------
        start = await cli(server, "workflow", "start", "--type", "MentoringPair",
                          "--task-queue", task_queue, "--workflow-id", WORKFLOW_ID,
                          "--input-file", str(EXAMPLE_INPUT))
        assert start.returncode == 0, start.stderr
        started = True
        assert json.loads(start.stdout)["workflowId"] == WORKFLOW_ID

        async def awaiting_motivation():
            done = await cli(server, "workflow", "query", "--workflow-id", WORKFLOW_ID, "--name", "state")
            if done.returncode != 0:
                return None  # the first workflow task may not have run yet
            state = json.loads(done.stdout)["queryResult"][0]
            # Nominated and the mentor's request recorded (the stage shows before its notice).
            return state if (state["stage"], state["version"]) == ("awaiting_motivation", 2) else None

        state = await eventually(awaiting_motivation, "the mentor is asked for their motivation")
        assert state["stream_id"] == WORKFLOW_ID  # the workflow id is the event stream's id
        assert (state["mentor_id"], state["mentee_id"], state["hr_id"]) == (MENTOR, MENTEE, HR)
        assert labels(await events_of(conn, WORKFLOW_ID)) == NOMINATION

        # --- consent and preparation, one CLI update per human action -------------------------------
        steps: list[tuple[str, dict[str, Any], str]] = [
            ("confirm_motivation", {"recorded_by": MENTOR}, "mentee_invited"),
            ("accept_invitation", {"recorded_by": MENTEE, "channel": "email"}, "preparation"),
            ("agree_curriculum", {"recorded_by": MENTOR, "topics": ["social networks"],
                                  "objectives": ["publish a first post", "tune privacy settings"]},
             "preparation"),
            *[("complete_training_module", {"recorded_by": MENTOR, "module": module}, "preparation")
              for module in EXAMPLE["training_modules"]],
            ("onboard_mentee", {"recorded_by": HR}, "preparation"),
            ("sign_off_mentor", {"recorded_by": HR}, "sessions"),
        ]
        update_ids: dict[str, str] = {}
        for name, payload, stage in steps:
            output = await update(server, name, payload)
            result = output["result"]
            assert result["stage"] == stage, (name, result)
            assert result["paused"] is False
            version = await conn.fetchval(
                "SELECT version FROM event_streams WHERE stream_id = $1", WORKFLOW_ID)
            assert result["stream_version"] == version, (name, result)
            update_ids.setdefault(name, output["updateId"])
        assert "6 session(s) to propose" in result["waiting_for"]

        # --- a session inside the mentee's availability, in their time zone -------------------------
        slot = next_slot(EXAMPLE["mentee"]["time_zone"])
        proposed = (await update(server, "propose_session", {
            "recorded_by": HR, "starts_at": slot.isoformat(timespec="minutes"),
            "duration_minutes": 60, "topics": ["social networks"]}))["result"]
        assert (proposed["stage"], proposed["session_no"]) == ("sessions", 1)
        confirmed = (await update(server, "confirm_session", {"recorded_by": HR, "session_no": 1}))["result"]
        assert confirmed["session_no"] == 1
        local = slot.replace(tzinfo=ZoneInfo(EXAMPLE["mentee"]["time_zone"]))  # as HR typed it
        starts_utc = local.astimezone(UTC)
        assert f"session 1 confirmed for {local:%a} {local.day} {local:%b %Y %H:%M} Europe/Paris" \
            in confirmed["waiting_for"]

        state = await query_state(server)
        assert state["stage"] == "sessions"
        assert state["consent_given"] and state["signed_off"] and state["mentee_onboarded"]
        assert sorted(state["modules_done"]) == sorted(EXAMPLE["training_modules"])
        [session] = state["sessions"]
        assert session["status"] == "confirmed"
        assert datetime.fromisoformat(session["starts_at"]) == starts_utc

        # --- the log in PostgreSQL: exactly these facts, in this order ------------------------------
        expected = PREPARED + ["SessionProposed", *both("session_invitation"), "SessionConfirmed"]
        events = await events_of(conn, WORKFLOW_ID)
        assert labels(events) == expected
        assert [e["version"] for e in events] == list(range(1, len(events) + 1))
        assert state["version"] == len(events)
        by_type = {e["type"]: e for e in events}
        assert by_type["MentorMotivationConfirmed"]["metadata"]["actor"] == MENTOR
        assert by_type["MenteeConsentGiven"]["payload"]["channel"] == "email"
        assert by_type["MentorSignedOff"]["metadata"]["actor"] == HR
        # The CLI's update id is the fact's causation id: the audit trail links the two.
        assert by_type["MentorMotivationConfirmed"]["metadata"]["causation_id"] == update_ids["confirm_motivation"]
        # Every fact carries the trace of the activity that appended it (the worker traces even
        # when no exporter is configured).
        assert all(re.fullmatch(r"[0-9a-f]{32}", e["metadata"].get("trace_id", "")) for e in events)
        assert datetime.fromisoformat(by_type["SessionProposed"]["payload"]["starts_at"]) == starts_utc

        # --- what HR filters by in the UI: stage and programme, no names or e-mails ----------------
        described = await describe(server, WORKFLOW_ID)
        info = described["workflowExecutionInfo"]
        assert info["status"] == "WORKFLOW_EXECUTION_STATUS_RUNNING"
        attributes = decoded_search_attributes(described)
        assert attributes["MentoringStage"] == "sessions"
        assert attributes["MentoringProgramme"] == EXAMPLE["programme_id"]
        assert attributes["MentoringAtRisk"] is False
        assert "MentoringNextDeadline" in attributes
        shown = json.dumps({"attributes": attributes, "memo": info.get("memo", {})}, ensure_ascii=False)
        shown += json.dumps(state, ensure_ascii=False)
        leaked = [text for text in PERSONAL if text.casefold() in shown.casefold()]
        assert not leaked, f"personal data in search attributes, memo or state: {leaked}"

        async def listed():
            done = await cli(server, "workflow", "list", "--query",
                             f"MentoringStage = 'sessions' AND MentoringProgramme = '{EXAMPLE['programme_id']}'"
                             f" AND WorkflowId = '{WORKFLOW_ID}'")
            return done.returncode == 0 and WORKFLOW_ID in done.stdout

        await eventually(listed, "the pair is listed by its stage and programme")

        # --- wrong actions: a non-zero exit, a message for HR, nothing recorded ---------------------
        count = len(events)
        for name, payload, words in [
            ("confirm_motivation", {"recorded_by": MENTOR}, ["WrongStage", "confirm_motivation", "sessions"]),
            ("propose_session", {"recorded_by": HR, "starts_at": (slot + timedelta(days=6)).isoformat(),
                                 "topics": ["mobile apps"]},  # a Monday: outside the availability
             ["OutsideAvailability", "availability", "Tuesday 09:00-12:00"]),
            ("give_feedback", {"recorded_by": MENTOR, "session_no": 1, "by_role": "mentor",
                               "rating": 9, "engaging": True},
             ["InvalidUpdatePayload", "rating", "nothing was recorded"]),
        ]:
            rejected = await cli(server, "workflow", "update", "execute", "--workflow-id", WORKFLOW_ID,
                                 "--name", name, "--input", json.dumps(payload))
            assert rejected.returncode != 0, f"{name} was accepted: {rejected.stdout}"
            message = rejected.stderr
            for word in words:
                assert word in message, f"{word!r} not in the rejection of {name}: {message}"
            assert "Traceback" not in message and ".py" not in message, message
            assert not [text for text in PERSONAL if text in message], message
        assert len(await events_of(conn, WORKFLOW_ID)) == count, "a rejected update recorded something"
        assert (await query_state(server))["version"] == count

        # --- a start input that is not a pair: Failed at once, naming the bad fields ----------------
        bad_id = f"pair-bad-input-{uuid.uuid4().hex[:8]}"
        bad = await cli(server, "workflow", "start", "--type", "MentoringPair", "--task-queue", task_queue,
                        "--workflow-id", bad_id, "--input", '{"programme_id": 5}')
        assert bad.returncode == 0, bad.stderr  # the server takes it; the workflow judges it

        async def closed():
            info = (await describe(server, bad_id))["workflowExecutionInfo"]
            return info if info["status"] != "WORKFLOW_EXECUTION_STATUS_RUNNING" else None

        info = await eventually(closed, "the bad start fails", timeout_s=20)
        assert info["status"] == "WORKFLOW_EXECUTION_STATUS_FAILED"
        # Started, one workflow task (scheduled, started, completed), the input-checks patch marker
        # and its search attribute, failed: no retried workflow task.
        assert int(info["historyLength"]) <= 7, "the bad input was retried instead of failing the workflow"
        result = await cli(server, "workflow", "result", "--workflow-id", bad_id)
        assert result.returncode != 0
        failure = json.loads(result.stdout)["closeEvent"]["workflowExecutionFailedEventAttributes"]["failure"]
        assert failure["applicationFailureInfo"]["type"] == "InvalidPairInput"
        assert failure["applicationFailureInfo"]["nonRetryable"] is True
        for field in ("programme_id", "mentor", "mentee", "topics", "nominated_by"):
            assert f"- {field}:" in failure["message"], failure["message"]
        assert "programme_id: should be a valid string" in failure["message"]
        assert not failure.get("stackTrace"), "HR sees a Python traceback"
        assert await conn.fetchval("SELECT count(*) FROM events WHERE stream_id <> $1", WORKFLOW_ID) == 0
        assert await conn.fetchval("SELECT count(*) FROM events") == count

        assert worker.interrupt() == 0, "\n".join(worker.lines[-30:])
    finally:
        worker.kill()
        await conn.close()
        if started:  # free the example's workflow id for any later test on this dev server
            await cli(server, "workflow", "terminate", "--workflow-id", WORKFLOW_ID,
                      "--reason", "end of test")
