"""Read model: the consent register, every invitation and every answer, with who, when and how.

It is the proof that no senior was forced: each mentee's invitation, their consent or refusal and
the channel it came by, who entered it, expiries without an answer, and withdrawals. The mentor's
own confirmation of motivation is recorded beside it, since nobody is forced on either side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from events.base import RecordedEvent
from projections.base import Projection, actor_of, occurred_at, pair_events, timestamp

# Event type -> (role, answer, the payload field naming the person).
_ANSWERS: dict[str, tuple[str | None, str, str]] = {
    "MentorMotivationConfirmed": ("mentor", "motivation_confirmed", "mentor_id"),
    "MentorDeclined": ("mentor", "declined", "mentor_id"),
    "MentorMotivationExpired": ("mentor", "expired", "mentor_id"),
    "MenteeInvited": ("mentee", "invited", "mentee_id"),
    "MenteeConsentGiven": ("mentee", "consent_given", "mentee_id"),
    "MenteeDeclined": ("mentee", "declined", "mentee_id"),
    "InvitationExpired": ("mentee", "expired", "mentee_id"),
    "PairWithdrawn": (None, "withdrawn", "withdrawn_by"),  # role is in the payload
}

_RELEVANT = {*_ANSWERS, "PairNominated"}

_INSERT = """
INSERT INTO entries (position, event_id, pair_id, programme_id, person_id, role, answer, channel,
                     recorded_by, actor, at, expires_at, reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
"""


class ConsentRegister(Projection):
    name = "consent_register"
    tables = ("pairs", "entries")

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        relevant = pair_events(events, _RELEVANT)
        if not relevant:
            return
        programmes = {r["pair_id"]: r["programme_id"] for r in await conn.fetch(
            "SELECT pair_id, programme_id FROM pairs WHERE pair_id = ANY($1::text[])",
            list({pid for pid, _ in relevant}))}
        new_pairs, entries = [], []
        for pair_id, event in relevant:
            payload = event.payload
            if event.event_type == "PairNominated":
                programmes[pair_id] = payload["programme_id"]
                new_pairs.append((pair_id, payload["programme_id"]))
                continue
            entries.append(_entry(event, pair_id, programmes.get(pair_id), payload))
        if new_pairs:
            await conn.executemany(
                "INSERT INTO pairs (pair_id, programme_id) VALUES ($1, $2)", new_pairs
            )
        if entries:
            await conn.executemany(_INSERT, entries)


def _entry(event: RecordedEvent, pair_id: str, programme_id: str | None,
           payload: dict[str, Any]) -> tuple:
    role, answer, person_field = _ANSWERS[event.event_type]
    return (
        event.position, event.event_id, pair_id, programme_id, payload[person_field],
        role or payload["role"], answer, payload.get("channel"), payload.get("recorded_by"),
        actor_of(event), occurred_at(event), timestamp(payload.get("expires_at")),
        payload.get("reason"),
    )
