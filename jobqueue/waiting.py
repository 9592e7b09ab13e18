"""Why a job waits, in a short sentence for people (SPEC §2, "Why it waits")."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from jobqueue.fit import ends_before
from jobqueue.records import Job
from jobqueue.states import JobStatus


class Capacity(Protocol):
    """What a waiting reason reads of a live worker (a ``WorkerInfo`` has it too)."""

    @property
    def name(self) -> str: ...
    @property
    def pools(self) -> Sequence[str]: ...
    @property
    def kinds(self) -> Sequence[str]: ...
    @property
    def gpu_total(self) -> int: ...
    @property
    def gpu_free(self) -> int: ...


@dataclasses.dataclass(frozen=True)
class LiveWorker:
    """A live worker's capacity, as ``sql.WAIT_CONTEXT`` gives it."""

    pools: list[str]
    kinds: list[str]
    gpu_total: int
    gpu_free: int
    name: str = ""

    @classmethod
    def many(cls, values: Sequence[Mapping[str, Any]] | None) -> list[LiveWorker]:
        return [cls(**value) for value in values or ()]


@dataclasses.dataclass(frozen=True)
class HeldFor:
    """A reservation as waiting reasons show it."""

    job_id: UUID
    job_name: str
    pool: str
    worker_name: str
    starts_at: datetime | None
    extra_gpus: int


@dataclasses.dataclass(frozen=True)
class Scheduling:
    """What the scheduler holds that explains waits (``sql._SCHEDULING_JSON``)."""

    reservations: list[HeldFor] = dataclasses.field(default_factory=list)
    #: team → (its part of recent GPU usage, its part of the shares).
    standings: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    #: (team, pool) → (quota, GPUs its running jobs hold there).
    quotas: dict[tuple[str, str], tuple[int, int]] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, value: Mapping[str, Any] | None) -> Scheduling:
        if not value:
            return cls()
        return cls(
            reservations=[
                HeldFor(
                    job_id=UUID(r["job_id"]),
                    job_name=r["job_name"],
                    pool=r["pool"],
                    worker_name=r["worker_name"],
                    starts_at=datetime.fromisoformat(r["starts_at"]) if r["starts_at"] else None,
                    extra_gpus=r["extra_gpus"],
                )
                for r in value.get("reservations") or ()
            ],
            standings={
                team: (float(v["usage_fraction"]), float(v["share_fraction"]))
                for team, v in (value.get("standings") or {}).items()
            },
            quotas={
                (q["team"], q["pool"]): (int(q["quota"]), int(q["held"]))
                for q in value.get("quotas") or ()
            },
        )


@dataclasses.dataclass(frozen=True)
class Place:
    """Where a claimable queued job stands in its pool's claim order.

    Exact near the head: the jobs ahead are counted up to ``exact_positions`` and no
    further, so that reading a job far back costs no more than reading the first. Past
    that range only an estimate is known (from the scheduling pass's queue marks; None
    when the pass has not marked the queue).
    """

    #: The exact 1-based position; None past the exact range.
    position: int | None
    #: The exact position when known, else the estimate (None: unknown).
    estimate: int | None
    #: Past the exact range: its size (the job has more than this many jobs ahead).
    beyond: int | None = None

    @classmethod
    def exact(cls, position: int) -> Place:
        return cls(position, position)

    @classmethod
    def of(
        cls, ahead: int | None, ahead_estimate: int | None, exact_positions: int
    ) -> Place | None:
        """From the jobs counted ahead (up to ``exact_positions``) and the marks' estimate;
        None for a job that cannot be claimed now (no count)."""
        if ahead is None:
            return None
        if ahead < exact_positions:
            return cls.exact(ahead + 1)
        if ahead_estimate is None:
            return cls(None, None, exact_positions)
        return cls(None, max(ahead_estimate, exact_positions) + 1, exact_positions)


@dataclasses.dataclass(frozen=True)
class QueueEntry:
    """A claimable queued job and its rank in its pool's claim order."""

    id: UUID
    name: str
    pool: str
    kind: str
    gpus: int
    priority: int
    forced: bool
    #: None for rows read only for what they hold back (see sql.QUEUE_ORDER_OF).
    place: Place | None

    @property
    def position(self) -> int | None:
        return None if self.place is None else self.place.position


def waiting_reason(
    job: Job,
    *,
    now: datetime,
    place: Place | None,
    pool_queue: Sequence[QueueEntry],
    workers: Sequence[Capacity],
    scheduling: Scheduling | None = None,
) -> str | None:
    """The sentence for a pending or queued job; None for any other status.

    ``pool_queue`` is the job's pool in claim order, ``workers`` the live workers and
    ``scheduling`` the reservations, standings and quotas; the first obstacle found,
    in the order a person would check, wins.
    """
    scheduling = scheduling or Scheduling()
    if job.status is JobStatus.PENDING:
        return "held: release or force-start it to queue it"
    if job.status is not JobStatus.QUEUED:
        return None
    if job.not_before is not None and job.not_before > now:
        return f"not before {job.not_before.isoformat()}"
    if job.sweep_held:
        return (
            "its sweep runs as many jobs as its max_running allows: it joins the queue "
            "when one of them ends"
        )
    in_pool = [w for w in workers if job.pool in w.pools]
    knowing = [w for w in in_pool if job.kind in w.kinds]
    if not knowing:
        return f"no live worker in pool {job.pool} knows kind {job.kind}"
    quota = scheduling.quotas.get((job.team, job.pool))
    if quota is not None and job.gpus > 0 and job.gpus > quota[0] - quota[1]:
        return f"team {job.team} is at its quota of {quota[0]} GPUs in pool {job.pool}"
    largest_free = max(w.gpu_free for w in knowing)
    if job.gpus > largest_free:
        largest_total = max(w.gpu_total for w in knowing)
        if job.gpus > largest_total:
            return (
                f"needs {job.gpus} GPUs, the largest worker in pool {job.pool} has {largest_total}"
            )
        return f"needs {job.gpus} GPUs, the largest free block in pool {job.pool} is {largest_free}"
    if not job.forced and job.gpus > 0:
        # Only a forced job that needs GPUs a worker able to run this job could give it
        # holds this job back (fit.choose): 0-GPU jobs, and jobs behind a forced job
        # bigger than every such worker, still start.
        forced_ahead = next(
            (
                e
                for e in pool_queue
                if e.forced
                and e.id != job.id
                and e.gpus > 0
                and any(e.kind in w.kinds and e.gpus <= w.gpu_total for w in knowing)
            ),
            None,
        )
        if forced_ahead is not None:
            return f"behind forced job {forced_ahead.name} ({forced_ahead.id})"
    held = _held_back_by_reservation(job, knowing, scheduling.reservations, now)
    if held is not None:
        return held
    behind = _behind(place)
    standing = scheduling.standings.get(job.team)
    if behind is not None and standing is not None and standing[0] > standing[1]:
        return (
            f"team {job.team} used {standing[0]:.0%} of recent GPU time for a "
            f"{standing[1]:.0%} share: {behind}"
        )
    if behind is None:
        return "next in line: a worker will claim it shortly"
    return behind


def _behind(place: Place | None) -> str | None:
    """ "behind N jobs" (exact), "behind about N jobs" (estimated) or "behind more than
    N jobs" (past the exact range, no estimate); None for the first in line."""
    if place is None or place.position == 1:
        return None
    if place.position is not None:
        ahead = place.position - 1
        return f"behind {ahead} job{'s' if ahead != 1 else ''}"
    if place.estimate is not None:
        return f"behind about {place.estimate - 1:,} jobs"
    return f"behind more than {place.beyond:,} jobs"


def _held_back_by_reservation(
    job: Job, knowing: Sequence[Capacity], reservations: Sequence[HeldFor], now: datetime
) -> str | None:
    """The sentence when every live worker with room for ``job`` keeps that room for a
    reserved job that ``job`` would delay (the claim's rule, :func:`jobqueue.fit.choose`)."""
    if job.gpus == 0:
        return None
    by_worker = {r.worker_name: r for r in reservations if r.pool == job.pool}
    roomy = [w for w in knowing if w.gpu_free >= job.gpus]
    blocking: list[HeldFor] = []
    for w in roomy:
        r = by_worker.get(w.name)
        if r is None or r.job_id == job.id:
            return None
        starts_at = (r.starts_at - now).total_seconds() if r.starts_at else None
        if ends_before(job.max_runtime_seconds, starts_at, 0.0) or job.gpus <= r.extra_gpus:
            return None
        blocking.append(r)
    if not blocking:
        return None
    r = blocking[0]
    when = (
        f" from {r.starts_at.isoformat(timespec='minutes')}"
        if r.starts_at
        else " until its GPUs free up"
    )
    why = "it has no time limit" if job.max_runtime_seconds is None else "its time limit ends later"
    return f"the free GPUs of host {r.worker_name} are reserved for job {r.job_name}{when} ({why})"
