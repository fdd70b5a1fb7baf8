"""The audit HTTP API: the answers of `mentoring audit`, over HTTP, behind bearer tokens.

Every request carries `Authorization: Bearer <token>`; each token maps to a role:

| role      | may read                                                                   |
| --------- | -------------------------------------------------------------------------- |
| `hr`      | everything: the audit queries and `/projections/status`                    |
| `auditor` | the audit queries (`/audit/...`), people by pseudonymous id only (no names) |

Operating the read models (their status, who runs them, failures) is HR's and the operators'
business, not the auditors': an auditor's token gets 403 there. No token or an unknown one gets
401. A bad parameter gets 422 with a `message` naming it. An unknown pair gets 404.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations, which
# name dependencies local to create_app, so they must be evaluated where they are written.
import asyncio
import contextlib
import hashlib
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, overload

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dashboard.pages import COOKIE as DASHBOARD_COOKIE
from dashboard.pages import SignIn, dashboard_router, sign_in_redirect
from events import verify_jobs
from events.store import PostgresEventStore, create_pool
from projections import all_projections, queries
from projections.runner import ProjectionStatus, projection_status
from workflows.schema import (
    PROGRAMME_SCHEMA_PATH,
    SCHEMA_PATH,
    pair_input_schema,
    programme_input_schema,
)

# What each role may do; "audit" covers /audit/..., "operations" covers /projections/...
ROLES: dict[str, frozenset[str]] = {
    "hr": frozenset({"audit", "operations"}),
    "auditor": frozenset({"audit"}),
}

# Ids are free text to us (HR chooses them), bound as SQL parameters; only control characters,
# which no id contains and PostgreSQL text cannot hold (NUL), are refused up front.
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
PairId = Annotated[str, Path(min_length=1, max_length=200, pattern=_PRINTABLE,
                             description="the pair's id")]
ActorId = Annotated[str, Path(min_length=1, max_length=200, pattern=_PRINTABLE,
                              description="an employee id, or 'system'")]
Programme = Annotated[str, Query(min_length=1, max_length=200, pattern=_PRINTABLE,
                                 description="the programme's id")]
ProgrammeIdPath = Annotated[str, Path(min_length=1, max_length=200, pattern=_PRINTABLE,
                                      description="the programme's id")]


STATEMENT_TIMEOUT_MS = 30_000

_RECORD_ACCESS = """
INSERT INTO api_access (token_name, role, method, route, path_params, query_params, status, answer_bytes, duration_ms)
VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8, $9)
"""


def token_name(role: str, token: str) -> str:
    """How a token is named in the access log: its role and a fingerprint, never the token."""
    return f"{role}-{hashlib.sha256(token.encode()).hexdigest()[:10]}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
FLOOD_ROUTE = "(refused requests beyond the limit: counted, not recorded one by one)"
STORED_TEXT = 500
"""The longest text of a request the access log keeps (a route, a parameter's name or value)."""
STORED_PARAMS = 20
"""The most parameters of a request the access log keeps; the count of the others is kept."""


def _storable(value: Any) -> Any:
    """As the access log can keep it: control characters (a refused request may carry a NUL,
    which PostgreSQL text cannot hold) shown as U+FFFD, long texts cut, many parameters counted."""
    if isinstance(value, str):
        text = _CONTROL.sub("\ufffd", value)
        return text if len(text) <= STORED_TEXT else text[:STORED_TEXT] + f"... ({len(text)} characters)"
    if isinstance(value, dict):
        kept = {_storable(k): _storable(v) for k, v in list(value.items())[:STORED_PARAMS]}
        if len(value) > STORED_PARAMS:
            kept["(more parameters)"] = str(len(value) - STORED_PARAMS)
        return kept
    return value


@dataclass
class RefusedRequests:
    """Requests without a known token read nothing of the audit (the formats, the API's own
    description, refusals), and anyone can send them: a flood of them must not fill the access log.
    Up to `per_window` of them are recorded one by one in each window; the others are counted (by
    status) and recorded as one row when their window is over, with the next request or when the
    API stops. Requests with a known token always have their own row, and so do answers of the
    codec server (decoded payloads are data, whatever let them through)."""

    per_window: int = 120
    window_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    window_start: float | None = None
    in_window: int = 0
    beyond: Counter[int] = field(default_factory=Counter)
    beyond_since: datetime | None = None

    def settle(self, *, stopping: bool = False) -> dict[str, str] | None:
        """What to record of the requests counted beyond the limit, once their window is over."""
        now = self.clock()
        if self.window_start is not None and now - self.window_start < self.window_seconds and not stopping:
            return None
        ended = None
        if self.beyond and self.beyond_since is not None:
            ended = {"count": str(sum(self.beyond.values())), "since": self.beyond_since.isoformat(),
                     "until": datetime.now(UTC).isoformat(),
                     "statuses": ", ".join(f"{code}: {n}" for code, n in sorted(self.beyond.items()))}
        self.window_start, self.in_window, self.beyond, self.beyond_since = now, 0, Counter(), None
        return ended

    def admit(self, status_code: int) -> bool:
        """Whether this request without a known token gets its own row (else it is counted)."""
        if self.in_window < self.per_window:
            self.in_window += 1
            return True
        if not self.beyond:
            self.beyond_since = datetime.now(UTC)
        self.beyond[status_code] += 1
        return False


class _Database:
    """The pool the app reads from: given, or opened on first use from a DSN (and closed by us)."""

    def __init__(self, pool_or_dsn: asyncpg.Pool | str) -> None:
        self._dsn = pool_or_dsn if isinstance(pool_or_dsn, str) else None
        self._pool = None if isinstance(pool_or_dsn, str) else pool_or_dsn
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    if self._dsn is None:  # cannot be: only a pool opened from the DSN is dropped
                        raise RuntimeError("the API has neither a database pool nor a DSN")
                    # Its own pool, apart from the worker's activities, and no query may run
                    # long enough to hold one of its connections for good.
                    self._pool = await create_pool(self._dsn, min_size=1, max_size=5,
                                                   statement_timeout_ms=STATEMENT_TIMEOUT_MS)
        return self._pool

    async def close(self) -> None:
        if self._dsn is not None and self._pool is not None:
            await self._pool.close()
            self._pool = None


def create_app(pool_or_dsn: asyncpg.Pool | str, tokens: Mapping[str, str],
               codec: FastAPI | None = None, refused: RefusedRequests | None = None,
               temporal_ui: str | None = None) -> FastAPI:
    """The API over a pool (shared with the worker) or a DSN; `tokens` maps bearer token -> role.
    `codec`: the codec server (codec/server.py), mounted at /codec for the Web UI. `refused`: how
    many requests without a known token are recorded one by one (120 a minute by default).
    `temporal_ui`: the Web UI's namespace address, which the dashboard links each pair to."""
    refused = refused if refused is not None else RefusedRequests()
    unknown = sorted({role for role in tokens.values() if role not in ROLES})
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}: use {' or '.join(ROLES)}")
    known = [(token.encode(), role) for token, role in tokens.items()]
    database = _Database(pool_or_dsn)

    background: set[asyncio.Task] = set()  # verify jobs running in this process

    async def record_flood(db: asyncpg.Pool, counted: dict[str, str]) -> None:
        await db.execute(_RECORD_ACCESS, None, None, "*", FLOOD_ROUTE, {}, counted, 0, 0, 0.0)

    def in_background(task: asyncio.Task) -> None:
        background.add(task)
        task.add_done_callback(background.discard)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async def resume() -> None:
            try:
                await verify_jobs.resume_unfinished(await database.pool())
            except (asyncpg.PostgresError, OSError):
                pass  # the database is away: the next start, or the next job, resumes them
        in_background(asyncio.create_task(resume(), name="verify-jobs-resume"))
        yield
        for task in list(background):
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        flood = refused.settle(stopping=True)
        if flood is not None:
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                await record_flood(await database.pool(), flood)
        await database.close()

    app = FastAPI(title="Reverse mentoring: audit API", version="1.0", lifespan=lifespan,
                  description=__doc__)
    bearer = HTTPBearer(auto_error=False, description="a token given by HR; its role decides "
                        "what it may read")

    @app.middleware("http")
    async def record_access(request: Request, call_next):
        """Who read what: recorded before the answer leaves; if it cannot be, no answer leaves."""
        began = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # recorded as what the caller gets, then left to the server's handler
            response = Response(status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)
            crashed = True
        else:
            crashed = False
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            scheme, token = "bearer", request.cookies.get(DASHBOARD_COOKIE, "")  # the dashboard's pages
        role = role_of(token) if token.isascii() and token else None
        name = token_name(role, token) if role else ("unknown token" if token else None)
        route = request.scope.get("route")
        template = route.path if isinstance(route, APIRoute) else request.url.path
        codec_answer = request.url.path.startswith("/codec") and response.status_code < 400
        flood = refused.settle()
        own_row = bool(role) or codec_answer or refused.admit(response.status_code)
        try:
            db = await database.pool()
            if flood is not None:
                await record_flood(db, flood)
            if own_row:
                await db.execute(_RECORD_ACCESS, name, role, request.method, _storable(template),
                                 _storable(dict(request.path_params)), _storable(dict(request.query_params)),
                                 response.status_code, int(response.headers.get("content-length") or 0),
                                 (time.perf_counter() - began) * 1000)
        except (asyncpg.PostgresError, OSError):
            return JSONResponse({"detail": "not answered: the access could not be recorded; try again later"},
                                status.HTTP_503_SERVICE_UNAVAILABLE)
        if crashed:
            return JSONResponse({"detail": "internal error"}, status.HTTP_500_INTERNAL_SERVER_ERROR)
        return response

    def role_of(token: str) -> str | None:
        # Compare with every known token, in constant time, so timing reveals nothing.
        found = None
        for candidate, role in known:
            if secrets.compare_digest(candidate, token.encode()):
                found = role
        return found

    def allowed(permission: str):
        async def check(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                               Depends(bearer)]) -> str:
            if credentials is None:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required",
                                    headers={"WWW-Authenticate": "Bearer"})
            role = role_of(credentials.credentials)
            if role is None:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown token",
                                    headers={"WWW-Authenticate": "Bearer"})
            if permission not in ROLES[role]:
                raise HTTPException(status.HTTP_403_FORBIDDEN,
                                    f"the {role} role may not read this")
            return role
        return check

    async def pool() -> asyncpg.Pool:
        return await database.pool()

    Pool = Annotated[asyncpg.Pool, Depends(pool)]
    # Least exposure: auditors read facts by pseudonymous id; names are for HR.
    Role = Annotated[str, Depends(allowed("audit"))]
    audit = APIRouter(prefix="/audit", tags=["audit"], dependencies=[Depends(allowed("audit"))])
    operations = APIRouter(prefix="/projections", tags=["projections"],
                           dependencies=[Depends(allowed("operations"))])

    @audit.get("/pairs/{pair_id}", response_model=queries.PairReport,
               responses={404: {"description": "no such pair"}})
    async def pair(pair_id: PairId, db: Pool, role: Role) -> queries.PairReport:
        """A pair's overview, sessions, consent entries and full audit trail (names: hr only)."""
        report = await queries.pair_report(db, pair_id)
        if report is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no pair with id {pair_id!r}")
        return report.seen_by(role)

    @audit.get("/pairs/{pair_id}/as-of", response_model=queries.PairAsOf,
               responses={404: {"description": "no such pair"}})
    async def pair_as_of(pair_id: PairId, db: Pool, time: Annotated[datetime, Query(
            description="the moment, ISO 8601 (UTC if no zone)")]) -> queries.PairAsOf:
        """The pair as it stood at `time`, folded from the raw event log."""
        state = await queries.pair_as_of(PostgresEventStore(db), pair_id, _utc(time, "time"))
        if state is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no pair with id {pair_id!r}")
        return state

    @audit.get("/actors/{actor_id}", response_model=queries.ActorReport)
    async def actor(
        actor_id: ActorId,
        db: Pool,
        role: Role,
        since: Annotated[datetime | None, Query(description="from (ISO 8601)")] = None,
        until: Annotated[datetime | None, Query(description="before (ISO 8601)")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="entries per page")] = 1000,
        after: Annotated[str | None, Query(max_length=100, description="`next_after` of the previous page")] = None,
    ) -> queries.ActorReport:
        """Everything one person did, by business time, within [since, until), a page at a time."""
        since, until = _utc(since, "since"), _utc(until, "until")
        if since and until and since >= until:
            raise _unprocessable(["query", "since"], "since must be earlier than until")
        cursor = None
        if after is not None:
            moment, _, position = after.rpartition("|")
            try:
                cursor = (datetime.fromisoformat(moment), int(position))
            except ValueError:
                raise _unprocessable(["query", "after"], "after must be the next_after of a previous page") from None
        report = await queries.actor_report(db, actor_id, since, until, limit=limit, after=cursor)
        return report if role == "hr" else report.model_copy(update={"actor": report.actor.id_only()})

    @audit.post("/verify-jobs", response_model=verify_jobs.VerifyJob, status_code=status.HTTP_202_ACCEPTED)
    async def start_verify_job(db: Pool, request: Request) -> verify_jobs.VerifyJob:
        """Start a full verify of the log's chains in the background (resumed after a crash);
        follow it at /audit/verify-jobs/{id}."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        role = role_of(token)
        job_id = await verify_jobs.start_job(db, token_name(role, token) if role else None)
        in_background(verify_jobs.run_in_background(db, job_id))
        return await _job_report(db, job_id)

    @audit.get("/verify-jobs/{job_id}", response_model=verify_jobs.VerifyJob,
               responses={404: {"description": "no such job"}})
    async def verify_job(job_id: Annotated[int, Path(ge=1, le=2**62)], db: Pool) -> verify_jobs.VerifyJob:
        """A verify job's progress, and its result once done."""
        return await _job_report(db, job_id)

    async def _job_report(db: asyncpg.Pool, job_id: int) -> verify_jobs.VerifyJob:
        job = await verify_jobs.read_job(db, job_id)
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no verify job {job_id}")
        return job

    @audit.get("/access", response_model=list[queries.AccessEntry])
    async def access(
        db: Pool,
        since: Annotated[datetime, Query(description="from (ISO 8601)")],
        limit: Annotated[int, Query(ge=1, le=10_000, description="at most this many, oldest first")] = 1000,
        after_id: Annotated[int | None, Query(ge=0, description="continue after this entry's id")] = None,
    ) -> list[queries.AccessEntry]:
        """Who read what through this API: token (role and fingerprint), route, parameters,
        status, answer size, time; a page at a time."""
        moment = _utc(since, "since")
        assert moment is not None
        return await queries.access_log(db, moment, limit=limit, after_id=after_id)

    @audit.get("/consent", response_model=queries.ConsentReport)
    async def consent(programme: Programme, db: Pool) -> queries.ConsentReport:
        """The consent register of a programme: every invitation and every answer."""
        return await queries.consent_report(db, programme)

    @audit.get("/funnel", response_model=queries.FunnelReport)
    async def funnel(programme: Programme, db: Pool) -> queries.FunnelReport:
        """A programme's funnel: pairs per stage, outcome rates, median days per stage."""
        return await queries.funnel_report(db, programme)

    @audit.get("/programmes/{programme_id}", response_model=queries.ProgrammeReport)
    async def programme(programme_id: ProgrammeIdPath, db: Pool) -> queries.ProgrammeReport:
        """A programme's close report; while it runs, its figures now (from the log)."""
        report = await queries.programme_report(PostgresEventStore(db), db, programme_id)
        if report is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no programme with id {programme_id!r}")
        return report

    @audit.get("/rollup", response_model=queries.Rollup)
    async def rollup(
        db: Pool, since: Annotated[datetime, Query(description="programmes closed from (ISO 8601)")],
    ) -> queries.Rollup:
        """The programmes closed since a day, added up."""
        moment = _utc(since, "since")
        assert moment is not None
        return await queries.programme_rollup(db, moment)

    @audit.get("/verify", response_model=queries.VerifyResult)
    async def verify(db: Pool) -> queries.VerifyResult:
        """The log's hash chain recomputed; `ok` false names the first bad event."""
        return await queries.verify_log(PostgresEventStore(db))

    @operations.get("/status", response_model=list[ProjectionStatus])
    async def projections(db: Pool) -> list[ProjectionStatus]:
        """Where each read model stands: checkpoint, events behind, runner, failure."""
        return await projection_status(db, [p.name for p in all_projections()])

    app.include_router(audit)
    app.include_router(operations)
    app.include_router(dashboard_router(role_of, pool, temporal_ui))
    app.add_exception_handler(SignIn, sign_in_redirect)
    if codec is not None:
        app.mount("/codec", codec)

    @app.get(SCHEMA_PATH, tags=["formats"], response_class=Response)
    async def pair_input_format() -> Response:
        """The JSON Schema of a pair's start input: public (no token), at a stable address, so a
        refused start can point HR to it."""
        return Response(pair_input_schema(), media_type="application/schema+json")

    @app.get(PROGRAMME_SCHEMA_PATH, tags=["formats"], response_class=Response)
    async def programme_input_format() -> Response:
        """The JSON Schema of a programme's start input: public, like the pair's."""
        return Response(programme_input_schema(), media_type="application/schema+json")

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _unprocessable_response(exc.errors())

    @app.exception_handler(_Unprocessable)
    async def bad_combination(_request: Request, exc: _Unprocessable) -> JSONResponse:
        return _unprocessable_response(exc.errors)

    @app.exception_handler(asyncpg.PostgresError)
    @app.exception_handler(OSError)
    async def database_down(_request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, asyncpg.DataError):  # the database is up: it refused a parameter's value
            return _unprocessable_response([{"loc": ["query"], "type": "value_error",
                                             "msg": "a parameter is outside what the database accepts"}])
        if isinstance(exc, asyncpg.UndefinedTableError):
            detail = "the read models are not set up in this database: apply the migrations"
        else:
            detail = "the audit database is unavailable; try again later"
        return JSONResponse({"detail": detail}, status.HTTP_503_SERVICE_UNAVAILABLE)

    return app


class _Unprocessable(Exception):
    def __init__(self, errors: list[dict]) -> None:
        self.errors = errors


def _unprocessable(loc: list[str], message: str) -> _Unprocessable:
    return _Unprocessable([{"loc": loc, "msg": message, "type": "value_error"}])


def _unprocessable_response(errors) -> JSONResponse:
    """422 with FastAPI's usual `detail` list, plus one `message` line naming each parameter."""
    lines = []
    for error in errors:
        where = [str(part) for part in error.get("loc", ())]
        place = f"{where[0]} parameter '{'.'.join(where[1:])}'" if len(where) > 1 else ".".join(where)
        line = f"{place}: {error.get('msg')}"
        if error.get("type", "").startswith(("datetime", "date")):
            line += " (write ISO 8601, for example 2025-03-01T09:00:00Z)"
        lines.append(line)
    return JSONResponse(
        {"message": "; ".join(lines), "detail": jsonable_encoder(errors)},
        status_code=422,
    )


EARLIEST, LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC)


@overload
def _utc(value: datetime, name: str) -> datetime: ...
@overload
def _utc(value: None, name: str) -> None: ...
@overload
def _utc(value: datetime | None, name: str) -> datetime | None: ...
def _utc(value: datetime | None, name: str) -> datetime | None:
    """A query time as UTC (naive times are UTC), refused in words at the calendar's edges, where
    the conversion or the database would fail."""
    if value is None:
        return None
    try:
        moment = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    except OverflowError:
        moment = None
    if moment is None or not EARLIEST <= moment <= LATEST:
        raise _unprocessable(["query", name], "is out of range: give a time between 1900 and 9999 "
                                              "(or leave it out)")
    return moment
