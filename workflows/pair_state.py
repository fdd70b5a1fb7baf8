"""The state of one pair and the pure decisions over it: no Temporal calls, no I/O, no clock.

The state is the fold of the pair's domain events (`apply`), plus the workflow's bookkeeping of
its own timers. It holds pseudonymous ids only, so it can be queried, shown in the UI and carried
across continue-as-new without personal data. `next_stage` and `next_timer` read the lifecycle
off the facts: the workflow enters the stage the facts call for and waits for the next deadline.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from events import pair as ev
from events.base import DomainEvent
from events.lifecycle import (
    CLOSED_STAGES,
    ENDINGS,
    SessionClock,
    clock_after_resume,
    clock_on_entering,
    evaluation_over,
    fired_on_entering,
    next_deadline,
    restarts_idle_clock,
    stage_called_for,
    timer_acted_on,
)
from events.lifecycle import STAGE_TIMERS as STAGE_TIMERS
from events.lifecycle import TIMER_LABELS as TIMER_LABELS
from events.lifecycle import Deadline as Timer
from events.lifecycle import Stage as Stage
from workflows import timezones
from workflows.inputs import AvailabilityWindow, PairInput
from workflows.policy import Policy

CLOSED = set(CLOSED_STAGES)
SessionStatus = Literal["proposed", "confirmed", "held", "cancelled", "missed"]
OPEN: set[str] = {"proposed", "confirmed"}


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class SessionState(_State):
    session_no: int
    starts_at: datetime
    duration_minutes: int
    format: str
    topics: list[str]
    status: SessionStatus = "proposed"
    sequence: int = Field(0, description="iCalendar SEQUENCE, bumped on each reschedule or cancel")
    reminder_sent: bool = Field(False, description="its reminder was handled: sent, or recorded as skipped")
    feedback_from: list[str] = Field(default_factory=list)

    @property
    def ends_at(self) -> datetime:
        return self.starts_at + timedelta(minutes=self.duration_minutes)


class Pause(_State):
    since: datetime
    by: str
    reason: str


class LastAction(_State):
    action: str
    by: str
    at: datetime


class PairState(_State):
    """Everything the workflow knows about the pair; returned by the `state` query.

    First where it stands and what can be done next (filled in for each query), then the facts,
    then the policy."""

    stage: Stage = Stage.NOMINATED
    waiting_for: str = Field("", description="what the pair waits for, in HR's words (filled in for the query)")
    next_deadline: datetime | None = Field(None, description="when the next timer fires (filled in for the query)")
    next_deadline_kind: str | None = Field(None, description="what happens then (filled in for the query)")
    next_actions: list[str] = Field(default_factory=list, description=(
        "the updates that move the pair on, each with a JSON example for this pair (filled in for the query)"))
    last_action: LastAction | None = Field(None, description="the last act a person recorded")

    pair_id: str
    stream_id: str
    programme_id: str
    mentor_id: str
    mentee_id: str
    hr_id: str
    hr_team: list[str] = Field(default_factory=list, description="other HR people who may act for the pair")
    hr_time_zone: str = Field("UTC", description="the nominating HR's zone: times HR reads are shown in it")
    mentee_time_zone: str
    availability: list[AvailabilityWindow]
    topics: list[str]
    training_modules: list[str]
    sessions_planned: int
    clock_start: datetime = Field(description="the current stage's timers count from here; moved on by pauses and, while preparing or holding sessions, by activity")
    timers_fired: list[str] = Field(default_factory=list, description="timers of the current stage already acted on")
    paused: Pause | None = None
    at_risk: bool = False
    version: int = Field(0, description="the event stream's version: the next append expects it")

    mentor_motivated: bool = False
    mentee_invited: bool = False
    invitation_expires_at: datetime | None = None
    consent_given: bool = False
    curriculum_topics: list[str] = Field(default_factory=list)
    curriculum_objectives: list[str] = Field(
        default_factory=list, description="no longer filled (kept so older runs' state still loads): "
        "the objectives are in private_notes")
    modules_done: list[str] = Field(default_factory=list)
    mentee_onboarded: bool = False
    signed_off: bool = False
    sessions: list[SessionState] = Field(default_factory=list)
    last_session_at: datetime | None = None
    final_evaluations: list[str] = Field(default_factory=list)
    evaluation_closed: bool = False
    follow_ups_sent: list[int] = Field(default_factory=list, description="days after the end, in order")
    follow_ups_numbered: bool = Field(False, description="answers name their follow-up by number")
    follow_up_answers: list[str] = Field(default_factory=list, description=(
        "'#<number>:<role>'; '<days>:<role>' in pairs whose follow-ups were not numbered"))
    follow_ups_closed: bool = False
    ended_at: datetime | None = None
    last_fact_at: datetime | None = Field(
        default=None, description="when the log recorded the latest fact: a new stage's clock starts here")
    signals_ignored: int = Field(0, description="signals that could not be read or did not fit, ignored")
    notices_retrying: int = Field(0, description=(
        "notices whose first attempts failed, being retried apart from the pair's other actions"))
    policy: Policy

    @classmethod
    def nominated(cls, pair: PairInput, now: datetime) -> PairState:
        return cls(
            pair_id=pair.pair_id, stream_id=ev.pair_stream(pair.pair_id),
            programme_id=pair.programme_id, mentor_id=pair.mentor.employee_id,
            mentee_id=pair.mentee.employee_id, hr_id=pair.nominated_by.employee_id,
            hr_team=list(pair.hr_team), hr_time_zone=pair.nominated_by.time_zone,
            mentee_time_zone=pair.mentee.time_zone, availability=list(pair.mentee.availability),
            topics=list(pair.topics), training_modules=list(pair.training_modules),
            sessions_planned=pair.sessions_planned, policy=pair.policy, clock_start=now,
        )

    # --- derived facts ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.stage in CLOSED

    @property
    def sessions_held(self) -> int:
        return sum(1 for s in self.sessions if s.status == "held")

    @property
    def open_sessions(self) -> list[SessionState]:
        return [s for s in self.sessions if s.status in OPEN]

    @property
    def sessions_to_schedule(self) -> int:
        return self.sessions_planned - self.sessions_held - len(self.open_sessions)

    @property
    def modules_missing(self) -> list[str]:
        return [m for m in self.training_modules if m not in self.modules_done]

    @property
    def prepared(self) -> bool:
        return self.signed_off and self.mentee_onboarded

    def session(self, number: int) -> SessionState | None:
        return next((s for s in self.sessions if s.session_no == number), None)

    def require_session(self, number: int | None) -> SessionState:
        """A session the workflow itself recorded: its absence is a bug, not a user's mistake."""
        session = self.session(number) if number is not None else None
        if session is None:
            raise KeyError(f"session {number} is not in the state")
        return session

    def person_of(self, role: str) -> str:
        return {"mentor": self.mentor_id, "mentee": self.mentee_id, "hr": self.hr_id}[role]


# --- folding events into the state ---------------------------------------------------------------

def is_activity(state: PairState, event: DomainEvent) -> bool:
    """Progress that restarts the idle clock of preparation and of the sessions (the lifecycle's rule)."""
    return restarts_idle_clock(state.stage, state.paused is not None, event.event_type)


def apply(state: PairState, event: DomainEvent, at: datetime) -> None:
    """Fold one recorded event into the state (in place)."""
    if is_activity(state, event):
        state.clock_start, state.timers_fired = at, []
    match event:
        case ev.MentorMotivationConfirmed():
            state.mentor_motivated = True
        case ev.MenteeInvited(expires_at=expires_at):
            state.mentee_invited, state.invitation_expires_at = True, expires_at
        case ev.MenteeConsentGiven():
            state.consent_given = True
        case ev.CurriculumAgreed(topics=topics):
            state.curriculum_topics = list(topics)  # the objectives stay in private_notes
        case ev.TrainingModuleCompleted(module=module):
            state.modules_done.append(module)
        case ev.MenteeOnboarded():
            state.mentee_onboarded = True
        case ev.MentorSignedOff():
            state.signed_off = True
        case ev.SessionProposed():
            state.sessions.append(SessionState(
                session_no=event.session_no, starts_at=event.starts_at,
                duration_minutes=event.duration_minutes, format=event.format, topics=list(event.topics)))
        case ev.SessionConfirmed(session_no=n):
            _session(state, n).status = "confirmed"
        case ev.SessionRescheduled(session_no=n, starts_at=starts_at):
            session = _session(state, n)
            session.starts_at, session.reminder_sent = starts_at, False
            session.sequence += 1
        case ev.SessionCancelled(session_no=n):
            session = _session(state, n)
            session.status = "cancelled"
            session.sequence += 1
        case ev.SessionHeld(session_no=n):
            _session(state, n).status = "held"
            state.last_session_at = at
        case ev.SessionMissed(session_no=n):
            _session(state, n).status = "missed"
        case ev.NotificationSkipped(kind="session_reminder", session_no=int(n)):
            _session(state, n).reminder_sent = True  # handled: it will never be sent
        case ev.FeedbackGiven(session_no=n, by_role=role):
            _session(state, n).feedback_from.append(role)
        case ev.FinalEvaluationGiven(by_role=role):
            state.final_evaluations.append(role)
            if {"mentor", "mentee"} <= set(state.final_evaluations):
                state.evaluation_closed = True
        case ev.FinalEvaluationWindowClosed():
            state.evaluation_closed = True
        case ev.PairFlaggedAtRisk():
            state.at_risk = True
        case ev.PairBackOnTrack():
            state.at_risk = False
        case ev.PairPaused(paused_by=by, reason=reason):
            state.paused = Pause(since=at, by=by, reason=reason)
        case ev.PairResumed():
            state.clock_start = clock_after_resume(state.clock_start, _paused_since(state), at)
            state.paused = None
        case ev.MentorReplaced(new_mentor_id=new_mentor):
            # The newcomer is asked for their own motivation and prepared like the first mentor.
            state.mentor_id = new_mentor
            state.mentor_motivated = state.signed_off = False
            state.modules_done = []
        case ev.PairExtended(additional_sessions=more):
            state.sessions_planned += more
        case ev.FollowUpSent(days_after_end=days, follow_up_no=number):
            state.follow_ups_sent.append(days)
            state.follow_ups_numbered = number is not None
        case ev.FollowUpAnswered(days_after_end=days, by_role=role, follow_up_no=number):
            state.follow_up_answers.append(answer_key(days, number, role))
            if len(state.follow_ups_sent) == 2:
                last = [answer_key(state.follow_ups_sent[-1], number and 2, r) for r in ("mentor", "mentee")]
                if set(last) <= set(state.follow_up_answers):
                    state.follow_ups_closed = True
    ending = ENDINGS.get(event.event_type)
    if ending is not None:
        _close(state, ending[0], at)


def enter_stage(state: PairState, stage: Stage, now: datetime) -> None:
    """The stage's bookkeeping: its timers count from now (from the pause, when entered paused;
    follow-ups count from the last session), none of them fired yet."""
    state.clock_start = clock_on_entering(stage, state.clock_start, _paused_since(state), now)
    state.stage, state.timers_fired = stage, fired_on_entering(stage, len(state.follow_ups_sent))


def catch_up(state: PairState, event: DomainEvent, at: datetime) -> None:
    """Fold a fact that another run of the pair's workflow recorded, with the bookkeeping that run
    did around it (a Reset brings a run back to an earlier point; the log kept what the replaced
    run did after it). What its stages and timers did shows in the facts: a stage is entered as
    soon as the facts call for it and something more was recorded; a timer was acted on when its
    notice or its fact is in the log."""
    while not state.closed and (stage := next_stage(state)) is not state.stage:
        enter_stage(state, stage, state.last_fact_at or at)
    apply(state, event, at)
    state.last_fact_at = at
    note_timer_handled(state, event)


def note_timer_handled(state: PairState, event: DomainEvent) -> None:
    """The timer a recorded fact shows was acted on (its reminder sent, its fact recorded)."""
    fired = timer_acted_on(event.event_type, kind=getattr(event, "kind", None),
                           session_no=getattr(event, "session_no", None),
                           stage_then=getattr(event, "stage", None), follow_ups_sent=len(state.follow_ups_sent))
    if fired == "session_reminder":
        session = state.session(getattr(event, "session_no", None) or 0)
        if session is not None:
            session.reminder_sent = True
    elif fired is not None and fired not in state.timers_fired:
        state.timers_fired.append(fired)


def answer_key(days: int, number: int | None, role: str) -> str:
    """How an answer is kept: by the follow-up's number, or (older pairs) its days after the end."""
    return f"#{number}:{role}" if number else f"{days}:{role}"


def _session(state: PairState, number: int) -> SessionState:
    session = state.session(number)
    if session is None:
        raise KeyError(f"session {number} is not in the state")
    return session


def _paused_since(state: PairState) -> datetime | None:
    return state.paused.since if state.paused is not None else None


def _close(state: PairState, stage: Stage, at: datetime) -> None:
    state.stage, state.ended_at, state.paused = stage, at, None


# --- what comes next ------------------------------------------------------------------------------

def next_stage(state: PairState) -> Stage:
    """The stage the facts call for (the workflow enters it, doing the stage's opening step)."""
    if state.closed:
        return state.stage
    return stage_called_for(
        mentor_motivated=state.mentor_motivated, consent_given=state.consent_given, prepared=state.prepared,
        sessions_planned=state.sessions_planned, sessions_held=state.sessions_held,
        sessions_open=len(state.open_sessions),
        evaluation_closed=evaluation_over(state.final_evaluations, state.evaluation_closed,
                                          len(state.follow_ups_sent)),
        follow_ups_closed=state.follow_ups_closed)


def next_timer(state: PairState, now: datetime | None = None) -> Timer | None:
    """The earliest deadline not yet acted on; None when paused or closed (no timer counts).

    A pure function of the facts. `now` is only for pairs that started before that rule: they
    dropped the reminders of sessions already begun, and must replay as they ran.
    """
    return next_deadline(
        state.stage, paused=state.paused is not None, clock_start=state.clock_start, wait=state.policy.duration,
        fired=state.timers_fired, now=now,
        sessions=(SessionClock(s.session_no, s.status, s.starts_at, s.reminder_sent) for s in state.sessions))


def waiting_for(state: PairState) -> str:
    """What the pair waits for, in HR's words (shown in the UI's current details)."""
    if state.paused is not None:
        return "resume (the pair is paused; its timers are stopped)"
    match state.stage:
        case Stage.AWAITING_MOTIVATION:
            return "the mentor's confirmation of motivation"
        case Stage.MENTEE_INVITED:
            return "the mentee's answer to the invitation (consent)"
        case Stage.PREPARATION:
            pending = []
            if not state.curriculum_topics:
                pending.append("curriculum agreed")
            if state.modules_missing:
                pending.append("training modules: " + ", ".join(state.modules_missing))
            if not state.signed_off:
                pending.append("HR sign-off of the mentor")
            if not state.mentee_onboarded:
                pending.append("mentee onboarding")
            return "; ".join(pending)
        case Stage.SESSIONS:
            open_ = ", ".join(f"session {s.session_no} {s.status} for "
                              f"{timezones.shown(s.starts_at, state.mentee_time_zone)}"
                              for s in state.open_sessions)
            todo = f"{state.sessions_to_schedule} session(s) to propose" if state.sessions_to_schedule else ""
            return "; ".join(x for x in (open_, todo) if x) or "session outcomes"
        case Stage.FINAL_EVALUATION:
            missing = [r for r in ("mentor", "mentee") if r not in state.final_evaluations]
            return "final evaluation from " + " and ".join(missing)
        case Stage.FOLLOW_UP:
            return "the follow-ups and their answers"
    return "nothing (the pair has ended)"


def current_details(state: PairState, timer: Timer | None) -> str:
    """The UI's current details (Markdown): where the pair stands, until when, what was done last
    and what can be done next, ready to paste into Send an Update. Times in HR's zone; no names."""
    stage = state.stage.value + (" (paused)" if state.paused is not None else "")
    zone = state.hr_time_zone
    lines = [f"**Stage:** {stage}", f"**Waiting for:** {waiting_for(state)}"]
    if timer is not None:
        lines.append(f"**Next deadline:** {timezones.shown(timer.due, zone)} ({TIMER_LABELS[timer.kind]})")
    if state.last_action is not None:
        last = state.last_action
        lines.append(f"**Last action:** {last.action} by {last.by}, {timezones.shown(last.at, zone)}")
    lines.append(f"**Sessions held:** {state.sessions_held} of {state.sessions_planned}")
    if state.at_risk:
        lines.append("**At risk:** escalated to HR")
    if state.notices_retrying:
        lines.append(f"**Notices being retried:** {state.notices_retrying} (the mail server did not take "
                     "them yet; each is recorded as sent or failed when its attempts end)")
    if state.signals_ignored:
        lines.append(f"**Signals ignored:** {state.signals_ignored} (could not be read or did not fit; "
                     "the worker log says why, without their content)")
    actions = next_actions(state)
    if actions:
        lines.append("**Next actions** (Send an Update: the name, then the JSON):")
        lines += [f"- `{action}`" for action in actions]
    return "\n".join(lines)


def next_actions(state: PairState) -> list[str]:
    """The updates that move the pair on now, each as `name {json}` with this pair's ids."""
    if state.closed:
        return []
    mentor, mentee, hr = state.mentor_id, state.mentee_id, state.hr_id
    if state.paused is not None:
        return [_example("resume", recorded_by=hr)]
    actions: list[str] = []
    match state.stage:
        case Stage.AWAITING_MOTIVATION:
            actions += [_example("confirm_motivation", recorded_by=mentor),
                        _example("decline_mentoring", recorded_by=mentor, reason="no_time")]
        case Stage.MENTEE_INVITED:
            actions += [_example("accept_invitation", recorded_by=mentee, channel="email"),
                        _example("decline_invitation", recorded_by=mentee, channel="email")]
        case Stage.PREPARATION:
            if not state.curriculum_topics:
                actions.append(_example("agree_curriculum", recorded_by=mentor, topics=state.topics[:2],
                                        objectives=["an objective the senior will reach"]))
            if state.modules_missing:
                actions.append(_example("complete_training_module", recorded_by=mentor,
                                        module=state.modules_missing[0]))
            if not state.mentee_onboarded:
                actions.append(_example("onboard_mentee", recorded_by=hr))
            if state.curriculum_topics and not state.modules_missing and not state.signed_off:
                actions.append(_example("sign_off_mentor", recorded_by=hr))
        case Stage.SESSIONS:
            for session in state.open_sessions:
                if session.status == "proposed":
                    actions.append(_example("confirm_session", recorded_by=hr, session_no=session.session_no))
                else:
                    actions.append(_example("record_session_held", recorded_by=hr, session_no=session.session_no,
                                            topics_covered=session.topics))
            if state.sessions_to_schedule > 0 and (slot := _next_slot(state)) is not None:
                actions.append(_example("propose_session", recorded_by=hr, starts_at=slot, duration_minutes=60,
                                        topics=state.topics[:1]))
        case Stage.FINAL_EVALUATION:
            for role, person in (("mentor", mentor), ("mentee", mentee)):
                if role not in state.final_evaluations:
                    actions.append(_example("give_final_evaluation", recorded_by=person, by_role=role, rating=5,
                                            would_recommend=True))
    for session in state.sessions:
        for role, person in (("mentor", mentor), ("mentee", mentee)):
            if session.status == "held" and role not in session.feedback_from and len(actions) < 6:
                actions.append(_example("give_feedback", recorded_by=person, session_no=session.session_no,
                                        by_role=role, rating=5, engaging=True))
    return actions + [_example("pause", recorded_by=hr, reason="agenda")]


def _example(update: str, **payload: object) -> str:
    return f"{update} {json.dumps(payload, ensure_ascii=False)}"


def _next_slot(state: PairState) -> str | None:
    """The first start of an availability window a day after the latest fact, in the mentee's
    wall-clock time (as propose_session reads a time without offset)."""
    after = state.last_fact_at or state.clock_start
    local = timezones.to_local(after + timedelta(days=1), state.mentee_time_zone)
    for days in range(8):
        day = (local + timedelta(days=days)).date()
        for window in sorted(state.availability, key=lambda w: w.start):
            if window.weekday == f"{day:%A}".lower():
                return f"{day.isoformat()}T{window.start:%H:%M}"
    return None


class ActionResult(BaseModel):
    """What an update returns: where the pair stands after the action."""

    stage: str
    paused: bool
    waiting_for: str
    stream_version: int
    session_no: int | None = None
    next_actions: list[str] = Field(default_factory=list, description="what can be done next, with JSON examples")


class PairOutcome(BaseModel):
    """The workflow's result when the pair ends."""

    pair_id: str
    stage: str
    sessions_held: int
    stream_version: int
