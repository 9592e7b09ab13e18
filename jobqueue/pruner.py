"""Pruning: finished jobs older than a configurable age go, with their history."""

from __future__ import annotations

import logging

from sqlalchemy import Engine, text

from jobqueue import sql

log = logging.getLogger(__name__)

#: The session advisory lock that lets one process at a time prune on schedule.
PRUNE_LOCK_KEY = 0x6A6F627072756E65  # "jobprune"


def prune_finished(engine: Engine, *, older_than_seconds: float, batch: int = 1000) -> int:
    """Delete finished jobs (and by cascade their events, logs and metrics).

    Works in batches of ``batch`` jobs, one transaction each, so a large
    backlog never holds one long transaction or many locks. Returns how many
    jobs were deleted. Long-silent workers go too.
    """
    deleted = 0
    while True:
        with engine.begin() as conn:
            count = conn.execute(
                sql.PRUNE_FINISHED, {"age_seconds": older_than_seconds, "batch": batch}
            ).rowcount
        deleted += count
        if count < batch:
            break
    with engine.begin() as conn:
        conn.execute(sql.PRUNE_WORKERS, {"age_seconds": older_than_seconds})
    return deleted


def scheduled_prune(engine: Engine, *, older_than_days: float, batch: int = 1000) -> int | None:
    """One scheduled run: prune unless another process is pruning right now.

    Every API process runs this on a timer; a session advisory lock makes the
    others skip while one works, so the batches are not fought over. Returns
    the number deleted, or None when another process held the lock.
    """
    with engine.connect() as conn:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": PRUNE_LOCK_KEY})
        conn.commit()
        if not got.scalar_one():
            return None
        try:
            deleted = prune_finished(
                engine, older_than_seconds=older_than_days * 86400, batch=batch
            )
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PRUNE_LOCK_KEY})
            conn.commit()
    if deleted:
        log.info("pruned %d finished jobs older than %g days", deleted, older_than_days)
    return deleted
