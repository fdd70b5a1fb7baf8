"""One commitment over the whole log: leaves in commit order, signed checkpoints, proofs.

Sealing binds the committed events not yet in the tree as leaves (`log_leaves`), in the order
readers see them (transaction, then position), below the oldest transaction still open, so a
late commit of an early position is never skipped (the same rule as the projections). Each leaf
is the hash of the event's canonical JSON (hash scheme v1, see verifier/mentoring_verify.py),
covering what the stream chain leaves out: the transaction id, which decides the order.

A checkpoint signs the tree's size and root with Ed25519. Kept outside the database (a file, a
witness, the auditors), it lets anyone prove later that the log still extends it:
`mentoring audit verify --against CHECKPOINT` recomputes every leaf from the events themselves
(it trusts neither `log_leaves` nor the checkpoints table) and compares roots; a pair's bundle
(`mentoring audit export pair ID`) carries inclusion proofs that the stand-alone verifier checks
with no database at all.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from events.merkle import MerkleTree
from verifier.mentoring_verify import checkpoint_text, key_fingerprint, leaf_hash, verify_checkpoint

_SEAL_LOCK = 0x6C6F675F7365616C  # one sealer at a time across processes
_SEAL_BATCH = 5000

# What a leaf covers, as `leaf_object` reads it.
_LEAF_COLUMNS = """e.position, e.transaction_id::text::bigint AS transaction_id, e.stream_id, e.version,
       e.event_id::text AS event_id, e.event_type, e.schema_version, e.payload::text AS payload,
       e.metadata::text AS metadata, (extract(epoch FROM e.recorded_at) * 1000000)::bigint AS recorded_at_us,
       e.prev_hash, e.hash"""
_UNSEALED = f"""
SELECT {_LEAF_COLUMNS}
  FROM events e
 WHERE (e.transaction_id, e.position) > ($1::text::xid8, $2)
   AND e.transaction_id < (SELECT events_horizon())
 ORDER BY e.transaction_id, e.position
 LIMIT $3
"""
_ALL_IN_ORDER = f"SELECT {_LEAF_COLUMNS} FROM events e ORDER BY e.transaction_id, e.position"


class SigningKeyError(Exception):
    """No usable signing key; the message is one line for the operator."""


def leaf_object(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """The event as hash scheme v1 covers it (and as a bundle carries it)."""
    return {
        "position": row["position"], "transaction_id": row["transaction_id"], "stream_id": row["stream_id"],
        "version": row["version"], "event_id": row["event_id"], "event_type": row["event_type"],
        "schema_version": row["schema_version"], "payload": json.loads(row["payload"]),
        "metadata": json.loads(row["metadata"]), "recorded_at_us": row["recorded_at_us"],
        "prev_hash": bytes(row["prev_hash"]).hex(), "hash": bytes(row["hash"]).hex(),
    }


async def seal(pool: asyncpg.Pool) -> int:
    """Bind every committed event not yet in the tree; how many leaves were added."""
    added = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SEAL_LOCK)
            last = await conn.fetchrow(
                "SELECT l.leaf_index, e.transaction_id::text AS tx, e.position FROM log_leaves l"
                " JOIN events e ON e.position = l.position ORDER BY l.leaf_index DESC LIMIT 1")
            next_index = 0 if last is None else last["leaf_index"] + 1
            rows = await conn.fetch(_UNSEALED, "0" if last is None else last["tx"],
                                    0 if last is None else last["position"], _SEAL_BATCH)
            if not rows:
                return added
            await conn.copy_records_to_table("log_leaves", columns=["leaf_index", "position", "stream_id", "version", "leaf_hash"],
                                             records=[(next_index + i, r["position"], r["stream_id"], r["version"],
                                                       leaf_hash(leaf_object(r))) for i, r in enumerate(rows)])
            added += len(rows)


# --- checkpoints ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    size: int
    root: str
    signed_at: str
    public_key: str
    signature: str

    def as_json(self) -> dict[str, Any]:
        return {"format": "mentoring-checkpoint-v1", "size": self.size, "root": self.root,
                "signed_at": self.signed_at, "public_key": self.public_key,
                "key_fingerprint": key_fingerprint(bytes.fromhex(self.public_key)), "signature": self.signature}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        try:
            return cls(int(data["size"]), str(data["root"]), str(data["signed_at"]), str(data["public_key"]),
                       str(data["signature"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a checkpoint (expected size, root, signed_at, public_key, signature): {exc}") from None


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise SigningKeyError(f"cannot read the log's signing key at {path} (MENTORING_SIGNING_KEY_FILE): "
                              f"{exc.strerror or exc}") from None
    except ValueError as exc:
        raise SigningKeyError(f"{path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 key")
    return key


def generate_signing_key(path: Path) -> None:
    """Under --dev: a fresh Ed25519 key, readable by its owner only, unless one is there."""
    if path.exists():
        return
    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def public_key_pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


async def leaf_hashes(pool: asyncpg.Pool) -> list[bytes]:
    rows = await pool.fetch("SELECT leaf_hash FROM log_leaves ORDER BY leaf_index")
    return [bytes(r["leaf_hash"]) for r in rows]


async def take_checkpoint(pool: asyncpg.Pool, key: Ed25519PrivateKey) -> Checkpoint:
    """Seal, then sign the tree's size and root; the checkpoint is also kept in the database."""
    return (await _checkpoint_and_tree(pool, key))[0]


async def _checkpoint_and_tree(pool: asyncpg.Pool, key: Ed25519PrivateKey) -> tuple[Checkpoint, MerkleTree]:
    """The checkpoint, and the tree it signs (an export proves from it: the leaves read once)."""
    await seal(pool)
    tree = MerkleTree(await leaf_hashes(pool))
    signed_at = datetime.now(UTC).isoformat(timespec="seconds")
    root = tree.root().hex()
    signature = key.sign(checkpoint_text(tree.size, root, signed_at))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    await pool.execute(
        "INSERT INTO log_checkpoints (size, root, signed_at, key_fingerprint, signature)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (size) DO NOTHING",
        tree.size, bytes.fromhex(root), datetime.fromisoformat(signed_at), key_fingerprint(public), signature)
    return Checkpoint(tree.size, root, signed_at, public.hex(), base64.b64encode(signature).decode()), tree


# --- proving the log extends a checkpoint ---------------------------------------------------

@dataclass(frozen=True)
class ExtensionReport:
    ok: bool
    checkpoint_size: int
    log_size: int
    problem: str | None = None


async def verify_against(pool: asyncpg.Pool, checkpoint: Checkpoint,
                         trusted_public_key: Ed25519PublicKey | None = None) -> ExtensionReport:
    """Whether the log as it stands now extends `checkpoint`: nothing before it changed,
    vanished, moved or was slipped in. Every leaf is recomputed from the events."""
    public = bytes.fromhex(checkpoint.public_key)
    if trusted_public_key is not None and trusted_public_key.public_bytes(Encoding.Raw, PublicFormat.Raw) != public:
        return ExtensionReport(False, checkpoint.size, 0, "the checkpoint was signed by another key than the one you trust")
    if (why := verify_checkpoint({"size": checkpoint.size, "root": checkpoint.root, "signed_at": checkpoint.signed_at,
                                  "signature": checkpoint.signature}, public)) is not None:
        return ExtensionReport(False, checkpoint.size, 0, why)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(_ALL_IN_ORDER)
        stored = {r["leaf_index"]: r for r in await conn.fetch(
            "SELECT leaf_index, position, stream_id, version, leaf_hash FROM log_leaves WHERE leaf_index < $1",
            checkpoint.size)}
    if len(rows) < checkpoint.size:
        missing = _first_missing(stored, {r["position"] for r in rows})
        return ExtensionReport(False, checkpoint.size, len(rows), (
            f"the log holds {len(rows)} events, fewer than the {checkpoint.size} the checkpoint signed: "
            f"events were removed" + (f", first {missing}" if missing else "")))
    leaves = [leaf_hash(leaf_object(r)) for r in rows[:checkpoint.size]]
    if MerkleTree(leaves).root().hex() == checkpoint.root:
        return ExtensionReport(True, checkpoint.size, len(rows))
    return ExtensionReport(False, checkpoint.size, len(rows), _first_difference(rows, leaves, stored))


def _first_missing(stored: dict[int, asyncpg.Record], present: set[int]) -> str | None:
    for index in sorted(stored):
        leaf = stored[index]
        if leaf["position"] not in present:
            return f"leaf {index}: stream {leaf['stream_id']} version {leaf['version']} (position {leaf['position']})"
    return None


def _first_difference(rows: list[asyncpg.Record], leaves: list[bytes], stored: dict[int, asyncpg.Record]) -> str:
    """Name the first event that differs from what was sealed (the leaves, if they were left alone)."""
    present = {r["position"] for r in rows}
    for index, (row, leaf) in enumerate(zip(rows, leaves, strict=False)):
        sealed = stored.get(index)
        if sealed is None:
            break
        if sealed["position"] != row["position"]:
            if sealed["position"] not in present:
                return (f"the log changed before the checkpoint: the event sealed as leaf {index} (stream "
                        f"{sealed['stream_id']} version {sealed['version']}, position {sealed['position']}) is gone")
            return (f"the log changed before the checkpoint: at leaf {index} the commit order now gives stream "
                    f"{row['stream_id']} version {row['version']} (position {row['position']}), sealed there was "
                    f"position {sealed['position']}: events were reordered, inserted, or their transaction changed")
        if bytes(sealed["leaf_hash"]) != leaf:
            return (f"the log changed before the checkpoint: stream {row['stream_id']} version {row['version']} "
                    f"(position {row['position']}, leaf {index}) is not the event that was sealed (altered)")
    return "the log changed before the checkpoint (its sealed leaves were rewritten too, so the event cannot be named)"


# --- a pair's bundle ------------------------------------------------------------------------

# Events recorded before their free text left the log: their stored payload still holds it, and
# a bundle carries stored payloads as they are (the leaf's hash covers them).
_FREE_TEXT_IN_LOG = {("CurriculumAgreed", 1): "curriculum objectives"}


class FreeTextInBundle(ValueError):
    """The bundle would carry free text about people, recorded before it left the log."""


async def export_stream(pool: asyncpg.Pool, stream_id: str, key: Ed25519PrivateKey, *,
                        allow_free_text: bool = False) -> dict[str, Any]:
    """The stream's events with their inclusion proofs under a fresh signed checkpoint. Refused
    when an event still holds free text about people (an old version), unless allowed."""
    legacy = await pool.fetch("SELECT version, event_type, schema_version FROM events WHERE stream_id = $1"
                              " ORDER BY version", stream_id)
    found = [f"version {r['version']} ({_FREE_TEXT_IN_LOG[(r['event_type'], r['schema_version'])]})"
             for r in legacy if (r["event_type"], r["schema_version"]) in _FREE_TEXT_IN_LOG]
    if found and not allow_free_text:
        raise FreeTextInBundle(
            f"{stream_id} holds events recorded before their free text left the log: {', '.join(found)}. "
            "A bundle carries them as stored, text included (its hash covers it); export it only for "
            "someone entitled to read it, with --allow-free-text")
    checkpoint, tree = await _checkpoint_and_tree(pool, key)
    rows = await pool.fetch(
        f"SELECT l.leaf_index, {_LEAF_COLUMNS} FROM events e JOIN log_leaves l ON l.position = e.position"
        " WHERE e.stream_id = $1 AND l.leaf_index < $2 ORDER BY e.version", stream_id, checkpoint.size)
    if not rows:
        raise LookupError(f"no event of stream {stream_id} is in the log")
    return {
        "format": "mentoring-bundle-v1", "hash_scheme": "mentoring-leaf-v1", "stream_id": stream_id,
        "checkpoint": checkpoint.as_json(),
        "events": [{"leaf_index": r["leaf_index"], "event": leaf_object(r),
                    "proof": [h.hex() for h in tree.inclusion_proof(r["leaf_index"], checkpoint.size)]} for r in rows],
    }


# --- the worker's upkeep ------------------------------------------------------------------

async def keep_sealing(pool: asyncpg.Pool, key: Ed25519PrivateKey | None, out: Path | None,
                       checkpoint_every_s: float, seal_every_s: float = 2.0) -> None:
    """Seal new events every few seconds; sign a checkpoint every `checkpoint_every_s` when new
    events came, and write it into `out` for a witness to collect. Errors are logged, retried."""
    import asyncio
    import logging
    import time

    log = logging.getLogger("mentoring.ledger")
    last_signed, last_size = float("-inf"), -1
    while True:
        try:
            await seal(pool)
            if key is not None and time.monotonic() - last_signed >= checkpoint_every_s:
                size = await pool.fetchval("SELECT count(*) FROM log_leaves")
                if size != last_size:
                    checkpoint = await take_checkpoint(pool, key)
                    last_size = checkpoint.size
                    if out is not None:
                        out.mkdir(parents=True, exist_ok=True)
                        (out / f"checkpoint-{checkpoint.size:012d}.json").write_text(
                            json.dumps(checkpoint.as_json(), indent=2) + "\n", encoding="utf-8")
                last_signed = time.monotonic()
        except Exception:  # PostgreSQL away: the next turn tries again
            log.exception("sealing the log failed; retrying in %s s", seal_every_s)
        await asyncio.sleep(seal_every_s)
