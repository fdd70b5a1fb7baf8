"""A client driver: takes one pair through its whole lifecycle, as HR and the two people would,
while workers die under it.

Every action is a Temporal update, sent again with the *same update id* when an attempt times
out or fails because a worker died (Temporal deduplicates it); the `state` query is asked at
every poll, as an open Web UI page does. Each round trip and each wait for a timer-driven step
is timed (see `Sample`): those latencies are the stalls the report shows.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from chaos.config import (
    HR_ID,
    SESSION_TOPICS,
    TRAINING_MODULES,
    ChaosConfig,
    mentee_id,
    mentor_id,
    pair_input,
    sessions_for,
)
from workflows.inputs import pair_workflow_id
from workflows.pair_state import ActionResult, PairOutcome, PairState

T = TypeVar("T")

# Rejections that only say "not yet": the driver waits a moment and sends the action again
# (with a new update id: a rejected update leaves nothing to deduplicate).
TIMING_REJECTIONS = (
    "still being nominated",  # the workflow has not decoded its input yet
    "can be recorded once it has started",  # the session's time has not come in workflow time
    "is in the past",  # a proposal delayed by a dead worker: propose a later time
)
# Errors that no retry can cure: the run fails at once on them.
PERMANENT_RPC = {RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.NOT_FOUND,
                 RPCStatusCode.ALREADY_EXISTS, RPCStatusCode.PERMISSION_DENIED,
                 RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.UNAUTHENTICATED}


class PairFailed(Exception):
    """A step failed for a reason other than a dead worker (a rule said no, a wrong outcome)."""


@dataclass(frozen=True)
class Sample:
    """One timed step. `kind`: start, update, query, signal, result (round trips), timer (from a
    timer's due time to the moment the driver sees its effect) or wait (from the start to the
    nomination being recorded). `censored`: still waiting when the pair's deadline passed."""

    pair: str
    kind: str
    step: str
    seconds: float
    attempts: int = 1
    censored: bool = False


@dataclass
class PairRun:
    """What the driver knows of one pair, for the report."""

    index: int
    workflow_id: str
    sessions: int
    status: str = "pending"  # running, completed, failed, stuck
    step: str = ""
    detail: str = ""
    last_stage: str | None = None
    last_version: int | None = None
    last_error: str | None = None
    transient_errors: int = 0
    started: float | None = None  # time.monotonic()
    finished: float | None = None
    outcome: PairOutcome | None = None
    reminder_seen: dict[int, bool] = field(default_factory=dict)
    nondeterminism: int = 0  # calls answered with a non-determinism error
    nondeterminism_first: str | None = None

    @property
    def label(self) -> str:
        return mentor_id(self.index)

    @property
    def seconds(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.monotonic()) - self.started


def is_transient(exc: BaseException) -> bool:
    """True when a retry may succeed: a timeout, a dead worker, a query nobody could answer."""
    if isinstance(exc, TimeoutError | WorkflowUpdateRPCTimeoutOrCancelledError
                  | WorkflowQueryFailedError):
        return True
    return isinstance(exc, RPCError) and exc.status not in PERMANENT_RPC


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def rejection_message(exc: WorkflowUpdateFailedError) -> str:
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return f"{cause.type or 'ApplicationError'}: {cause.message}"
    return describe(cause)


class PairDriver:
    def __init__(self, client: Client, config: ChaosConfig, programme_id: str, task_queue: str,
                 run: PairRun, record: Callable[[Sample], None]) -> None:
        self.client, self.config, self.task_queue, self.run = client, config, task_queue, run
        self.data = pair_input(config, programme_id, run.index)
        self.mentor, self.mentee = mentor_id(run.index), mentee_id(run.index)
        self._record = record
        # By id only, as the UI does: the latest run, should the pair ever continue as new.
        self.handle: WorkflowHandle = client.get_workflow_handle(run.workflow_id,
                                                                 result_type=PairOutcome)
        # What is in progress (kind, step, monotonic start), for a deadline that cuts it short.
        self._inflight: tuple[str, str, float] | None = None
        self._waiting: tuple[str, str, float] | None = None

    # --- the lifecycle -------------------------------------------------------------------------

    async def drive(self) -> None:
        """Nomination to completion; raises PairFailed when a step cannot succeed."""
        run = self.run
        began = time.monotonic()
        await self._round_trip("start", "start", lambda: self.client.start_workflow(
            "MentoringPair", self.data, id=run.workflow_id, task_queue=self.task_queue,
            result_type=PairOutcome,
            # A retried start finds the pair its first attempt started.
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # A backstop on a shared server if this process dies; the deadline comes first.
            execution_timeout=timedelta(seconds=self.config.pair_deadline_s + 300)))
        await self._wait_for(lambda s: s.stage.value == "awaiting_motivation", "nomination",
                             since=began)

        await self._act("confirm_motivation", {"recorded_by": self.mentor})
        await self._act("accept_invitation", {"recorded_by": self.mentee, "channel": "email"})
        await self._act("agree_curriculum", {
            "recorded_by": self.mentor, "topics": SESSION_TOPICS,
            "objectives": ["publish a first post", "tune privacy settings"]})
        for number, module in enumerate(TRAINING_MODULES, 1):
            await self._act("complete_training_module", {"recorded_by": self.mentor, "module": module},
                            step=f"complete_training_module:{number}")
        await self._act("onboard_mentee", {"recorded_by": HR_ID})
        signed = await self._act("sign_off_mentor", {"recorded_by": HR_ID})
        self._expect(signed.stage == "sessions", f"after the sign-off the stage is {signed.stage}")

        for number in range(1, run.sessions + 1):
            await self._hold_session(number)

        await self._act("give_final_evaluation", {
            "recorded_by": self.mentor, "by_role": "mentor", "rating": 5, "would_recommend": True},
            step="give_final_evaluation:mentor")
        done = await self._act("give_final_evaluation", {
            "recorded_by": self.mentee, "by_role": "mentee", "rating": 4, "would_recommend": True,
            "comment": "Worth every minute"}, step="give_final_evaluation:mentee")
        self._expect(done.stage == "follow_up", f"after both evaluations the stage is {done.stage}")
        await self._follow_ups()

        answered = time.monotonic()
        outcome: PairOutcome = await self._round_trip("result", "result", self.handle.result,
                                                      since=answered)
        run.outcome = outcome
        self._expect(outcome.stage == "completed" and outcome.sessions_held == run.sessions,
                     f"the pair ended {outcome.stage} with {outcome.sessions_held} session(s) held")

    async def _hold_session(self, number: int) -> None:
        """Propose a few seconds ahead, confirm, let the reminder fire, hold it, give feedback."""
        cfg = self.config
        starts: dict[str, datetime] = {}

        def proposal() -> dict[str, Any]:
            # Computed per attempt: a proposal delayed past its time is proposed again later.
            starts["at"] = datetime.now(UTC) + timedelta(seconds=cfg.session_lead_s)
            return {"recorded_by": HR_ID, "starts_at": starts["at"].isoformat(),
                    "duration_minutes": 15, "topics": SESSION_TOPICS}

        proposed = await self._act("propose_session", proposal, step=f"propose_session:{number}")
        self._expect(proposed.session_no == number, f"the proposal became session {proposed.session_no}")
        await self._act("confirm_session", {"recorded_by": HR_ID, "session_no": number},
                        step=f"confirm_session:{number}")
        confirmed, starts_at = datetime.now(UTC), starts["at"]
        if confirmed < starts_at:
            # Due `session_reminder_before` ahead of the start (at once if that has passed).
            due = max(starts_at - timedelta(seconds=cfg.reminder_before_s), confirmed)
            seen = await self._poll_until(
                lambda s: reminder_sent(s, number), f"session_reminder:{number}", due=due,
                give_up_at=starts_at + timedelta(seconds=cfg.reminder_grace_s))
            # A missing reminder is judged from the log at the end (was it owed?), not here.
            self.run.reminder_seen[number] = seen is not None
        held_from = starts_at + timedelta(milliseconds=300)
        await self._wait_for(lambda s: datetime.now(UTC) >= held_from, f"session_start:{number}")
        await self._act("record_session_held", {
            "recorded_by": HR_ID, "session_no": number, "topics_covered": SESSION_TOPICS},
            step=f"record_session_held:{number}")
        await self._act("give_feedback", {
            "recorded_by": self.mentor, "session_no": number, "by_role": "mentor", "rating": 4,
            "engaging": True, "topics_covered": SESSION_TOPICS}, step=f"give_feedback:{number}:mentor")
        await self._act("give_feedback", {
            "recorded_by": self.mentee, "session_no": number, "by_role": "mentee", "rating": 5,
            "engaging": True, "comment": "I finally understand my privacy settings"},
            step=f"give_feedback:{number}:mentee")

    async def _follow_ups(self) -> None:
        """Both follow-up timers fire; then both people answer the second one (a signal each).

        With a policy of seconds both follow-ups are "0 days after the end", so an answer to the
        first would count for the second as well; answering once both are out keeps every pair's
        timeline the same whatever the stalls were.
        """
        cfg = self.config
        reached = datetime.now(UTC)
        state = await self._poll()
        # Follow-ups count from the last session (the clock of the final evaluation stage).
        first = max(state.clock_start + timedelta(seconds=cfg.first_follow_up_s), reached)
        second = max(state.clock_start + timedelta(seconds=cfg.second_follow_up_s), reached)
        await self._wait_for(lambda s: len(s.follow_ups_sent) >= 1, "first_follow_up", due=first)
        state = await self._wait_for(lambda s: len(s.follow_ups_sent) >= 2, "second_follow_up",
                                     due=second)
        days = state.follow_ups_sent[-1]
        for role, person in (("mentee", self.mentee), ("mentor", self.mentor)):
            answer = {"recorded_by": person, "days_after_end": days, "by_role": role,
                      "still_using": True}
            await self._round_trip("signal", f"answer_follow_up:{role}", functools.partial(
                self.handle.signal, "answer_follow_up", answer, rpc_timeout=self._rpc_timeout()))

    # --- actions, queries and waits, retried through worker deaths -----------------------------

    async def _act(self, update: str, payload: dict[str, Any] | Callable[[], dict[str, Any]], *,
                   step: str | None = None) -> ActionResult:
        """Send an update until it is done. A timeout or a dead worker: the same update id again.
        A rejection that says "not yet": wait, then a new id. Any other rejection fails the pair."""
        step = step or update
        rejections = 0
        while True:
            body = payload() if callable(payload) else payload
            update_id = f"{step}#{rejections}"
            attempts: list[int] = []
            try:
                result: ActionResult = await self._round_trip("update", step, functools.partial(
                    self.handle.execute_update, update, body, id=update_id,
                    result_type=ActionResult, rpc_timeout=self._rpc_timeout()), attempts=attempts)
            except WorkflowUpdateFailedError as exc:
                message = rejection_message(exc)
                if any(marker in message for marker in TIMING_REJECTIONS) and rejections < 100:
                    rejections += 1
                    self.run.last_error = f"{step} rejected, will retry: {message}"[:300]
                    await asyncio.sleep(0.5)
                    continue
                retried = (f" It was the attempt {attempts[0]} of update id {update_id}: the earlier "
                           "attempts timed out, so an update Temporal failed to deduplicate would "
                           "look like this." if attempts and attempts[0] > 1 else "")
                raise PairFailed(f"{step} was rejected: {message}.{retried}") from None
            await self._poll()  # as the UI does after an action: read the pair again
            return result

    async def _poll(self) -> PairState:
        state: PairState = await self._round_trip("query", "state", functools.partial(
            self.handle.query, "state", result_type=PairState, rpc_timeout=self._rpc_timeout()))
        self.run.last_stage, self.run.last_version = state.stage.value, state.version
        return state

    async def _wait_for(self, predicate: Callable[[PairState], bool], step: str, *,
                        due: datetime | None = None, since: float | None = None) -> PairState:
        """Query at every poll until `predicate` holds (or the pair's deadline passes)."""
        state = await self._poll_until(predicate, step, due=due, since=since)
        assert state is not None  # only a give_up_at ends the polling without a state
        return state

    async def _poll_until(self, predicate: Callable[[PairState], bool], step: str, *,
                          due: datetime | None = None, since: float | None = None,
                          give_up_at: datetime | None = None) -> PairState | None:
        """Query at every poll until `predicate` holds; None once `give_up_at` has passed.
        `due`: a timer's due time, the step is timed from it; `since`: a monotonic start, for
        a wait that is not a timer."""
        self.run.step = step
        if due is not None:  # the due time on the monotonic clock the samples use
            since = time.monotonic() - (datetime.now(UTC) - due).total_seconds()
        kind = "timer" if due is not None else "wait"
        # Left set when the deadline cancels us, so that record_inflight() can count it.
        self._waiting = (kind, step, since) if since is not None else None
        while True:
            state = await self._poll()
            if predicate(state):
                if since is not None:
                    self._record(Sample(self.run.label, kind, step,
                                        max(time.monotonic() - since, 0.0)))
                self._waiting = None
                return state
            if give_up_at is not None and datetime.now(UTC) >= give_up_at:
                self._waiting = None
                return None
            await asyncio.sleep(self.config.poll_interval_s)

    async def _round_trip(self, kind: str, step: str, attempt: Callable[[], Awaitable[T]], *,
                          since: float | None = None, attempts: list[int] | None = None) -> T:
        """One call, tried until it succeeds or fails for good; its latency covers every try."""
        if kind != "query":
            self.run.step = step
        began = since if since is not None else time.monotonic()
        timeout = self.config.attempt_timeout_s if kind in ("update", "result") else \
            self.config.rpc_timeout_s + 2
        tries = 0
        # Left set when the deadline cancels us, so that record_inflight() can count it.
        self._inflight = (kind, step, began)
        while True:
            tries += 1
            if attempts is not None:
                attempts[:] = [tries]
            try:
                result = await asyncio.wait_for(attempt(), timeout)
                break
            except Exception as exc:
                if not is_transient(exc):
                    self._inflight = None
                    raise
                self.run.transient_errors += 1
                self.run.last_error = f"{step}: {describe(exc)}"
                if "nondeterminism" in str(exc).lower():  # retried: the run reports it
                    self.run.nondeterminism += 1
                    self.run.nondeterminism_first = self.run.nondeterminism_first or \
                        self.run.last_error
                await asyncio.sleep(min(0.2 * tries, 2.0))
        self._inflight = None
        self._record(Sample(self.run.label, kind, step, time.monotonic() - began, tries))
        return result

    def record_inflight(self) -> None:
        """The pair's deadline passed mid-step: count that step's wait so far (at least that)."""
        current = self._waiting or self._inflight  # a wait spans the queries it makes
        if current is not None:
            kind, step, began = current
            self._record(Sample(self.run.label, kind, step, time.monotonic() - began, censored=True))

    def _rpc_timeout(self) -> timedelta:
        return timedelta(seconds=self.config.rpc_timeout_s)

    def _expect(self, condition: bool, what: str) -> None:
        if not condition:
            raise PairFailed(f"unexpected: {what}")


def reminder_sent(state: PairState, number: int) -> bool:
    session = state.session(number)
    return session is not None and session.reminder_sent


def new_run(index: int, programme_id: str) -> PairRun:
    return PairRun(index=index, sessions=sessions_for(index),
                   workflow_id=pair_workflow_id(programme_id, mentor_id(index), mentee_id(index)))
