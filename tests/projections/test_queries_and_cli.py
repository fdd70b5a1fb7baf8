"""The audit queries through the `mentoring` command, against the real database."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from cli.main import app
from devstack.postgres import free_port
from events.store import PostgresEventStore

cli = CliRunner()


async def mentoring(*args: str, database_url: str | None = None):
    """Run the command in a thread: it runs its own event loop, as from a shell."""
    argv = list(args) + (["--database-url", database_url] if database_url else [])
    return await asyncio.to_thread(cli.invoke, app, argv)


async def test_audit_pair_shows_overview_names_sessions_consent_and_trail(seeded, database_url):
    result = await mentoring("audit", "pair", "p-full", database_url=database_url)
    assert result.exit_code == 0, result.output
    for expected in ("Pair p-full", "Léa Junior (E100)", "Paul Senior (E900)", "completed",
                     "3 of 3", "consent_given", "PairNominated", "PairCompleted"):
        assert expected in result.output


async def test_audit_pair_json_carries_the_full_report(seeded, database_url):
    result = await mentoring("audit", "pair", "p-full", "--json", database_url=database_url)
    report = json.loads(result.output)
    assert report["overview"]["stage"] == "completed"
    assert report["overview"]["mentor"] == {"employee_id": "E100", "display_name": "Léa Junior"}
    assert report["overview"]["average_rating"] == 4.0
    assert len(report["trail"]) == seeded["p-full"].event_count()
    assert [s["status"] for s in report["sessions"]] == ["held"] * 3


async def test_erased_person_shows_without_name_everywhere_at_once(seeded, database_url,
                                                                   store: PostgresEventStore):
    await store.pool.execute(
        "UPDATE people SET display_name = NULL, email = NULL, erased_at = now() "
        "WHERE employee_id = 'E100'")
    result = await mentoring("audit", "pair", "p-full", "--json", database_url=database_url)
    assert json.loads(result.output)["overview"]["mentor"]["display_name"] is None


async def test_unknown_pair_is_exit_code_1(seeded, database_url):
    result = await mentoring("audit", "pair", "nope", database_url=database_url)
    assert result.exit_code == 1 and "no pair with id 'nope'" in result.output


async def test_audit_actor_filters_by_time(seeded, database_url):
    story = seeded["p-full"]
    first_session = next(s.at for s in story.steps if s.events[0].event_type == "SessionProposed")
    everything = json.loads((await mentoring("audit", "actor", "E900", "--json",
                                             database_url=database_url)).output)
    later = json.loads((await mentoring(
        "audit", "actor", "E900", "--since", first_session.isoformat(), "--json",
        database_url=database_url)).output)
    assert {e["actor"] for e in everything["entries"]} == {"E900"}
    assert everything["actor"]["display_name"] == "Paul Senior"
    assert 0 < len(later["entries"]) < len(everything["entries"])
    assert all(e["at"] >= first_session.isoformat().replace("+00:00", "Z") for e in later["entries"])

    table = await mentoring("audit", "actor", "E900", "--until", "2025-03-01",
                            database_url=database_url)
    assert table.exit_code == 0 and "Actions of Paul Senior (E900): 0" in table.output
    bad = await mentoring("audit", "actor", "E900", "--since", "yesterday",
                          database_url=database_url)
    assert bad.exit_code == 2 and "--since: 'yesterday' is not a date" in bad.output


async def test_audit_consent_proves_nobody_was_forced(seeded, database_url):
    result = await mentoring("audit", "consent", "--programme", "prog-A", "--json",
                             database_url=database_url)
    report = json.loads(result.output)
    assert report["summary"] == {"invited": 5, "consented": 3, "declined": 1, "expired": 1,
                                 "withdrawn": 1, "pairs_with_sessions_before_consent": []}
    table = await mentoring("audit", "consent", "--programme", "prog-A", database_url=database_url)
    assert "sessions before consent: none" in table.output


async def test_audit_funnel_counts_rates_and_median_days(seeded, database_url):
    report = json.loads((await mentoring("audit", "funnel", "--programme", "prog-A", "--json",
                                         database_url=database_url)).output)
    assert (report["pairs"], report["invited"], report["consented"], report["active"]) == (5, 5, 3, 0)
    assert report["outcomes"] == {"completed": 1, "invitation_expired": 1, "lapsed": 1,
                                  "mentee_declined": 1, "withdrawn": 1}
    assert report["consent_rate"] == 0.6 and report["completion_rate"] == round(1 / 3, 4)
    assert report["abandonment_rate"] == round(2 / 3, 4)
    stages = {s["stage"]: s for s in report["stages"]}
    assert stages["awaiting_motivation"]["pairs_reached"] == 5
    assert stages["awaiting_motivation"]["median_days"] == 1.0  # the mentor confirms a day later
    assert stages["sessions"]["pairs_reached"] == 3
    table = await mentoring("audit", "funnel", "--programme", "prog-A", database_url=database_url)
    assert "consent rate" in table.output and "60%" in table.output


async def test_audit_verify_names_the_first_tampered_event(seeded, database_url,
                                                           store: PostgresEventStore):
    ok = await mentoring("audit", "verify", database_url=database_url)
    assert ok.exit_code == 0 and ok.output.startswith("ok: ")
    target = await store.pool.fetchval(
        "SELECT position FROM events WHERE stream_id = 'pair-p-full' AND version = 5")
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE events SET payload = jsonb_set(payload, '{channel}', '\"forced\"') "
            "WHERE position = $1", target)
    bad = await mentoring("audit", "verify", database_url=database_url)
    assert bad.exit_code == 1 and f"TAMPERED: first bad event at position {target}" in bad.output
    as_json = await mentoring("audit", "verify", "--json", database_url=database_url)
    assert as_json.exit_code == 1 and json.loads(as_json.output)["first_bad"]["position"] == target


async def test_audit_as_of_folds_the_raw_log_up_to_that_time(seeded, database_url):
    story = seeded["p-full"]
    consent = next(s.at for s in story.steps if s.events[0].event_type == "MenteeConsentGiven")
    moment = (consent + timedelta(hours=1)).isoformat()
    state = json.loads((await mentoring("audit", "as-of", moment, "pair", "p-full", "--json",
                                        database_url=database_url)).output)
    assert (state["stage"], state["consent_given"], state["sessions_held"]) == ("preparation", True, 0)
    before = json.loads((await mentoring("audit", "as-of", "2020-01-01", "pair", "p-full", "--json",
                                         database_url=database_url)).output)
    assert before["existed"] is False and before["events_applied"] == 0
    table = await mentoring("audit", "as-of", "2030-01-01T00:00:00Z", "pair", "p-full",
                            database_url=database_url)
    assert table.exit_code == 0 and "completed" in table.output
    wrong = await mentoring("audit", "as-of", "2030-01-01", "person", "p-full",
                            database_url=database_url)
    assert wrong.exit_code == 2


async def test_projections_status_rebuild_and_resume(seeded, database_url):
    status = json.loads((await mentoring("projections", "status", "--json",
                                         database_url=database_url)).output)
    assert {s["name"] for s in status} >= {"pair_overview", "audit_trail", "consent_register"}
    assert {(s["status"], s["behind"]) for s in status} == {("running", 0)}
    table = await mentoring("projections", "status", database_url=database_url)
    assert "pair_overview" in table.output and "running" in table.output

    rebuilt = await mentoring("projections", "rebuild", "audit_trail", "consent_register",
                              database_url=database_url)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rebuilt audit_trail, consent_register" in rebuilt.output
    unknown = await mentoring("projections", "rebuild", "nonsense", database_url=database_url)
    assert unknown.exit_code == 2 and "unknown projection(s) nonsense" in unknown.output

    refused = await mentoring("projections", "resume", "audit_trail", database_url=database_url)
    assert refused.exit_code == 1 and "audit_trail is running with no parked stream: nothing to resume" in refused.output


@pytest.mark.parametrize("settings_error", [False, True])
async def test_without_database_url_the_dev_stack_is_meant(monkeypatch, settings_error):
    import settings

    monkeypatch.setenv("DATABASE_URL", "mysql://nope" if settings_error else "")
    port = free_port()  # nothing listens there: the stack of `make run` is not up
    monkeypatch.setenv("EMBEDDED_POSTGRES_PORT", str(port))
    settings.get_settings.cache_clear()
    try:
        result = await mentoring("audit", "verify")
    finally:
        settings.get_settings.cache_clear()
    assert result.exit_code == 2
    if settings_error:
        assert "DATABASE_URL" in result.output and "must start with postgresql://" in result.output
    else:
        # Without DATABASE_URL, the database of `make run` is the one meant.
        assert f"cannot reach PostgreSQL at 127.0.0.1:{port}/mentoring" in result.output
        assert "make run" in result.output


async def test_unreachable_database_is_one_line(database_url):
    result = await mentoring("audit", "verify", database_url="postgresql://x@127.0.0.1:1/none")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "cannot reach PostgreSQL" in result.output


async def test_a_pairs_read_model_row_is_proved_against_its_log_and_a_change_is_named(seeded, store, database_url):
    import json as jsonlib

    from projections.proofs import COLUMNS, prove_pair

    for pair_id in ("p-full", "p-declined", "p-withdrawn", "p-lapsed"):
        proof = await prove_pair(store, store.pool, pair_id)
        assert proof is not None and proof.ok, (pair_id, proof)
    proved = await asyncio.to_thread(CliRunner().invoke, app, ["audit", "prove", "pair", "p-full",
                                                               "--database-url", database_url])
    assert proved.exit_code == 0 and f"in all {len(COLUMNS)} columns" in proved.output, proved.output

    await store.pool.execute("UPDATE pair_overview.pairs SET sessions_held = sessions_held + 1 WHERE pair_id = 'p-full'")
    caught = await asyncio.to_thread(CliRunner().invoke, app, ["audit", "prove", "pair", "p-full", "--json",
                                                               "--database-url", database_url])
    assert caught.exit_code == 1
    [difference] = jsonlib.loads(caught.output)["differences"]
    assert difference["column"] == "sessions_held"
    assert int(difference["read_model"]) == int(difference["refolded"]) + 1
    assert await prove_pair(store, store.pool, "no-such-pair") is None
