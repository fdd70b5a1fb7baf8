"""Read model: the audit trail, one line per event: who did what, to which subject, when.

Every event of the log gets its line, whatever its type, in log position order. The summary is
built from the payload's facts only (ids, dates, ratings, topics, reason codes): comments stay in
`private_notes`, and an event whose payload this code does not understand still gets its line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from events.base import RecordedEvent
from projections.base import PAIR_STREAM_PREFIX, Projection, actor_of, occurred_at, pair_id_of

_COLUMNS = ["position", "transaction_id", "event_id", "stream_id", "version", "pair_id", "action",
            "summary", "actor", "at", "recorded_at", "workflow_id", "run_id", "correlation_id",
            "causation_id", "trace_id"]


class AuditTrail(Projection):
    name = "audit_trail"
    tables = ("entries", "pair_links")

    async def apply_batch(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent]) -> None:
        if events:
            # One line per event and nothing to merge: COPY is the cheapest way in (rebuilds).
            await conn.copy_records_to_table("entries", records=[_entry(e) for e in events],
                                             columns=_COLUMNS)
            links = [(pair.removeprefix(PAIR_STREAM_PREFIX), e.position) for e in events
                     if e.event_type == "GroupSessionHeld" for pair in e.payload.get("pairs_attending", [])]
            if links:  # a collective session shows in the trail of each pair that attended it
                await conn.copy_records_to_table("pair_links", records=links, columns=["pair_id", "position"])


def _entry(event: RecordedEvent) -> tuple:
    meta = event.metadata
    return (
        event.position, event.transaction_id, event.event_id, event.stream_id, event.version,
        pair_id_of(event), event.event_type, summarise(event.event_type, event.payload),
        actor_of(event), occurred_at(event), event.recorded_at, meta.get("workflow_id"),
        meta.get("run_id"), meta.get("correlation_id"), meta.get("causation_id"),
        meta.get("trace_id"),
    )


def summarise(event_type: str, payload: dict[str, Any]) -> str:
    """One line of facts for people reading the trail."""
    describe = _SUMMARIES.get(event_type)
    if describe is None:
        return event_type
    try:
        return describe(payload)
    except (KeyError, TypeError, ValueError):
        return f"{event_type} (payload not understood by this version)"


def _yes(value: object) -> str:
    return "yes" if value else "no"


def _list(values: list[str]) -> str:
    return ", ".join(values) if values else "none"


_SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "PairCancelled": lambda p: f"pair cancelled in Temporal by {p['requested_by']} at stage {p['stage']}",
    "PairEndedInTemporal": lambda p: (
        f"the pair's workflow ended in Temporal ({p['status']}) at stage {p['stage']}; recorded by the reconciler"),
    "PersonalDataErased": lambda p: (
        f"personal data of {p['employee_id']} erased ({p['reason']}; {p['notes_erased']} private comment(s))"),
    "ContactDetailsChanged": lambda p: f"contact details of {p['employee_id']} changed: {_list(p['fields'])}",
    "PairNominated": lambda p: (
        f"nominated mentor {p['mentor_id']} and mentee {p['mentee_id']} in programme "
        f"{p['programme_id']}: {p['sessions_planned']} sessions on {_list(p['topics'])}"),
    "MentorMotivationConfirmed": lambda p: f"mentor {p['mentor_id']} confirmed their motivation",
    "MentorDeclined": lambda p: f"mentor {p['mentor_id']} declined ({p['reason']})",
    "MentorMotivationExpired": lambda p: (
        f"mentor {p['mentor_id']} did not confirm in time: the nomination lapsed"),
    "MenteeInvited": lambda p: (
        f"mentee {p['mentee_id']} invited by {p['channel']}, answer due {p['expires_at']}"),
    "MenteeConsentGiven": lambda p: (
        f"mentee {p['mentee_id']} gave consent by {p['channel']} (entered by {p['recorded_by']})"),
    "MenteeDeclined": lambda p: (
        f"mentee {p['mentee_id']} declined by {p['channel']} (entered by {p['recorded_by']})"),
    "InvitationExpired": lambda p: f"invitation to mentee {p['mentee_id']} expired unanswered",
    "CurriculumAgreed": lambda p: (
        f"curriculum agreed: {_list(p['topics'])}; {p['objectives_count']} objective(s)"),
    "TrainingModuleCompleted": lambda p: (
        f"mentor {p['mentor_id']} completed training module {p['module']}"),
    "MenteeOnboarded": lambda p: f"mentee {p['mentee_id']} onboarded",
    "MentorSignedOff": lambda p: (
        f"mentor {p['mentor_id']} signed off as ready by {p['signed_off_by']}"),
    "SessionProposed": lambda p: (
        f"session {p['session_no']} proposed for {p['starts_at']} ({p['duration_minutes']} min, "
        f"{p['format']}): {_list(p['topics'])}"),
    "SessionConfirmed": lambda p: f"session {p['session_no']} confirmed",
    "SessionRescheduled": lambda p: (
        f"session {p['session_no']} moved from {p['previous_starts_at']} to {p['starts_at']}"),
    "SessionCancelled": lambda p: (
        f"session {p['session_no']} cancelled by the {p['cancelled_by']} ({p['reason']})"),
    "SessionHeld": lambda p: f"session {p['session_no']} held: {_list(p['topics_covered'])}",
    "SessionMissed": lambda p: f"session {p['session_no']} missed (absent: {p['absent']})",
    "FeedbackGiven": lambda p: (
        f"{p['by_role']} rated session {p['session_no']} {p['rating']}/5, "
        f"engaging: {_yes(p['engaging'])}"),
    "FinalEvaluationGiven": lambda p: (
        f"{p['by_role']} gave a final evaluation of {p['rating']}/5, "
        f"would recommend: {_yes(p['would_recommend'])}"),
    "PairNudged": lambda p: f"nudged: idle in {p['stage']} since {p['idle_since']}",
    "PairFlaggedAtRisk": lambda p: f"flagged at risk: idle in {p['stage']} since {p['idle_since']}",
    "EscalatedToHr": lambda p: f"escalated to HR during {p['stage']} ({p['reason']})",
    "PairBackOnTrack": lambda p: f"back on track during {p['stage']}",
    "PairLapsed": lambda p: f"closed as lapsed: idle in {p['stage']} since {p['idle_since']}",
    "PairPaused": lambda p: f"paused during {p['stage']} by {p['paused_by']} ({p['reason']})",
    "PairResumed": lambda p: f"resumed by {p['resumed_by']} after {p['paused_days']} day(s)",
    "PairWithdrawn": lambda p: (
        f"withdrawn by {p['withdrawn_by']} ({p['role']}) during {p['stage']} ({p['reason']})"),
    "MentorReplaced": lambda p: (
        f"mentor {p['previous_mentor_id']} replaced by {p['new_mentor_id']} by "
        f"{p['replaced_by']} ({p['reason']})"),
    "PairExtended": lambda p: (
        f"extended by {p['additional_sessions']} session(s) by {p['extended_by']}"),
    "FinalEvaluationWindowClosed": lambda p: (
        "final evaluation window closed; given by: " + (", ".join(p["evaluations_from"]) or "nobody")),
    "NotificationSent": lambda p: (
        f"{p['kind']}"
        + (f" for session {p['session_no']}" if p.get("session_no") is not None else "")
        + f" sent to {p['recipient_id']}"
        + (f" ({p['recipient_role']})" if p.get("recipient_role") else "")
        + f" by {p['channel']}"),
    "NotificationFailed": lambda p: (
        f"{p['kind']} could not be delivered to {p['recipient_id']} ({p['reason']})"),
    "NotificationSkipped": lambda p: (
        f"{p['kind']}"
        + (f" for session {p['session_no']}" if p.get("session_no") is not None else "")
        + f" not sent to {p['recipient_id']} ({p['reason']})"),
    "FollowUpSent": lambda p: f"follow-up sent {p['days_after_end']} days after the end",
    "FollowUpAnswered": lambda p: (
        f"{p['by_role']} answered the {p['days_after_end']}-day follow-up, still using what was "
        f"learnt: {_yes(p['still_using'])}"),
    "PairCompleted": lambda p: f"completed with {p['sessions_held']} session(s) held",
    "ProgrammeOpened": lambda p: (
        f"programme {p['programme_id']} opened: {len(p['topics'])} topic(s), sessions end {p['sessions_end']}"),
    "MentorsNominated": lambda p: (
        f"mentor(s) nominated by {p['nominated_by']}: {_list([m['employee_id'] for m in p['mentors']])}"),
    "MentorConfirmedForProgramme": lambda p: f"mentor {p['mentor_id']} confirmed their motivation",
    "SeniorEnrolled": lambda p: (
        f"senior {p['senior']['employee_id']} enrolled of their own will by {p['channel']} "
        f"({p['requested_on']}; entered by {p['entered_by']})"),
    "ParticipantWithdrew": lambda p: f"{p['role']} {p['employee_id']} withdrew from the programme ({p['reason']})",
    "MatchesSuggested": lambda p: (
        f"matching suggested {len(p['pairs'])} pair(s), {len(p['unmatched'])} left out"),
    "MatchesAccepted": lambda p: f"{len(p['pairs'])} pair(s) accepted by {p['accepted_by']}",
    "PairsStarted": lambda p: f"{len(p['started'])} pair(s) started, {len(p['not_started'])} not",
    "GroupSessionScheduled": lambda p: (
        f"collective session {p['session_no']} on {p['topic']} set for {p['starts_at']} "
        f"({p['duration_minutes']} min), led by {_list(p['leaders'])}, {len(p['pairs'])} pair(s) invited"),
    "GroupSessionInvitationsSent": lambda p: (
        f"{p['kind']} for collective session {p['session_no']} sent to {len(p['sent_to'])} people"
        + (f", not reached: {_list(p['not_reached'])}" if p.get("not_reached") else "")),
    # A count, not the names: this line shows in the trail of every pair that attended.
    "GroupSessionHeld": lambda p: f"collective session {p['session_no']} held: {len(p['attended'])} attended",
    "GroupSessionCancelled": lambda p: f"collective session {p['session_no']} cancelled ({p['reason']})",
    "GroupSessionFeedbackGiven": lambda p: (
        f"{p['employee_id']} rated collective session {p['session_no']} {p['rating']}/5"),
    "PairsExtended": lambda p: f"{len(p['pair_workflow_ids'])} pair(s) kept past the sessions' end",
    "ProgrammeSessionsEnded": lambda p: (
        f"sessions ended ({p['policy']}): {len(p['cancelled'])} pair(s) wound down, {len(p['kept'])} go on"),
    "ProgrammeDigestSent": lambda p: f"weekly digest sent to {_list(p['recipients'])}",
    "ProgrammeClosed": lambda p: (
        f"programme closed: {p['report']['pairs_started']} pair(s), "
        f"{p['report']['reached'].get('completed', 0)} completed"),
}
