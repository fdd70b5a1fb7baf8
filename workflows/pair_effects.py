"""What the pair workflow does besides deciding: record facts, send notices, show HR where the
pair stands, and start a fresh run before its history grows large.

`MentoringPair` (workflows/pair.py) inherits these, so that its own file reads as the lifecycle.
Deterministic like the rest of `workflows/`: every effect goes through an activity, ids come from
`workflow.uuid4()`, time from `workflow.now()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
    TimeoutError,
    TimeoutType,
)

import events.pair as ev
import workflows.authority as authority
import workflows.search_attributes as attrs
from events.base import DomainEvent, EventMetadata, NewEvent, default_registry
from events.messages import (
    DATA_REFUSED,
    EVENT_ID_CONFLICT,
    STREAM_CONFLICT,
    UNDELIVERABLE,
    AppendRequest,
    AppendResponse,
    LoggedEvent,
    NotificationReceipt,
    NotificationRequest,
    PersonContact,
    ReadStreamRequest,
    ReadStreamResponse,
    SessionDetails,
)
from workflows.errors import DataRefused, InvalidPairInput, LogMovedOn, WrongStage
from workflows.inputs import UPDATE_FORMS, HrManager, PairInput, Person, _Action
from workflows.pair_state import (
    LastAction,
    PairState,
    SessionState,
    Stage,
    Timer,
    apply,
    catch_up,
    current_details,
    is_activity,
    next_timer,
    note_timer_handled,
)
from workflows.payloads import F, read_form
from workflows.schema import SCHEMA_PATH

HISTORY_LIMIT_MEMO = "continue_as_new_after_events"
"""Memo key (an int) that lowers the history length at which a run continues as new (tests, ops)."""
DEFAULT_HISTORY_LIMIT = 10_000

# How soon the work of a worker killed mid-activity goes to another: Temporal cannot tell a dead
# worker from a slow one, so every activity heartbeats (activities/heartbeat.py) and a silence
# of HEARTBEAT_TIMEOUT ends the attempt; start-to-close bounds one that hangs while beating.
HEARTBEAT_TIMEOUT = timedelta(seconds=5)
_APPEND: dict[str, Any] = {
    # An append takes milliseconds.
    "start_to_close_timeout": timedelta(seconds=10),
    "heartbeat_timeout": HEARTBEAT_TIMEOUT,
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1)),
}
SIDE_EFFECT: dict[str, Any] = {
    # Contact details and private notes: one small write each.
    "start_to_close_timeout": timedelta(seconds=10),
    "heartbeat_timeout": HEARTBEAT_TIMEOUT,
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=10)),
}
# A notice is tried NOTICE_ATTEMPTS times (about an hour of retries: 1 s doubling up to 5 min),
# then recorded as NotificationFailed with the last error's type: a mail server down for longer
# must not hold the pair for days. Attempts, not a schedule-to-close timeout: that would also
# count the time the notice waited for a worker, so an outage of the workers alone would turn
# notices never tried into failures. One try is short: the SMTP channel gives up on a silent
# server after 10 s (activities/notifications.py).
NOTICE_ATTEMPTS = 20
_NOTIFY: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=15),
    "heartbeat_timeout": HEARTBEAT_TIMEOUT,
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                                maximum_interval=timedelta(minutes=5), maximum_attempts=NOTICE_ATTEMPTS),
}
# From NOTICES_APART_PATCH on, the step that decides a notice holds the pair's lock for its first
# attempts only (a few seconds: enough for a killed worker's attempt to move to another); a notice
# still undelivered then is retried apart, and recorded when its attempts end, while the pair's
# other actions go on. A notice that goes out at once is recorded right after its step, as before.
FIRST_NOTICE_ATTEMPTS = 3
_NOTIFY_FIRST: dict[str, Any] = {**_NOTIFY, "retry_policy": RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_attempts=FIRST_NOTICE_ATTEMPTS)}
_NOTIFY_REST: dict[str, Any] = {**_NOTIFY, "retry_policy": RetryPolicy(
    initial_interval=timedelta(seconds=4), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=5),
    maximum_attempts=NOTICE_ATTEMPTS - FIRST_NOTICE_ATTEMPTS)}
# A deadline already past still gets a (short) durable timer: whether it has passed is a question
# for the clock, and a replay may see another clock than the worker that first decided.
SHORTEST_TIMER = timedelta(seconds=1)
SHORTEST_TIMER_MEMO = "shortest_timer_seconds"
"""Memo key (a number) that lengthens that timer: tests use it to act before it fires."""
CLOCK_FREE_PATCH = "decisions-from-history"
"""Runs started with this patch decide only from their history (see `PairEffects._clock_free`)."""
SIGNAL_CHECKS_PATCH = "signal-checks-who"
"""Signals handled after this patch check who sends them and count those they ignore."""
INPUT_CHECKS_PATCH = "input-checks-2026-11"
"""Pairs started with this patch had their start input checked by today's rules (see `AS_RECORDED`)."""
NUMBERED_FOLLOW_UPS_PATCH = "numbered-follow-ups"
"""Follow-ups sent after this patch carry their number, so answers to two sent the same day differ."""
NO_OVERLAP_PATCH = "no-overlapping-sessions"
"""Sessions proposed after this patch are checked against overlaps again under the log lock."""
NOTICES_APART_PATCH = "notices-retried-apart"
"""Notices not delivered by their first attempts are retried apart from the pair's lock."""
LOG_CATCH_UP_PATCH = "log-catch-up"
# The curriculum's objectives go to private_notes, not to the log (one more activity).
OBJECTIVES_APART_PATCH = "objectives-off-the-log"
"""From this patch on, a run whose append finds the log ahead of it (after a Reset) catches up
with the log instead of failing (see `PairEffects._catch_up_with_log`)."""
# History events each kind of step adds (its own events plus a workflow task's three), counted
# high: the continue-as-new decision is taken from this count, not from the server's.
_HISTORY_COST = {"activity": 6, "timer": 5, "update": 5, "signal": 4, "upsert": 1, "patch": 2}
DELIVERY_TIMED_OUT = "DeliveryTimedOut"
BOTH = ("mentor", "mentee")
_UNSET = object()
T = TypeVar("T")
_NOTICES = (ev.NotificationSent, ev.NotificationFailed, ev.NotificationSkipped)


class LogCaughtUp(Exception):
    """Raised out of a step of the main loop whose fact the log no longer takes: the state has
    caught up with the log, and the loop decides again from it."""


class PairEffects:
    """Recording, notifying and publishing for one pair; state in `self.pair`."""

    def __init__(self) -> None:
        self._pair: PairState | None = None  # None until `run` has decoded the input
        # One writer at a time: updates run concurrently with the main loop, and each append
        # must expect the version the previous one produced.
        self._log = asyncio.Lock()
        self._revision = 0  # bumped on every change, so waits wake up and decide again
        self._published: tuple[Any, ...] | None = None
        # Decide from the history alone, never from `workflow.now()` nor the history's length as
        # the SDK reports them: a query answered by a worker without the pair in its cache may run
        # a step (a timer that fired, an activity that completed) with the clock of the workflow
        # task *before* it, and that worker then sends what it decided; a replay, with the later
        # clock, decides otherwise and fails for ever. Set in `run` (False for pairs started
        # before the rule, which replay as they ran).
        self._clock_free = False
        self._history_estimate = 3  # started + the first workflow task's events
        self._patches_taken: set[str] = set()
        # The state as of the last fact this run recorded, without what the run did in memory
        # since (a stage entered, a timer acted on): what a catch-up with the log starts from.
        self._as_logged: PairState | None = None
        self._deliveries: set[asyncio.Task[None]] = set()  # notices retried apart (kept referenced)
        self._delivery_failure: BaseException | None = None  # raised again by the main loop
        self._updates_recorded: set[str] = set()  # updates whose own fact is in the log

    @property
    def pair(self) -> PairState:
        """The state; validators and queries may come before `run` has decoded the input."""
        if self._pair is None:
            raise WrongStage("the pair is still being nominated: try again in a moment.")
        return self._pair

    @pair.setter
    def pair(self, state: PairState) -> None:
        self._pair = state
        self._as_logged = state.model_copy(deep=True)

    @property
    def _nominated(self) -> bool:
        """`PairNominated` is in the log: before it, nothing else may be recorded."""
        return self._pair is not None and self._pair.version > 0

    def _state(self) -> PairState:
        """The state a validator checks an update against: refused until the nomination is
        recorded (an update taken during the nomination's first step would come first in the log)."""
        if not self._nominated:
            raise WrongStage("the pair is still being nominated: nothing can be recorded before the "
                             "nomination is. Try again in a moment.")
        return self.pair

    def _read(self, form: type[F], payloads: tuple[RawValue, ...], *, as_recorded: bool = True) -> F:
        """An update's payload as its form, or a refusal naming the update and each bad field.

        In a handler, as it was accepted (the validator checked it; on replay, with the checks of
        its day); `_vet` reads it with today's checks."""
        update = _current_update()
        if UPDATE_FORMS.get(update, form) is not form:  # a slip in the code, not in the input
            raise RuntimeError(f"update {update} reads {form.__name__}, and UPDATE_FORMS says otherwise")
        return read_form(form, payloads, f"The update '{update}' was refused", as_recorded=as_recorded)

    def _vet(self, form: type[F], payloads: tuple[RawValue, ...]) -> F:
        """In a validator: the form, read from the payload with today's checks and sent by
        someone who may record it (workflows/authority.py)."""
        request = self._read(form, payloads, as_recorded=False)
        if isinstance(request, _Action):
            authority.check(self._state(), _current_update(), request)
        return request

    def _ignore_signal(self, reason: str, *, counted: bool = True) -> None:
        """A signal cannot be refused: say why in the log (never its content), count it for HR."""
        workflow.logger.warning("signal ignored: %s", reason.splitlines()[0])
        if counted:
            self._count("signal")
            self.pair.signals_ignored += 1
            self._publish()

    async def _record(self, *events: DomainEvent, by: _Action | str, ids: list[Any] | None = None) -> None:
        """Append events to the pair's stream, then fold them into the state.

        The event ids and the expected version are decided here, in the workflow, and so are
        part of its history: a retried or re-run activity sends the same ids, and the store's
        append, idempotent by event id, writes nothing twice.
        """
        batch = list(events)
        if self.pair.at_risk and any(is_activity(self.pair, e) for e in batch):
            batch.append(ev.PairBackOnTrack(stage=self.pair.stage.value))
        ids = (ids or []) + [workflow.uuid4() for _ in batch[len(ids or []):]]
        now, info = workflow.now(), workflow.info()
        update = workflow.current_update_info()
        request = AppendRequest(
            stream_id=self.pair.stream_id, expected_version=self.pair.version,
            events=[NewEvent.of(e, i) for e, i in zip(batch, ids, strict=True)],
            metadata=EventMetadata(
                actor=by if isinstance(by, str) else by.recorded_by,
                workflow_id=info.workflow_id, run_id=info.run_id, correlation_id=self.pair.pair_id,
                causation_id=update.id if update else None, occurred_at=now),
        )
        self._count("activity")
        try:
            with _refused_data_refuses_the_action():
                appended, cancelled = await _through_cancellation(workflow.start_activity(
                    "append_events", request, result_type=AppendResponse, **_APPEND))
        except ActivityError as err:
            if _conflict(err) and self._patched(LOG_CATCH_UP_PATCH):
                await self._catch_up_with_log(batch, by)  # raises, unless there is nothing to catch up
            raise
        self.pair.version = appended.version
        # The append's own time, part of the history as the activity's result (the clock `now`
        # came from may be stale in a step run for a query; see `_clock_free`).
        at = appended.appended_at if self._clock_free and appended.appended_at else now
        self.pair.last_fact_at = at
        if isinstance(by, _Action):  # a person's act: shown to HR as the last action
            update = workflow.current_update_info()
            self.pair.last_action = LastAction(action=update.name if update else "answer_follow_up",
                                               by=by.recorded_by, at=at)
        for event in batch:
            apply(self.pair, event, at)
        self._as_logged = self.pair.model_copy(deep=True)
        if update is not None:
            self._updates_recorded.add(update.id)
        self._changed()
        if cancelled:  # the append finished and is folded: now the cancellation goes on
            raise asyncio.CancelledError()

    def _ours(self, first: LoggedEvent) -> bool:
        """Before its nomination is recorded, a run may only catch up with a stream its own chain
        of runs nominated (a Reset to the first task); another start is a second nomination.
        Told by the start event's first run id, which a Reset keeps and every replay sees."""
        return self._nominated or (first.event_type == "PairNominated"
                                   and first.run_id == workflow.info().first_execution_run_id)

    async def _catch_up_with_log(self, batch: list[DomainEvent], by: _Action | str) -> None:
        """The stream holds facts this run has not seen: a Reset brought the workflow back to an
        earlier point, and the log kept what the run it replaced recorded after it. Read them and
        fold them into the state as of this run's last fact; then give up the step being recorded,
        which was decided without them. Notices are the exception: they went out, so the log says
        so. An update is refused (it may be sent again); the main loop decides again."""
        assert self._as_logged is not None
        self._count("activity")
        logged = await workflow.execute_activity(
            "read_stream", ReadStreamRequest(stream_id=self.pair.stream_id, after_version=self._as_logged.version),
            result_type=ReadStreamResponse, **_APPEND)
        if not logged.events or not self._ours(logged.events[0]):
            return  # nothing this run missed, or another start of the pair: the conflict stands
        state = self._as_logged.model_copy(deep=True)
        # Not in the log: kept from this run.
        state.signals_ignored, state.notices_retrying = self.pair.signals_ignored, self.pair.notices_retrying
        for fact in logged.events:
            catch_up(state, default_registry.load(fact.event_type, fact.payload), fact.recorded_at)
            state.version = fact.version
        workflow.logger.warning("the log was %d fact(s) ahead of this run (a Reset?): caught up to version %d",
                                len(logged.events), state.version)
        self.pair = state
        self._changed()
        if batch and all(isinstance(e, _NOTICES) for e in batch):
            # Notices this run sent went out: recorded, unless the log has them already (the
            # replaced run recorded the same sends, with the same message ids).
            known = [default_registry.load(fact.event_type, fact.payload) for fact in logged.events]
            sent = [e for e in batch if e not in known]
            if sent:
                await self._record(*sent, by=by)
                for event in sent:  # a reminder sent again is a timer acted on, as in catch_up
                    note_timer_handled(self.pair, event)
        update = workflow.current_update_info()
        if update is None:
            raise LogCaughtUp()
        unseen = (f"the pair's log held {len(logged.events)} fact(s) this run of the workflow had not "
                  "seen (recorded before it was reset). The pair now stands on them: read the state "
                  "or the current details")
        if update.id in self._updates_recorded:
            raise LogMovedOn(f"The update '{update.name}' was recorded, but what follows from it was "
                             f"not: {unseen}.")
        raise LogMovedOn(f"The update '{update.name}' was refused: {unseen}, then send the update "
                         "again if it still applies.")

    async def _notify(self, kind: str, roles: list[str] | tuple[str, ...], *, deadline: Any = None,
                      session: SessionDetails | None = None) -> None:
        """Send one notice per person (in parallel), then record each as `NotificationSent`; a
        notice its first attempts did not deliver goes on apart (`_keep_delivering`)."""
        if not roles:
            return
        requests = [NotificationRequest(
            notification_id=str(workflow.uuid4()),  # decided here: a retried send sends nothing twice
            pair_id=self.pair.pair_id, programme_id=self.pair.programme_id, kind=kind,
            recipient_id=self.pair.person_of(role), recipient_role=role,
            counterpart_id={"mentor": self.pair.mentee_id, "mentee": self.pair.mentor_id}.get(role),
            deadline=deadline, session=session) for role in roles]
        apart = self._patched(NOTICES_APART_PATCH)
        self._count("activity", len(requests))
        outcomes, cancelled = await _through_cancellation(asyncio.gather(*(
            workflow.execute_activity("send_notification", r, result_type=NotificationReceipt,
                                      **(_NOTIFY_FIRST if apart else _NOTIFY))
            for r in requests), return_exceptions=True))
        session_no = session.session_no if session else None
        recorded: list[DomainEvent] = []
        for r, outcome in zip(requests, outcomes, strict=True):
            if apart and _still_trying(outcome):
                self._deliver_apart(r, session_no)
            else:
                recorded.append(_notice_event(r, outcome, session_no))
        if recorded:
            await self._record(*recorded, by="system")
        if cancelled:  # the notices under way were sent and recorded first
            raise asyncio.CancelledError()

    def _deliver_apart(self, request: NotificationRequest, session_no: int | None) -> None:
        self.pair.notices_retrying += 1
        self._publish()
        # Its own context: not part of the update that decided it (its facts are the system's).
        task = asyncio.create_task(self._keep_delivering(request, session_no), context=contextvars.Context())
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _keep_delivering(self, request: NotificationRequest, session_no: int | None) -> None:
        """The rest of a notice's attempts, holding nothing; then its outcome is recorded."""
        self._count("activity")
        outcome: NotificationReceipt | BaseException
        try:
            outcome = await workflow.execute_activity(
                "send_notification", request, result_type=NotificationReceipt, **_NOTIFY_REST)
        except ActivityError as err:
            outcome = err
        try:
            async with self._log:
                self.pair.notices_retrying -= 1
                with contextlib.suppress(LogCaughtUp):  # caught up with the log, this notice recorded
                    await self._record(_notice_event(request, outcome, session_no), by="system")
        except Exception as failure:  # a task's error would only be logged: the main loop raises it
            self._delivery_failure = failure
            self._changed()

    def _raise_delivery_failure(self) -> None:
        """A notice retried apart that could not be recorded is a bug: fail the workflow task."""
        if self._delivery_failure is not None:
            raise RuntimeError("a notice retried apart could not be recorded") from self._delivery_failure

    async def _settled(self) -> None:
        """Before a run ends or continues as new: running updates and signals finish, and the
        notices being retried are recorded (their facts belong to this run or the carried state)."""
        await workflow.wait_condition(lambda: (workflow.all_handlers_finished() and not self._deliveries)
                                      or self._delivery_failure is not None)
        self._raise_delivery_failure()

    async def _notify_session(self, kind: str, session: SessionState | int) -> None:
        if isinstance(session, int):
            session = self.pair.require_session(session)
        await self._notify(kind, BOTH, session=SessionDetails(
            session_no=session.session_no, starts_at=session.starts_at, duration_minutes=session.duration_minutes,
            format=session.format, topics=session.topics, sequence=session.sequence,
            cancelled=session.status == "cancelled"))

    async def _activity(self, name: str, request: Any) -> None:
        # Activities are called by name: workflows never import activity code (nor asyncpg).
        self._count("activity")
        with _refused_data_refuses_the_action():
            await workflow.execute_activity(name, request, **SIDE_EFFECT)

    def _due(self, policy_field: str) -> Any:
        """A deadline of the stage just entered, as its timer will count it."""
        if self._clock_free:
            return self._stage_deadline(policy_field)
        return workflow.now() + self.pair.policy.duration(policy_field)

    def _now(self) -> Any:
        """The time of the latest fact in the log: what a decision may take as 'now'."""
        if self._clock_free and self.pair.last_fact_at is not None:
            return self.pair.last_fact_at
        return workflow.now()

    def _next_timer(self) -> Timer | None:
        return next_timer(self.pair, None if self._clock_free else workflow.now())

    def _shortest_timer(self) -> timedelta:
        seconds = workflow.memo_value(SHORTEST_TIMER_MEMO, None, type_hint=float)
        return timedelta(seconds=seconds) if seconds else SHORTEST_TIMER

    def _patched(self, patch_id: str) -> bool:
        """`workflow.patched`, counting the history events a patch marker adds (the marker and
        Temporal's search attribute of the patches) the first time a run takes it. For the patches
        from input-checks-2026-11 on: runs before them replay with the count they ran with."""
        taken = workflow.patched(patch_id)
        if taken and patch_id not in self._patches_taken:
            self._patches_taken.add(patch_id)
            self._count("patch")
        return taken

    def _count(self, step: str, times: int = 1) -> None:
        self._history_estimate += _HISTORY_COST[step] * times

    def _stage_deadline(self, policy_field: str) -> Any:
        """When the current stage's timer fires: from the stage's clock, moved on by pauses."""
        return self.pair.clock_start + self.pair.policy.duration(policy_field)

    def _changed(self) -> None:
        self._revision += 1
        self._publish()

    def _publish(self, timer: Timer | None = None) -> None:
        """Search attributes and current details: what HR sees at a glance in the UI (no names)."""
        if self._pair is None or (self.pair.stage is Stage.NOMINATED and self.pair.version == 0):
            return  # nothing to show before the nomination is recorded
        timer = timer or self._next_timer()
        stage = "paused" if self.pair.paused is not None else self.pair.stage.value
        values = (self.pair.programme_id, stage, self.pair.at_risk, timer.due if timer else None)
        if values != self._published:
            # Upsert only what changed: each upsert is an event in the workflow's history.
            before = self._published or (_UNSET,) * len(values)
            keys: tuple[SearchAttributeKey[Any], ...] = (
                attrs.PROGRAMME, attrs.STAGE, attrs.AT_RISK, attrs.NEXT_DEADLINE)
            self._count("upsert")
            workflow.upsert_search_attributes([
                key.value_set(value) if value is not None else key.value_unset()
                for key, value, old in zip(keys, values, before, strict=True) if value != old
            ])
            self._published = values
        workflow.set_current_details(current_details(self.pair, timer))

    async def _continue_as_new_if_history_is_long(self) -> None:
        """A pair lives for months: start a fresh run before the history nears Temporal's limits
        (replaying a long history is slow, and 50k events is a hard stop)."""
        info = workflow.info()
        limit = workflow.memo_value(HISTORY_LIMIT_MEMO, DEFAULT_HISTORY_LIMIT, type_hint=int)
        if self._clock_free:
            # Our own count: what the SDK reports is as of the latest workflow task, which a step
            # run for a query does not have (see `_clock_free`).
            long = self._history_estimate >= limit
        else:
            long = info.is_continue_as_new_suggested() or info.get_current_history_length() >= limit
        if long and self._deliveries:
            return  # a notice is being retried: continue as new once it is recorded (it wakes us)
        if long:
            await self._settled()
            workflow.logger.info("continuing as new at stream version %s", self.pair.version)
            workflow.continue_as_new(self.pair)  # the state, with its stream version, and no personal data


async def _through_cancellation(work: Awaitable[T]) -> tuple[T, bool]:
    """`work`'s result, even when the workflow is cancelled meanwhile, and whether it was: an
    append or a notice under way finishes (and is recorded) before the cancellation goes on, so
    the log never misses what was done, nor the workflow the stream version it produced."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task), False
    except asyncio.CancelledError:
        if task.cancelled():
            raise
        try:
            return await task, True
        except Exception as failure:  # the cancellation goes on; the failed step is not retried
            raise asyncio.CancelledError() from failure


def _conflict(outcome: ActivityError) -> bool:
    """The append found the stream ahead of this run, or its event ids recorded with another
    content (a Reset run deciding again what the run it replaced had decided)."""
    cause = outcome.cause
    return isinstance(cause, ApplicationError) and cause.type in (STREAM_CONFLICT, EVENT_ID_CONFLICT)


def _current_update() -> str:
    update = workflow.current_update_info()
    if update is None:
        raise RuntimeError("an update's form read outside an update")
    return update.name


@contextlib.contextmanager
def _refused_data_refuses_the_action() -> Iterator[None]:
    """A value the database refuses (activities/database_errors.py) refuses the update that
    brought it, in words, and the pair goes on answering. Outside an update the value is the
    workflow's own: a bug, so the workflow task fails (and is retried) until the code is fixed,
    rather than the pair ending. Any other failure is left as it is."""
    try:
        yield
    except ActivityError as err:
        cause = err.cause
        if not (isinstance(cause, ApplicationError) and cause.type == DATA_REFUSED):
            raise
        update = workflow.current_update_info()
        if update is None:
            raise RuntimeError(f"the database refused a value the workflow produced: {cause.message}") from None
        raise DataRefused(f"The update '{update.name}' could not be recorded: {cause.message}. Nothing "
                          "more was recorded for it; correct the values typed and send it again.") from None


def _notice_event(request: NotificationRequest, outcome: NotificationReceipt | BaseException,
                  session_no: int | None) -> DomainEvent:
    """What the log says of one notice: sent, skipped (too late to help, decided by the activity's
    clock) or failed (one person who cannot be reached must not stop the pair: HR sees it)."""
    kind, recipient, role = request.kind, request.recipient_id, request.recipient_role
    if isinstance(outcome, NotificationReceipt) and outcome.skipped:
        return ev.NotificationSkipped(kind=kind, recipient_id=recipient, recipient_role=role,
                                      reason=outcome.skipped, session_no=session_no)
    if isinstance(outcome, NotificationReceipt):
        return ev.NotificationSent(kind=kind, recipient_id=recipient, recipient_role=role,
                                   channel=outcome.channel, message_id=outcome.message_id, session_no=session_no)
    if isinstance(outcome, ActivityError) and _undeliverable(outcome):
        return ev.NotificationFailed(kind=kind, recipient_id=recipient, recipient_role=role,
                                     reason=_failure_reason(outcome), session_no=session_no)
    raise outcome


def _still_trying(outcome: NotificationReceipt | BaseException) -> bool:
    """A notice whose first attempts failed with an error that more attempts may cure."""
    if not isinstance(outcome, ActivityError) or outcome.retry_state is not RetryState.MAXIMUM_ATTEMPTS_REACHED:
        return False
    cause = outcome.cause
    return not (isinstance(cause, ApplicationError) and cause.type in (*UNDELIVERABLE, DATA_REFUSED))


def _undeliverable(outcome: BaseException) -> bool:
    if not isinstance(outcome, ActivityError):
        return False
    cause = outcome.cause
    # Out of attempts; or out of time (runs started with a schedule-to-close timeout: the server
    # ended the retries with the last attempt's error, or the timeout itself fired).
    return outcome.retry_state is RetryState.MAXIMUM_ATTEMPTS_REACHED or _out_of_time(outcome) or (
        isinstance(cause, ApplicationError) and cause.type in (*UNDELIVERABLE, DATA_REFUSED))


def _out_of_time(outcome: ActivityError) -> bool:
    return outcome.retry_state is RetryState.TIMEOUT or (
        isinstance(outcome.cause, TimeoutError) and outcome.cause.type is TimeoutType.SCHEDULE_TO_CLOSE)


def _failure_reason(outcome: ActivityError) -> str:
    """The last attempt's error type (DeliveryFailed, DeliveryRefused, ...); a timeout is
    DeliveryTimedOut."""
    if outcome.retry_state is RetryState.MAXIMUM_ATTEMPTS_REACHED and isinstance(outcome.cause, ApplicationError):
        return outcome.cause.type or DELIVERY_TIMED_OUT
    if _out_of_time(outcome) or not isinstance(outcome.cause, ApplicationError):
        return DELIVERY_TIMED_OUT
    return outcome.cause.type or DELIVERY_TIMED_OUT


def contact(person: Person | HrManager) -> PersonContact:
    return PersonContact(employee_id=person.employee_id, display_name=person.display_name,
                         email=person.email, time_zone=person.time_zone)


def decode_input(inputs: tuple[RawValue, ...], *, as_recorded: bool) -> PairInput:
    """HR's start input, or `InvalidPairInput` naming each bad field: the workflow fails at once."""
    try:
        return read_form(PairInput, inputs, "This pair cannot start", InvalidPairInput, as_recorded=as_recorded)
    except InvalidPairInput as refusal:
        raise InvalidPairInput(f"{refusal.message}\n{START_HELP}") from None


START_HELP = ("The input is one JSON object: its fields are in the README, section 'Your first pair', "
              f"and its JSON Schema is served by the audit API at {SCHEMA_PATH} "
              "(for example http://127.0.0.1:8400" + SCHEMA_PATH + " on `make run`).")
