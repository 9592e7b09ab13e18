"""The scheduling pass's plan for one pool: reservations and expected start times.

Pure logic over numbers, so the rules read plainly and test without a database.
Times are seconds on the database clock (``now`` and every end time alike).

The plan walks the pool's queued jobs in claim order over a timeline of each host:
its running jobs hold their GPUs until their time limits end (for ever without a
limit), and each planned job holds its GPUs from its planned start for its own
limit. A job's expected start is the earliest moment a host has its GPUs free for
all of its limit (conservative backfill, as ``squeue --start`` estimates).

Reservations follow EASY backfill: the first job that cannot start now — and every
forced job that cannot, and the pool's longest-waiting job if it cannot — gets its
host and start time; hosts then start other jobs
on those GPUs only if they end by then or fit in the GPUs left over (the claim's
rule, :func:`jobqueue.fit.choose`). Only these jobs are protected; protecting the
longest-waiting one too means that a job fair share keeps behind other teams' jobs
(a big job of a busy team) still gets its GPUs in time: no job waits for ever.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence
from uuid import UUID

INFINITY = math.inf


@dataclasses.dataclass(frozen=True)
class Host:
    """A live worker of the pool as the plan sees it."""

    name: str
    gpu_total: int
    kinds: frozenset[str]
    #: (GPUs, end time by its limit; INFINITY without one) of each running job.
    running: tuple[tuple[int, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class Waiting:
    """A claimable queued job, in claim order."""

    id: UUID
    gpus: int
    kind: str
    forced: bool
    #: Its time limit in seconds; None: none.
    limit_s: float | None
    team: str = "default"
    priority: int = 50
    #: When it was queued (its place in the queue), database clock.
    queued_at: float = 0.0


@dataclasses.dataclass(frozen=True)
class Running:
    """A running job as preemption weighs it."""

    id: UUID
    worker_name: str
    gpus: int
    team: str
    priority: int
    forced: bool
    preemptible: bool
    started_at: float
    #: Its last checkpoint (or its start): the work a stop now would lose begins here.
    work_since: float
    #: It already carries a request (it is being stopped).
    stopping: bool = False


@dataclasses.dataclass(frozen=True)
class Reservation:
    job_id: UUID
    worker_name: str
    gpus: int
    #: When the host has the job's GPUs free by the running jobs' limits; None: unknown.
    starts_at: float | None
    #: GPUs of the host beyond the job's need at ``starts_at``.
    extra_gpus: int


@dataclasses.dataclass(frozen=True)
class PoolPlan:
    reservations: list[Reservation]
    #: Expected start per planned job; None where no time can be given.
    expected_start: dict[UUID, float | None]
    #: The host each job with a known start is planned on (GPU jobs only).
    expected_host: dict[UUID, str] = dataclasses.field(default_factory=dict)


class _Timeline:
    """One host's GPUs over time: intervals [start, end) of GPUs held."""

    def __init__(self, host: Host, now: float):
        self.host = host
        self.held: list[tuple[float, float, int]] = [(now, end, g) for g, end in host.running]
        #: Set when a reservation of unknown start holds the host: nothing more is planned.
        self.closed = False

    def used_at(self, t: float) -> int:
        return sum(g for start, end, g in self.held if start <= t < end)

    def free_over(self, start: float, end: float) -> int:
        """GPUs free throughout [start, end)."""
        points = [start] + [s for s, _, _ in self.held if start < s < end]
        return self.host.gpu_total - max(self.used_at(t) for t in points)

    def earliest(self, gpus: int, length: float, now: float) -> float:
        """The first time from ``now`` with ``gpus`` free for ``length``; INFINITY if none."""
        if self.closed or gpus > self.host.gpu_total:
            return INFINITY
        times = sorted({now} | {end for _, end, _ in self.held if now < end < INFINITY})
        for t in times:
            if self.free_over(t, t + length if length < INFINITY else INFINITY) >= gpus:
                return t
        return INFINITY

    def hold(self, start: float, length: float, gpus: int) -> None:
        self.held.append((start, start + length, gpus))


def _oldest(queue: Sequence[Waiting], room: Mapping[str, int]) -> UUID | None:
    """The longest-waiting job that needs GPUs and is not held back by its team's quota."""
    waiting = [j for j in queue if j.gpus > 0 and not (j.team in room and j.gpus > room[j.team])]
    return min(waiting, key=lambda j: (j.queued_at, str(j.id))).id if waiting else None


def _earliest(
    timelines: Sequence[_Timeline], gpus: int, length: float, now: float
) -> tuple[float, _Timeline]:
    """The earliest start for ``gpus`` GPUs over ``length`` and its host (by name on a tie)."""
    return min(
        ((t.earliest(gpus, length, now), t) for t in timelines),
        key=lambda pair: (pair[0], pair[1].host.name),
    )


def plan_pool(
    hosts: Sequence[Host],
    queue: Sequence[Waiting],
    *,
    now: float,
    quota_left: Mapping[str, int] | None = None,
) -> PoolPlan:
    """Plan ``queue`` (claim order, already cut to the planning depth) onto ``hosts``.

    ``quota_left`` is, per team with a quota in this pool, the GPUs it may still take:
    a job over it is not planned (it waits for its own team, not for GPUs).
    """
    timelines = [_Timeline(h, now) for h in sorted(hosts, key=lambda h: h.name)]
    room = dict(quota_left or {})
    reservations: list[Reservation] = []
    reserved_hosts: set[str] = set()
    expected: dict[UUID, float | None] = {}
    on_host: dict[UUID, str] = {}
    head_reserved = False
    oldest = _oldest(queue, room)
    for job in queue:
        able = [t for t in timelines if job.kind in t.host.kinds and job.gpus <= t.host.gpu_total]
        if not able:
            expected[job.id] = None
            continue
        if job.gpus == 0:
            expected[job.id] = now
            continue
        if job.team in room and job.gpus > room[job.team]:
            expected[job.id] = None  # waits for its team's own jobs to end
            continue
        length = job.limit_s if job.limit_s is not None else INFINITY
        start, timeline = _earliest(able, job.gpus, length, now)
        if start <= now:
            timeline.hold(now, length, job.gpus)
            expected[job.id] = now
            on_host[job.id] = timeline.host.name
            if job.team in room:
                room[job.team] -= job.gpus
            continue
        protect = job.forced or not head_reserved or job.id == oldest
        unreserved = [t for t in able if t.host.name not in reserved_hosts]
        if protect and unreserved:
            # A host keeps one reservation: this job's is the earliest of the others.
            start, timeline = _earliest(unreserved, job.gpus, length, now)
            if start == INFINITY:
                # No time can be given (jobs without limits hold the GPUs): keep the
                # host with the most free now, and plan nothing more on it.
                timeline = max(unreserved, key=lambda t: t.host.gpu_total - t.used_at(now))
                timeline.closed = True
                reservations.append(Reservation(job.id, timeline.host.name, job.gpus, None, 0))
            else:
                extra = timeline.host.gpu_total - job.gpus - timeline.used_at(start)
                reservations.append(
                    Reservation(job.id, timeline.host.name, job.gpus, start, max(0, extra))
                )
            reserved_hosts.add(timeline.host.name)
            head_reserved = head_reserved or not job.forced
        if start < INFINITY:
            timeline.hold(start, length, job.gpus)
            expected[job.id] = start
            on_host[job.id] = timeline.host.name
        else:
            expected[job.id] = None
    return PoolPlan(reservations, expected, on_host)


def choose_victims(
    preemptor: Waiting,
    hosts: Sequence[Host],
    running: Sequence[Running],
    *,
    now: float,
    min_runtime_s: float,
    above_share: Collection[str],
) -> tuple[str, list[UUID]] | None:
    """The host and the running jobs to preempt so that ``preemptor`` can start, or None.

    A victim is preemptible, not forced, not already stopping, has run for at least
    ``min_runtime_s`` (against thrashing), and is of a team in ``above_share`` or of
    lower priority than the preemptor. On each host able to run the preemptor, victims
    are taken fewest GPUs first, then least work lost (time since their last
    checkpoint); the host that loses the fewest GPUs, then the least work, wins.
    """
    best: tuple[int, float, str, list[UUID]] | None = None
    for h in sorted(hosts, key=lambda h: h.name):
        if preemptor.kind not in h.kinds or preemptor.gpus > h.gpu_total:
            continue
        on_host = [r for r in running if r.worker_name == h.name]
        need = preemptor.gpus - (h.gpu_total - sum(r.gpus for r in on_host))
        if need <= 0:
            return None  # it fits already: nothing to preempt
        eligible = sorted(
            (
                r
                for r in on_host
                if r.preemptible
                and not r.forced
                and not r.stopping
                and now - r.started_at >= min_runtime_s
                and (r.team in above_share or r.priority < preemptor.priority)
            ),
            key=lambda r: (r.gpus, now - r.work_since, str(r.id)),
        )
        taken: list[Running] = []
        for victim in eligible:
            if sum(r.gpus for r in taken) >= need:
                break
            taken.append(victim)
        freed = sum(r.gpus for r in taken)
        if freed < need:
            continue
        lost = sum(now - r.work_since for r in taken)
        if best is None or (freed, lost, h.name) < best[:3]:
            best = (freed, lost, h.name, [r.id for r in taken])
    return None if best is None else (best[2], best[3])
