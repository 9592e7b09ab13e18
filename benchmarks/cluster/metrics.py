"""What a team sharing GPU hosts cares about, computed from a :class:`Schedule`.

All in trace seconds. The cluster's state is constant between two events (a
submit, a start, an end, a reservation's edge), so every figure is a sum over
those intervals:

- utilisation while work waits: busy GPU-seconds ÷ available GPU-seconds over
  the intervals when at least one job is queued; and over the whole run;
- idle-while-fitting GPU-seconds: free GPUs of a host, not held by a
  reservation, while a queued job would fit there (a work-conserving
  scheduler has none);
- waits (submit → start) overall and by GPU count, completion time, bounded
  slowdown ``max(1, (wait + run) / max(run, 10 s))``;
- fairness under contention: at every instant a job is queued, each team's
  max-min fair share of the cluster's GPUs given its demand then (the GPUs of
  its running and queued jobs); each team's GPU time against the sum of those
  shares, the largest shortfall and Jain's index of the ratios;
- makespan against its lower bound;
- forced jobs' waits, and (real run) the claim call's own cost by queue depth.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from benchmarks.cluster.schedule import Schedule
from benchmarks.harness.stats import percentile

SLOWDOWN_FLOOR_S = 10.0


@dataclasses.dataclass(frozen=True)
class Waits:
    count: int
    mean: float
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Waits:
        if not values:
            return cls(0, float("nan"), float("nan"), float("nan"), float("nan"))
        return cls(len(values), sum(values) / len(values), percentile(values, 50),
                   percentile(values, 95), max(values))  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TeamShare:
    """A team's GPU-seconds while work waited: its max-min fair share, and what it got."""

    team: str
    fair: float
    actual: float

    @property
    def ratio(self) -> float:
        return self.actual / self.fair if self.fair > 0 else 1.0


@dataclasses.dataclass(frozen=True)
class Metrics:
    policy: str
    jobs: int
    utilisation_waiting: float
    utilisation_run: float
    waiting_seconds: float  # how long at least one job was queued
    idle_fitting_gpu_s: float
    waits: Waits
    waits_by_gpus: Mapping[int, Waits]
    mean_completion_s: float
    mean_bounded_slowdown: float
    teams: Sequence[TeamShare]
    jain: float
    largest_shortfall: float  # the worst (fair − actual) ÷ fair of a team
    makespan_s: float
    makespan_bound_s: float
    forced_waits: Sequence[float]
    claim_ms_by_depth: Mapping[str, tuple[int, float, float]]  # bucket → (calls, p50, p99)


def measure(schedule: Schedule) -> Metrics:
    jobs = schedule.jobs
    placed = schedule.placement_of()
    missing = [j.index for j in jobs if j.index not in placed]
    if missing:
        raise ValueError(f"{schedule.policy}: {len(missing)} jobs never ran: {missing[:5]}")
    cluster = schedule.cluster
    sweep = _sweep(schedule)

    waits = [placed[j.index].start_s - j.submit_s for j in jobs]
    by_gpus: dict[int, list[float]] = defaultdict(list)
    for job, wait in zip(jobs, waits, strict=True):
        by_gpus[job.gpus].append(wait)
    completions = [placed[j.index].end_s - j.submit_s for j in jobs]
    slowdowns = [
        max(1.0, (wait + j.duration_s) / max(j.duration_s, SLOWDOWN_FLOOR_S))
        for j, wait in zip(jobs, waits, strict=True)
    ]
    first = min(j.submit_s for j in jobs)
    last_end = max(p.end_s for p in schedule.placements)
    bound = max(
        sum(j.gpus * j.duration_s for j in jobs) / cluster.gpus,
        max(j.submit_s + j.duration_s for j in jobs) - first,
    )
    teams = [TeamShare(t, sweep.fair[t], sweep.actual[t]) for t in sorted(sweep.fair)]
    ratios = [t.ratio for t in teams if t.fair > 0]
    return Metrics(
        policy=schedule.policy,
        jobs=len(jobs),
        utilisation_waiting=sweep.busy_waiting / sweep.capacity_waiting
        if sweep.capacity_waiting else float("nan"),
        utilisation_run=sweep.busy / (cluster.gpus * (last_end - first)),
        waiting_seconds=sweep.capacity_waiting / cluster.gpus,
        idle_fitting_gpu_s=sweep.idle_fitting,
        waits=Waits.of(waits),
        waits_by_gpus={g: Waits.of(w) for g, w in sorted(by_gpus.items())},
        mean_completion_s=sum(completions) / len(completions),
        mean_bounded_slowdown=sum(slowdowns) / len(slowdowns),
        teams=teams,
        jain=jain(ratios),
        largest_shortfall=max((1 - r for r in ratios), default=0.0),
        makespan_s=last_end - first,
        makespan_bound_s=bound,
        forced_waits=[placed[j.index].start_s - j.submit_s for j in jobs if j.forced],
        claim_ms_by_depth=_claim_cost(schedule.claim_calls),
    )  # fmt: skip


@dataclasses.dataclass
class _Sweep:
    busy: float = 0.0
    busy_waiting: float = 0.0
    capacity_waiting: float = 0.0
    idle_fitting: float = 0.0
    fair: dict[str, float] = dataclasses.field(default_factory=lambda: defaultdict(float))
    actual: dict[str, float] = dataclasses.field(default_factory=lambda: defaultdict(float))


def _sweep(schedule: Schedule) -> _Sweep:
    """Walk the run's events in time order, summing over the constant stretches between."""
    cluster = schedule.cluster
    placed = schedule.placement_of()
    # (time, order, kind, value): ends before starts before submits at one instant, so a job
    # that ends and one that starts in its place leave no gap, and a job submitted and
    # started at once never counts as queued.
    events: list[tuple[float, int, str, tuple[int, int, str]]] = []
    for job in schedule.jobs:
        p = placed[job.index]
        events.append((p.end_s, 0, "end", (p.host, job.gpus, job.team)))
        events.append((p.start_s, 1, "start", (p.host, job.gpus, job.team)))
        events.append((job.submit_s, 2, "submit", (0, job.gpus, job.team)))
    for r in schedule.reservations:
        events.append((r.until_s, 0, "unreserve", (r.host, r.gpus, "")))
        events.append((r.from_s, 1, "reserve", (r.host, r.gpus, "")))
    events.sort(key=lambda e: (e[0], e[1]))

    busy = [0] * cluster.hosts
    reserved = [0] * cluster.hosts
    queued: Counter[int] = Counter()  # queued jobs by GPU count
    running_of: Counter[str] = Counter()  # GPUs in use, by team
    queued_of: Counter[str] = Counter()  # GPUs asked for by queued jobs, by team
    out = _Sweep()
    for i, (now, _, kind, (host, gpus, team)) in enumerate(events):
        if kind == "end":
            busy[host] -= gpus
            running_of[team] -= gpus
        elif kind == "start":
            busy[host] += gpus
            queued[gpus] -= 1
            running_of[team] += gpus
            queued_of[team] -= gpus
        elif kind == "submit":
            queued[gpus] += 1
            queued_of[team] += gpus
        elif kind == "reserve":
            reserved[host] += gpus
        else:
            reserved[host] -= gpus
        if i + 1 == len(events):
            break
        span = events[i + 1][0] - now
        if span <= 0:
            continue
        in_use = sum(busy)
        out.busy += in_use * span
        smallest = min((g for g, n in queued.items() if n > 0), default=None)
        if smallest is None:
            continue
        out.busy_waiting += in_use * span
        out.capacity_waiting += cluster.gpus * span
        demand = {t: running_of[t] + queued_of[t] for t in running_of.keys() | queued_of.keys()}
        for t, fair in max_min_fair({t: d for t, d in demand.items() if d > 0},
                                    cluster.gpus).items():  # fmt: skip
            out.fair[t] += fair * span
            out.actual[t] += running_of[t] * span
        for h in range(cluster.hosts):
            free = cluster.gpus_per_host - busy[h] - max(reserved[h], 0)
            if free >= smallest:
                out.idle_fitting += free * span
    return out


def max_min_fair(demand: Mapping[str, float], capacity: float) -> dict[str, float]:
    """Water-filling: an equal split, where a team that wants less keeps what it wants
    and the rest is split again among the others, until nothing is left."""
    share = dict.fromkeys(demand, 0.0)
    left = dict(demand)
    remaining = capacity
    while left and remaining > 1e-9:
        each = remaining / len(left)
        satisfied = {t: d for t, d in left.items() if d <= each}
        if not satisfied:
            for team in left:
                share[team] += each
            break
        for team, wanted in satisfied.items():
            share[team] += wanted
            remaining -= wanted
            del left[team]
    return share


def jain(values: Sequence[float]) -> float:
    """Jain's index (Σx)² / (n·Σx²): 1 when all are equal, 1/n when one has everything."""
    if not values:
        return float("nan")
    squares = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * squares) if squares else 1.0


DEPTH_BUCKETS = ((0, 0), (1, 9), (10, 99), (100, 999), (1000, 10**9))


def _claim_cost(calls: Sequence[tuple[int, float]]) -> dict[str, tuple[int, float, float]]:
    out = {}
    for low, high in DEPTH_BUCKETS:
        ms = [t for depth, t in calls if low <= depth <= high]
        if ms:
            label = f"{low}" if low == high else (f"{low}+" if high >= 10**9 else f"{low}-{high}")
            out[label] = (len(ms), percentile(ms, 50), percentile(ms, 99))
    return out
