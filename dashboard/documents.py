"""Documents people keep: a mentor's completion certificate, and a programme's report, as PDF.

Both are drawn by matplotlib (the dashboard's charts, vector, with their text searchable). The
certificate names people, so it is HR's only; the report carries ids and counts only.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from pydantic import BaseModel

from dashboard import charts
from dashboard.figures import Dashboard, dashboard

A4_LANDSCAPE = (11.69, 8.27)
A4_PORTRAIT = (8.27, 11.69)


class CertificateRefused(Exception):
    """No certificate for this pair: the reason is in the message, worded for HR."""


class NoSuchPair(CertificateRefused):
    """The pair is not in the read models."""


class NoSuchProgramme(Exception):
    """The programme is not in the read models."""


class Certificate(BaseModel):
    pair_id: str
    programme_id: str
    mentor_name: str
    sessions_given: int
    topics: list[str]
    completed_on: datetime
    signed_by: str


async def certificate_facts(db: asyncpg.Pool, pair_id: str) -> Certificate:
    """What the certificate of the pair's mentor says, from the read models and `people`."""
    row = await db.fetchrow(_CERTIFICATE, pair_id)
    if row is None:
        raise NoSuchPair(f"no pair with id {pair_id!r}")
    if row["stage"] != "completed":
        raise CertificateRefused(f"pair {pair_id} has not completed (it is {row['stage'].replace('_', ' ')}): "
                                 "a certificate is for a mentor who finished a pair")
    if not row["mentor_name"]:
        raise CertificateRefused(f"the mentor of pair {pair_id} has no name on record (erased or never "
                                 "registered): a certificate cannot be made out")
    signer = next((name for name in row["owner_names"] or [] if name), None) or row["nominator_name"]
    if not signer:
        raise CertificateRefused(f"neither the HR owners of programme {row['programme_id']} nor the person "
                                 f"who nominated pair {pair_id} have a name on record to sign with")
    return Certificate(pair_id=pair_id, programme_id=row["programme_id"], mentor_name=row["mentor_name"],
                       sessions_given=row["sessions_given"], topics=row["topics"] or [],
                       completed_on=row["ended_at"], signed_by=signer)


def certificate_pdf(facts: Certificate) -> bytes:
    with charts.drawing():
        return _certificate_pdf(facts)


def _certificate_pdf(facts: Certificate) -> bytes:
    figure = Figure(figsize=A4_LANDSCAPE)
    figure.patches.append(_border(figure))
    lines = [
        (0.80, "Certificate of reverse mentoring", 28, "bold"),
        (0.68, "This certifies that", 14, "normal"),
        (0.58, facts.mentor_name, 30, "bold"),
        (0.47, f"mentored a senior in the programme {facts.programme_id},", 14, "normal"),
        (0.41, f"giving {facts.sessions_given} session{'s' if facts.sessions_given != 1 else ''}"
               f"{' on ' + ', '.join(facts.topics) if facts.topics else ''}.", 14, "normal"),
        (0.33, f"Completed on {facts.completed_on:%d %B %Y} (pair {facts.pair_id}).", 11, "normal"),
        (0.16, facts.signed_by, 16, "bold"),
        (0.12, "for the programme's HR", 11, "normal"),
    ]
    for y, text, size, weight in lines:
        # Wrapped here, not by matplotlib: its wrapping reads "$...$" as a formula whatever
        # text.parse_math says, and a name or a topic may hold dollar signs.
        wrapped = textwrap.fill(text, width=int(A4_LANDSCAPE[0] * 72 * 0.85 / (size * 0.6)))
        figure.text(0.5, y, wrapped, ha="center", va="center", fontsize=size, fontweight=weight)
    figure.add_artist(_signature_line(figure))
    return _pdf([figure], title=f"Certificate, pair {facts.pair_id}")


class ReportFacts(BaseModel):
    figures: Dashboard
    closed_at: datetime | None


async def report_facts(db: asyncpg.Pool, programme_id: str) -> ReportFacts:
    """A programme's figures for its report: as of its close once it has closed (the weekly
    series end there), else as of now."""
    closed_at = await db.fetchval("SELECT closed_at FROM programme_health.programmes WHERE programme_id = $1",
                                  programme_id)
    figures = await dashboard(db, programme_id, now=min(closed_at, datetime.now(UTC)) if closed_at else None)
    if programme_id not in figures.programmes:
        raise NoSuchProgramme(f"no programme with id {programme_id!r}")
    return ReportFacts(figures=figures, closed_at=closed_at)


def report_pdf(figures: Dashboard, *, closed_at: datetime | None) -> bytes:
    """The programme's report: its figures, then each chart above the table of its numbers."""
    with charts.drawing():
        return _report_pdf(figures, closed_at)


def _report_pdf(figures: Dashboard, closed_at: datetime | None) -> bytes:
    name = figures.programme_id or "every programme"
    cover = Figure(figsize=A4_PORTRAIT)
    heading = f"Programme {name}: " + (f"close report ({closed_at:%d %B %Y})" if closed_at
                                        else f"report as of {figures.as_of:%d %B %Y}")
    cover.text(0.08, 0.93, heading, fontsize=16, fontweight="bold")
    summary = [("pairs nominated", figures.pairs), ("pairs alive", figures.alive),
               ("pairs at risk", figures.at_risk),
               ("average session rating", figures.average_session_rating if figures.average_session_rating
                is not None else "none yet"),
               *((f"funnel: {c.label}", c.value) for c in figures.funnel)]
    _table(cover.add_axes((0.08, 0.45, 0.84, 0.42)), ["figure", "value"], summary)
    pages = [cover]
    sections: list[tuple[charts.Draw, list[str], list[tuple[object, ...]]]] = [
        (charts.funnel(figures.funnel), ["step", "pairs"], [(c.label, c.value) for c in figures.funnel]),
        (charts.left(figures.left), ["left from", "outcome", "pairs"],
         [(r.stage, r.outcome, r.pairs) for r in figures.left]),
        (charts.alive_over_time(figures.alive_over_time), ["week", "alive", "at risk"],
         [(w.week.isoformat(), w.alive, w.at_risk) for w in figures.alive_over_time[-8:]]),
        (charts.sessions_per_week(figures.sessions_per_week), ["week", "individual", "collective"],
         [(w.week.isoformat(), w.individual, w.collective) for w in figures.sessions_per_week[-8:]]),
        (charts.ratings(figures.ratings), ["rating", "sessions", "final evaluations"],
         [(r.rating, r.session, r.final) for r in figures.ratings]),
        (charts.consent(figures.consent), ["answer", "seniors"], [(c.label, c.value) for c in figures.consent]),
        (charts.follow_ups(figures.follow_ups), ["days after the end", "still using", "not using"],
         [(f.days_after_end, f.still_using, f.not_using) for f in figures.follow_ups]),
    ]
    for first in range(0, len(sections), 2):  # two charts with their tables per page
        page = Figure(figsize=A4_PORTRAIT, layout="constrained")  # labels kept inside the page
        for half, (draw, columns, rows) in zip(_two(page), sections[first:first + 2], strict=False):
            chart, numbers = _two(half, height_ratios=[3, 2.2])
            draw(chart)  # a SubFigure draws as a Figure does
            _table(numbers.add_axes((0.08, 0.02, 0.84, 0.9)), columns,
                   rows or [("nothing recorded yet", *[""] * (len(columns) - 1))])
        pages.append(page)
    return _pdf(pages, title=f"Programme report, {name}")


def _two(parent: Figure | SubFigure, height_ratios: list[float] | None = None) -> list[SubFigure]:
    """The parent split in two, one above the other."""
    return list(parent.subfigures(2, 1, squeeze=False, height_ratios=height_ratios).flat)


def _pdf(pages: list[Figure], *, title: str) -> bytes:
    out = io.BytesIO()
    with charts.drawing(), PdfPages(out, metadata={"Title": title, "Creator": "reverse-mentoring",
                                                   "CreationDate": None}) as pdf:
        for page in pages:
            pdf.savefig(page)
    return out.getvalue()


def _table(axes: object, columns: list[str], rows: Sequence[Sequence[object]]) -> None:
    from matplotlib.axes import Axes

    assert isinstance(axes, Axes)
    axes.set_axis_off()
    table = axes.table(cellText=[[str(v) for v in row] for row in rows], colLabels=columns,
                       loc="upper center", cellLoc="left", colLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.15)


def _border(figure: Figure | SubFigure) -> Rectangle:
    return Rectangle((0.03, 0.04), 0.94, 0.92, transform=figure.transFigure, fill=False,
                     edgecolor=charts.INK, linewidth=3)


def _signature_line(figure: Figure) -> Line2D:
    return Line2D([0.35, 0.65], [0.19, 0.19], transform=figure.transFigure, color=charts.THIRD, linewidth=1)


_CERTIFICATE = """
SELECT p.pair_id, p.programme_id, p.stage, p.ended_at, p.mentor_id,
       mentor.display_name AS mentor_name, nominator.display_name AS nominator_name,
       (SELECT count(*) FROM mentor_recognition.sessions s
         WHERE s.pair_id = p.pair_id AND s.mentor_id = p.mentor_id)::int AS sessions_given,
       (SELECT array_agg(DISTINCT t ORDER BY t) FROM session_calendar.sessions c,
               unnest(coalesce(c.topics_covered, c.topics)) AS t
         WHERE c.pair_id = p.pair_id AND c.mentor_id = p.mentor_id AND c.status = 'held') AS topics,
       (SELECT array_agg(o.display_name ORDER BY owner.n) FROM programme_health.programmes g,
               unnest(g.hr_owners) WITH ORDINALITY AS owner(id, n)
               LEFT JOIN people o ON o.employee_id = owner.id
         WHERE g.programme_id = p.programme_id) AS owner_names
  FROM pair_overview.pairs p
  LEFT JOIN people mentor ON mentor.employee_id = p.mentor_id
  LEFT JOIN people nominator ON nominator.employee_id = p.nominated_by
 WHERE p.pair_id = $1"""
