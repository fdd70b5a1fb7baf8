"""The run's figures: one JSON line for machines, a table for people, and the verdict."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chaos.checks import Check
from chaos.driver import PairRun, Sample

ROUND_TRIPS = ("start", "update", "query", "signal", "result")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def stats(samples: Sequence[Sample]) -> dict[str, Any]:
    if not samples:
        return {"n": 0}
    seconds = [s.seconds for s in samples]
    worst = max(samples, key=lambda s: s.seconds)
    return {"n": len(samples), "p50_s": round(percentile(seconds, 50), 3),
            "p95_s": round(percentile(seconds, 95), 3), "max_s": round(worst.seconds, 3),
            "max_at": f"{worst.pair} {worst.kind}:{worst.step}"}


def stall_figures(samples: Sequence[Sample], runs: Sequence[PairRun]) -> dict[str, Any]:
    """Latency of every round trip and timer-driven step, overall and by kind, and the worst
    per pair. A sample marked censored was cut short by the pair's deadline."""
    by_kind = {kind: stats([s for s in samples if s.kind == kind])
               for kind in (*ROUND_TRIPS, "timer", "wait")}
    per_pair: dict[str, float] = {}
    for sample in samples:
        per_pair[sample.pair] = max(per_pair.get(sample.pair, 0.0), sample.seconds)
    maxima = list(per_pair.values())
    return {
        "all": stats(samples),
        "round_trips": stats([s for s in samples if s.kind in ROUND_TRIPS]),
        "timers": stats([s for s in samples if s.kind == "timer"]),
        "by_kind": by_kind,
        "per_pair_max": {"p50_s": round(percentile(maxima, 50), 3),
                         "p95_s": round(percentile(maxima, 95), 3),
                         "max_s": round(max(maxima), 3)} if maxima else {},
        "max_per_pair_s": {run.label: round(per_pair.get(run.label, 0.0), 3) for run in runs},
        "censored": sum(1 for s in samples if s.censored),
    }


@dataclass
class ChaosReport:
    figures: dict[str, Any]
    checks: list[Check]
    runs: list[PairRun]
    samples: list[Sample] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def json_line(self) -> str:
        return json.dumps({"run": "chaos", "ok": self.ok, **self.figures,
                           "violations": {c.name: len(c.problems) for c in self.checks if c.problems}},
                          separators=(",", ":"))

    def summary(self) -> str:
        """The violations, one line each, naming the pairs: the failure message."""
        lines = [f"chaos run failed: {sum(len(c.problems) for c in self.checks)} violation(s)"]
        for check in self.checks:
            for problem in check.problems:
                lines.append(f"- {check.name}: {problem}")
        return "\n".join(lines)

    def table(self) -> str:
        f = self.figures
        stall = f["stall"]
        lines = [
            f"chaos run {f['run_id']}: {f['pairs']} pairs ({f['completed']} completed), "
            f"{f['kills']} kills, {f['clients']} clients, a kill every "
            f"{f['kill_every_s'][0]:g}-{f['kill_every_s'][1]:g} s, drivers {f['drive_s']:.0f} s, "
            f"total {f['duration_s']:.0f} s",
            "",
            f" {'latency (s)':<22}{'n':>7}{'p50':>9}{'p95':>9}{'max':>9}  worst",
        ]
        rows = [("all steps", stall["all"]), ("round trips", stall["round_trips"]),
                *[(f"  {k}", v) for k, v in stall["by_kind"].items() if k in
                  ("start", "update", "query", "signal", "result")],
                ("timer-driven steps", stall["timers"]), ("nomination recorded", stall["by_kind"]["wait"])]
        for name, s in rows:
            if s.get("n"):
                lines.append(f" {name:<22}{s['n']:>7}{s['p50_s']:>9.2f}{s['p95_s']:>9.2f}"
                             f"{s['max_s']:>9.2f}  {s['max_at']}")
        per_pair = stall["per_pair_max"]
        if per_pair:
            worst = sorted(stall["max_per_pair_s"].items(), key=lambda kv: -kv[1])[:5]
            lines.append(f" {'max per pair':<22}{len(stall['max_per_pair_s']):>7}"
                         f"{per_pair['p50_s']:>9.2f}{per_pair['p95_s']:>9.2f}{per_pair['max_s']:>9.2f}"
                         f"  {', '.join(f'{p} {s:.1f}' for p, s in worst)}")
        if stall["censored"]:
            lines.append(f" ({stall['censored']} step(s) still waiting at their pair's deadline "
                         "count with the time waited so far)")
        restarts = f.get("worker_restart_s", {})
        history = f.get("history", {})
        lines += [
            "",
            f" worker restarts p50 {restarts.get('p50_s', 0):.1f} s, max {restarts.get('max_s', 0):.1f} s; "
            f"history: {history.get('workflow_task_timed_out', 0)} workflow task timeouts, "
            f"{history.get('activity_retries', 0)} activity retries, "
            f"{history.get('workflow_task_failed', 0)} workflow task failures; "
            f"{f.get('events', 0)} events; notices {f.get('notices', {}).get('events', 0)}",
            "",
        ]
        for check in self.checks:
            mark = "ok  " if check.ok else "FAIL"
            note = f" ({check.note})" if check.note else ""
            count = f": {len(check.problems)} problem(s)" if check.problems else ""
            lines.append(f" [{mark}] {check.name}{count}{note}")
            for problem in check.problems[:20]:
                lines.append(f"        {problem}")
            if len(check.problems) > 20:
                lines.append(f"        ... and {len(check.problems) - 20} more")
        return "\n".join(lines)
