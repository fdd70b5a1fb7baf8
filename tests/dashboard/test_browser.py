"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against the API served
by uvicorn over a real database whose read models the runner built from the log.

Signs in through the form, reads the figures the pages show and compares them with the read
models, follows a programme and a pair, checks nothing is fetched from anywhere else, and saves
screenshots (into docs/screenshots/ with SAVE_SCREENSHOTS=1, as the README shows them).
Needs /usr/bin/chromium (`.ci/run` installs Debian's package when it is missing); without it the
test says so and skips.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from datetime import timedelta
from pathlib import Path

import pypdf
import pytest
import uvicorn

from api.app import create_app
from devstack.postgres import free_port
from events.store import PostgresEventStore
from tests.dashboard.conftest import TOKENS, UI
from tests.projections import lifecycles as story
from tests.projections.conftest import make_runner

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Chromium on a machine with no internet: no background calls home, a fresh profile.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium), as .ci/run does")


async def _a_cohort(store: PostgresEventStore) -> None:
    """Forty pairs in two programmes, every kind of ending, nominated over twenty weeks."""
    generator = random.Random(5)
    stories = []
    for i in range(40):
        make = story.STORIES[i % len(story.STORIES)]
        s = make(f"c{i:02d}", programme_id=("sales", "finance")[i % 2], mentor_id=f"E{100 + i % 12}",
                 mentee_id=f"E{900 + i}", hr_id="hr-007")
        shift = timedelta(weeks=generator.randrange(20), hours=generator.randrange(48))
        for step in s.steps:
            step.at += shift
        stories.append(s)
    await story.write_all(store, stories)
    await store.pool.executemany("INSERT INTO people (employee_id, display_name, email) VALUES ($1, $2, $3)",
                                 [("E100", "Léa Junior", "lea@example.test"),
                                  ("hr-007", "Hana Ressources", "hana@example.test")])


async def test_hr_signs_in_reads_the_figures_and_opens_a_pair_in_chromium(store: PostgresEventStore,
                                                                           database_url: str, tmp_path):
    from playwright.async_api import async_playwright

    await _a_cohort(store)
    await make_runner(store, database_url).run_until_caught_up()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store.pool, TOKENS, temporal_ui=UI), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    # localhost: a page served over http there may keep a Secure cookie (a "potentially trustworthy" origin)
    base = f"http://localhost:{port}"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        for _ in range(600):  # up to 30 s; a server that cannot start ends the test, not hangs it
            if server.started or serving.done():
                break
            await asyncio.sleep(0.05)
        assert server.started, "the API did not start"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            elsewhere: list[str] = []
            page.on("request", lambda request: None if request.url.startswith(base) else elsewhere.append(request.url))

            await page.goto(f"{base}/dashboard")
            assert page.url == f"{base}/dashboard/sign-in"
            await page.get_by_label("Token").fill("hr-token")
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{base}/dashboard")
            assert "httpOnly" in str(await page.context.cookies())  # the token, out of scripts' reach
            assert await page.evaluate("document.cookie") == ""
            await page.screenshot(path=str(shots / "dashboard-all.png"), full_page=True)

            await page.get_by_role("link", name="sales", exact=True).click()
            await page.wait_for_url(f"{base}/dashboard?programme=sales")
            shown = {name: (await page.locator(f'[data-figure="{name}"]').inner_text()).strip()
                     for name in ("pairs", "alive", "at_risk", "funnel:consented", "funnel:completed")}
            expected = await store.pool.fetchrow(
                """SELECT count(*) AS pairs, count(*) FILTER (WHERE ended_at IS NULL) AS alive,
                          count(*) FILTER (WHERE ended_at IS NULL AND at_risk) AS at_risk,
                          count(*) FILTER (WHERE stage = 'completed') AS completed
                     FROM pair_overview.pairs WHERE programme_id = 'sales'""")
            consented = await store.pool.fetchval(
                "SELECT count(*) FROM programme_funnel.pairs WHERE programme_id = 'sales' AND consented")
            assert shown == {"pairs": str(expected["pairs"]), "alive": str(expected["alive"]),
                             "at_risk": str(expected["at_risk"]), "funnel:consented": str(consented),
                             "funnel:completed": str(expected["completed"])}
            assert expected["pairs"] == 20
            assert await page.locator("figure svg").count() == 7
            await page.screenshot(path=str(shots / "dashboard-programme.png"), full_page=True)

            pair_id = await store.pool.fetchval("""SELECT pair_id FROM pair_overview.pairs
                                                   WHERE programme_id = 'sales' AND stage = 'completed'
                                                   ORDER BY pair_id LIMIT 1""")
            await page.goto(f"{base}/dashboard/pairs/{pair_id}")
            assert (await page.locator('[data-figure="stage"]').inner_text()).strip() == "completed"
            trail = await store.pool.fetchval("SELECT count(*) FROM audit_trail.entries WHERE pair_id = $1", pair_id)
            assert await page.locator("#trail tbody tr").count() == trail
            await page.screenshot(path=str(shots / "dashboard-pair.png"), full_page=True)
            async with page.expect_download() as download:  # HR prints the mentor's certificate
                await page.get_by_role("link", name="the mentor's certificate (PDF)").click()
            certificate = await (await download.value).path()
            text = " ".join(pypdf.PdfReader(certificate).pages[0].extract_text().split())
            mentor = await store.pool.fetchval(
                """SELECT display_name FROM people JOIN pair_overview.pairs p ON p.mentor_id = employee_id
                    WHERE p.pair_id = $1""", pair_id)
            assert "Certificate of reverse mentoring" in text and mentor in text and "Hana Ressources" in text
            await browser.close()
        assert elsewhere == []  # nothing fetched from another address: no CDN, no font, no call home
    finally:
        server.should_exit = True
        await serving
    if os.environ.get("SAVE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, DOCS / shot.name)
    assert sorted(p.name for p in shots.iterdir()) == ["dashboard-all.png", "dashboard-pair.png",
                                                       "dashboard-programme.png"]
