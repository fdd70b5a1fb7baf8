"""The pure decisions under the workflow: stages from facts, timers and pauses, availability in
the mentee's time zone (daylight saving included). No server needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import events.pair as ev
from tests.workflow.pairs import EXAMPLE, HR, MENTEE, MENTOR
from workflows import authority, rules
from workflows.errors import NotAParticipant, OutsideAvailability, RuleViolation
from workflows.inputs import PairInput, SignOffMentor
from workflows.pair_state import PairState, Stage, apply, next_stage, next_timer

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday, Paris on winter time (UTC+1)


def _pair(stage: Stage = Stage.SESSIONS) -> PairState:
    state = PairState.nominated(PairInput.model_validate(EXAMPLE), T0)
    state.mentor_motivated = state.consent_given = state.signed_off = state.mentee_onboarded = True
    state.stage = stage
    return state


@pytest.mark.parametrize(("starts_at", "inside"), [
    (datetime(2026, 3, 24, 8, 0, tzinfo=UTC), True),    # Tuesday 09:00 Paris (UTC+1)
    (datetime(2026, 3, 24, 7, 30, tzinfo=UTC), False),  # 08:30 Paris: before the window
    (datetime(2026, 3, 31, 7, 0, tzinfo=UTC), True),    # Tuesday 09:00 Paris, summer time (UTC+2)
    (datetime(2026, 3, 31, 10, 0, tzinfo=UTC), False),  # 12:00-13:00 Paris: after the window
    (datetime(2026, 3, 26, 13, 0, tzinfo=UTC), True),   # Thursday 14:00 Paris
    (datetime(2026, 3, 25, 8, 0, tzinfo=UTC), False),   # a Wednesday
])
def test_availability_is_judged_in_the_mentee_s_local_time(starts_at: datetime, inside: bool):
    state = _pair()
    if inside:
        rules.check_availability(state, starts_at, 60, T0)
    else:
        with pytest.raises(OutsideAvailability, match="Tuesday 09:00-12:00, Thursday 14:00-17:00"):
            rules.check_availability(state, starts_at, 60, T0)


def test_a_time_without_offset_is_the_mentee_s_wall_clock():
    state = _pair()
    assert rules.session_start(state, datetime(2026, 7, 7, 10, 0)) == datetime(2026, 7, 7, 8, 0, tzinfo=UTC)
    assert rules.session_start(state, datetime(2026, 1, 6, 10, 0)) == datetime(2026, 1, 6, 9, 0, tzinfo=UTC)


def test_pause_stops_the_timers_and_resume_moves_them_on():
    state = _pair(Stage.MENTEE_INVITED)
    state.consent_given = False
    assert next_timer(state, T0).due == T0 + timedelta(days=7)
    apply(state, ev.PairPaused(paused_by=HR, stage="mentee_invited", reason="leave"), T0 + timedelta(days=2))
    assert next_timer(state, T0 + timedelta(days=3)) is None
    apply(state, ev.PairResumed(resumed_by=HR, paused_days=10), T0 + timedelta(days=12))
    assert next_timer(state, T0 + timedelta(days=12)).due == T0 + timedelta(days=17)


def test_feedback_while_paused_does_not_restart_the_idle_clock():
    state = _pair()
    state.sessions = []
    apply(state, ev.SessionProposed(session_no=1, starts_at=T0, duration_minutes=60, format="individual",
                                    topics=["apps"]), T0)
    apply(state, ev.SessionConfirmed(session_no=1), T0)
    apply(state, ev.SessionHeld(session_no=1, topics_covered=["apps"]), T0)
    apply(state, ev.PairPaused(paused_by=HR, stage="sessions", reason="agenda"), T0 + timedelta(days=1))
    apply(state, ev.FeedbackGiven(session_no=1, by_role="mentee", rating=5, engaging=True, topics_covered=[],
                                  has_private_comment=False), T0 + timedelta(days=5))
    apply(state, ev.PairResumed(resumed_by=HR, paused_days=9), T0 + timedelta(days=10))
    nudge = next_timer(state, T0 + timedelta(days=10))
    assert (nudge.kind, nudge.due) == ("stall_nudge", T0 + timedelta(days=30 + 9))


def test_stages_follow_the_facts_and_a_new_mentor_starts_over():
    state = _pair()
    assert next_stage(state) is Stage.SESSIONS
    apply(state, ev.MentorReplaced(previous_mentor_id=MENTOR, new_mentor_id="E2001", replaced_by=HR,
                                   reason="mentor_left"), T0)
    assert (next_stage(state), state.mentor_id, state.signed_off) == (Stage.AWAITING_MOTIVATION, "E2001", False)
    apply(state, ev.MentorMotivationConfirmed(mentor_id="E2001"), T0)
    assert next_stage(state) is Stage.PREPARATION  # the senior's consent still stands
    state.signed_off = True
    state.sessions_planned = 0
    assert next_stage(state) is Stage.FINAL_EVALUATION
    apply(state, ev.FinalEvaluationGiven(by_role="mentor", rating=4, would_recommend=True,
                                         has_private_comment=False), T0)
    apply(state, ev.FinalEvaluationGiven(by_role="mentee", rating=4, would_recommend=True,
                                         has_private_comment=False), T0)
    assert next_stage(state) is Stage.FOLLOW_UP


def test_sign_off_needs_the_curriculum_and_every_module():
    state = _pair(Stage.PREPARATION)
    state.signed_off = False
    state.curriculum_topics = ["apps"]
    state.modules_done = ["confidentiality"]
    with pytest.raises(RuleViolation, match="training modules reverse-mentoring-basics"):
        rules.sign_off_mentor(state)
    state.modules_done.append("reverse-mentoring-basics")
    rules.sign_off_mentor(state)
    signing = SignOffMentor(recorded_by=MENTEE)
    with pytest.raises(NotAParticipant, match="it is recorded by the pair's HR"):
        authority.check(state, "sign_off_mentor", signing)
    authority.check(state, "sign_off_mentor", signing.model_copy(update={"recorded_by": HR}))
