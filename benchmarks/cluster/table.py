"""The cluster benchmark's tables: every policy side by side, in trace time."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from benchmarks.cluster.metrics import Metrics


def duration(seconds: float) -> str:
    """Trace time as a person reads it: 45 s, 12.5 min, 3.20 h, 2.1 d."""
    if math.isnan(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 86400:.1f} d"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows), rule])


def policy_table(results: Sequence[Metrics]) -> str:
    """One row per measure, one column per policy."""
    rows: list[tuple[str, Callable[[Metrics], str]]] = [
        ("GPU utilisation while jobs wait", lambda m: f"{m.utilisation_waiting:.1%}"),
        ("GPU utilisation over the run", lambda m: f"{m.utilisation_run:.1%}"),
        (
            "idle-while-fitting GPU-hours, outside reservations",
            lambda m: f"{m.idle_fitting_gpu_s / 3600:,.0f}",
        ),
        (
            "idle-while-fitting GPU-hours, reserved GPUs too",
            lambda m: f"{m.idle_fitting_all_gpu_s / 3600:,.0f}",
        ),
        ("wait: mean", lambda m: duration(m.waits.mean)),
        ("wait: p50", lambda m: duration(m.waits.p50)),
        ("wait: p95", lambda m: duration(m.waits.p95)),
        ("wait: max", lambda m: duration(m.waits.max)),
    ]
    sizes = sorted({g for m in results for g in m.waits_by_gpus})
    for g in sizes:
        rows.append((f"wait of {g}-GPU jobs: mean / p50 / p95 / max", _by_gpus(g)))
    rows += [
        ("mean job completion time", lambda m: duration(m.mean_completion_s)),
        ("mean bounded slowdown", lambda m: f"{m.mean_bounded_slowdown:.2f}"),
        ("Jain's index of team share / fair share", lambda m: f"{m.jain:.3f}"),
        ("largest team shortfall from fair share", lambda m: f"{m.largest_shortfall:.0%}"),
        ("team share / fair share, worst 24 h window", _window_worst),
        ("(window, team) pairs at >= 90% of fair share", _windows_fair),
        ("makespan / lower bound", lambda m: f"{m.makespan_s / m.makespan_bound_s:.3f}"),
        ("forced jobs: wait mean (max)", _forced),
    ]
    header = ["", *(m.policy for m in results)]
    return _grid(header, [[name, *(f(m) for m in results)] for name, f in rows])


def _by_gpus(gpus: int) -> Callable[[Metrics], str]:
    def cell(m: Metrics) -> str:
        w = m.waits_by_gpus.get(gpus)
        if not w:
            return "-"
        return " / ".join(duration(x) for x in (w.mean, w.p50, w.p95, w.max))

    return cell


def _window_worst(m: Metrics) -> str:
    if m.window_worst is None:
        return "-"
    day, team = m.window_worst
    return f"{m.window_min_ratio:.0%} ({team}, day {day})"


def _windows_fair(m: Metrics) -> str:
    good, pairs = m.windows_fair
    return f"{good} of {pairs}" if pairs else "-"


def _forced(m: Metrics) -> str:
    waits = m.forced_waits
    if not waits:
        return "-"
    return f"{duration(sum(waits) / len(waits))} ({duration(max(waits))})"


def team_table(results: Sequence[Metrics]) -> str:
    """Each team's GPU time while work waited, as a share of its max-min fair share."""
    teams = sorted({t.team for m in results for t in m.teams})
    reference = results[0]
    fair = {t.team: t.fair for t in reference.teams}
    header = ["team", f"fair GPU-h ({reference.policy})", *(m.policy for m in results)]
    rows = []
    for team in teams:
        cells = [team, f"{fair.get(team, 0.0) / 3600:,.0f}"]
        for m in results:
            share = next((t for t in m.teams if t.team == team), None)
            cells.append(f"{share.ratio:.0%}" if share and share.fair > 0 else "-")
        rows.append(cells)
    return _grid(header, rows)


def claim_table(real: Metrics) -> str:
    """The claim call's real cost at the queue depths the replay reached."""
    rows = [
        [bucket, f"{calls:,}", f"{p50:.2f} ms", f"{p99:.2f} ms"]
        for bucket, (calls, p50, p99) in real.claim_ms_by_depth.items()
    ]
    return _grid(["queued jobs at the call", "claim calls", "p50", "p99"], rows)


def agreement(real: Metrics, twin: Metrics) -> str:
    """How far the real run is from its simulated twin: the harness's own check."""
    pairs = [
        ("GPU utilisation while jobs wait", real.utilisation_waiting, twin.utilisation_waiting),
        ("mean wait", real.waits.mean, twin.waits.mean),
        ("mean completion time", real.mean_completion_s, twin.mean_completion_s),
        ("makespan", real.makespan_s, twin.makespan_s),
    ]
    parts = [f"{name} {_relative(a, b)}" for name, a, b in pairs]
    return f"{real.policy} vs {twin.policy}: " + ", ".join(parts) + "."


def _relative(real: float, twin: float) -> str:
    if twin == 0:
        return "n/a"
    return f"{(real - twin) / twin:+.1%}"
