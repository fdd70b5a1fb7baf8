"""Read model: how a programme's pairs move through the stages, and how long each stage takes.

`pairs` holds each pair's current stage and outcome (counts and rates are taken at query time);
`stage_visits` holds one row per stay in a stage, so medians are computed over finished stays.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from events.base import RecordedEvent
from projections.base import Projection, actor_of, occurred_at, pair_events
from projections.pair_fold import PairFacts, fold

_UPSERT_PAIR = """
INSERT INTO pairs (pair_id, programme_id, stage, visits, invited, consented, outcome, facts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (pair_id) DO UPDATE SET
    programme_id = EXCLUDED.programme_id, stage = EXCLUDED.stage, visits = EXCLUDED.visits,
    invited = EXCLUDED.invited, consented = EXCLUDED.consented, outcome = EXCLUDED.outcome,
    facts = EXCLUDED.facts
"""

_UPSERT_VISIT = """
INSERT INTO stage_visits (pair_id, visit, programme_id, stage, entered_at, left_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (pair_id, visit) DO UPDATE SET left_at = EXCLUDED.left_at
"""


class ProgrammeFunnel(Projection):
    name = "programme_funnel"
    tables = ("pairs", "stage_visits")

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        mine = pair_events(events)
        if not mine:
            return
        rows = await conn.fetch(
            "SELECT pair_id, visits, facts FROM pairs WHERE pair_id = ANY($1::text[])",
            list({pid for pid, _ in mine}))
        pairs = {r["pair_id"]: PairFacts.from_json(r["facts"]) for r in rows}
        visits = {r["pair_id"]: r["visits"] for r in rows}
        changed: set[str] = set()
        # (pair_id, visit) -> the visit row; a later write in the batch replaces an earlier one.
        visit_rows: dict[tuple[str, int], tuple] = {}
        for pair_id, event in mine:
            before = pairs.get(pair_id)
            before_stage = before.stage if before else None
            before_since = before.stage_since if before else None
            at = occurred_at(event)
            facts = fold(before, pair_id, event.event_type, event.payload, at, actor_of(event))
            if facts is None:
                continue
            pairs[pair_id] = facts
            changed.add(pair_id)
            if facts.stage == before_stage:
                continue
            number = visits.get(pair_id, 0)
            if before_stage is not None:
                visit_rows[(pair_id, number)] = (pair_id, number, facts.programme_id, before_stage,
                                                 before_since, at)
            visits[pair_id] = number + 1
            visit_rows[(pair_id, number + 1)] = (pair_id, number + 1, facts.programme_id,
                                                 facts.stage, at, None)
        if changed:
            await conn.executemany(_UPSERT_PAIR, [
                (f.pair_id, f.programme_id, f.stage, visits[pid], f.mentee_invited,
                 f.consent_given, f.outcome, f.to_json())
                for pid in changed for f in (pairs[pid],)
            ])
        if visit_rows:
            await conn.executemany(_UPSERT_VISIT, list(visit_rows.values()))
