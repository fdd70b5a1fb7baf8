"""Realistic pair lifecycles as domain events, for tests and the benchmark.

A `PairStory` writes one pair's life the way the workflow would: one append per step, each with
its actor and business time in the metadata. The functions at the bottom tell the usual stories:
a full programme, declines, an expired invitation, a withdrawal, a lapse, a replaced mentor.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from events import pair as ev
from events.base import DomainEvent, EventMetadata, NewEvent
from events.store import PostgresEventStore

START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
TOPICS = ["mobile apps", "social networks", "personal data"]


@dataclass
class Step:
    actor: str
    at: datetime
    events: list[DomainEvent]


@dataclass
class PairStory:
    pair_id: str
    programme_id: str = "prog-A"
    mentor_id: str = "E100"
    mentee_id: str = "E900"
    hr_id: str = "hr-007"
    clock: datetime = START
    steps: list[Step] = field(default_factory=list)
    sessions_planned: int = 3

    @property
    def stream_id(self) -> str:
        return ev.pair_stream(self.pair_id)

    def person(self, role: str) -> str:
        return {"mentor": self.mentor_id, "mentee": self.mentee_id, "hr": self.hr_id}[role]

    def record(self, actor: str, *events: DomainEvent, after: timedelta = timedelta(days=1)) -> PairStory:
        self.clock += after
        self.steps.append(Step(actor, self.clock, list(events)))
        return self

    def event_count(self) -> int:
        return sum(len(s.events) for s in self.steps)

    # --- the lifecycle, stage by stage ----------------------------------------------------------

    def nominate(self) -> PairStory:
        return self.record(self.hr_id, ev.PairNominated(
            pair_id=self.pair_id, programme_id=self.programme_id, mentor_id=self.mentor_id,
            mentee_id=self.mentee_id, topics=TOPICS, sessions_planned=self.sessions_planned,
            nominated_by=self.hr_id,
            policy={"motivation_expires_after": "P7D", "invitation_expires_after": "P14D"},
        ), after=timedelta(0))

    def mentor_confirms(self) -> PairStory:
        self.record(self.mentor_id, ev.MentorMotivationConfirmed(mentor_id=self.mentor_id))
        return self.record("system", ev.MenteeInvited(
            mentee_id=self.mentee_id, channel="email", expires_at=self.clock + timedelta(days=14),
        ), ev.NotificationSent(kind="invitation", recipient_id=self.mentee_id, channel="email",
                               message_id=f"m-{uuid.uuid4()}", recipient_role="mentee"),
            after=timedelta(minutes=1))

    def mentee_consents(self, channel: str = "ui") -> PairStory:
        return self.record(self.mentee_id, ev.MenteeConsentGiven(
            mentee_id=self.mentee_id, channel=channel, recorded_by=self.mentee_id),
            after=timedelta(days=3))

    def prepare(self) -> PairStory:
        self.record(self.mentor_id, ev.CurriculumAgreed(topics=TOPICS[:2], objectives_count=2))
        for module in ("listening", "pedagogy"):
            self.record(self.mentor_id, ev.TrainingModuleCompleted(mentor_id=self.mentor_id,
                                                                   module=module))
        self.record(self.hr_id, ev.MenteeOnboarded(mentee_id=self.mentee_id))
        return self.record(self.hr_id, ev.MentorSignedOff(mentor_id=self.mentor_id,
                                                          signed_off_by=self.hr_id))

    def session(self, number: int, *, outcome: str = "held", mentee_rating: int = 5,
                mentor_rating: int = 4) -> PairStory:
        starts_at = self.clock + timedelta(days=20)
        self.record(self.mentor_id, ev.SessionProposed(
            session_no=number, starts_at=starts_at, duration_minutes=60,
            format="individual" if number % 2 else "group", topics=TOPICS[:2]))
        self.record(self.mentee_id, ev.SessionConfirmed(session_no=number))
        self.clock = starts_at - timedelta(days=1)
        self.record("system", ev.NotificationSent(
            kind="session_reminder", recipient_id=self.mentee_id, channel="email",
            message_id=f"m-{uuid.uuid4()}", recipient_role="mentee", session_no=number),
            after=timedelta(0))
        self.clock = starts_at
        return self.session_outcome(number, outcome, mentee_rating=mentee_rating, mentor_rating=mentor_rating)

    def session_outcome(self, number: int, outcome: str = "held", *, mentee_rating: int = 5,
                        mentor_rating: int = 4) -> PairStory:
        """What became of a session at its time: held (with both feedbacks), missed or cancelled."""
        if outcome == "missed":
            return self.record(self.mentor_id, ev.SessionMissed(session_no=number, absent="mentee"),
                               after=timedelta(hours=1))
        if outcome == "cancelled":
            return self.record(self.mentee_id, ev.SessionCancelled(
                session_no=number, cancelled_by="mentee", reason="agenda_conflict"),
                after=-timedelta(hours=2))
        self.record(self.mentor_id, ev.SessionHeld(session_no=number, topics_covered=TOPICS[:2]),
                    after=timedelta(hours=1))
        self.record(self.mentee_id, ev.FeedbackGiven(
            session_no=number, by_role="mentee", rating=mentee_rating, engaging=True,
            topics_covered=TOPICS[:2], has_private_comment=True), after=timedelta(hours=3))
        return self.record(self.mentor_id, ev.FeedbackGiven(
            session_no=number, by_role="mentor", rating=mentor_rating, engaging=True,
            topics_covered=TOPICS[:1], has_private_comment=False), after=timedelta(hours=1))

    def evaluate_and_follow_up(self) -> PairStory:
        self.record(self.mentee_id, ev.FinalEvaluationGiven(
            by_role="mentee", rating=5, would_recommend=True, has_private_comment=True),
            after=timedelta(days=3))
        self.record(self.mentor_id, ev.FinalEvaluationGiven(
            by_role="mentor", rating=4, would_recommend=True, has_private_comment=False))
        for days in (30, 90):
            self.record("system", ev.FollowUpSent(days_after_end=days),
                        after=timedelta(days=30 if days == 30 else 60))
            self.record(self.mentee_id, ev.FollowUpAnswered(
                days_after_end=days, still_using=True, by_role="mentee"))
            self.record(self.mentor_id, ev.FollowUpAnswered(
                days_after_end=days, still_using=True, by_role="mentor"), after=timedelta(hours=2))
        return self.record("system", ev.PairCompleted(sessions_held=self.sessions_planned))

    def withdraw(self, by: str, role: str, stage: str, reason: str = "workload") -> PairStory:
        return self.record(by, ev.PairWithdrawn(withdrawn_by=by, role=role, stage=stage,
                                                reason=reason), after=timedelta(days=2))

    def go_idle_and_lapse(self, stage: str = "sessions") -> PairStory:
        idle_since = self.clock
        self.record("system", ev.PairNudged(stage=stage, idle_since=idle_since),
                    after=timedelta(days=21))
        self.record("system", ev.PairFlaggedAtRisk(stage=stage, idle_since=idle_since),
                    ev.EscalatedToHr(stage=stage, reason="idle"), after=timedelta(days=14))
        return self.record("system", ev.PairLapsed(stage=stage, idle_since=idle_since),
                           after=timedelta(days=30))


# --- the usual stories -----------------------------------------------------------------------------

def full_lifecycle(pair_id: str, **people: str) -> PairStory:
    story = PairStory(pair_id, **people).nominate().mentor_confirms().mentee_consents().prepare()
    for number in range(1, story.sessions_planned + 1):
        story.session(number, mentee_rating=3 + number % 3)
    return story.evaluate_and_follow_up()


def declined_by_mentee(pair_id: str, **people: str) -> PairStory:
    story = PairStory(pair_id, **people).nominate().mentor_confirms()
    return story.record(story.hr_id, ev.MenteeDeclined(
        mentee_id=story.mentee_id, channel="email", recorded_by=story.hr_id), after=timedelta(days=2))


def declined_by_mentor(pair_id: str, **people: str) -> PairStory:
    story = PairStory(pair_id, **people).nominate()
    return story.record(story.mentor_id, ev.MentorDeclined(mentor_id=story.mentor_id,
                                                           reason="no_time"))


def expired_invitation(pair_id: str, **people: str) -> PairStory:
    story = PairStory(pair_id, **people).nominate().mentor_confirms()
    story.record("system", ev.NotificationSent(kind="invitation_reminder",
                                               recipient_id=story.mentee_id, channel="email",
                                               message_id=f"m-{uuid.uuid4()}"), after=timedelta(days=7))
    return story.record("system", ev.InvitationExpired(mentee_id=story.mentee_id),
                        after=timedelta(days=7))


def withdrawn_during_sessions(pair_id: str, **people: str) -> PairStory:
    story = PairStory(pair_id, **people).nominate().mentor_confirms().mentee_consents().prepare()
    story.session(1).session(2, outcome="cancelled")
    return story.withdraw(story.mentee_id, "mentee", "sessions", reason="role_change")


def lapsed_after_risk(pair_id: str, **people: str) -> PairStory:
    story = PairStory(pair_id, **people).nominate().mentor_confirms().mentee_consents().prepare()
    return story.session(1, outcome="missed").go_idle_and_lapse()


def replaced_mentor(pair_id: str, new_mentor: str = "E101", **people: str) -> PairStory:
    story = PairStory(pair_id, **people).nominate().mentor_confirms().mentee_consents().prepare()
    story.session(1)
    story.record(story.hr_id, ev.PairPaused(paused_by=story.hr_id, stage="sessions",
                                            reason="mentor_leave"))
    story.record(story.hr_id, ev.MentorReplaced(previous_mentor_id=story.mentor_id,
                                                new_mentor_id=new_mentor, replaced_by=story.hr_id,
                                                reason="mentor_left"))
    story.mentor_id = new_mentor
    story.record(story.hr_id, ev.PairResumed(resumed_by=story.hr_id, paused_days=2.0))
    story.record(new_mentor, ev.MentorMotivationConfirmed(mentor_id=new_mentor))
    story.record(new_mentor, ev.TrainingModuleCompleted(mentor_id=new_mentor, module="listening"))
    story.record(story.hr_id, ev.MentorSignedOff(mentor_id=new_mentor, signed_off_by=story.hr_id))
    story.record(story.hr_id, ev.PairExtended(additional_sessions=1, extended_by=story.hr_id))
    return story.session(2)


STORIES = (full_lifecycle, declined_by_mentee, declined_by_mentor, expired_invitation,
           withdrawn_during_sessions, lapsed_after_risk, replaced_mentor)


def metadata(story: PairStory, step: Step) -> EventMetadata:
    return EventMetadata(actor=step.actor, workflow_id=f"pair-{story.pair_id}", run_id="run-1",
                         correlation_id=story.pair_id, trace_id=None, occurred_at=step.at)


async def write(store: PostgresEventStore, story: PairStory, *, from_step: int = 0,
                to_step: int | None = None) -> int:
    """Append the story's steps (a slice of them, to interleave stories); the events written."""
    version = sum(len(s.events) for s in story.steps[:from_step])
    written = 0
    for step in story.steps[from_step:to_step]:
        await store.append(story.stream_id, version,
                           [NewEvent.of(e, uuid.uuid4()) for e in step.events],
                           metadata(story, step))
        version += len(step.events)
        written += len(step.events)
    return written


async def write_all(store: PostgresEventStore, stories: list[PairStory]) -> int:
    return sum([await write(store, s) for s in stories])
