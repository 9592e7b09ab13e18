"""Which claimable jobs a worker starts, on which of its free GPUs.

Pure logic, so the rules are easy to read and test: walk the candidates in
claim order, start each that fits, let smaller jobs start around a job that
does not fit yet (best effort) — except around a forced job: while a forced
job that this worker could host waits for GPUs, nothing else starts on GPUs
(SPEC §2, "Queue order"). A team at its GPU quota in a pool starts nothing
more there that needs GPUs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from uuid import UUID


@dataclasses.dataclass(frozen=True)
class Candidate:
    id: UUID
    gpus: int
    forced: bool
    team: str = "default"
    pool: str = "default"


def choose(
    candidates: Sequence[Candidate],
    *,
    free_gpu_ids: Sequence[int],
    total_gpus: int,
    slots: int,
    quota_left: Mapping[tuple[str, str], int] | None = None,
) -> list[tuple[UUID, list[int]]]:
    """Returns (job id, GPU ids) for each job to start, in claim order.

    ``quota_left`` is, per (team, pool) that has a quota, how many more GPUs the
    team may take there; a job that would go over it is passed by.
    """
    free = list(free_gpu_ids)
    room = dict(quota_left or {})
    chosen: list[tuple[UUID, list[int]]] = []
    gpus_reserved = False
    for job in candidates:
        if len(chosen) >= slots:
            break
        if job.gpus == 0:
            chosen.append((job.id, []))
            continue
        key = (job.team, job.pool)
        if key in room and job.gpus > room[key]:
            continue  # its team is at its quota here, forced or not
        if gpus_reserved:
            continue
        if job.gpus <= len(free):
            chosen.append((job.id, free[: job.gpus]))
            free = free[job.gpus :]
            if key in room:
                room[key] -= job.gpus
        elif job.forced and job.gpus <= total_gpus:
            gpus_reserved = True
    return chosen
