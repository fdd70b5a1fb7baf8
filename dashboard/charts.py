"""The dashboard's pictures, drawn by matplotlib on the server: SVG for the pages, PDF pages for
the documents. Nothing is fetched by the browser, so the pages work with no network at all.

Readable without colour: bars carry hatch patterns and their value, lines differ by marker and
dash, and every chart sits beside a table of the same figures (in the page).
Matplotlib is not thread-safe across figures that share state: each chart is its own `Figure`
(no pyplot), everything is drawn holding `drawing()`, and the pages draw on one thread of their
own (`draw_off_the_loop`), never on the event loop the worker's activities share, nor on its
default thread pool.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, datetime
from typing import TypeVar

import matplotlib

matplotlib.use("Agg")  # no display; must come before anything draws

from matplotlib import rcParams  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num  # noqa: E402
from matplotlib.figure import Figure, SubFigure  # noqa: E402

from dashboard.figures import Count, FollowUpAdoption, LeftAt, RatingCounts, WeekAlive, WeekSessions  # noqa: E402

rcParams.update({
    "svg.fonttype": "none",  # text stays text: selectable, read by screen readers, small
    "svg.hashsalt": "mentoring",  # the same figures give the same SVG
    "pdf.fonttype": 42,  # TrueType in PDFs: their text can be searched and copied
    "text.parse_math": False,  # a name with dollar signs is a name, not a formula
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
})

# Dark enough on white, told apart by pattern too.
INK, SECOND, THIRD = "#1f4e79", "#b35806", "#4d4d4d"
T = TypeVar("T")
HATCHES = ("", "///", "...", "xx", "\\\\")
_lock = threading.RLock()  # a document holds it while its parts draw
_drawer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-drawing")
_WAITING_AT_MOST = 8
_waiting = 0


class TooBusy(Exception):
    """More drawings are waiting than are worth queueing: ask again shortly."""


async def draw_off_the_loop(work: Callable[[], T]) -> T:
    """`work()` on the drawing thread; TooBusy when too many are already waiting for it."""
    global _waiting
    if _waiting >= _WAITING_AT_MOST:
        raise TooBusy()
    _waiting += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_drawer, work)
    finally:
        _waiting -= 1

Canvas = Figure | SubFigure  # a whole figure, or part of a page
Draw = Callable[[Canvas], None]


@contextmanager
def drawing() -> Iterator[None]:
    """Hold while saving figures: one drawing at a time in this process."""
    with _lock:
        yield


def render(draw: Draw, *, size: tuple[float, float] = (6.0, 2.8)) -> bytes:
    """One chart as SVG (no date in it: the same figures give the same bytes)."""
    with drawing():
        figure = Figure(figsize=size, layout="constrained")
        draw(figure)
        out = io.BytesIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
        return out.getvalue()


def svg_markup(svg: bytes) -> str:
    """The <svg> element alone, for inlining in a page (no XML prologue or DOCTYPE)."""
    text = svg.decode("utf-8")
    return text[text.index("<svg"):]


# --- the charts -------------------------------------------------------------------------------------

def funnel(steps: Sequence[Count]) -> Draw:
    return _horizontal_bars("How far pairs got", [s.label for s in steps], [s.value for s in steps])


def consent(answers: Sequence[Count]) -> Draw:
    return _horizontal_bars("Seniors' answers to the invitation", [a.label.replace("_", " ") for a in answers],
                            [a.value for a in answers])


def left(rows: Sequence[LeftAt]) -> Draw:
    return _horizontal_bars("Where pairs left, and how",
                            [f"{r.stage.replace('_', ' ')}: {r.outcome.replace('_', ' ')}" for r in rows],
                            [r.pairs for r in rows])


def alive_over_time(weeks: Sequence[WeekAlive]) -> Draw:
    def draw(figure: Canvas) -> None:
        axes = figure.subplots()
        _title(axes, "Pairs alive and at risk, week by week")
        if not weeks:
            _nothing_yet(axes)
            return
        x = _time_axis(axes, [w.week for w in weeks])
        axes.plot(x, [w.alive for w in weeks], color=INK, marker="o", markersize=3, linestyle="-",
                  label="alive")
        axes.plot(x, [w.at_risk for w in weeks], color=SECOND, marker="^", markersize=4, linestyle="--",
                  label="at risk")
        _label_end(axes, x[-1], weeks[-1].alive, f"alive {weeks[-1].alive}")
        _label_end(axes, x[-1], weeks[-1].at_risk, f"at risk {weeks[-1].at_risk}")
        axes.set_ylim(bottom=0)
        _legend(axes)
    return draw


def sessions_per_week(weeks: Sequence[WeekSessions]) -> Draw:
    def draw(figure: Canvas) -> None:
        axes = figure.subplots()
        _title(axes, "Sessions held per week")
        if not weeks:
            _nothing_yet(axes)
            return
        held = [w for w in weeks if w.individual or w.collective]  # an empty week draws no bar
        first, last = _time_axis(axes, [weeks[0].week, weeks[-1].week])
        axes.set_xlim(first - 4, last + 4)  # every week of the series, with or without sessions
        x = _time_axis(axes, [w.week for w in held])
        individual = [w.individual for w in held]
        axes.bar(x, individual, width=5, color=INK, edgecolor="white", label="individual")
        axes.bar(x, [w.collective for w in held], width=5, bottom=individual, color="white",
                 edgecolor=SECOND, hatch=HATCHES[1], label="collective")
        axes.set_ylim(bottom=0)
        _legend(axes)
    return draw


def ratings(counts: Sequence[RatingCounts]) -> Draw:
    def draw(figure: Canvas) -> None:
        axes = figure.subplots()
        _title(axes, "Ratings given (1 to 5)")
        if not any(c.session or c.final for c in counts):
            _nothing_yet(axes)
            return
        x = [c.rating for c in counts]
        session = axes.bar([n - 0.2 for n in x], [c.session for c in counts], width=0.4, color=INK,
                           label="sessions")
        final = axes.bar([n + 0.2 for n in x], [c.final for c in counts], width=0.4, color="white",
                         edgecolor=SECOND, hatch=HATCHES[1], label="final evaluations")
        axes.bar_label(session, padding=2)
        axes.bar_label(final, padding=2)
        axes.set_xticks(x)
        axes.set_ylim(top=max(max(c.session, c.final) for c in counts) * 1.2)
        _legend(axes)
    return draw


def follow_ups(adoption: Sequence[FollowUpAdoption]) -> Draw:
    def draw(figure: Canvas) -> None:
        axes = figure.subplots()
        _title(axes, "Still using what they learnt")
        if not adoption:
            _nothing_yet(axes)
            return
        labels = [f"{a.days_after_end} days after" for a in adoption]
        yes = [a.still_using for a in adoption]
        no = [a.not_using for a in adoption]
        using = axes.barh(labels, yes, color=INK, label="still using")
        not_using = axes.barh(labels, no, left=yes, color="white", edgecolor=SECOND, hatch=HATCHES[2],
                              label="not using")
        axes.bar_label(using, labels=[f"yes {n}" if n else "" for n in yes], label_type="center", color="white")
        axes.bar_label(not_using, labels=[f"no {n}" if n else "" for n in no], label_type="center")
        axes.invert_yaxis()
        _legend(axes)
    return draw


def pair_timeline(stages: Sequence[tuple[str, datetime, datetime]],
                  marks: Sequence[tuple[str, datetime, str]]) -> Draw:
    """A pair's life as a Gantt chart: one row per stage visit (start, end), then one row per kind
    of mark (kind, when, label): sessions, feedback, notices, follow-ups, risk."""
    kinds = sorted({kind for kind, _, _ in marks})
    shapes = dict(zip(kinds, ("o", "s", "^", "D", "v", "P", "X"), strict=False))

    def draw(figure: Canvas) -> None:
        axes = figure.subplots()
        _title(axes, "The pair's stages and what happened")
        if not stages:
            _nothing_yet(axes)
            return
        starts = _time_axis(axes, [start for _, start, _ in stages])
        rows = [stage.replace("_", " ") for stage, _, _ in stages] + list(kinds)
        for row, ((_stage, start, end), left) in enumerate(zip(stages, starts, strict=True)):
            # A visit of minutes still shows: at least a few hours wide.
            width = max((end - start).total_seconds() / 86400, 0.25)
            axes.barh(row, width, left=left, height=0.6, color=INK if row % 2 == 0 else "white",
                      edgecolor=INK, hatch=HATCHES[row % 2])
        for row, kind in enumerate(kinds, start=len(stages)):
            moments = _time_axis(axes, [at for k, at, _ in marks if k == kind])
            axes.plot(moments, [row] * len(moments), linestyle="none", marker=shapes.get(kind, "o"),
                      color=SECOND if row % 2 else THIRD)
        axes.set_yticks(range(len(rows)), rows)
        axes.invert_yaxis()  # the first stage on top, the marks below
        if kinds:
            axes.axhline(len(stages) - 0.5, color="#999", linewidth=0.5)
    return draw


# --- helpers --------------------------------------------------------------------------------------

def _horizontal_bars(title: str, labels: Sequence[str], values: Sequence[int]) -> Draw:
    def draw(figure: Canvas) -> None:
        axes = figure.subplots()
        _title(axes, title)
        if not labels:
            _nothing_yet(axes)
            return
        bars = axes.barh(list(labels), list(values), color=INK)
        axes.bar_label(bars, padding=3)
        axes.invert_yaxis()  # the first step on top
        axes.set_xlim(right=max(max(values), 1) * 1.15)
    return draw


def _time_axis(axes: Axes, moments: Sequence[date | datetime]) -> list[float]:
    """Dates as matplotlib's numbers, the x axis labelled as dates (concisely)."""
    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    return [float(n) for n in date2num(list(moments))]


def _legend(axes: Axes) -> None:
    """The legend above the plot, right of the title: never over the data."""
    axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False, borderaxespad=0.2)


def _title(axes: Axes, title: str) -> None:
    axes.set_title(title, loc="left", fontsize=10, fontweight="bold")


def _nothing_yet(axes: Axes) -> None:
    axes.text(0.5, 0.5, "nothing recorded yet", ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()


def _label_end(axes: Axes, x: float, y: int, text: str) -> None:
    axes.annotate(text, (x, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
