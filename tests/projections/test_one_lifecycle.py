"""One lifecycle, two readers: the pair's workflow (`workflows/pair_state.py`) decides with the rules
of `events/lifecycle.py` over its own state, and the read models (`projections/pair_fold.py`) show
with the same rules over the log. Over generated pair stories (reminders, pauses, idle spells,
reschedules, a replaced mentor, evaluation windows, older pairs that recorded less), after every
event, both name the same stage and the same next deadline (its kind, its time, its session).

One difference is by design: once the last follow-up is answered the workflow's facts call for
`completed` at once, and the read models wait for the `PairCompleted` it records next.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import events.pair as ev
from events.lifecycle import DEFAULT_WAITS, Deadline
from projections.pair_fold import PairFacts, fold, next_deadline
from tests.projections.lifecycles import PairStory
from workflows.pair_state import PairState, catch_up, enter_stage, next_stage, next_timer
from workflows.policy import Policy

OUTCOMES = st.sampled_from(["held", "held", "missed", "cancelled"])
DAYS = st.integers(0, 40).map(lambda d: timedelta(days=d, hours=3))

# Some nominations record a policy of their own (what the read models must read), others only the
# two waits older nominations recorded (the rest are the defaults on both sides).
POLICIES = st.sampled_from([
    {},
    {"motivation_reminder_after": "P2D", "motivation_expires_after": "P5D", "invitation_reminder_after": "P3D",
     "invitation_expires_after": "P9D", "preparation_reminder_after": "P4D", "preparation_escalation_after": "P8D",
     "stall_nudge_after": "P6D", "at_risk_after": "P12D", "lapse_after": "P20D", "session_reminder_before": "PT2H",
     "final_evaluation_within": "P5D", "first_follow_up_after": "P10D", "second_follow_up_after": "P20D",
     "follow_up_answer_within": "P3D"},
])


def notice(story: PairStory, kind: str, *, session_no: int | None = None, skipped: bool = False) -> ev.DomainEvent:
    if skipped:
        return ev.NotificationSkipped(kind=kind, recipient_id=story.mentee_id, reason="SessionAlreadyStarted",
                                      session_no=session_no)
    return ev.NotificationSent(kind=kind, recipient_id=story.mentee_id, channel="email",
                               message_id=f"m-{uuid.uuid4()}", session_no=session_no)


def maybe_pause(draw, story: PairStory, stage: str) -> None:
    if draw(st.integers(0, 3)) == 0:
        story.record(story.hr_id, ev.PairPaused(paused_by=story.hr_id, stage=stage, reason="agenda"),
                     after=draw(DAYS))
        story.record(story.hr_id, ev.PairResumed(resumed_by=story.hr_id, paused_days=1.0), after=draw(DAYS))


@st.composite
def stories(draw) -> PairStory:
    story = PairStory("p-gen", sessions_planned=draw(st.integers(1, 3)))
    policy = draw(POLICIES)
    story.record(story.hr_id, ev.PairNominated(
        pair_id=story.pair_id, programme_id=story.programme_id, mentor_id=story.mentor_id,
        mentee_id=story.mentee_id, topics=["mobile apps"], sessions_planned=story.sessions_planned,
        nominated_by=story.hr_id, policy=policy or {"motivation_expires_after": "P7D",
                                                     "invitation_expires_after": "P14D"}),
        after=timedelta(0))
    if draw(st.booleans()):
        story.record("system", notice(story, "motivation_reminder"), after=draw(DAYS))
    maybe_pause(draw, story, "awaiting_motivation")
    if draw(st.integers(0, 5)) == 0:
        return story.record("system", ev.MentorMotivationExpired(mentor_id=story.mentor_id), after=draw(DAYS))
    story.mentor_confirms()
    if draw(st.booleans()):
        story.record("system", notice(story, "invitation_reminder"), after=draw(DAYS))
    maybe_pause(draw, story, "mentee_invited")
    story.mentee_consents()

    # Preparation, with idle spells: a reminder, an escalation, and maybe back on track.
    story.record(story.mentor_id, ev.CurriculumAgreed(topics=["mobile apps"], objectives_count=1), after=draw(DAYS))
    if draw(st.booleans()):
        story.record("system", notice(story, "preparation_reminder"), after=draw(DAYS))
        if draw(st.booleans()):
            story.record("system", ev.PairFlaggedAtRisk(stage="preparation", idle_since=story.clock),
                         after=draw(DAYS))
    for module in ("listening", "pedagogy"):
        story.record(story.mentor_id, ev.TrainingModuleCompleted(mentor_id=story.mentor_id, module=module),
                     after=draw(DAYS))
    maybe_pause(draw, story, "preparation")
    story.record(story.hr_id, ev.MenteeOnboarded(mentee_id=story.mentee_id), after=draw(DAYS))
    story.record(story.hr_id, ev.MentorSignedOff(mentor_id=story.mentor_id, signed_off_by=story.hr_id),
                 after=draw(DAYS))

    # Sessions: proposed, confirmed, maybe moved, reminded (or the reminder skipped), then an outcome.
    number = held = 0
    replaced = draw(st.booleans())
    while held < story.sessions_planned and number < 5:
        number += 1
        starts_at = story.clock + timedelta(days=draw(st.integers(2, 30)))
        story.record(story.mentor_id, ev.SessionProposed(session_no=number, starts_at=starts_at, duration_minutes=60,
                                                         format="individual", topics=["mobile apps"]))
        story.record(story.mentee_id, ev.SessionConfirmed(session_no=number), after=timedelta(hours=2))
        if draw(st.booleans()):
            moved = starts_at + timedelta(days=draw(st.integers(1, 9)))
            story.record(story.mentee_id, ev.SessionRescheduled(session_no=number, starts_at=moved,
                                                                previous_starts_at=starts_at), after=timedelta(hours=3))
            starts_at = moved
        if draw(st.booleans()):
            story.record("system", notice(story, "session_reminder", session_no=number, skipped=draw(st.booleans())),
                         after=timedelta(minutes=5))
        if draw(st.integers(0, 4)) == 0:
            story.record("system", ev.PairNudged(stage="sessions", idle_since=story.clock), after=draw(DAYS))
        outcome = draw(OUTCOMES)
        story.clock = max(story.clock, starts_at)
        story.session_outcome(number, outcome)
        held += outcome == "held"
        if replaced and held == 1:
            replaced = False
            story.record(story.hr_id, ev.PairPaused(paused_by=story.hr_id, stage="sessions", reason="mentor_leave"))
            story.record(story.hr_id, ev.MentorReplaced(previous_mentor_id=story.mentor_id, new_mentor_id="E777",
                                                        replaced_by=story.hr_id, reason="mentor_left"))
            story.mentor_id = "E777"
            story.record(story.hr_id, ev.PairResumed(resumed_by=story.hr_id, paused_days=2.0))
            story.record("E777", ev.MentorMotivationConfirmed(mentor_id="E777"))
            story.record(story.hr_id, ev.MentorSignedOff(mentor_id="E777", signed_off_by=story.hr_id))
        if draw(st.integers(0, 6)) == 0:
            return story.withdraw(story.mentee_id, "mentee", "sessions")
    if held < story.sessions_planned:
        return story.go_idle_and_lapse()

    # The final evaluations: both in; one in and the window closes; or (older pairs) the window
    # closed unrecorded and the first follow-up is the next fact.
    ending = draw(st.sampled_from(["both", "window", "unrecorded"]))
    if ending != "unrecorded":
        story.record(story.mentee_id, ev.FinalEvaluationGiven(by_role="mentee", rating=5, would_recommend=True,
                                                              has_private_comment=False), after=draw(DAYS))
    if ending == "both":
        story.record(story.mentor_id, ev.FinalEvaluationGiven(by_role="mentor", rating=4, would_recommend=True,
                                                              has_private_comment=False), after=draw(DAYS))
    elif ending == "window":
        story.record("system", ev.FinalEvaluationWindowClosed(evaluations_from=["mentee"]), after=draw(DAYS))
    numbered = ending != "unrecorded"
    for no, days in ((1, 30), (2, 90)):
        story.record("system", ev.FollowUpSent(days_after_end=days, follow_up_no=no if numbered else None),
                     after=draw(DAYS))
        for role in ("mentee", "mentor"):
            story.record(story.person(role), ev.FollowUpAnswered(
                days_after_end=days, still_using=True, by_role=role, follow_up_no=no if numbered else None))
    return story.record("system", ev.PairCompleted(sessions_held=held))


def workflow_view(state: PairState, at: datetime) -> tuple[str, Deadline | None]:
    """What the workflow names right after recording a fact: it enters the stage the facts call
    for at once (on a copy: the catch-up itself enters it lazily, with the next fact)."""
    now = copy.deepcopy(state)
    while not now.closed and (stage := next_stage(now)) is not now.stage:
        enter_stage(now, stage, at)
    return now.stage.value, next_timer(now)


def both_sides_after_each_event(story: PairStory) -> list[tuple[str, tuple, tuple]]:
    state: PairState | None = None
    facts: PairFacts | None = None
    seen = []
    for step in story.steps:
        for event in step.events:
            facts = fold(facts, story.pair_id, event.event_type, event.model_dump(mode="json"), step.at, step.actor)
            if isinstance(event, ev.PairNominated):
                state = PairState(
                    pair_id=story.pair_id, stream_id=story.stream_id, programme_id=story.programme_id,
                    mentor_id=story.mentor_id, mentee_id=story.mentee_id, hr_id=story.hr_id,
                    mentee_time_zone="UTC", availability=[], topics=list(event.topics),
                    training_modules=["listening", "pedagogy"], sessions_planned=event.sessions_planned,
                    policy=Policy(**{k: v for k, v in event.policy.items() if k in DEFAULT_WAITS}),
                    clock_start=step.at, last_fact_at=step.at)  # as the workflow records the nomination
            else:
                assert state is not None
                catch_up(state, event, step.at)
            assert facts is not None
            stage, timer = workflow_view(state, step.at)
            deadline = next_deadline(facts)
            seen.append((event.event_type, (stage, timer), (facts.stage, deadline)))
    return seen


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stories())
def test_the_workflow_and_the_read_models_agree_on_stage_and_deadline_after_every_event(story: PairStory):
    types = [e.event_type for s in story.steps for e in s.events]
    for index, (event_type, workflow, read_models) in enumerate(both_sides_after_each_event(story)):
        if (workflow[0], read_models[0]) == ("completed", "follow_up"):
            continue  # the workflow records PairCompleted next (see the module's text)
        assert workflow == read_models, (index, event_type, workflow, read_models, types)


def test_an_activity_in_preparation_restarts_the_deadlines_on_both_sides():
    """Named, not only compared: a read model that ignored the idle clock's restarts would count
    the reminder from the stage's start."""
    story = PairStory("p-idle").nominate().mentor_confirms().mentee_consents()
    story.record(story.mentor_id, ev.CurriculumAgreed(topics=["mobile apps"], objectives_count=1),
                 after=timedelta(days=5))
    last_type, workflow, read_models = both_sides_after_each_event(story)[-1]
    assert last_type == "CurriculumAgreed" and workflow == read_models
    assert read_models[1] is not None and read_models[1].kind == "preparation_reminder"
    assert read_models[1].due == story.clock + timedelta(days=10)  # counted from the activity, not the stage


def test_an_older_pair_s_first_follow_up_is_not_due_again():
    """Its evaluation window closed unrecorded: the first follow-up moves it on, and is already sent,
    so both sides name the second (the live workflow's next timer)."""
    story = PairStory("p-old", sessions_planned=1).nominate().mentor_confirms().mentee_consents().prepare()
    story.session(1)
    story.record("system", ev.FollowUpSent(days_after_end=30), after=timedelta(days=30))
    story.record(story.mentee_id, ev.FollowUpAnswered(days_after_end=30, still_using=True, by_role="mentee"))
    for event_type, workflow, read_models in both_sides_after_each_event(story)[-2:]:
        assert workflow == read_models and read_models[0] == "follow_up", event_type
        assert read_models[1] is not None and read_models[1].kind == "second_follow_up", event_type
