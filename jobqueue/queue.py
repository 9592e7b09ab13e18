"""What people do with jobs: submit, look, and recover (SPEC §2, §3).

Every action reads the job under a row lock, asks :mod:`jobqueue.outcomes`
where it goes, and writes it with a compare-and-set UPDATE plus its event in
one short transaction. Actions on a running job become requests that the
job's worker carries out (a trigger NOTIFYs it).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine

from jobqueue import sql
from jobqueue.errors import IdempotencyConflict, InvalidTransition, JobNotFound, LeaseLost
from jobqueue.outcomes import Transition, for_action
from jobqueue.reads import Reads
from jobqueue.records import Job
from jobqueue.settings import Settings
from jobqueue.specs import JobSpec, config_json
from jobqueue.states import Action, Cause, JobStatus


class JobQueue(Reads):
    """The queue as people and their tools use it. Safe to share between threads."""

    def __init__(self, engine: Engine, settings: Settings):
        super().__init__(engine, settings)

    # -- submit ---------------------------------------------------------------

    def submit(self, spec: JobSpec, *, actor: str) -> tuple[Job, bool]:
        """Add a job; returns it and whether it was created (False: a repeated key)."""
        status = JobStatus.PENDING if spec.hold else JobStatus.QUEUED
        params = {
            "name": spec.name,
            "kind": spec.kind,
            "config": config_json(spec.config),
            "status": status.value,
            "pool": spec.pool,
            "gpus": spec.gpus,
            "priority": spec.priority,
            "not_before": spec.not_before,
            "max_attempts": spec.max_attempts,
            "max_interruptions": spec.max_interruptions,
            "idempotency_key": spec.idempotency_key,
            "request_fingerprint": spec.fingerprint() if spec.idempotency_key else None,
        }
        with self.engine.begin() as conn:
            row = conn.execute(sql.INSERT_JOB, params).mappings().first()
            if row is None:
                existing = (
                    conn.execute(sql.JOB_BY_IDEMPOTENCY_KEY, {"key": spec.idempotency_key})
                    .mappings()
                    .one()
                )
                job = Job.from_row(existing)
                if job.request_fingerprint != params["request_fingerprint"]:
                    raise IdempotencyConflict(spec.idempotency_key or "", job.id)
                return self._one_with_wait(conn, job), False
            job = Job.from_row(row)
            _record(conn, job.id, None, status, Cause.SUBMIT.value, actor, None)
            return self._one_with_wait(conn, job), True

    # -- actions --------------------------------------------------------------

    def release(self, job_id: UUID, *, actor: str) -> Job:
        return self._act(job_id, Action.RELEASE, actor=actor)[0]

    def force_start(self, job_id: UUID, *, actor: str) -> Job:
        return self._act(job_id, Action.FORCE_START, actor=actor)[0]

    def pause(self, job_id: UUID, *, actor: str, reason: str | None = None) -> tuple[Job, bool]:
        """Returns the job and whether it is a request a worker still has to carry out."""
        return self._act(job_id, Action.PAUSE, actor=actor, reason=reason)

    def resume(self, job_id: UUID, *, actor: str) -> Job:
        return self._act(job_id, Action.RESUME, actor=actor)[0]

    def cancel(
        self, job_id: UUID, *, actor: str, force: bool = False, reason: str | None = None
    ) -> tuple[Job, bool]:
        return self._act(job_id, Action.CANCEL, actor=actor, force=force, reason=reason)

    def mark_failed(self, job_id: UUID, *, actor: str, reason: str) -> tuple[Job, bool]:
        return self._act(job_id, Action.MARK_FAILED, actor=actor, reason=reason)

    def retry(self, job_id: UUID, *, actor: str, from_checkpoint: bool = True) -> Job:
        return self._act(job_id, Action.RETRY, actor=actor, from_checkpoint=from_checkpoint)[0]

    def patch(
        self, job_id: UUID, *, actor: str, priority: int | None = None, pool: str | None = None
    ) -> Job:
        changes: dict[str, Any] = {}
        if priority is not None:
            changes["priority"] = priority
        if pool is not None:
            changes["pool"] = pool
        return self._act(job_id, Action.PATCH, actor=actor, changes=changes)[0]

    def _act(self, job_id: UUID, action: Action, *, actor: str, **options: Any) -> tuple[Job, bool]:
        with self.engine.begin() as conn:
            row = conn.execute(sql.LOCK_JOB, {"id": job_id}).mappings().first()
            if row is None:
                raise JobNotFound(job_id)
            job = Job.from_row(row)
            transition = for_action(
                job, action, actor=actor, lease_valid=bool(row["lease_valid"]), **options
            )
            updated = apply_transition(conn, job, transition, actor=actor)
            return self._one_with_wait(conn, updated), transition.is_request


def apply_transition(conn: Connection, job: Job, transition: Transition, *, actor: str) -> Job:
    """Write a transition with a compare-and-set on the status, and its event.

    The caller holds the row lock, so the guard only fails if that contract is
    broken; it still raises rather than writing over a change it did not see, and
    says what the status is now.
    """
    row = _write(conn, job.id, job.status, transition, actor=actor, lease_token=None)
    if row is None:
        now = conn.execute(sql.JOB_BY_ID, {"id": job.id}).mappings().first()
        if now is None:
            raise JobNotFound(job.id)
        raise InvalidTransition(job.id, str(now["status"]), transition.action)
    return row


def apply_fenced(
    conn: Connection, job_id: UUID, lease_token: UUID, transition: Transition, *, actor: str
) -> Job:
    """Write a running job's transition that does not depend on the row, without reading
    it first: the UPDATE itself checks the status and the lease token."""
    row = _write(conn, job_id, JobStatus.RUNNING, transition, actor=actor, lease_token=lease_token)
    if row is None:
        raise LeaseLost(job_id)
    return row


def _write(
    conn: Connection,
    job_id: UUID,
    from_status: JobStatus,
    transition: Transition,
    *,
    actor: str,
    lease_token: UUID | None,
) -> Job | None:
    leaves_running = (
        from_status is JobStatus.RUNNING and transition.to_status is not JobStatus.RUNNING
    )
    statement, params = sql.transition_update(
        job_id,
        from_status,
        transition.to_status,
        transition.values,
        capture_log_tail=leaves_running,
        lease_token=lease_token,
    )
    row = conn.execute(statement, params).mappings().first()
    if row is None:
        return None
    _record(
        conn, job_id, from_status, transition.to_status, transition.action, actor, transition.reason
    )
    return Job.from_row(row)


def _record(
    conn: Connection,
    job_id: UUID,
    from_status: JobStatus | None,
    to_status: JobStatus,
    action: str,
    actor: str,
    reason: str | None,
) -> None:
    conn.execute(
        sql.INSERT_EVENT,
        {
            "job_id": job_id,
            "from_status": from_status.value if from_status else None,
            "to_status": to_status.value,
            "action": action,
            "actor": actor,
            "reason": reason,
        },
    )
