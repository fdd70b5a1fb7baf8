"""The state of one programme, the fold of its events: who is enrolled and how, and the latest
matching suggestion. Pseudonymous ids only, so it can be queried and carried across continue-as-new.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from events import programme as ev
from events.base import DomainEvent
from events.matching import Candidate, MatchingRules, MatchSuggestion


class GroupSession(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_no: int
    topic: str
    starts_at: datetime
    duration_minutes: int
    leaders: list[str]
    pairs: list[ev.GroupInvitee]
    status: Literal["scheduled", "held", "cancelled"] = "scheduled"
    attended: list[str] = Field(default_factory=list)
    ratings: dict[str, int] = Field(default_factory=dict, description="employee id -> 1..5")

    def invited(self) -> list[str]:
        """Everyone the session is for: leaders, the seniors and their pairs' mentors."""
        people = list(self.leaders)
        for pair in self.pairs:
            people += [i for i in (pair.senior_id, pair.mentor_id) if i not in people]
        return people


class ProgrammeState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    programme_id: str
    stream_id: str
    hr_owners: list[str]
    topics: dict[str, str] = Field(default_factory=dict, description="the catalogue: id -> label")
    matching: MatchingRules = Field(default_factory=MatchingRules)
    sessions_planned: int = 6
    training_modules: list[str] = Field(default_factory=list)
    policy: dict[str, str] = Field(default_factory=dict)
    mentors: dict[str, Candidate] = Field(default_factory=dict, description="nominated, by employee id")
    mentors_confirmed: list[str] = Field(default_factory=list)
    seniors: dict[str, Candidate] = Field(default_factory=dict, description="enrolled, by employee id")
    withdrawn: list[str] = Field(default_factory=list)
    suggestion: MatchSuggestion | None = None
    accepted: dict[str, str] = Field(default_factory=dict, description="senior id -> mentor id, as HR accepted")
    pairs_started: list[str] = Field(default_factory=list, description="pair workflow ids")
    pairs_not_started: list[ev.PairNotStarted] = Field(default_factory=list)
    sessions_end: date | None = None
    at_sessions_end: Literal["cancel_open_pairs", "let_pairs_finish"] = "cancel_open_pairs"
    health_every: timedelta = timedelta(hours=1)
    digest_every: timedelta = timedelta(days=7)
    group_sessions: dict[int, GroupSession] = Field(default_factory=dict)
    extended: list[str] = Field(default_factory=list, description="pair workflow ids HR kept past the end")
    sessions_ended: bool = False
    wound_down: list[str] = Field(default_factory=list, description="pairs cancelled at the sessions' end")
    closed: bool = False
    report: ev.ProgrammeFigures | None = None
    version: int = Field(0, description="the event stream's version: the next append expects it")
    # The workflow's own bookkeeping (not facts of the log): carried across continue-as-new.
    figures: ev.ProgrammeFigures | None = Field(None, description="the latest health check")
    next_health_at: datetime | None = None
    next_digest_at: datetime | None = None

    def active_mentors(self) -> list[Candidate]:
        """Nominated, confirmed their motivation, still in the programme: matching pairs them."""
        return [m for i, m in self.mentors.items() if i in self.mentors_confirmed and i not in self.withdrawn]

    def active_seniors(self) -> list[Candidate]:
        return [s for i, s in self.seniors.items() if i not in self.withdrawn]

    def role_of(self, employee_id: str) -> str | None:
        if employee_id in self.mentors:
            return "mentor"
        if employee_id in self.seniors:
            return "senior"
        return None


def apply(state: ProgrammeState, event: DomainEvent) -> None:
    """Fold one recorded event into the state (in place)."""
    match event:
        case ev.ProgrammeOpened():
            state.topics, state.matching = dict(event.topics), event.matching
            state.sessions_planned, state.training_modules = event.sessions_planned, list(event.training_modules)
            state.policy = {k: str(v) for k, v in event.policy.items()}
            state.sessions_end, state.at_sessions_end = event.sessions_end, event.at_sessions_end
            state.health_every, state.digest_every = event.health_every, event.digest_every
        case ev.MentorsNominated(mentors=mentors):
            state.mentors.update({m.employee_id: m for m in mentors})
        case ev.MentorConfirmedForProgramme(mentor_id=mentor):
            state.mentors_confirmed.append(mentor)
        case ev.SeniorEnrolled(senior=senior):
            state.seniors[senior.employee_id] = senior
        case ev.ParticipantWithdrew(employee_id=who):
            state.withdrawn.append(who)
        case ev.MatchesSuggested():
            state.suggestion = MatchSuggestion(programme_id=state.programme_id, pairs=event.pairs,
                                               unmatched=event.unmatched, total_score=event.total_score)
        case ev.MatchesAccepted(pairs=pairs):
            state.accepted.update({p.senior_id: p.mentor_id for p in pairs})
        case ev.PairsStarted(started=started, not_started=not_started):
            state.pairs_started += [w for w in started if w not in state.pairs_started]
            state.pairs_not_started += not_started
        case ev.GroupSessionScheduled():
            state.group_sessions[event.session_no] = GroupSession(
                session_no=event.session_no, topic=event.topic, starts_at=event.starts_at,
                duration_minutes=event.duration_minutes, leaders=list(event.leaders), pairs=list(event.pairs))
        case ev.GroupSessionHeld(session_no=number, attended=attended):
            state.group_sessions[number].status, state.group_sessions[number].attended = "held", list(attended)
        case ev.GroupSessionCancelled(session_no=number):
            state.group_sessions[number].status = "cancelled"
        case ev.GroupSessionFeedbackGiven(session_no=number, employee_id=who, rating=rating):
            state.group_sessions[number].ratings[who] = rating
        case ev.PairsExtended(pair_workflow_ids=ids):
            state.extended += [i for i in ids if i not in state.extended]
        case ev.ProgrammeSessionsEnded(cancelled=cancelled):
            state.sessions_ended, state.wound_down = True, list(cancelled)
        case ev.ProgrammeClosed(report=report):
            state.closed, state.report = True, report


class ProgrammeAck(BaseModel):
    """What an update answers: one line on what was recorded and the programme's counts.

    Small on purpose: every update's answer is kept in the workflow's history, and the whole state
    of a cohort of thousands would fill it within a few hundred updates (the query `state` has it).
    """

    model_config = ConfigDict(extra="forbid")

    programme_id: str
    version: int
    recorded: str
    counts: dict[str, int]


def acknowledge(state: ProgrammeState, recorded: str) -> ProgrammeAck:
    return ProgrammeAck(programme_id=state.programme_id, version=state.version, recorded=recorded, counts={
        "mentors_nominated": len(state.mentors), "mentors_confirmed": len(state.mentors_confirmed),
        "seniors_enrolled": len(state.seniors), "withdrawn": len(state.withdrawn),
        "pairs_suggested": len(state.suggestion.pairs) if state.suggestion else 0,
        "pairs_accepted": len(state.accepted), "pairs_started": len(state.pairs_started),
        "pairs_not_started": len(state.pairs_not_started), "group_sessions": len(state.group_sessions)})


def for_next_run(state: ProgrammeState) -> ProgrammeState:
    """The state a fresh run starts from (continue-as-new): the suggestion without its reasons,
    which are the bulk of it and stay in the log (`mentoring programme matches` reads them there)."""
    carried = state.model_copy()
    if state.suggestion is not None:
        carried.suggestion = state.suggestion.model_copy(update={
            "pairs": [p.model_copy(update={"reasons": []}) for p in state.suggestion.pairs],
            "unmatched": [u.model_copy(update={"reason": "(in the log: mentoring programme matches)"})
                          for u in state.suggestion.unmatched]})
    return carried
