"""`make demo-programme` in a test: against the stack `make run` brings up, a cohort of 12 mentors
and 20 seniors goes from enrolment to the programme's close report, through the same updates a
person sends; the pairs it starts carry the programme as a search attribute, and the report is
what `mentoring audit programme` shows."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.conftest import ROOT, WorkerProcess, dev_stack_setup, temporal_cli


def test_demo_programme_runs_a_cohort_to_its_close_report(tmp_path: Path):
    setup = dev_stack_setup(tmp_path / "state")
    env = setup.env
    stack = WorkerProcess(env, ["--dev"])
    server = setup.cli_server(tmp_path)
    stack.start()
    try:
        demo = subprocess.run([sys.executable, "-m", "demo_programme"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)
        assert demo.returncode == 0, f"{demo.stdout}\n{demo.stderr}\n" + "\n".join(stack.lines[-30:])
        out = demo.stdout
        line = json.loads(out.strip().splitlines()[-1])
        assert line["demo"] == "programme" and line["report"] is True
        assert line["pairs_started"] >= 19 and line["group_sessions"] == 1 and line["wound_down"] == 1
        for expected in ("nominates 12 mentors in one update", "enrol of their own will", "withdraws, without "
                         "penalty", "pairs suggested", "MentoringPair workflows started", "declines the invitation",
                         "collective session 1 on privacy", "HR ends the sessions", "closes by itself with its report"):
            assert expected in out, f"{expected!r} not printed:\n{out}"
        assert "@" not in out.replace("@127.0.0.1", "") and "Demo person" not in out
        programme_id = line["programme_id"]

        # Every pair it started carries the programme as a search attribute (HR filters by it).
        listed = temporal_cli(server, "workflow", "count", "--query",
                              f"MentoringProgramme = '{programme_id}' AND WorkflowType = 'MentoringPair'")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["count"] in (str(line["pairs_started"]), line["pairs_started"]), listed.stdout

        # The close report, as the read model serves it to `mentoring audit programme`.
        command = [str(Path(sys.executable).parent / "mentoring"), "audit", "programme", programme_id, "--json"]
        for _ in range(50):  # the read models follow the log within moments
            report = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
            if report.returncode == 0 and json.loads(report.stdout)["closed"]:
                break
            time.sleep(0.2)
        assert report.returncode == 0, report.stderr
        shown = json.loads(report.stdout)
        assert shown["closed"] and shown["figures"]["pairs_started"] == line["pairs_started"]
        assert shown["figures"]["reached"]["completed"] == line["pairs_completed"]
        assert stack.interrupt() == 0, "\n".join(stack.lines[-20:])
    finally:
        stack.kill()
