"""The dashboard over the seeded read models: sign-in, figures equal to the read models', roles,
documents. The same pages in a real browser: test_browser.py."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from datetime import UTC, datetime
from html import unescape

import pypdf
from typer.testing import CliRunner

from cli.main import app as cli_app
from events.base import EventMetadata, NewEvent
from events.store import PostgresEventStore
from projections import queries
from tests.dashboard.conftest import UI, sign_in
from tests.projections.conftest import make_runner


def figures_shown(html: str) -> dict[str, str]:
    """Every number the page marks as a figure (data-figure="name"), as displayed."""
    return {name: unescape(value).strip()
            for name, value in re.findall(r'data-figure="([^"]+)">([^<]*)<', html)}


async def test_pages_send_strangers_to_sign_in_and_keep_the_token_in_a_strict_cookie(seeded, client):
    first = await client.get("/dashboard")
    assert first.status_code == 303 and first.headers["location"] == "/dashboard/sign-in"
    refused = await sign_in(client, "guess")
    assert refused.status_code == 401 and "This token is not known" in refused.text
    assert "set-cookie" not in refused.headers

    accepted = await sign_in(client, "hr-token")
    assert accepted.status_code == 303 and accepted.headers["location"] == "/dashboard"
    cookie = accepted.headers["set-cookie"]
    for attribute in ("mentoring_token=hr-token", "HttpOnly", "Secure", "SameSite=strict", "Path=/dashboard"):
        assert attribute.lower() in cookie.lower(), attribute
    page = await client.get("/dashboard")
    assert page.status_code == 200 and "signed in as <strong>hr</strong>" in page.text
    assert page.headers["cache-control"] == "no-store"

    await client.post("/dashboard/sign-out")
    assert (await client.get("/dashboard")).status_code == 303


async def test_a_programmes_figures_are_the_read_models(seeded, client, store: PostgresEventStore):
    await sign_in(client, "auditor-token")
    page = await client.get("/dashboard", params={"programme": "prog-A"})
    assert page.status_code == 200
    shown = figures_shown(page.text)

    funnel = await queries.funnel_report(store.pool, "prog-A")
    assert shown["pairs"] == str(funnel.pairs) == "5"
    assert shown["funnel:nominated"] == str(funnel.pairs)
    assert shown["funnel:consented"] == str(funnel.consented)
    assert shown["funnel:completed"] == str(funnel.outcomes["completed"])
    assert shown["alive"] == str(funnel.active)
    # The stories: p-full held 3 sessions rated 4, 5 and 3 by the senior; withdrawn held 1, lapsed none.
    held = await store.pool.fetchval("""SELECT count(DISTINCT pair_id) FROM session_calendar.sessions
                                        WHERE programme_id = 'prog-A' AND status = 'held'""")
    assert shown["funnel:in sessions"] == str(held) == "2"
    ratings = dict(await store.pool.fetch("""SELECT rating, count(*) FROM programme_health.ratings
                                             WHERE programme_id = 'prog-A' AND kind = 'session' GROUP BY rating"""))
    for rating in range(1, 6):
        assert shown[f"rating:session:{rating}"] == str(ratings.get(rating, 0))
    # Each senior's latest answer: p-full, p-withdrawn and p-lapsed consented (p-withdrawn left
    # later, which is not an answer to the invitation), p-declined declined, p-expired let it expire.
    consent = {k.removeprefix("consent:"): int(v) for k, v in shown.items() if k.startswith("consent:")}
    assert consent == {"consent_given": 3, "declined": 1, "expired": 1}
    left = {k: int(v) for k, v in shown.items() if k.startswith("left:")}
    assert sum(left.values()) == sum(n for outcome, n in funnel.outcomes.items() if outcome != "completed")
    # Every chart is drawn inline, and nothing is loaded from another address.
    assert page.text.count("<svg") == 7
    assert not re.search(r'(src|href)="(https?:)?//', page.text.replace(f'href="{UI}', ""))


async def test_every_programme_adds_up_the_programmes(seeded, client):
    await sign_in(client, "hr-token")
    everything = figures_shown((await client.get("/dashboard")).text)
    a = figures_shown((await client.get("/dashboard", params={"programme": "prog-A"})).text)
    b = figures_shown((await client.get("/dashboard", params={"programme": "prog-B"})).text)
    for figure in ("pairs", "alive", "funnel:nominated", "funnel:completed", "rating:session:5"):
        assert int(everything[figure]) == int(a[figure]) + int(b[figure]), figure


async def test_the_pairs_needing_hr_link_to_the_temporal_ui_and_the_trail(seeded, client, store):
    # Every pair of the seed has ended: bring p-lapsed back to its spell at risk, as if not lapsed yet.
    await store.pool.execute("UPDATE pair_overview.pairs SET ended_at = NULL, at_risk = true WHERE pair_id = 'p-lapsed'")
    await store.pool.execute("UPDATE programme_health.risk_spells SET until = NULL WHERE pair_id = 'p-lapsed'")
    flagged = await store.pool.fetchval("SELECT since FROM programme_health.risk_spells WHERE pair_id = 'p-lapsed'")
    await sign_in(client, "hr-token")
    page = (await client.get("/dashboard", params={"programme": "prog-A"})).text
    assert figures_shown(page)["needing_hr"] == "1"
    row = re.search(r'<tr data-pair="p-lapsed">(.*?)</tr>', page, re.S)
    assert row is not None
    assert f'href="{UI}/workflows/pair-p-lapsed"' in row.group(1)
    assert 'href="/dashboard/pairs/p-lapsed#trail"' in row.group(1) and "at risk" in row.group(1)
    assert f"<td>{flagged:%Y-%m-%d}</td>" in row.group(1)  # needs HR since it was flagged


async def test_a_long_list_of_pairs_needing_hr_is_cut_and_its_count_is_not(seeded, client, store, monkeypatch):
    from dashboard import figures

    # Two pairs of the seed brought back to a spell at risk; the list is cut at one.
    await store.pool.execute("""UPDATE pair_overview.pairs SET ended_at = NULL, at_risk = true
                                WHERE pair_id IN ('p-lapsed', 'p-withdrawn')""")
    monkeypatch.setattr(figures, "LIST_LIMIT", 1)
    await sign_in(client, "hr-token")
    page = (await client.get("/dashboard", params={"programme": "prog-A"})).text
    assert figures_shown(page)["needing_hr"] == "2"
    assert len(re.findall(r"<tr data-pair=", page)) == 1 and "The 1 waiting longest are listed." in page


async def test_bad_or_foreign_requests_get_a_clear_answer_and_change_nothing(seeded, client):
    await sign_in(client, "hr-token")
    for bad in ("", "x" * 201, "prog\x00A"):
        answer = await client.get("/dashboard", params={"programme": bad})
        assert answer.status_code == 422 and "programme" in answer.json()["message"], bad
    assert (await client.get("/dashboard", params={"programme": "nowhere"})).status_code == 404
    for path in ("/dashboard/pairs/a%01b", "/dashboard/pairs/a%01b/certificate.pdf",
                 "/dashboard/programmes/" + "x" * 201 + "/report.pdf"):
        answer = await client.get(path)
        assert answer.status_code == 422 and "path parameter" in answer.json()["message"], path
    # A form posted from another site's page neither signs in nor out.
    foreign = {"Origin": "https://elsewhere.test", "Sec-Fetch-Site": "cross-site"}
    forged = await client.post("/dashboard/sign-in", data={"token": "auditor-token"}, headers=foreign)
    assert forged.status_code == 403 and "another site" in forged.text and "set-cookie" not in forged.headers
    assert (await client.post("/dashboard/sign-out", headers=foreign)).status_code == 403
    # A browser that sends only Origin: another host is refused; ours, even over another scheme
    # (a proxy that ends TLS in front of the API), is not.
    other_host = await client.post("/dashboard/sign-in", data={"token": "hr-token"},
                                   headers={"Origin": "https://elsewhere.test"})
    assert other_host.status_code == 403
    behind_a_proxy = await client.post("/dashboard/sign-in", data={"token": "hr-token"},
                                       headers={"Origin": "http://dash.test"})
    assert behind_a_proxy.status_code == 303
    assert "signed in as <strong>hr</strong>" in (await client.get("/dashboard")).text
    huge = await client.post("/dashboard/sign-in", content=b"token=" + b"x" * 5000,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413
    page = await client.get("/dashboard")
    assert "script-src 'none'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_an_opened_programme_without_pairs_has_a_page_of_zeros(seeded, client, store, database_url, tmp_path):
    await store.append("programme-prog-C", 0, [NewEvent(
        event_id=uuid.uuid4(), event_type="ProgrammeOpened", schema_version=1,
        payload={"programme_id": "prog-C", "hr_owners": ["hr-007"]})], EventMetadata(actor="hr-007"))
    await make_runner(store, database_url).run_until_caught_up()
    await sign_in(client, "auditor-token")
    page = await client.get("/dashboard", params={"programme": "prog-C"})
    assert page.status_code == 200
    shown = figures_shown(page.text)
    assert (shown["pairs"], shown["alive"], shown["funnel:completed"], shown["needing_hr"]) == ("0", "0", "0", "0")
    assert (await client.get("/dashboard/programmes/prog-C/report.pdf")).status_code == 200
    # The command line gives the same report, not a refusal.
    out = tmp_path / "prog-C.pdf"
    done = await asyncio.to_thread(CliRunner().invoke, cli_app, ["report", "prog-C", "--out", str(out),
                                                                 "--database-url", database_url])
    assert done.exit_code == 0 and "Programme prog-C" in pypdf.PdfReader(out).pages[0].extract_text(), done.output


async def test_a_closed_programmes_report_stands_as_of_its_close(seeded, store, database_url):
    from dashboard import documents

    closed = datetime(2026, 3, 2, 12, tzinfo=UTC)
    await store.append("programme-prog-A", 0, [
        NewEvent(event_id=uuid.uuid4(), event_type="ProgrammeOpened", schema_version=1,
                 payload={"programme_id": "prog-A", "hr_owners": ["hr-007"]}),
        NewEvent(event_id=uuid.uuid4(), event_type="ProgrammeClosed", schema_version=1,
                 payload={"programme_id": "prog-A"})], EventMetadata(actor="hr-007", occurred_at=closed))
    await make_runner(store, database_url).run_until_caught_up()
    facts = await documents.report_facts(store.pool, "prog-A")
    assert facts.closed_at == closed and facts.figures.as_of == closed
    assert all(week.week <= closed.date() for week in facts.figures.alive_over_time)


async def test_a_pair_page_shows_its_timeline_and_trail_and_names_for_hr_only(seeded, client, store):
    await sign_in(client, "hr-token")
    hr = await client.get("/dashboard/pairs/p-full")
    assert hr.status_code == 200 and "Paul Senior" in hr.text and hr.text.count("<svg") == 1
    trail = await store.pool.fetchval("SELECT count(*) FROM audit_trail.entries WHERE pair_id = 'p-full'")
    assert f"Audit trail ({trail} events)" in hr.text
    assert "certificate.pdf" in hr.text

    await sign_in(client, "auditor-token")
    auditor = await client.get("/dashboard/pairs/p-full")
    assert auditor.status_code == 200 and "Paul Senior" not in auditor.text and "E900" in auditor.text
    assert "certificate.pdf" not in auditor.text
    assert (await client.get("/dashboard/pairs/nobody")).status_code == 404
    # Asked by its workflow's id, the page is the pair's own.
    by_workflow = await client.get("/dashboard/pairs/pair-p-full")
    assert by_workflow.status_code == 200 and "<h1 id=\"title\">Pair p-full</h1>" in by_workflow.text
    assert "<td>awaiting motivation</td>" in by_workflow.text


async def test_the_mentors_certificate_is_hrs_and_says_what_the_read_models_hold(seeded, client, store,
                                                                                  database_url):
    await sign_in(client, "auditor-token")
    assert (await client.get("/dashboard/pairs/p-full/certificate.pdf")).status_code == 403
    await sign_in(client, "hr-token")
    answer = await client.get("/dashboard/pairs/p-full/certificate.pdf")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/pdf"
    text = " ".join(pypdf.PdfReader(io.BytesIO(answer.content)).pages[0].extract_text().split())
    held = await store.pool.fetchval("""SELECT count(*) FROM mentor_recognition.sessions
                                        WHERE pair_id = 'p-full' AND mentor_id = 'E100'""")
    assert "Léa Junior" in text and f"giving {held} sessions" in text and "prog-A" in text
    assert "Hana Ressources" in text  # no programme owners recorded: the HR person who nominated

    # Once the programme's opening names its HR owners, the first with a name signs.
    await store.append("programme-prog-A", 0, [NewEvent(
        event_id=uuid.uuid4(), event_type="ProgrammeOpened", schema_version=1,
        payload={"programme_id": "prog-A", "hr_owners": ["hr-unnamed", "hr-008"]})], EventMetadata(actor="hr-008"))
    await store.pool.execute("INSERT INTO people (employee_id, display_name, email) VALUES ('hr-008', 'Olga Owner', 'o@x.test')")
    await make_runner(store, database_url).run_until_caught_up()
    signed = await client.get("/dashboard/pairs/p-full/certificate.pdf")
    assert "Olga Owner" in pypdf.PdfReader(io.BytesIO(signed.content)).pages[0].extract_text()

    unfinished = await client.get("/dashboard/pairs/p-withdrawn/certificate.pdf")
    assert unfinished.status_code == 409 and "has not completed" in unfinished.text
    assert (await client.get("/dashboard/pairs/nobody/certificate.pdf")).status_code == 404
    # An erased mentor's name cannot be printed.
    await store.pool.execute("UPDATE people SET display_name = NULL WHERE employee_id = 'E100'")
    erased = await client.get("/dashboard/pairs/p-full/certificate.pdf")
    assert erased.status_code == 409 and "no name on record" in erased.text
    # A name is printed as written, dollar signs too (matplotlib would read "$...$" as a formula).
    await store.pool.execute("UPDATE people SET display_name = 'Ana $\\x$ Cash' WHERE employee_id = 'E100'")
    dollars = await client.get("/dashboard/pairs/p-full/certificate.pdf")
    assert dollars.status_code == 200, dollars.text
    assert "Ana $\\x$ Cash" in pypdf.PdfReader(io.BytesIO(dollars.content)).pages[0].extract_text()


async def test_the_programme_report_is_a_pdf_of_the_same_figures(seeded, client):
    await sign_in(client, "auditor-token")
    page = figures_shown((await client.get("/dashboard", params={"programme": "prog-A"})).text)
    answer = await client.get("/dashboard/programmes/prog-A/report.pdf")
    assert answer.status_code == 200
    reader = pypdf.PdfReader(io.BytesIO(answer.content))
    assert len(reader.pages) == 5  # the figures, then the seven charts two to a page
    cover = " ".join(reader.pages[0].extract_text().split())
    assert "Programme prog-A: report as of" in cover
    assert f"pairs nominated {page['pairs']}" in cover and f"funnel: completed {page['funnel:completed']}" in cover
    assert (await client.get("/dashboard/programmes/none-such/report.pdf")).status_code == 404


async def test_dashboard_requests_are_in_the_access_log_with_their_role(seeded, client, store):
    await sign_in(client, "auditor-token")
    await client.get("/dashboard/pairs/p-full")
    row = await store.pool.fetchrow("""SELECT role, route, status FROM api_access
                                       WHERE route LIKE '/dashboard/pairs/%' ORDER BY id DESC LIMIT 1""")
    assert (row["role"], row["status"]) == ("auditor", 200)


async def test_the_commands_write_the_same_documents(seeded, database_url, tmp_path):
    cli = CliRunner()
    out = tmp_path / "cert.pdf"
    done = await asyncio.to_thread(cli.invoke, cli_app, ["certificate", "p-full", "--out", str(out),
                                                         "--database-url", database_url])
    assert done.exit_code == 0, done.output
    assert "Léa Junior" in pypdf.PdfReader(out).pages[0].extract_text()
    refused = await asyncio.to_thread(cli.invoke, cli_app, ["certificate", "p-declined", "--out",
                                                            str(tmp_path / "no.pdf"), "--database-url", database_url])
    assert refused.exit_code == 1 and "has not completed" in refused.output
    assert not (tmp_path / "no.pdf").exists()

    report = tmp_path / "report.pdf"
    done = await asyncio.to_thread(cli.invoke, cli_app, ["report", "prog-B", "--out", str(report),
                                                         "--database-url", database_url])
    assert done.exit_code == 0, done.output
    assert "Programme prog-B" in pypdf.PdfReader(report).pages[0].extract_text()
    unknown = await asyncio.to_thread(cli.invoke, cli_app, ["report", "nothing", "--database-url", database_url])
    assert unknown.exit_code == 1 and "no programme with id 'nothing'" in unknown.output
