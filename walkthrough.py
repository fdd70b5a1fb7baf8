"""`make screenshots`: the README's Temporal UI walkthrough, photographed from a real run.

Brings up the whole stack as `make run` does (`worker.py --dev`, in a state folder of its own, on
free ports), starts the README's example pair (examples/pair-input.json) and drives it as HR would
up to a confirmed first session, then opens the Temporal Web UI in Debian's Chromium through
Playwright and saves one picture per step into docs/screenshots/:

    1-workflows.png       the pairs list, with the Stage and NextDeadline columns HR filters by
    2-current-details.png the pair's page: current details (stage, waiting for, next actions)
    3-state-query.png     the `state` query: stage, waiting_for, next deadline, next actions first
    4-history.png         the Event History: each update with its result
    5-start-workflow.png  the Start Workflow form HR fills in with the example input

Needs Debian's `chromium` (`apt-get install chromium`) and Playwright (`pip install -e '.[screenshots]'`,
which `make screenshots` does); Playwright drives the system browser, it downloads none.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from devstack.postgres import free_port
from runtime import connect_temporal
from settings import Settings
from workflows.inputs import pair_workflow_id
from workflows.pair_state import ActionResult

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "docs" / "screenshots"
EXAMPLE = json.loads((ROOT / "examples" / "pair-input.json").read_text(encoding="utf-8"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Chromium on a machine with no internet: no background calls home, a fresh profile.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _say(message: str) -> None:
    print(f"[screenshots] {message}", flush=True)


class Stack:
    """`worker.py --dev` in a state folder of its own, on free ports; stopped with Ctrl-C."""

    def __init__(self) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="mentoring-walkthrough-"))
        self.ports = {name: free_port() for name in ("pg", "temporal", "ui", "api")}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "TEMPORAL_", "SMTP_"))}
        self.env.update(STATE_DIR=str(self.state), EMBEDDED_POSTGRES_PORT=str(self.ports["pg"]),
                        TEMPORAL_ADDRESS=f"127.0.0.1:{self.ports['temporal']}",
                        TEMPORAL_UI_PORT=str(self.ports["ui"]), API_PORT=str(self.ports["api"]))
        self.process: subprocess.Popen[str] | None = None

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.ports['ui']}"

    def start(self, timeout_s: float = 180) -> None:
        self.process = subprocess.Popen([sys.executable, "worker.py", "--dev"], cwd=ROOT, env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        for line in self.process.stdout:
            if "Ctrl-C stops everything" in line:
                # Keep reading its output, or the worker blocks on a full pipe.
                threading.Thread(target=self.process.stdout.read, daemon=True).start()
                return
            if time.monotonic() > deadline:
                break
        self.stop()
        raise SystemExit("the stack did not come up (run `make run` to see why)")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.state, ignore_errors=True)


def first_session_slot(now: datetime) -> datetime:
    """The mentee's first Tuesday 10:00 (inside their availability) at least two days ahead."""
    zone = ZoneInfo(EXAMPLE["mentee"]["time_zone"])
    day = (now.astimezone(zone) + timedelta(days=2)).date()
    while day.weekday() != 1:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, 10, 0, tzinfo=zone)


async def drive_the_pair(stack: Stack) -> tuple[str, str]:
    """The README's walkthrough, as HR sends it: (workflow id, run id)."""
    client = await connect_temporal(Settings(temporal_address=stack.env["TEMPORAL_ADDRESS"]))
    mentor, mentee, hr = (EXAMPLE[k]["employee_id"] for k in ("mentor", "mentee", "nominated_by"))
    workflow_id = pair_workflow_id(EXAMPLE["programme_id"], mentor, mentee)
    handle = await client.start_workflow("MentoringPair", EXAMPLE, id=workflow_id, task_queue="mentoring")
    for _ in range(100):  # the nomination is recorded within a second or two
        state: dict[str, Any] = await handle.query("state", result_type=dict)
        if state["version"] > 0:
            break
        await asyncio.sleep(0.2)

    async def act(update: str, **payload: Any) -> ActionResult:
        result = await handle.execute_update(update, payload, result_type=ActionResult)
        _say(f"{update}: stage {result.stage}")
        return result

    await act("confirm_motivation", recorded_by=mentor)
    await act("accept_invitation", recorded_by=mentee, channel="email")
    await act("agree_curriculum", recorded_by=mentor, topics=["social networks", "protecting personal data"],
              objectives=["publish a first post", "review privacy settings"])
    for module in EXAMPLE["training_modules"]:
        await act("complete_training_module", recorded_by=mentor, module=module)
    await act("onboard_mentee", recorded_by=hr)
    await act("sign_off_mentor", recorded_by=hr)
    starts = first_session_slot(datetime.now(ZoneInfo("UTC")))
    proposed = await act("propose_session", recorded_by=hr, starts_at=starts.isoformat(timespec="minutes"),
                         topics=["social networks"])
    await act("confirm_session", recorded_by=hr, session_no=proposed.session_no)
    described = await handle.describe()
    return workflow_id, described.run_id


async def photograph(stack: Stack, workflow_id: str, run_id: str) -> list[Path]:
    from playwright.async_api import async_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    base = f"{stack.ui}/namespaces/default/workflows"
    page_of = f"{base}/{workflow_id}/{run_id}"
    shots = [
        ("1-workflows.png", base, "MentoringPair"),
        ("2-current-details.png", f"{page_of}/history", "Stage"),
        ("3-state-query.png", f"{page_of}/query", "waiting_for"),
        ("4-history.png", f"{page_of}/history", "confirm_session"),
        ("5-start-workflow.png", f"{base}/start-workflow", "Workflow Type"),
    ]
    saved = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1440, "height": 1000})
        for name, url, text in shots:
            await page.goto(url, wait_until="networkidle")
            try:
                await page.get_by_text(text).first.wait_for(timeout=15_000)
            except Exception:
                _say(f"{name}: '{text}' not seen on {url}; saved as shown")
            await page.wait_for_timeout(1500)  # charts and tables settle
            path = OUT / name
            await page.screenshot(path=str(path), full_page=name != "4-history.png")
            saved.append(path)
            _say(f"saved {path.relative_to(ROOT)}")
        await browser.close()
    return saved


async def _main() -> None:
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"no browser at {CHROMIUM}: install Debian's chromium (apt-get install chromium), "
                         "or set CHROMIUM to another Chromium")
    stack = Stack()
    _say(f"bringing up the stack in {stack.state}")
    stack.start()
    try:
        workflow_id, run_id = await drive_the_pair(stack)
        await photograph(stack, workflow_id, run_id)
    finally:
        stack.stop()


if __name__ == "__main__":
    asyncio.run(_main())
