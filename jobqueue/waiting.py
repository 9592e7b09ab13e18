"""Why a job waits, in a short sentence for people (SPEC §2, "Why it waits")."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from jobqueue.records import Job
from jobqueue.states import JobStatus


class Capacity(Protocol):
    """What a waiting reason reads of a live worker (a ``WorkerInfo`` has it too)."""

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

    @classmethod
    def many(cls, values: Sequence[Mapping[str, Any]] | None) -> list[LiveWorker]:
        return [cls(**value) for value in values or ()]


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
    position: int | None


def waiting_reason(
    job: Job,
    *,
    now: datetime,
    position: int | None,
    pool_queue: Sequence[QueueEntry],
    workers: Sequence[Capacity],
) -> str | None:
    """The sentence for a pending or queued job; None for any other status.

    ``pool_queue`` is the job's pool in claim order and ``workers`` the live
    workers; the first obstacle found, in the order a person would check, wins.
    """
    if job.status is JobStatus.PENDING:
        return "held: release or force-start it to queue it"
    if job.status is not JobStatus.QUEUED:
        return None
    if job.not_before is not None and job.not_before > now:
        return f"not before {job.not_before.isoformat()}"
    in_pool = [w for w in workers if job.pool in w.pools]
    knowing = [w for w in in_pool if job.kind in w.kinds]
    if not knowing:
        return f"no live worker in pool {job.pool} knows kind {job.kind}"
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
    ahead = (position or 1) - 1
    if ahead == 0:
        return "next in line: a worker will claim it shortly"
    return f"behind {ahead} job{'s' if ahead != 1 else ''}"
