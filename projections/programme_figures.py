"""A programme's figures from the log: its own stream and the streams of the pairs it started.

Pure (no I/O, no clock): the `programme_figures` activity reads the streams and calls `figures`;
the CLI does the same for a programme still open. Each pair is folded by `pair_fold`, the same
fold the read models use, so a stage here is the stage the audit trail and the funnel show.
Ids and counts only: the figures go to the workflow's current details, the HR digest and the
close report, all of which more people read than the pairs' own trails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from events.base import RecordedEvent
from events.programme import ProgrammeFigures
from projections.base import actor_of, occurred_at
from projections.pair_fold import (
    AWAITING_MOTIVATION,
    CLOSED_STAGES,
    FINAL_EVALUATION,
    FOLLOW_UP,
    MENTEE_INVITED,
    PREPARATION,
    SESSIONS,
    PairFacts,
    PairFoldError,
    fold,
)

# The funnel's steps, in order: a pair "reached" a step once the facts for it are recorded.
FUNNEL = ("nominated", "mentor_motivated", "consented", "prepared", "first_session_held", "completed")
CONSENT = ("invited", "consented", "declined", "expired", "awaiting", "closed_unanswered")
# Pairs that ended without completing, once their senior had consented: the programme lost them.
ABANDONED = ("withdrawn", "lapsed", "cancelled", "ended_in_temporal")


def figures(programme_events: Sequence[RecordedEvent], pair_streams: Mapping[str, Sequence[RecordedEvent]],
            as_of: datetime, *, ended_unrecorded: Collection[str] = ()) -> ProgrammeFigures:
    """`ended_unrecorded`: pairs whose workflow ended before recording anything (cancelled or
    terminated while starting, a start input refused): counted as ended, so they cannot hold the
    programme open for ever."""
    result = ProgrammeFigures(as_of=as_of)
    wound_down = _programme_side(result, programme_events)
    pairs: dict[str, PairFacts | None] = {}
    unreadable: list[str] = []
    for stream, events in pair_streams.items():
        try:
            pairs[stream] = _fold(stream, events)
        except PairFoldError:  # one pair's contradictory log must not stop the programme's figures
            unreadable.append(stream)
    folded = {stream: facts for stream, facts in pairs.items() if facts is not None}
    result.pairs_started = len(pair_streams)
    stage_of = {stream: facts.stage if facts else "starting" for stream, facts in pairs.items()}
    stage_of.update({stream: "ended" for stream, facts in pairs.items() if facts is None and stream in ended_unrecorded})
    stage_of.update(dict.fromkeys(unreadable, "unreadable"))
    result.stage_of = stage_of
    result.pairs_per_stage = dict(Counter(stage_of.values()))
    outcomes = Counter(f.outcome for f in folded.values() if f.outcome)
    outcomes["ended_in_temporal"] += sum(1 for s, f in pairs.items() if f is None and s in ended_unrecorded)
    result.outcomes = {k: v for k, v in outcomes.items() if v}
    result.at_risk = sorted(stream for stream, f in folded.items() if f.at_risk and f.outcome is None)
    _funnel_and_consent(result, folded, pair_streams)
    _sessions_and_ratings(result, folded, pair_streams, as_of)
    consented = result.consent.get("consented", 0)
    # Pairs the programme itself wound down at the sessions' end are not people giving up.
    result.wound_down = sum(1 for s, f in folded.items() if s in wound_down and f.outcome == "cancelled")
    result.abandoned = sum(1 for s, f in folded.items()
                           if f.consent_given and f.outcome in ABANDONED and s not in wound_down)
    result.abandonment_rate = round(result.abandoned / consented, 3) if consented else None
    result.mentors_recognised = sorted({f.mentor_id for f in folded.values() if f.outcome == "completed"})
    result.hr_next = _hr_next(result, folded)
    if unreadable:
        result.hr_next.insert(0, f"{len(unreadable)} pair log(s) cannot be folded (see `mentoring projections "
                                 f"status`): {', '.join(unreadable[:5])}")
    return result


def _fold(stream: str, events: Sequence[RecordedEvent]) -> PairFacts | None:
    facts: PairFacts | None = None
    pair_id = stream.removeprefix("pair-")
    for event in events:
        facts = fold(facts, pair_id, event.event_type, event.payload, occurred_at(event), actor_of(event))
    return facts


def _programme_side(result: ProgrammeFigures, events: Sequence[RecordedEvent]) -> set[str]:
    """The programme's own figures; returns the pairs it wound down at the sessions' end."""
    wound_down: set[str] = set()
    confirmed: set[str] = set()
    channels: Counter[str] = Counter()
    group_ratings: list[int] = []
    for event in events:
        payload: dict[str, Any] = event.payload
        match event.event_type:
            case "MentorsNominated":
                result.mentors_nominated += len(payload["mentors"])
            case "MentorConfirmedForProgramme":
                confirmed.add(payload["mentor_id"])
            case "SeniorEnrolled":
                result.seniors_enrolled += 1
                channels[payload["channel"]] += 1
            case "ParticipantWithdrew":
                result.withdrawn_from_programme += 1
            case "GroupSessionHeld":
                result.group_sessions_held += 1
                result.group_attendances += len(payload["attended"])
            case "GroupSessionFeedbackGiven":
                group_ratings.append(int(payload["rating"]))
            case "ProgrammeSessionsEnded":
                wound_down.update(payload["cancelled"])
    result.mentors_confirmed = len(confirmed)
    result.enrolled_by_channel = dict(channels)
    result.ratings["group_sessions_count"] = len(group_ratings)
    result.ratings["group_sessions_average"] = (round(sum(group_ratings) / len(group_ratings), 2)
                                                if group_ratings else None)
    return wound_down


def _funnel_and_consent(result: ProgrammeFigures, folded: Mapping[str, PairFacts],
                        streams: Mapping[str, Sequence[RecordedEvent]]) -> None:
    reached: Counter[str] = Counter()
    consent: Counter[str] = Counter()
    for stream, facts in folded.items():
        types = {e.event_type for e in streams[stream]}
        steps = {"nominated": True, "mentor_motivated": "MentorMotivationConfirmed" in types,
                 "consented": facts.consent_given, "prepared": "MentorSignedOff" in types and facts.mentee_onboarded,
                 "first_session_held": facts.sessions_held > 0 or "SessionHeld" in types,
                 "completed": facts.outcome == "completed"}
        reached.update(step for step, done in steps.items() if done)
        if facts.mentee_invited or "MenteeInvited" in types:
            consent["invited"] += 1
            if facts.consent_given:
                consent["consented"] += 1
            elif "MenteeDeclined" in types:
                consent["declined"] += 1
            elif "InvitationExpired" in types:
                consent["expired"] += 1
            elif facts.outcome is None:
                consent["awaiting"] += 1
            else:  # the pair ended (withdrawn, cancelled, lapsed) before the senior answered
                consent["closed_unanswered"] += 1
    result.reached = {step: reached.get(step, 0) for step in FUNNEL}
    result.consent = {key: consent.get(key, 0) for key in CONSENT}


def _sessions_and_ratings(result: ProgrammeFigures, folded: Mapping[str, PairFacts],
                          streams: Mapping[str, Sequence[RecordedEvent]], as_of: datetime) -> None:
    rating_sum = rating_count = 0
    answers: dict[str, Counter[str]] = {"first": Counter(), "second": Counter()}
    for stream, facts in folded.items():
        result.sessions_held += facts.sessions_held
        result.sessions_this_month += sum(
            1 for s in facts.sessions.values()
            if s.status == "held" and (s.starts_at.year, s.starts_at.month) == (as_of.year, as_of.month))
        rating_sum, rating_count = rating_sum + facts.rating_sum, rating_count + facts.rating_count
        sent_days: list[int] = []  # days after the end of each follow-up sent, in order
        for event in streams[stream]:
            if event.event_type == "SessionMissed":
                result.no_shows += 1
            elif event.event_type == "FollowUpSent":
                sent_days.append(int(event.payload["days_after_end"]))
            elif event.event_type == "FollowUpAnswered" and event.payload["by_role"] == "mentee":
                # Which follow-up: its number when recorded (newer pairs), else the first sent
                # that many days after the end (a late answer to the first stays the first's).
                days = int(event.payload["days_after_end"])
                number = event.payload.get("follow_up_no") or (sent_days.index(days) + 1 if days in sent_days else 1)
                which = "first" if number <= 1 else "second"
                answers[which]["yes" if event.payload["still_using"] else "no"] += 1
    result.ratings["sessions_count"] = rating_count
    result.ratings["sessions_sum"] = rating_sum  # for exact averages over programmes
    result.ratings["sessions_average"] = round(rating_sum / rating_count, 2) if rating_count else None
    result.still_using = {which: {"yes": c.get("yes", 0), "no": c.get("no", 0)} for which, c in answers.items()}


def _hr_next(result: ProgrammeFigures, folded: Mapping[str, PairFacts]) -> list[str]:
    """What HR must do now, most pressing first (ids only)."""
    todo: list[str] = []
    if result.at_risk:
        todo.append(f"{len(result.at_risk)} pair(s) at risk: talk to them ({', '.join(result.at_risk[:5])})")
    sign_off = sorted(s for s, f in folded.items()
                      if f.stage == PREPARATION and f.curriculum_agreed and not f.signed_off)
    if sign_off:
        todo.append(f"{len(sign_off)} mentor(s) to sign off as ready ({', '.join(sign_off[:5])})")
    waiting = {AWAITING_MOTIVATION: "mentor(s) to confirm their motivation",
               MENTEE_INVITED: "senior(s) to answer the invitation"}
    for stage, what in waiting.items():
        count = sum(1 for f in folded.values() if f.stage == stage)
        if count:
            todo.append(f"{count} {what} (reminders go out by themselves)")
    later = sum(1 for f in folded.values() if f.stage in (SESSIONS, FINAL_EVALUATION, FOLLOW_UP))
    if not todo and later:
        todo.append("nothing: the pairs go on by themselves")
    return todo


def all_closed(result: ProgrammeFigures) -> bool:
    """Every started pair has ended (completed or otherwise): the programme can close."""
    return sum(result.pairs_per_stage.get(stage, 0) for stage in CLOSED_STAGES) == result.pairs_started
