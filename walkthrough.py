"""`make screenshots`: the README's Temporal UI walkthrough, photographed from a real run.

Brings up the whole stack as `make run` does (`worker.py --dev`, in a state folder of its own, on
free ports), starts the README's example pair (examples/pair-input.json) and drives it as HR would
up to a confirmed first session, then opens the Temporal Web UI in Debian's Chromium through
Playwright and saves one picture per step into docs/screenshots/:

    1-workflows.png       the pairs list, filtered by stage (a search attribute)
    2-current-details.png the pair's current details (stage, waiting for, next actions with examples)
    3-state-query.png     the `state` query: stage, waiting_for, next deadline, next actions first
    4-history.png         the Event History: each update with its result
    5-send-update.png     the Send Update dialog
    6-start-workflow.png  the Start Workflow form HR fills in with the example input

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
from urllib.parse import quote
from zoneinfo import ZoneInfo

from temporalio.client import Client

from devstack.postgres import free_port
from runtime import temporal_client
from settings import Settings
from workflows.inputs import pair_workflow_id
from workflows.pair_state import ActionResult

ROOT = Path(__file__).resolve().parent
STAGE_FILTER = 'MentoringStage = "sessions"'  # the pairs holding sessions, as HR filters them
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
    settings = Settings(temporal_address=stack.env["TEMPORAL_ADDRESS"], state_dir=stack.state,
                        embedded_postgres_port=stack.ports["pg"])
    async with temporal_client(settings) as client:  # the stack's keys: payloads are encrypted
        return await _drive(client)


async def _drive(client: Client) -> tuple[str, str]:
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
    """One picture per step of the walkthrough; each waits for the text that proves it loaded."""
    from playwright.async_api import Page, async_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    base = f"{stack.ui}/namespaces/default/workflows"
    pair_page = f"{base}/{workflow_id}/{run_id}/history"

    async def click(page: Page, text: str) -> None:
        await page.get_by_text(text, exact=True).first.click()

    async def current_details(page: Page) -> None:
        await click(page, "User Metadata")

    async def state_query(page: Page) -> None:
        await click(page, "Queries")
        await page.get_by_role("button", name="Run Query").click()

    async def send_an_update(page: Page) -> None:
        await page.get_by_role("button", name="More Actions").click()
        await page.get_by_role("menuitem", name="Send an Update").click()
        # The next action the current details propose, pasted as HR does.
        dialog = page.locator("dialog[open]").last
        await dialog.locator("#update-select").click(force=True)
        await dialog.get_by_role("option", name="record_session_held").first.click()
        await dialog.locator(".cm-content").click()
        await page.keyboard.insert_text('{"recorded_by": "HR001", "session_no": 1, "topics_covered": ["social networks"]}')

    async def start_workflow(page: Page) -> None:
        # Filled in as the README says (not sent: the pair runs already).
        await page.get_by_label("Workflow ID").fill(workflow_id)
        await page.get_by_label("Task Queue").fill("mentoring")
        await page.get_by_label("Workflow Type").fill("MentoringPair")
        await page.locator(".cm-content").first.click()
        await page.keyboard.insert_text(json.dumps(EXAMPLE, indent=2, ensure_ascii=False))

    shots = [  # (file, page, what to do there, text that shows it is done)
        ("1-workflows.png", f"{base}?query={quote(STAGE_FILTER)}", None, workflow_id),
        ("2-current-details.png", pair_page, current_details, "Current Details"),
        ("3-state-query.png", pair_page, state_query, "waiting_for"),
        ("4-history.png", pair_page, None, "Workflow Execution Update Completed"),
        ("5-send-update.png", pair_page, send_an_update, "topics_covered"),
        ("6-start-workflow.png", f"{base}/start-workflow", start_workflow, "training_modules"),
    ]
    saved, missing = [], []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1440, "height": 1000})
        for name, url, action, proof in shots:
            await page.goto(url, wait_until="load")
            await page.wait_for_timeout(1500)
            try:
                if action is not None:
                    await action(page)
                await page.get_by_text(proof).locator("visible=true").first.wait_for(timeout=15_000)
            except Exception as exc:  # saved, to show what the UI showed instead; the run fails
                missing.append(name)
                _say(f"{name}: '{proof}' not seen ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
            await page.wait_for_timeout(1000)
            path = OUT / name
            await page.screenshot(path=str(path))
            saved.append(path)
            _say(f"saved {path.relative_to(ROOT)}")
        await browser.close()
    if missing:
        raise SystemExit(f"the UI did not show what {', '.join(missing)} should: see those pictures")
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
