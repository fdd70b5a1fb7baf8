"""Read model: what each junior mentor gave: pairs mentored, sessions held, ratings, topics taught.

Credit goes to the mentor who held the session, even if the pair's mentor is replaced before
the mentee's feedback arrives. Counters are added to, batch by batch, never recomputed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from events.base import RecordedEvent
from projections.base import Projection, occurred_at, pair_events
from projections.pair_fold import PairFoldError

_RELEVANT = {"PairNominated", "MentorReplaced", "SessionHeld", "FeedbackGiven"}

_ADD_TO_MENTORS = """
INSERT INTO mentors (mentor_id, pairs, sessions_given, rating_sum, rating_count, last_session_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (mentor_id) DO UPDATE SET
    pairs = mentors.pairs + EXCLUDED.pairs,
    sessions_given = mentors.sessions_given + EXCLUDED.sessions_given,
    rating_sum = mentors.rating_sum + EXCLUDED.rating_sum,
    rating_count = mentors.rating_count + EXCLUDED.rating_count,
    last_session_at = GREATEST(mentors.last_session_at, EXCLUDED.last_session_at)
"""

_ADD_TO_TOPICS = """
INSERT INTO topics (mentor_id, topic, sessions) VALUES ($1, $2, $3)
ON CONFLICT (mentor_id, topic) DO UPDATE SET sessions = topics.sessions + EXCLUDED.sessions
"""


class _Credit:
    __slots__ = ("pairs", "sessions", "rating_sum", "rating_count", "last_session_at")

    def __init__(self) -> None:
        self.pairs = self.sessions = self.rating_sum = self.rating_count = 0
        self.last_session_at: datetime | None = None


class MentorRecognition(Projection):
    name = "mentor_recognition"
    tables = ("mentors", "topics", "pairs", "sessions")

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        relevant = pair_events(events, _RELEVANT)
        if not relevant:
            return
        touched = list({pid for pid, _ in relevant})
        mentor_of_pair = {r["pair_id"]: r["mentor_id"] for r in await conn.fetch(
            "SELECT pair_id, mentor_id FROM pairs WHERE pair_id = ANY($1::text[])", touched)}
        held_by = {(r["pair_id"], r["session_no"]): r["mentor_id"] for r in await conn.fetch(
            "SELECT pair_id, session_no, mentor_id FROM sessions WHERE pair_id = ANY($1::text[])",
            touched)}
        credits: dict[str, _Credit] = defaultdict(_Credit)
        topics: dict[tuple[str, str], int] = defaultdict(int)
        pair_rows: dict[str, str] = {}
        session_rows: list[tuple[str, int, str]] = []

        for pair_id, event in relevant:
            payload = event.payload
            match event.event_type:
                case "PairNominated":
                    mentor = payload["mentor_id"]
                    mentor_of_pair[pair_id] = pair_rows[pair_id] = mentor
                    credits[mentor].pairs += 1
                case "MentorReplaced":
                    mentor = payload["new_mentor_id"]
                    mentor_of_pair[pair_id] = pair_rows[pair_id] = mentor
                    credits[mentor].pairs += 1
                case "SessionHeld":
                    mentor = _mentor(mentor_of_pair, pair_id)
                    number = int(payload["session_no"])
                    held_by[(pair_id, number)] = mentor
                    session_rows.append((pair_id, number, mentor))
                    credit = credits[mentor]
                    credit.sessions += 1
                    at = occurred_at(event)
                    if credit.last_session_at is None or at > credit.last_session_at:
                        credit.last_session_at = at
                    for topic in dict.fromkeys(payload["topics_covered"]):  # each topic once
                        topics[(mentor, topic)] += 1
                case "FeedbackGiven" if payload["by_role"] == "mentee":
                    number = int(payload["session_no"])
                    mentor = held_by.get((pair_id, number)) or _mentor(mentor_of_pair, pair_id)
                    credits[mentor].rating_sum += int(payload["rating"])
                    credits[mentor].rating_count += 1

        if pair_rows:
            await conn.executemany(
                "INSERT INTO pairs (pair_id, mentor_id) VALUES ($1, $2) "
                "ON CONFLICT (pair_id) DO UPDATE SET mentor_id = EXCLUDED.mentor_id",
                list(pair_rows.items()))
        if session_rows:
            await conn.executemany(
                "INSERT INTO sessions (pair_id, session_no, mentor_id) VALUES ($1, $2, $3)",
                session_rows)
        if credits:
            await conn.executemany(_ADD_TO_MENTORS, [
                (m, c.pairs, c.sessions, c.rating_sum, c.rating_count, c.last_session_at)
                for m, c in credits.items()])
        if topics:
            await conn.executemany(_ADD_TO_TOPICS, [(m, t, n) for (m, t), n in topics.items()])


def _mentor(mentor_of_pair: dict[str, str], pair_id: str) -> str:
    mentor = mentor_of_pair.get(pair_id)
    if mentor is None:
        raise PairFoldError(f"pair {pair_id} has a session but no nominated mentor")
    return mentor
