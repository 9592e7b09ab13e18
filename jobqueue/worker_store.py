"""The worker's side of the queue: claim, renew leases, report, finish, hand back.

Each write about a running job carries the lease token its claim returned, so
a worker that lost its lease (the sweep re-queued the job, another worker
claimed it) can never overwrite a newer attempt: such a write raises
:class:`LeaseLost` and changes nothing.

No transaction stays open while a job runs: each method here is one short
transaction of a few statements.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine

from jobqueue import claim_sql, sql
from jobqueue.errors import LeaseLost
from jobqueue.fit import Candidate, HostReservation, choose
from jobqueue.outcomes import (
    Exit,
    StopCause,
    Transition,
    after_exit,
    after_worker_restart,
    completion,
)
from jobqueue.records import Claimed, Job
from jobqueue.settings import Settings
from jobqueue.transitions import apply_fenced, apply_transition


@dataclasses.dataclass(frozen=True)
class WorkerIdentity:
    """What a worker advertises in its heartbeat row."""

    name: str
    pools: tuple[str, ...] = ("default",)
    kinds: tuple[str, ...] = ()
    gpu_ids: tuple[int, ...] = ()
    hostname: str = dataclasses.field(default_factory=socket.gethostname)

    @property
    def actor(self) -> str:
        return f"worker:{self.name}"


@dataclasses.dataclass(frozen=True)
class Renewal:
    """The outcome of renewing a worker's leases."""

    #: job id → the request waiting on it (None when there is none).
    held: dict[UUID, str | None]
    #: jobs whose request asks to kill without a grace period.
    kill_now: frozenset[UUID]
    #: jobs whose lease is gone: their processes must stop now.
    lost: frozenset[UUID]


@dataclasses.dataclass(frozen=True)
class Progress:
    fraction: float | None = None
    step: int | None = None
    message: str | None = None
    metrics: Mapping[str, Any] | None = None


class WorkerStore:
    """Everything a worker (or any in-process claimer) does with the database."""

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings

    # -- the worker's own row ---------------------------------------------------

    def heartbeat_worker(
        self,
        worker: WorkerIdentity,
        *,
        free_gpus: int,
        devices: Sequence[Mapping[str, Any]] = (),
        restarted: bool = False,
    ) -> None:
        """Register the worker or refresh its row; ``restarted`` resets its start time."""
        with self.engine.begin() as conn:
            conn.execute(
                sql.UPSERT_WORKER,
                {
                    "name": worker.name,
                    "hostname": worker.hostname,
                    "pools": list(worker.pools),
                    "kinds": list(worker.kinds),
                    "gpu_total": len(worker.gpu_ids),
                    "gpu_free": free_gpus,
                    "devices": json.dumps(list(devices)),
                    "restarted": restarted,
                },
            )

    def stop_worker(self, worker: WorkerIdentity) -> None:
        with self.engine.begin() as conn:
            conn.execute(sql.STOP_WORKER, {"name": worker.name})

    # -- claiming -------------------------------------------------------------------

    def claim(
        self, worker: WorkerIdentity, *, free_gpu_ids: Sequence[int], slots: int
    ) -> list[Claimed]:
        """Claim up to ``slots`` jobs that fit ``free_gpu_ids``, in queue order.

        One short transaction: lock candidates with SKIP LOCKED, choose what
        fits (the forced-job rule included), start the chosen ones. When other claimers
        hold some of the first candidates, a second read goes past them.
        """
        if slots <= 0 or not worker.kinds or not worker.pools:
            return []
        scan = max(4 * slots, 16)
        free = list(free_gpu_ids)
        params = {"pools": list(worker.pools), "kinds": list(worker.kinds), "scan": scan,
                  "per_team": slots, "free_gpus": len(free), "worker": worker.name}  # fmt: skip
        with self.engine.begin() as conn:
            rows = conn.execute(claim_sql.CLAIM_CANDIDATES, params).mappings().all()
            assignments = self._choose(conn, worker, rows, free, slots)
            skipped = min(rows[0]["read"], scan) - _locked(rows)
            if skipped > 0 and len(assignments) < slots:
                # Other claimers hold some of the first jobs: read past them (the rows
                # this claim already holds come back, still its own).
                rows = conn.execute(claim_sql.CLAIM_CANDIDATES_PAST_LOCKED, params).mappings().all()
                assignments = self._choose(conn, worker, rows, free, slots)
            if not assignments:
                return []
            started = conn.execute(
                claim_sql.CLAIM_JOBS,
                {
                    "assignments": json.dumps(
                        [{"id": str(job_id), "gpu_ids": ids} for job_id, ids in assignments]
                    ),
                    "worker": worker.name,
                    "actor": worker.actor,
                    "lease_seconds": self.settings.lease_seconds,
                },
            ).mappings()
            by_id = {row["id"]: Job.from_row(row) for row in started}
        # Keep claim order: the first job is the one the queue wanted first.
        return [Claimed(by_id[job_id]) for job_id, _ in assignments if job_id in by_id]

    @staticmethod
    def _choose(
        conn: Connection,
        worker: WorkerIdentity,
        rows: Sequence[Mapping[Any, Any]],
        free: list[int],
        slots: int,
    ) -> list[tuple[Hashable, list[int]]]:
        """What to start of the candidate rows of ``claim_sql.CLAIM_CANDIDATES``."""
        candidates = [
            Candidate(r["id"], r["gpus"], r["forced"], r["team"], r["pool"], r["limit_s"],
                      r["planned_now"])
            for r in rows if r["id"] is not None
        ]  # fmt: skip
        if not candidates:
            return []
        mine, elsewhere = _reservations(rows[0]["reservations"], worker)
        needs_gpus = any(c.gpus > 0 for c in candidates)
        return choose(
            candidates,
            free_gpu_ids=free,
            total_gpus=len(worker.gpu_ids),
            slots=slots,
            quota_left=_quota_left(conn, candidates, worker.pools) if needs_gpus else {},
            reservation=mine,
            reserved_elsewhere=elsewhere,
            now=rows[0]["db_now"],
        )

    # -- while running ----------------------------------------------------------------

    def renew(self, leases: Mapping[UUID, UUID]) -> Renewal:
        """Extend the leases (job id → token) this worker holds; report lost ones."""
        if not leases:
            return Renewal({}, frozenset(), frozenset())
        ids = list(leases)
        with self.engine.begin() as conn:
            rows = conn.execute(
                sql.RENEW_LEASES,
                {
                    "ids": ids,
                    "tokens": [leases[i] for i in ids],
                    "lease_seconds": self.settings.lease_seconds,
                },
            ).all()
        held = {r.id: r.requested_action for r in rows}
        kill = frozenset(r.id for r in rows if r.request_kill)
        return Renewal(held, kill, frozenset(set(ids) - set(held)))

    def report_progress(self, job_id: UUID, token: UUID, progress: Progress) -> None:
        body = {
            "fraction": progress.fraction,
            "step": progress.step,
            "message": progress.message,
            "metrics": dict(progress.metrics) if progress.metrics is not None else None,
        }
        points = 1 if progress.metrics else 0
        with self.engine.begin() as conn:
            newest = conn.execute(
                sql.UPDATE_PROGRESS,
                {"id": job_id, "token": token, "progress": json.dumps(body), "points": points},
            ).scalar_one_or_none()
            if newest is None:
                raise LeaseLost(job_id)
            if points:
                conn.execute(
                    sql.INSERT_METRICS,
                    {"id": job_id, "n": newest, "step": progress.step,
                     "metrics": json.dumps(body["metrics"])},
                )  # fmt: skip
                keep = self.settings.metrics_max_points
                # This job's own count: a DELETE only once its chart is full.
                if newest > keep:
                    conn.execute(sql.TRIM_METRICS, {"id": job_id, "newest": newest, "keep": keep})

    def report_checkpoint(self, job_id: UUID, token: UUID, uri: str, step: int | None) -> None:
        with self.engine.begin() as conn:
            updated = conn.execute(
                sql.UPDATE_CHECKPOINT, {"id": job_id, "token": token, "uri": uri, "step": step}
            ).first()
        if updated is None:
            raise LeaseLost(job_id)

    def append_logs(self, job_id: UUID, token: UUID, lines: Iterable[tuple[str, str]]) -> int:
        """Store (stream, text) lines; returns the number of the last one."""
        lines = list(lines)
        if not lines:
            return 0
        with self.engine.begin() as conn:
            numbers = (
                conn.execute(
                    sql.APPEND_LOGS,
                    {
                        "id": job_id,
                        "token": token,
                        "count": len(lines),
                        "streams": [s for s, _ in lines],
                        "texts": [t.replace("\x00", "\ufffd") for _, t in lines],
                    },
                )
                .scalars()
                .all()
            )
            if not numbers:
                raise LeaseLost(job_id)
            newest = max(numbers)
            keep = self.settings.log_max_lines
            if newest > keep:
                conn.execute(sql.TRIM_LOGS, {"id": job_id, "newest": newest, "keep": keep})
        return newest

    # -- ending -----------------------------------------------------------------------

    def finish(self, job_id: UUID, token: UUID, exit: Exit, *, actor: str) -> Job:
        """Record how the job's process ended; the rules of SPEC §2 decide the status.

        A clean exit 0 is the common case and needs nothing from the row, so it is one
        fenced UPDATE and its event; every other end reads the row under a lock first.
        """
        completed = completion(exit)
        if completed is not None:
            with self.engine.begin() as conn:
                return apply_fenced(conn, job_id, token, completed, actor=actor)
        return self._end(
            job_id,
            token,
            actor,
            lambda job: after_exit(job, exit, self.settings.retry_backoff_seconds),
        )

    def hand_back(self, job_id: UUID, token: UUID, *, actor: str) -> Job:
        """The worker stopped the job to shut down: it keeps its place and resumes later."""
        return self.finish(job_id, token, Exit(stopped_for=StopCause.SHUTDOWN), actor=actor)

    def _end(self, job_id: UUID, token: UUID, actor: str, decide) -> Job:
        with self.engine.begin() as conn:
            row = (
                conn.execute(sql.LOCK_LEASED_JOB, {"id": job_id, "token": token}).mappings().first()
            )
            if row is None:
                raise LeaseLost(job_id)
            job = Job.from_row(row)
            transition: Transition = decide(job)
            return apply_transition(conn, job, transition, actor=actor)

    def requeue_orphans(self, worker: WorkerIdentity, *, keep: Iterable[UUID] = ()) -> list[Job]:
        """Jobs a previous run of this worker left running: put them back (or carry out
        their requests) now instead of waiting for their leases to expire.

        Only call this once the previous run's processes are known to be gone.
        """
        with self.engine.begin() as conn:
            rows = (
                conn.execute(
                    sql.ORPHANED_JOBS, {"worker": worker.name, "keep": [str(k) for k in keep]}
                )
                .mappings()
                .all()
            )
            return [
                apply_transition(conn, job, after_worker_restart(job), actor=worker.actor)
                for job in (Job.from_row(r) for r in rows)
            ]


def _locked(rows: Sequence[Mapping[Any, Any]]) -> int:
    return sum(1 for r in rows if r["id"] is not None)


def _reservations(
    values: Sequence[Mapping[str, Any]] | None, worker: WorkerIdentity
) -> tuple[HostReservation | None, frozenset[UUID]]:
    """This host's reservation (if any) and the jobs reserved on other hosts, from the
    candidates' ``reservations`` column (``claim_sql.CLAIM_CANDIDATES``)."""
    mine: HostReservation | None = None
    elsewhere: set[UUID] = set()
    for r in values or ():
        job_id = UUID(r["job_id"])
        if r["worker_name"] == worker.name and mine is None:
            mine = HostReservation(job_id, r["starts_at"], int(r["extra_gpus"]))
        elif r["worker_name"] != worker.name:
            elsewhere.add(job_id)
    return mine, frozenset(elsewhere)


def _quota_left(
    conn: Connection, candidates: Sequence[Candidate], pools: Sequence[str]
) -> dict[tuple[str, str], int]:
    """Per (team, pool) with a quota, the GPUs the team may still take there.

    Locks the rows of those teams first (in name order), so that two hosts claiming
    for one team at the same instant count each other's claims: the second reads the
    running jobs after the first has committed.
    """
    teams = sorted({c.team for c in candidates if c.gpus > 0})
    if not teams:
        return {}
    quotas = {}
    for row in conn.execute(claim_sql.LOCK_QUOTA_TEAMS, {"teams": teams, "pools": list(pools)}):
        for pool, limit in row.quota_gpus.items():
            if limit is not None and pool in pools:
                quotas[(row.name, pool)] = int(limit)
    if not quotas:
        return {}
    held = {
        (r.team, r.pool): int(r.gpus)
        for r in conn.execute(
            claim_sql.TEAM_GPUS_RUNNING, {"teams": [t for t, _ in quotas], "pools": list(pools)}
        )
    }
    return {key: max(0, limit - held.get(key, 0)) for key, limit in quotas.items()}
