"""Pruning: finished jobs older than a configurable age go, with their history."""

from __future__ import annotations

from sqlalchemy import Engine

from jobqueue import sql


def prune_finished(engine: Engine, *, older_than_seconds: float, batch: int = 1000) -> int:
    """Delete finished jobs (and by cascade their events, logs and metrics).

    Works in batches so a large backlog never holds one long transaction.
    Returns how many jobs were deleted. Long-silent workers go too.
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
