"""The facts of one pair folded from its events: stage, consent, sessions, ratings, deadlines.

Pure (no I/O, no clock). The pair overview and the programme funnel keep these facts in their
rows; the as-of audit query folds a pair's raw stream up to a moment. The stage is the one the
recorded facts call for, read the way the pair's workflow reads them (the lifecycle in the README).
Events carry payloads as plain dicts here (already upcast by the store): folding a million events
through pydantic models would cost more than the rest of the projection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from events import lifecycle
from events.lifecycle import DEFAULT_WAITS, Deadline, SessionClock, Stage

# The stages as the read models store them (text), in lifecycle order, then the ways a pair ends.
AWAITING_MOTIVATION = Stage.AWAITING_MOTIVATION.value
MENTEE_INVITED = Stage.MENTEE_INVITED.value
PREPARATION = Stage.PREPARATION.value
SESSIONS = Stage.SESSIONS.value
FINAL_EVALUATION = Stage.FINAL_EVALUATION.value
FOLLOW_UP = Stage.FOLLOW_UP.value
LIVE_STAGES = tuple(stage.value for stage in lifecycle.LIVE_STAGES)
CLOSED_STAGES = tuple(stage.value for stage in lifecycle.CLOSED_STAGES)
STAGES = LIVE_STAGES + CLOSED_STAGES
ENDINGS = {event_type: (stage.value, outcome) for event_type, (stage, outcome) in lifecycle.ENDINGS.items()}
OPEN_SESSION = lifecycle.OPEN_SESSION
SYSTEM_ACTOR = "system"


class PairFoldError(ValueError):
    """The pair's events contradict each other (an event the projection cannot apply)."""


@dataclass(slots=True)
class SessionFacts:
    status: str
    starts_at: datetime
    reminder_handled: bool = False  # its reminder was sent, failed or skipped: that timer is over


@dataclass(slots=True)
class PairFacts:
    pair_id: str
    programme_id: str
    mentor_id: str
    mentee_id: str
    nominated_by: str
    nominated_at: datetime
    sessions_planned: int
    policy: dict[str, str]
    stage: str = AWAITING_MOTIVATION
    stage_since: datetime | None = None
    clock_start: datetime | None = None  # the stage's timers count from here; pauses push it on
    timers_fired: list[str] = field(default_factory=list)  # the stage's timers the log shows acted on
    mentor_motivated: bool = False
    mentee_invited: bool = False
    invitation_expires_at: datetime | None = None
    consent_given: bool = False
    curriculum_agreed: bool = False
    signed_off: bool = False
    mentee_onboarded: bool = False
    sessions: dict[int, SessionFacts] = field(default_factory=dict)
    rating_sum: int = 0
    rating_count: int = 0
    final_evaluations: list[str] = field(default_factory=list)
    evaluation_window_closed: bool = False
    follow_ups_sent: list[int] = field(default_factory=list)
    at_risk: bool = False
    paused_since: datetime | None = None
    outcome: str | None = None
    ended_at: datetime | None = None
    last_activity_at: datetime | None = None

    # --- derived ------------------------------------------------------------------------------

    @property
    def sessions_held(self) -> int:
        return sum(1 for s in self.sessions.values() if s.status == "held")

    @property
    def open_sessions(self) -> list[tuple[int, SessionFacts]]:
        return sorted(((n, s) for n, s in self.sessions.items() if s.status in OPEN_SESSION),
                      key=lambda item: item[1].starts_at)

    @property
    def average_rating(self) -> float | None:
        return round(self.rating_sum / self.rating_count, 2) if self.rating_count else None

    def wait(self, name: str) -> timedelta:
        """One of the policy's waits as the nomination recorded it (the default if it did not)."""
        return parse_duration(self.policy.get(name, "")) or parse_duration(DEFAULT_WAITS[name]) or timedelta(0)

    # --- storage: the facts as JSON, kept in the read models' `facts` column --------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "pair_id": self.pair_id, "programme_id": self.programme_id,
            "mentor_id": self.mentor_id, "mentee_id": self.mentee_id,
            "nominated_by": self.nominated_by, "nominated_at": _iso(self.nominated_at),
            "sessions_planned": self.sessions_planned, "policy": self.policy,
            "stage": self.stage, "stage_since": _iso(self.stage_since),
            "clock_start": _iso(self.clock_start), "timers_fired": self.timers_fired,
            "mentor_motivated": self.mentor_motivated, "mentee_invited": self.mentee_invited,
            "invitation_expires_at": _iso(self.invitation_expires_at),
            "consent_given": self.consent_given, "curriculum_agreed": self.curriculum_agreed,
            "signed_off": self.signed_off, "mentee_onboarded": self.mentee_onboarded,
            "sessions": {str(n): {"status": s.status, "starts_at": _iso(s.starts_at),
                                  "reminder_handled": s.reminder_handled}
                         for n, s in self.sessions.items()},
            "rating_sum": self.rating_sum, "rating_count": self.rating_count,
            "final_evaluations": self.final_evaluations,
            "evaluation_window_closed": self.evaluation_window_closed,
            "follow_ups_sent": self.follow_ups_sent,
            "at_risk": self.at_risk, "paused_since": _iso(self.paused_since),
            "outcome": self.outcome, "ended_at": _iso(self.ended_at),
            "last_activity_at": _iso(self.last_activity_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairFacts:
        values = dict(data)
        for key in ("nominated_at", "stage_since", "clock_start", "invitation_expires_at",
                    "paused_since", "ended_at", "last_activity_at"):
            values[key] = _time(values.get(key))
        values["sessions"] = {int(n): SessionFacts(s["status"], _required_time(s["starts_at"]),
                                                   bool(s.get("reminder_handled", False)))
                              for n, s in data.get("sessions", {}).items()}
        values["timers_fired"] = list(data.get("timers_fired", []))
        values["final_evaluations"] = list(data.get("final_evaluations", []))
        values["follow_ups_sent"] = list(data.get("follow_ups_sent", []))
        return cls(**values)


def fold(facts: PairFacts | None, pair_id: str, event_type: str, payload: dict[str, Any],
         at: datetime, actor: str) -> PairFacts | None:
    """The pair's facts after one more event; None while the pair is unknown and stays so.

    Unknown event types change nothing (a newer writer may know more types than this reader).
    """
    if event_type == "PairNominated":
        if facts is not None:
            raise PairFoldError(f"pair {pair_id} is nominated twice")
        facts = PairFacts(
            pair_id=payload["pair_id"], programme_id=payload["programme_id"],
            mentor_id=payload["mentor_id"], mentee_id=payload["mentee_id"],
            nominated_by=payload["nominated_by"], nominated_at=at,
            sessions_planned=int(payload["sessions_planned"]), policy=dict(payload.get("policy", {})),
            stage_since=at, clock_start=at, last_activity_at=at,
        )
        facts.stage = derive_stage(facts)
        return facts
    if facts is None:
        if event_type in _HANDLERS or event_type in ENDINGS:
            raise PairFoldError(f"{event_type} for pair {pair_id} before its nomination")
        return None

    if facts.outcome is None and facts.clock_start is not None \
            and lifecycle.restarts_idle_clock(facts.stage, facts.paused_since is not None, event_type):
        facts.clock_start, facts.timers_fired = at, []
    handler = _HANDLERS.get(event_type)
    if handler is not None:
        handler(facts, payload, at)
    ending = ENDINGS.get(event_type)
    if ending is not None and facts.outcome is None:
        facts.stage, facts.outcome = ending
        facts.ended_at, facts.stage_since = at, at
        facts.at_risk, facts.paused_since = False, None
    if actor != SYSTEM_ACTOR and (handler is not None or ending is not None):
        facts.last_activity_at = at
    if facts.outcome is None:
        _note_timer_acted_on(facts, event_type, payload)
        stage = derive_stage(facts)
        if stage != facts.stage:
            facts.stage, facts.stage_since = stage, at
            facts.timers_fired = lifecycle.fired_on_entering(Stage(stage), len(facts.follow_ups_sent))
            facts.clock_start = lifecycle.clock_on_entering(Stage(stage), facts.clock_start or at,
                                                            facts.paused_since, at)
    return facts


def _note_timer_acted_on(facts: PairFacts, event_type: str, payload: dict[str, Any]) -> None:
    fired = lifecycle.timer_acted_on(event_type, kind=payload.get("kind"), session_no=payload.get("session_no"),
                                     stage_then=payload.get("stage"), follow_ups_sent=len(facts.follow_ups_sent))
    if fired == "session_reminder":
        session = facts.sessions.get(int(payload["session_no"]))
        if session is not None:
            session.reminder_handled = True
    elif fired is not None and fired not in facts.timers_fired:
        facts.timers_fired.append(fired)


def derive_stage(facts: PairFacts) -> str:
    """The stage the recorded facts call for (the lifecycle's rule). The read models close a pair
    only on its recorded ending, so they stay in `follow_up` until `PairCompleted` is recorded."""
    if facts.outcome is not None:
        return facts.stage
    held = open_count = 0
    for session in facts.sessions.values():  # one pass: this runs for every event of a rebuild
        if session.status == "held":
            held += 1
        elif session.status in OPEN_SESSION:
            open_count += 1
    return lifecycle.stage_called_for(
        mentor_motivated=facts.mentor_motivated, consent_given=facts.consent_given,
        prepared=facts.signed_off and facts.mentee_onboarded, sessions_planned=facts.sessions_planned,
        sessions_held=held, sessions_open=open_count,
        evaluation_closed=lifecycle.evaluation_over(facts.final_evaluations, facts.evaluation_window_closed,
                                                    len(facts.follow_ups_sent)),
        follow_ups_closed=False).value


def next_deadline(facts: PairFacts) -> Deadline | None:
    """The pair's next deadline and what happens then, as its workflow counts it (the lifecycle's
    rule over the recorded facts and the recorded policy); None when closed or paused."""
    if facts.outcome is not None or facts.clock_start is None:
        return None
    return lifecycle.next_deadline(
        Stage(facts.stage), paused=facts.paused_since is not None, clock_start=facts.clock_start,
        wait=facts.wait, fired=facts.timers_fired,
        sessions=(SessionClock(n, s.status, s.starts_at, s.reminder_handled) for n, s in facts.sessions.items()))


# --- one handler per event type that changes the facts ---------------------------------------------

def _session(facts: PairFacts, payload: dict[str, Any]) -> SessionFacts:
    number = int(payload["session_no"])
    session = facts.sessions.get(number)
    if session is None:
        raise PairFoldError(f"session {number} of pair {facts.pair_id} was never proposed")
    return session


def _set(attribute: str, value: object):
    def handler(facts: PairFacts, _payload: dict[str, Any], _at: datetime) -> None:
        setattr(facts, attribute, value)
    return handler


def _status(status: str):
    def handler(facts: PairFacts, payload: dict[str, Any], _at: datetime) -> None:
        _session(facts, payload).status = status
    return handler


def _invited(facts: PairFacts, payload: dict[str, Any], _at: datetime) -> None:
    facts.mentee_invited = True
    facts.invitation_expires_at = _time(payload.get("expires_at"))


def _proposed(facts: PairFacts, payload: dict[str, Any], _at: datetime) -> None:
    facts.sessions[int(payload["session_no"])] = SessionFacts("proposed",
                                                              _required_time(payload["starts_at"]))


def _rescheduled(facts: PairFacts, payload: dict[str, Any], _at: datetime) -> None:
    session = _session(facts, payload)
    session.starts_at, session.reminder_handled = _required_time(payload["starts_at"]), False


def _feedback(facts: PairFacts, payload: dict[str, Any], _at: datetime) -> None:
    _session(facts, payload)
    facts.rating_sum += int(payload["rating"])
    facts.rating_count += 1


def _final_evaluation(facts: PairFacts, payload: dict[str, Any], _at: datetime) -> None:
    facts.final_evaluations.append(payload["by_role"])


def _paused(facts: PairFacts, _payload: dict[str, Any], at: datetime) -> None:
    facts.paused_since = at


def _resumed(facts: PairFacts, _payload: dict[str, Any], at: datetime) -> None:
    if facts.clock_start is not None:
        facts.clock_start = lifecycle.clock_after_resume(facts.clock_start, facts.paused_since, at)
    facts.paused_since = None


def _mentor_replaced(facts: PairFacts, payload: dict[str, Any], _at: datetime) -> None:
    # The newcomer confirms their own motivation and is prepared like the first mentor.
    facts.mentor_id = payload["new_mentor_id"]
    facts.mentor_motivated = facts.signed_off = False


def _extended(facts: PairFacts, payload: dict[str, Any], _at: datetime) -> None:
    facts.sessions_planned += int(payload["additional_sessions"])


def _follow_up(facts: PairFacts, payload: dict[str, Any], _at: datetime) -> None:
    facts.follow_ups_sent.append(int(payload["days_after_end"]))


_HANDLERS = {
    "MentorMotivationConfirmed": _set("mentor_motivated", True),
    "MenteeInvited": _invited,
    "MenteeConsentGiven": _set("consent_given", True),
    "CurriculumAgreed": _set("curriculum_agreed", True),
    "TrainingModuleCompleted": lambda *_: None,  # progress, no change of stage
    "MenteeOnboarded": _set("mentee_onboarded", True),
    "MentorSignedOff": _set("signed_off", True),
    "SessionProposed": _proposed,
    "SessionConfirmed": _status("confirmed"),
    "SessionRescheduled": _rescheduled,
    "SessionCancelled": _status("cancelled"),
    "SessionHeld": _status("held"),
    "SessionMissed": _status("missed"),
    "FeedbackGiven": _feedback,
    "FinalEvaluationGiven": _final_evaluation,
    "FinalEvaluationWindowClosed": _set("evaluation_window_closed", True),
    "PairFlaggedAtRisk": _set("at_risk", True),
    "PairBackOnTrack": _set("at_risk", False),
    "PairPaused": _paused,
    "PairResumed": _resumed,
    "MentorReplaced": _mentor_replaced,
    "PairExtended": _extended,
    "FollowUpSent": _follow_up,
    "FollowUpAnswered": lambda *_: None,
}


# --- small helpers --------------------------------------------------------------------------------

_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")


@lru_cache(maxsize=1024)  # asked for every wait of every pair whose row a batch writes
def parse_duration(text: str) -> timedelta | None:
    """An ISO 8601 duration of weeks to seconds (what the nomination's policy records)."""
    match = _DURATION.fullmatch(text.strip().upper())
    if not match or not any(match.groups()):
        return None
    weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _required_time(value: str | datetime | None) -> datetime:
    """A time the facts cannot do without (a session's start)."""
    moment = _time(value)
    if moment is None:
        raise PairFoldError("a session has no start time")
    return moment
