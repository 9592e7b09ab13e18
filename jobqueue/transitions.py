"""The write path: every change of a job's row goes through here.

A transition (decided by the pure rules of :mod:`jobqueue.outcomes`) is written
with a compare-and-set UPDATE, guarded by the status the caller saw and, for a
worker's writes, by its lease token; its event goes in the same transaction.
People's actions (:mod:`jobqueue.queue`), the worker's store
(:mod:`jobqueue.worker_store`) and the lease sweep (:mod:`jobqueue.sweeper`) all
write through these functions, so none of them can change a job another way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import Connection

from jobqueue import built_sql, sql
from jobqueue.errors import InvalidTransition, JobNotFound, LeaseLost
from jobqueue.outcomes import Transition
from jobqueue.records import Job
from jobqueue.states import JobStatus


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
    statement, params = built_sql.transition_update(
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
    record_event(
        conn, job_id, from_status, transition.to_status, transition.action, actor, transition.reason
    )
    return Job.from_row(row)


def apply_many(
    conn: Connection, changes: Sequence[tuple[Job, Transition]], *, actor: str
) -> list[tuple[UUID, JobStatus]]:
    """Write many jobs' transitions (a bulk action), each under the row lock the caller
    holds: one compare-and-set UPDATE with its events per kind of transition (the same
    statuses, values and event). Returns the id and new status of each job written, in
    no order."""
    groups: dict[tuple, list[tuple[Job, Transition]]] = defaultdict(list)
    for job, transition in changes:
        values = tuple(sorted((k, repr(v)) for k, v in transition.values.items()))
        key = (job.status, transition.to_status, values, transition.action, transition.reason)
        groups[key].append((job, transition))
    written: list[tuple[UUID, JobStatus]] = []
    for (from_status, to_status, _, action, reason), members in groups.items():
        leaves_running = from_status is JobStatus.RUNNING and to_status is not JobStatus.RUNNING
        statement, params = built_sql.transition_update_many(
            [job.id for job, _ in members],
            from_status,
            to_status,
            members[0][1].values,
            capture_log_tail=leaves_running,
            action=action,
            actor=actor,
            reason=reason,
        )
        written.extend((row.id, to_status) for row in conn.execute(statement, params))
    return written


def record_event(
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
