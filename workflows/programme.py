"""`MentoringProgramme`: one cohort, from its opening through enrolment, matching, its pairs'
sessions and collective sessions, to its close report.

Started like a pair, from the Temporal UI's Start Workflow form (workflow id
`programme-<programme_id>`, task queue `mentoring`, input `examples/programme-input.json`); a bad
input fails at once. Every fact goes to the stream `programme-<programme_id>`, with the same
exactly-once discipline as a pair's (ids and expected version decided here, appended by the
`append_events` activity); contact details go to the erasable `people` table.

    Updates: nominate_mentors (HR, in bulk), confirm_programme_motivation (the mentor),
             enrol_senior (the senior, or HR entering the senior's written request),
             withdraw_from_programme (anyone, at any time), suggest_matches (HR),
             accept_matches (HR: starts one MentoringPair per accepted pair, through an activity),
             propose_group_session, record_group_attendance, cancel_group_session (HR),
             rate_group_session (who attended), extend_pairs, end_sessions (HR)
    Queries: state, matches (the latest suggestion, with its reasons), figures (the latest health)

On its own, it reads its pairs' progress from the log every `health_every` (activities/
programme_health.py says why a timer and not signals from the pairs), keeps its current details
and search attributes true, mails the HR owners a digest every `digest_every`, winds pairs down
when the sessions end, and closes with its report once every pair has ended.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import events.programme as ev
    import workflows.group_sessions as group_sessions
    import workflows.search_attributes as attrs
    import workflows.timezones as timezones
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
        NotificationReceipt,
        NotificationRequest,
        PairToStart,
        PersonContact,
        ProgrammeFiguresRequest,
        RegisterPeopleRequest,
        SessionDetails,
        StartPairsRequest,
        StartPairsResponse,
        WindDownRequest,
        WindDownResponse,
    )
    from projections.programme_figures import all_closed
    from workflows.errors import (
        DataRefused,
        InvalidProgrammeInput,
        NotAParticipant,
        OutsideAvailability,
        PairError,
        RuleViolation,
    )
    from workflows.inputs import ConfirmMotivation, _Action, pair_workflow_id
    from workflows.pair_effects import DEFAULT_HISTORY_LIMIT, HISTORY_LIMIT_MEMO, contact
    from workflows.payloads import F, read_form
    from workflows.programme_inputs import (
        AcceptMatches,
        CancelGroupSession,
        EndSessions,
        EnrolSenior,
        ExtendPairs,
        MentorNominee,
        NominateMentors,
        ProgrammeInput,
        ProposeGroupSession,
        RateGroupSession,
        RecordGroupAttendance,
        SeniorVolunteer,
        SuggestMatches,
        WithdrawFromProgramme,
    )
    from workflows.programme_state import (
        GroupSession,
        ProgrammeAck,
        ProgrammeState,
        acknowledge,
        apply,
        for_next_run,
    )

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


_NOTIFY: dict[str, Any] = {  # a notice that cannot go out is left out, never holds the programme
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=10,
                                non_retryable_error_types=["RecipientUnavailable", "DeliveryRefused"]),
}
_FIGURES: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=2),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1)),
}
CONSENTED_STAGES = ("preparation", "sessions", "final_evaluation", "follow_up")
"""The stages of a running pair whose senior consented: who a collective session may invite."""
WIND_DOWN_STAGES = ("starting", "awaiting_motivation", "mentee_invited", "preparation", "sessions")
"""The stages of a pair the sessions' end winds down (under the policy `cancel_open_pairs`)."""


# Each update's rules (`_rules_<update>`) run twice: in its validator, so a refusal records nothing
# and shows in the UI at once; and in its handler under the log's lock, right before recording,
# since another update (or the programme's own timers) may have changed the programme meanwhile.


class ProgrammeRenewing(PairError):
    """The programme is continuing as new: send the update again in a moment."""


class ProgrammeAlreadyOpened(PairError):
    """The programme's event stream already exists."""


@workflow.defn(name="MentoringProgramme")
class MentoringProgramme:
    @workflow.init
    def __init__(self, *inputs: RawValue) -> None:
        self._state: ProgrammeState | None = None
        if workflow.info().continued_run_id:
            # Here, not in run(): updates waiting for the fresh run are validated before run()
            # starts, and must find the carried state, not "still opening".
            carried = workflow.payload_converter().from_payload(inputs[0].payload, object)
            self._state = ProgrammeState.model_validate(carried)
        self._log = asyncio.Lock()  # one writer at a time: each append expects the previous version
        self._woken = False  # an update changed what is due next
        self._renewing = False  # continuing as new: new updates are refused, to be sent again
        self._at_risk_shown: bool | None = None  # None: write it once in each run (continue-as-new)
        self._phase_shown: str | None = None

    @property
    def programme(self) -> ProgrammeState:
        if self._state is None or self._state.version == 0:
            raise RuleViolation("the programme is still opening: try again in a moment.")
        return self._state

    @workflow.run
    async def run(self, *inputs: RawValue) -> int:
        if not workflow.info().continued_run_id:
            await self._open(read_form(ProgrammeInput, inputs, "This programme cannot start",
                                       InvalidProgrammeInput, as_recorded=False))
        self._publish()
        while not self.programme.closed:
            if self._history_is_long():  # a long history starts afresh
                # Updates keep coming from a busy cohort: refuse new ones for the moment it takes
                # the ones under way to finish, else the fresh run would never start.
                self._renewing = True
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(for_next_run(self.programme))
            due = self._next_due()
            self._woken = False
            timeout = max((due - workflow.now()).total_seconds(), 0.001) if due else None
            try:
                await workflow.wait_condition(lambda: self._woken or self._history_is_long(), timeout=timeout)
            except TimeoutError:
                pass
            await self._what_is_due()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.programme.version

    def _history_is_long(self) -> bool:
        """Temporal suggests a fresh run (history size or length); a memo may ask for it sooner
        (tests, and operators who want smaller histories)."""
        info = workflow.info()
        limit = workflow.memo_value(HISTORY_LIMIT_MEMO, DEFAULT_HISTORY_LIMIT, type_hint=int)
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= limit

    def _sessions_end_at(self) -> datetime | None:
        """The sessions end with the last day of `sessions_end` (UTC): the programme's one clock."""
        end = self.programme.sessions_end
        return datetime.combine(end + timedelta(days=1), time(0), tzinfo=UTC) if end else None

    def _next_due(self) -> datetime | None:
        p = self.programme
        due = [p.next_health_at, p.next_digest_at, None if p.sessions_ended else self._sessions_end_at()]
        return min((d for d in due if d is not None), default=None)

    async def _what_is_due(self) -> None:
        p, now = self.programme, workflow.now()
        end_at = self._sessions_end_at()
        if not p.sessions_ended and end_at is not None and now >= end_at:
            await self._end_sessions("system")
        if p.next_health_at is not None and now >= p.next_health_at:
            p.next_health_at = now + p.health_every
            await self._check_health()
            if p.figures is not None and p.sessions_ended and all_closed(p.figures):
                await self._close()
                return
        if p.next_digest_at is not None and now >= p.next_digest_at:
            p.next_digest_at = now + p.digest_every
            await self._send_digest()

    async def _open(self, programme: ProgrammeInput) -> None:
        if programme.dates.sessions_end < workflow.now().date():
            raise InvalidProgrammeInput(
                f"This programme cannot start: dates.sessions_end {programme.dates.sessions_end} is in the "
                "past (the programme would close at once). Give the day its sessions end.")
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
                    policy=programme.policy.in_force(), matching=programme.matching,
                    at_sessions_end=programme.at_sessions_end, health_every=programme.health_every,
                    digest_every=programme.digest_every), by=programme.hr_owners[0].employee_id)
                self._state.next_digest_at = workflow.now() + programme.digest_every
            except ActivityError as err:
                if isinstance(err.cause, ApplicationError) and err.cause.type == STREAM_CONFLICT:
                    raise ProgrammeAlreadyOpened(
                        f"programme {programme.programme_id} was already opened: its history is in the "
                        "event log. Give a new programme its own id.") from None
                raise

    # --- enrolment ----------------------------------------------------------------------------

    @workflow.update(description="HR nominates juniors as mentors, several at once: each with their "
                     "availability, topics offered (catalogue ids), management chain and capacity.")
    async def nominate_mentors(self, *payloads: RawValue) -> ProgrammeAck:
        request = self._read(NominateMentors, payloads, "nominate_mentors")
        await self._register([contact(m) for m in request.mentors])
        async with self._log:
            self._rules_nominate_mentors(request)
            await self._record(ev.MentorsNominated(
                mentors=[_candidate(m, m.topics_offered, m.capacity) for m in request.mentors],
                nominated_by=request.recorded_by), by=request.recorded_by)
        return acknowledge(self.programme, f"{len(request.mentors)} mentor(s) nominated")

    @nominate_mentors.validator
    def _check_nominate_mentors(self, *payloads: RawValue) -> None:
        self._rules_nominate_mentors(self._read(NominateMentors, payloads, "nominate_mentors", vet=True))

    def _rules_nominate_mentors(self, request: NominateMentors) -> None:
        self._hr_only(request)
        for mentor in request.mentors:
            self._newcomer(mentor.employee_id)
            self._known_topics(mentor.topics_offered, f"mentor {mentor.employee_id}")

    @workflow.update(description="The mentor confirms their own motivation, once for the programme "
                     "(recorded_by = the mentor).")
    async def confirm_programme_motivation(self, *payloads: RawValue) -> ProgrammeAck:
        request = self._read(ConfirmMotivation, payloads, "confirm_programme_motivation")
        async with self._log:
            self._rules_confirm_programme_motivation(request)
            await self._record(ev.MentorConfirmedForProgramme(mentor_id=request.recorded_by),
                               by=request.recorded_by)
        return acknowledge(self.programme, f"mentor {request.recorded_by} confirmed their motivation")

    @confirm_programme_motivation.validator
    def _check_confirm_programme_motivation(self, *payloads: RawValue) -> None:
        self._rules_confirm_programme_motivation(self._read(ConfirmMotivation, payloads, "confirm_programme_motivation", vet=True))

    def _rules_confirm_programme_motivation(self, request: ConfirmMotivation) -> None:
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
    async def enrol_senior(self, *payloads: RawValue) -> ProgrammeAck:
        request = self._read(EnrolSenior, payloads, "enrol_senior")
        await self._register([contact(request.senior)])
        async with self._log:
            self._rules_enrol_senior(request)
            await self._record(ev.SeniorEnrolled(
                senior=_candidate(request.senior, request.senior.topics_wished, 1),
                channel=request.request.channel, requested_on=request.request.requested_on,
                entered_by=request.recorded_by), by=request.recorded_by)
        return acknowledge(self.programme, f"senior {request.senior.employee_id} enrolled ({request.request.channel})")

    @enrol_senior.validator
    def _check_enrol_senior(self, *payloads: RawValue) -> None:
        self._rules_enrol_senior(self._read(EnrolSenior, payloads, "enrol_senior", vet=True))

    def _rules_enrol_senior(self, request: EnrolSenior) -> None:
        senior = request.senior.employee_id
        if request.recorded_by != senior:
            self._hr_only(request)
        self._newcomer(senior)
        self._known_topics(request.senior.topics_wished, f"senior {senior}")
        if request.request.requested_on > workflow.now().date():
            raise RuleViolation("request.requested_on is in the future: give the day the senior asked.")

    @workflow.update(description="Anyone leaves the programme at any time, without penalty "
                     "(recorded by the person, or by HR).")
    async def withdraw_from_programme(self, *payloads: RawValue) -> ProgrammeAck:
        request = self._read(WithdrawFromProgramme, payloads, "withdraw_from_programme")
        role = self.programme.role_of(request.employee_id)
        async with self._log:
            self._rules_withdraw_from_programme(request)
            await self._record(ev.ParticipantWithdrew(
                employee_id=request.employee_id, role="mentor" if role == "mentor" else "senior",
                reason=request.reason, recorded_by=request.recorded_by), by=request.recorded_by)
        return acknowledge(self.programme, f"{request.employee_id} withdrew from the programme")

    @withdraw_from_programme.validator
    def _check_withdraw_from_programme(self, *payloads: RawValue) -> None:
        self._rules_withdraw_from_programme(self._read(WithdrawFromProgramme, payloads, "withdraw_from_programme", vet=True))

    def _rules_withdraw_from_programme(self, request: WithdrawFromProgramme) -> None:
        if request.recorded_by != request.employee_id:
            self._hr_only(request)
        if self.programme.role_of(request.employee_id) is None:
            raise NotAParticipant(f"{request.employee_id} is not enrolled in this programme.")
        if request.employee_id in self.programme.withdrawn:
            raise RuleViolation(f"{request.employee_id} has already withdrawn.")

    # --- matching -----------------------------------------------------------------------------

    @workflow.update(description="HR asks for the matching: the pairs that fit best under the hard "
                     "rules, each with its reasons, and why anyone is left out (query 'matches').")
    async def suggest_matches(self, *payloads: RawValue) -> ProgrammeAck:
        request = self._read(SuggestMatches, payloads, "suggest_matches")
        async with self._log:
            self._rules_suggest_matches(request)
            programme = self.programme
            suggestion = await workflow.execute_activity(
                "suggest_matches", MatchingRequest(programme_id=programme.programme_id,
                                                   mentors=programme.active_mentors(),
                                                   seniors=programme.active_seniors(), rules=programme.matching),
                result_type=MatchSuggestion, **_MATCHING)
            await self._record(ev.MatchesSuggested(pairs=suggestion.pairs, unmatched=suggestion.unmatched,
                                                   total_score=suggestion.total_score,
                                                   requested_by=request.recorded_by), by=request.recorded_by)
        return acknowledge(self.programme, (
            f"{len(suggestion.pairs)} pair(s) suggested (total fit {suggestion.total_score:.2f}), "
            f"{len(suggestion.unmatched)} person(s) left out: the query 'matches' shows each with its "
            "reasons (or `mentoring programme matches`)"))

    @suggest_matches.validator
    def _check_suggest_matches(self, *payloads: RawValue) -> None:
        self._rules_suggest_matches(self._read(SuggestMatches, payloads, "suggest_matches", vet=True))

    def _rules_suggest_matches(self, request: SuggestMatches) -> None:
        self._hr_only(request)
        if not self.programme.active_mentors() or not self.programme.active_seniors():
            raise RuleViolation("matching needs at least one mentor who confirmed their motivation and one "
                                "senior, both still in the programme.")

    @workflow.update(description="HR accepts suggested pairs ('seniors': their ids; empty: all): each "
                     "starts as a MentoringPair, where the senior still gives their own consent.")
    async def accept_matches(self, *payloads: RawValue) -> ProgrammeAck:
        request = self._read(AcceptMatches, payloads, "accept_matches")
        async with self._log:
            self._rules_accept_matches(request)
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
        self._check_health_now()
        problems = self.programme.pairs_not_started[-3:]
        return acknowledge(self.programme, f"{len(chosen)} pair(s) accepted; {len(self.programme.pairs_started)} "
                           "started in all" + "".join(f"; not started: {p.pair_workflow_id} ({p.problem})"
                                                      for p in problems))

    @accept_matches.validator
    def _check_accept_matches(self, *payloads: RawValue) -> None:
        self._rules_accept_matches(self._read(AcceptMatches, payloads, "accept_matches", vet=True))

    def _rules_accept_matches(self, request: AcceptMatches) -> None:
        self._hr_only(request)
        if self.programme.sessions_ended:
            raise RuleViolation("the programme's sessions have ended: no new pair starts now.")
        if self.programme.suggestion is None:
            raise RuleViolation("there is no suggestion to accept yet: send suggest_matches first.")
        chosen = _chosen(self.programme, request)
        if not chosen:
            raise RuleViolation("every suggested pair is accepted already.")
        gone = [p.senior_id for p in chosen if {p.senior_id, p.mentor_id} & set(self.programme.withdrawn)]
        if gone:
            raise RuleViolation(f"pairs with someone who has withdrawn since the suggestion: seniors "
                                f"{', '.join(gone[:10])}. Send suggest_matches again.")

    # --- collective sessions ------------------------------------------------------------------

    @workflow.update(description="HR sets a collective session on a catalogue topic, led by mentors, "
                     "for the pairs of the seniors named; the time must fit every invited senior's "
                     "availability (else the refusal names who cannot come and the nearest time that "
                     "fits most). Everyone invited gets an .ics.")
    async def propose_group_session(self, *payloads: RawValue) -> GroupSession:
        request = self._read(ProposeGroupSession, payloads, "propose_group_session")
        async with self._log:
            self._rules_propose_group_session(request)
            self._consented(request.seniors, await self._figures(with_stages=True))
            programme = self.programme
            number = len(programme.group_sessions) + 1
            await self._record(ev.GroupSessionScheduled(
                session_no=number, topic=request.topic, starts_at=request.starts_at.astimezone(UTC),
                duration_minutes=request.duration_minutes, leaders=request.leaders,
                pairs=[self._invitee(s) for s in request.seniors], scheduled_by=request.recorded_by),
                by=request.recorded_by)
            session = programme.group_sessions[number]
        await self._invite(session, "group_session_invitation")  # outside the lock: mail may be slow
        return session

    def _consented(self, seniors: list[str], figures: ev.ProgrammeFigures) -> None:
        """Only seniors who consented, in a pair still running, are invited: the log, read just
        now, says which (the state knows which pairs started, not where each stands)."""
        programme = self.programme
        out = [s for s in seniors
               if figures.stage_of.get(pair_workflow_id(programme.programme_id, programme.accepted[s], s))
               not in CONSENTED_STAGES]
        if out:
            raise RuleViolation(f"senior(s) {', '.join(out[:10])}: only seniors who consented, in a pair "
                                "still running, are invited to a collective session.")

    @propose_group_session.validator
    def _check_propose_group_session(self, *payloads: RawValue) -> None:
        self._rules_propose_group_session(self._read(ProposeGroupSession, payloads, "propose_group_session", vet=True))

    def _rules_propose_group_session(self, request: ProposeGroupSession) -> None:
        self._hr_only(request)
        programme = self.programme
        if programme.sessions_ended:
            raise RuleViolation("the programme's sessions have ended: no new collective session.")
        self._known_topics([request.topic], "the session")
        leaders = [m for m in request.leaders if m not in programme.mentors_confirmed or m in programme.withdrawn]
        if leaders:
            raise RuleViolation(f"leader(s) {', '.join(leaders)}: a collective session is led by mentors of "
                                "the programme who confirmed their motivation and are still in it.")
        for senior in request.seniors:
            self._invitee(senior)
        starts_at = request.starts_at.astimezone(UTC)
        if starts_at <= workflow.now():
            raise RuleViolation(f"the session start {starts_at:%Y-%m-%d %H:%M} UTC is in the past: propose "
                                "a future time.")
        if starts_at > workflow.now() + timedelta(days=2 * 366):
            raise RuleViolation("the session start is more than two years ahead.")
        seniors = [programme.seniors[s] for s in request.seniors]
        missing = group_sessions.cannot_come(seniors, starts_at, request.duration_minutes)
        if missing:
            better = group_sessions.nearest_fit(seniors, starts_at, request.duration_minutes)
            hint = ("Nobody invited is available in the two weeks after it." if better is None else
                    f"The nearest time that fits most: {better.starts_at.isoformat()} "
                    f"({better.can_come} of {len(seniors)} can come"
                    + (f"; not {', '.join(better.cannot_come[:10])}" if better.cannot_come else "") + ").")
            shown = "; ".join(
                f"{s} ({timezones.shown(starts_at, programme.seniors[s].time_zone)}, outside "
                + ", ".join(f"{w.weekday} {w.start:%H:%M}-{w.end:%H:%M}" for w in programme.seniors[s].availability)
                + ")" for s in missing[:10])
            raise OutsideAvailability(f"{len(missing)} invited senior(s) cannot come: {shown}. {hint}")

    @workflow.update(description="HR records who attended a collective session (employee ids); each "
                     "attending pair's trail shows the session.")
    async def record_group_attendance(self, *payloads: RawValue) -> GroupSession:
        request = self._read(RecordGroupAttendance, payloads, "record_group_attendance")
        async with self._log:
            self._rules_record_group_attendance(request)
            session = self.programme.group_sessions[request.session_no]
            came = set(request.attended)
            await self._record(ev.GroupSessionHeld(
                session_no=request.session_no, attended=request.attended, recorded_by=request.recorded_by,
                pairs_attending=[p.pair_workflow_id for p in session.pairs if came & {p.senior_id, p.mentor_id}]),
                by=request.recorded_by)
        return self.programme.group_sessions[request.session_no]

    @record_group_attendance.validator
    def _check_record_group_attendance(self, *payloads: RawValue) -> None:
        self._rules_record_group_attendance(self._read(RecordGroupAttendance, payloads, "record_group_attendance", vet=True))

    def _rules_record_group_attendance(self, request: RecordGroupAttendance) -> None:
        self._hr_only(request)
        session = self._group_session(request.session_no, "scheduled")
        if session.starts_at > workflow.now():
            raise RuleViolation(f"collective session {session.session_no} has not begun yet "
                                f"({session.starts_at.isoformat()}): record who came once it has.")
        strangers = [i for i in request.attended if i not in session.invited()]
        if strangers:
            raise NotAParticipant(f"not invited to collective session {session.session_no}: "
                                  f"{', '.join(strangers[:10])}.")

    @workflow.update(description="HR cancels a collective session (reason code): everyone invited "
                     "gets the calendar cancellation.")
    async def cancel_group_session(self, *payloads: RawValue) -> GroupSession:
        request = self._read(CancelGroupSession, payloads, "cancel_group_session")
        async with self._log:
            self._rules_cancel_group_session(request)
            await self._record(ev.GroupSessionCancelled(session_no=request.session_no, reason=request.reason,
                                                        cancelled_by=request.recorded_by), by=request.recorded_by)
            session = self.programme.group_sessions[request.session_no]
        await self._invite(session, "group_session_cancelled")  # outside the lock: mail may be slow
        return session

    @cancel_group_session.validator
    def _check_cancel_group_session(self, *payloads: RawValue) -> None:
        self._rules_cancel_group_session(self._read(CancelGroupSession, payloads, "cancel_group_session", vet=True))

    def _rules_cancel_group_session(self, request: CancelGroupSession) -> None:
        self._hr_only(request)
        self._group_session(request.session_no, "scheduled")

    @workflow.update(description="Someone who attended a collective session rates it 1-5, once "
                     "(recorded_by = that person).")
    async def rate_group_session(self, *payloads: RawValue) -> GroupSession:
        request = self._read(RateGroupSession, payloads, "rate_group_session")
        async with self._log:
            self._rules_rate_group_session(request)
            await self._record(ev.GroupSessionFeedbackGiven(
                session_no=request.session_no, employee_id=request.recorded_by, rating=request.rating),
                by=request.recorded_by)
        return self.programme.group_sessions[request.session_no]

    @rate_group_session.validator
    def _check_rate_group_session(self, *payloads: RawValue) -> None:
        self._rules_rate_group_session(self._read(RateGroupSession, payloads, "rate_group_session", vet=True))

    def _rules_rate_group_session(self, request: RateGroupSession) -> None:
        session = self._group_session(request.session_no, "held")
        if request.recorded_by not in session.attended:
            raise NotAParticipant(f"{request.recorded_by} did not attend collective session "
                                  f"{session.session_no}: only those who came rate it.")
        if request.recorded_by in session.ratings:
            raise RuleViolation(f"{request.recorded_by} has already rated collective session {session.session_no}.")

    def _group_session(self, number: int, status: str) -> GroupSession:
        session = self.programme.group_sessions.get(number)
        if session is None:
            raise RuleViolation(f"there is no collective session {number}: the programme has "
                                f"{len(self.programme.group_sessions)}.")
        if session.status != status:
            raise RuleViolation(f"collective session {number} is {session.status}, not {status}.")
        return session

    def _invitee(self, senior: str) -> ev.GroupInvitee:
        """The senior's pair, as a collective session invites it."""
        programme = self.programme
        mentor = programme.accepted.get(senior)
        if senior not in programme.seniors or mentor is None:
            raise NotAParticipant(f"{senior} is not a senior with a pair in this programme.")
        workflow_id = pair_workflow_id(programme.programme_id, mentor, senior)
        if workflow_id not in programme.pairs_started or workflow_id in programme.wound_down \
                or senior in programme.withdrawn:
            raise RuleViolation(f"the pair of {senior} is not running in this programme.")
        return ev.GroupInvitee(pair_workflow_id=workflow_id, senior_id=senior, mentor_id=mentor)

    async def _invite(self, session: GroupSession, kind: str) -> None:
        """One .ics per person invited (a REQUEST, or the CANCEL of it); one who cannot be reached
        is named in the event, and the session goes on."""
        programme = self.programme
        details = SessionDetails(session_no=session.session_no, starts_at=session.starts_at,
                                 duration_minutes=session.duration_minutes, format="group",
                                 topics=[programme.topics.get(session.topic, session.topic)],
                                 sequence=1 if kind == "group_session_cancelled" else 0,
                                 cancelled=kind == "group_session_cancelled")
        sent, failed = await self._send(kind, session.invited(), session=details)
        async with self._log:
            await self._record(ev.GroupSessionInvitationsSent(session_no=session.session_no, kind=kind,
                                                              sent_to=sent, not_reached=failed), by="system")

    async def _send(self, kind: str, people: list[str], *, session: SessionDetails | None = None,
                    summary: list[str] | None = None) -> tuple[list[str], list[str]]:
        programme = self.programme
        requests = [NotificationRequest(
            notification_id=str(workflow.uuid4()), pair_id=programme.stream_id,
            programme_id=programme.programme_id, kind=kind, recipient_id=who,
            recipient_role="hr" if who in programme.hr_owners else "participant",
            session=session, summary=summary or []) for who in people]
        outcomes = await asyncio.gather(*(
            workflow.execute_activity("send_notification", r, result_type=NotificationReceipt, **_NOTIFY)
            for r in requests), return_exceptions=True)
        sent = [r.recipient_id for r, o in zip(requests, outcomes, strict=True) if not isinstance(o, BaseException)]
        failed = [r.recipient_id for r in requests if r.recipient_id not in sent]
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, ActivityError):
                raise outcome  # a bug, not a delivery: let the workflow task fail and say so
        return sent, failed

    # --- the sessions' end, health, digest, close ---------------------------------------------

    @workflow.update(description="HR keeps these pairs going past the sessions' end (pair workflow "
                     "ids): they are not wound down.")
    async def extend_pairs(self, *payloads: RawValue) -> ProgrammeAck:
        request = self._read(ExtendPairs, payloads, "extend_pairs")
        async with self._log:
            self._rules_extend_pairs(request)
            await self._record(ev.PairsExtended(pair_workflow_ids=request.pair_workflow_ids,
                                                extended_by=request.recorded_by), by=request.recorded_by)
        return acknowledge(self.programme, f"{len(request.pair_workflow_ids)} pair(s) kept past the sessions' end")

    @extend_pairs.validator
    def _check_extend_pairs(self, *payloads: RawValue) -> None:
        self._rules_extend_pairs(self._read(ExtendPairs, payloads, "extend_pairs", vet=True))

    def _rules_extend_pairs(self, request: ExtendPairs) -> None:
        self._hr_only(request)
        if self.programme.sessions_ended:
            raise RuleViolation("the sessions have ended already: pairs still running go on by themselves.")
        unknown = [i for i in request.pair_workflow_ids if i not in self.programme.pairs_started]
        if unknown:
            raise RuleViolation(f"not a pair this programme started: {', '.join(unknown[:10])}.")

    @workflow.update(description="HR ends the programme's sessions now, before the planned day: pairs "
                     "still before or in their sessions are wound down as the programme's policy says.")
    async def end_sessions(self, *payloads: RawValue) -> ProgrammeAck:
        request = self._read(EndSessions, payloads, "end_sessions")
        await self._end_sessions(request.recorded_by, refuse_if_ended=True)
        self._woken = True
        wound_down = self.programme.wound_down
        return acknowledge(self.programme, f"sessions ended: {len(wound_down)} pair(s) wound down"
                           + (f" ({', '.join(wound_down[:5])}{', ...' if len(wound_down) > 5 else ''})"
                              if wound_down else ""))

    @end_sessions.validator
    def _check_end_sessions(self, *payloads: RawValue) -> None:
        self._rules_end_sessions(self._read(EndSessions, payloads, "end_sessions", vet=True))

    def _rules_end_sessions(self, request: EndSessions) -> None:
        self._hr_only(request)
        if self.programme.sessions_ended:
            raise RuleViolation("the sessions have ended already.")

    async def _end_sessions(self, by: str, *, refuse_if_ended: bool = False) -> None:
        async with self._log:
            p = self.programme
            if p.sessions_ended:
                if refuse_if_ended:  # the timer (or another HR click) ended them meanwhile
                    raise RuleViolation("the sessions have ended already.")
                return
            candidates = [i for i in p.pairs_started if i not in p.extended]
            cancelled: list[str] = []
            if p.at_sessions_end == "cancel_open_pairs" and candidates:
                figures = await self._figures(with_stages=True)
                cancelled = [i for i in candidates if figures.stage_of.get(i, "starting") in WIND_DOWN_STAGES]
                for first in range(0, len(cancelled), START_BATCH):
                    await workflow.execute_activity(
                        "wind_down_pairs", WindDownRequest(pair_workflow_ids=cancelled[first:first + START_BATCH],
                                                           reason="the programme's sessions ended"),
                        result_type=WindDownResponse, **_STARTS)
            await self._record(ev.ProgrammeSessionsEnded(
                policy=p.at_sessions_end,
                cancelled=cancelled, kept=[i for i in p.pairs_started if i not in cancelled]), by=by)
        self._check_health_now()

    def _check_health_now(self) -> None:
        self.programme.next_health_at = workflow.now()
        self._woken = True

    async def _figures(self, *, with_stages: bool = False) -> ev.ProgrammeFigures:
        p = self.programme
        return await workflow.execute_activity(
            "programme_figures", ProgrammeFiguresRequest(stream_id=p.stream_id, as_of=workflow.now(),
                                                         with_stages=with_stages),
            result_type=ev.ProgrammeFigures, **_FIGURES)

    async def _check_health(self) -> None:
        figures = await self._figures()
        self.programme.figures = figures
        at_risk = bool(figures.at_risk)
        if at_risk != self._at_risk_shown:
            workflow.upsert_search_attributes([attrs.AT_RISK.value_set(at_risk)])
            self._at_risk_shown = at_risk
        self._publish()

    async def _send_digest(self) -> None:
        p = self.programme
        figures = p.figures or await self._figures()
        sent, _ = await self._send("programme_digest", list(p.hr_owners), summary=digest_lines(figures))
        async with self._log:
            await self._record(ev.ProgrammeDigestSent(recipients=sent, figures=figures), by="system")

    async def _close(self) -> None:
        async with self._log:
            report = await self._figures()  # read again under the lock: nothing started meanwhile
            if not (self.programme.sessions_ended and all_closed(report)):
                self.programme.figures = report
                return
            await self._record(ev.ProgrammeClosed(report=report), by="system")
        self._publish()

    @workflow.query(description="The programme's latest health check: pairs per stage, at risk, "
                    "sessions, what HR must do next (ids and counts only).")
    def figures(self) -> ev.ProgrammeFigures | None:
        return self.programme.report or self.programme.figures

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
        if vet and self.programme.closed:
            raise RuleViolation("the programme is closed: its report is in the query 'figures'.")
        if vet and self._renewing:
            raise ProgrammeRenewing("the programme is starting a fresh run of its history (continue-as-new, "
                                    "every few thousand events): nothing was recorded; send this again in a "
                                    "few seconds.")
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
        """What HR sees at a glance in the UI (ids and counts only): the programme's phase as its
        MentoringStage search attribute, and where it stands in its current details."""
        if self._state is None or self._state.version == 0:
            return
        p = self._state
        # Not a pair's stage name: HR filtering the list by MentoringStage sees pairs or programmes.
        phase = ("closed" if p.closed else "winding_down" if p.sessions_ended
                 else "running" if p.pairs_started else "enrolment")
        if phase != self._phase_shown:
            workflow.upsert_search_attributes([attrs.STAGE.value_set(phase)])
            self._phase_shown = phase
        lines = [f"**Programme:** {phase.replace('_', ' ')}",
                 f"**Mentors:** {len(p.mentors)} nominated, {len(p.mentors_confirmed)} confirmed",
                 f"**Seniors enrolled:** {len(p.seniors)}", f"**Withdrawn:** {len(p.withdrawn)}"]
        if p.suggestion is not None:
            lines.append(f"**Matching:** {len(p.suggestion.pairs)} pair(s) suggested, "
                         f"{len(p.suggestion.unmatched)} person(s) left out (query `matches`)")
        figures = p.report or p.figures
        if figures is not None and p.pairs_started:
            lines += digest_lines(figures)
        if p.group_sessions:
            held = sum(1 for g in p.group_sessions.values() if g.status == "held")
            lines.append(f"**Collective sessions:** {len(p.group_sessions)} set, {held} held")
        if p.closed:
            lines.append("**Closed:** the report is in the query `figures` and `mentoring audit programme`")
        workflow.set_current_details("\n".join(lines))


def digest_lines(figures: ev.ProgrammeFigures) -> list[str]:
    """The figures HR reads in the current details and the digest e-mail (ids and counts only)."""
    stages = ", ".join(f"{stage.replace('_', ' ')} {n}" for stage, n in sorted(figures.pairs_per_stage.items()))
    lines = [f"**Pairs:** {figures.pairs_started} started; {stages or 'none yet'}",
             f"**At risk:** {len(figures.at_risk)}" + (f" ({', '.join(figures.at_risk[:5])})" if figures.at_risk else ""),
             f"**Sessions:** {figures.sessions_held} held, {figures.sessions_this_month} this month; "
             f"{figures.group_sessions_held} collective",
             f"**As of:** {figures.as_of:%Y-%m-%d %H:%M} UTC"]
    lines += [f"**HR next:** {todo}" for todo in figures.hr_next]
    return lines


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
