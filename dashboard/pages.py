"""The dashboard's pages on the API: sign in with a token, a programme's health, a pair, documents.

    GET  /dashboard/sign-in                     the form that takes a token
    POST /dashboard/sign-in                     keeps the token in a Secure, HttpOnly, SameSite cookie
    POST /dashboard/sign-out                    forgets it
    GET  /dashboard?programme=ID                one programme's health (every programme without it)
    GET  /dashboard/pairs/{pair_id}             the pair's timeline as a picture, its trail below
    GET  /dashboard/pairs/{pair_id}/certificate.pdf    the mentor's certificate (HR only)
    GET  /dashboard/programmes/{programme_id}/report.pdf  the programme's report with its charts

The same tokens and roles as the API: HR sees names, an auditor ids only, and certificates
(which name people) are HR's. Charts are drawn on the server (dashboard/charts.py) and inlined:
the pages load nothing from anywhere else, and work on a machine with no network.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, which name
# dependencies local to dashboard_router, so they must be evaluated where they are written.

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from dashboard import charts, documents
from dashboard.figures import Dashboard, dashboard
from projections import queries

COOKIE = "mentoring_token"
T = TypeVar("T")
HERE = FilePath(__file__).resolve().parent
_templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
# An id in a link: every reserved character escaped, "/" too (jinja's urlencode keeps it).
_templates.filters["path_part"] = lambda value: quote(str(value), safe="")
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
# Ids as the API takes them: 1 to 200 characters, none a control character (422 in words otherwise).
PathId = Annotated[str, Path(min_length=1, max_length=200, pattern=_PRINTABLE)]
SIGN_IN_BODY_LIMIT = 4096  # a token and its field name; anything larger is not a sign-in
# The pages run no script and are never framed; their SVGs carry an inline <style>.
_HEADERS = {"Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; "
                                       "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


class SignIn(Exception):
    """No usable token: the page sends the browser to the sign-in form."""


def dashboard_router(role_of: Callable[[str], str | None], pool: Callable[[], Awaitable[asyncpg.Pool]],
                     temporal_ui: str | None = None) -> APIRouter:
    """`role_of`: the API's token check; `temporal_ui`: the Web UI's namespace address
    (http://host:port/namespaces/NS), for links to each pair's workflow."""
    router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

    def signed_in(request: Request) -> str:
        token = request.cookies.get(COOKIE, "")
        role = role_of(token) if token and token.isascii() else None
        if role is None:
            raise SignIn()
        return role

    Role = Annotated[str, Depends(signed_in)]
    Db = Annotated[asyncpg.Pool, Depends(pool)]

    def page(name: str, role: str | None, code: int = 200, **values: Any) -> HTMLResponse:
        html = _templates.get_template(name).render(role=role, temporal_ui=temporal_ui, **values)
        return HTMLResponse(html, status_code=code, headers=_HEADERS)

    def same_site_only(request: Request) -> None:
        """A form posted from another site's page is refused (login and logout forgery): browsers
        say where a request comes from in Sec-Fetch-Site, or at least in Origin."""
        # Sec-Fetch-Site decides when sent (every current browser does). Else the Origin's host
        # must be ours; its scheme is not compared, since behind a proxy that ends TLS the API
        # itself is reached over plain HTTP.
        site = request.headers.get("sec-fetch-site")
        origin = request.headers.get("origin")
        if site is not None:
            foreign = site not in ("same-origin", "none")
        else:
            foreign = origin is not None and urlsplit(origin).netloc != request.headers.get("host")
        if foreign:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "a form from another site cannot sign in or out here")

    @router.get("/sign-in")
    async def sign_in_form() -> HTMLResponse:
        return page("sign_in.html", None)

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        same_site_only(request)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > SIGN_IN_BODY_LIMIT:
                raise HTTPException(413, "a sign-in form holds one token")  # Content Too Large
        form = parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        if not token or not token.isascii() or role_of(token) is None:
            return page("sign_in.html", None, status.HTTP_401_UNAUTHORIZED,
                        error="This token is not known: ask HR for yours.")
        response = RedirectResponse("/dashboard", status.HTTP_303_SEE_OTHER)
        # Secure: sent over HTTPS only (browsers also allow it on localhost); HttpOnly: out of
        # scripts' reach; SameSite=Strict: never sent by another site's page or form.
        response.set_cookie(COOKIE, token, httponly=True, secure=True, samesite="strict",
                            path="/dashboard", max_age=8 * 3600)
        return response

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        same_site_only(request)
        response = RedirectResponse("/dashboard/sign-in", status.HTTP_303_SEE_OTHER)
        response.delete_cookie(COOKIE, path="/dashboard", secure=True, httponly=True, samesite="strict")
        return response

    @router.get("/static/style.css")
    async def style() -> FileResponse:
        return FileResponse(HERE / "static" / "style.css", media_type="text/css")

    @router.get("")
    async def health(role: Role, db: Db, programme: Annotated[str | None, Query(
            min_length=1, max_length=200, pattern=_PRINTABLE, description="one programme's id")] = None) -> HTMLResponse:
        figures = await dashboard(db, programme)
        if programme is not None and programme not in figures.programmes:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no programme with id {programme!r}")
        names = await _names(db, role, {p.mentor_id for p in figures.needing_hr} | {p.mentee_id for p in figures.needing_hr})
        svgs = await _drawn(lambda: _dashboard_charts(figures))
        return page("dashboard.html", role, figures=figures, charts=svgs, names=names,
                    report_link=f"/dashboard/programmes/{quote(programme, safe='')}/report.pdf" if programme else None)

    @router.get("/pairs/{pair_id}")
    async def pair(pair_id: PathId, role: Role, db: Db) -> HTMLResponse:
        report = await queries.pair_report(db, pair_id)
        if report is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no pair with id {pair_id!r}")
        pair_id = report.overview.pair_id  # the pair's own id, also when it was asked by its workflow's
        visits = await db.fetch("""SELECT stage, entered_at, left_at FROM programme_funnel.stage_visits
                                   WHERE pair_id = $1 ORDER BY visit""", pair_id)
        now = datetime.now(UTC)
        stages = [(v["stage"], v["entered_at"], v["left_at"] or report.overview.ended_at or now) for v in visits]
        report = report.seen_by(role)
        marks = _marks(report)
        svg = await _drawn(lambda: charts.svg_markup(charts.render(
            charts.pair_timeline(stages, marks), size=(8.0, 1.2 + 0.28 * (len(stages) + len({k for k, _, _ in marks}))))))
        return page("pair.html", role, report=report, timeline=svg, stages=stages, marks=marks,
                    workflow_id=f"pair-{pair_id}")

    @router.get("/pairs/{pair_id}/certificate.pdf")
    async def certificate(pair_id: PathId, role: Role, db: Db) -> Response:
        if role != "hr":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "certificates name people: HR's only")
        try:
            facts = await documents.certificate_facts(db, pair_id)
        except documents.NoSuchPair as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        except documents.CertificateRefused as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        pdf = await _drawn(lambda: documents.certificate_pdf(facts))
        return _pdf(pdf, f"certificate-{pair_id}.pdf")

    @router.get("/programmes/{programme_id}/report.pdf")
    async def programme_report(programme_id: PathId, role: Role, db: Db) -> Response:
        try:
            facts = await documents.report_facts(db, programme_id)
        except documents.NoSuchProgramme as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        pdf = await _drawn(lambda: documents.report_pdf(facts.figures, closed_at=facts.closed_at))
        return _pdf(pdf, f"programme-{programme_id}-report.pdf")

    return router


async def _drawn(work: Callable[[], T]) -> T:
    try:
        return await charts.draw_off_the_loop(work)
    except charts.TooBusy:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "many pictures are being drawn: try again "
                            "in a few seconds", headers={"Retry-After": "5"}) from None


async def sign_in_redirect(_request: Request, _exc: Exception) -> Response:
    return RedirectResponse("/dashboard/sign-in", status.HTTP_303_SEE_OTHER)


def _dashboard_charts(figures: Dashboard) -> dict[str, str]:
    draws = {"funnel": (charts.funnel(figures.funnel), (6.0, 2.4)),
             "left": (charts.left(figures.left), (6.0, 0.6 + 0.3 * max(len(figures.left), 2))),
             "alive": (charts.alive_over_time(figures.alive_over_time), (6.0, 2.8)),
             "sessions": (charts.sessions_per_week(figures.sessions_per_week), (6.0, 2.8)),
             "ratings": (charts.ratings(figures.ratings), (6.0, 2.6)),
             "consent": (charts.consent(figures.consent), (6.0, 0.6 + 0.3 * max(len(figures.consent), 2))),
             "follow_ups": (charts.follow_ups(figures.follow_ups), (6.0, 0.8 + 0.4 * max(len(figures.follow_ups), 2)))}
    return {name: charts.svg_markup(charts.render(draw, size=size)) for name, (draw, size) in draws.items()}


def _marks(report: queries.PairReport) -> list[tuple[str, datetime, str]]:
    kinds = {"SessionHeld": "session outcomes", "SessionMissed": "session outcomes", "SessionCancelled": "session outcomes",
             "FeedbackGiven": "feedback", "FinalEvaluationGiven": "feedback",
             "NotificationSent": "notices", "FollowUpSent": "follow-ups", "FollowUpAnswered": "follow-ups",
             "PairFlaggedAtRisk": "risk", "PairBackOnTrack": "risk"}
    return [(kinds[e.action], e.at, e.summary) for e in report.trail if e.action in kinds]


async def _names(db: asyncpg.Pool, role: str, ids: set[str]) -> dict[str, str]:
    if role != "hr" or not ids:
        return {}
    rows = await db.fetch("SELECT employee_id, display_name FROM people WHERE employee_id = ANY($1::text[])",
                          sorted(ids))
    return {r["employee_id"]: r["display_name"] for r in rows if r["display_name"]}


def _pdf(content: bytes, filename: str) -> Response:
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", filename)  # ids are free text: keep the header plain
    return Response(content, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', **_HEADERS})
