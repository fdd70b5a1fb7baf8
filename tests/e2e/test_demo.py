"""`make demo` in a test: against the stack `make run` brings up, one pair goes from nomination to
completion in well under a minute, each step printed; without the stack, one clear line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from devstack.postgres import free_port
from devstack.temporal import TemporalDevServer
from tests.e2e.conftest import ROOT, WorkerProcess, dev_stack_setup, temporal_cli, worker_env

# The lifecycle as the event log must hold it (notifications left out), in this order.
LIFECYCLE = [
    "PairNominated", "MentorMotivationConfirmed", "MenteeInvited", "MenteeConsentGiven",
    "CurriculumAgreed", "TrainingModuleCompleted", "TrainingModuleCompleted", "MenteeOnboarded",
    "MentorSignedOff",
    "SessionProposed", "SessionConfirmed", "SessionHeld", "FeedbackGiven", "FeedbackGiven",
    "SessionProposed", "SessionConfirmed", "SessionHeld", "FeedbackGiven", "FeedbackGiven",
    "FinalEvaluationGiven", "FinalEvaluationGiven",
    "FollowUpSent", "FollowUpAnswered", "FollowUpAnswered", "FollowUpSent", "FollowUpAnswered", "FollowUpAnswered",
    "PairCompleted",
]


def _json(value: str | dict) -> dict:
    return json.loads(value) if isinstance(value, str) else value


def run_demo(env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    """`make demo` is `python -m demo`."""
    return subprocess.run([sys.executable, "-m", "demo"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout_s)


async def test_demo_runs_one_pair_end_to_end_against_the_dev_stack(tmp_path: Path):
    setup = dev_stack_setup(tmp_path / "state")
    ports, env = setup.ports, setup.env
    stack = WorkerProcess(env, ["--dev"])
    server = setup.cli_server(tmp_path)
    stack.start()
    try:
        demo = run_demo(env)
        assert demo.returncode == 0, f"{demo.stdout}\n{demo.stderr}\n" + "\n".join(stack.lines[-30:])
        assert demo.stderr == ""
        out = demo.stdout

        # The Web UI link first, then one line per step with who did it and the stage after it.
        ui = re.search(rf"http://127\.0\.0\.1:{ports['ui']}/namespaces/default/workflows/(\S+)", out)
        assert ui, out
        workflow_id = ui.group(1)
        pair_id = workflow_id.removeprefix("pair-")
        assert out.index(ui.group(0)) < out.index("nominates the pair")
        for expected in [
            "nominates the pair", "HR DEMOHR01", "-> awaiting_motivation",
            "confirms their motivation", "mentor DEMO1001", "-> mentee_invited",
            "accepts the invitation (consent)", "mentee DEMO2001", "-> preparation",
            "signs the mentor off", "-> sessions",
            "waiting for the reminder of session 1", "sends the reminder of session 1 to both",
            "records session 2 as held", "-> final_evaluation", "gives the final evaluation",
            "-> follow_up", "waiting for the 30-day follow-up (5 s",
            "sends the first follow-up to both", "answers the first follow-up",
            "waiting for the 90-day follow-up", "sends the second follow-up to both",
            "answers the second follow-up",
            "-> completed", f"mentoring audit pair {pair_id}",
        ]:
            assert expected in out, f"{expected!r} not printed:\n{out}"
        # Fictional as they are, names and e-mails stay in the start input.
        assert "@" not in out.replace("@127.0.0.1", "") and "Example" not in out
        printed_events = int(re.search(r"(\d+) events in the pair's stream", out).group(1))

        described = temporal_cli(server, "workflow", "describe", "--workflow-id", workflow_id)
        assert described.returncode == 0, described.stderr
        info = json.loads(described.stdout)["workflowExecutionInfo"]
        assert info["type"]["name"] == "MentoringPair"
        assert info["status"] in ("WORKFLOW_EXECUTION_STATUS_COMPLETED", "Completed"), info["status"]

        conn = await asyncpg.connect(setup.database_url)
        try:
            rows = await conn.fetch(
                "SELECT event_type, payload FROM events WHERE stream_id = $1 ORDER BY version",
                workflow_id)
        finally:
            await conn.close()
        types = [r["event_type"] for r in rows]
        assert len(rows) == printed_events
        assert [t for t in types if t != "NotificationSent"] == LIFECYCLE, types
        notices = [_json(r["payload"])["kind"] for r in rows if r["event_type"] == "NotificationSent"]
        for kind in ("motivation_request", "invitation", "session_invitation", "session_reminder",
                     "feedback_request", "final_evaluation_request", "follow_up"):
            assert kind in notices, f"no {kind} notice in {notices}"
        assert notices.count("session_reminder") == 4  # two sessions, both people

        # The printed audit command, in the same environment, shows the completed pair.
        audit = re.search(r"audit +(\S*mentoring audit pair \S+)", out).group(1).split()
        assert audit[0] == "mentoring" or (ROOT / audit[0]).exists(), audit
        command = [str(Path(sys.executable).parent / "mentoring"), *audit[1:], "--json"]
        for _ in range(50):  # the read models follow the log within moments
            report = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                    timeout=60)
            if report.returncode == 0 and json.loads(report.stdout)["overview"]["stage"] == "completed":
                break
            time.sleep(0.2)
        assert report.returncode == 0, report.stderr
        overview = json.loads(report.stdout)["overview"]
        assert (overview["stage"], overview["sessions_held"]) == ("completed", 2), overview

        assert stack.interrupt() == 0, "\n".join(stack.lines[-20:])
    finally:
        stack.kill()


def test_demo_without_the_stack_says_so_in_one_line():
    env = worker_env(TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")  # nothing listens there
    demo = run_demo(env, timeout_s=60)
    assert demo.returncode == 2, demo.stdout + demo.stderr
    assert demo.stdout == ""
    lines = demo.stderr.strip().splitlines()
    assert len(lines) == 1, demo.stderr
    assert "start the stack first with `make run` in another terminal" in lines[0]
    # What it could not reach: the stack's database (the keys of the payloads' encryption), or Temporal.
    assert "cannot reach PostgreSQL at 127.0.0.1:5433" in lines[0] or env["TEMPORAL_ADDRESS"] in lines[0]
    assert "Traceback" not in demo.stderr


def test_demo_without_a_worker_says_so_in_one_line(temporal_dev_server: TemporalDevServer, database_url: str):
    """Temporal is up but no worker polls the queue: the pair would never move, so do not start it."""
    env = worker_env(TEMPORAL_ADDRESS=temporal_dev_server.address, DATABASE_URL=database_url,
                     TEMPORAL_TASK_QUEUE="demo-queue-without-worker")
    demo = run_demo(env, timeout_s=60)
    assert demo.returncode == 2, demo.stdout + demo.stderr
    lines = demo.stderr.strip().splitlines()
    assert len(lines) == 1, demo.stderr
    assert "no worker polls task queue 'demo-queue-without-worker'" in lines[0]
    assert "start the stack first with `make run`" in lines[0]
    listed = temporal_cli(temporal_dev_server, "workflow", "list", "--query",
                          "WorkflowType = 'MentoringPair' AND TaskQueue = 'demo-queue-without-worker'")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout or "[]") in ([], None), "the demo started a pair nobody would run"
