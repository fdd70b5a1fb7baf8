"""The `MentoringPair` workflow: one durable workflow per mentoring pair (README, "The lifecycle").

Read it top to bottom as the lifecycle: nomination, the mentor's motivation, the senior's consent,
preparation, sessions, feedback, follow-ups; then what may happen at any time. Each step is a
domain event (events/pair.py) appended through the `append_events` activity; each notice goes
through the `send_notification` activity and is recorded as `NotificationSent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    # Pure models, checks and helpers: imported once per worker instead of in every run's
    # sandbox. And `workflows.timezones` (used by the rules) must run outside the sandbox, where
    # zoneinfo may read the tz database. Import submodules by their full name: `from workflows
    # import rules` would load a sandboxed copy, the sandbox holding this module's package.
    import events.pair as ev
    import workflows.authority as authority
    import workflows.rules as rules
    from events.base import DomainEvent
    from events.messages import (
        SESSION_ALREADY_STARTED,
        STREAM_CONFLICT,
        CancelRequest,
        CancelRequestQuery,
        PrivateNoteRequest,
        RegisterPeopleRequest,
    )
    from workflows.errors import DataRefused, InvalidPairInput, PairAlreadyNominated, PairError
    from workflows.inputs import (
        AgreeCurriculum,
        CancelSession,
        CompleteTrainingModule,
        ConfirmMotivation,
        ConfirmSession,
        DeclineMentoring,
        ExtendPair,
        FollowUpAnswer,
        GiveFeedback,
        GiveFinalEvaluation,
        InvitationAnswer,
        OnboardMentee,
        PairInput,
        PausePair,
        ProposeSession,
        RecordNoShow,
        RecordSessionHeld,
        ReplaceMentor,
        RescheduleSession,
        ResumePair,
        SignOffMentor,
        WithdrawPair,
        _Action,
    )
    from workflows.pair_effects import (
        BOTH,
        CLOCK_FREE_PATCH,
        INPUT_CHECKS_PATCH,
        NO_OVERLAP_PATCH,
        NUMBERED_FOLLOW_UPS_PATCH,
        OBJECTIVES_APART_PATCH,
        SIGNAL_CHECKS_PATCH,
        LogCaughtUp,
        PairEffects,
        contact,
        decode_input,
    )
    from workflows.pair_state import (
        ActionResult,
        PairOutcome,
        PairState,
        SessionState,
        Stage,
        Timer,
        enter_stage,
        next_actions,
        next_stage,
        next_timer,
        waiting_for,
    )
    from workflows.payloads import AS_RECORDED, read_form

TASK_QUEUE = "mentoring"


@workflow.defn(name="MentoringPair")
class MentoringPair(PairEffects):
    """One reverse-mentoring pair, from HR's nomination to the last follow-up.

    Start input: one JSON object, `workflows.inputs.PairInput` (schemas/pair-input.schema.json).
    Result: `PairOutcome`. Every update takes one object with `recorded_by` (who enters it) and
    returns an `ActionResult`; its validator rejects a wrong stage or payload with nothing recorded.

    Updates, in lifecycle order:
      confirm_motivation, decline_mentoring            2. the mentor's motivation
      accept_invitation, decline_invitation            3. the senior's consent
      agree_curriculum, complete_training_module,
      onboard_mentee, sign_off_mentor                  4. preparation
      propose_session, confirm_session, reschedule_session, cancel_session,
      record_session_held, record_no_show              5. sessions
      give_feedback, give_final_evaluation             6. feedback
      pause, resume, withdraw, replace_mentor, extend  at any time
    Signal:  answer_follow_up                          7. follow-up answers (from an e-mail integration)
    Query:   state                                     the pair's `PairState` (pseudonymous ids only)
    """

    # --- 1. nomination -------------------------------------------------------------------------

    @workflow.run
    async def run(self, *inputs: RawValue) -> PairOutcome:
        # Raw, not PairInput (workflows/payloads.py): a payload that fails to decode into a typed
        # argument fails the workflow *task*, which Temporal retries for ever. We read it
        # ourselves and fail the workflow at once with a message for HR.
        nomination = None
        if workflow.info().continued_run_id:  # a continued run gets the carried state, not HR's input
            carried = workflow.payload_converter().from_payload(inputs[0].payload, object)
            self.pair = PairState.model_validate(carried, context=AS_RECORDED)
        else:
            # Pairs started before today's checks on input replay with the checks they started with.
            checked = self._patched(INPUT_CHECKS_PATCH)
            # A bad input ends the run here, with nothing recorded.
            nomination = decode_input(inputs, as_recorded=not checked)
        # Before any decision, so that a run decides one way from its first step to its last.
        self._clock_free = workflow.patched(CLOCK_FREE_PATCH)
        try:
            if nomination is not None:
                self.pair = PairState.nominated(nomination, workflow.now())
                with contextlib.suppress(LogCaughtUp):  # a Reset run finds its nomination recorded
                    await self._nominate(nomination)
            self._publish()
            while not self.pair.closed:
                try:
                    async with self._log:
                        await self._advance()
                    if not self.pair.closed:
                        await self._wait_for_next_deadline()
                        await self._continue_as_new_if_history_is_long()
                except LogCaughtUp:
                    continue  # the state now holds what the log holds: decide again from it
                finally:
                    self._raise_delivery_failure()
        except asyncio.CancelledError:
            # Request Cancellation in the Web UI (or `temporal workflow cancel`): the log says so,
            # the people are told, then the run ends as Canceled in Temporal too.
            await self._on_cancellation()
            await self._settled()
            raise
        # Handlers and notices still running would be cut off by the return: let them finish first.
        await self._settled()
        return PairOutcome(pair_id=self.pair.pair_id, stage=self.pair.stage.value,
                           sessions_held=self.pair.sessions_held, stream_version=self.pair.version)

    async def _nominate(self, nomination: PairInput) -> None:
        """Contact details go to the erasable `people` table; the log gets ids only."""
        people = [contact(nomination.mentor), contact(nomination.mentee), contact(nomination.nominated_by)]
        try:
            await self._activity("register_people", RegisterPeopleRequest(people=people))
        except DataRefused as refusal:
            raise InvalidPairInput(f"This pair cannot start: {refusal.message}") from None
        async with self._log:
            try:
                await self._record(ev.PairNominated(
                    pair_id=nomination.pair_id, programme_id=nomination.programme_id,
                    mentor_id=nomination.mentor.employee_id, mentee_id=nomination.mentee.employee_id,
                    topics=list(nomination.topics), sessions_planned=nomination.sessions_planned,
                    nominated_by=nomination.nominated_by.employee_id,
                    policy=nomination.policy.in_force(), hr_team=list(nomination.hr_team),
                ), by=nomination.nominated_by.employee_id)
            except ActivityError as err:
                if isinstance(err.cause, ApplicationError) and err.cause.type == STREAM_CONFLICT:
                    raise PairAlreadyNominated(
                        f"pair {nomination.pair_id} was already nominated in programme "
                        f"{nomination.programme_id}: its history is in the event log. A pair is "
                        "nominated once per programme (a senior who declined is not asked again)."
                    ) from None
                raise

    async def _on_cancellation(self) -> None:
        """Close the pair as cancelled, with who asked (read from Temporal), unless it had ended."""
        for _ in range(3):
            try:
                await self._close_as_cancelled()
                return
            except LogCaughtUp:  # the log had moved on (a Reset): close the pair as the log now has it
                continue
        raise RuntimeError("the log kept moving on while the pair was being cancelled")

    async def _close_as_cancelled(self) -> None:
        async with self._log:
            if not self._nominated or self.pair.closed:
                return
            info = workflow.info()
            try:
                asked = await workflow.execute_activity(
                    "cancel_request", CancelRequestQuery(workflow_id=info.workflow_id, run_id=info.run_id),
                    result_type=CancelRequest, start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_attempts=3))  # who asked must not hold the closing
            except ActivityError:
                asked = CancelRequest(identity="unknown")
            await self._close(ev.PairCancelled(stage=self.pair.stage.value, requested_by=asked.identity,
                                               with_reason=asked.with_reason), by=f"temporal:{asked.identity}")

    # --- the stage machine ----------------------------------------------------------------------

    async def _advance(self) -> None:
        """Enter the stage the facts now call for (caller holds the log lock)."""
        while not self.pair.closed and (stage := next_stage(self.pair)) is not self.pair.stage:
            await self._enter(stage)

    async def _enter(self, stage: Stage) -> None:
        workflow.logger.info("pair enters stage %s", stage.value)
        enter_stage(self.pair, stage, self._now())
        self._changed()
        match stage:
            case Stage.AWAITING_MOTIVATION:
                await self._notify("motivation_request", ["mentor"], deadline=self._due("motivation_expires_after"))
            case Stage.MENTEE_INVITED:
                await self._invite_mentee()
            case Stage.PREPARATION:
                await self._open_preparation()
            case Stage.SESSIONS:
                await self._open_sessions()
            case Stage.FINAL_EVALUATION:
                await self._notify("final_evaluation_request", BOTH, deadline=self._due("final_evaluation_within"))
            case Stage.COMPLETED:
                await self._record(ev.PairCompleted(sessions_held=self.pair.sessions_held), by="system")

    async def _wait_for_next_deadline(self) -> None:
        seen = self._revision
        timer = self._next_timer()
        self._publish(timer)
        if timer is None:  # paused: no timer of the stage counts until resume
            await workflow.wait_condition(lambda: self._revision != seen)
            return
        if not self._clock_free:
            await self._wait_by_the_clock(timer, seen)
            return
        # Always a durable timer (it survives worker restarts), however close the deadline.
        self._count("timer")
        try:
            # Any action wakes us to decide again.
            await workflow.wait_condition(lambda: self._revision != seen, timeout_summary=timer.kind,
                                          timeout=max(timer.due - workflow.now(), self._shortest_timer()))
            return
        except TimeoutError:
            pass
        async with self._log:
            # The timer fired, and that is the fact we act on, not the clock's "is it due?" (see
            # `_clock_free`). Unless an action taken meanwhile moved the deadline: then decide again.
            if self._next_timer() == timer:
                await self._on_deadline(timer)

    async def _wait_by_the_clock(self, timer: Timer, seen: int) -> None:
        """How pairs started before `CLOCK_FREE_PATCH` waited: kept so they replay as they ran."""
        delay = timer.due - workflow.now()
        if delay > timedelta(0):
            try:
                # A durable timer: survives worker restarts; any action wakes us to decide again.
                await workflow.wait_condition(lambda: self._revision != seen, timeout=delay,
                                              timeout_summary=timer.kind)
                return
            except TimeoutError:
                pass
        async with self._log:
            # An action may have landed between the deadline and the lock: re-read the timer.
            due = next_timer(self.pair, workflow.now())
            if due is not None and (due.kind, due.session_no) == (timer.kind, timer.session_no) \
                    and due.due <= workflow.now():
                await self._on_deadline(due)

    async def _on_deadline(self, timer: Timer) -> None:
        """Every durable wait has a deadline and a consequence: a reminder, an escalation, an end."""
        if timer.kind == "session_reminder":
            self.pair.require_session(timer.session_no).reminder_sent = True
        else:
            self.pair.timers_fired.append(timer.kind)
        self._changed()
        match timer.kind:
            case "motivation_reminder":
                await self._notify("motivation_reminder", ["mentor"],
                                   deadline=self._stage_deadline("motivation_expires_after"))
            case "motivation_expiry":
                await self._close(ev.MentorMotivationExpired(mentor_id=self.pair.mentor_id))
            case "invitation_reminder":
                await self._notify("invitation_reminder", ["mentee"],
                                   deadline=self._stage_deadline("invitation_expires_after"))
            case "invitation_expiry":
                await self._close(ev.InvitationExpired(mentee_id=self.pair.mentee_id))
            case "preparation_reminder":
                await self._remind_preparation()
            case "stall_nudge":
                await self._record(ev.PairNudged(stage=self.pair.stage.value, idle_since=self.pair.clock_start), by="system")
                await self._notify("nudge", BOTH)
            case "preparation_escalation" | "stall_escalation":
                await self._escalate()
            case "lapse":
                await self._close(ev.PairLapsed(stage=self.pair.stage.value, idle_since=self.pair.clock_start))
            case "session_reminder":
                await self._notify_session("session_reminder", self.pair.require_session(timer.session_no))
            case "evaluation_window_closed":
                if workflow.patched("evaluation-window-closed-event"):
                    # Recorded, so the log (and every read model) shows the stage moving on.
                    await self._record(ev.FinalEvaluationWindowClosed(
                        evaluations_from=sorted(set(self.pair.final_evaluations))), by="system")
                self.pair.evaluation_closed = True  # the evaluations are welcome, never forced
            case "first_follow_up" | "second_follow_up":
                await self._follow_up(timer.kind)
            case "follow_up_window_closed":
                self.pair.follow_ups_closed = True

    # --- 2. the mentor confirms their motivation (or declines) ----------------------------------

    @workflow.update(description="The mentor confirms their own motivation. Rule: HR picks motivated "
                     "juniors, and the junior says yes themself (recorded_by = the mentor).")
    async def confirm_motivation(self, *payloads: RawValue) -> ActionResult:
        request = self._read(ConfirmMotivation, payloads)
        async with self._log:
            rules.confirm_motivation(self.pair, request)  # again: another action may have come first
            await self._record(ev.MentorMotivationConfirmed(mentor_id=self.pair.mentor_id), by=request)
            return await self._done()

    @confirm_motivation.validator
    def _check_confirm_motivation(self, *payloads: RawValue) -> None:
        request = self._vet(ConfirmMotivation, payloads)
        # In the validator, a rejection writes nothing to the history nor to the event log.
        rules.confirm_motivation(self._state(), request)

    @workflow.update(description="The mentor declines the nomination with a reason code; the pair ends politely.")
    async def decline_mentoring(self, *payloads: RawValue) -> ActionResult:
        request = self._read(DeclineMentoring, payloads)
        async with self._log:
            rules.decline_mentoring(self.pair)
            await self._close(ev.MentorDeclined(mentor_id=self.pair.mentor_id, reason=request.reason), by=request)
            return await self._done()

    @decline_mentoring.validator
    def _check_decline_mentoring(self, *payloads: RawValue) -> None:
        self._vet(DeclineMentoring, payloads)
        rules.decline_mentoring(self._state())

    # --- 3. the senior is invited and consents (or declines; the invitation may expire) ----------

    async def _invite_mentee(self) -> None:
        expires_at = self._due("invitation_expires_after")
        await self._record(ev.MenteeInvited(mentee_id=self.pair.mentee_id, channel="email",
                                            expires_at=expires_at), by="system")
        await self._notify("invitation", ["mentee"], deadline=expires_at)

    @workflow.update(description="The mentee accepts the invitation: their explicit, recorded consent. "
                     "Rule: never force the seniors.")
    async def accept_invitation(self, *payloads: RawValue) -> ActionResult:
        request = self._read(InvitationAnswer, payloads)
        async with self._log:
            rules.answer_invitation(self.pair, "accept_invitation")
            await self._record(ev.MenteeConsentGiven(mentee_id=self.pair.mentee_id, channel=request.channel,
                                                     recorded_by=request.recorded_by), by=request)
            return await self._done()

    @accept_invitation.validator
    def _check_accept_invitation(self, *payloads: RawValue) -> None:
        self._vet(InvitationAnswer, payloads)
        rules.answer_invitation(self._state(), "accept_invitation")

    @workflow.update(description="The mentee declines the invitation: recorded, and the pair closes politely.")
    async def decline_invitation(self, *payloads: RawValue) -> ActionResult:
        request = self._read(InvitationAnswer, payloads)
        async with self._log:
            rules.answer_invitation(self.pair, "decline_invitation")
            await self._close(ev.MenteeDeclined(mentee_id=self.pair.mentee_id, channel=request.channel,
                                                recorded_by=request.recorded_by), by=request)
            return await self._done()

    @decline_invitation.validator
    def _check_decline_invitation(self, *payloads: RawValue) -> None:
        self._vet(InvitationAnswer, payloads)
        rules.answer_invitation(self._state(), "decline_invitation")

    # --- 4. preparation: curriculum, training, sign-off; the senior's onboarding ----------------

    async def _open_preparation(self) -> None:
        """Both sides are prepared: programmes preparing only the mentors get half the benefit."""
        if not self.pair.signed_off:
            await self._notify("preparation_started", ["mentor"])
        if not self.pair.mentee_onboarded:
            await self._notify("mentee_onboarding", ["mentee"])

    async def _remind_preparation(self) -> None:
        roles = []
        if not self.pair.signed_off:
            roles.append("mentor")
        if not self.pair.mentee_onboarded:
            roles.append("mentee")
        await self._notify("preparation_reminder", roles)

    @workflow.update(description="Record the curriculum: the topics and objectives the mentor will "
                     "transmit. Rule: define what the mentor transmits, so the mentor is credible.")
    async def agree_curriculum(self, *payloads: RawValue) -> ActionResult:
        request = self._read(AgreeCurriculum, payloads)
        async with self._log:
            rules.agree_curriculum(self.pair, request)
            agreed = ev.CurriculumAgreed(topics=list(request.topics), objectives_count=len(request.objectives))
            if self._patched(OBJECTIVES_APART_PATCH):
                # Free text that may name people stays out of the append-only log: in the
                # erasable private notes, shared with the pair's HR (the pair report shows it).
                note = await self._keep_private(json.dumps(list(request.objectives)), "mentor", shared=True,
                                                kind="curriculum_objectives")
                await self._record(agreed, by=request, ids=[note])
            else:  # pairs that agreed their curriculum before: as they ran (one append)
                await self._record(agreed, by=request)
            return await self._done()

    @agree_curriculum.validator
    def _check_agree_curriculum(self, *payloads: RawValue) -> None:
        request = self._vet(AgreeCurriculum, payloads)
        rules.agree_curriculum(self._state(), request)

    @workflow.update(description="The mentor completed one of the programme's training modules. "
                     "Rule: HR prepares the mentors well.")
    async def complete_training_module(self, *payloads: RawValue) -> ActionResult:
        request = self._read(CompleteTrainingModule, payloads)
        async with self._log:
            rules.complete_training_module(self.pair, request)
            await self._record(ev.TrainingModuleCompleted(mentor_id=self.pair.mentor_id,
                                                          module=request.module), by=request)
            return await self._done()

    @complete_training_module.validator
    def _check_complete_training_module(self, *payloads: RawValue) -> None:
        request = self._vet(CompleteTrainingModule, payloads)
        rules.complete_training_module(self._state(), request)

    @workflow.update(description="The mentee received the onboarding (what to expect, ground rules, "
                     "confidentiality). Rule: prepare the senior too.")
    async def onboard_mentee(self, *payloads: RawValue) -> ActionResult:
        request = self._read(OnboardMentee, payloads)
        async with self._log:
            rules.onboard_mentee(self.pair)
            await self._record(ev.MenteeOnboarded(mentee_id=self.pair.mentee_id), by=request)
            return await self._done()

    @onboard_mentee.validator
    def _check_onboard_mentee(self, *payloads: RawValue) -> None:
        self._vet(OnboardMentee, payloads)
        rules.onboard_mentee(self._state())

    @workflow.update(description="HR signs the mentor off as ready (needs the curriculum and every "
                     "training module). Rule: HR sign-off before any session.")
    async def sign_off_mentor(self, *payloads: RawValue) -> ActionResult:
        request = self._read(SignOffMentor, payloads)
        async with self._log:
            rules.sign_off_mentor(self.pair)
            await self._record(ev.MentorSignedOff(mentor_id=self.pair.mentor_id,
                                                  signed_off_by=request.recorded_by), by=request)
            return await self._done()

    @sign_off_mentor.validator
    def _check_sign_off_mentor(self, *payloads: RawValue) -> None:
        self._vet(SignOffMentor, payloads)
        rules.sign_off_mentor(self._state())

    # --- 5. sessions: proposed, confirmed, then held, cancelled, rescheduled or missed ----------

    async def _open_sessions(self) -> None:
        """Tell both people they can now schedule sessions (added after the first pairs ran).

        Guarded by a patch: a pair that entered this stage before the change did not send these
        notices, and its history must replay exactly as it ran (tests/workflow/test_replay.py).
        """
        if workflow.patched("sessions-open-notice"):
            await self._notify("sessions_open", BOTH)

    @workflow.update(description="Propose a session inside the mentee's availability windows (a time "
                     "without offset is read in the mentee's time zone). Rule: fit the seniors' agendas.")
    async def propose_session(self, *payloads: RawValue) -> ActionResult:
        request = self._read(ProposeSession, payloads)
        # The time HR asked, as the validator saw it: the lock may come in a later step, whose
        # clock a query can make stale (see `_clock_free`).
        asked_at = workflow.now()
        async with self._log:
            starts_at = rules.session_start(self.pair, request.starts_at)
            rules.propose_session(self.pair, starts_at, request.duration_minutes, asked_at)
            if self._patched(NO_OVERLAP_PATCH):  # two clicks whose validators ran side by side
                rules.no_overlap(self.pair, starts_at, request.duration_minutes)
            number = len(self.pair.sessions) + 1
            await self._record(ev.SessionProposed(
                session_no=number, starts_at=starts_at, duration_minutes=request.duration_minutes,
                format=request.format, topics=list(request.topics)), by=request)
            await self._notify_session("session_invitation", number)
            return await self._done(session_no=number)

    @propose_session.validator
    def _check_propose_session(self, *payloads: RawValue) -> None:
        request = self._vet(ProposeSession, payloads)
        state = self._state()
        rules.new_session_time(state, request.starts_at, request.duration_minutes, workflow.now())
        rules.propose_session(state, rules.session_start(state, request.starts_at),
                              request.duration_minutes, workflow.now())

    @workflow.update(description="Both people confirmed a proposed session.")
    async def confirm_session(self, *payloads: RawValue) -> ActionResult:
        request = self._read(ConfirmSession, payloads)
        async with self._log:
            rules.confirm_session(self.pair, request)
            await self._record(ev.SessionConfirmed(session_no=request.session_no), by=request)
            return await self._done(session_no=request.session_no)

    @confirm_session.validator
    def _check_confirm_session(self, *payloads: RawValue) -> None:
        request = self._vet(ConfirmSession, payloads)
        rules.confirm_session(self._state(), request)

    @workflow.update(description="Move a session to another time inside the mentee's availability; "
                     "both get an updated calendar invitation. Rule: easy rescheduling.")
    async def reschedule_session(self, *payloads: RawValue) -> ActionResult:
        request = self._read(RescheduleSession, payloads)
        asked_at = workflow.now()  # as in propose_session
        async with self._log:
            session = rules.reschedule_session(self.pair, request, asked_at)
            await self._record(ev.SessionRescheduled(
                session_no=session.session_no, starts_at=rules.session_start(self.pair, request.starts_at),
                previous_starts_at=session.starts_at), by=request)
            await self._notify_session("session_invitation", session.session_no)
            return await self._done(session_no=session.session_no)

    @reschedule_session.validator
    def _check_reschedule_session(self, *payloads: RawValue) -> None:
        request = self._vet(RescheduleSession, payloads)
        session = rules.reschedule_session(self._state(), request, workflow.now())
        rules.new_session_time(self._state(), request.starts_at, session.duration_minutes, workflow.now(),
                               rescheduled=session.session_no)

    @workflow.update(description="Cancel a proposed or confirmed session (who cancels, reason code); "
                     "both get a calendar cancellation.")
    async def cancel_session(self, *payloads: RawValue) -> ActionResult:
        request = self._read(CancelSession, payloads)
        async with self._log:
            rules.cancel_session(self.pair, request)
            await self._record(ev.SessionCancelled(session_no=request.session_no, cancelled_by=request.cancelled_by,
                                                   reason=request.reason), by=request)
            await self._notify_session("session_cancelled", request.session_no)
            return await self._done(session_no=request.session_no)

    @cancel_session.validator
    def _check_cancel_session(self, *payloads: RawValue) -> None:
        request = self._vet(CancelSession, payloads)
        rules.cancel_session(self._state(), request)

    @workflow.update(description="A confirmed session took place, with the topics it covered; both are "
                     "asked for feedback. Rule: sessions are centred on uses.")
    async def record_session_held(self, *payloads: RawValue) -> ActionResult:
        request = self._read(RecordSessionHeld, payloads)
        asked_at = workflow.now()  # as in propose_session
        async with self._log:
            session = rules.record_session_held(self.pair, request, asked_at)
            await self._record(ev.SessionHeld(session_no=request.session_no,
                                              topics_covered=list(request.topics_covered)),
                               *self._reminders_too_late(session), by=request)
            await self._notify("feedback_request", BOTH)
            return await self._done(session_no=request.session_no)

    @record_session_held.validator
    def _check_record_session_held(self, *payloads: RawValue) -> None:
        request = self._vet(RecordSessionHeld, payloads)
        rules.record_session_held(self._state(), request, workflow.now())

    @workflow.update(description="A confirmed session did not happen: who was absent (no-show).")
    async def record_no_show(self, *payloads: RawValue) -> ActionResult:
        request = self._read(RecordNoShow, payloads)
        asked_at = workflow.now()  # as in propose_session
        async with self._log:
            session = rules.record_no_show(self.pair, request, asked_at)
            await self._record(ev.SessionMissed(session_no=request.session_no, absent=request.absent),
                               *self._reminders_too_late(session), by=request)
            return await self._done(session_no=request.session_no)

    @record_no_show.validator
    def _check_record_no_show(self, *payloads: RawValue) -> None:
        request = self._vet(RecordNoShow, payloads)
        rules.record_no_show(self._state(), request, workflow.now())

    def _reminders_too_late(self, session: SessionState) -> list[DomainEvent]:
        """A session's outcome recorded before its reminder went out (the reminder's timer was
        still to fire after a worker died, say): the reminder can no longer help, and the log
        says so rather than staying silent about it."""
        if not self._clock_free or session.reminder_sent:
            return []
        return [ev.NotificationSkipped(kind="session_reminder", recipient_id=self.pair.person_of(role),
                                       recipient_role=role, reason=SESSION_ALREADY_STARTED,
                                       session_no=session.session_no) for role in BOTH]

    async def _escalate(self) -> None:
        """Health monitoring: a stalled pair is flagged at risk and HR is told."""
        reason = "preparation_stalled" if self.pair.stage is Stage.PREPARATION else "no_session_activity"
        await self._record(ev.PairFlaggedAtRisk(stage=self.pair.stage.value, idle_since=self.pair.clock_start),
                           ev.EscalatedToHr(stage=self.pair.stage.value, reason=reason), by="system")
        await self._notify("escalation", ["hr"])

    # --- 6. feedback after each session, and the final evaluation -------------------------------

    @workflow.update(description="Feedback on a held session from the mentor or the mentee: rating 1-5, "
                     "engaging or not, topics. The comment stays private to the pair (not in the log).")
    async def give_feedback(self, *payloads: RawValue) -> ActionResult:
        request = self._read(GiveFeedback, payloads)
        async with self._log:
            rules.give_feedback(self.pair, request)
            event_id = await self._keep_private(request.comment, request.by_role, request.share_comment)
            await self._record(ev.FeedbackGiven(
                session_no=request.session_no, by_role=request.by_role, rating=request.rating,
                engaging=request.engaging, topics_covered=list(request.topics_covered),
                has_private_comment=request.comment is not None), by=request, ids=[event_id])
            return await self._done(session_no=request.session_no)

    @give_feedback.validator
    def _check_give_feedback(self, *payloads: RawValue) -> None:
        request = self._vet(GiveFeedback, payloads)
        rules.give_feedback(self._state(), request)

    @workflow.update(description="The final evaluation of the programme by the mentor or the mentee "
                     "(rating, would recommend, private comment).")
    async def give_final_evaluation(self, *payloads: RawValue) -> ActionResult:
        request = self._read(GiveFinalEvaluation, payloads)
        async with self._log:
            rules.give_final_evaluation(self.pair, request)
            event_id = await self._keep_private(request.comment, request.by_role, request.share_comment)
            await self._record(ev.FinalEvaluationGiven(
                by_role=request.by_role, rating=request.rating, would_recommend=request.would_recommend,
                has_private_comment=request.comment is not None), by=request, ids=[event_id])
            return await self._done()

    @give_final_evaluation.validator
    def _check_give_final_evaluation(self, *payloads: RawValue) -> None:
        request = self._vet(GiveFinalEvaluation, payloads)
        rules.give_final_evaluation(self._state(), request)

    async def _keep_private(self, comment: str | None, role: str, shared: bool,
                            kind: Literal["comment", "curriculum_objectives"] = "comment") -> Any:
        """Rule: what is said stays with the pair. The comment goes to `private_notes`, keyed by
        the id of the event that mentions it; the event itself only says there is one."""
        event_id = workflow.uuid4()
        if comment is not None:
            await self._activity("record_private_note", PrivateNoteRequest(
                event_id=str(event_id), pair_id=self.pair.pair_id,
                author_id=self.pair.person_of(role), body=comment, shared=shared, kind=kind))
        return event_id

    # --- 7. follow-ups long after the end, then completion --------------------------------------

    async def _follow_up(self, kind: str) -> None:
        field = "first_follow_up_after" if kind == "first_follow_up" else "second_follow_up_after"
        # Numbered: follow-ups less than a day apart share their days after the end.
        number = (1 if kind == "first_follow_up" else 2) if self._patched(NUMBERED_FOLLOW_UPS_PATCH) else None
        await self._record(ev.FollowUpSent(days_after_end=self.pair.policy.duration(field).days,
                                           follow_up_no=number), by="system")
        await self._notify("follow_up", BOTH)

    @workflow.signal(description="An answer to a follow-up (days_after_end of the follow-up, by_role, "
                     "still_using). A signal, so e-mail integrations can send it without waiting; "
                     "an answer that cannot be read or does not fit is ignored, counted in the "
                     "state and the current details, and logged without its content.")
    async def answer_follow_up(self, *payloads: RawValue) -> None:
        checks_who = self._patched(SIGNAL_CHECKS_PATCH)  # pairs started before: as they ran
        if not self._nominated:
            if not checks_who:
                workflow.logger.warning("signal ignored: the pair is still starting")
                return
            await workflow.wait_condition(lambda: self._nominated)  # an update is refused instead
        async with self._log:
            try:
                answer = read_form(FollowUpAnswer, payloads, "The signal 'answer_follow_up' was ignored",
                                   as_recorded=not checks_who)
                if checks_who:
                    authority.check(self.pair, "answer_follow_up", answer)
            except PairError as refusal:
                self._ignore_signal(refusal.message, counted=checks_who)
                return
            for _ in range(3):
                try:
                    await self._record_follow_up_answer(answer, checks_who)
                    return
                except LogCaughtUp:  # the log had moved on (a Reset): check the answer again against it
                    continue
            self._ignore_signal("follow-up answer ignored: the log kept moving on", counted=checks_who)

    async def _record_follow_up_answer(self, answer: FollowUpAnswer, checks_who: bool) -> None:
        number, problem = rules.follow_up_answered(self.pair, answer.days_after_end, answer.by_role,
                                                   answer.follow_up_no)
        if problem:  # a signal cannot be rejected: log why (no personal data) and ignore it
            self._ignore_signal(f"follow-up answer ignored: {problem}", counted=checks_who)
            return
        await self._record(ev.FollowUpAnswered(days_after_end=answer.days_after_end,
                                               still_using=answer.still_using, by_role=answer.by_role,
                                               follow_up_no=number), by=answer)
        self._count("signal")
        await self._advance()

    # --- at any time: pause and resume, withdraw, replace the mentor, extend -------------------

    @workflow.update(description="Pause the pair (reason code): the current stage's reminders and "
                     "deadlines stop counting until it resumes. Rule: fit the seniors' agendas.")
    async def pause(self, *payloads: RawValue) -> ActionResult:
        request = self._read(PausePair, payloads)
        async with self._log:
            rules.pause(self.pair)
            await self._record(ev.PairPaused(paused_by=request.recorded_by, stage=self.pair.stage.value,
                                             reason=request.reason), by=request)
            return await self._done()

    @pause.validator
    def _check_pause(self, *payloads: RawValue) -> None:
        self._vet(PausePair, payloads)
        rules.pause(self._state())

    @workflow.update(description="Resume a paused pair: its deadlines move on by the time it was paused.")
    async def resume(self, *payloads: RawValue) -> ActionResult:
        request = self._read(ResumePair, payloads)
        asked_at = workflow.now()  # as in propose_session
        async with self._log:
            pause = rules.resume(self.pair)
            paused = (asked_at if self._clock_free else workflow.now()) - pause.since
            await self._record(ev.PairResumed(resumed_by=request.recorded_by,
                                              paused_days=round(paused / timedelta(days=1), 3)), by=request)
            return await self._done()

    @resume.validator
    def _check_resume(self, *payloads: RawValue) -> None:
        self._vet(ResumePair, payloads)
        rules.resume(self._state())

    @workflow.update(description="Withdraw from the pair at any time, without penalty: the mentor, the "
                     "mentee or HR, with a reason code. The pair closes.")
    async def withdraw(self, *payloads: RawValue) -> ActionResult:
        request = self._read(WithdrawPair, payloads)
        async with self._log:
            rules.withdraw(self.pair, request)
            await self._close(ev.PairWithdrawn(withdrawn_by=request.recorded_by, role=request.role,
                                               stage=self.pair.stage.value, reason=request.reason),
                              by=request, role=request.role)
            return await self._done()

    @withdraw.validator
    def _check_withdraw(self, *payloads: RawValue) -> None:
        request = self._vet(WithdrawPair, payloads)
        rules.withdraw(self._state(), request)

    @workflow.update(description="Replace the mentor (new mentor's contact, reason code). The newcomer "
                     "confirms their own motivation and is prepared and signed off like the first.")
    async def replace_mentor(self, *payloads: RawValue) -> ActionResult:
        request = self._read(ReplaceMentor, payloads)
        async with self._log:
            rules.replace_mentor(self.pair, request)
            await self._activity("register_people", RegisterPeopleRequest(people=[contact(request.new_mentor)]))
            await self._record(ev.MentorReplaced(
                previous_mentor_id=self.pair.mentor_id, new_mentor_id=request.new_mentor.employee_id,
                replaced_by=request.recorded_by, reason=request.reason), by=request)
            await self._enter(next_stage(self.pair))  # enter it anew even if it is the same stage
            return await self._done()

    @replace_mentor.validator
    def _check_replace_mentor(self, *payloads: RawValue) -> None:
        request = self._vet(ReplaceMentor, payloads)
        rules.replace_mentor(self._state(), request)
        authority.not_hr(self._state(), request.new_mentor.employee_id, "the new mentor")

    @workflow.update(description="Extend the programme by a number of sessions (until the follow-ups start).")
    async def extend(self, *payloads: RawValue) -> ActionResult:
        request = self._read(ExtendPair, payloads)
        async with self._log:
            rules.extend(self.pair, request)
            await self._record(ev.PairExtended(additional_sessions=request.additional_sessions,
                                               extended_by=request.recorded_by), by=request)
            return await self._done()

    @extend.validator
    def _check_extend(self, *payloads: RawValue) -> None:
        request = self._vet(ExtendPair, payloads)
        rules.extend(self._state(), request)

    @workflow.query(description="The pair's current state: stage, facts so far, sessions and "
                    "deadlines. Pseudonymous ids only.")
    def state(self) -> PairState:
        pair, timer = self.pair, self._next_timer()
        return pair.model_copy(update={
            "waiting_for": waiting_for(pair), "next_actions": next_actions(pair),
            "next_deadline": timer.due if timer else None, "next_deadline_kind": timer.kind if timer else None})

    # --- after each fact ----------------------------------------------------------------------

    async def _done(self, session_no: int | None = None) -> ActionResult:
        """After a human fact: move the pair on, and tell the caller where it stands."""
        self._count("update")
        await self._advance()
        return ActionResult(stage=self.pair.stage.value, paused=self.pair.paused is not None,
                            waiting_for=waiting_for(self.pair), stream_version=self.pair.version,
                            session_no=session_no, next_actions=next_actions(self.pair))

    async def _close(self, event: DomainEvent, by: _Action | str = "system", role: str = "hr") -> None:
        """End the pair politely: the closing fact, calendar cancellations for the sessions still
        ahead, then a word to whoever was contacted."""
        await self._record(event, by=by)
        ahead = [s for s in self.pair.open_sessions if s.starts_at > self._now()]
        if ahead:
            await self._record(*(ev.SessionCancelled(session_no=s.session_no, cancelled_by=role,
                                                     reason="pair_closed") for s in ahead), by=by)
            for session in ahead:
                await self._notify_session("session_cancelled", session.session_no)
        await self._notify("pair_closed", ["mentor", "mentee"] if self.pair.mentee_invited else ["mentor"])

