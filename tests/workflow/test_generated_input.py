"""Generated input against every door of a pair (hypothesis), on the real test server and
PostgreSQL: arbitrary payloads (any count, any bytes, any JSON, forms with hostile values) to
every update, the signal and the start. Whatever comes in, the answer is a clean refusal or an
acceptance; no workflow task fails; no message shows a traceback, a path or an e-mail address;
and the pair still answers an ordinary update afterwards.

The examples are derandomised, so CI tries the same inputs on every run; `TRIED` counts them
(README, "Bad input").
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from tests.workflow.pairs import (
    EXAMPLE,
    HR,
    MENTEE,
    MENTOR,
    Harness,
    Pair,
    pair_input,
    two_sessions_held,
)
from workflows.inputs import UPDATE_FORMS
from workflows.pair_state import ActionResult, PairState

LEAKS = ("Traceback", "File \"", ".py\"", "/work/", "site-packages", "input_value")
E_MAIL = re.compile(r"[^\s@]+@[^\s@]+")
TRIED: Counter[str] = Counter()
ANSWER_WITHIN = 30  # seconds: an update left unanswered this long means the pair stopped answering

# Values that have broken things before, or sit at an edge of what a field accepts.
TRICKY: list[Any] = [
    MENTOR, MENTEE, HR, "E9999", "mentor", "mentee", "hr", "both", "agenda", "leave", "other", "no_time",
    "mismatch", "email", "ui", "individual", "group", "reverse-mentoring-basics", "social networks",
    0, 1, 2, 5, 6, 12, 15, 240, -1, 10**30, 1.5, True, False, None, "", " ", "\u0000", "a\u0000b",
    "Léa\r\nBcc: x@y.example", "x" * 300, "lea.martin@example.com", "Europe/Paris", "Mars/Olympus",
    "2027-03-28T02:30", "2027-10-31T02:30", "0001-01-01T00:30+14:00", "9999-12-31", "9999-12-31T23:59:59-14:00",
    "2027-01-05T10:00", "2027-01-05T10:00:00+01:00", "next tuesday", "P9999999999D", "P1D", "PT0S",
    [], ["social networks"], ["apps", "apps"], [None], {}, {"k": "v"},
]
_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                          st.text(max_size=40))
any_json = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)
field_value = st.one_of(st.sampled_from(TRICKY), any_json)


# What each field plausibly holds, so that many generated forms get past the shape checks and
# reach the pair's rules (who, when, which session), where the subtler mistakes are.
_PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "recorded_by": st.sampled_from([MENTOR, MENTEE, HR, "E9999"]),
    "reason": st.sampled_from(["agenda", "leave", "other", "no_time", "mismatch", "illness", "mentor_left"]),
    "role": st.sampled_from(["mentor", "mentee", "hr"]),
    "cancelled_by": st.sampled_from(["mentor", "mentee", "hr"]),
    "by_role": st.sampled_from(["mentor", "mentee"]),
    "absent": st.sampled_from(["mentor", "mentee", "both"]),
    "session_no": st.integers(1, 3),
    "starts_at": st.one_of(  # Tuesdays at 10:00 fit the example mentee's availability
        st.sampled_from([f"2027-0{m}-{d}T10:00" for m, d in ((2, "02"), (2, "09"), (3, "02"), (3, "09"))]),
        st.builds(lambda days, hour, zone: f"2027-01-{days:02d}T{hour:02d}:00{zone}",
                  st.integers(1, 31), st.integers(0, 23), st.sampled_from(["", "Z", "+01:00", "+14:00"]))),
    "topics": st.sampled_from([["social networks"], ["apps"], ["social networks", "apps"]]),
    "topics_covered": st.sampled_from([["social networks"], ["apps"]]),
    "objectives": st.sampled_from([["publish a first post"], ["one", "two"]]),
    "module": st.sampled_from(["reverse-mentoring-basics", "confidentiality", "knitting"]),
    "rating": st.integers(0, 6),
    "comment": st.text(max_size=60),
    "additional_sessions": st.integers(0, 13),
    "duration_minutes": st.sampled_from([15, 60, 240, 241]),
    "new_mentor": st.builds(lambda who: {**EXAMPLE["mentor"], "employee_id": who},
                            st.sampled_from(["E2001", MENTOR, MENTEE, HR])),
    "days_after_end": st.sampled_from([0, 30, 90]),
}


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each drawn with its weight (out of their sum)."""
    total = sum(weight for weight, _ in choices)

    def pick(n: int) -> st.SearchStrategy[Any]:
        for weight, strategy in choices:
            if n < weight:
                return strategy
            n -= weight
        raise AssertionError(n)

    return st.integers(0, total - 1).flatmap(pick)


def form_like(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """An object shaped like a form: most of its fields, each mostly plausible, sometimes odd,
    and now and then a field it does not have."""
    def entry(name: str) -> st.SearchStrategy[Any]:
        value = weighted((9, _PLAUSIBLE.get(name, st.booleans())), (1, field_value))
        return weighted((19, st.tuples(st.just(name), value)), (1, st.none()))

    extra = weighted((9, st.just({})), (1, st.dictionaries(st.text(max_size=8), field_value, max_size=2)))
    return st.builds(lambda entries, more: {**{e[0]: e[1] for e in entries if e is not None}, **more},
                     st.tuples(*[entry(name) for name in fields]), extra)


def as_json(value: Any) -> RawValue:
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode()))


def payloads_for(shape: st.SearchStrategy[Any]) -> st.SearchStrategy[list[RawValue]]:
    """Mostly one payload shaped like the door's form; else any JSON, any bytes, other encodings,
    and none or several payloads."""
    one = st.one_of(
        any_json.map(as_json),
        st.binary(max_size=64).map(lambda b: RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b))),
        st.tuples(st.sampled_from([b"binary/plain", b"binary/null", b"json/protobuf", b""]), st.binary(max_size=32))
        .map(lambda eb: RawValue(Payload(metadata={"encoding": eb[0]}, data=eb[1]))),
    )
    return weighted((7, shape.map(lambda value: [as_json(value)])), (2, one.map(lambda p: [p])),
                    (1, st.lists(st.one_of(one, shape.map(as_json)), max_size=3)))


update_calls = st.sampled_from(sorted(UPDATE_FORMS)).flatmap(
    lambda name: st.tuples(st.just(name), payloads_for(form_like(sorted(UPDATE_FORMS[name].model_fields)))))
signal_calls = payloads_for(form_like(["recorded_by", "days_after_end", "by_role", "still_using"]))


def _start_input(changes: list[tuple[str, Any]]) -> dict[str, Any]:
    data = pair_input()
    for path, value in changes:
        *parents, leaf = path.split(".")
        target: Any = data
        for key in parents:
            target = target.setdefault(key, {}) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target[leaf] = value
    return data


_START_FIELDS = ["programme_id", "topics", "sessions_planned", "training_modules", "hr_team", "policy",
                 "mentor.employee_id", "mentor.display_name", "mentor.email", "mentor.time_zone",
                 "mentee.employee_id", "mentee.availability", "mentee.time_zone", "nominated_by.employee_id",
                 "nominated_by.email", "policy.lapse_after", "colour"]
start_calls = payloads_for(st.one_of(
    st.lists(st.tuples(st.sampled_from(_START_FIELDS), field_value), min_size=1, max_size=3).map(_start_input),
    st.just(copy.deepcopy(EXAMPLE)).map(lambda d: {k: v for k, v in d.items() if k != "mentee"}),
))

UPDATE_EXAMPLES, SIGNAL_EXAMPLES, START_EXAMPLES = 400, 150, 80
_SETTINGS = settings(max_examples=SIGNAL_EXAMPLES, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                            HealthCheck.data_too_large, HealthCheck.filter_too_much])


async def explore(strategy: st.SearchStrategy[Any], send: Callable[[Any], Awaitable[None]],
                  how: settings = _SETTINGS) -> None:
    """Run hypothesis over `strategy`, each example sent by `send` on this event loop.

    Hypothesis drives plain functions: it runs in a thread of its own, and hands each example to
    the loop (where the Temporal client lives) and waits for it."""
    loop = asyncio.get_running_loop()

    @how
    @given(strategy)
    def example(value: Any) -> None:
        asyncio.run_coroutine_threadsafe(send(value), loop).result()

    await loop.run_in_executor(None, example)


def check_words(error: BaseException) -> str:
    """The refusal HR reads: an application error with a message and no traceback or leak."""
    cause = error.cause if isinstance(error, WorkflowUpdateFailedError | WorkflowFailureError) else error
    assert isinstance(cause, ApplicationError), f"not a refusal in words: {cause!r}"
    assert cause.failure is None or cause.failure.stack_trace == "", "a traceback is shown"
    assert cause.type and not cause.type.endswith("Exception"), cause.type
    for leak in LEAKS:
        assert leak not in cause.message, f"{leak!r} shown: {cause.message[:300]}"
    shown = cause.message.replace("name@domain.tld", "")  # the format hint of an e-mail field
    assert not E_MAIL.search(shown), f"an e-mail address shown: {cause.message[:300]}"
    assert len(cause.message) < 3000, "the message is as long as the input"
    return cause.type


async def task_failures(handle: WorkflowHandle) -> int:
    history = await handle.fetch_history()
    return sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history.events)


async def start_outcome(handle: WorkflowHandle) -> str:
    """'started' for a pair that was nominated, else the type of the refusal that ended it.

    Polled, not awaited: awaiting a result lets the time-skipping server jump to the pair's deadlines."""
    client = handle._client
    request = DescribeWorkflowExecutionRequest(namespace=client.namespace,
                                               execution=WorkflowExecution(workflow_id=handle.id))
    for _ in range(200):
        # Raw: the SDK's describe() cannot decode the null search attributes the test server keeps.
        described = await client.workflow_service.describe_workflow_execution(request)
        if described.workflow_execution_info.status == WorkflowExecutionStatus.FAILED.value:
            try:
                await handle.result()
            except WorkflowFailureError as failed:
                return check_words(failed)
        with contextlib.suppress(WorkflowQueryFailedError):
            if (await handle.query("state", result_type=PairState)).version >= 2:
                return "started"
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} neither failed nor started")


class Pairs:
    """Pairs to aim at, at the stage where most updates mean something; a new one when one ends."""

    def __init__(self, harness: Harness) -> None:
        self.harness, self.pair, self.all = harness, None, []

    async def current(self) -> Pair:
        if self.pair is None or (await self.pair.state()).closed:
            self.pair = await self.harness.start()
            await self.pair.prepare()
            self.all.append(self.pair)
        return self.pair


async def test_any_update_payload_gets_an_answer_in_words(harness: Harness):
    pairs = Pairs(harness)
    outcomes: Counter[str] = Counter()

    async def send(call: tuple[str, list[RawValue]]) -> None:
        name, args = call
        pair = await pairs.current()
        try:
            await asyncio.wait_for(pair.handle.execute_update(name, args=args, result_type=ActionResult),
                                   ANSWER_WITHIN)
            outcomes["accepted"] += 1
        except WorkflowUpdateFailedError as refused:
            outcomes[check_words(refused)] += 1
        TRIED["update"] += 1

    await explore(update_calls, send, settings(_SETTINGS, max_examples=UPDATE_EXAMPLES))
    for pair in pairs.all:
        assert await task_failures(pair.handle) == 0
    # Still answering: an ordinary update on the last pair (refused or taken, but answered).
    # The generated updates may have paused it, ended it or moved it where a pause is not taken:
    # then the answer is a refusal, in words.
    pair = await pairs.current()
    try:
        result = await asyncio.wait_for(pair.handle.execute_update(
            "pause", {"recorded_by": HR, "reason": "agenda"}, result_type=ActionResult), ANSWER_WITHIN)
        assert result.paused
    except WorkflowUpdateFailedError as refused:
        check_words(refused)
    assert outcomes["InvalidUpdatePayload"] > 0 and sum(outcomes.values()) == UPDATE_EXAMPLES
    print(f"\nupdates: {dict(outcomes)}")


async def test_any_signal_payload_is_taken_or_ignored_and_counted(harness: Harness):
    pair = await two_sessions_held(harness)  # then in the follow-ups, where answers are welcome
    for who, role in ((MENTOR, "mentor"), (MENTEE, "mentee")):
        await pair.act("give_final_evaluation", recorded_by=who, by_role=role, rating=5, would_recommend=True)
    await harness.skip(days=31)
    await pair.wait_for(lambda s: 30 in s.follow_ups_sent)
    sent = 0

    async def send(args: list[RawValue]) -> None:
        nonlocal sent
        await pair.handle.signal("answer_follow_up", args=args)
        sent += 1
        TRIED["signal"] += 1

    await explore(signal_calls, send)
    # Each signal is either an answer recorded or an answer ignored and counted.
    state: PairState = await pair.wait_for(
        lambda s: s.signals_ignored + len(s.follow_up_answers) == sent, timeout=ANSWER_WITHIN)
    assert state.signals_ignored > 0
    assert await task_failures(pair.handle) == 0
    assert (await pair.act("pause", recorded_by=HR, reason="agenda")).paused
    print(f"\nsignals: {sent}, {len(state.follow_up_answers)} recorded, {state.signals_ignored} ignored and counted")


async def test_any_start_input_fails_at_once_in_words_or_starts(harness: Harness):
    outcomes: Counter[str] = Counter()
    handles: list[WorkflowHandle] = []

    async def start(args: list[RawValue]) -> None:
        handle = await harness.client.start_workflow("MentoringPair", args=args, id=f"generated-{uuid.uuid4()}",
                                                     task_queue=harness.task_queue)
        harness.started.append(handle)
        handles.append(handle)
        TRIED["start"] += 1

    await explore(start_calls, start, settings(_SETTINGS, max_examples=START_EXAMPLES))
    for handle in handles:
        outcomes[await start_outcome(handle)] += 1
        assert await task_failures(handle) == 0
    assert outcomes["InvalidPairInput"] > 0
    print(f"\nstarts: {dict(outcomes)}")
