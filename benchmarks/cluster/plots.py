"""The cluster benchmark's plots (PNG): busy GPUs over time, wait CDFs, team shares.

matplotlib is a benchmark extra (``pip install -e '.[bench]'``), never a
runtime dependency; without it the benchmark prints its tables and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.cluster.metrics import Metrics
from benchmarks.cluster.schedule import Schedule


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    return plt


def busy_gpus(schedule: Schedule) -> tuple[list[float], list[int]]:
    """The step function of busy GPUs: (times in days, GPUs in use from each time on)."""
    gpus = {j.index: j.gpus for j in schedule.jobs}
    changes: dict[float, int] = {}
    for p in schedule.placements:
        changes[p.start_s] = changes.get(p.start_s, 0) + gpus[p.job]
        changes[p.end_s] = changes.get(p.end_s, 0) - gpus[p.job]
    times, levels, level = [], [], 0
    for t in sorted(changes):
        level += changes[t]
        times.append(t / 86400)
        levels.append(level)
    return times, levels


def write_all(schedules: Sequence[Schedule], results: Sequence[Metrics], folder: Path,
              *, prefix: str = "cluster") -> list[Path]:  # fmt: skip
    """Write the three plots into ``folder``; returns their paths."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for schedule in schedules:
        times, levels = busy_gpus(schedule)
        ax.step(times, levels, where="post", label=schedule.policy, linewidth=0.9)
    ax.axhline(schedules[0].cluster.gpus, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("trace time (days)")
    ax.set_ylabel("busy GPUs")
    cluster = schedules[0].cluster
    ax.set_title(f"Busy GPUs, {cluster.gpus} GPUs on {cluster.hosts} hosts")
    ax.legend(loc="lower center", ncol=len(schedules), fontsize="small")
    paths.append(_save(fig, folder / f"{prefix}_busy_gpus.png", plt))

    sizes = sorted({j.gpus for j in schedules[0].jobs})
    fig, axes = plt.subplots(1, len(sizes), figsize=(3.2 * len(sizes), 3.6), sharey=True)
    axes = list(axes) if len(sizes) > 1 else [axes]
    for ax, size in zip(axes, sizes, strict=True):
        for schedule in schedules:
            placed = schedule.placement_of()
            waits = sorted(
                (placed[j.index].start_s - j.submit_s) / 3600
                for j in schedule.jobs if j.gpus == size
            )  # fmt: skip
            ys = [(i + 1) / len(waits) for i in range(len(waits))]
            ax.step(waits, ys, where="post", label=schedule.policy, linewidth=0.9)
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_title(f"{size}-GPU jobs")
        ax.set_xlabel("wait (hours)")
    axes[0].set_ylabel("fraction of jobs")
    axes[-1].legend(fontsize="x-small")
    paths.append(_save(fig, folder / f"{prefix}_wait_cdf.png", plt))

    teams = sorted({t.team for m in results for t in m.teams})
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(results)
    for k, m in enumerate(results):
        ratio = {t.team: t.ratio for t in m.teams}
        xs = [i + k * width for i in range(len(teams))]
        ax.bar(xs, [ratio.get(t, 0.0) for t in teams], width=width, label=m.policy)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(teams))], teams, rotation=45,
                  fontsize="small")  # fmt: skip
    ax.set_ylabel("GPU time ÷ max-min fair share")
    ax.set_title("Team shares while jobs wait")
    ax.legend(fontsize="small", ncol=len(results))
    paths.append(_save(fig, folder / f"{prefix}_team_shares.png", plt))
    return paths


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
