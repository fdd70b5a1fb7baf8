"""Erasure on request: a person's name, e-mail and comments go, the audit trail stays intact."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from email.message import Message
from email.parser import BytesParser
from email.policy import SMTP

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from activities.people import PeopleActivities
from api.app import create_app
from cli.main import app
from events.messages import PersonContact, RegisterPeopleRequest
from events.store import PostgresEventStore
from tests.projections.conftest import make_runner
from tests.workflow.pairs import HR, MENTEE, MENTOR, Harness, full_lifecycle, pair_input


def _text(message: Message) -> str:
    return "".join(part.get_content() for part in message.walk()
                   if part.get_content_type() == "text/plain" and not part.is_attachment())


@pytest.fixture(autouse=True)
def _cli_reaches_the_test_server(temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`mentoring people erase` withdraws the person from running pairs through Temporal: this one."""
    from settings import get_settings

    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_env.client.service_client.config.target_host)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def harness(encrypted_harness: Harness) -> Harness:
    """Erasure reaches Temporal: here the pairs' payloads are encrypted, as worker.py's are."""
    return encrypted_harness


async def _mentoring(*args: str, database_url: str):
    return await asyncio.to_thread(CliRunner().invoke, app, [*args, "--database-url", database_url])


async def test_erasing_a_senior_keeps_the_log_whole_and_sticks(harness: Harness, store: PostgresEventStore,
                                                             database_url: str):
    pair = await full_lifecycle(harness)  # the mentee commented on feedback and final evaluation
    pool = store.pool
    comments = await pool.fetchval(
        "SELECT count(*) FROM private_notes WHERE author_id = $1 AND body IS NOT NULL", MENTEE)
    assert comments >= 2
    events_before = await pool.fetchval("SELECT count(*) FROM events")

    address = await pool.fetchval("SELECT email FROM people WHERE employee_id = $1", MENTEE)
    name = await pool.fetchval("SELECT display_name FROM people WHERE employee_id = $1", MENTEE)
    mails = {p: BytesParser(policy=SMTP).parsebytes(p.read_bytes()) for p in harness.outbox.glob("*.eml")}
    to_them = [p for p, m in mails.items() if address in str(m["To"])]
    naming_them = [p for p, m in mails.items() if p not in to_them and name in _text(m)]
    assert to_them and naming_them  # the mentee got notices; the mentor's name their mentee

    erased = await _mentoring("people", "erase", MENTEE, "--by", HR, "--outbox", str(harness.outbox),
                              database_url=database_url)
    assert erased.exit_code == 0, erased.output
    assert f"erased the personal data of {MENTEE} ({comments} private comment(s))" in erased.output
    assert f"{len(to_them)} message(s) to them deleted, {len(naming_them)} naming them rewritten" in erased.output
    # The outbox forgot them too: no message to them, their name nowhere; the others' mail stays.
    left = {p: BytesParser(policy=SMTP).parsebytes(p.read_bytes()) for p in harness.outbox.glob("*.eml")}
    assert set(left) == set(mails) - set(to_them)
    assert not any(name in _text(m) or address in str(m["To"]) for m in left.values())
    assert all("(erased)" in _text(left[p]) for p in naming_them)
    assert all(m.get_content_type() == left[p].get_content_type() for p, m in mails.items() if p in left)

    person = await pool.fetchrow("SELECT * FROM people WHERE employee_id = $1", MENTEE)
    assert (person["display_name"], person["email"], person["erased_at"] is not None) == (None, None, True)
    assert await pool.fetchval(
        "SELECT count(*) FROM private_notes WHERE author_id = $1 AND body IS NOT NULL", MENTEE) == 0
    assert await pool.fetchval("SELECT email FROM people WHERE employee_id = $1", MENTOR) is not None

    # The log lost nothing and gained the record of the erasure.
    assert await pool.fetchval("SELECT count(*) FROM events") == events_before + 1
    (record,) = await store.read_stream(f"person-{MENTEE}")
    assert record.event_type == "PersonalDataErased"
    assert record.payload == {"employee_id": MENTEE, "reason": "person_request", "notes_erased": comments}
    assert record.metadata["actor"] == HR
    assert (await store.verify()).ok

    # Erasure sticks: a later nomination naming them does not store their data again.
    await PeopleActivities(pool).register_people(RegisterPeopleRequest(people=[PersonContact(
        employee_id=MENTEE, display_name="Bernard Dupont", email="bernard.dupont@example.com",
        time_zone="Europe/Paris")]))
    assert await pool.fetchval("SELECT email FROM people WHERE employee_id = $1", MENTEE) is None

    # The audit still answers, by id, with no name left to show.
    await make_runner(store, database_url).run_until_caught_up()
    # (given the workflow id, as HR copies it from the Temporal UI)
    trail = await _mentoring("audit", "pair", pair.handle.id, database_url=database_url)
    assert trail.exit_code == 0, trail.output
    assert MENTEE in trail.output and "PersonalDataErased" not in trail.output
    assert "Bernard" not in trail.output and "Dupont" not in trail.output

    again = await _mentoring("people", "erase", MENTEE, "--by", HR, database_url=database_url)
    assert again.exit_code == 1 and "already erased" in again.output
    assert await pool.fetchval("SELECT count(*) FROM events") == events_before + 1

    # Nominated again, their details are in the new workflow's input: its keys are to go too.
    renominated = await harness.start()
    assert await pool.fetchval("SELECT requested_by FROM key_shredding WHERE workflow_id = $1",
                               renominated.handle.id) == "erasure (named again)"


async def test_only_comments_their_authors_shared_are_shown_and_erasure_removes_them(
        harness: Harness, store: PostgresEventStore, database_url: str):
    pair = await harness.start()
    await pair.prepare()
    number = await pair.hold_session(feedback=False)
    await pair.act("give_feedback", recorded_by=MENTEE, session_no=number, by_role="mentee", rating=5,
                   engaging=True, comment="Now I post on my own", share_comment=True)
    await pair.act("give_feedback", recorded_by=MENTOR, session_no=number, by_role="mentor", rating=4,
                   engaging=True, comment="He was nervous at first", share_comment=False)
    await make_runner(store, database_url).run_until_caught_up()

    async def shared() -> list[tuple[str, str]]:
        result = await _mentoring("audit", "pair", pair.handle.id, "--json", database_url=database_url)
        assert result.exit_code == 0, result.output
        return [(c["author_id"], c["body"]) for c in json.loads(result.output)["shared_comments"]]

    assert await shared() == [(MENTEE, "Now I post on my own")]
    # Shared with HR, by the author's choice; an auditor sees the facts without the comment.
    app = create_app(store.pool, {"hr-token": "hr", "auditor-token": "auditor"})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api:
        for token, expected in (("hr-token", ["Now I post on my own"]), ("auditor-token", [])):
            answer = await api.get(f"/audit/pairs/{pair.handle.id}",
                                   headers={"Authorization": f"Bearer {token}"})
            assert [c["body"] for c in answer.json()["shared_comments"]] == expected
    table = await _mentoring("audit", "pair", pair.handle.id, database_url=database_url)
    assert "Now I post on my own" in table.output and "nervous" not in table.output

    assert (await _mentoring("people", "erase", MENTEE, "--by", HR, database_url=database_url)).exit_code == 0
    assert await shared() == []


async def test_contact_details_change_only_by_the_recorded_act(store: PostgresEventStore, database_url: str):
    pool = store.pool
    await PeopleActivities(pool).register_people(RegisterPeopleRequest(people=[PersonContact(
        employee_id=MENTEE, display_name="B. D.", email="b@example.com", time_zone="Europe/Paris")]))
    refused = await _mentoring("people", "update", MENTEE, "--by", HR, "--email", "b-at-example.com",
                               database_url=database_url)
    assert refused.exit_code != 0 and "- email: is not an e-mail address" in refused.output
    assert "b-at-example.com" not in refused.output

    changed = await _mentoring("people", "update", MENTEE, "--by", HR, "--email", "bd@example.com",
                               "--time-zone", "America/Montreal", database_url=database_url)
    assert changed.exit_code == 0, changed.output
    row = await pool.fetchrow("SELECT email, time_zone FROM people WHERE employee_id = $1", MENTEE)
    assert tuple(row) == ("bd@example.com", "America/Montreal")
    [event] = await store.read_stream(f"person-{MENTEE}")
    assert event.event_type == "ContactDetailsChanged" and event.metadata["actor"] == HR
    assert event.payload == {"employee_id": MENTEE, "fields": ["email", "time_zone"]}

    await _mentoring("people", "erase", MENTEE, "--by", HR, database_url=database_url)
    after_erasure = await _mentoring("people", "update", MENTEE, "--by", HR, "--name", "B.",
                                     database_url=database_url)
    assert after_erasure.exit_code != 0 and "erased" in after_erasure.output


async def test_curriculum_objectives_stay_out_of_the_log_and_go_with_their_author(
        harness: Harness, store: PostgresEventStore, database_url: str):
    """Objectives are free text that may name people: the log keeps their count, the erasable
    notes the text (shown to HR with the pair), and erasing their author erases them."""
    pair = await harness.start()
    await pair.prepare()  # objectives: "publish a first post", "tune privacy settings"
    agreed = next(e for e in await store.read_stream(pair.stream_id) if e.event_type == "CurriculumAgreed")
    stored = await store.pool.fetchval("SELECT payload FROM events WHERE event_id = $1", agreed.event_id)
    assert stored == {"topics": ["social networks"], "objectives_count": 2}
    note = await store.pool.fetchrow("SELECT * FROM private_notes WHERE event_id = $1", agreed.event_id)
    assert (note["kind"], note["author_id"], note["shared"]) == ("curriculum_objectives", MENTOR, True)
    await make_runner(store, database_url).run_until_caught_up()
    report = await _mentoring("audit", "pair", pair.handle.id, "--json", database_url=database_url)
    shown = json.loads(report.output)
    assert shown["objectives"] == ["publish a first post", "tune privacy settings"]
    assert shown["shared_comments"] == []  # objectives are not a comment

    erased = await _mentoring("people", "erase", MENTOR, "--by", HR, "--outbox", str(harness.outbox),
                              database_url=database_url)
    assert erased.exit_code == 0, erased.output
    report = await _mentoring("audit", "pair", pair.handle.id, "--json", database_url=database_url)
    assert json.loads(report.output)["objectives"] == []
    assert "publish a first post" not in json.dumps([e.payload for e in await store.read_stream(pair.stream_id)])


async def test_an_erased_person_first_leaves_the_pairs_still_running(harness: Harness, store: PostgresEventStore,
                                                                       database_url: str):
    """Their own act, without penalty: each pair records the withdrawal and tells the other person,
    then the erasure goes ahead."""
    pair = await harness.start()
    await pair.prepare()
    await make_runner(store, database_url).run_until_caught_up()  # the read model knows the pair runs
    erased = await _mentoring("people", "erase", MENTEE, "--by", HR, "--outbox", str(harness.outbox),
                              database_url=database_url)
    assert erased.exit_code == 0, erased.output
    assert f"{pair.handle.id}: withdrawn" in erased.output
    # Closed: its keys are destroyed since, so the log tells the stage, not a query.
    await make_runner(store, database_url).run_until_caught_up()
    assert await store.pool.fetchval("SELECT stage FROM pair_overview.pairs WHERE pair_id = $1",
                                     pair.handle.id.removeprefix("pair-")) == "withdrawn"
    withdrawal = next(e for e in await store.read_stream(pair.stream_id) if e.event_type == "PairWithdrawn")
    assert (withdrawal.payload["withdrawn_by"], withdrawal.payload["role"], withdrawal.payload["reason"]) == (
        MENTEE, "mentee", "personal")
    assert await store.pool.fetchval("SELECT erased_at IS NOT NULL FROM people WHERE employee_id = $1", MENTEE)


async def test_erasure_destroys_the_keys_of_their_closed_pairs_and_other_pairs_run_on(
        harness: Harness, store: PostgresEventStore, database_url: str):
    """Crypto-shredding: once their pair has closed, its history in Temporal is ciphertext nobody
    can read (a decode answers an "erased" marker); another pair, with its own key, goes on and
    still replays from its history."""
    from temporalio.worker import Replayer

    from codec.encryption import ERASED_KEY, EncryptingCodec, key_ids_in
    from tests.workflow.conftest import session_keys
    from workflows.pair import MentoringPair

    theirs = await harness.start()
    other_input = pair_input()
    other_input["mentor"] = {**other_input["mentor"], "employee_id": "E9001", "email": "o.m@example.com"}
    other_input["mentee"] = {**other_input["mentee"], "employee_id": "E9002", "email": "o.s@example.com"}
    other = await harness.start(other_input)
    await theirs.prepare()
    await make_runner(store, database_url).run_until_caught_up()

    erased = await _mentoring("people", "erase", MENTEE, "--by", HR, "--outbox", str(harness.outbox),
                              database_url=database_url)
    assert erased.exit_code == 0, erased.output
    assert f"{theirs.handle.id}: withdrawn" in erased.output
    assert "the keys of 1 closed workflow(s) holding their data destroyed" in erased.output

    # Every key their pair's history names is destroyed; their start input decodes to the marker.
    history = await theirs.handle.fetch_history()
    used: set[str] = set()
    for event in history.events:
        key_ids_in(event, used)
    assert used, "the pair's history was not encrypted"
    rows = await store.pool.fetch("SELECT shredded_at, wrapped_key FROM data_keys WHERE key_id = ANY($1::uuid[])",
                                  list(used))
    assert len(rows) == len(used) and all(r["shredded_at"] and r["wrapped_key"] is None for r in rows)
    start = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    [marker] = await EncryptingCodec(session_keys(store)).decode([start])
    assert ERASED_KEY in marker.metadata and b"personal data erased on" in marker.data
    assert (await store.verify()).ok  # the log and its chain are untouched

    # The other pair keeps its key, acts, and replays from its history after the erasure.
    await other.act("confirm_motivation", recorded_by="E9001")
    assert (await other.state()).stage.value == "mentee_invited"
    replayed = await Replayer(workflows=[MentoringPair], data_converter=harness.client.data_converter) \
        .replay_workflow(await other.handle.fetch_history(), raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure
    assert await store.pool.fetchval(
        "SELECT shredded_at IS NULL FROM data_keys WHERE workflow_id = $1 AND scope = 'workflow'", other.handle.id)


async def test_a_running_workflows_keys_wait_until_it_closes(harness: Harness, store: PostgresEventStore):
    """A workflow still running must read its own history: its keys go when it has closed (the
    worker's reconciler calls `shred_closed` on every pass)."""
    from codec.shredding import pending_shredding, shred_closed
    from tests.workflow.conftest import session_keys

    pair = await harness.start()
    await store.pool.execute("INSERT INTO key_shredding (workflow_id, requested_by) VALUES ($1, $2)",
                             pair.handle.id, HR)
    keys = session_keys(store)
    assert await shred_closed(harness.client, keys) == []
    assert await pending_shredding(store.pool) == [pair.handle.id]
    await pair.act("withdraw", recorded_by=MENTOR, role="mentor", reason="personal")
    await pair.handle.result()
    [done] = await shred_closed(harness.client, keys)
    assert (done.workflow_id, done.keys) == (pair.handle.id, 1)  # started from the client: one key
    assert await pending_shredding(store.pool) == []
