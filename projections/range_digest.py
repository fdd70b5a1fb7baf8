"""What each read model was built from, and the check of it against the log.

A projection's checkpoint records the range of the log it read: how many events, in commit
order, and a running SHA-256 over their ids. The range holds every event read, also those the
projection did not apply: an event skipped by `resume --skip` (`projection_failures` lists it), and
the waiting events of a parked stream (`projection_parked` says from where; applied later, when the
stream is resumed). Whoever can read the log recomputes the digest of the range up to that
checkpoint (`mentoring audit prove projections`): equal, the read model was built from exactly
those events, none missing from the log, none added, none reordered. What those events say is the
ledger's part: its leaves commit their content, and `mentoring audit verify --against` proves it
unchanged since a signed checkpoint.

The digest of an empty range is 32 zero bytes; each event extends it:
``digest = SHA-256(digest || event_id as 16 bytes)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

import asyncpg
from pydantic import BaseModel

EMPTY = bytes(32)


class _HasBytes(Protocol):
    @property
    def bytes(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class AppliedRange:
    """How many events a checkpoint's range holds, and their digest; None for both when the
    checkpoint moved before digests were kept (until a rebuild records them)."""

    events: int | None
    digest: bytes | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> AppliedRange:
        return cls(row["applied_events"], row["range_digest"])

    def extended(self, event_ids: Iterable[_HasBytes]) -> AppliedRange:
        if self.events is None or self.digest is None:
            return self
        digest, count = self.digest, self.events
        for event_id in event_ids:
            digest = hashlib.sha256(digest + event_id.bytes).digest()
            count += 1
        return AppliedRange(count, digest)


START = AppliedRange(0, EMPTY)

RangeStatus = Literal["ok", "differs", "not recorded"]


class RangeCheck(BaseModel):
    """One projection's recorded range against the same range recomputed from the log."""

    name: str
    status: RangeStatus
    position: int
    recorded_events: int | None
    log_events: int
    recorded_digest: str | None
    log_digest: str


_CHECKPOINTS = """SELECT name, transaction_id, position, applied_events, range_digest
                  FROM projection_checkpoints ORDER BY transaction_id, position, name"""
_LOG_UP_TO = """SELECT transaction_id::text::bigint AS transaction_id, position, event_id FROM events
                WHERE (transaction_id, position) <= ($1::text::xid8, $2)
                ORDER BY transaction_id, position"""


async def check_ranges(pool: asyncpg.Pool, on_progress: Callable[[int], None] | None = None) -> list[RangeCheck]:
    """Recompute every projection's range from the log, in one pass, in one consistent snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        checkpoints = list(await conn.fetch(_CHECKPOINTS))
        if not checkpoints:
            return []
        furthest = checkpoints[-1]
        results: list[RangeCheck] = []
        waiting = iter(checkpoints)
        pending = next(waiting, None)
        digest, count = EMPTY, 0

        def settle_up_to(key: tuple[int, int] | None) -> None:
            """Judge every checkpoint before `key` (all that remain, for None) by the range so far."""
            nonlocal pending
            while pending is not None and (key is None or (pending["transaction_id"], pending["position"]) < key):
                results.append(_judged(pending, count, digest))
                pending = next(waiting, None)

        async for row in conn.cursor(_LOG_UP_TO, str(furthest["transaction_id"]), furthest["position"],
                                     prefetch=10_000):
            settle_up_to((row["transaction_id"], row["position"]))
            digest = hashlib.sha256(digest + row["event_id"].bytes).digest()
            count += 1
            if on_progress is not None and count % 10_000 == 0:
                on_progress(count)
        settle_up_to(None)
        if on_progress is not None:
            on_progress(count)
    return sorted(results, key=lambda r: r.name)


def _judged(checkpoint: asyncpg.Record, count: int, digest: bytes) -> RangeCheck:
    recorded = AppliedRange.from_row(checkpoint)
    status: RangeStatus
    if recorded.digest is None or recorded.events is None:
        status = "not recorded"
    elif (recorded.events, recorded.digest) == (count, digest):
        status = "ok"
    else:
        status = "differs"
    return RangeCheck(name=checkpoint["name"], status=status, position=checkpoint["position"],
                      recorded_events=recorded.events, log_events=count,
                      recorded_digest=recorded.digest.hex() if recorded.digest is not None else None,
                      log_digest=digest.hex())
