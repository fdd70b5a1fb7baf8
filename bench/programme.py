"""Benchmark of the `MentoringProgramme` workflow at scale: enrolment, matching, starting the pairs.

    python -m bench.programme                             2,000 seniors and 1,000 mentors
    python -m bench.programme --seniors 100 --mentors 50  a quick run
    python -m bench.programme --database-url URL          a PostgreSQL of yours (a fresh database
                                                          is created, then dropped)

In one run, on servers of its own (a throw-away embedded PostgreSQL unless --database-url, and
`temporal server start-dev` on free 127.0.0.1 ports) and with the real worker in this process
(worker.build_worker: every workflow and activity, a mail-folder outbox in a temp folder):
1. open a programme from examples/programme-input.json (a fresh programme id);
2. nominate the mentors in bulk (200 per update), then each mentor confirms their motivation,
   and every senior enrols: concurrent updates, `--concurrency` in flight (updates/s, latency);
   people, time zones, availability, topics and management chains come from a seeded generator
   so that most can be matched, some cannot (other continents, a mentor reporting to them);
3. time `suggest_matches` (the update's wall time) against the pure `suggest` function on the
   same input in the same process: the ratio is the workflow's overhead;
4. time `accept_matches` for every suggested pair (pairs started per second), then wait until each
   pair has run its first steps (nominated, motivation request sent: version 2 of its stream) and
   count the MentoringPair workflows Temporal lists for the programme;
5. read the programme's runs: history length of each, whether it continued as new.
Progress goes to stderr; a table, then one JSON object as the last line, go to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import HistoryEventFilterType
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.service import RPCError, RPCStatusCode

from devstack.postgres import EmbeddedPostgres, free_port
from devstack.temporal import TemporalDevServer
from events.matching import MatchingRequest, MatchSuggestion
from settings import PROJECT_ROOT, Settings
from workflows.programme_state import ProgrammeState

EXAMPLE = PROJECT_ROOT / "examples" / "programme-input.json"
HR = "HR001"  # the example's HR owner
NOMINATION_BATCH = 200  # the most NominateMentors takes at once
WORKFLOW_TYPE = "MentoringPair"

# Where people work: (time zone, weight). Mostly Europe, so most can be paired; the others share
# a few hours a day with Europe at best, and some cannot be paired at all.
ZONES = [("Europe/Paris", 40), ("Europe/Berlin", 10), ("Europe/London", 14), ("Europe/Madrid", 8),
         ("Europe/Warsaw", 5), ("America/New_York", 9), ("America/Toronto", 3), ("Asia/Kolkata", 4),
         ("Asia/Singapore", 4), ("UTC", 3)]
WORKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday")



def _pairs(suggestion: MatchSuggestion) -> list[tuple[str, str, float, list[str]]]:
    return [(p.senior_id, p.mentor_id, p.score, list(p.topics)) for p in suggestion.pairs]

def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the cohort ----------------------------------------------------------------------------------

@dataclass
class Cohort:
    """Update payloads: mentor nominations (forms of NominateMentors) and senior enrolments."""

    mentors: list[dict[str, Any]]
    enrolments: list[dict[str, Any]]


class People:
    """People, their organisation and their weeks, from a seeded generator (reproducible)."""

    def __init__(self, seed: int, topics: list[str], today: date) -> None:
        self.random = random.Random(seed)
        self.topics, self.today = topics, today
        self.zones, self.zone_weights = [z for z, _ in ZONES], [w for _, w in ZONES]

    def availability(self, *, weekend: bool) -> list[dict[str, str]]:
        """1 to 3 windows in office hours (local time), 1.5 to 4 hours each, on distinct days."""
        r = self.random
        days = list(WORKDAYS) + (["saturday"] if weekend else [])
        windows = []
        for day in r.sample(days, r.choice((1, 2, 2, 3))):
            start = r.randrange(8 * 2, 16 * 2) * 30  # minutes after midnight, on the half hour
            end = min(start + r.randrange(3, 9) * 30, 20 * 60)
            windows.append({"weekday": day, "start": f"{start // 60:02d}:{start % 60:02d}",
                            "end": f"{end // 60:02d}:{end % 60:02d}"})
        return windows

    def person(self, employee_id: str, chain: list[str]) -> dict[str, Any]:
        # Synthetic contact details only: no real name or address ever enters a bench run.
        return {"employee_id": employee_id, "display_name": f"Bench person {employee_id}",
                "email": f"{employee_id.lower()}@example.invalid",
                "time_zone": self.random.choices(self.zones, self.zone_weights)[0],
                "management_chain": chain}

    def cohort(self, seniors: int, mentors: int) -> Cohort:
        r = self.random
        # An organisation: departments with a head, teams with a manager, one chief executive.
        departments = max(4, (seniors + mentors) // 200)
        senior_ids = [f"S{i:05d}" for i in range(seniors)]
        department_of = {s: r.randrange(departments) for s in senior_ids}

        def chain(department: int) -> list[str]:
            return [f"MGR{department:03d}{r.randrange(20):02d}", f"HEAD{department:03d}", "CEO001"]

        senior_forms = []
        for employee_id in senior_ids:
            form = self.person(employee_id, chain(department_of[employee_id]))
            form["availability"] = self.availability(weekend=r.random() < 0.1)
            form["topics_wished"] = r.sample(self.topics, r.choice((1, 1, 2, 2, 3)))
            senior_forms.append(form)
        mentor_forms = []
        for i in range(mentors):
            department = r.randrange(departments)
            boss_chain = chain(department)
            # Some juniors report to a senior of the cohort: that senior is never their mentee.
            if r.random() < 0.05:
                same = [s for s in senior_ids if department_of[s] == department] or senior_ids
                boss_chain[0] = r.choice(same)
            form = self.person(f"M{i:05d}", boss_chain)
            form["availability"] = self.availability(weekend=False)
            form["topics_offered"] = r.sample(self.topics, r.choice((1, 2, 2, 3)))
            form["capacity"] = r.choices((1, 2, 3), (2, 4, 3))[0]
            mentor_forms.append(form)
        enrolments = []
        for form in senior_forms:
            requested_on = (self.today - timedelta(days=r.randrange(30))).isoformat()
            if r.random() < 0.8:  # most enrol themselves; HR enters the written requests of others
                enrolments.append({"recorded_by": form["employee_id"], "senior": form,
                                   "request": {"channel": "self_service", "requested_on": requested_on}})
            else:
                enrolments.append({"recorded_by": HR, "senior": form, "request": {
                    "channel": r.choice(("email", "letter", "form")), "requested_on": requested_on}})
        return Cohort(mentors=mentor_forms, enrolments=enrolments)


# --- driving the programme -----------------------------------------------------------------------

# Admission refusals by the server (too many updates in flight, the run closing for a
# continue-as-new): the same update (same id) is sent again.
_RETRIED = {RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE, RPCStatusCode.NOT_FOUND,
            RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.ABORTED, RPCStatusCode.DEADLINE_EXCEEDED}
_OPEN = (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW)


class CannotGoOn(Exception):
    """The programme refused a step the bench needs: nothing more to drive."""


@dataclass
class Phase:
    """The updates of one kind sent to the programme: wall time, latencies, what went wrong."""

    name: str
    sent: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # the workflow's rejections, by message
    retries: Counter[str] = field(default_factory=Counter)  # server refusals, by status

    @property
    def done(self) -> int:
        return len(self.latencies)

    @property
    def per_s(self) -> float:
        return self.done / self.seconds if self.seconds else float("nan")

    def figures(self) -> dict[str, Any]:
        return {f"{self.name}_updates": self.done, f"{self.name}_s": round(self.seconds, 2),
                f"{self.name}_per_s": round(self.per_s, 1),
                f"{self.name}_ms_p50": round(percentile(self.latencies, 0.5) * 1000, 1),
                f"{self.name}_ms_p95": round(percentile(self.latencies, 0.95) * 1000, 1),
                f"{self.name}_refused": sum(self.refused.values()),
                f"{self.name}_retries": sum(self.retries.values())}


class Bench:
    """One programme, driven by its updates as HR and the people do, timed phase by phase."""

    def __init__(self, args: argparse.Namespace, client: Client, pool: asyncpg.Pool, settings: Settings) -> None:
        self.args, self.client, self.pool, self.settings = args, client, pool, settings
        self.figures: dict[str, Any] = {"bench": "programme", "seniors": args.seniors, "mentors": args.mentors,
                                        "concurrency": args.concurrency}
        self.data = json.loads(EXAMPLE.read_text())
        self.programme_id = self.data["programme_id"] = f"bench-{uuid.uuid4().hex[:8]}"
        self.workflow_id = f"programme-{self.programme_id}"
        # No run id: every call goes to the latest run, after a continue-as-new too.
        self.handle = client.get_workflow_handle(self.workflow_id)
        self.today = datetime.now(UTC).date()
        self.problems: list[str] = []

    # --- updates ------------------------------------------------------------------------------

    async def send(self, update: str, payload: dict[str, Any], phase: Phase, *, attempts: int = 60) -> Any:
        """One update, re-sent (same update id) while the server does not admit it; the result,
        or None when the workflow rejected it (counted in `phase.refused`)."""
        update_id = str(uuid.uuid4())
        started = time.perf_counter()
        phase.sent += 1
        for attempt in range(attempts):
            try:
                result = await self.handle.execute_update(update, payload, id=update_id)
            except WorkflowUpdateFailedError as exc:
                if isinstance(exc.cause, ApplicationError) and exc.cause.type == "ProgrammeRenewing":
                    # Continuing as new: nothing recorded, send it again as a new update.
                    phase.retries["renewing"] += 1
                    update_id = str(uuid.uuid4())
                    await asyncio.sleep(0.1)
                    continue
                # The message names pseudonymous ids at most: safe for the console.
                phase.refused[str(exc.cause)[:160]] += 1
                return None
            except RPCError as exc:
                if exc.status not in _RETRIED or attempt == attempts - 1:
                    raise
                phase.retries[exc.status.name] += 1
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(attempt, 6)))
                continue
            phase.latencies.append(time.perf_counter() - started)
            return result
        raise AssertionError("unreachable")

    async def send_all(self, update: str, payloads: list[dict[str, Any]], phase: Phase) -> None:
        """Every payload as one update, `--concurrency` in flight at most; progress every 10 s."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for payload in payloads:
            queue.put_nowait(payload)

        async def sender() -> None:
            while not queue.empty():
                await self.send(update, queue.get_nowait(), phase)

        async def progress() -> None:
            while True:
                await asyncio.sleep(10)
                say(f"  {phase.name}: {phase.done:,}/{len(payloads):,} done "
                    f"({phase.done / (time.perf_counter() - started):,.1f}/s)")

        started = time.perf_counter()
        reporter = asyncio.create_task(progress())
        try:
            await asyncio.gather(*(sender() for _ in range(self.args.concurrency)))
        finally:
            reporter.cancel()
            phase.seconds = time.perf_counter() - started
            self.record(phase)

    def record(self, phase: Phase) -> None:
        """A phase's figures into the report, even one cut short (the programme ended under it)."""
        self.figures.update(phase.figures())
        for message, count in phase.refused.most_common(3):
            say(f"  {phase.name} refused {count}x: {message}")
        if phase.retries:
            say(f"  {phase.name} re-sent after the server did not admit it: {dict(phase.retries)}")

    async def state(self) -> ProgrammeState:
        # A query waits for a worker to take it: right after a continue-as-new, while the worker
        # runs the first steps of hundreds of new pairs, that can outlast one call's deadline.
        for attempt in range(10):
            try:
                return await self.handle.query("state", result_type=ProgrammeState)
            except RPCError as exc:
                if exc.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED) or attempt == 9:
                    raise
                say(f"  the query 'state' waited too long ({exc.message}): asking again")
        raise AssertionError("unreachable")

    # --- the phases -----------------------------------------------------------------------------

    async def run(self) -> None:
        from activities.matching import suggest

        args, figures = self.args, self.figures
        cohort = People(args.seed, [t["id"] for t in self.data["topics"]], self.today).cohort(
            args.seniors, args.mentors)
        await self.start_baseline()

        started = time.perf_counter()
        await self.client.start_workflow("MentoringProgramme", self.data, id=self.workflow_id,
                                         task_queue=self.settings.temporal_task_queue)
        await self.wait_until_open()
        figures["open_s"] = round(time.perf_counter() - started, 2)
        say(f"programme opened in {figures['open_s']}s")

        nominate = Phase("nominate")
        batches = [{"recorded_by": HR, "mentors": cohort.mentors[i:i + NOMINATION_BATCH]}
                   for i in range(0, len(cohort.mentors), NOMINATION_BATCH)]
        started = time.perf_counter()
        try:
            for batch in batches:  # one after the other, as HR pastes them
                await self.send("nominate_mentors", batch, nominate)
        finally:
            nominate.seconds = time.perf_counter() - started
            self.record(nominate)
        say(f"{args.mentors:,} mentors nominated in {len(batches)} update(s), {nominate.seconds:.1f}s")

        confirm = Phase("confirm")
        await self.send_all("confirm_programme_motivation",
                            [{"recorded_by": m["employee_id"]} for m in cohort.mentors], confirm)
        say(f"{confirm.done:,} confirmations in {confirm.seconds:.1f}s: {confirm.per_s:.1f} updates/s")
        enrol = Phase("enrol")
        await self.send_all("enrol_senior", cohort.enrolments, enrol)
        say(f"{enrol.done:,} enrolments in {enrol.seconds:.1f}s: {enrol.per_s:.1f} updates/s")
        figures["enrolment_updates_per_s"] = round(
            (confirm.done + enrol.done) / (confirm.seconds + enrol.seconds), 1)
        state = await self.state()
        figures["mentors_confirmed"], figures["seniors_enrolled"] = len(state.mentors_confirmed), len(state.seniors)
        if len(state.mentors_confirmed) != args.mentors or len(state.seniors) != args.seniors:
            self.problems.append(f"enrolled {len(state.mentors_confirmed)} mentors and {len(state.seniors)} seniors")

        # Matching: the update's wall time, against the pure function on the same input.
        matching = Phase("matching")
        started = time.perf_counter()
        raw = await self.send("suggest_matches", {"recorded_by": HR}, matching)
        matching_s = time.perf_counter() - started
        if raw is None:
            raise CannotGoOn(f"suggest_matches was refused: {list(matching.refused)}")
        suggestion = await self.handle.query("matches", result_type=MatchSuggestion)
        state = await self.state()
        request = MatchingRequest(programme_id=state.programme_id, mentors=state.active_mentors(),
                                  seniors=state.active_seniors(), rules=state.matching)
        started = time.perf_counter()
        baseline = await asyncio.to_thread(suggest, request, self.today)  # as the activity runs it
        suggest_s = time.perf_counter() - started
        figures.update({
            "matching_s": round(matching_s, 2), "suggest_s": round(suggest_s, 2),
            "matching_overhead_ratio": round(matching_s / suggest_s, 2),
            "pairs_suggested": len(suggestion.pairs),
            "unmatched_seniors": sum(u.role == "senior" for u in suggestion.unmatched),
            "unmatched_mentors": sum(u.role == "mentor" for u in suggestion.unmatched),
            # (reasons aside: a fresh run of the programme carries the suggestion without them)
            "baseline_same_pairs": _pairs(baseline) == _pairs(suggestion),
        })
        say(f"suggest_matches: {len(suggestion.pairs):,} pairs in {matching_s:.2f}s; the pure function "
            f"{suggest_s:.2f}s (x{figures['matching_overhead_ratio']})")
        reasons = Counter(u.reason for u in suggestion.unmatched if u.role == "senior")
        for reason, count in reasons.most_common(4):
            say(f"  seniors left out, {count}x: {reason}")

        # Accepting every pair starts one MentoringPair each, in batches, through an activity.
        accept = Phase("accept")
        started = time.perf_counter()
        raw = await self.send("accept_matches", {"recorded_by": HR}, accept)
        accept_s = time.perf_counter() - started
        if raw is None:
            raise CannotGoOn(f"accept_matches was refused: {list(accept.refused)}")
        state = await self.state()
        pairs = list(state.pairs_started)
        figures.update({
            "accept_s": round(accept_s, 2), "pairs_started": len(pairs),
            "pairs_not_started": len(state.pairs_not_started),
            "pairs_started_per_s": round(len(pairs) / accept_s, 1),
            "programme_state_kb": round(len(state.model_dump_json()) / 1024),
        })
        say(f"accept_matches: {len(pairs):,} pairs started in {accept_s:.1f}s "
            f"({figures['pairs_started_per_s']}/s)")
        if len(pairs) != len(suggestion.pairs) or state.pairs_not_started:
            self.problems.append(f"{len(pairs)} pairs started of {len(suggestion.pairs)} suggested")

        done, seconds = await self.wait_for_first_steps(pairs)
        figures.update({"pairs_first_steps_done": done,
                        "pairs_first_steps_s": round(accept_s + seconds, 1),  # from accept_matches sent
                        "pairs_first_steps_per_s": round(done / (accept_s + seconds), 1)})
        say(f"{done:,} pairs through their first steps {figures['pairs_first_steps_s']}s after accept_matches")
        if done != len(pairs):
            self.problems.append(f"{len(pairs) - done} pairs did not run their first steps")
        listed, running = await self.count_pairs(len(pairs))
        figures.update({"pairs_listed": listed, "pairs_running": running})
        say(f"Temporal lists {listed:,} MentoringPair workflows of the programme, {running:,} running")
        if listed != len(pairs):
            self.problems.append(f"Temporal lists {listed} pairs, {len(pairs)} started")

    async def start_baseline(self) -> None:
        """The server's own pace for the starts `accept_matches` makes: the same calls, one after
        the other, of workflows no worker runs (a task queue nobody polls)."""
        count = self.args.baseline_starts
        if not count:
            return
        queue = f"bench-idle-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        for i in range(count):
            await self.client.start_workflow("BenchIdle", id=f"bench-idle-{i}", task_queue=queue)
        self.figures["bare_starts_per_s"] = round(count / (time.perf_counter() - started), 1)
        for i in range(count):
            await self.client.get_workflow_handle(f"bench-idle-{i}").terminate(reason="bench baseline")
        say(f"baseline: {count} bare start_workflow calls at {self.figures['bare_starts_per_s']}/s")

    async def wait_until_open(self, timeout: float = 60) -> None:
        """The programme answers its `state` query once its opening is recorded."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.state()
                return
            except Exception:  # not opened yet (the query raises until then), or no task taken yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def wait_for_first_steps(self, pair_ids: list[str]) -> tuple[int, float]:
        """Wait until each pair's stream reaches version 2 (nominated, motivation request sent);
        return how many did, and when (seconds from the call)."""
        started, last_said = time.perf_counter(), 0.0
        while True:
            done = await self.pool.fetchval(
                "SELECT count(*) FROM (SELECT stream_id FROM events WHERE stream_id = ANY($1::text[]) "
                "GROUP BY stream_id HAVING max(version) >= 2) s", pair_ids)
            elapsed = time.perf_counter() - started
            if done >= len(pair_ids) or elapsed > self.args.settle_timeout:
                return done, elapsed
            if elapsed - last_said >= 10:
                say(f"  pairs through their first steps: {done:,}/{len(pair_ids):,}")
                last_said = elapsed
            await asyncio.sleep(0.5)

    async def count_pairs(self, expected: int, timeout: float = 60) -> tuple[int, int]:
        """MentoringPair workflows Temporal lists for the programme (all, running); visibility
        lags a little behind the starts, so wait for the expected count a while."""
        query = f"WorkflowType = '{WORKFLOW_TYPE}' AND MentoringProgramme = '{self.programme_id}'"
        deadline = time.monotonic() + timeout
        while True:
            listed = (await self.client.count_workflows(query)).count
            if listed >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        running = (await self.client.count_workflows(f"{query} AND ExecutionStatus = 'Running'")).count
        return listed, running

    # --- the programme's workflow ---------------------------------------------------------------

    async def watch(self) -> str:
        """Return (ending the run) once the programme's latest run has closed other than by
        continuing as new: terminated by Temporal, failed, completed."""
        while True:
            await asyncio.sleep(2)
            with contextlib.suppress(RPCError):  # not started yet
                described = await self.handle.describe()
                if described.status not in _OPEN:
                    return f"{described.status.name if described.status else '?'}: {await self.close_reason()}"

    async def close_reason(self) -> str:
        """What the closing event of the latest run says (only that event is read)."""
        response = await self.client.workflow_service.get_workflow_execution_history(
            GetWorkflowExecutionHistoryRequest(
                namespace=self.client.namespace, execution=WorkflowExecution(workflow_id=self.workflow_id),
                history_event_filter_type=HistoryEventFilterType.HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT))
        for event in response.history.events:
            if event.HasField("workflow_execution_terminated_event_attributes"):
                return event.workflow_execution_terminated_event_attributes.reason
            if event.HasField("workflow_execution_failed_event_attributes"):
                return event.workflow_execution_failed_event_attributes.failure.message[:300]
        return "no reason recorded"

    async def read_runs(self) -> None:
        """Each run of the programme's workflow: history length and size; continued as new?"""
        runs = []
        async for execution in self.client.list_workflows(f"WorkflowId = '{self.workflow_id}'"):
            described = await self.client.get_workflow_handle(self.workflow_id, run_id=execution.run_id).describe()
            runs.append((execution.start_time, described.status, described.history_length,
                         described.raw_description.workflow_execution_info.history_size_bytes))
        runs.sort(key=lambda r: r[0])
        if not runs:
            return
        by_status = Counter(status.name.lower() if status else "?" for _, status, _, _ in runs)
        self.figures.update({
            "programme_runs": len(runs), "continued_as_new": len(runs) > 1,
            "history_events": runs[-1][2], "history_events_max": max(r[2] for r in runs),
            "history_kb": round(runs[-1][3] / 1024), "history_kb_max": round(max(r[3] for r in runs) / 1024),
            "programme_events": await self.pool.fetchval(
                "SELECT count(*) FROM events WHERE stream_id = $1", f"programme-{self.programme_id}"),
        })
        say(f"programme runs: {dict(by_status)}; longest history {self.figures['history_events_max']:,} "
            f"events, {self.figures['history_kb_max']:,} KiB; latest {self.figures['history_events']:,} events")
        await self.check_workflow_task()

    async def check_workflow_task(self) -> None:
        """A workflow task that fails is retried for ever, the run still "running": say so."""
        described = await self.handle.describe()
        raw = described.raw_description
        attempt = raw.pending_workflow_task.attempt if raw.HasField("pending_workflow_task") else 0
        self.figures["programme_task_attempt"] = attempt
        if attempt <= 1:
            return
        failure = "?"
        async for event in self.handle.fetch_history_events():
            if event.HasField("workflow_task_failed_event_attributes"):
                failure = event.workflow_task_failed_event_attributes.failure.message.splitlines()[0][:200]
        self.problems.append(f"the programme's workflow task fails, attempt {attempt}: {failure}")
        say(self.problems[-1])


# --- the stack -----------------------------------------------------------------------------------

@contextlib.contextmanager
def servers(folder: Path, database_url: str | None) -> Iterator[tuple[str, str]]:
    """An embedded PostgreSQL (unless a server is given) and a Temporal dev server, both on free
    127.0.0.1 ports with their data in `folder`; yields (admin URL, Temporal address)."""
    postgres = None if database_url else EmbeddedPostgres(folder / "postgres", free_port())
    temporal = TemporalDevServer(folder / "temporal" / "temporal.db", port=free_port(), ui_port=free_port(),
                                 headless=True)
    try:
        if postgres is not None:
            say(f"starting an embedded PostgreSQL on 127.0.0.1:{postgres.port} in {folder}")
            postgres.start()
            database_url = postgres.admin_url()
        say(f"starting the Temporal dev server on {temporal.address}")
        temporal.start()
        assert database_url is not None
        yield database_url, temporal.address
    finally:
        temporal.stop()
        if postgres is not None:
            postgres.stop()


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    """A database of its own on the server (migrated by the worker's `open_database`), dropped after."""
    name = f"bench_programme_{int(time.time())}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# --- the run -------------------------------------------------------------------------------------

class PayloadWarnings(logging.Filter):
    """Counts the SDK's warnings of a payload over 512 KiB (TMPRL1103), showing the first only:
    at scale they come with every update, whose result is the programme's whole state."""

    _SIZE = re.compile(r"'size': (\d+)")

    def __init__(self) -> None:
        super().__init__()
        self.count, self.largest = 0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "TMPRL1103" not in message:
            return True
        self.count += 1
        if found := self._SIZE.search(message):
            self.largest = max(self.largest, int(found.group(1)))
        return self.count == 1


async def run(args: argparse.Namespace, folder: Path, admin_url: str, temporal_address: str) -> dict[str, Any]:
    from runtime import connect_temporal, data_keys, open_database, setup_telemetry
    from worker import build_worker

    # The SDK's core logs its warnings on stdout by default: to stderr, with ours, instead.
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core"))))),
        error_if_already_set=False)
    payloads = PayloadWarnings()
    for handler in logging.getLogger().handlers:
        handler.addFilter(payloads)
    async with fresh_database(admin_url) as url:
        # The real worker's settings, on our servers; e-mails go to a mail folder in the temp folder.
        settings = Settings(database_url=url, temporal_address=temporal_address,
                            temporal_task_queue=f"bench-programme-{uuid.uuid4().hex[:8]}",
                            state_dir=folder / "state", otel_traces_exporter="none")
        provider = setup_telemetry(settings)
        pool = await open_database(settings.database_url)
        try:
            client = await connect_temporal(settings, data_keys(settings, pool))
            bench = Bench(args, client, pool, settings)
            async with build_worker(client, pool, settings):
                driving = asyncio.create_task(bench.run())
                watching = asyncio.create_task(bench.watch())
                try:
                    await asyncio.wait([driving, watching], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (driving, watching):
                        task.cancel()
                    await asyncio.gather(driving, watching, return_exceptions=True)
                failure = None
                if watching.done() and not watching.cancelled():
                    failure = f"the programme's workflow closed under the bench: {watching.result()}"
                elif (error := driving.exception()) is not None:
                    if not isinstance(error, CannotGoOn):  # a bug of the bench, or a server gone
                        logging.getLogger(__name__).error("the bench stopped", exc_info=error)
                    failure = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                await bench.read_runs()
        finally:
            await pool.close()
            provider.shutdown()
    figures = bench.figures
    figures["updates_refused"] = sum(v for k, v in figures.items() if k.endswith("_refused"))
    figures["updates_resent"] = sum(v for k, v in figures.items() if k.endswith("_retries"))
    figures["payload_warnings"], figures["payload_largest_kb"] = payloads.count, round(payloads.largest / 1024)
    figures["ok"] = failure is None and not bench.problems
    figures["failure"] = failure or ("; ".join(bench.problems) if bench.problems else None)
    if failure:
        say(failure)
    return figures


ROWS = [  # (label, format, keys): a row shows when its figures are in the report
    ("seniors / mentors / updates in flight", "{:,} / {:,} / {}", ("seniors", "mentors", "concurrency")),
    ("nominations (bulk updates)", "{} in {} s", ("nominate_updates", "nominate_s")),
    ("confirmations", "{:,} at {} updates/s (p50 {} ms, p95 {} ms)",
     ("confirm_updates", "confirm_per_s", "confirm_ms_p50", "confirm_ms_p95")),
    ("enrolments", "{:,} at {} updates/s (p50 {} ms, p95 {} ms)",
     ("enrol_updates", "enrol_per_s", "enrol_ms_p50", "enrol_ms_p95")),
    ("updates refused / re-sent", "{} / {}", ("updates_refused", "updates_resent")),
    ("suggest_matches (update)", "{} s", ("matching_s",)),
    ("suggest() alone", "{} s (the update takes x{})", ("suggest_s", "matching_overhead_ratio")),
    ("pairs suggested / seniors left out", "{:,} / {:,}", ("pairs_suggested", "unmatched_seniors")),
    ("accept_matches", "{} s: {} pairs started/s", ("accept_s", "pairs_started_per_s")),
    ("bare start_workflow calls", "{} /s", ("bare_starts_per_s",)),
    ("pairs started / not started", "{:,} / {:,}", ("pairs_started", "pairs_not_started")),
    ("pairs through first steps", "{:,}, {} s after accept_matches", ("pairs_first_steps_done", "pairs_first_steps_s")),
    ("MentoringPair listed / running", "{:,} / {:,}", ("pairs_listed", "pairs_running")),
    ("programme runs (continued as new)", "{} ({})", ("programme_runs", "continued_as_new")),
    ("history events: latest run / max", "{:,} / {:,}", ("history_events", "history_events_max")),
    ("history KiB: latest run / max", "{:,} / {:,}", ("history_kb", "history_kb_max")),
    ("programme state carried", "{:,} KiB", ("programme_state_kb",)),
    ("payloads over 512 KiB (largest)", "{:,} ({:,} KiB)", ("payload_warnings", "payload_largest_kb")),
    ("whole run", "{} s", ("total_s",)),
    ("failure", "{}", ("failure",)),
]


def table(figures: dict[str, Any]) -> str:
    rows = [(label, fmt.format(*(figures[k] for k in keys))) for label, fmt, keys in ROWS
            if all(figures.get(k) is not None for k in keys)]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seniors", type=int, default=2000)
    parser.add_argument("--mentors", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8,
                        help="updates in flight (the dev server admits 10 at most per workflow)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated cohort")
    parser.add_argument("--baseline-starts", type=int, default=200,
                        help="bare start_workflow calls timed first, to compare accept_matches with")
    parser.add_argument("--settle-timeout", type=float, default=900,
                        help="seconds to wait for the started pairs' first steps")
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server to use (a fresh database is created and dropped)")
    args = parser.parse_args(argv)
    if args.seniors < 1 or args.mentors < 1 or args.concurrency < 1:
        parser.error("--seniors, --mentors and --concurrency must be at least 1")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the servers on kill too
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    folder = Path(tempfile.mkdtemp(prefix="bench-programme-"))
    started = time.perf_counter()
    try:
        with servers(folder, args.database_url) as (admin_url, temporal_address):
            figures = asyncio.run(run(args, folder, admin_url, temporal_address))
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    figures["total_s"] = round(time.perf_counter() - started, 1)
    print(table(figures), flush=True)
    print(json.dumps(figures), flush=True)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

