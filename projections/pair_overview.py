"""Read model: where each pair stands (programme, stage, people, sessions, ratings, risk, deadline).

One row per pair, keyed by pair id. Names are not here: queries join `people` by employee id, so
an erasure shows at once and never needs a rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from events.base import RecordedEvent
from projections.base import Projection, actor_of, occurred_at, pair_events
from projections.pair_fold import PairFacts, fold, next_deadline

_UPSERT = """
INSERT INTO pairs (pair_id, programme_id, stage, stage_since, mentor_id, mentee_id, nominated_by,
                   nominated_at, sessions_planned, sessions_held, rating_sum, rating_count, at_risk,
                   paused, next_deadline, next_deadline_kind, last_activity_at, ended_at,
                   last_position, facts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
ON CONFLICT (pair_id) DO UPDATE SET
    programme_id = EXCLUDED.programme_id, stage = EXCLUDED.stage,
    stage_since = EXCLUDED.stage_since, mentor_id = EXCLUDED.mentor_id,
    mentee_id = EXCLUDED.mentee_id, nominated_by = EXCLUDED.nominated_by,
    nominated_at = EXCLUDED.nominated_at, sessions_planned = EXCLUDED.sessions_planned,
    sessions_held = EXCLUDED.sessions_held, rating_sum = EXCLUDED.rating_sum,
    rating_count = EXCLUDED.rating_count, at_risk = EXCLUDED.at_risk, paused = EXCLUDED.paused,
    next_deadline = EXCLUDED.next_deadline, next_deadline_kind = EXCLUDED.next_deadline_kind,
    last_activity_at = EXCLUDED.last_activity_at, ended_at = EXCLUDED.ended_at,
    last_position = EXCLUDED.last_position, facts = EXCLUDED.facts
"""


class PairOverview(Projection):
    name = "pair_overview"
    tables = ("pairs",)

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        # Load the touched pairs once, fold the whole batch in memory, write each pair once.
        mine = pair_events(events)
        if not mine:
            return
        rows = await conn.fetch("SELECT pair_id, facts FROM pairs WHERE pair_id = ANY($1::text[])",
                                list({pid for pid, _ in mine}))
        pairs = {r["pair_id"]: PairFacts.from_json(r["facts"]) for r in rows}
        last_position: dict[str, int] = {}
        for pair_id, event in mine:
            facts = fold(pairs.get(pair_id), pair_id, event.event_type, event.payload,
                         occurred_at(event), actor_of(event))
            if facts is not None:
                pairs[pair_id] = facts
                last_position[pair_id] = event.position
        if last_position:
            await conn.executemany(
                _UPSERT, [_row(pairs[pid], position) for pid, position in last_position.items()]
            )


def _row(facts: PairFacts, position: int) -> tuple:
    deadline = next_deadline(facts)
    return (
        facts.pair_id, facts.programme_id, facts.stage, facts.stage_since, facts.mentor_id,
        facts.mentee_id, facts.nominated_by, facts.nominated_at, facts.sessions_planned,
        facts.sessions_held, facts.rating_sum, facts.rating_count, facts.at_risk,
        facts.paused_since is not None, deadline.due if deadline else None,
        deadline.kind if deadline else None, facts.last_activity_at, facts.ended_at, position,
        facts.to_json(),
    )
