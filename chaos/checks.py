"""After the run: what must hold however often the workers died.

Each check returns a `Check` (a name, ok, and one line per problem naming the pair), and adds
its counts to the run's figures. Two of them act: pairs still running at the end are terminated
once their state has been described, and the read-model check rebuilds the read models (after
taking a snapshot of the live ones) to compare them.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory

from chaos.driver import PairRun, describe
from events.base import RecordedEvent
from events.store import PostgresEventStore

# --- the lifecycle every pair goes through (the shape of EXPECTED in test_worker_crash.py) ---


def both(kind: str) -> list[str]:
    return [f"NotificationSent:{kind}>mentor", f"NotificationSent:{kind}>mentee"]


PREPARED = [
    "PairNominated", "NotificationSent:motivation_request>mentor",
    "MentorMotivationConfirmed", "MenteeInvited", "NotificationSent:invitation>mentee",
    "MenteeConsentGiven", "NotificationSent:preparation_started>mentor",
    "NotificationSent:mentee_onboarding>mentee",
    "CurriculumAgreed", "TrainingModuleCompleted", "TrainingModuleCompleted", "MenteeOnboarded",
    "MentorSignedOff", *both("sessions_open"),
]
ENDING = [
    "FinalEvaluationGiven", "FinalEvaluationGiven",
    "FollowUpSent", *both("follow_up"), "FollowUpSent", *both("follow_up"),
    "FollowUpAnswered", "FollowUpAnswered", "PairCompleted",
]


def session_block(reminder: Sequence[str], last: bool, after_outcome: bool = False) -> list[str]:
    """One session; `reminder`: its reminder's labels, as the log holds them (see
    `reminder_labels`), or none; `after_outcome`: recorded as skipped with the session held,
    because the session was held before the reminder's timer had fired."""
    block = ["SessionProposed", *both("session_invitation"), "SessionConfirmed"]
    block += ["SessionHeld", *reminder] if after_outcome else [*reminder, "SessionHeld"]
    block += both("feedback_request")
    if last:  # the last session held opens the final evaluation
        block += both("final_evaluation_request")
    return block + ["FeedbackGiven", "FeedbackGiven"]


def expected_timeline(reminders: Sequence[Sequence[str]],
                      after_outcome: Sequence[bool] = ()) -> list[str]:
    flags = list(after_outcome) or [False] * len(reminders)
    sessions = [session_block(r, i == len(reminders) - 1, flags[i]) for i, r in enumerate(reminders)]
    return PREPARED + [label for block in sessions for label in block] + ENDING


NOTICE_EVENTS = ("NotificationSent", "NotificationSkipped", "NotificationFailed")


def timeline_of(events: Sequence[RecordedEvent]) -> list[str]:
    """Event types; a notice as `NotificationSent:<kind>><role>` (as tests/workflow/pairs.py),
    likewise a skipped or failed one."""
    return [f"{e.event_type}:{e.payload['kind']}>{e.payload['recipient_role']}"
            if e.event_type in NOTICE_EVENTS else e.event_type for e in events]


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _session_event(events: Sequence[RecordedEvent], event_type: str,
                   number: int) -> RecordedEvent | None:
    return next((e for e in events if e.event_type == event_type
                 and e.payload.get("session_no") == number), None)


def confirmed_ahead(events: Sequence[RecordedEvent], number: int) -> float | None:
    """Seconds between session `number`'s confirmation (in workflow time) and its start."""
    proposed = _session_event(events, "SessionProposed", number)
    confirmed = _session_event(events, "SessionConfirmed", number)
    if proposed is None or confirmed is None:
        return None
    at = _time(confirmed.metadata.get("occurred_at") or confirmed.recorded_at)
    return (_time(proposed.payload["starts_at"]) - at).total_seconds()


def reminder_owed(ahead: float | None) -> bool | None:
    """Was a session's reminder owed (sent, or recorded as skipped if handled too late)? Yes
    if it was confirmed more than a second before its start; no if only once it had started
    (older code then records nothing); either way in between."""
    if ahead is None:
        return None
    return True if ahead > 1 else False if ahead <= 0 else None


def reminder_labels(events: Sequence[RecordedEvent], number: int) -> list[str]:
    """How session `number`'s reminder went, one label per person in the lifecycle's order:
    `NotificationSent:...` or `NotificationSkipped:...` (handled once the session had begun,
    recorded as such); empty when nothing was recorded for it."""
    return [label for e, label in zip(events, timeline_of(events), strict=True)
            if e.event_type in NOTICE_EVENTS and e.payload.get("kind") == "session_reminder"
            and e.payload.get("session_no") == number]


def skipped_with_outcome(events: Sequence[RecordedEvent], number: int) -> bool:
    """Session `number`'s reminder recorded as skipped after the session's outcome: the workflow
    does so in the outcome's own append when the reminder had not gone out by then."""
    held = next((i for i, e in enumerate(events) if e.event_type in ("SessionHeld", "SessionMissed")
                 and e.payload.get("session_no") == number), None)
    return held is not None and any(
        i > held and e.event_type == "NotificationSkipped" and e.payload.get("kind") == "session_reminder"
        and e.payload.get("session_no") == number for i, e in enumerate(events))


def _reminder_outcome(labels: Sequence[str]) -> str:
    for event_type, outcome in (("NotificationSkipped", "skipped"), ("NotificationFailed", "failed"),
                                ("NotificationSent", "sent")):
        if any(label.startswith(f"{event_type}:") for label in labels):
            return outcome
    return "none"


def _skipped_early(events: Sequence[RecordedEvent], number: int) -> bool:
    """A reminder recorded as skipped before its session had even begun."""
    proposed = _session_event(events, "SessionProposed", number)
    return proposed is not None and any(
        e.event_type == "NotificationSkipped" and e.payload.get("kind") == "session_reminder"
        and e.payload.get("session_no") == number
        and e.recorded_at < _time(proposed.payload["starts_at"]) for e in events)


def reminder_before_s(events: Sequence[RecordedEvent]) -> float:
    """The pair's session_reminder_before, in seconds, as its nomination recorded it."""
    from workflows.policy import parse_duration

    nominated = next((e for e in events if e.event_type == "PairNominated"), None)
    policy = nominated.payload.get("policy", {}) if nominated else {}
    text = policy.get("session_reminder_before")
    return parse_duration(text).total_seconds() if text else float("nan")


def _same_but_notices_later(expected: list[str], actual: list[str]) -> bool:
    """The same facts in the same order, the same notices, only some notices recorded later than
    the lifecycle's order puts them (never earlier: a notice follows the step that decided it)."""
    def facts(timeline: list[str]) -> list[str]:
        return [label for label in timeline if not label.startswith(NOTICE_EVENTS)]

    if facts(expected) != facts(actual) or Counter(expected) != Counter(actual):
        return False
    facts_before = {}  # per notice label, how many facts come before each of its occurrences
    for name, timeline in (("expected", expected), ("actual", actual)):
        seen, positions = 0, Counter[str]()
        for label in timeline:
            if label.startswith(NOTICE_EVENTS):
                facts_before[(name, label, positions[label])] = seen
                positions[label] += 1
            else:
                seen += 1
    return all(facts_before[("actual", label, n)] >= before
               for (name, label, n), before in facts_before.items() if name == "expected")


def _diff(expected: list[str], actual: list[str]) -> str:
    parts = []
    matcher = difflib.SequenceMatcher(a=expected, b=actual, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op in ("delete", "replace"):
            parts.append(f"missing at #{i1 + 1}: {', '.join(expected[i1:i2])}")
        if op in ("insert", "replace"):
            parts.append(f"unexpected at #{j1 + 1}: {', '.join(actual[j1:j2])}")
    return "; ".join(parts)[:600]


@dataclass
class Check:
    name: str
    problems: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


# --- pairs that did not finish -------------------------------------------------------------


async def describe_unfinished(client: Client, runs: Sequence[PairRun]) -> Check:
    """Every pair completed; for each one that did not, where it stands. Those still running
    are terminated afterwards, so nothing of this run keeps going on a shared server."""
    check = Check("every pair completed")
    for run in runs:
        if run.status == "completed":
            continue
        handle = client.get_workflow_handle(run.workflow_id)
        facts = [f"{run.label} {run.workflow_id}: {run.status}"
                 + (f" after {run.seconds:.0f} s" if run.seconds is not None else "")
                 + f", driver at step {run.step or '-'}",
                 f"stage {run.last_stage} v{run.last_version} (last state seen)"]
        if run.detail:
            facts.append(run.detail)
        status = None
        try:
            description = await handle.describe()
            status = description.status.name if description.status else None
            history = await handle.fetch_history()
            kinds = [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events]
            facts.append(f"workflow {status}, history ends with {kinds[-1] if kinds else '-'} "
                         f"({len(kinds)} events)")
            failures = _task_failures(history)
            if failures:
                facts.append(f"{len(failures)} workflow task failure(s), last: {failures[-1]}")
            pending = description.raw_description.pending_activities
            if pending:
                facts.append("pending activities: " + ", ".join(
                    f"{a.activity_type.name} (attempt {a.attempt})" for a in pending))
        except Exception as exc:  # describe what we can; the pair is reported stuck anyway
            facts.append(f"cannot describe it: {describe(exc)}")
        if run.last_error:
            facts.append(f"last client error: {run.last_error}")
        check.problems.append("; ".join(facts))
        if status == "RUNNING":
            with contextlib.suppress(Exception):
                await handle.terminate(reason="chaos run: not completed before its deadline")
    return check


def _task_failures(history: WorkflowHistory) -> list[str]:
    failures = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            attributes = event.workflow_task_failed_event_attributes
            message = (attributes.failure.message or "").strip().splitlines()
            failures.append(f"event {event.event_id}: {message[0][:300] if message else '?'}")
    return failures


# --- Temporal histories: no failed workflow task, and every history replays ------------------


async def check_histories(client: Client, runs: Sequence[PairRun],
                          figures: dict[str, Any]) -> tuple[Check, Check]:
    from temporalio.worker import Replayer

    from workflows.pair import MentoringPair

    failed = Check("no workflow task failed (history, or a query's replay)")
    replays = Check("every history replays")
    # The client's converter: the histories are encrypted, and it holds their keys.
    replayer = Replayer(workflows=[MentoringPair], data_converter=client.data_converter)
    counts: Counter[str] = Counter()
    for run in runs:
        try:
            history = await client.get_workflow_handle(run.workflow_id).fetch_history()
        except Exception as exc:
            replays.problems.append(f"{run.label} {run.workflow_id}: no history ({describe(exc)})")
            continue
        for event in history.events:
            counts[EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")] += 1
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                # Timed-out attempts leave no event of their own: the attempt number tells.
                counts["activity_retries"] += event.activity_task_started_event_attributes.attempt - 1
        task_failures = _task_failures(history)
        if task_failures:
            failed.problems.append(f"{run.label} {run.workflow_id}: {len(task_failures)} failed "
                                   f"workflow task(s), first {task_failures[0]}")
        elif run.nondeterminism:
            # A query runs on a worker too; when its replay fails, the history records nothing.
            failed.problems.append(f"{run.label} {run.workflow_id}: {run.nondeterminism} "
                                   f"call(s) answered with a non-determinism error, first: "
                                   f"{run.nondeterminism_first}")
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            replays.problems.append(f"{run.label} {run.workflow_id}: {describe(result.replay_failure)}")
    figures["history"] = {
        "workflow_task_failed": counts["WORKFLOW_TASK_FAILED"],
        "workflow_task_timed_out": counts["WORKFLOW_TASK_TIMED_OUT"],
        "activity_task_timed_out": counts["ACTIVITY_TASK_TIMED_OUT"],
        "activity_retries": counts["activity_retries"],
        "activity_task_failed": counts["ACTIVITY_TASK_FAILED"],
        "events": sum(counts.values()),
    }
    return failed, replays


# --- the event log: each fact once, in the lifecycle's order -------------------------------


async def check_log(store: PostgresEventStore, runs: Sequence[PairRun],
                    figures: dict[str, Any]) -> Check:
    check = Check("each event in the log once, in the lifecycle's order")
    pool = store.pool
    timelines: dict[int, set[tuple[str, ...]]] = {}
    late_confirmations = unfinished = missing = shown_missing = late_notices = 0
    outcomes: Counter[str] = Counter()  # per session: reminder sent, skipped or none
    for run in runs:
        events = await store.read_stream(run.workflow_id)
        who = f"{run.label} {run.workflow_id}"
        versions = [e.version for e in events]
        if versions != list(range(1, len(events) + 1)):
            check.problems.append(f"{who}: stream versions are not 1..{len(events)}: {versions}")
        head = await store.stream_version(run.workflow_id)
        if head != len(events):
            check.problems.append(f"{who}: the stream head says version {head}, the log holds "
                                  f"{len(events)} events")
        if len({e.event_id for e in events}) != len(events):
            check.problems.append(f"{who}: an event id appears twice in its stream")
        messages = Counter(e.payload.get("message_id") for e in events
                           if e.event_type == "NotificationSent")
        doubled = sorted(str(m) for m, n in messages.items() if n > 1)
        if doubled:
            check.problems.append(f"{who}: NotificationSent recorded twice for {len(doubled)} "
                                  f"message(s), e.g. {doubled[0]}")
        if run.status != "completed":
            unfinished += 1  # its timeline is cut short; the stuck report says where
            continue
        actual = timeline_of(events)
        timelines.setdefault(run.sessions, set()).add(tuple(actual))
        reminders = [reminder_labels(events, n) for n in range(1, run.sessions + 1)]
        for number, labels in enumerate(reminders, 1):
            ahead = confirmed_ahead(events, number)
            owed = reminder_owed(ahead)
            late_confirmations += owed is False
            outcomes[_reminder_outcome(labels)] += 1
            if owed and not labels:
                # The driver's view: a state query that said "handled" contradicts the log.
                seen = (" (yet the state query had shown it as handled)"
                        if run.reminder_seen.get(number) else "")
                missing += 1
                shown_missing += bool(seen)
                check.problems.append(
                    f"{who}: session {number}'s reminder was silently dropped (neither sent nor "
                    f"recorded as skipped) although the session was confirmed {ahead:.1f} s "
                    f"before its start (due {reminder_before_s(events):g} s before it){seen}")
            elif labels and len(labels) != 2:
                check.problems.append(f"{who}: session {number}'s reminder went to "
                                      f"{len(labels)} person(s), not both: {labels}")
            elif _skipped_early(events, number):
                check.problems.append(f"{who}: session {number}'s reminder was recorded as "
                                      "skipped before the session began")
        # The rest of the lifecycle, whichever reminders went out (judged above).
        expected = expected_timeline(
            reminders, [skipped_with_outcome(events, n) for n in range(1, run.sessions + 1)])
        if actual != expected:
            if _same_but_notices_later(expected, actual):
                # A notice its first attempts did not deliver (a worker killed under it) is
                # retried apart from the pair's lock, and recorded after what happened meanwhile.
                late_notices += 1
            else:
                check.problems.append(f"{who}: timeline differs from the lifecycle: "
                                      f"{_diff(expected, actual)}")
    row = await pool.fetchrow("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events")
    if row["n"] != row["ids"]:
        check.problems.append(f"the log holds {row['n']} events but {row['ids']} distinct event ids")
    ours = {r.workflow_id for r in runs}
    others = [r["stream_id"] for r in await pool.fetch("SELECT DISTINCT stream_id FROM events")
              if r["stream_id"] not in ours]
    if others:
        check.problems.append(f"events in streams no pair of this run owns: {sorted(others)[:5]}")
    if unfinished:
        check.note = f"timelines of {unfinished} unfinished pair(s) not compared"
    figures["events"] = row["n"]
    figures["distinct_timelines"] = {f"{k} session(s)": len(v) for k, v in sorted(timelines.items())}
    figures["sessions_confirmed_after_start"] = late_confirmations
    figures["pairs_with_notices_recorded_late"] = late_notices
    figures["reminders"] = {"sent": outcomes["sent"], "skipped_late": outcomes["skipped"],
                            "failed": outcomes["failed"], "none": outcomes["none"],
                            "silently_dropped": missing,
                            "dropped_but_shown_handled": shown_missing}
    return check


# --- notices: one delivery, one receipt, one event, one .eml each ---------------------------


async def check_notices(pool: asyncpg.Pool, outbox: Path, figures: dict[str, Any]) -> Check:
    check = Check("every notice once: receipt, event and .eml")
    from activities.notifications import eml_file_name

    events = await pool.fetch(
        "SELECT stream_id, payload->>'message_id' AS message_id FROM events "
        "WHERE event_type = 'NotificationSent'")
    rows = await pool.fetch("SELECT notification_id, message_id FROM notifications_sent")
    failed = await pool.fetchval("SELECT count(*) FROM events WHERE event_type = 'NotificationFailed'")
    files = {p.name for p in outbox.glob("*.eml")} if outbox.exists() else set()
    leftovers = len(list(outbox.glob(".*.tmp"))) if outbox.exists() else 0
    in_log = Counter(r["message_id"] for r in events)
    receipts = {r["message_id"] for r in rows}
    if len(rows) != len(events):
        check.problems.append(f"{len(rows)} receipts in notifications_sent but {len(events)} "
                              "NotificationSent events")
    if any(n > 1 for n in in_log.values()):
        check.problems.append("a message id appears in more than one NotificationSent event")
    if len(receipts) != len(rows):
        check.problems.append("two receipts share a message id")
    unrecorded = receipts - set(in_log)
    if unrecorded:
        check.problems.append(f"{len(unrecorded)} notice(s) delivered but never recorded in the log")
    unreceipted = set(in_log) - receipts
    if unreceipted:
        streams = sorted({r["stream_id"] for r in events if r["message_id"] in unreceipted})
        check.problems.append(f"{len(unreceipted)} NotificationSent without a receipt, in {streams[:5]}")
    wanted = {eml_file_name(m): m for m in in_log}
    if files != set(wanted) or len(files) != len(events):
        check.problems.append(f"{len(files)} .eml files in the outbox for {len(events)} notices "
                              f"({len(files - set(wanted))} unexpected, "
                              f"{len(set(wanted) - files)} missing)")
        # An e-mail that went out although no NotificationSent says so (a retry that decided
        # otherwise, say): name it by file and subject (the subject names no one).
        for name in sorted(files - set(wanted))[:5]:
            check.problems.append(f"delivered but not recorded as sent: {name} "
                                  f"({_subject(outbox / name)!r})")
        for name in sorted(set(wanted) - files)[:5]:
            streams = sorted({r["stream_id"] for r in events if r["message_id"] == wanted[name]})
            check.problems.append(f"recorded as sent in {streams} but no {name} in the outbox")
    if failed:
        check.problems.append(f"{failed} NotificationFailed event(s): a notice gave up")
    notes = await pool.fetchval("SELECT count(*) FROM private_notes WHERE kind = 'comment'")
    commented = await pool.fetchval(
        "SELECT count(*) FROM events WHERE (payload->>'has_private_comment')::boolean")
    if notes != commented:
        check.problems.append(f"{notes} private notes for {commented} events with a comment")
    # Each curriculum's objectives once, under the id of the event that counts them.
    apart = await pool.fetchval(
        """SELECT count(*) FROM events e JOIN private_notes n ON n.event_id = e.event_id
            WHERE e.event_type = 'CurriculumAgreed' AND n.kind = 'curriculum_objectives'""")
    agreed = await pool.fetchval("SELECT count(*) FROM events WHERE event_type = 'CurriculumAgreed'")
    if apart != agreed:
        check.problems.append(f"{apart} objectives notes for {agreed} agreed curricula")
    figures["notices"] = {"events": len(events), "receipts": len(rows), "eml_files": len(files),
                          "temp_files_left": leftovers, "private_notes": notes}
    return check


def _subject(path: Path) -> str:
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("Subject:"):
                return line.removeprefix("Subject:").strip()[:120]
            if not line:
                break  # end of the headers
    return "?"


async def check_hash_chain(store: PostgresEventStore) -> Check:
    check = Check("hash chain intact (verify)")
    report = await store.verify()
    if not report.ok:
        check.problems.append(str(report.first_bad))
    check.note = f"{report.events_checked} events in {report.streams_checked} streams"
    return check


# --- read models: what the workers' runners built equals a rebuild from the log -------------


async def wait_for_projections(pool: asyncpg.Pool, timeout_s: float = 60) -> tuple[float, list[str]]:
    """Until the workers' runners have applied every event; returns the seconds it took and
    the projections still behind or failed (empty when all caught up)."""
    from projections import all_projections
    from projections.runner import projection_status

    names = [p.name for p in all_projections()]
    began = asyncio.get_running_loop().time()
    while True:
        statuses = await projection_status(pool, names)
        lagging = [f"{s.name} {s.status}, {s.behind} behind" for s in statuses
                   if s.status != "running" or s.behind]
        waited = asyncio.get_running_loop().time() - began
        if not lagging or waited > timeout_s:
            return waited, lagging
        await asyncio.sleep(0.2)


async def _snapshot(pool: asyncpg.Pool) -> dict[str, list[tuple]]:
    """Every row of every read model, in a stable order (as tests/projections/conftest.py)."""
    from projections import all_projections
    from projections.base import quoted

    tables = {}
    for projection in all_projections():
        for table in projection.tables:
            rows = await pool.fetch(f"SELECT * FROM {quoted(projection.name)}.{quoted(table)}")
            tables[f"{projection.name}.{table}"] = sorted((tuple(r.values()) for r in rows), key=repr)
    return tables


async def check_read_models(store: PostgresEventStore, dsn: str, lag: tuple[float, list[str]],
                            figures: dict[str, Any]) -> Check:
    """Call once the workers are stopped: catch up what is left, then rebuild and compare."""
    from projections import all_projections
    from projections.rebuild import rebuild
    from projections.runner import ProjectionRunner

    check = Check("read models equal a rebuild from the log")
    waited, lagging = lag
    if lagging:
        check.problems.append(f"the workers' projection runners had not caught up after "
                              f"{waited:.0f} s: {', '.join(lagging)}")
    runner = ProjectionRunner(store, all_projections(), dsn=dsn, poll_interval=0.1,
                              lock_retry_interval=0.05, reconnect_delay=0.05)
    for status in await runner.run_until_caught_up():
        if status.status != "running" or status.behind or status.parked:
            failure = f": {status.failure.error}" if status.failure else ""
            parked = f", {status.parked} stream(s) parked" if status.parked else ""
            check.problems.append(f"projection {status.name} is {status.status}, "
                                  f"{status.behind} behind{parked}{failure}")
    live = await _snapshot(store.pool)
    report = await rebuild(store, all_projections(), dsn=dsn)
    rebuilt = await _snapshot(store.pool)
    for table, rows in live.items():
        if rebuilt.get(table) != rows:
            only_live = Counter(rows) - Counter(rebuilt.get(table, []))
            only_rebuilt = Counter(rebuilt.get(table, [])) - Counter(rows)
            example = repr(next(iter(only_live or only_rebuilt), ""))[:200]
            check.problems.append(f"{table}: {sum(only_live.values())} row(s) only in the live "
                                  f"model, {sum(only_rebuilt.values())} only in the rebuild; "
                                  f"e.g. {example}")
    figures["read_models"] = {"projection_catch_up_s": round(waited, 2),
                              "rows": sum(len(r) for r in live.values()),
                              "rebuild_events": report.events}
    return check
