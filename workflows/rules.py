"""The domain rules each human action must satisfy, as pure checks over the pair's state.

Update validators call these, so a rejected action writes nothing to the workflow's history nor to
the event log; handlers call them again under the log lock, because another action may have
changed the pair in between. Each check raises a named `PairError` whose message says which rule,
why, and what to do.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workflows import timezones
from workflows.errors import (
    OutsideAvailability,
    PairIsClosed,
    PairIsPaused,
    RuleViolation,
    UnknownSession,
    WrongStage,
    excerpt,
)
from workflows.inputs import (
    AgreeCurriculum,
    CancelSession,
    CompleteTrainingModule,
    ConfirmMotivation,
    ExtendPair,
    GiveFeedback,
    GiveFinalEvaluation,
    RecordNoShow,
    RecordSessionHeld,
    ReplaceMentor,
    RescheduleSession,
    SessionRef,
    WithdrawPair,
)
from workflows.pair_state import PairState, Pause, SessionState, Stage

MAX_SESSIONS = 24
_FMT = "%Y-%m-%d %H:%M"


def _date(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d}"


# --- every action --------------------------------------------------------------------------------

def require_open(state: PairState, action: str) -> None:
    if state.closed:
        when = f" on {_date(state.ended_at)}" if state.ended_at else ""
        raise PairIsClosed(
            f"{action} is not possible: the pair has ended ({state.stage.value}{when}). "
            "Nothing more can be recorded for it."
        )


def require_active(state: PairState, action: str) -> None:
    """Open and not paused: the actions that move the lifecycle forward."""
    require_open(state, action)
    if state.paused is not None:
        raise PairIsPaused(
            f"{action} is not possible while the pair is paused (since {_date(state.paused.since)}): "
            "resume it first with the update 'resume'."
        )


def require_stage(state: PairState, action: str, stages: set[Stage], when: str) -> None:
    require_active(state, action)
    if state.stage not in stages:
        raise WrongStage(
            f"{action} is not possible now: the pair is in stage '{state.stage.value}', and {when} "
            f"(stage {', '.join(repr(s.value) for s in sorted(stages))})."
        )


# --- 2. the mentor's motivation ------------------------------------------------------------------

def confirm_motivation(state: PairState, request: ConfirmMotivation) -> None:
    # Who confirms (the mentor themself) is workflows/authority.py, as for every act.
    require_stage(state, "confirm_motivation", {Stage.AWAITING_MOTIVATION},
                  "the mentor confirms their motivation while the pair awaits it")


def decline_mentoring(state: PairState) -> None:
    require_stage(state, "decline_mentoring", {Stage.AWAITING_MOTIVATION},
                  "the mentor can decline while the pair awaits their motivation (later, use 'withdraw')")


# --- 3. the senior's consent ---------------------------------------------------------------------

def answer_invitation(state: PairState, action: str) -> None:
    # Who answers (the senior, or HR on their behalf; never the mentor) is workflows/authority.py.
    require_stage(state, action, {Stage.MENTEE_INVITED},
                  "the mentee answers while the invitation is open")


# --- 4. preparation ------------------------------------------------------------------------------

_PREPARING = {Stage.PREPARATION}


def agree_curriculum(state: PairState, request: AgreeCurriculum) -> None:
    require_stage(state, "agree_curriculum", _PREPARING, "the curriculum is agreed during preparation")
    if state.signed_off:
        raise RuleViolation(
            "agree_curriculum is not possible: HR already signed the mentor off on this curriculum."
        )


def complete_training_module(state: PairState, request: CompleteTrainingModule) -> None:
    require_stage(state, "complete_training_module", _PREPARING,
                  "training modules are recorded during preparation")
    if request.module not in state.training_modules:
        raise RuleViolation(
            f"{excerpt(request.module)} is not one of this programme's training modules: "
            + ", ".join(state.training_modules) + "."
        )
    if request.module in state.modules_done:
        raise RuleViolation(f"training module '{request.module}' is already recorded as completed.")


def onboard_mentee(state: PairState) -> None:
    require_stage(state, "onboard_mentee", _PREPARING, "the mentee's onboarding is recorded during preparation")
    if state.mentee_onboarded:
        raise RuleViolation("the mentee's onboarding is already recorded.")


def sign_off_mentor(state: PairState) -> None:
    require_stage(state, "sign_off_mentor", _PREPARING, "HR signs the mentor off at the end of preparation")
    missing = []
    if not state.curriculum_topics:
        missing.append("the curriculum (agree_curriculum)")
    if state.modules_missing:
        missing.append("training modules " + ", ".join(state.modules_missing) + " (complete_training_module)")
    if missing:
        raise RuleViolation(
            "the mentor cannot be signed off yet (rule: define what the mentor will transmit and "
            "prepare them before any session): still missing " + " and ".join(missing) + "."
        )
    if state.signed_off:
        raise RuleViolation("the mentor is already signed off.")


# --- 5. sessions ---------------------------------------------------------------------------------

def session_start(state: PairState, starts_at: datetime) -> datetime:
    """A proposed start as UTC; a time without an offset is read in the mentee's time zone."""
    if starts_at.tzinfo is None:
        starts_at = timezones.localize(starts_at, state.mentee_time_zone)
    return starts_at.astimezone(UTC)


def check_availability(state: PairState, starts_at: datetime, minutes: int, now: datetime) -> None:
    """Rule: sessions fit the senior's agenda, inside their availability windows and time zone."""
    if starts_at <= now:
        raise RuleViolation(
            f"the session start {timezones.shown(starts_at, state.mentee_time_zone)} is in the past: "
            "propose a future time."
        )
    local = timezones.to_local(starts_at, state.mentee_time_zone)
    local_end = local + timedelta(minutes=minutes)
    weekday = f"{local:%A}".lower()
    for window in state.availability:
        if (window.weekday == weekday and local_end.date() == local.date()
                and window.start <= local.time().replace(tzinfo=None)
                and local_end.time().replace(tzinfo=None) <= window.end):
            return
    windows = ", ".join(w.label() for w in state.availability)
    raise OutsideAvailability(
        f"the session {local:%A %Y-%m-%d %H:%M}-{local_end:%H:%M} ({state.mentee_time_zone}, the "
        f"mentee's time zone) is outside the mentee's availability windows: {windows} "
        f"({state.mentee_time_zone}). Propose a time inside one of these windows."
    )


MAX_AHEAD = timedelta(days=2 * 366)
"""How far ahead a session may be planned: a programme runs months, not years."""


def new_session_time(state: PairState, typed: datetime, minutes: int, now: datetime,
                     rescheduled: int | None = None) -> None:
    """Checks on a time HR types, beyond `check_availability`: a wall-clock time that exists,
    within two years, not over another session of the pair (a second click of 'propose').

    Validators only: pairs that recorded such times before these checks must replay as they ran.
    """
    zone = state.mentee_time_zone
    if typed.tzinfo is None and (after := timezones.skipped(typed, zone)) is not None:
        raise RuleViolation(
            f"{typed:{_FMT}} does not exist in {zone}: the clocks go forward that night and skip it. "
            f"Propose {after:{_FMT}} (the same moment on the new clock) or another time."
        )
    starts_at = session_start(state, typed)
    if starts_at > now + MAX_AHEAD:
        raise RuleViolation(
            f"the session start {starts_at:%Y-%m-%d} is more than two years ahead: propose a time "
            "within the programme."
        )
    no_overlap(state, starts_at, minutes, rescheduled)


def no_overlap(state: PairState, starts_at: datetime, minutes: int, rescheduled: int | None = None) -> None:
    """One pair, one session at a time: a second click on 'propose' does not make two."""
    ends_at = starts_at + timedelta(minutes=minutes)
    for other in state.open_sessions:
        if other.session_no != rescheduled and other.starts_at < ends_at and starts_at < other.ends_at:
            raise RuleViolation(
                f"session {other.session_no} is already {other.status} for "
                f"{timezones.shown(other.starts_at, state.mentee_time_zone)} "
                f"({other.duration_minutes} min), overlapping this time: confirm or move that session "
                "instead of proposing it twice."
            )


def _sessions_stage(state: PairState, action: str) -> None:
    require_stage(state, action, {Stage.SESSIONS},
                  "sessions are scheduled after HR signed the mentor off and the mentee was onboarded")


def propose_session(state: PairState, starts_at: datetime, minutes: int, now: datetime) -> None:
    _sessions_stage(state, "propose_session")
    if state.sessions_to_schedule <= 0:
        raise RuleViolation(
            f"all {state.sessions_planned} planned sessions are held or scheduled: to add more, "
            "use the update 'extend'."
        )
    check_availability(state, starts_at, minutes, now)


def _session(state: PairState, request: SessionRef, action: str, statuses: set[str]) -> SessionState:
    session = state.session(request.session_no)
    if session is None:
        known = ", ".join(str(s.session_no) for s in state.sessions) or "none yet"
        raise UnknownSession(
            f"{action}: there is no session {request.session_no} in this pair (sessions: {known})."
        )
    if session.status not in statuses:
        raise UnknownSession(
            f"{action}: session {session.session_no} is {session.status}; this needs a session that "
            f"is {' or '.join(sorted(statuses))}."
        )
    return session


def confirm_session(state: PairState, request: SessionRef) -> SessionState:
    _sessions_stage(state, "confirm_session")
    return _session(state, request, "confirm_session", {"proposed"})


def reschedule_session(state: PairState, request: RescheduleSession, now: datetime) -> SessionState:
    _sessions_stage(state, "reschedule_session")
    session = _session(state, request, "reschedule_session", {"proposed", "confirmed"})
    check_availability(state, session_start(state, request.starts_at), session.duration_minutes, now)
    return session


def cancel_session(state: PairState, request: CancelSession) -> SessionState:
    _sessions_stage(state, "cancel_session")
    return _session(state, request, "cancel_session", {"proposed", "confirmed"})


def _started(state: PairState, session: SessionState, action: str, now: datetime) -> None:
    if session.starts_at > now:
        raise RuleViolation(
            f"{action}: session {session.session_no} starts {timezones.shown(session.starts_at, state.mentee_time_zone)}; its "
            "outcome can be recorded once it has started."
        )


def record_session_held(state: PairState, request: RecordSessionHeld, now: datetime) -> SessionState:
    _sessions_stage(state, "record_session_held")
    session = _session(state, request, "record_session_held", {"confirmed"})
    _started(state, session, "record_session_held", now)
    return session


def record_no_show(state: PairState, request: RecordNoShow, now: datetime) -> SessionState:
    _sessions_stage(state, "record_no_show")
    session = _session(state, request, "record_no_show", {"confirmed"})
    _started(state, session, "record_no_show", now)
    return session


# --- 6. feedback ---------------------------------------------------------------------------------

_AFTER_SESSIONS = {Stage.SESSIONS, Stage.FINAL_EVALUATION, Stage.FOLLOW_UP}


def give_feedback(state: PairState, request: GiveFeedback) -> None:
    require_open(state, "give_feedback")  # feedback on a past session is welcome even while paused
    if state.stage not in _AFTER_SESSIONS:
        raise WrongStage(f"give_feedback is not possible in stage '{state.stage.value}': no session was held yet.")
    session = _session(state, request, "give_feedback", {"held"})
    if request.by_role in session.feedback_from:
        raise RuleViolation(
            f"the {request.by_role} already gave feedback on session {session.session_no}."
        )


def give_final_evaluation(state: PairState, request: GiveFinalEvaluation) -> None:
    require_open(state, "give_final_evaluation")
    if state.stage not in {Stage.FINAL_EVALUATION, Stage.FOLLOW_UP}:
        raise WrongStage(
            f"give_final_evaluation is not possible in stage '{state.stage.value}': the final "
            "evaluation comes after the last planned session."
        )
    if request.by_role in state.final_evaluations:
        raise RuleViolation(f"the {request.by_role} already gave their final evaluation.")


def follow_up_answered(state: PairState, days: int, role: str, number: int | None = None) -> tuple[int | None, str | None]:
    """Which follow-up an answer is for, or why it cannot be recorded (signals cannot reject:
    they log this). Pairs whose follow-ups are numbered get the number; older pairs None."""
    if state.closed:
        return None, "the pair has ended"
    if not state.follow_ups_numbered:  # follow-ups told apart by their days after the end only
        if days not in state.follow_ups_sent:
            return None, f"no follow-up was sent {days} days after the end"
        if f"{days}:{role}" in state.follow_up_answers:
            return None, "this follow-up was already answered by that role"
        return None, None
    sent = [n for n, sent_days in enumerate(state.follow_ups_sent, start=1)
            if sent_days == days and number in (None, n)]
    if not sent:
        which = f" (follow-up {number})" if number else ""
        return None, f"no follow-up{which} was sent {days} days after the end"
    for n in sent:  # the oldest one this person has not answered
        if f"#{n}:{role}" not in state.follow_up_answers:
            return n, None
    return None, "this follow-up was already answered by that role"


# --- at any time ---------------------------------------------------------------------------------

def pause(state: PairState) -> None:
    require_active(state, "pause")


def resume(state: PairState) -> Pause:
    require_open(state, "resume")
    if state.paused is None:
        raise RuleViolation("resume is not possible: the pair is not paused.")
    return state.paused


def withdraw(state: PairState, request: WithdrawPair) -> None:
    require_open(state, "withdraw")


def replace_mentor(state: PairState, request: ReplaceMentor) -> None:
    require_stage(state, "replace_mentor",
                  {Stage.AWAITING_MOTIVATION, Stage.MENTEE_INVITED, Stage.PREPARATION, Stage.SESSIONS},
                  "a mentor can be replaced until the sessions are over")
    new_id = request.new_mentor.employee_id
    if new_id in (state.mentor_id, state.mentee_id):
        raise RuleViolation(f"{new_id} is already in this pair: the new mentor must be someone else.")
    if state.open_sessions:
        numbers = ", ".join(str(s.session_no) for s in state.open_sessions)
        raise RuleViolation(
            f"session(s) {numbers} are still scheduled with the current mentor: cancel them "
            "(cancel_session) or record their outcome before replacing the mentor."
        )


def extend(state: PairState, request: ExtendPair) -> None:
    require_open(state, "extend")
    if state.stage is Stage.FOLLOW_UP:
        raise WrongStage(
            "extend is not possible in stage 'follow_up': the sessions are over; nominate a new pair instead."
        )
    if state.sessions_planned + request.additional_sessions > MAX_SESSIONS:
        raise RuleViolation(
            f"a pair has at most {MAX_SESSIONS} sessions: {state.sessions_planned} are planned, so at "
            f"most {MAX_SESSIONS - state.sessions_planned} can be added."
        )
