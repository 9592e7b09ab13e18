"""Cluster traces: reading them, choosing a window, and setting its load.

A trace is a CSV with the columns ``submit_s, team, gpus, duration_s`` (more
columns are ignored): ``../shared/traces/philly-gavel-seed0.csv`` or any trace
of a team's own cluster in the same columns. Times are trace seconds.

A window of the trace is re-based to start at 0. Its *offered load* is the
GPU-seconds it asks for divided by what the cluster has over the window of
arrivals; :func:`stretch_to_load` spreads (or packs) the arrival times so the
offered load is what the run wants (about 1.0: where scheduling decides
everything). Durations are capped, as a cluster's time limit would, so that a
window drains in a bounded time.

Jobs may carry a *time limit* (``limit_s``), what a user asks the scheduler for:
:func:`with_limits` sets each to its duration times a random factor in [1, 3],
rounded up to the whole hour (users over-estimate), as backfill schedulers see them.
The true duration is still when the job ends.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

GPUS_PER_HOST = 8
GPU_SIZES = (1, 2, 4, 8)


@dataclasses.dataclass(frozen=True)
class TraceJob:
    """One job of a trace, in trace seconds."""

    index: int  # its position in the window, from 0: the job's identity in a run
    submit_s: float
    team: str
    gpus: int
    duration_s: float
    #: Force-started at its submit time (a person's "start now").
    forced: bool = False
    #: The time limit the user gave (trace seconds, >= duration_s); None: none.
    limit_s: float | None = None


def read_trace(path: Path | str) -> list[TraceJob]:
    """Every job of a CSV trace, in submit order."""
    jobs = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            jobs.append(
                TraceJob(
                    index=len(jobs),
                    submit_s=float(row["submit_s"]),
                    team=row["team"].strip(),
                    gpus=int(row["gpus"]),
                    duration_s=float(row["duration_s"]),
                )
            )
    jobs.sort(key=lambda j: (j.submit_s, j.index))
    return renumber(jobs)


def synthetic(
    n: int, *, teams: int = 6, gpus_total: int = 64, load: float = 1.0, seed: int = 0
) -> list[TraceJob]:
    """A random trace for quick checks: Poisson arrivals, unequal teams, Philly-like sizes
    (mostly 1-GPU jobs, some 4 and 8), log-normal durations around an hour."""
    rng = random.Random(seed)
    sizes = rng.choices(GPU_SIZES, weights=(76, 3, 11, 10), k=n)
    durations = [min(rng.lognormvariate(8.2, 1.2), 86_400.0) for _ in range(n)]
    weights = [2.0**-t for t in range(teams)]  # team 0 submits the most
    names = rng.choices([f"team{t}" for t in range(teams)], weights=weights, k=n)
    span = sum(g * d for g, d in zip(sizes, durations, strict=True)) / (gpus_total * load)
    arrivals = sorted(rng.uniform(0, span) for _ in range(n))
    return [
        TraceJob(i, round(arrivals[i], 3), names[i], sizes[i], round(durations[i], 3))
        for i in range(n)
    ]


def window(
    jobs: Sequence[TraceJob],
    *,
    start_s: float,
    length_s: float,
    max_duration_s: float | None = None,
    teams: Iterable[str] | None = None,
) -> list[TraceJob]:
    """The jobs submitted in ``[start_s, start_s + length_s)``, re-based to 0, durations
    capped at ``max_duration_s``, only of ``teams`` when given."""
    keep = set(teams) if teams is not None else None
    chosen = []
    for job in jobs:
        if not start_s <= job.submit_s < start_s + length_s:
            continue
        if keep is not None and job.team not in keep:
            continue
        duration = job.duration_s
        if max_duration_s is not None:
            duration = min(duration, max_duration_s)
        rebased = job.submit_s - start_s
        chosen.append(dataclasses.replace(job, submit_s=rebased, duration_s=duration))
    return renumber(chosen)


def offered_load(jobs: Sequence[TraceJob], gpus_total: int) -> float:
    """GPU-seconds asked for ÷ GPU-seconds the cluster has between the first and last arrival."""
    if len(jobs) < 2:
        return 0.0
    span = jobs[-1].submit_s - jobs[0].submit_s
    asked = sum(j.gpus * j.duration_s for j in jobs)
    return asked / (gpus_total * span) if span > 0 else float("inf")


def stretch_to_load(jobs: Sequence[TraceJob], gpus_total: int, load: float) -> list[TraceJob]:
    """Arrival times scaled (durations kept) so that :func:`offered_load` is ``load``."""
    current = offered_load(jobs, gpus_total)
    if current <= 0 or current == float("inf"):
        return list(jobs)
    factor = current / load
    return [dataclasses.replace(j, submit_s=round(j.submit_s * factor, 3)) for j in jobs]


def with_forced(jobs: Sequence[TraceJob], count: int, *, seed: int = 0) -> list[TraceJob]:
    """The same jobs with ``count`` of them, chosen at random, force-started at submit."""
    if count <= 0 or not jobs:
        return list(jobs)
    rng = random.Random(seed)
    # Not among the first tenth: a forced job matters when there is a queue to jump.
    pool = [j.index for j in jobs[len(jobs) // 10 :]] or [j.index for j in jobs]
    picked = set(rng.sample(pool, min(count, len(pool))))
    return [dataclasses.replace(j, forced=j.index in picked) for j in jobs]


def with_limits(
    jobs: Sequence[TraceJob], *, low: float = 1.0, high: float = 3.0, seed: int = 0
) -> list[TraceJob]:
    """The same jobs, each with a time limit: its duration × a factor drawn uniformly from
    [``low``, ``high``], rounded up to the whole hour (at least one hour). Deterministic
    for a seed: the factors are drawn in index order."""
    rng = random.Random(seed)
    out = []
    for job in sorted(jobs, key=lambda j: j.index):
        hours = max(1, math.ceil(job.duration_s * rng.uniform(low, high) / 3600.0 - 1e-9))
        out.append(dataclasses.replace(job, limit_s=float(hours * 3600)))
    order = {j.index: n for n, j in enumerate(jobs)}
    return sorted(out, key=lambda j: order[j.index])


def with_limit_resolution(jobs: Sequence[TraceJob], step_s: float) -> list[TraceJob]:
    """The same jobs with their limits rounded up to a multiple of ``step_s`` (what the
    real replay can submit: whole real seconds are ``compression`` trace seconds)."""
    if step_s <= 0:
        return list(jobs)
    return [
        dataclasses.replace(j, limit_s=math.ceil(j.limit_s / step_s - 1e-9) * step_s)
        if j.limit_s is not None else j
        for j in jobs
    ]  # fmt: skip


def renumber(jobs: Sequence[TraceJob]) -> list[TraceJob]:
    return [dataclasses.replace(j, index=i) for i, j in enumerate(jobs)]


def fits_a_host(jobs: Sequence[TraceJob], gpus_per_host: int = GPUS_PER_HOST) -> list[TraceJob]:
    """Jobs that one host can run (a job needs its GPUs on one host)."""
    return [j for j in jobs if 0 < j.gpus <= gpus_per_host]
