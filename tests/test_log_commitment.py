"""One commitment over the whole log: the tamper modes the per-stream chains miss are caught and
named against a signed checkpoint, and a pair's bundle verifies offline with the stand-alone
verifier, failing when one byte changes.

Tampering turns the append-only triggers off (`session_replication_role = replica`), as a
superuser would; foreign keys are off then too.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from events.base import NewEvent
from events.ledger import export_stream, public_key_pem, seal, take_checkpoint, verify_against
from events.merkle import MerkleTree
from events.pair import MentorMotivationConfirmed
from events.store import PostgresEventStore
from tests.test_tamper_evidence import META, _position, _tamper, _three_streams
from verifier import mentoring_verify
from verifier.mentoring_verify import (
    canonical_json,
    verify_bundle,
    verify_consistency,
    verify_inclusion,
)

VERIFIER = Path(mentoring_verify.__file__)
KEY = Ed25519PrivateKey.generate()

_RECHAIN = """
DO $$ DECLARE r record; prev bytea := '\\x{zeros}'; h bytea; BEGIN
  FOR r IN SELECT * FROM events WHERE stream_id = '{stream}' ORDER BY version LOOP
    h := sha256(prev || event_hash_input(r.position, r.stream_id, r.version, r.event_id, r.event_type,
                                         r.schema_version, r.payload, r.metadata, r.recorded_at));
    UPDATE events SET prev_hash = prev, hash = h WHERE position = r.position;
    prev := h;
  END LOOP;
  UPDATE event_streams SET version = (SELECT max(version) FROM events WHERE stream_id = '{stream}'),
                           last_hash = prev WHERE stream_id = '{stream}';
END $$"""


def rechain(stream: str) -> str:
    """What an attacker runs after changing a stream: its chain recomputed, head row rewound."""
    return _RECHAIN.format(zeros="00" * 32, stream=stream)


async def checkpointed(store: PostgresEventStore):
    await _three_streams(store)
    return await take_checkpoint(store.pool, KEY)


async def test_the_untouched_log_extends_its_checkpoint_and_later_ones_prove_it(store: PostgresEventStore):
    first = await checkpointed(store)
    assert first.size == 12
    await store.append("pair-a", 4, [NewEvent.of(MentorMotivationConfirmed(mentor_id="M9"), uuid.uuid4())], META)
    report = await verify_against(store.pool, first)
    assert report.ok and (report.checkpoint_size, report.log_size) == (12, 13)
    second = await take_checkpoint(store.pool, KEY)
    tree = MerkleTree([bytes(r["leaf_hash"]) for r in await store.pool.fetch("SELECT leaf_hash FROM log_leaves ORDER BY leaf_index")])
    assert verify_consistency(first.size, second.size, bytes.fromhex(first.root), bytes.fromhex(second.root),
                              tree.consistency_proof(first.size))


async def test_stream_heads_cannot_be_deleted_any_more(store: PostgresEventStore):
    await _three_streams(store)
    with pytest.raises(Exception, match="append-only"):
        await store.pool.execute("DELETE FROM event_streams WHERE stream_id = 'pair-b'")
    await seal(store.pool)
    with pytest.raises(Exception, match="append-only"):
        await store.pool.execute("DELETE FROM log_leaves")


async def test_a_deleted_stream_with_its_head_row_is_named(store: PostgresEventStore):
    checkpoint = await checkpointed(store)
    await _tamper(store, "DELETE FROM events WHERE stream_id = 'pair-b'",
                  "DELETE FROM event_streams WHERE stream_id = 'pair-b'")
    assert (await store.verify()).ok  # the per-stream chains cannot see it
    report = await verify_against(store.pool, checkpoint)
    assert not report.ok
    assert "fewer than the 12" in report.problem and "stream pair-b version 1" in report.problem


async def test_a_cut_tail_with_its_head_rewound_is_named(store: PostgresEventStore):
    checkpoint = await checkpointed(store)
    await _tamper(store, "DELETE FROM events WHERE stream_id = 'pair-a' AND version = 4", rechain("pair-a"))
    assert (await store.verify()).ok
    report = await verify_against(store.pool, checkpoint)
    assert not report.ok and "stream pair-a version 4" in report.problem


async def test_an_altered_payload_with_its_chain_recomputed_is_named(store: PostgresEventStore):
    checkpoint = await checkpointed(store)
    target = await _position(store, "pair-c", 2)
    await _tamper(store, f"""UPDATE events SET payload = jsonb_set(payload, '{{mentor_id}}', '"EVIL"')
                            WHERE position = {target}""", rechain("pair-c"))
    assert (await store.verify()).ok
    report = await verify_against(store.pool, checkpoint)
    assert not report.ok
    assert f"stream pair-c version 2 (position {target}" in report.problem and "altered" in report.problem


async def test_a_changed_transaction_order_is_named(store: PostgresEventStore):
    checkpoint = await checkpointed(store)
    first, last = await _position(store, "pair-a", 1), await _position(store, "pair-c", 4)
    await _tamper(store, f"""UPDATE events SET transaction_id = (SELECT transaction_id FROM events WHERE position = {last})
                            WHERE position = {first}""")
    assert (await store.verify()).ok  # the transaction id is not in the stream chain
    report = await verify_against(store.pool, checkpoint)
    assert not report.ok and "reordered" in report.problem


async def test_a_forged_event_slipped_in_before_the_checkpoint_is_named(store: PostgresEventStore):
    checkpoint = await checkpointed(store)
    low = await store.pool.fetchval("SELECT min(transaction_id)::text FROM events")
    await _tamper(store, f"""INSERT INTO events (position, transaction_id, stream_id, version, event_id, event_type,
                                schema_version, payload, metadata, recorded_at, prev_hash, hash)
                            SELECT 999, '{low}'::xid8, 'pair-z', 1, gen_random_uuid(), event_type, schema_version,
                                   payload, metadata, recorded_at, prev_hash, hash
                              FROM events WHERE stream_id = 'pair-a' AND version = 1""")
    report = await verify_against(store.pool, checkpoint)
    assert not report.ok and "pair-z" in report.problem


async def test_a_checkpoint_from_another_key_or_altered_is_refused(store: PostgresEventStore):
    checkpoint = await checkpointed(store)
    other = Ed25519PrivateKey.generate()
    report = await verify_against(store.pool, checkpoint, other.public_key())
    assert not report.ok and "another key" in report.problem
    forged = type(checkpoint)(checkpoint.size - 1, checkpoint.root, checkpoint.signed_at, checkpoint.public_key,
                              checkpoint.signature)
    report = await verify_against(store.pool, forged)
    assert not report.ok and "signature does not match" in report.problem


async def test_a_pairs_bundle_verifies_offline_and_fails_when_one_byte_changes(store: PostgresEventStore, tmp_path: Path):
    await _three_streams(store)
    bundle = await export_stream(store.pool, "pair-b", KEY)
    assert [e["event"]["version"] for e in bundle["events"]] == [1, 2, 3, 4]
    assert verify_bundle(bundle) == []

    # The stand-alone file, alone in a folder: no project import, no database.
    alone = tmp_path / "outsider"
    alone.mkdir()
    shutil.copyfile(VERIFIER, alone / "mentoring_verify.py")
    (alone / "bundle.json").write_text(json.dumps(bundle))
    (alone / "key.pem").write_text(public_key_pem(KEY))

    def check() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-I", "mentoring_verify.py", "bundle.json", "--public-key", "key.pem"],
                              cwd=alone, capture_output=True, text=True, timeout=60)

    done = check()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK versions 1 to 4 of pair-b")

    text = (alone / "bundle.json").read_text()
    altered = text.replace('"mentor_id": "M2"', '"mentor_id": "M7"', 1)
    assert altered != text
    (alone / "bundle.json").write_text(altered)
    done = check()
    assert done.returncode == 1 and "(version 3)" in done.stdout and "not in the signed log" in done.stdout

    dropped = dict(bundle, events=bundle["events"][:1] + bundle["events"][2:])
    assert any("is missing" in p or "does not chain" in p for p in verify_bundle(dropped))
    relabelled = dict(bundle, stream_id="pair-a")
    assert any("belongs to stream pair-b, not pair-a" in p for p in verify_bundle(relabelled))
    broken = dict(bundle, events=[{**bundle["events"][0], "proof": ["not hex"]}])
    assert verify_bundle(broken)[0].startswith("the bundle is malformed")
    stranger = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert "signature does not match" in verify_bundle(bundle, stranger)[0]


async def test_audit_commands_take_a_checkpoint_verify_against_it_and_export(store: PostgresEventStore,
                                                                           database_url: str, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    from cli.main import app
    from events.ledger import generate_signing_key
    from settings import get_settings

    generate_signing_key(tmp_path / "signing-key.pem")
    monkeypatch.setenv("MENTORING_SIGNING_KEY_FILE", str(tmp_path / "signing-key.pem"))
    get_settings.cache_clear()
    try:
        await _three_streams(store)
        def invoke(args: list[str]):
            return asyncio.to_thread(CliRunner().invoke, app, args)

        taken = await invoke(["audit", "checkpoint", "--out", str(tmp_path / "cp.json"), "--database-url", database_url])
        assert taken.exit_code == 0, taken.output
        assert json.loads((tmp_path / "cp.json").read_text())["size"] == 12
        key = await invoke(["audit", "public-key"])
        (tmp_path / "key.pem").write_text(key.output)
        verified = await invoke(["audit", "verify", "--against", str(tmp_path / "cp.json"), "--public-key",
                                       str(tmp_path / "key.pem"), "--database-url", database_url])
        assert verified.exit_code == 0 and "extends the checkpoint of 12 events" in verified.output, verified.output
        await _tamper(store, "DELETE FROM events WHERE stream_id = 'pair-c'", "DELETE FROM event_streams WHERE stream_id = 'pair-c'")
        caught = await invoke(["audit", "verify", "--against", str(tmp_path / "cp.json"), "--database-url", database_url])
        assert caught.exit_code == 1 and "TAMPERED" in caught.output and "pair-c" in caught.output
        exported = await invoke(["audit", "export", "pair", "a", "--out", str(tmp_path / "bundle"),
                                       "--database-url", database_url])
        assert exported.exit_code == 0, exported.output
        assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["bundle.json", "mentoring_verify.py", "public-key.pem"]
    finally:
        get_settings.cache_clear()


async def test_sealing_follows_commit_order_and_is_idempotent(store: PostgresEventStore):
    await _three_streams(store)
    assert await seal(store.pool) == 12
    assert await seal(store.pool) == 0
    order = await store.pool.fetch("SELECT l.position FROM log_leaves l ORDER BY leaf_index")
    committed = await store.pool.fetch("SELECT position FROM events ORDER BY transaction_id, position")
    assert [r["position"] for r in order] == [r["position"] for r in committed]


def test_merkle_proofs_hold_for_every_leaf_and_size():
    import hashlib

    for n in [1, 2, 3, 5, 8, 13, 31, 64, 100]:
        leaves = [hashlib.sha256(str(i).encode()).digest() for i in range(n)]
        tree = MerkleTree(leaves)
        for size in range(1, n + 1):
            root = tree.root(size)
            for index in range(size):
                assert verify_inclusion(index, size, leaves[index], tree.inclusion_proof(index, size), root)
            for old in range(size + 1):
                assert verify_consistency(old, size, tree.root(old), root, tree.consistency_proof(old, size))
        if n > 1:
            assert not verify_inclusion(0, n, leaves[1], tree.inclusion_proof(0), tree.root())


@pytest.mark.parametrize(("value", "text"), [
    # RFC 8785, appendix B (numbers) and 3.2.3 (sorting), as ECMAScript writes them.
    (0.0, "0"), (-0.0, "0"), (1e21, "1e+21"), (1e20, "100000000000000000000"), (1e-7, "1e-7"),
    (0.000001, "0.000001"), (5e-324, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"),
    (333333333.3333333, "333333333.3333333"), (9007199254740992.0, "9007199254740992"),
    (1.2345678901234567e20, "123456789012345670000"), (2**60, "1152921504606847000"),  # as node prints them
    ({"b": 1, "a": [True, None, "é\n"]}, '{"a":[true,null,"é\\n"],"b":1}'),
    ({"\u20ac": 1, "\r": 2, "1": 3, "\U0001f600": 4, "\u00f6": 5}, '{"\\r":2,"1":3,"ö":5,"€":1,"\U0001f600":4}'),
])
def test_canonical_json_is_rfc_8785(value, text):
    assert canonical_json(value).decode() == text


def test_the_fast_canonical_path_writes_what_the_careful_one_does():
    """Plain JSON (no float, no big int, ASCII keys) takes the standard encoder: the same bytes."""
    import random

    from verifier.mentoring_verify import _jcs

    draw = random.Random(8785)

    def value(depth: int = 0):
        pick = draw.random()
        if depth > 3 or pick < 0.3:
            return draw.choice([None, True, False, draw.randrange(-10**9, 10**9), 2**52, "x\u00e9\n\"\\\u2028\x01", ""])
        if pick < 0.6:
            return [value(depth + 1) for _ in range(draw.randrange(4))]
        return {draw.choice(["a", "b", "zz", "A", "_1", "10", "9"]): value(depth + 1) for _ in range(draw.randrange(4))}

    for _ in range(3000):
        v = value()
        assert canonical_json(v) == _jcs(v).encode(), v


async def test_a_bundle_refuses_free_text_recorded_before_it_left_the_log(store: PostgresEventStore):
    """Old curricula kept their objectives in the event; the leaf's hash covers the stored
    payload, so a bundle would carry the text: refused unless asked for."""
    from events.base import EventMetadata
    from events.ledger import FreeTextInBundle
    from tests.test_upcasting_and_migrations import CurriculumAgreedV1

    await store.append("pair-old", 0, [NewEvent.of(CurriculumAgreedV1(
        topics=["social networks"], objectives=["help Jane Doe post"]), uuid.uuid4())], EventMetadata(actor="E1"))
    with pytest.raises(FreeTextInBundle, match="version 1 \\(curriculum objectives\\)"):
        await export_stream(store.pool, "pair-old", KEY)
    bundle = await export_stream(store.pool, "pair-old", KEY, allow_free_text=True)
    assert "Jane Doe" in json.dumps(bundle) and verify_bundle(bundle) == []
