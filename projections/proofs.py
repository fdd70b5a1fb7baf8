"""Read models that prove themselves: a pair's row in `pair_overview`, against the same fold run
again over the pair's events in the log, column by column.

An auditor who trusts the log (its chains and signed checkpoints) need not trust the read model:
`mentoring audit prove pair ID` shows that what the dashboards and reports read for this pair is
exactly what the log implies, or names each column that differs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from events.store import PostgresEventStore
from projections.base import actor_of, occurred_at
from projections.pair_fold import PairFacts, fold
from projections.pair_overview import _row

COLUMNS = ("pair_id", "programme_id", "stage", "stage_since", "mentor_id", "mentee_id", "nominated_by",
           "nominated_at", "sessions_planned", "sessions_held", "rating_sum", "rating_count", "at_risk",
           "paused", "next_deadline", "next_deadline_kind", "last_activity_at", "ended_at", "last_position",
           "facts")


@dataclass
class PairProof:
    pair_id: str
    events: int
    log_position: int
    read_model_position: int | None
    differences: list[tuple[str, str, str]] = field(default_factory=list)  # column, read model, refolded
    range_events: int | None = None  # what the read model's checkpoint says it applied (the whole log's range)
    range_digest: str | None = None

    @property
    def behind(self) -> bool:
        """The read model and the log were read at different moments (the projection behind, or
        moving on between the two reads): not a difference, try again."""
        return self.read_model_position is not None and self.read_model_position != self.log_position

    @property
    def ok(self) -> bool:
        return self.read_model_position is not None and not self.behind and not self.differences


async def prove_pair(store: PostgresEventStore, pool: asyncpg.Pool, pair_id: str) -> PairProof | None:
    """The pair's read-model row against its refold from the log; None if the log has no such pair."""
    events = await store.read_stream(f"pair-{pair_id}")
    facts: PairFacts | None = None
    last = 0
    for event in events:
        folded = fold(facts, pair_id, event.event_type, event.payload, occurred_at(event), actor_of(event))
        if folded is not None:
            facts, last = folded, event.position
    if facts is None:
        return None
    expected = dict(zip(COLUMNS, _row(facts, last), strict=True))
    row = await pool.fetchrow(f"SELECT {', '.join(COLUMNS)} FROM pair_overview.pairs WHERE pair_id = $1", pair_id)
    proof = PairProof(pair_id, len(events), last, None if row is None else row["last_position"])
    applied = await pool.fetchrow(
        "SELECT applied_events, range_digest FROM projection_checkpoints WHERE name = 'pair_overview'")
    if applied is not None and applied["range_digest"] is not None:
        proof.range_events, proof.range_digest = applied["applied_events"], applied["range_digest"].hex()
    if row is None or proof.behind:
        return proof
    for column in COLUMNS:
        stored, refolded = _comparable(row[column]), _comparable(expected[column])
        if stored != refolded:
            proof.differences.append((column, _shown(stored), _shown(refolded)))
    return proof


def _comparable(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str, sort_keys=True) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 120 else text[:117] + "..."
