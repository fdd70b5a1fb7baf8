"""The dedicated connections projections run on: opened from a DSN, or borrowed from the pool.

A runner holds one per projection (its advisory lock lives there), a rebuild one per shadow.
They decode JSONB like the store's pool does, only faster: PostgreSQL prints jsonb without
surrounding whitespace, so the C scanner can be called directly, skipping `json.loads`'
whitespace handling, which is a fair share of a rebuild's time at a million events.
"""

from __future__ import annotations

import asyncio
import json
from json.scanner import make_scanner

import asyncpg

from events.store import PostgresEventStore

# typeshed types the context as a make_scanner; the scanner only reads a decoder's attributes
# (parse_float, object_hook...), which is how json.JSONDecoder itself calls it.
_scan = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _jsonb(text: str) -> object:
    return _scan(text, 0)[0]


async def connect(store: PostgresEventStore, dsn: str | None) -> asyncpg.Connection:
    if dsn is None:
        return await store.pool.acquire()
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=_jsonb, schema="pg_catalog")
    return conn


async def disconnect(store: PostgresEventStore, dsn: str | None, conn: asyncpg.Connection) -> None:
    if dsn is None:
        # The pool resets the connection on release, advisory locks included.
        await store.pool.release(conn)
        return
    try:
        await asyncio.wait_for(conn.close(), timeout=5)
    except Exception:
        conn.terminate()  # a dead connection cannot say goodbye
