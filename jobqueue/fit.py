"""Which claimable jobs a worker starts, on which of its free GPUs.

Pure logic, so the rules are easy to read and test: walk the candidates in
claim order and start each that fits, with three exceptions.

- A team at its GPU quota in a pool starts nothing more there that needs GPUs.
- A host holding a reservation (EASY backfill, :mod:`jobqueue.plan`) starts another
  job on GPUs only if the job's time limit ends by the reservation's start, or the
  job fits in the GPUs the reserved job leaves over at that time, or the scheduling
  pass itself planned the job to start by now (its plan already kept the reservation;
  the claim reads the clock later than the pass did, so the pass's own "now + limit"
  would fail by the milliseconds between them). A job without a limit never
  backfills onto reserved GPUs unless planned so.
- A forced job that this worker could host and that has no reservation yet (the
  scheduling pass has not seen it) holds back every other job needing GPUs here,
  so that force-start takes effect at once (SPEC §2, "Queue order").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Hashable, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Candidate:
    id: Hashable
    gpus: int
    forced: bool
    team: str = "default"
    pool: str = "default"
    #: Its time limit in seconds; None: none.
    limit_s: float | None = None
    #: The scheduling pass planned it to start by now (``expected_start_at <= now()``).
    planned_now: bool = False


@dataclasses.dataclass(frozen=True)
class HostReservation:
    """The reservation this host holds, as the claim reads it."""

    job_id: Hashable
    #: When the reserved job is to start (database clock, seconds); None: unknown.
    starts_at: float | None
    #: GPUs anyone may take without delaying it.
    extra_gpus: int


def ends_before(limit_s: float | None, starts_at: float | None, now: float) -> bool:
    """Whether a job started ``now`` with limit ``limit_s`` ends by a reservation's start:
    the test that lets it onto reserved GPUs (else only the extra GPUs may take it)."""
    return starts_at is not None and limit_s is not None and now + limit_s <= starts_at


def choose(
    candidates: Sequence[Candidate],
    *,
    free_gpu_ids: Sequence[int],
    total_gpus: int,
    slots: int,
    quota_left: Mapping[tuple[str, str], int] | None = None,
    reservation: HostReservation | None = None,
    reserved_elsewhere: Collection[Hashable] = (),
    now: float = 0.0,
) -> list[tuple[Hashable, list[int]]]:
    """Returns (job id, GPU ids) for each job to start, in claim order.

    ``quota_left`` is, per (team, pool) that has a quota, how many more GPUs the
    team may take there; a job that would go over it is passed by. ``reservation``
    is this host's (if any), ``reserved_elsewhere`` the jobs whose reservation is on
    another host (one that fits here starts here all the same; one that does not holds
    nothing back here, forced or not), and
    ``now`` the database clock the reservation's time compares with.
    """
    free = list(free_gpu_ids)
    room = dict(quota_left or {})
    extra = reservation.extra_gpus if reservation is not None else 0
    chosen: list[tuple[Hashable, list[int]]] = []
    held_for_forced = False
    for job in candidates:
        if len(chosen) >= slots:
            break
        if job.gpus == 0:
            chosen.append((job.id, []))
            continue
        key = (job.team, job.pool)
        if key in room and job.gpus > room[key]:
            continue  # its team is at its quota here, forced or not
        if held_for_forced:
            continue
        if job.gpus > len(free):
            planned = job.id in reserved_elsewhere or (
                reservation is not None and reservation.job_id == job.id
            )
            if job.forced and job.gpus <= total_gpus and not planned:
                held_for_forced = True
            continue
        keeps_reservation = (
            reservation is None
            or job.id == reservation.job_id
            or job.planned_now
            or ends_before(job.limit_s, reservation.starts_at, now)
        )
        if not keeps_reservation:
            if job.gpus > extra:
                continue  # it would delay the reserved job
            extra -= job.gpus  # it runs on the GPUs the reserved job leaves over
        chosen.append((job.id, free[: job.gpus]))
        free = free[job.gpus :]
        if key in room:
            room[key] -= job.gpus
    return chosen
