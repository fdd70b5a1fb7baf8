"""Read model: every session of every pair, so each person sees what is coming and what was held.

One row per (pair, session number), carrying both people's ids so a person's calendar is one
indexed lookup. A replaced mentor hands over the pair's open sessions to the newcomer.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from events.base import RecordedEvent
from projections.base import Projection, occurred_at, pair_events, timestamp
from projections.pair_fold import OPEN_SESSION, PairFoldError

_SESSION_EVENTS = {"SessionProposed", "SessionConfirmed", "SessionRescheduled", "SessionCancelled",
                   "SessionHeld", "SessionMissed"}
_RELEVANT = _SESSION_EVENTS | {"PairNominated", "MentorReplaced"}
_COLUMNS = ("pair_id", "session_no", "programme_id", "mentor_id", "mentee_id", "starts_at",
            "duration_minutes", "format", "topics", "status", "topics_covered", "updated_at")
_STATUS = {"SessionConfirmed": "confirmed", "SessionCancelled": "cancelled",
           "SessionHeld": "held", "SessionMissed": "missed"}

_UPSERT_SESSION = f"""
INSERT INTO sessions ({", ".join(_COLUMNS)})
VALUES ({", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))})
ON CONFLICT (pair_id, session_no) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[2:])}
"""

_UPSERT_PAIR = """
INSERT INTO pairs (pair_id, programme_id, mentor_id, mentee_id) VALUES ($1, $2, $3, $4)
ON CONFLICT (pair_id) DO UPDATE SET programme_id = EXCLUDED.programme_id,
    mentor_id = EXCLUDED.mentor_id, mentee_id = EXCLUDED.mentee_id
"""


class SessionCalendar(Projection):
    name = "session_calendar"
    tables = ("pairs", "sessions")

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        relevant = pair_events(events, _RELEVANT)
        if not relevant:
            return
        touched = list({pid for pid, _ in relevant})
        pairs = {r["pair_id"]: dict(r) for r in await conn.fetch(
            "SELECT pair_id, programme_id, mentor_id, mentee_id FROM pairs "
            "WHERE pair_id = ANY($1::text[])", touched)}
        sessions = {(r["pair_id"], r["session_no"]): dict(r) for r in await conn.fetch(
            f"SELECT {', '.join(_COLUMNS)} FROM sessions WHERE pair_id = ANY($1::text[])", touched)}
        dirty_pairs: set[str] = set()
        dirty_sessions: set[tuple[str, int]] = set()

        for pair_id, event in relevant:
            payload, at = event.payload, occurred_at(event)
            kind = event.event_type
            if kind == "PairNominated":
                pairs[pair_id] = {"pair_id": pair_id, "programme_id": payload["programme_id"],
                                  "mentor_id": payload["mentor_id"], "mentee_id": payload["mentee_id"]}
                dirty_pairs.add(pair_id)
            elif kind == "MentorReplaced":
                pair = _pair(pairs, pair_id)
                pair["mentor_id"] = payload["new_mentor_id"]
                dirty_pairs.add(pair_id)
                for key, row in sessions.items():
                    if key[0] == pair_id and row["status"] in OPEN_SESSION:
                        row["mentor_id"], row["updated_at"] = pair["mentor_id"], at
                        dirty_sessions.add(key)
            elif kind == "SessionProposed":
                pair = _pair(pairs, pair_id)
                key = (pair_id, int(payload["session_no"]))
                sessions[key] = {
                    "pair_id": pair_id, "session_no": key[1],
                    "programme_id": pair["programme_id"], "mentor_id": pair["mentor_id"],
                    "mentee_id": pair["mentee_id"], "starts_at": timestamp(payload["starts_at"]),
                    "duration_minutes": int(payload["duration_minutes"]),
                    "format": payload["format"], "topics": list(payload["topics"]),
                    "status": "proposed", "topics_covered": None, "updated_at": at,
                }
                dirty_sessions.add(key)
            else:
                key = (pair_id, int(payload["session_no"]))
                session = sessions.get(key)
                if session is None:
                    raise PairFoldError(f"session {key[1]} of pair {pair_id} was never proposed")
                if kind == "SessionRescheduled":
                    session["starts_at"] = timestamp(payload["starts_at"])
                else:
                    session["status"] = _STATUS[kind]
                if kind == "SessionHeld":
                    session["topics_covered"] = list(payload["topics_covered"])
                session["updated_at"] = at
                dirty_sessions.add(key)

        if dirty_pairs:
            await conn.executemany(_UPSERT_PAIR, [
                (p["pair_id"], p["programme_id"], p["mentor_id"], p["mentee_id"])
                for p in (pairs[pid] for pid in dirty_pairs)])
        if dirty_sessions:
            await conn.executemany(_UPSERT_SESSION, [
                tuple(sessions[key][c] for c in _COLUMNS) for key in dirty_sessions])


def _pair(pairs: dict[str, dict], pair_id: str) -> dict:
    pair = pairs.get(pair_id)
    if pair is None:
        raise PairFoldError(f"pair {pair_id} has sessions but was never nominated")
    return pair
