"""`MentoringProgramme`: one cohort, from its opening through enrolment to the matching HR reads.

Started like a pair, from the Temporal UI's Start Workflow form (workflow id
`programme-<programme_id>`, task queue `mentoring`, input `examples/programme-input.json`); a bad
input fails at once. Every fact goes to the stream `programme-<programme_id>`, with the same
exactly-once discipline as a pair's (ids and expected version decided here, appended by the
`append_events` activity); contact details go to the erasable `people` table.

    Updates: nominate_mentors (HR, in bulk), confirm_programme_motivation (the mentor),
             enrol_senior (the senior, or HR entering the senior's written request),
             withdraw_from_programme (anyone, at any time), suggest_matches (HR),
             accept_matches (HR: starts one MentoringPair per accepted pair, through an activity)
    Queries: state (who is enrolled, and how), matches (the latest suggestion, with its reasons)

Collective sessions, the programme's health and its close report come next (README, "Programmes").
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import events.programme as ev
    import workflows.search_attributes as attrs
    from events.base import DomainEvent, EventMetadata, NewEvent
    from events.matching import (
        Candidate,
        MatchingRequest,
        MatchSuggestion,
        SuggestedPair,
        WeeklyWindow,
    )
    from events.messages import (
        DATA_REFUSED,
        STREAM_CONFLICT,
        AppendRequest,
        AppendResponse,
        PairToStart,
        PersonContact,
        RegisterPeopleRequest,
        StartPairsRequest,
        StartPairsResponse,
    )
    from workflows.errors import (
        DataRefused,
        InvalidProgrammeInput,
        NotAParticipant,
        PairError,
        RuleViolation,
    )
    from workflows.inputs import ConfirmMotivation, _Action, pair_workflow_id
    from workflows.pair_effects import contact
    from workflows.payloads import F, read_form
    from workflows.programme_inputs import (
        AcceptMatches,
        EnrolSenior,
        MentorNominee,
        NominateMentors,
        ProgrammeInput,
        SeniorVolunteer,
        SuggestMatches,
        WithdrawFromProgramme,
    )
    from workflows.programme_state import ProgrammeState, apply

_ACTIVITY: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=10),
    "heartbeat_timeout": timedelta(seconds=5),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1)),
}
_MATCHING: dict[str, Any] = {  # seconds of CPU for thousands of people
    "start_to_close_timeout": timedelta(minutes=5),
    "heartbeat_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=5),
}


START_BATCH = 50  # pairs started per activity: bounded history, progress kept between batches
_STARTS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=2),
    "heartbeat_timeout": timedelta(seconds=10),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1)),
}


class ProgrammeAlreadyOpened(PairError):
    """The programme's event stream already exists."""


@workflow.defn(name="MentoringProgramme")
class MentoringProgramme:
    def __init__(self) -> None:
        self._state: ProgrammeState | None = None
        self._log = asyncio.Lock()  # one writer at a time: each append expects the previous version

    @property
    def programme(self) -> ProgrammeState:
        if self._state is None or self._state.version == 0:
            raise RuleViolation("the programme is still opening: try again in a moment.")
        return self._state

    @workflow.run
    async def run(self, *inputs: RawValue) -> int:
        if workflow.info().continued_run_id:
            carried = workflow.payload_converter().from_payload(inputs[0].payload, object)
            self._state = ProgrammeState.model_validate(carried)
        else:
            await self._open(read_form(ProgrammeInput, inputs, "This programme cannot start",
                                       InvalidProgrammeInput, as_recorded=False))
        self._publish()
        # Open until HR ends it (its close comes with the report); a long history starts afresh.
        await workflow.wait_condition(lambda: workflow.info().is_continue_as_new_suggested())
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self.programme)

    async def _open(self, programme: ProgrammeInput) -> None:
        self._state = ProgrammeState(programme_id=programme.programme_id,
                                     stream_id=ev.programme_stream(programme.programme_id),
                                     hr_owners=[o.employee_id for o in programme.hr_owners])
        try:
            await self._register([contact(o) for o in programme.hr_owners])
        except DataRefused as refusal:
            raise InvalidProgrammeInput(f"This programme cannot start: {refusal.message}") from None
        workflow.upsert_search_attributes([attrs.PROGRAMME.value_set(programme.programme_id)])
        async with self._log:
            try:
                await self._record(ev.ProgrammeOpened(
                    programme_id=programme.programme_id, hr_owners=self._state.hr_owners,
                    enrolment_closes=programme.dates.enrolment_closes, matching_on=programme.dates.matching_on,
                    sessions_end=programme.dates.sessions_end, topics={t.id: t.label for t in programme.topics},
                    sessions_planned=programme.sessions_planned, training_modules=list(programme.training_modules),
                    policy=programme.policy.in_force(),
                    matching=programme.matching), by=programme.hr_owners[0].employee_id)
            except ActivityError as err:
                if isinstance(err.cause, ApplicationError) and err.cause.type == STREAM_CONFLICT:
                    raise ProgrammeAlreadyOpened(
                        f"programme {programme.programme_id} was already opened: its history is in the "
                        "event log. Give a new programme its own id.") from None
                raise

    # --- enrolment ----------------------------------------------------------------------------

    @workflow.update(description="HR nominates juniors as mentors, several at once: each with their "
                     "availability, topics offered (catalogue ids), management chain and capacity.")
    async def nominate_mentors(self, *payloads: RawValue) -> ProgrammeState:
        request = self._read(NominateMentors, payloads, "nominate_mentors")
        await self._register([contact(m) for m in request.mentors])
        async with self._log:
            await self._record(ev.MentorsNominated(
                mentors=[_candidate(m, m.topics_offered, m.capacity) for m in request.mentors],
                nominated_by=request.recorded_by), by=request.recorded_by)
        return self.programme

    @nominate_mentors.validator
    def _check_nominate_mentors(self, *payloads: RawValue) -> None:
        request = self._read(NominateMentors, payloads, "nominate_mentors", vet=True)
        self._hr_only(request)
        for mentor in request.mentors:
            self._newcomer(mentor.employee_id)
            self._known_topics(mentor.topics_offered, f"mentor {mentor.employee_id}")

    @workflow.update(description="The mentor confirms their own motivation, once for the programme "
                     "(recorded_by = the mentor).")
    async def confirm_programme_motivation(self, *payloads: RawValue) -> ProgrammeState:
        request = self._read(ConfirmMotivation, payloads, "confirm_programme_motivation")
        async with self._log:
            await self._record(ev.MentorConfirmedForProgramme(mentor_id=request.recorded_by),
                               by=request.recorded_by)
        return self.programme

    @confirm_programme_motivation.validator
    def _check_confirm_programme_motivation(self, *payloads: RawValue) -> None:
        request = self._read(ConfirmMotivation, payloads, "confirm_programme_motivation", vet=True)
        who = request.recorded_by
        if who not in self.programme.mentors:
            raise NotAParticipant(f"{who} is not a mentor nominated for this programme: the mentor "
                                  "confirms their own motivation.")
        if who in self.programme.withdrawn:
            raise RuleViolation(f"{who} has withdrawn from the programme.")
        if who in self.programme.mentors_confirmed:
            raise RuleViolation(f"{who} has already confirmed their motivation for this programme.")

    @workflow.update(description="A senior takes part of their own will: recorded by the senior "
                     "(channel self_service), or by HR entering the senior's own written request "
                     "(email, letter or form, with its date).")
    async def enrol_senior(self, *payloads: RawValue) -> ProgrammeState:
        request = self._read(EnrolSenior, payloads, "enrol_senior")
        await self._register([contact(request.senior)])
        async with self._log:
            await self._record(ev.SeniorEnrolled(
                senior=_candidate(request.senior, request.senior.topics_wished, 1),
                channel=request.request.channel, requested_on=request.request.requested_on,
                entered_by=request.recorded_by), by=request.recorded_by)
        return self.programme

    @enrol_senior.validator
    def _check_enrol_senior(self, *payloads: RawValue) -> None:
        request = self._read(EnrolSenior, payloads, "enrol_senior", vet=True)
        senior = request.senior.employee_id
        if request.recorded_by != senior:
            self._hr_only(request)
        self._newcomer(senior)
        self._known_topics(request.senior.topics_wished, f"senior {senior}")
        if request.request.requested_on > workflow.now().date():
            raise RuleViolation("request.requested_on is in the future: give the day the senior asked.")

    @workflow.update(description="Anyone leaves the programme at any time, without penalty "
                     "(recorded by the person, or by HR).")
    async def withdraw_from_programme(self, *payloads: RawValue) -> ProgrammeState:
        request = self._read(WithdrawFromProgramme, payloads, "withdraw_from_programme")
        role = self.programme.role_of(request.employee_id)
        async with self._log:
            await self._record(ev.ParticipantWithdrew(
                employee_id=request.employee_id, role="mentor" if role == "mentor" else "senior",
                reason=request.reason, recorded_by=request.recorded_by), by=request.recorded_by)
        return self.programme

    @withdraw_from_programme.validator
    def _check_withdraw_from_programme(self, *payloads: RawValue) -> None:
        request = self._read(WithdrawFromProgramme, payloads, "withdraw_from_programme", vet=True)
        if request.recorded_by != request.employee_id:
            self._hr_only(request)
        if self.programme.role_of(request.employee_id) is None:
            raise NotAParticipant(f"{request.employee_id} is not enrolled in this programme.")
        if request.employee_id in self.programme.withdrawn:
            raise RuleViolation(f"{request.employee_id} has already withdrawn.")

    # --- matching -----------------------------------------------------------------------------

    @workflow.update(description="HR asks for the matching: the pairs that fit best under the hard "
                     "rules, each with its reasons, and why anyone is left out (query 'matches').")
    async def suggest_matches(self, *payloads: RawValue) -> MatchSuggestion:
        request = self._read(SuggestMatches, payloads, "suggest_matches")
        async with self._log:
            programme = self.programme
            suggestion = await workflow.execute_activity(
                "suggest_matches", MatchingRequest(programme_id=programme.programme_id,
                                                   mentors=programme.active_mentors(),
                                                   seniors=programme.active_seniors(), rules=programme.matching),
                result_type=MatchSuggestion, **_MATCHING)
            await self._record(ev.MatchesSuggested(pairs=suggestion.pairs, unmatched=suggestion.unmatched,
                                                   total_score=suggestion.total_score,
                                                   requested_by=request.recorded_by), by=request.recorded_by)
        return suggestion

    @suggest_matches.validator
    def _check_suggest_matches(self, *payloads: RawValue) -> None:
        request = self._read(SuggestMatches, payloads, "suggest_matches", vet=True)
        self._hr_only(request)
        if not self.programme.active_mentors() or not self.programme.active_seniors():
            raise RuleViolation("matching needs at least one mentor who confirmed their motivation and one "
                                "senior, both still in the programme.")

    @workflow.update(description="HR accepts suggested pairs ('seniors': their ids; empty: all): each "
                     "starts as a MentoringPair, where the senior still gives their own consent.")
    async def accept_matches(self, *payloads: RawValue) -> ProgrammeState:
        request = self._read(AcceptMatches, payloads, "accept_matches")
        async with self._log:
            programme = self.programme
            chosen = _chosen(programme, request)
            await self._record(ev.MatchesAccepted(accepted_by=request.recorded_by, pairs=[ev.AcceptedPair(
                senior_id=p.senior_id, mentor_id=p.mentor_id,
                pair_workflow_id=pair_workflow_id(programme.programme_id, p.mentor_id, p.senior_id))
                for p in chosen]), by=request.recorded_by)
            for first in range(0, len(chosen), START_BATCH):
                batch = [self._pair_to_start(p, request.recorded_by) for p in chosen[first:first + START_BATCH]]
                started = await workflow.execute_activity(
                    "start_pairs", StartPairsRequest(pairs=batch), result_type=StartPairsResponse, **_STARTS)
                await self._record(ev.PairsStarted(
                    started=[o.workflow_id for o in started.outcomes if o.problem is None],
                    not_started=[ev.PairNotStarted(pair_workflow_id=o.workflow_id, problem=o.problem)
                                 for o in started.outcomes if o.problem is not None]), by="system")
        return self.programme

    @accept_matches.validator
    def _check_accept_matches(self, *payloads: RawValue) -> None:
        request = self._read(AcceptMatches, payloads, "accept_matches", vet=True)
        self._hr_only(request)
        if self.programme.suggestion is None:
            raise RuleViolation("there is no suggestion to accept yet: send suggest_matches first.")
        chosen = _chosen(self.programme, request)
        if not chosen:
            raise RuleViolation("every suggested pair is accepted already.")
        gone = [p.senior_id for p in chosen if {p.senior_id, p.mentor_id} & set(self.programme.withdrawn)]
        if gone:
            raise RuleViolation(f"pairs with someone who has withdrawn since the suggestion: seniors "
                                f"{', '.join(gone[:10])}. Send suggest_matches again.")

    def _pair_to_start(self, pair: SuggestedPair, hr: str) -> PairToStart:
        programme = self.programme
        mentor, senior = programme.mentors[pair.mentor_id], programme.seniors[pair.senior_id]
        return PairToStart(
            workflow_id=pair_workflow_id(programme.programme_id, pair.mentor_id, pair.senior_id),
            task_queue=workflow.info().task_queue, programme_id=programme.programme_id,
            mentor_id=mentor.employee_id, mentor_time_zone=mentor.time_zone,
            mentor_topics=[programme.topics[t] for t in mentor.topics],
            mentee_id=senior.employee_id, mentee_time_zone=senior.time_zone,
            mentee_availability=list(senior.availability),
            mentee_topics=[programme.topics[t] for t in senior.topics],
            topics=[programme.topics[t] for t in pair.topics], nominated_by=hr,
            hr_team=[h for h in programme.hr_owners if h != hr], sessions_planned=programme.sessions_planned,
            training_modules=programme.training_modules, policy=programme.policy)

    @workflow.query(description="The programme: who is enrolled and how, and the latest suggestion "
                    "(pseudonymous ids only).")
    def state(self) -> ProgrammeState:
        return self.programme

    @workflow.query(description="The latest matching suggestion: pairs with their scores and reasons, "
                    "and everyone left out with why.")
    def matches(self) -> MatchSuggestion | None:
        return self.programme.suggestion

    # --- effects ------------------------------------------------------------------------------

    def _read(self, form: type[F], payloads: tuple[RawValue, ...], update: str, *, vet: bool = False) -> F:
        """The update's form (a validator reads it with today's checks; a handler as accepted)."""
        return read_form(form, payloads, f"The update '{update}' was refused", as_recorded=not vet)

    def _hr_only(self, request: _Action) -> None:
        if request.recorded_by not in self.programme.hr_owners:
            raise NotAParticipant(f"{request.recorded_by} is not an HR owner of this programme: only they "
                                  "may record this.")

    def _newcomer(self, employee_id: str) -> None:
        programme = self.programme
        if employee_id in programme.hr_owners:
            raise RuleViolation(f"{employee_id} is an HR owner of this programme: they cannot also take part.")
        role = programme.role_of(employee_id)
        if role is not None:
            raise RuleViolation(f"{employee_id} is already enrolled in this programme as a {role}.")

    def _known_topics(self, topics: list[str], whose: str) -> None:
        unknown = [t for t in topics if t not in self.programme.topics]
        if unknown:
            raise RuleViolation(f"{whose}: topic(s) not in the programme's catalogue: {', '.join(unknown[:10])}. "
                                f"The catalogue: {', '.join(sorted(self.programme.topics))}.")

    async def _register(self, people: list[PersonContact]) -> None:
        try:
            await workflow.execute_activity("register_people", RegisterPeopleRequest(people=people), **_ACTIVITY)
        except ActivityError as err:
            if isinstance(err.cause, ApplicationError) and err.cause.type == DATA_REFUSED:
                raise DataRefused(f"The contact details were refused: {err.cause.message}") from None
            raise

    async def _record(self, *events: DomainEvent, by: str) -> None:
        """Append to the programme's stream (ids and expected version decided here, so a retried
        append writes nothing twice), then fold the events into the state."""
        assert self._state is not None
        info, update = workflow.info(), workflow.current_update_info()
        request = AppendRequest(
            stream_id=self._state.stream_id, expected_version=self._state.version,
            events=[NewEvent.of(e, workflow.uuid4()) for e in events],
            metadata=EventMetadata(actor=by, workflow_id=info.workflow_id, run_id=info.run_id,
                                   correlation_id=self._state.programme_id,
                                   causation_id=update.id if update else None, occurred_at=workflow.now()))
        appended = await workflow.execute_activity("append_events", request, result_type=AppendResponse,
                                                   **_ACTIVITY)
        self._state.version = appended.version
        for event in events:
            apply(self._state, event)
        self._publish()

    def _publish(self) -> None:
        """The UI's current details: where the programme stands (ids and counts only)."""
        if self._state is None or self._state.version == 0:
            return
        p = self._state
        lines = [f"**Mentors:** {len(p.mentors)} nominated, {len(p.mentors_confirmed)} confirmed",
                 f"**Seniors enrolled:** {len(p.seniors)}", f"**Withdrawn:** {len(p.withdrawn)}"]
        if p.suggestion is not None:
            lines.append(f"**Matching:** {len(p.suggestion.pairs)} pair(s) suggested, "
                         f"{len(p.suggestion.unmatched)} person(s) left out (query `matches`)")
        workflow.set_current_details("\n".join(lines))


def _candidate(person: MentorNominee | SeniorVolunteer, topics: list[str], capacity: int) -> Candidate:
    """What matching needs of a person, and the log keeps: no name, no e-mail address."""
    return Candidate(employee_id=person.employee_id, time_zone=person.time_zone,
                     availability=[WeeklyWindow(weekday=w.weekday, start=w.start, end=w.end)
                                   for w in person.availability],
                     topics=list(topics), management_chain=list(person.management_chain), capacity=capacity)


def _chosen(programme: ProgrammeState, request: AcceptMatches) -> list[SuggestedPair]:
    """The suggested pairs HR names (all when none is named), not accepted before."""
    suggestion = programme.suggestion
    if suggestion is None:
        return []
    wanted = set(request.seniors)
    unknown = wanted - {p.senior_id for p in suggestion.pairs}
    if unknown:
        raise RuleViolation(f"no suggested pair for senior(s) {', '.join(sorted(unknown)[:10])}: "
                            "read the query 'matches'.")
    return [p for p in suggestion.pairs
            if (not wanted or p.senior_id in wanted) and p.senior_id not in programme.accepted]
