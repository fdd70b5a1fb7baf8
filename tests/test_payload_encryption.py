"""The payload codec and the codec server, on a real PostgreSQL (the data keys live there).

Through Temporal (worker, UI's path, Temporal's store scanned): tests/e2e/test_cli_drive.py and
tests/e2e/test_erasure_in_temporal.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os

import httpx
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import ActivitySerializationContext, WorkflowSerializationContext

from codec.encryption import (
    ENCODING,
    KEY_ID,
    EncryptingCodec,
    UnreadablePayload,
    encrypting_data_converter,
    key_ids_in,
)
from codec.keys import DataKeys, KeySetupError, LocalKeyEncryptionKey, UnknownDataKey, parse_kek
from codec.server import create_codec_app
from events.store import PostgresEventStore

SECRET = "Dominique Dupont <dominique.dupont@example.com> said: too fast"
UI = "http://localhost:8233"


def kek() -> LocalKeyEncryptionKey:
    return LocalKeyEncryptionKey(os.urandom(32))


def in_workflow(workflow_id: str) -> WorkflowSerializationContext:
    return WorkflowSerializationContext(namespace="default", workflow_id=workflow_id)


def in_activity_of(workflow_id: str) -> ActivitySerializationContext:
    return ActivitySerializationContext(
        namespace="default", activity_id="1", activity_type="record", activity_task_queue="q",
        workflow_id=workflow_id, workflow_type="MentoringPair", is_local=False)


async def test_a_value_goes_out_encrypted_under_its_workflows_key_and_comes_back(store: PostgresEventStore):
    keys = DataKeys(store.pool, kek())
    converter = encrypting_data_converter(keys).with_context(in_workflow("pair-a"))
    [payload] = await converter.encode([{"comment": SECRET}])

    assert payload.metadata["encoding"] == ENCODING
    assert SECRET.split()[1].encode() not in payload.SerializeToString()  # "Dupont" nowhere
    assert await converter.decode([payload], [dict]) == [{"comment": SECRET}]
    key_id = payload.metadata[KEY_ID].decode()
    row = await store.pool.fetchrow("SELECT scope, workflow_id, wrapped_key FROM data_keys WHERE key_id = $1::uuid", key_id)
    assert (row["scope"], row["workflow_id"]) == ("workflow", "pair-a")
    assert len(row["wrapped_key"]) == 12 + 32 + 16  # nonce, key, tag: never the key in clear

    # Its activities share its key; another pair has its own; no context: the general key.
    [by_activity] = await encrypting_data_converter(keys).with_context(in_activity_of("pair-a")).encode(["x"])
    [other] = await encrypting_data_converter(keys).with_context(in_workflow("pair-b")).encode(["x"])
    [general] = await encrypting_data_converter(keys).encode(["x"])
    assert by_activity.metadata[KEY_ID].decode() == key_id
    assert len({key_id, other.metadata[KEY_ID], general.metadata[KEY_ID]}) == 3


async def test_another_process_reads_it_with_the_same_kek_only(store: PostgresEventStore):
    secret = os.urandom(32)
    codec = EncryptingCodec(DataKeys(store.pool, LocalKeyEncryptionKey(secret)), "pair-a")
    [sealed] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"hello"')])

    [opened] = await EncryptingCodec(DataKeys(store.pool, LocalKeyEncryptionKey(secret))).decode([sealed])
    assert opened.data == b'"hello"'
    with pytest.raises(KeySetupError, match="wrapped by key-encryption key local:"):
        await EncryptingCodec(DataKeys(store.pool, kek())).decode([sealed])


async def test_an_altered_payload_is_refused_not_misread(store: PostgresEventStore):
    codec = EncryptingCodec(DataKeys(store.pool, kek()), "pair-a")
    [sealed] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"hello"')])
    altered = Payload()
    altered.CopyFrom(sealed)
    altered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(UnreadablePayload, match="altered"):
        await codec.decode_one(altered)
    # Through the converter (a worker's activation), a marker instead: the door refuses it in
    # words, and no workflow task fails for ever on its own input.
    [marker] = await codec.decode([altered])
    assert "altered" in json.loads(marker.data)["unreadable"]
    short = Payload()
    short.CopyFrom(sealed)
    short.data = b"abc"
    with pytest.raises(UnreadablePayload, match="too short"):
        await codec.decode_one(short)
    moved = Payload()  # the same ciphertext claimed by another key
    moved.CopyFrom(sealed)
    [other] = await EncryptingCodec(codec._keys, "pair-b").encode([sealed])
    moved.metadata[KEY_ID] = other.metadata[KEY_ID]
    with pytest.raises(UnreadablePayload):
        await codec.decode_one(moved)
    with pytest.raises(UnknownDataKey):
        moved.metadata[KEY_ID] = b"not-a-key"
        await codec.decode_one(moved)


async def test_clear_payloads_from_before_the_codec_still_decode(store: PostgresEventStore):
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"a": 1}')
    assert await EncryptingCodec(DataKeys(store.pool, kek())).decode([plain]) == [plain]


async def test_two_processes_creating_a_workflows_key_at_once_agree_on_one(store: PostgresEventStore):
    secret = os.urandom(32)
    codecs = [EncryptingCodec(DataKeys(store.pool, LocalKeyEncryptionKey(secret)), "pair-race") for _ in range(6)]
    sealed = await asyncio.gather(*(c.encode([Payload(data=b"x")]) for c in codecs))
    assert len({s[0].metadata[KEY_ID] for s in sealed}) == 1
    assert await store.pool.fetchval("SELECT count(*) FROM data_keys WHERE workflow_id = 'pair-race'") == 1


async def test_a_destroyed_key_decodes_to_an_erased_marker_and_the_workflow_id_gets_a_new_key(store: PostgresEventStore):
    keys = DataKeys(store.pool, kek())
    codec = EncryptingCodec(keys, "pair-gone")
    [sealed] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(SECRET).encode())])
    async with store.pool.acquire() as conn:
        assert await keys.shred(conn, "pair-gone", []) == 1
    [marker] = await codec.decode([sealed])
    assert marker.metadata["encoding"] == b"json/plain"
    assert json.loads(marker.data)["erased"].startswith("personal data erased on ")
    [fresh] = await codec.encode([Payload(data=b"new run")])
    assert fresh.metadata[KEY_ID] != sealed.metadata[KEY_ID]


def test_key_ids_are_found_anywhere_in_a_message():
    from temporalio.api.history.v1 import HistoryEvent

    event = HistoryEvent()
    inputs = event.workflow_execution_started_event_attributes.input.payloads
    inputs.add(metadata={"encoding": ENCODING, KEY_ID: b"k1"})
    inputs.add(metadata={"encoding": b"json/plain", KEY_ID: b"ignored"})
    event.workflow_execution_started_event_attributes.memo.fields["m"].CopyFrom(
        Payload(metadata={"encoding": ENCODING, KEY_ID: b"k2"}))
    assert key_ids_in(event) == {"k1", "k2"}


def test_a_bad_kek_is_named_not_used():
    with pytest.raises(KeySetupError, match="not base64"):
        parse_kek("not base64 at all!", "MENTORING_KEK")
    with pytest.raises(KeySetupError, match="32 bytes"):
        parse_kek(base64.b64encode(b"short").decode(), "MENTORING_KEK")


# --- the codec server, as the Web UI calls it -------------------------------------------------------

def as_json(payloads: list[Payload]) -> dict:
    return {"payloads": [{"metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                          "data": base64.b64encode(p.data).decode()} for p in payloads]}


def from_json(body: dict) -> list[Payload]:
    return [Payload(metadata={k: base64.b64decode(v) for k, v in p.get("metadata", {}).items()},
                    data=base64.b64decode(p.get("data", ""))) for p in body["payloads"]]


def codec_client(keys: DataKeys, *, without_token: bool = False) -> httpx.AsyncClient:
    app = create_codec_app(keys, namespace="default", tokens={"hr-token": "hr", "auditor-token": "auditor"},
                           ui_origins=[UI], without_token=without_token)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec")


HR = {"Authorization": "Bearer hr-token", "X-Namespace": "default"}


async def test_the_ui_types_clear_json_and_reads_it_back_through_the_codec_server(store: PostgresEventStore):
    keys = DataKeys(store.pool, kek())
    typed = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({"comment": SECRET}).encode())
    async with codec_client(keys) as ui:
        encoded = await ui.post("/encode", json=as_json([typed]), headers=HR)
        assert encoded.status_code == 200, encoded.text
        [sealed] = from_json(encoded.json())
        assert sealed.metadata["encoding"] == ENCODING and b"Dupont" not in sealed.data
        # A key of its own, not tied to a workflow until one is shredded with it.
        row = await store.pool.fetchrow("SELECT scope, workflow_id FROM data_keys WHERE key_id = $1::uuid",
                                        sealed.metadata[KEY_ID].decode())
        assert (row["scope"], row["workflow_id"]) == ("typed", None)
        # The worker reads what the UI typed, and the UI reads what the worker wrote.
        assert await EncryptingCodec(DataKeys(store.pool, keys._kek)).decode([sealed]) == [typed]
        [by_worker] = await EncryptingCodec(keys, "pair-a").encode([typed])
        decoded = await ui.post("/decode", json=as_json([by_worker, sealed]), headers=HR)
        assert from_json(decoded.json()) == [typed, typed]


async def test_the_codec_server_answers_hr_only_for_our_namespace_and_never_breaks_the_ui(store: PostgresEventStore):
    keys = DataKeys(store.pool, kek())
    [sealed] = await EncryptingCodec(keys, "pair-x").encode([Payload(data=b'"x"', metadata={"encoding": b"json/plain"})])
    body = as_json([sealed])
    async with codec_client(keys) as ui:
        assert (await ui.post("/decode", json=body)).status_code == 401
        assert (await ui.post("/decode", json=body, headers={"Authorization": "Bearer nope"})).status_code == 401
        accented = await ui.post("/decode", json=body, headers={"Authorization": "Bearer tok\u00e9n".encode()})
        assert accented.status_code == 401
        refused = await ui.post("/decode", json=body, headers={"Authorization": "Bearer auditor-token"})
        assert refused.status_code == 403 and "only HR" in refused.json()["message"]
        other = await ui.post("/decode", json=body, headers={**HR, "X-Namespace": "payroll"})
        assert other.status_code == 403 and "'default'" in other.json()["message"]
        bad = await ui.post("/decode", content=b"not json", headers=HR)
        assert bad.status_code == 400 and "payloads" in bad.json()["message"]

        # The browser's preflight from the UI's origin, and only from there.
        preflight = {"Origin": UI, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type,x-namespace,authorization"}
        allowed = await ui.options("/decode", headers=preflight)
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == UI
        denied = await ui.options("/decode", headers={**preflight, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in denied.headers

        # Erased, altered and unknown payloads answer markers in words, with a 200.
        async with store.pool.acquire() as conn:
            await keys.shred(conn, "pair-x", [])
        altered = Payload()
        altered.CopyFrom(sealed)
        altered.metadata[KEY_ID] = b"00000000-0000-0000-0000-000000000000"
        answer = await ui.post("/decode", json=as_json([sealed, altered]), headers=HR)
        assert answer.status_code == 200
        erased, unknown = (json.loads(p.data) for p in from_json(answer.json()))
        assert "erased" in erased and "unknown" in unknown["unreadable"]

    async with codec_client(keys, without_token=True) as dev_ui:  # the dev stack's UI has no sign-in
        assert (await dev_ui.post("/decode", json=body, headers={"X-Namespace": "default"})).status_code == 200


async def test_error_messages_that_may_quote_input_go_encrypted_our_refusals_stay_readable(store: PostgresEventStore):
    from temporalio.api.failure.v1 import Failure

    from workflows.errors import WrongStage

    converter = encrypting_data_converter(DataKeys(store.pool, kek())).with_context(in_workflow("pair-f"))
    try:
        raise ValueError(f"cannot parse {SECRET}")  # a library's error quoting what it was given
    except ValueError as exc:
        unexpected = Failure()
        await converter.encode_failure(exc, unexpected)
    assert unexpected.message == "Encoded failure" and not unexpected.stack_trace
    assert b"Dupont" not in unexpected.SerializeToString()
    assert "Dupont" in str(await converter.decode_failure(unexpected))  # for whoever holds the key

    refusal = Failure()
    await converter.encode_failure(WrongStage("the pair is still being nominated: try again in a moment."), refusal)
    assert refusal.message == "the pair is still being nominated: try again in a moment."
    assert not refusal.stack_trace and refusal.encoded_attributes.metadata["encoding"] == ENCODING
