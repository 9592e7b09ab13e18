"""The scheduling pass's plan for one pool: reservations and expected start times.

Pure logic over numbers, so the rules read plainly and test without a database.
Times are seconds on the database clock (``now`` and every end time alike).

The plan walks the pool's queued jobs in claim order over a timeline of each host:
its running jobs hold their GPUs until their time limits end (for ever without a
limit), and each planned job holds its GPUs from its planned start for its own
limit. A job's expected start is the earliest moment a host has its GPUs free for
all of its limit (conservative backfill, as ``squeue --start`` estimates).

Reservations follow EASY backfill: the first job that cannot start now — and every
forced job that cannot — gets its host and start time; hosts then start other jobs
on those GPUs only if they end by then or fit in the GPUs left over (the claim's
rule, :func:`jobqueue.fit.choose`). Only these jobs are protected, so a job that
waits behind a stream of small ones reaches the head and is never passed for ever.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
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
    head_reserved = False
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
        start, timeline = min(((t.earliest(job.gpus, length, now), t) for t in able),
                              key=lambda pair: (pair[0], pair[1].host.name))  # fmt: skip
        if start <= now:
            timeline.hold(now, length, job.gpus)
            expected[job.id] = now
            if job.team in room:
                room[job.team] -= job.gpus
            continue
        protect = job.forced or not head_reserved
        if start < INFINITY:
            expected[job.id] = start
            timeline.hold(start, length, job.gpus)
            if protect and timeline.host.name not in reserved_hosts:
                extra = timeline.host.gpu_total - timeline.used_at(start)
                reservations.append(
                    Reservation(job.id, timeline.host.name, job.gpus, start, max(0, extra))
                )
                reserved_hosts.add(timeline.host.name)
                head_reserved = head_reserved or not job.forced
            continue
        expected[job.id] = None
        if protect:
            # No time can be given (jobs without limits hold the GPUs): keep the host
            # that has the most free now, and plan nothing more on it.
            open_hosts = [t for t in able if not t.closed and t.host.name not in reserved_hosts]
            if open_hosts:
                best = max(open_hosts, key=lambda t: t.host.gpu_total - t.used_at(now))
                reservations.append(Reservation(job.id, best.host.name, job.gpus, None, 0))
                reserved_hosts.add(best.host.name)
                best.closed = True
                head_reserved = head_reserved or not job.forced
    return PoolPlan(reservations, expected)
