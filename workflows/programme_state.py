"""The state of one programme, the fold of its events: who is enrolled and how, and the latest
matching suggestion. Pseudonymous ids only, so it can be queried and carried across continue-as-new.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from events import programme as ev
from events.base import DomainEvent
from events.matching import Candidate, MatchingRules, MatchSuggestion


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
    version: int = Field(0, description="the event stream's version: the next append expects it")

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
