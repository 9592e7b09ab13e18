"""Which claimable jobs a worker starts, on which of its free GPUs.

Pure logic, so the rules are easy to read and test: walk the candidates in
claim order, start each that fits, let smaller jobs start around a job that
does not fit yet (best effort) — except around a forced job: while a forced
job that this worker could host waits for GPUs, nothing else starts on GPUs
(SPEC §2, "Queue order").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from uuid import UUID


@dataclasses.dataclass(frozen=True)
class Candidate:
    id: UUID
    gpus: int
    forced: bool


def choose(
    candidates: Sequence[Candidate],
    *,
    free_gpu_ids: Sequence[int],
    total_gpus: int,
    slots: int,
) -> list[tuple[UUID, list[int]]]:
    """Returns (job id, GPU ids) for each job to start, in claim order."""
    free = list(free_gpu_ids)
    chosen: list[tuple[UUID, list[int]]] = []
    gpus_reserved = False
    for job in candidates:
        if len(chosen) >= slots:
            break
        if job.gpus == 0:
            chosen.append((job.id, []))
            continue
        if gpus_reserved:
            continue
        if job.gpus <= len(free):
            chosen.append((job.id, free[: job.gpus]))
            free = free[job.gpus :]
        elif job.forced and job.gpus <= total_gpus:
            gpus_reserved = True
    return chosen
