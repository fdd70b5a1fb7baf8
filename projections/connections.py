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

from events.store import IDLE_IN_TRANSACTION_MS, PostgresEventStore

# typeshed types the context as a make_scanner; the scanner only reads a decoder's attributes
# (parse_float, object_hook...), which is how json.JSONDecoder itself calls it.
_scan = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


# The server probes an idle connection after 10 s and gives up after 3 unanswered probes 5 s apart,
# and drops one whose sent data go unacknowledged for 30 s: a vanished host frees its locks in
# under a minute, not in the two hours of the TCP defaults.
# And a transaction left idle a minute is ended, as on the store's pool.
_KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3",
               "tcp_user_timeout": "30000", "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)}


def _jsonb(text: str) -> object:
    return _scan(text, 0)[0]


async def connect(store: PostgresEventStore, dsn: str | None) -> asyncpg.Connection:
    if dsn is None:
        return await store.pool.acquire()
    conn = await asyncpg.connect(dsn, server_settings=_KEEPALIVES)
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
