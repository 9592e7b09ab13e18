"""The lease sweep: running jobs whose worker stopped renewing come back.

Any worker or API process may run it, as often and as concurrently as it
likes: expired rows are locked with SKIP LOCKED, so each is handled once.
"""

from __future__ import annotations

from sqlalchemy import Engine

from jobqueue import sql
from jobqueue.outcomes import after_lease_expired
from jobqueue.records import Job
from jobqueue.transitions import apply_transition

SYSTEM_ACTOR = "system"


def sweep_expired_leases(engine: Engine, *, batch: int = 100) -> list[Job]:
    """Re-queue (or fail, or carry out the pending request of) every expired job.

    Returns the jobs as they are after the sweep.
    """
    swept: list[Job] = []
    while True:
        with engine.begin() as conn:
            rows = conn.execute(sql.EXPIRED_LEASES, {"batch": batch}).mappings().all()
            for job in (Job.from_row(r) for r in rows):
                swept.append(
                    apply_transition(conn, job, after_lease_expired(job), actor=SYSTEM_ACTOR)
                )
        if len(rows) < batch:
            return swept
