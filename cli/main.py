"""The `mentoring` command: audit queries and read-model operations, as tables or as JSON.

    mentoring audit pair ID                       a pair's overview, sessions, consent and trail
    mentoring audit actor ID --since --until      everything one person did
    mentoring audit consent --programme P         the consent register of a programme
    mentoring audit funnel --programme P          stages, rates and median time per stage
    mentoring audit programme ID                  a programme's close report (or its figures now)
    mentoring audit rollup --since DAY            the programmes closed since a day, added up
    mentoring audit verify                        the hash chain; exit code 1 if tampered
    mentoring audit as-of TIME pair ID            a pair as it stood then, from the raw log
    mentoring projections status|rebuild|resume   operate the read models
    mentoring workflow replay FILE                does a history replay? if not, where to reset
    mentoring certificate PAIR_ID [--out FILE]    the mentor's completion certificate (PDF)
    mentoring report PROGRAMME_ID [--out FILE]    the programme's report with its charts (PDF)

The answers are those of the HTTP API (both call `projections.queries`). The database comes from
the settings (DATABASE_URL) unless `--database-url` is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import asyncpg
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from events.lifecycle import deadline_label
from events.store import PostgresEventStore
from projections import all_projections, queries
from projections.programme_figures import CONSENT, FUNNEL
from projections.rebuild import RebuildError, rebuild, rich_progress
from projections.runner import NothingToResume, ProjectionStatus, UnknownProjection, resume
from projections.runner import projection_status as read_status

app = typer.Typer(name="mentoring", no_args_is_help=True, add_completion=False,
                  help="Audit the reverse-mentoring programmes and operate their read models.")
audit_app = typer.Typer(no_args_is_help=True, help="Audit queries: who did what, when, with whose "
                        "consent, and proof that nothing was altered.")
projections_app = typer.Typer(no_args_is_help=True, help="Operate the read models built from the "
                              "event log: status, rebuild, resume.")
app.add_typer(audit_app, name="audit")
app.add_typer(projections_app, name="projections")
people_app = typer.Typer(no_args_is_help=True, help="Personal data kept outside the log.")
app.add_typer(people_app, name="people")
workflow_app = typer.Typer(no_args_is_help=True, help="Operate the Temporal workflows.")
app.add_typer(workflow_app, name="workflow")
export_app = typer.Typer(no_args_is_help=True, help="Evidence for outsiders: bundles they check offline.")
audit_app.add_typer(export_app, name="export")
prove_app = typer.Typer(no_args_is_help=True, help="Read models proved against the log.")
audit_app.add_typer(prove_app, name="prove")
programme_app = typer.Typer(no_args_is_help=True, help="Programmes: the cohorts HR runs.")
app.add_typer(programme_app, name="programme")

DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", show_default=False, help="postgresql://user:pass@host:5432/db "
    "(default: DATABASE_URL from the settings)")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON (for machines) instead of tables.")]
T = TypeVar("T")


class Subject(StrEnum):
    pair = "pair"


# --- plumbing: database, errors, output ----------------------------------------------------------

def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"mentoring: {message}", err=True)
    return typer.Exit(code)


def _database_url(option: str | None) -> str:
    if option:
        return option
    from settings import SettingsError, get_settings

    try:
        url = get_settings().database_url
    except SettingsError as exc:
        raise _fail(str(exc), 2) from None
    if not url:
        from runtime import configured_database_url

        url = configured_database_url(get_settings())
    return url


def _run(database_url: str | None, work: Callable[[asyncpg.Pool, str], Awaitable[T]]) -> T:
    """Open a pool on the configured database, run `work(pool, url)`, close the pool."""
    url = _database_url(database_url)

    async def main() -> T:
        from runtime import StartupError, open_database

        try:
            pool = await open_database(url, max_size=4, apply_migrations=False)
        except StartupError as exc:
            hint = "" if database_url or os.environ.get("DATABASE_URL") else (
                " (is the stack up? `make run` starts it)")
            raise _fail(f"{exc}{hint}", 2) from None
        try:
            return await work(pool, url)
        finally:
            await pool.close()

    try:
        return asyncio.run(main())
    except asyncpg.UndefinedTableError:
        raise _fail("this database has no read models yet: start the stack once (`make run` or "
                    "`python worker.py`) so that its migrations are applied", 2) from None


def _parse_time(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _fail(f"{option}: {text!r} is not a date or time; write for example 2025-03-01 or "
                    "2025-03-01T09:00:00Z", 2) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _json(model: BaseModel | Sequence[BaseModel]) -> None:
    if isinstance(model, BaseModel):
        typer.echo(model.model_dump_json(indent=2))
    else:
        typer.echo("[" + ",\n".join(m.model_dump_json(indent=2) for m in model) + "]")


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else ""


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        table.add_column(column)
    return table


def _facts(console: Console, title: str, rows: list[tuple[str, str]]) -> None:
    """A heading, then label: value lines (a table without a header)."""
    console.print(f"[bold]{title}[/]")
    table = Table(show_header=False)
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


def _console() -> Console:
    return Console(width=140)


# --- audit ---------------------------------------------------------------------------------------

@audit_app.command("pair")
def audit_pair(pair_id: Annotated[str, typer.Argument(help="The pair's id.")],
               json: Json = False, database_url: DatabaseUrl = None) -> None:
    """A pair's overview, sessions, consent entries and full audit trail."""
    report = _run(database_url, lambda pool, _url: queries.pair_report(pool, pair_id))
    if report is None:
        raise _fail(f"no pair with id {pair_id!r}")
    if json:
        return _json(report)
    o, console = report.overview, _console()
    _facts(console, f"Pair {o.pair_id}", [
        ("programme", o.programme_id), ("stage", f"{o.stage} since {_when(o.stage_since)}"),
        ("mentor", f"{o.mentor.display_name or '(no name)'} ({o.mentor.employee_id})"),
        ("mentee", f"{o.mentee.display_name or '(no name)'} ({o.mentee.employee_id})"),
        ("nominated", f"{_when(o.nominated_at)} by {o.nominated_by}"),
        ("sessions held", f"{o.sessions_held} of {o.sessions_planned}"),
        ("average rating", f"{o.average_rating} ({o.ratings} ratings)" if o.ratings else "none yet"),
        ("at risk", "yes" if o.at_risk else "no"), ("paused", "yes" if o.paused else "no"),
        ("next deadline", f"{_when(o.next_deadline)} ({deadline_label(o.next_deadline_kind)})"
         if o.next_deadline else "none known"),
        ("last activity", _when(o.last_activity_at)), ("ended", _when(o.ended_at) or "no"),
    ])
    sessions = _table("Sessions", "no", "starts (UTC)", "format", "status", "topics covered")
    for s in report.sessions:
        sessions.add_row(str(s.session_no), _when(s.starts_at), s.format, s.status,
                         ", ".join(s.topics_covered or []))
    console.print(sessions)
    _print_consent(console, "Consent", report.consent)
    if report.objectives:
        console.print("Curriculum objectives: " + "; ".join(report.objectives))
    if report.shared_comments:
        comments = _table("Comments their authors chose to share", "written (UTC)", "by", "comment")
        for c in report.shared_comments:
            comments.add_row(_when(c.written_at), c.author_id, c.body)
        console.print(comments)
    _print_trail(console, "Audit trail", report.trail)


@audit_app.command("actor")
def audit_actor(
    actor_id: Annotated[str, typer.Argument(help="An employee id, or 'system' for timers.")],
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601, UTC if no zone).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time (ISO 8601).")] = None,
    json: Json = False, database_url: DatabaseUrl = None,
) -> None:
    """Everything one person did, by business time."""
    start = _parse_time(since, "--since") if since else None
    end = _parse_time(until, "--until") if until else None
    if start and end and start >= end:
        raise _fail("--since must be earlier than --until", 2)
    report = _run(database_url, lambda pool, _url: queries.actor_report(pool, actor_id, start, end))
    if json:
        return _json(report)
    name = report.actor.display_name or "(no name)"
    _print_trail(_console(), f"Actions of {name} ({actor_id}): {len(report.entries)}",
                 report.entries, with_subject=True)


@audit_app.command("consent")
def audit_consent(
    programme: Annotated[str, typer.Option("--programme", help="The programme's id.")],
    json: Json = False, database_url: DatabaseUrl = None,
) -> None:
    """The consent register of a programme: every invitation and every answer."""
    report = _run(database_url, lambda pool, _url: queries.consent_report(pool, programme))
    if json:
        return _json(report)
    s, console = report.summary, _console()
    console.print(f"[bold]Consent register of {programme}[/]: {s.invited} invited, {s.consented} "
                  f"consented, {s.declined} declined, {s.expired} expired, {s.withdrawn} withdrawn")
    forced = s.pairs_with_sessions_before_consent
    console.print("sessions before consent: " + (", ".join(forced) if forced else "none"))
    _print_consent(console, "Entries", report.entries, with_pair=True)


@audit_app.command("funnel")
def audit_funnel(
    programme: Annotated[str, typer.Option("--programme", help="The programme's id.")],
    json: Json = False, database_url: DatabaseUrl = None,
) -> None:
    """A programme's funnel: pairs per stage, outcome rates, median days in each stage."""
    report = _run(database_url, lambda pool, _url: queries.funnel_report(pool, programme))
    if json:
        return _json(report)
    console = _console()
    rows = [("invited", str(report.invited)), ("consented", str(report.consented))]
    rows += [(outcome.replace("_", " "), str(count)) for outcome, count in report.outcomes.items()]
    for label in ("consent_rate", "decline_rate", "expiry_rate", "withdrawal_rate",
                  "completion_rate", "abandonment_rate"):
        value = getattr(report, label)
        rows.append((label.replace("_", " "), f"{value:.0%}" if value is not None else "n/a"))
    _facts(console, f"Funnel of {programme}: {report.pairs} pairs, {report.active} active", rows)
    stages = _table("Stages", "stage", "now", "reached", "finished stays", "median days")
    for st in report.stages:
        stages.add_row(st.stage, str(st.pairs_now), str(st.pairs_reached), str(st.finished_stays),
                       "" if st.median_days is None else f"{st.median_days:g}")
    console.print(stages)


@audit_app.command("verify")
def audit_verify(
    against: Annotated[Path | None, typer.Option(
        "--against", help="A signed checkpoint (JSON, from `mentoring audit checkpoint`): also prove the "
        "log still extends it, recomputing every event's leaf (nothing before it changed or vanished).")] = None,
    public_key: Annotated[Path | None, typer.Option(
        "--public-key", help="The log's public key (PEM) you trust; without it, the checkpoint's own key "
        "is used and its fingerprint printed for you to compare.")] = None,
    json: Json = False, database_url: DatabaseUrl = None,
) -> None:
    """Recompute the log's hash chains; name the first bad event. With --against, prove the log
    extends a checkpoint kept outside the database. Exit code 1 if tampered."""
    from events.ledger import Checkpoint, ExtensionReport, verify_against

    checkpoint = trusted = None
    if against is not None:
        try:
            checkpoint = Checkpoint.from_json(jsonlib.loads(against.read_text(encoding="utf-8")))
            if public_key is not None:
                from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
                from cryptography.hazmat.primitives.serialization import load_pem_public_key

                loaded = load_pem_public_key(public_key.read_bytes())
                if not isinstance(loaded, Ed25519PublicKey):
                    raise ValueError(f"{public_key} is not an Ed25519 public key")
                trusted = loaded
        except (OSError, ValueError) as exc:
            raise _fail(f"cannot read the checkpoint or key: {exc}", 2) from None

    async def work(pool: asyncpg.Pool, _url: str) -> tuple[queries.VerifyResult, ExtensionReport | None]:
        chains = await queries.verify_log(PostgresEventStore(pool))
        extension = None if checkpoint is None else await verify_against(pool, checkpoint, trusted)
        return chains, extension

    result, extension = _run(database_url, work)
    if json:
        if extension is None:
            _json(result)
        else:
            typer.echo(jsonlib.dumps({**result.model_dump(mode="json"), "against_checkpoint": extension.__dict__}, indent=2))
    else:
        if result.first_bad is not None:  # not ok: the log was tampered with
            typer.echo(f"TAMPERED: first bad event at {result.first_bad.description}")
        else:
            typer.echo(f"ok: {result.events_checked} events in {result.streams_checked} streams, "
                       "hash chain intact")
        if extension is not None and checkpoint is not None:
            if extension.ok:
                from verifier.mentoring_verify import key_fingerprint

                typer.echo(f"ok: the log ({extension.log_size} events) extends the checkpoint of "
                           f"{checkpoint.size} events signed at {checkpoint.signed_at} by key "
                           f"{key_fingerprint(bytes.fromhex(checkpoint.public_key))}")
            else:
                typer.echo(f"TAMPERED: {extension.problem}")
    if not result.ok or (extension is not None and not extension.ok):
        raise typer.Exit(1)


def _signing_key():
    from events.ledger import SigningKeyError, load_signing_key
    from settings import SettingsError, get_settings

    try:
        settings = get_settings()
        return load_signing_key(settings.mentoring_signing_key_file or settings.state_dir / "signing-key.pem")
    except (SettingsError, SigningKeyError) as exc:
        raise _fail(f"{exc} (under `make run` the stack generates one in its state folder)", 2) from None


@audit_app.command("checkpoint")
def audit_checkpoint(
    out: Annotated[Path | None, typer.Option("--out", help="Also write it to this file, for a witness to keep.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Bind every committed event into the log's Merkle tree, then sign its size and root (Ed25519):
    print the checkpoint as JSON. Keep it outside the database: `audit verify --against` proves
    later that the log still extends it."""
    from events.ledger import take_checkpoint

    key = _signing_key()
    checkpoint = _run(database_url, lambda pool, _url: take_checkpoint(pool, key))
    text = jsonlib.dumps(checkpoint.as_json(), indent=2)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
    typer.echo(text)


@audit_app.command("public-key")
def audit_public_key() -> None:
    """The public key (PEM) that verifies the log's checkpoints: give it to whoever checks them."""
    from events.ledger import public_key_pem

    typer.echo(public_key_pem(_signing_key()), nl=False)


@prove_app.command("pair")
def prove_pair_command(
    pair_id: Annotated[str, typer.Argument(help="The pair's id, or its workflow id (pair-...).")],
    json: Json = False, database_url: DatabaseUrl = None,
) -> None:
    """Fold the pair again from its events in the log and compare, column by column, with its row
    in the pair_overview read model (what reports and dashboards read). Exit code 1 if any differs."""
    from projections.proofs import COLUMNS, prove_pair

    pair = pair_id.removeprefix("pair-")
    proof = _run(database_url, lambda pool, _url: prove_pair(PostgresEventStore(pool), pool, pair))
    if proof is None:
        raise _fail(f"the log holds no pair {pair}")
    if json:
        typer.echo(jsonlib.dumps({"pair_id": proof.pair_id, "ok": proof.ok, "events": proof.events,
                                  "log_position": proof.log_position, "read_model_position": proof.read_model_position,
                                  "behind": proof.behind, "range_events": proof.range_events,
                                  "range_digest": proof.range_digest, "differences": [
                                      {"column": c, "read_model": r, "refolded": f} for c, r, f in proof.differences]},
                                 indent=2))
    elif proof.read_model_position is None:
        typer.echo(f"NOT PROVED: the read model has no row for pair {pair} ({proof.events} events in the log)")
    elif proof.behind:
        typer.echo(f"NOT YET: the read model is at position {proof.read_model_position}, the pair's log at "
                   f"{proof.log_position}; try again once the projections caught up")
    elif proof.ok:
        typer.echo(f"ok: pair {pair}: the read model's row equals the fold of its {proof.events} events "
                   f"(up to position {proof.log_position}) in all {len(COLUMNS)} columns")
    else:
        table = _table(f"pair {pair}: the read model differs from its log", "column", "read model", "log says")
        for column, stored, refolded in proof.differences:
            table.add_row(column, stored, refolded)
        _console().print(table)
    if not json and proof.range_digest is not None:
        typer.echo(f"the read model's checkpoint: {proof.range_events} events of the log applied, range digest "
                   f"{proof.range_digest[:16]}... (`mentoring audit prove projections` recomputes it from the log)")
    if not proof.ok:
        raise typer.Exit(1)


@prove_app.command("projections")
def prove_projections_command(json: Json = False, database_url: DatabaseUrl = None) -> None:
    """Recompute, from the log, the range each read model's checkpoint says it applied (how many
    events, in commit order, and their digest), in one pass. Exit code 1 if any differs, 2 if one
    has no recorded range (a checkpoint from before ranges were kept: a rebuild records one)."""
    from projections.range_digest import RangeCheck, check_ranges

    def work(pool: asyncpg.Pool, _url: str) -> Awaitable[list[RangeCheck]]:
        if json:
            return check_ranges(pool)

        async def with_bar() -> list[RangeCheck]:
            with rich_progress("reading the log") as progress:
                return await check_ranges(pool, lambda n: progress(n, n))
        return with_bar()

    checks = _run(database_url, work)
    if json:
        typer.echo(jsonlib.dumps([c.model_dump() for c in checks], indent=2))
    else:
        table = _table("each read model's applied range, recomputed from the log", "read model", "status",
                       "events (checkpoint / log)", "up to position", "digest (checkpoint)")
        for check in checks:
            table.add_row(check.name, check.status, f"{check.recorded_events} / {check.log_events}",
                          str(check.position), (check.recorded_digest or "none")[:16])
        _console().print(table)
        if any(c.status == "not recorded" for c in checks):
            typer.echo("not recorded: the checkpoint moved before ranges were digested; "
                       "`mentoring projections rebuild` records one")
    if any(c.status == "differs" for c in checks):
        raise typer.Exit(1)
    if any(c.status == "not recorded" for c in checks):
        raise typer.Exit(2)


@export_app.command("pair")
def export_pair(
    pair_id: Annotated[str, typer.Argument(help="The pair's id, or its workflow id (pair-...).")],
    out: Annotated[Path, typer.Option("--out", help="The folder to write the bundle into.")],
    allow_free_text: Annotated[bool, typer.Option(
        "--allow-free-text", help="Export even events recorded before their free text (curriculum "
        "objectives) left the log: the bundle then carries that text.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """A bundle an outsider checks without any database: the pair's events, each with its proof of
    inclusion in the whole log, a fresh signed checkpoint, the public key, and the stand-alone
    verifier (`python mentoring_verify.py bundle.json --public-key public-key.pem`)."""
    import shutil

    from events.ledger import FreeTextInBundle, export_stream, public_key_pem

    key = _signing_key()
    stream_id = pair_id if pair_id.startswith("pair-") else f"pair-{pair_id}"
    try:
        bundle = _run(database_url, lambda pool, _url: export_stream(pool, stream_id, key,
                                                                      allow_free_text=allow_free_text))
    except (LookupError, FreeTextInBundle) as exc:
        raise _fail(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "bundle.json").write_text(jsonlib.dumps(bundle, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "public-key.pem").write_text(public_key_pem(key), encoding="utf-8")
    shutil.copyfile(Path(__file__).resolve().parents[1] / "verifier" / "mentoring_verify.py", out / "mentoring_verify.py")
    typer.echo(f"{out}: {len(bundle['events'])} event(s) of {stream_id} under the checkpoint of "
               f"{bundle['checkpoint']['size']} events; check with: python {out / 'mentoring_verify.py'} "
               f"{out / 'bundle.json'} --public-key {out / 'public-key.pem'}")


@audit_app.command("drift")
def audit_drift(
    record: Annotated[bool, typer.Option("--record", help="Record the ends Temporal saw and the log "
                                         "missed (what the worker's reconciler does every minute).")] = False,
    json: Json = False, database_url: DatabaseUrl = None,
) -> None:
    """Pairs on which the log and Temporal disagree: open in the log while their workflow ended
    (terminated, timed out, failed), or closed in the log while it still runs. Exit code 1 if any."""
    from activities.reconcile import drift
    from runtime import StartupError, connect_temporal, data_keys
    from settings import get_settings

    async def work(pool: asyncpg.Pool, _url: str) -> list:
        try:
            client = await connect_temporal(get_settings(), data_keys(get_settings(), pool))
        except StartupError as exc:
            raise _fail(str(exc), 2) from None
        return await drift(client, PostgresEventStore(pool), record=record)

    found = _run(database_url, work)
    if json:
        _json(found)
    elif not found:
        typer.echo("ok: the log and Temporal agree on every pair")
    else:
        table = _table("log and Temporal disagree", "pair stream", "the log says", "Temporal says", "recorded now")
        for d in found:
            table.add_row(d.stream_id, d.log_says, d.temporal_says, "yes" if d.recorded else "")
        Console().print(table)
    if found and not all(d.recorded for d in found):
        raise typer.Exit(1)


@audit_app.command("programme")
def audit_programme(programme_id: Annotated[str, typer.Argument(help="The programme's id.")],
                    json: Json = False, database_url: DatabaseUrl = None) -> None:
    """A programme's close report (or, while it runs, its figures now, from the log)."""
    report = _run(database_url, lambda pool, _url: queries.programme_report(
        PostgresEventStore(pool), pool, programme_id))
    if report is None:
        raise _fail(f"no programme with id {programme_id!r}")
    if json:
        return _json(report)
    f = report.figures
    title = (f"Programme {programme_id}: closed {_when(report.closed_at)} UTC" if report.closed
             else f"Programme {programme_id}: open, figures as of {_when(f.as_of)} UTC (no close report yet)")
    console = _console()
    rows = [("mentors", f"{f.mentors_nominated} nominated, {f.mentors_confirmed} confirmed"),
            ("seniors enrolled", f"{f.seniors_enrolled} ({_pairs_text(f.enrolled_by_channel)})"),
            ("withdrew from the programme", str(f.withdrawn_from_programme)),
            ("pairs started", str(f.pairs_started)),
            ("consent", _pairs_text(f.consent)),
            ("sessions held", f"{f.sessions_held} individual ({f.no_shows} missed), "
                              f"{f.group_sessions_held} collective ({f.group_attendances} attendances)"),
            ("ratings", f"sessions {_num(f.ratings.get('sessions_average'))} "
                        f"({f.ratings.get('sessions_count', 0)}), collective "
                        f"{_num(f.ratings.get('group_sessions_average'))} ({f.ratings.get('group_sessions_count', 0)})"),
            ("still using (seniors)", "; ".join(f"{which} follow-up: {a['yes']} yes, {a['no']} no"
                                                for which, a in f.still_using.items()) or "n/a"),
            ("abandonment", "n/a" if f.abandonment_rate is None else f"{f.abandonment_rate:.0%}"),
            ("mentors recognised", ", ".join(f.mentors_recognised) or "none yet")]
    _facts(console, title, rows)
    funnel = _table("Funnel", "step", "pairs")
    for step in FUNNEL:
        funnel.add_row(step.replace("_", " "), str(f.reached.get(step, 0)))
    console.print(funnel)
    stages = _table("Now", "stage", "pairs")
    for stage, count in sorted(f.pairs_per_stage.items()):
        stages.add_row(stage.replace("_", " "), str(count))
    console.print(stages)
    for todo in f.hr_next:
        console.print(f"HR next: {todo}")


@app.command("certificate")
def certificate(pair_id: Annotated[str, typer.Argument(help="The pair whose mentor finished it.")],
                out: Annotated[Path | None, typer.Option(
                    "--out", help="Where to write the PDF (default: certificate-PAIR_ID.pdf here).")] = None,
                database_url: DatabaseUrl = None) -> None:
    """The completion certificate of a pair's mentor, as a PDF: name, programme, sessions given,
    topics taught, signed by the programme's HR owner. It names people: keep it with HR."""
    from dashboard import documents

    async def work(pool: asyncpg.Pool, _url: str) -> bytes:
        return documents.certificate_pdf(await documents.certificate_facts(pool, pair_id))

    try:
        pdf = _run(database_url, work)
    except documents.CertificateRefused as exc:
        raise _fail(str(exc)) from None
    _write_document(out or Path(f"certificate-{_file_safe(pair_id)}.pdf"), pdf)


@app.command("report")
def programme_report_pdf(
        programme_id: Annotated[str, typer.Argument(help="The programme's id.")],
        out: Annotated[Path | None, typer.Option(
            "--out", help="Where to write the PDF (default: programme-ID-report.pdf here).")] = None,
        database_url: DatabaseUrl = None) -> None:
    """A programme's report as a PDF: its figures, and the dashboard's charts with their numbers
    (the close report once the programme has closed). Ids and counts only."""
    from dashboard import documents

    async def work(pool: asyncpg.Pool, _url: str) -> bytes:
        facts = await documents.report_facts(pool, programme_id)
        return documents.report_pdf(facts.figures, closed_at=facts.closed_at)

    try:
        pdf = _run(database_url, work)
    except documents.NoSuchProgramme as exc:
        raise _fail(str(exc)) from None
    _write_document(out or Path(f"programme-{_file_safe(programme_id)}-report.pdf"), pdf)


def _file_safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def _write_document(path: Path, content: bytes) -> None:
    try:
        path.write_bytes(content)
    except OSError as exc:
        raise _fail(f"cannot write {path}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {path} ({len(content):,} bytes)")


@audit_app.command("access")
def audit_access(
    since: Annotated[str, typer.Option("--since", help="From this moment (ISO 8601, e.g. 2026-11-01).")],
    token: Annotated[str | None, typer.Option("--token", help="One token's name (role-fingerprint).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000, help="At most this many, oldest first.")] = 1000,
    json: Json = False, database_url: DatabaseUrl = None,
) -> None:
    """Who read what through the audit API and the codec server: token (role and fingerprint),
    route, parameters, status, answer size, time."""
    moment = _parse_time(since, "--since")
    entries = _run(database_url, lambda pool, _url: queries.access_log(pool, moment, limit=limit, token=token))
    if json:
        _json(entries)
        return
    table = _table(f"API access since {moment:%Y-%m-%d %H:%M} UTC", "at", "token", "request", "parameters",
                   "status", "bytes")
    for e in entries:
        params = {**e.path_params, **e.query_params}
        table.add_row(_when(e.at), e.token_name or "(none)", f"{e.method} {e.route}",
                      ", ".join(f"{k}={v}" for k, v in params.items()), str(e.status), f"{e.answer_bytes:,}")
    _console().print(table)


@audit_app.command("rollup")
def audit_rollup(since: Annotated[str, typer.Option("--since", help="Programmes closed from this day "
                                                    "(ISO 8601).")],
                 json: Json = False, database_url: DatabaseUrl = None) -> None:
    """The programmes closed since a day, added up: funnel, consent, sessions, ratings, follow-ups."""
    moment = _parse_time(since, "--since")
    rollup = _run(database_url, lambda pool, _url: queries.programme_rollup(pool, moment))
    if json:
        return _json(rollup)
    console = _console()
    _facts(console, f"{len(rollup.programmes)} programme(s) closed since {_when(moment)} UTC", [
        ("programmes", ", ".join(rollup.programmes) or "none"),
        ("pairs started", str(rollup.pairs_started)),
        ("funnel", _pairs_text(rollup.reached)), ("consent", _pairs_text(rollup.consent)),
        ("outcomes", _pairs_text(rollup.outcomes)),
        ("sessions", f"{rollup.sessions_held} individual, {rollup.group_sessions_held} collective "
                     f"({rollup.group_attendances} attendances)"),
        ("average session rating", _num(rollup.average_session_rating)),
        ("still using (seniors)", "; ".join(f"{which}: {a.get('yes', 0)} yes, {a.get('no', 0)} no"
                                            for which, a in rollup.still_using.items()) or "n/a"),
        ("completion", "n/a" if rollup.completion_rate is None else f"{rollup.completion_rate:.0%}"),
        ("abandonment", "n/a" if rollup.abandonment_rate is None else f"{rollup.abandonment_rate:.0%}"),
        ("mentors recognised", str(rollup.mentors_recognised))])


def _pairs_text(counts: dict[str, int]) -> str:
    order = {key: n for n, key in enumerate((*FUNNEL, *CONSENT))}
    ordered = sorted(counts.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in ordered) or "none"


def _num(value: object) -> str:
    return "n/a" if value is None else f"{value}"


@audit_app.command("as-of")
def audit_as_of(
    time: Annotated[str, typer.Argument(help="The moment (ISO 8601, UTC if no zone).")],
    subject: Annotated[Subject, typer.Argument(help="What to show: pair.")],
    pair_id: Annotated[str, typer.Argument(help="The pair's id.")],
    json: Json = False, database_url: DatabaseUrl = None,
) -> None:
    """A pair as it stood at TIME, folded from the raw log (not from the read models)."""
    moment = _parse_time(time, "TIME")
    state = _run(database_url,
                 lambda pool, _url: queries.pair_as_of(PostgresEventStore(pool), pair_id, moment))
    if state is None:
        raise _fail(f"no pair with id {pair_id!r}")
    if json:
        return _json(state)
    console = _console()
    if not state.existed:
        console.print(f"pair {pair_id} was not nominated yet at {_when(moment)} UTC")
        return
    _facts(console, f"Pair {pair_id} as of {_when(moment)} UTC ({state.events_applied} events)", [
        ("programme", state.programme_id or ""), ("stage", state.stage or ""),
        ("mentor", state.mentor_id or ""), ("mentee", state.mentee_id or ""),
        ("consent given", "yes" if state.consent_given else "no"),
        ("sessions held", f"{state.sessions_held} of {state.sessions_planned}"),
        ("average rating", str(state.average_rating or "none yet")),
        ("at risk", "yes" if state.at_risk else "no"), ("paused", "yes" if state.paused else "no"),
        ("next deadline", f"{_when(state.next_deadline)} ({deadline_label(state.next_deadline_kind)})"
         if state.next_deadline else "none known"),
        ("outcome", state.outcome or "still running"),
    ])


def _print_trail(console: Console, title: str, entries: list[queries.TrailEntry], *,
                 with_subject: bool = False) -> None:
    columns = ["pos", "at (UTC)", "actor", "action"] + (["subject"] if with_subject else []) + ["what"]
    table = _table(title, *columns)
    for e in entries:
        table.add_row(str(e.position), _when(e.at), e.actor, e.action,
                      *([e.subject] if with_subject else []), e.summary)
    console.print(table)


def _print_consent(console: Console, title: str, entries: list[queries.ConsentEntry], *,
                   with_pair: bool = False) -> None:
    columns = (["pair"] if with_pair else []) + ["at (UTC)", "person", "role", "answer", "channel",
                                                  "entered by"]
    table = _table(title, *columns)
    for e in entries:
        table.add_row(*([e.pair_id] if with_pair else []), _when(e.at), e.person_id, e.role,
                      e.answer, e.channel or "", e.recorded_by or "")
    console.print(table)


# --- people --------------------------------------------------------------------------------------

class ErasureReasonChoice(StrEnum):
    person_request = "person_request"
    left_company = "left_company"
    retention_expired = "retention_expired"
    other = "other"


@people_app.command("erase")
def people_erase(
    employee_id: Annotated[str, typer.Argument(help="The person's employee id.")],
    by: Annotated[str, typer.Option("--by", help="Your employee id: recorded as the actor.")],
    reason: Annotated[ErasureReasonChoice, typer.Option(help="Why.")] = ErasureReasonChoice.person_request,
    outbox: Annotated[Path | None, typer.Option(
        "--outbox", help="The outbox folder of .eml files (default: the worker's, when it writes one)")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Erase a person's name, e-mail and private comments, on request, and their e-mails in the
    outbox (messages to them deleted, their name in messages to others replaced). First, they
    leave every pair still running (their own act, without penalty), through Temporal.

    The log keeps only their pseudonymous id, so the audit trail and its hash chain stay intact;
    the erasure itself is recorded (PersonalDataErased, stream person-ID). An erased person is
    not registered again by later nominations. In Temporal, the keys of every pair and programme
    whose payloads hold their data are destroyed once that workflow has closed (now, or by the
    worker when it closes): those histories become unreadable.
    """
    from activities.notifications import forget_in_outbox
    from activities.people import Erased, UnknownPerson, erase_person, withdraw_from_running_pairs
    from codec.shredding import Shredded, request_shredding, shred_closed
    from runtime import StartupError, connect_temporal, data_keys
    from settings import SettingsError, get_settings

    async def work(pool: asyncpg.Pool, _url: str) -> tuple[list[tuple[str, str]], Erased | None, list[str], list[Shredded]]:
        try:
            keys = data_keys(get_settings(), pool)
            client = await connect_temporal(get_settings(), keys)
        except (StartupError, SettingsError) as exc:
            raise _fail(f"{exc}: the pairs they are in could not be withdrawn, so nothing was erased", 2) from None
        withdrawn = await withdraw_from_running_pairs(pool, client, employee_id, reason.value)
        try:
            erased: Erased | None = await erase_person(PostgresEventStore(pool), employee_id, by=by, reason=reason.value)
            marked = erased.workflows if erased else []
        except UnknownPerson:
            # Erased before (or never known): their workflows' keys are still asked for, so an
            # erasure cut short by a crash is finished by running it again.
            erased, marked = None, await request_shredding(pool, employee_id, by=by)
        for workflow_id, outcome in withdrawn:  # a withdrawn pair closes within moments
            if outcome == "withdrawn":
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), 15)
        return withdrawn, erased, marked, await shred_closed(client, keys)

    withdrawn, erased, marked, shredded = _run(database_url, work)
    if erased is None:
        done = {s.workflow_id for s in shredded}
        typer.echo(f"Temporal: the keys of {len(done & set(marked))} closed workflow(s) naming them destroyed")
        raise _fail(f"no personal data is kept for {employee_id}: unknown id, or already erased")
    for workflow_id, outcome in withdrawn:
        typer.echo(f"{workflow_id}: {outcome}")
    typer.echo(f"erased the personal data of {employee_id} ({erased.notes} private comment(s)); "
               "the erasure is recorded in the log")
    done = {s.workflow_id for s in shredded}
    waiting = [w for w in marked if w not in done]
    typer.echo(f"Temporal: the keys of {len(done & set(marked))} closed workflow(s) holding their data "
               f"destroyed ({sum(s.keys for s in shredded if s.workflow_id in marked)} key(s))"
               + (f"; {len(waiting)} still running, whose keys the worker destroys when they close: "
                  + ", ".join(waiting) if waiting else ""))
    if outbox is None:
        try:
            settings = get_settings()
        except SettingsError:
            settings = None
        if settings is not None and not settings.smtp_host:
            outbox = settings.outbox  # the worker writes e-mails there
    if outbox is not None:
        cleared = forget_in_outbox(outbox, erased.email, erased.display_name)
        typer.echo(f"outbox {outbox}: {cleared.deleted} message(s) to them deleted, {cleared.rewritten} "
                   "naming them rewritten")


@people_app.command("update")
def people_update(
    employee_id: Annotated[str, typer.Argument(help="The person's employee id.")],
    by: Annotated[str, typer.Option("--by", help="Your employee id: recorded as the actor.")],
    name: Annotated[str | None, typer.Option("--name", help="New display name.")] = None,
    email: Annotated[str | None, typer.Option("--email", help="New e-mail address.")] = None,
    time_zone: Annotated[str | None, typer.Option("--time-zone", help="New IANA time zone.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Change a person's contact details: the only way they change once registered.

    A nomination registers people it does not know and never overwrites anyone's details. The
    change is recorded (ContactDetailsChanged, stream person-ID): who changed which fields, never
    the values.
    """
    from pydantic import ValidationError

    from activities.people import UnknownPerson, change_contact
    from workflows.errors import bullet_list, describe_validation_error
    from workflows.inputs import ContactChange

    try:
        change = ContactChange(employee_id=employee_id, display_name=name, email=email, time_zone=time_zone)
    except ValidationError as exc:
        raise _fail("nothing changed:\n" + bullet_list(describe_validation_error(exc))) from None

    async def work(pool: asyncpg.Pool, _url: str) -> list[str]:
        return list(await change_contact(PostgresEventStore(pool), change, by=by))

    try:
        fields = _run(database_url, work)
    except UnknownPerson as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"changed {', '.join(fields)} of {employee_id}; the change is recorded in the log")


# --- workflows -----------------------------------------------------------------------------------

@workflow_app.command("replay")
def workflow_replay(
    history_file: Annotated[str, typer.Argument(
        help="A history as JSON: temporal workflow show --workflow-id ID --output json > FILE")],
    database_url: DatabaseUrl = None,
) -> None:
    """Replay a workflow's history against this code; if it does not replay, name the first bad
    event and the event id to reset the workflow to (exit code 1). An encrypted history is read
    with its keys from the database (and the key-encryption key, MENTORING_KEK_FILE)."""
    from pathlib import Path

    from cli.replay import diagnose, is_encrypted
    from codec.encryption import encrypting_data_converter
    from runtime import StartupError, data_keys
    from settings import get_settings

    try:
        text = Path(history_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot read {history_file}: {exc.strerror or exc}") from None

    async def with_keys(pool: asyncpg.Pool, _url: str):
        try:
            keys = data_keys(get_settings(), pool, read_only=True)
        except StartupError as exc:
            raise _fail(str(exc), 2) from None
        return await diagnose(text, Path(history_file).stem, encrypting_data_converter(keys))

    try:
        if is_encrypted(text):
            found = _run(database_url, with_keys)
        else:
            found = asyncio.run(diagnose(text, Path(history_file).stem))
    except ValueError as exc:  # not a history
        raise _fail(f"{history_file} is not a workflow history in JSON: {str(exc)[:200]}") from None
    if found.replays:
        typer.echo(f"{history_file}: replays ({found.events} events)")
        return
    typer.echo(f"{history_file}: does NOT replay: {found.error[:300] if found.error else ''}")
    if found.reset_event_id is not None:
        typer.echo(f"first bad event: {found.bad_event_id}; produced by the workflow task completed "
                   f"at event {found.reset_event_id}: reset with\n"
                   f"  temporal workflow reset --workflow-id ID --event-id {found.reset_event_id} "
                   f"--reason 'non-determinism at event {found.bad_event_id}'")
        if found.activities_after_reset:
            typer.echo(f"warning: {found.activities_after_reset} activity(ies) ran after that task: "
                       "the new run would decide their appends again, and they would conflict with "
                       "the events already in the log")
    raise typer.Exit(1)


# --- projections ---------------------------------------------------------------------------------

@programme_app.command("matches")
def programme_matches(
    programme_id: Annotated[str, typer.Argument(help="The programme's id (its workflow is programme-ID).")],
    json: Json = False, database_url: DatabaseUrl = None,
) -> None:
    """The programme's latest matching suggestion, as recorded in its log: each pair with its
    score and reasons, then everyone left out and why. Exit code 1 when none was asked for yet."""
    from events.matching import MatchSuggestion

    async def latest(pool: asyncpg.Pool, _url: str) -> MatchSuggestion | None:
        payload = await pool.fetchval(
            """SELECT payload FROM events WHERE stream_id = $1 AND event_type = 'MatchesSuggested'
               ORDER BY version DESC LIMIT 1""", f"programme-{programme_id}")
        if payload is None:
            return None
        return MatchSuggestion(programme_id=programme_id, pairs=payload["pairs"], unmatched=payload["unmatched"],
                               total_score=payload["total_score"])

    suggestion = _run(database_url, latest)
    if suggestion is None:
        raise _fail(f"programme {programme_id} has no matching suggestion in the log: HR sends suggest_matches "
                    "first (or the programme id is not known).")
    if json:
        _json(suggestion)
        return
    console = Console()
    table = _table(f"{len(suggestion.pairs)} pair(s) suggested, total fit {suggestion.total_score:.2f}",
                   "senior", "mentor", "score", "topics", "why")
    for pair in suggestion.pairs:
        table.add_row(pair.senior_id, pair.mentor_id, f"{pair.score:.2f}", ", ".join(pair.topics),
                      "; ".join(pair.reasons))
    console.print(table)
    if suggestion.unmatched:
        left = _table(f"{len(suggestion.unmatched)} left out", "person", "role", "why")
        for person in suggestion.unmatched:
            left.add_row(person.employee_id, person.role, person.reason)
        console.print(left)


@projections_app.command("status")
def projections_status(json: Json = False, database_url: DatabaseUrl = None) -> None:
    """Where each read model stands: checkpoint, events behind, who runs it, any failure."""
    names = [p.name for p in all_projections()]
    statuses: list[ProjectionStatus] = _run(database_url, lambda pool, _url: read_status(pool, names))
    if json:
        return _json(statuses)
    table = _table("Projections", "name", "status", "position", "behind", "waiting since",
                   "run by pid", "failure")
    for s in statuses:
        failure = (f"{s.failure.event_type} at {s.failure.position}: {s.failure.error}"
                   if s.failure else "")
        table.add_row(s.name, s.status, str(s.position), str(s.behind),
                      _when(s.oldest_waiting_since), str(s.held_by_pid or ""), failure)
    _console().print(table)
    for s in statuses:
        if s.first_parked is not None:
            first = s.first_parked
            typer.echo(f"{s.name}: {s.parked} stream(s) parked, their later events waiting; the first: "
                       f"{first.stream_id} at position {first.position} ({first.event_type}): {first.error}"
                       f"{' (retry asked)' if first.retry_requested else ''}. After a fix: "
                       f"`mentoring projections resume {s.name}`")
    writer = next((s.waiting_for for s in statuses if s.waiting_for is not None), None)
    if writer is not None:
        typer.echo(f"events not applied yet may wait for the oldest open event writer: {writer.described()}")


@projections_app.command("rebuild")
def projections_rebuild(
    names: Annotated[list[str] | None, typer.Argument(
        help="Projections to rebuild (default: all).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 5000,
    json: Json = False, database_url: DatabaseUrl = None,
) -> None:
    """Rebuild read models from the whole log into shadow tables, then swap them in at once.

    The live read models keep serving and following the log until the swap.
    """
    known = {p.name: p for p in all_projections()}
    unknown = sorted(set(names or []) - set(known))
    if unknown:
        raise _fail(f"unknown projection(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}", 2)
    chosen = [known[n] for n in names] if names else list(known.values())

    async def work(pool: asyncpg.Pool, url: str):
        store = PostgresEventStore(pool)
        if json:
            return await rebuild(store, chosen, dsn=url, batch_size=batch_size)
        with rich_progress(f"rebuilding {len(chosen)} read model(s)") as progress:
            return await rebuild(store, chosen, dsn=url, batch_size=batch_size,
                                 on_progress=progress)

    try:
        report = _run(database_url, work)
    except RebuildError as exc:
        raise _fail(f"rebuild failed, the live read models are unchanged: {exc}") from None
    if json:
        typer.echo(jsonlib.dumps({"projections": report.projections, "events": report.events,
                                  "seconds": round(report.seconds, 3),
                                  "events_per_second": round(report.events_per_second)}))
    else:
        typer.echo(f"rebuilt {', '.join(report.projections)}: {report.events} events in "
                   f"{report.seconds:.1f}s ({report.events_per_second:,.0f} events/s)")


@projections_app.command("resume")
def projections_resume(
    name: Annotated[str, typer.Argument(help="The projection.")],
    stream: Annotated[str | None, typer.Option(
        "--stream", help="Only this parked stream (default: every parked stream).")] = None,
    skip: Annotated[bool, typer.Option("--skip", help="Skip the event it stopped on (recorded).")] = False,
    by: Annotated[str, typer.Option("--by", help="Who decides (recorded with the failure).")] = "operator",
    json: Json = False, database_url: DatabaseUrl = None,
) -> None:
    """Apply again what a projection could not, after a fix: its parked streams (each stopped on
    an event it could not apply), or the event a stopped projection failed on; or skip that event."""
    try:
        result = _run(database_url, lambda pool, _url: resume(pool, name, skip=skip, by=by, stream=stream))
    except (UnknownProjection, NothingToResume) as exc:
        raise _fail(str(exc)) from None
    if json:
        return _json(result)
    action = "skips" if result.skipped else "retries"
    if result.streams:
        first = "the event each stopped on, then applies the rest" if result.skipped else "each from the event it stopped on"
        typer.echo(f"{name}: {len(result.streams)} parked stream(s) to apply again ({', '.join(result.streams[:5])}"
                   f"{', ...' if len(result.streams) > 5 else ''}); the runner {action} {first} within its "
                   "poll interval")
    else:
        typer.echo(f"{name} resumed: it {action} the {result.event_type} event at position "
                   f"{result.event_position}; the runner picks it up within its poll interval")


if __name__ == "__main__":
    app()
