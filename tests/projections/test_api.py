"""The audit HTTP API against the real database: roles, errors, injection, same answers as the CLI."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import httpx
import pytest
from typer.testing import CliRunner

from api.app import create_app
from cli.main import app as cli_app
from events.store import PostgresEventStore

TOKENS = {"hr-token": "hr", "auditor-token": "auditor"}
HR = {"Authorization": "Bearer hr-token"}
AUDITOR = {"Authorization": "Bearer auditor-token"}


@pytest.fixture
async def client(store: PostgresEventStore):
    transport = httpx.ASGITransport(app=create_app(store.pool, TOKENS))
    async with httpx.AsyncClient(transport=transport, base_url="http://audit") as client:
        yield client


@pytest.mark.parametrize("path", ["/audit/pairs/p-full", "/audit/verify", "/projections/status"])
async def test_no_token_or_unknown_token_is_401(seeded, client, path):
    missing = await client.get(path)
    wrong = await client.get(path, headers={"Authorization": "Bearer guess"})
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.headers["www-authenticate"] == "Bearer"


async def test_auditor_reads_audit_queries_but_not_operations(seeded, client):
    assert (await client.get("/audit/pairs/p-full", headers=AUDITOR)).status_code == 200
    assert (await client.get("/audit/verify", headers=AUDITOR)).status_code == 200
    refused = await client.get("/projections/status", headers=AUDITOR)
    assert refused.status_code == 403 and "auditor role may not" in refused.json()["detail"]
    status = await client.get("/projections/status", headers=HR)
    assert status.status_code == 200
    assert {(s["status"], s["behind"]) for s in status.json()} == {("running", 0)}


async def test_every_audit_endpoint_answers(seeded, client):
    pair = (await client.get("/audit/pairs/p-full", headers=HR)).json()
    assert pair["overview"]["stage"] == "completed"
    assert pair["overview"]["mentee"]["display_name"] == "Paul Senior"
    actor = (await client.get("/audit/actors/hr-007", headers=HR,
                              params={"since": "2025-01-01", "until": "2026-12-31"})).json()
    assert actor["actor"]["display_name"] == "Hana Ressources" and actor["entries"]
    consent = (await client.get("/audit/consent", headers=HR, params={"programme": "prog-B"})).json()
    assert consent["summary"]["consented"] == 1
    funnel = (await client.get("/audit/funnel", headers=HR, params={"programme": "prog-A"})).json()
    assert funnel["pairs"] == 5
    verify = (await client.get("/audit/verify", headers=HR)).json()
    assert verify["ok"] is True and verify["first_bad"] is None
    as_of = (await client.get("/audit/pairs/p-full/as-of", headers=HR,
                              params={"time": "2025-03-03T09:00:00Z"})).json()
    assert as_of["stage"] == "awaiting_motivation" and as_of["events_applied"] == 1


async def test_unknown_pair_is_404(seeded, client):
    assert (await client.get("/audit/pairs/nobody", headers=HR)).status_code == 404
    assert (await client.get("/audit/pairs/nobody/as-of", headers=HR,
                             params={"time": "2025-01-01"})).status_code == 404


async def test_programme_report_and_rollup_doors(seeded, client):
    """The close reports themselves are checked through a real programme run
    (tests/workflow/test_programme_close.py); here, the doors' answers around them."""
    missing = await client.get("/audit/programmes/nothing-here", headers=AUDITOR)
    assert missing.status_code == 404 and "no programme with id 'nothing-here'" in missing.json()["detail"]
    rollup = await client.get("/audit/rollup", headers=AUDITOR, params={"since": "2020-01-01"})
    assert rollup.status_code == 200
    assert rollup.json()["programmes"] == [] and rollup.json()["completion_rate"] is None


@pytest.mark.parametrize(("path", "params", "names"), [
    ("/audit/rollup", {}, "query parameter 'since': Field required"),
    ("/audit/rollup", {"since": "someday"}, "query parameter 'since'"),
    ("/audit/actors/E900", {"since": "last tuesday"}, "query parameter 'since'"),
    ("/audit/actors/E900", {"since": "2025-06-01", "until": "2025-01-01"},
     "since must be earlier than until"),
    ("/audit/funnel", {}, "query parameter 'programme': Field required"),
    ("/audit/consent", {"programme": ""}, "query parameter 'programme'"),
    ("/audit/pairs/p-full/as-of", {"time": "soon"}, "query parameter 'time'"),
    # At the calendar's edges: in words, not "database unavailable".
    ("/audit/pairs/p-full/as-of", {"time": "0001-01-01T00:30+14:00"}, "query parameter 'time': is out of range"),
    ("/audit/actors/E900", {"until": "9999-12-31T23:59:59-14:00"}, "query parameter 'until': is out of range"),
    ("/audit/actors/E900", {"since": "0001-01-01"}, "query parameter 'since': is out of range"),
])
async def test_bad_parameters_are_422_with_a_clear_message(seeded, client, path, params, names):
    response = await client.get(path, headers=HR, params=params)
    assert response.status_code == 422
    assert names in response.json()["message"]
    assert isinstance(response.json()["detail"], list)


INJECTIONS = [
    "' OR '1'='1",
    "p-full' --",
    "p-full'; DROP TABLE events; --",
    "x'); DELETE FROM pair_overview.pairs; --",
    "%",
    "p-full\" OR \"\"=\"",
    "1; TRUNCATE audit_trail.entries",
]


@pytest.mark.parametrize("attack", INJECTIONS)
async def test_sql_injection_finds_nothing_and_changes_nothing(seeded, client, attack,
                                                               store: PostgresEventStore):
    before = await _counts(store)
    pair = await client.get(f"/audit/pairs/{quote(attack, safe='')}", headers=HR)
    assert pair.status_code == 404
    actor = await client.get(f"/audit/actors/{quote(attack, safe='')}", headers=HR)
    assert actor.status_code == 200 and actor.json()["entries"] == []
    for path in ("/audit/consent", "/audit/funnel"):
        answer = await client.get(path, headers=HR, params={"programme": attack})
        assert answer.status_code == 200
    assert (await client.get("/audit/consent", headers=HR,
                             params={"programme": attack})).json()["entries"] == []
    assert (await client.get("/audit/funnel", headers=HR,
                             params={"programme": attack})).json()["pairs"] == 0
    as_of = await client.get(f"/audit/pairs/{quote(attack, safe='')}/as-of", headers=HR,
                             params={"time": "2030-01-01"})
    assert as_of.status_code == 404
    assert await _counts(store) == before


async def test_control_characters_in_ids_are_refused(seeded, client):
    response = await client.get("/audit/pairs/p-full%00", headers=HR)
    assert response.status_code == 422


async def test_the_cli_and_the_api_give_the_same_answers(seeded, client, database_url):
    cli = CliRunner()
    pairs = [
        (["audit", "pair", "p-withdrawn"], "/audit/pairs/p-withdrawn", {}),
        (["audit", "consent", "--programme", "prog-A"], "/audit/consent", {"programme": "prog-A"}),
        (["audit", "funnel", "--programme", "prog-A"], "/audit/funnel", {"programme": "prog-A"}),
        (["audit", "actor", "E900", "--since", "2025-03-05T00:00:00Z"], "/audit/actors/E900",
         {"since": "2025-03-05T00:00:00Z"}),
        (["audit", "as-of", "2025-04-01T00:00:00Z", "pair", "p-full"], "/audit/pairs/p-full/as-of",
         {"time": "2025-04-01T00:00:00Z"}),
        (["audit", "verify"], "/audit/verify", {}),
    ]
    for args, path, params in pairs:
        result = await asyncio.to_thread(cli.invoke, cli_app,
                                         [*args, "--json", "--database-url", database_url])
        assert result.exit_code == 0, result.output
        over_http = await client.get(path, headers=HR, params=params)
        assert json.loads(result.output) == over_http.json(), path


async def test_an_auditor_reads_people_by_id_only(seeded, client):
    for path in ("/audit/pairs/p-full", "/audit/actors/E900"):
        as_hr = (await client.get(path, headers=HR)).json()
        as_auditor = (await client.get(path, headers=AUDITOR)).json()
        people = ([as_hr["overview"]["mentor"], as_hr["overview"]["mentee"]]
                  if "overview" in as_hr else [as_hr["actor"]])
        assert all(p["display_name"] for p in people), "HR sees the names"
        shown = json.dumps(as_auditor, ensure_ascii=False)
        assert "Paul Senior" not in shown and "Léa Junior" not in shown
        for person in people:
            person["display_name"] = None
        assert as_auditor == as_hr  # the same facts otherwise


async def test_openapi_page_documents_the_endpoints(client):
    spec = (await client.get("/openapi.json")).json()
    assert {"/audit/pairs/{pair_id}", "/audit/actors/{actor_id}", "/audit/consent",
            "/audit/funnel", "/audit/verify", "/audit/pairs/{pair_id}/as-of",
            "/projections/status"} <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert (await client.get("/docs")).status_code == 200


async def test_app_can_open_its_own_pool_from_a_dsn(seeded, database_url):
    app = create_app(database_url, TOKENS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://audit") as client:
        assert (await client.get("/audit/pairs/p-full", headers=HR)).status_code == 200
    with pytest.raises(ValueError, match="unknown role"):
        create_app(database_url, {"t": "admin"})


async def _counts(store: PostgresEventStore) -> tuple:
    return tuple([await store.pool.fetchval(f"SELECT count(*) FROM {table}") for table in (
        "events", "pair_overview.pairs", "audit_trail.entries", "consent_register.entries",
        "programme_funnel.pairs", "people")])


async def test_the_start_input_s_json_schema_is_served_without_a_token(client):
    response = await client.get("/formats/pair-input.schema.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    schema = response.json()
    assert schema["title"] == "MentoringPair input" and "nominated_by" in schema["required"]
    programme = await client.get("/formats/programme-input.schema.json")
    assert programme.status_code == 200 and programme.json()["title"] == "MentoringProgramme input"


async def test_every_request_is_on_record_before_its_answer_leaves(seeded, client, store: PostgresEventStore,
                                                                   database_url: str):
    from api.app import token_name

    since = await store.pool.fetchval("SELECT now()")
    assert (await client.get("/audit/pairs/p-full", headers=HR)).status_code == 200
    assert (await client.get("/audit/funnel", params={"programme": "P1"}, headers=AUDITOR)).status_code == 200
    assert (await client.get("/audit/verify", headers={"Authorization": "Bearer guess"})).status_code == 401
    page = await client.get("/audit/access", params={"since": since.isoformat(), "limit": 2}, headers=AUDITOR)
    assert page.status_code == 200
    first, second = page.json()
    assert (first["token_name"], first["role"], first["route"], first["path_params"], first["status"]) == (
        token_name("hr", "hr-token"), "hr", "/audit/pairs/{pair_id}", {"pair_id": "p-full"}, 200)
    assert first["answer_bytes"] > 100 and "hr-token" not in json.dumps(page.json())
    assert (second["role"], second["route"], second["query_params"]) == ("auditor", "/audit/funnel", {"programme": "P1"})
    rest = await client.get("/audit/access", params={"since": since.isoformat(), "after_id": second["id"]}, headers=HR)
    assert [(e["token_name"], e["status"]) for e in rest.json()[:2]] == [("unknown token", 401), (token_name("auditor", "auditor-token"), 200)]

    shown = await asyncio.to_thread(CliRunner().invoke, cli_app, [
        "audit", "access", "--since", since.isoformat(), "--json", "--database-url", database_url])
    assert shown.exit_code == 0 and len(json.loads(shown.output)) >= 4
    with pytest.raises(Exception, match="append-only"):
        await store.pool.execute("DELETE FROM api_access")


async def test_a_flood_of_refused_requests_is_counted_not_recorded_one_by_one(seeded, store: PostgresEventStore):
    from api.app import FLOOD_ROUTE, STORED_TEXT, RefusedRequests

    clock = [1000.0]
    app = create_app(store.pool, TOKENS, refused=RefusedRequests(per_window=3, window_seconds=60,
                                                                 clock=lambda: clock[0]))
    since = await store.pool.fetchval("SELECT now()")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://audit") as client:
        for _ in range(6):
            assert (await client.get("/audit/verify", headers={"Authorization": "Bearer guess"})).status_code == 401
        for _ in range(4):  # answered, but without a token: counted like the refusals
            assert (await client.get("/formats/pair-input.schema.json")).status_code == 200
        # A request with a known token always has its row, its long parameter cut.
        assert (await client.get("/audit/pairs/p-full", params={"x": "y" * 5000}, headers=HR)).status_code == 200
        clock[0] += 61  # the window is over: the next request records the count first
        assert (await client.get("/audit/verify")).status_code == 401
    rows = await store.pool.fetch("SELECT route, status, query_params FROM api_access WHERE at >= $1 ORDER BY id", since)
    assert [(r["route"], r["status"]) for r in rows] == [
        *[("/audit/verify", 401)] * 3, ("/audit/pairs/{pair_id}", 200), (FLOOD_ROUTE, 0), ("/audit/verify", 401)]
    flood = rows[4]["query_params"]
    flood = json.loads(flood) if isinstance(flood, str) else flood
    assert (flood["count"], flood["statuses"]) == ("7", "200: 4, 401: 3")
    kept = rows[3]["query_params"]
    kept = json.loads(kept) if isinstance(kept, str) else kept
    assert len(kept["x"]) < STORED_TEXT + 40 and kept["x"].endswith("(5000 characters)")


async def test_no_answer_leaves_when_its_access_cannot_be_recorded(seeded, client, store: PostgresEventStore):
    await store.pool.execute("ALTER TABLE api_access RENAME TO api_access_gone")
    try:
        refused = await client.get("/audit/pairs/p-full", headers=HR)
        assert refused.status_code == 503 and "could not be recorded" in refused.json()["detail"]
        assert "p-full" not in refused.text
    finally:
        await store.pool.execute("ALTER TABLE api_access_gone RENAME TO api_access")


async def test_a_long_actor_trail_comes_a_page_at_a_time(seeded, client):
    whole = (await client.get("/audit/actors/hr-007", headers=HR)).json()
    assert whole["next_after"] is None and len(whole["entries"]) >= 3
    pages, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = (await client.get("/audit/actors/hr-007", params=params, headers=HR)).json()
        pages += page["entries"]
        after = page["next_after"]
        if after is None:
            break
    assert [e["position"] for e in pages] == [e["position"] for e in whole["entries"]]
    bad = await client.get("/audit/actors/hr-007", params={"after": "yesterday"}, headers=HR)
    assert bad.status_code == 422 and "next_after" in bad.text


async def test_the_access_log_is_purged_only_past_its_retention_and_only_by_its_owner(seeded, client, store):
    await client.get("/audit/verify", headers=HR)
    await store.pool.execute("ALTER TABLE api_access DISABLE TRIGGER api_access_no_update_delete")
    await store.pool.execute("UPDATE api_access SET at = now() - interval '400 days' WHERE id = (SELECT min(id) FROM api_access)")
    await store.pool.execute("ALTER TABLE api_access ENABLE TRIGGER api_access_no_update_delete")
    before = await store.pool.fetchval("SELECT count(*) FROM api_access")
    assert await store.pool.fetchval("SELECT purge_api_access(now())") == 1  # the old row only
    assert await store.pool.fetchval("SELECT count(*) FROM api_access") == before - 1
    await client.get("/audit/verify", headers=HR)  # a young row: not even a purge may take it
    assert await store.pool.fetchval("SELECT purge_api_access(now())") == 0
    with pytest.raises(Exception, match="append-only"):
        await store.pool.execute("SET mentoring.purging_access_log = 'on'; DELETE FROM api_access")
    async with store.pool.acquire() as conn:
        with pytest.raises(Exception, match="permission denied"):
            async with conn.transaction():
                await conn.execute("SET LOCAL ROLE mentoring_app")
                await conn.fetchval("SELECT purge_api_access(now())")
