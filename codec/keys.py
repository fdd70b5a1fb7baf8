"""Envelope encryption's keys: a data key per workflow, wrapped by a key-encryption key (KEK).

Data keys are 256-bit AES keys, created on first use and stored in PostgreSQL (`data_keys`) only
wrapped, that is encrypted by the KEK, which never enters the database. The KEK is behind a small
interface (`KeyEncryptionKey`) so that a KMS can hold it instead of a local secret: wrapping and
unwrapping are then calls to the KMS, and the rest is unchanged.

Destroying a data key (crypto-shredding) erases every payload encrypted under it, wherever copies
of the ciphertext went (Temporal's store, its backups, exported histories).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class KeySetupError(Exception):
    """No usable key-encryption key; the message is one line for the operator."""


class UnknownDataKey(LookupError):
    """A payload names a data key this database has never held (another database, another KEK)."""


class KeyEncryptionKey(Protocol):
    """What wraps data keys: a local secret today, a KMS tomorrow."""

    @property
    def kek_id(self) -> str:
        """Names the KEK (never the secret): stored beside each wrapped key, so that a key wrapped
        by another KEK is named as such rather than failing as "corrupt"."""
        ...

    async def wrap(self, key_id: str, data_key: bytes) -> bytes: ...

    async def unwrap(self, key_id: str, wrapped: bytes) -> bytes: ...


class LocalKeyEncryptionKey:
    """A KEK held by this process: 32 random bytes, AES-256-GCM, the key id as associated data (a
    wrapped key copied onto another row does not unwrap there)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != KEY_BYTES:
            raise KeySetupError(f"the key-encryption key must be {KEY_BYTES} bytes, not {len(secret)}")
        self._aead = AESGCM(secret)
        self._kek_id = "local:" + hashlib.sha256(b"kek-id\0" + secret).hexdigest()[:16]

    @property
    def kek_id(self) -> str:
        return self._kek_id

    async def wrap(self, key_id: str, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, key_id.encode())

    async def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise KeySetupError(f"data key {key_id} does not unwrap with this key-encryption key "
                                "(altered, or moved from another row)") from None


def parse_kek(text: str, where: str) -> LocalKeyEncryptionKey:
    """A KEK from its base64 text (the file's content or the variable's value)."""
    try:
        secret = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeySetupError(f"{where} is not base64 (it holds 32 random bytes, base64-encoded; "
                            "make one with: python -c \"import os,base64;print(base64.b64encode(os.urandom(32)).decode())\")") from None
    try:
        return LocalKeyEncryptionKey(secret)
    except KeySetupError as exc:
        raise KeySetupError(f"{where}: {exc}") from None


def read_kek_file(path: Path) -> LocalKeyEncryptionKey:
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeySetupError(f"cannot read the key-encryption key at {path} (MENTORING_KEK_FILE): "
                            f"{exc.strerror or exc}") from None
    return parse_kek(text, f"the key-encryption key at {path}")


def generate_kek_file(path: Path) -> None:
    """Under --dev: a fresh KEK, readable by its owner only, unless one is already there (the
    data keys in the database are wrapped by it: replacing it would lose them all)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")


def kek_from_settings(kek_text: str | None, kek_file: Path | None, state_dir: Path) -> LocalKeyEncryptionKey:
    """MENTORING_KEK, else MENTORING_KEK_FILE, else the dev stack's STATE_DIR/kek."""
    if kek_text:
        return parse_kek(kek_text, "MENTORING_KEK")
    if kek_file is not None:
        return read_kek_file(kek_file)
    dev_file = state_dir / "kek"
    if dev_file.exists():
        return read_kek_file(dev_file)
    raise KeySetupError(
        "no key-encryption key for the payloads sent to Temporal: set MENTORING_KEK_FILE (a file "
        "holding 32 random bytes, base64) or MENTORING_KEK, or run the dev stack (make run), "
        f"which generates {dev_file}")


@dataclass(frozen=True)
class DataKey:
    key_id: str
    cipher: AESGCM


@dataclass(frozen=True)
class ShreddedKey:
    key_id: str
    shredded_at: datetime


class _TimedCache:
    """Unwrapped keys kept for `ttl_s`: a key shredded by another process stops working here
    within that time. Bounded: the least recently used entries go first."""

    def __init__(self, ttl_s: float, max_entries: int = 20_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, DataKey | ShreddedKey]] = OrderedDict()

    def get(self, name: str) -> DataKey | ShreddedKey | None:
        found = self._entries.get(name)
        if found is None:
            return None
        if found[0] < time.monotonic():
            del self._entries[name]
            return None
        self._entries.move_to_end(name)
        return found[1]

    def put(self, name: str, value: DataKey | ShreddedKey) -> None:
        self._entries[name] = (time.monotonic() + self._ttl_s, value)
        self._entries.move_to_end(name)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


_CREATE_WORKFLOW_KEY = """
INSERT INTO data_keys (key_id, scope, workflow_id, wrapped_key, kek_id)
VALUES ($1, 'workflow', $2, $3, $4)
ON CONFLICT (workflow_id) WHERE scope = 'workflow' AND shredded_at IS NULL DO NOTHING
"""
_CREATE_GENERAL_KEY = """
INSERT INTO data_keys (key_id, scope, wrapped_key, kek_id) VALUES ($1, 'general', $2, $3)
ON CONFLICT (scope) WHERE scope = 'general' DO NOTHING
"""
_KEY_COLUMNS = "key_id::text AS key_id, wrapped_key, kek_id, shredded_at"


class DataKeys:
    """The data keys in PostgreSQL, unwrapped on demand and cached for a short while."""

    def __init__(self, pool: asyncpg.Pool, kek: KeyEncryptionKey, *, cache_seconds: float = 60.0) -> None:
        self._pool = pool
        self._kek = kek
        self._by_id = _TimedCache(cache_seconds)
        self._by_workflow = _TimedCache(cache_seconds)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def for_workflow(self, workflow_id: str | None) -> DataKey | ShreddedKey:
        """The key of `workflow_id`'s payloads (created on first use); with no workflow, the
        general key."""
        name = workflow_id if workflow_id is not None else "\0general"
        if (cached := self._by_workflow.get(name)) is not None:
            return cached
        new_id = str(uuid.uuid4())
        wrapped = await self._kek.wrap(new_id, AESGCM.generate_key(bit_length=256))
        if workflow_id is None:
            await self._pool.execute(_CREATE_GENERAL_KEY, new_id, wrapped, self._kek.kek_id)
            row = await self._pool.fetchrow(f"SELECT {_KEY_COLUMNS} FROM data_keys WHERE scope = 'general'")
        else:  # two processes creating it at once: the first insert wins, both read that one
            await self._pool.execute(_CREATE_WORKFLOW_KEY, new_id, workflow_id, wrapped, self._kek.kek_id)
            row = await self._pool.fetchrow(
                f"SELECT {_KEY_COLUMNS} FROM data_keys WHERE workflow_id = $1 AND scope = 'workflow'"
                " AND shredded_at IS NULL", workflow_id)
        key = await self._unwrapped(row)
        self._by_workflow.put(name, key)
        return key

    async def typed_key(self) -> DataKey:
        """A key of its own for one input typed in the Web UI (see `data_keys.scope`)."""
        key_id = str(uuid.uuid4())
        data_key = AESGCM.generate_key(bit_length=256)
        await self._pool.execute(
            "INSERT INTO data_keys (key_id, scope, wrapped_key, kek_id) VALUES ($1, 'typed', $2, $3)",
            key_id, await self._kek.wrap(key_id, data_key), self._kek.kek_id)
        key = DataKey(key_id, AESGCM(data_key))
        self._by_id.put(key_id, key)
        return key

    async def by_id(self, key_id: str) -> DataKey | ShreddedKey:
        if (cached := self._by_id.get(key_id)) is not None:
            return cached
        try:
            as_uuid = uuid.UUID(key_id)
        except ValueError:
            raise UnknownDataKey(f"data key {key_id[:40]!r} is not a key id of this project") from None
        row = await self._pool.fetchrow(f"SELECT {_KEY_COLUMNS} FROM data_keys WHERE key_id = $1", as_uuid)
        if row is None:
            raise UnknownDataKey(f"data key {key_id[:40]} is unknown to this database")
        return await self._unwrapped(row)

    async def _unwrapped(self, row: asyncpg.Record) -> DataKey | ShreddedKey:
        key: DataKey | ShreddedKey
        if row["shredded_at"] is not None:
            key = ShreddedKey(row["key_id"], row["shredded_at"])
        else:
            if row["kek_id"] != self._kek.kek_id:
                raise KeySetupError(
                    f"data key {row['key_id']} is wrapped by key-encryption key {row['kek_id']}, "
                    f"and this process has {self._kek.kek_id} (MENTORING_KEK_FILE / MENTORING_KEK)")
            key = DataKey(row["key_id"], AESGCM(await self._kek.unwrap(row["key_id"], row["wrapped_key"])))
        self._by_id.put(row["key_id"], key)
        return key

    async def shred(self, conn: asyncpg.Connection, workflow_id: str, typed_key_ids: list[str]) -> int:
        """Destroy for ever the key of `workflow_id` and the keys of the inputs typed for it
        (found in its history); how many were destroyed now. Only typed keys not yet tied to
        another workflow are taken: a history cannot make us destroy another pair's key."""
        done = await conn.execute(
            "UPDATE data_keys SET wrapped_key = NULL, shredded_at = now(), workflow_id = $1"
            " WHERE shredded_at IS NULL AND ((scope = 'workflow' AND workflow_id = $1)"
            "   OR (scope = 'typed' AND key_id = ANY($2::uuid[]) AND coalesce(workflow_id, $1) = $1))",
            workflow_id, typed_key_ids)
        self.forget_cached()
        return int(done.split()[-1])

    def forget_cached(self) -> None:
        self._by_id.clear()
        self._by_workflow.clear()


class ReadOnlyDataKeys(DataKeys):
    """For replaying histories: keys are read, never created. A replay encodes the commands it
    makes and throws them away, so any key will do there, and no row appears for a workflow id
    taken from a file name (or for a shredded pair, a fresh key)."""

    async def for_workflow(self, workflow_id: str | None) -> DataKey | ShreddedKey:
        return DataKey(str(uuid.uuid4()), AESGCM(AESGCM.generate_key(bit_length=256)))
