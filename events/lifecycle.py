"""The lifecycle of a pair, written once: which stage the recorded facts call for, when a stage's
clock starts and restarts, which deadlines run and which of them the log shows acted on.

Pure (no I/O, no clock, no Temporal): the pair's workflow decides with it (`workflows/pair_state.py`)
and the read models show with it (`projections/pair_fold.py`), each over its own record of the
facts, so the two cannot drift apart. Changing a rule here changes what running workflows decide:
guard such a change with a patch in the workflow, as for any other change of its behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Stage(StrEnum):
    """The lifecycle (README, "The lifecycle"); the last seven are the ways a pair ends."""

    NOMINATED = "nominated"
    AWAITING_MOTIVATION = "awaiting_motivation"
    MENTEE_INVITED = "mentee_invited"
    PREPARATION = "preparation"
    SESSIONS = "sessions"
    FINAL_EVALUATION = "final_evaluation"
    FOLLOW_UP = "follow_up"
    COMPLETED = "completed"
    DECLINED = "declined"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    LAPSED = "lapsed"
    CANCELLED = "cancelled"
    ENDED = "ended"


LIVE_STAGES = (Stage.AWAITING_MOTIVATION, Stage.MENTEE_INVITED, Stage.PREPARATION, Stage.SESSIONS,
               Stage.FINAL_EVALUATION, Stage.FOLLOW_UP)
CLOSED_STAGES = (Stage.COMPLETED, Stage.DECLINED, Stage.EXPIRED, Stage.WITHDRAWN, Stage.LAPSED,
                 Stage.CANCELLED, Stage.ENDED)

# Event type -> (the stage it closes the pair in, the outcome: it keeps apart what the stage merges).
ENDINGS: dict[str, tuple[Stage, str]] = {
    "MentorDeclined": (Stage.DECLINED, "mentor_declined"),
    "MenteeDeclined": (Stage.DECLINED, "mentee_declined"),
    "MentorMotivationExpired": (Stage.EXPIRED, "motivation_expired"),
    "InvitationExpired": (Stage.EXPIRED, "invitation_expired"),
    "PairWithdrawn": (Stage.WITHDRAWN, "withdrawn"),
    "PairLapsed": (Stage.LAPSED, "lapsed"),
    "PairCompleted": (Stage.COMPLETED, "completed"),
    "PairCancelled": (Stage.CANCELLED, "cancelled"),
    "PairEndedInTemporal": (Stage.ENDED, "ended_in_temporal"),
}

OPEN_SESSION = ("proposed", "confirmed")

# --- which stage -----------------------------------------------------------------------------------


def evaluation_over(final_evaluations: Collection[str], window_closed: bool, follow_ups_sent: int) -> bool:
    """Both final evaluations are in, or their window closed. A follow-up sent shows the window
    closed too: pairs that started before the window's closing was recorded show nothing else."""
    return window_closed or follow_ups_sent > 0 or {"mentor", "mentee"} <= set(final_evaluations)


def stage_called_for(*, mentor_motivated: bool, consent_given: bool, prepared: bool, sessions_planned: int,
                     sessions_held: int, sessions_open: int, evaluation_closed: bool,
                     follow_ups_closed: bool) -> Stage:
    """The stage the facts call for, in lifecycle order; `completed` once the follow-ups are over."""
    if not mentor_motivated:
        return Stage.AWAITING_MOTIVATION
    if not consent_given:
        return Stage.MENTEE_INVITED
    if not prepared:
        return Stage.PREPARATION
    if sessions_planned - sessions_held - sessions_open > 0 or sessions_open:
        return Stage.SESSIONS
    if not evaluation_closed:
        return Stage.FINAL_EVALUATION
    if not follow_ups_closed:
        return Stage.FOLLOW_UP
    return Stage.COMPLETED


# --- the stage's clock -----------------------------------------------------------------------------

def clock_on_entering(stage: Stage, clock_start: datetime, paused_since: datetime | None,
                      now: datetime) -> datetime:
    """A new stage's timers count from when it is entered (from the pause, when entered paused).
    The follow-ups count from the last session: the final evaluation's clock runs on."""
    if stage is Stage.FOLLOW_UP:
        return clock_start
    return paused_since if paused_since is not None else now


def fired_on_entering(stage: Stage, follow_ups_sent: int) -> list[str]:
    """The new stage's timers the facts already show acted on: none, but for pairs whose evaluation
    window closed unrecorded, the follow-up that moved them on (and any sent before)."""
    if stage is Stage.FOLLOW_UP:
        return ["first_follow_up", "second_follow_up"][:follow_ups_sent]
    return []


def clock_after_resume(clock_start: datetime, paused_since: datetime | None, resumed_at: datetime) -> datetime:
    """A pause stops the stage's timers: resuming moves its clock on by the whole pause."""
    return clock_start + (resumed_at - paused_since) if paused_since is not None else clock_start


_PREPARATION_ACTIVITY = frozenset({"CurriculumAgreed", "TrainingModuleCompleted", "MenteeOnboarded",
                                   "MentorSignedOff"})
_SESSION_ACTIVITY = frozenset({"SessionProposed", "SessionConfirmed", "SessionRescheduled", "SessionCancelled",
                               "SessionHeld", "SessionMissed", "FeedbackGiven"})


def restarts_idle_clock(stage: str, paused: bool, event_type: str) -> bool:
    """Progress that restarts the idle clock of preparation and of the sessions.

    Not while paused (feedback on a past session may come then): the clock is stopped, and
    resuming moves it on by the whole pause.
    """
    if paused:
        return False
    return (stage == Stage.PREPARATION and event_type in _PREPARATION_ACTIVITY) or (
        stage == Stage.SESSIONS and event_type in _SESSION_ACTIVITY)


# --- the stage's deadlines -------------------------------------------------------------------------

# The policy's waits and their defaults (ISO 8601 durations). A nomination records the policy in
# force; a reader of one that recorded fewer waits takes these.
DEFAULT_WAITS: dict[str, str] = {
    "motivation_reminder_after": "P3D",
    "motivation_expires_after": "P7D",
    "invitation_reminder_after": "P7D",
    "invitation_expires_after": "P14D",
    "preparation_reminder_after": "P10D",
    "preparation_escalation_after": "P21D",
    "session_reminder_before": "PT24H",
    "stall_nudge_after": "P30D",
    "at_risk_after": "P45D",
    "lapse_after": "P60D",
    "final_evaluation_within": "P14D",
    "first_follow_up_after": "P30D",
    "second_follow_up_after": "P90D",
    "follow_up_answer_within": "P14D",
}

# Per stage: (timer kind, the policy's wait after the stage's clock start).
STAGE_TIMERS: dict[Stage, list[tuple[str, str]]] = {
    Stage.AWAITING_MOTIVATION: [("motivation_reminder", "motivation_reminder_after"),
                                ("motivation_expiry", "motivation_expires_after")],
    Stage.MENTEE_INVITED: [("invitation_reminder", "invitation_reminder_after"),
                           ("invitation_expiry", "invitation_expires_after")],
    Stage.PREPARATION: [("preparation_reminder", "preparation_reminder_after"),
                        ("preparation_escalation", "preparation_escalation_after"),
                        ("lapse", "lapse_after")],
    Stage.SESSIONS: [("stall_nudge", "stall_nudge_after"), ("stall_escalation", "at_risk_after"),
                     ("lapse", "lapse_after")],
    Stage.FINAL_EVALUATION: [("evaluation_window_closed", "final_evaluation_within")],
    Stage.FOLLOW_UP: [("first_follow_up", "first_follow_up_after"),
                      ("second_follow_up", "second_follow_up_after")],
}

TIMER_LABELS = {
    "motivation_reminder": "reminder to the mentor", "motivation_expiry": "nomination lapses",
    "invitation_reminder": "reminder to the mentee", "invitation_expiry": "invitation expires",
    "preparation_reminder": "preparation reminder", "preparation_escalation": "escalation to HR",
    "lapse": "pair closes as lapsed", "stall_nudge": "nudge", "stall_escalation": "escalation to HR",
    "session_reminder": "session reminder", "evaluation_window_closed": "final evaluations close",
    "first_follow_up": "first follow-up", "second_follow_up": "second follow-up",
    "follow_up_window_closed": "pair completes",
}


def deadline_label(kind: str | None) -> str:
    """What happens when a deadline of this kind passes, in HR's words."""
    return TIMER_LABELS.get(kind or "", kind or "none")


@dataclass(frozen=True, slots=True)
class Deadline:
    """A deadline of the current stage and what happens when it passes."""

    kind: str
    due: datetime
    session_no: int | None = None

    @property
    def label(self) -> str:
        return deadline_label(self.kind)


@dataclass(frozen=True, slots=True)
class SessionClock:
    """What a session's reminder needs to know of it."""

    session_no: int
    status: str
    starts_at: datetime
    reminder_handled: bool


def next_deadline(stage: Stage, *, paused: bool, clock_start: datetime, wait: Callable[[str], timedelta],
                  fired: Collection[str], sessions: Iterable[SessionClock],
                  now: datetime | None = None) -> Deadline | None:
    """The earliest deadline not yet acted on; None when paused or closed (no timer counts).

    `wait` gives the policy's duration by name. `now` is only for pairs that started before the
    rule that keeps reminders of sessions already begun: they dropped those, and replay so.
    """
    if paused or stage in CLOSED_STAGES:
        return None
    timers = [Deadline(kind, clock_start + wait(name))
              for kind, name in STAGE_TIMERS.get(stage, []) if kind not in fired]
    if stage is Stage.FOLLOW_UP and "second_follow_up" in fired:
        timers.append(Deadline("follow_up_window_closed", clock_start + wait("second_follow_up_after")
                               + wait("follow_up_answer_within")))
    if stage is Stage.SESSIONS:
        before = wait("session_reminder_before")
        timers += [Deadline("session_reminder", s.starts_at - before, s.session_no)
                   for s in sessions
                   if s.status == "confirmed" and not s.reminder_handled and (now is None or s.starts_at > now)]
    return min(timers, key=lambda t: t.due, default=None)


# Reminders whose notices show in the log that their timer was acted on.
_REMINDER_NOTICES = frozenset({"motivation_reminder", "invitation_reminder", "preparation_reminder"})
_NOTICES = frozenset({"NotificationSent", "NotificationFailed", "NotificationSkipped"})


def timer_acted_on(event_type: str, *, kind: str | None = None, session_no: int | None = None,
                   stage_then: str | None = None, follow_ups_sent: int = 0) -> str | None:
    """The timer a recorded fact shows was acted on (its notice sent, its fact recorded), if any.

    `kind` and `session_no` are a notice's, `stage_then` a flag's; `follow_ups_sent` counts the
    follow-ups sent, this one included. A session's reminder answers `session_reminder`.
    """
    if event_type in _NOTICES:
        if kind == "session_reminder" and session_no is not None:
            return "session_reminder"
        return kind if kind in _REMINDER_NOTICES else None
    match event_type:
        case "PairNudged":
            return "stall_nudge"
        case "PairFlaggedAtRisk":
            return "preparation_escalation" if stage_then == Stage.PREPARATION else "stall_escalation"
        case "FinalEvaluationWindowClosed":
            return "evaluation_window_closed"
        case "FollowUpSent":
            return "first_follow_up" if follow_ups_sent == 1 else "second_follow_up"
    return None
