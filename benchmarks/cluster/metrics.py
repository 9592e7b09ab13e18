"""What a team sharing GPU hosts cares about, computed from a :class:`Schedule`.

All in trace seconds. The cluster's state is constant between two events (a
submit, a start, an end, a reservation's edge), so every figure is a sum over
those intervals:

- utilisation while work waits: busy GPU-seconds ÷ available GPU-seconds over
  the intervals when at least one job is queued; and over the whole run;
- idle-while-fitting GPU-seconds: free GPUs of a host, not held by a
  reservation (EASY's, or the GPUs jobqueue's scheduling pass keeps free for a
  reserved job), while a queued job would fit there (a work-conserving
  scheduler has none); and the same counting reserved GPUs as idle too;
- waits (submit → start) overall and by GPU count, completion time, bounded
  slowdown ``max(1, (wait + run) / max(run, 10 s))``;
- fairness under contention: at every instant a job is queued, each team's
  max-min fair share of the cluster's GPUs given its demand then (the GPUs of
  its running and queued jobs); each team's GPU time against the sum of those
  shares, the largest shortfall and Jain's index of the ratios; and the same per
  24-hour window of trace time (from time 0): the smallest ``actual / fair`` over
  the windows and the teams with demand there (a fair share of at least one
  GPU-hour in that window's contended time), and how many (window, team) pairs
  reach 90%;
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
#: Windows of the per-window fairness figure, and the fair share a team needs there
#: to count (GPU-seconds): a team that waited a moment has no share worth judging.
FAIR_WINDOW_S = 86_400.0
FAIR_WINDOW_MIN_GPU_S = 3_600.0
FAIR_TARGET = 0.9


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
    #: Per 24 h window: the smallest actual ÷ fair of a team with demand, where, and how
    #: many (window, team) pairs reached FAIR_TARGET of all that counted.
    window_min_ratio: float
    window_worst: tuple[int, str] | None  # (window from 0, team)
    windows_fair: tuple[int, int]  # (pairs at or above FAIR_TARGET, pairs)
    #: Idle-while-fitting counting reserved GPUs as idle too.
    idle_fitting_all_gpu_s: float
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
    window_ratios = {
        key: sweep.window_actual[key] / fair
        for key, fair in sweep.window_fair.items()
        if fair >= FAIR_WINDOW_MIN_GPU_S
    }
    worst: tuple[float, tuple[int, str] | None] = (float("nan"), None)
    if window_ratios:
        key = min(window_ratios, key=lambda k: (window_ratios[k], k))
        worst = (window_ratios[key], key)
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
        window_min_ratio=worst[0],
        window_worst=worst[1],
        windows_fair=(sum(1 for r in window_ratios.values() if r >= FAIR_TARGET - 1e-9),
                      len(window_ratios)),
        idle_fitting_all_gpu_s=sweep.idle_fitting_all,
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
    idle_fitting_all: float = 0.0
    window_fair: dict[tuple[int, str], float] = dataclasses.field(
        default_factory=lambda: defaultdict(float)
    )
    window_actual: dict[tuple[int, str], float] = dataclasses.field(
        default_factory=lambda: defaultdict(float)
    )
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
        windows = _windows(now, now + span)
        for t, fair in max_min_fair({t: d for t, d in demand.items() if d > 0},
                                    cluster.gpus).items():  # fmt: skip
            out.fair[t] += fair * span
            out.actual[t] += running_of[t] * span
            for w, part in windows:
                out.window_fair[(w, t)] += fair * part
                out.window_actual[(w, t)] += running_of[t] * part
        for h in range(cluster.hosts):
            free = cluster.gpus_per_host - busy[h]
            if free >= smallest:
                out.idle_fitting_all += free * span
            free -= max(reserved[h], 0)
            if free >= smallest:
                out.idle_fitting += free * span
    return out


def _windows(start: float, end: float) -> list[tuple[int, float]]:
    """[start, end) cut at the FAIR_WINDOW_S boundaries: (window, seconds in it)."""
    out = []
    w = int(start // FAIR_WINDOW_S)
    while start < end:
        edge = min(end, (w + 1) * FAIR_WINDOW_S)
        out.append((w, edge - start))
        start, w = edge, w + 1
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
