"""Read model: a programme's health over time, what the dashboard draws beside the other models.

Every rating (session feedback and final evaluations), every follow-up answer, each spell a pair
spent at risk, each collective session held, and each programme's HR owners (who sign the
mentors' certificates). Ids, times, counts and answers only: names stay in `people`.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from events.base import RecordedEvent
from events.lifecycle import ENDINGS
from events.programme import PROGRAMME_STREAM_PREFIX
from projections.base import Projection, occurred_at, pair_id_of
from projections.pair_fold import PairFoldError

_PAIR_EVENTS = {"PairNominated", "FeedbackGiven", "FinalEvaluationGiven", "FollowUpAnswered",
                "PairFlaggedAtRisk", "PairBackOnTrack", *ENDINGS}
_PROGRAMME_EVENTS = {"ProgrammeOpened", "ProgrammeClosed", "GroupSessionHeld"}


class ProgrammeHealth(Projection):
    name = "programme_health"
    tables = ("programmes", "pairs", "ratings", "follow_ups", "risk_spells", "group_sessions")

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        mine = [e for e in events if e.event_type in _PAIR_EVENTS or e.event_type in _PROGRAMME_EVENTS]
        if not mine:
            return
        pair_ids = list({pid for e in mine if (pid := pair_id_of(e)) is not None})
        programme_of = {r["pair_id"]: r["programme_id"] for r in await conn.fetch(
            "SELECT pair_id, programme_id FROM pairs WHERE pair_id = ANY($1::text[])", pair_ids)}
        # Each pair's last spell at risk: its number, and whether it is still open.
        spells = {r["pair_id"]: (r["spell"], r["until"] is None) for r in await conn.fetch(
            """SELECT DISTINCT ON (pair_id) pair_id, spell, until FROM risk_spells
               WHERE pair_id = ANY($1::text[]) ORDER BY pair_id, spell DESC""", pair_ids)}
        for event in mine:
            pair_id = pair_id_of(event)
            if pair_id is None:
                if event.stream_id.startswith(PROGRAMME_STREAM_PREFIX):
                    await _programme_event(conn, event, event.stream_id.removeprefix(PROGRAMME_STREAM_PREFIX))
                continue
            payload, at = event.payload, occurred_at(event)
            if event.event_type == "PairNominated":
                programme_of[pair_id] = payload["programme_id"]
                await conn.execute("INSERT INTO pairs (pair_id, programme_id) VALUES ($1, $2)",
                                   pair_id, payload["programme_id"])
                continue
            programme = programme_of.get(pair_id)
            if programme is None:  # parked, as the other pair models do: the log is out of order
                raise PairFoldError(f"{event.event_type} for pair {pair_id} before its nomination")
            if event.event_type in ("FeedbackGiven", "FinalEvaluationGiven"):
                await conn.execute(
                    """INSERT INTO ratings (position, pair_id, programme_id, kind, session_no, by_role, rating, at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                    event.position, pair_id, programme,
                    "session" if event.event_type == "FeedbackGiven" else "final",
                    payload.get("session_no"), payload["by_role"], int(payload["rating"]), at)
            elif event.event_type == "FollowUpAnswered":
                await conn.execute(
                    """INSERT INTO follow_ups (position, pair_id, programme_id, follow_up_no, days_after_end,
                                               by_role, still_using, at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                    event.position, pair_id, programme, payload.get("follow_up_no"),
                    int(payload["days_after_end"]), payload["by_role"], bool(payload["still_using"]), at)
            elif event.event_type == "PairFlaggedAtRisk":
                number, still_open = spells.get(pair_id, (0, False))
                if not still_open:
                    spells[pair_id] = (number + 1, True)
                    await conn.execute(
                        """INSERT INTO risk_spells (pair_id, spell, programme_id, since)
                           VALUES ($1, $2, $3, $4)""", pair_id, number + 1, programme, at)
            else:  # back on track, or the pair ended: an open spell closes
                number, still_open = spells.get(pair_id, (0, False))
                if still_open:
                    spells[pair_id] = (number, False)
                    await conn.execute("UPDATE risk_spells SET until = $3 WHERE pair_id = $1 AND spell = $2",
                                       pair_id, number, at)


async def _programme_event(conn: asyncpg.Connection, event: RecordedEvent, programme_id: str) -> None:
    payload, at = event.payload, occurred_at(event)
    if event.event_type == "ProgrammeOpened":
        await conn.execute(
            """INSERT INTO programmes (programme_id, hr_owners, opened_at) VALUES ($1, $2, $3)
               ON CONFLICT (programme_id) DO UPDATE SET hr_owners = EXCLUDED.hr_owners""",
            programme_id, list(payload["hr_owners"]), at)
    elif event.event_type == "ProgrammeClosed":
        await conn.execute("UPDATE programmes SET closed_at = $2 WHERE programme_id = $1", programme_id, at)
    else:  # GroupSessionHeld
        await conn.execute(
            """INSERT INTO group_sessions (position, programme_id, session_no, attendees, pairs, at)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            event.position, programme_id, int(payload["session_no"]), len(payload.get("attended", [])),
            len(payload.get("pairs_attending", [])), at)
