"""What the queue benchmark's three measurements share: their sizes, the settings of
jobqueue's side, and the baseline, a minimal hand-written psycopg 3 SKIP LOCKED loop.

The baseline uses its own minimal table ``(id bigserial, status text, payload jsonb,
timestamps)`` with a partial index on ``id WHERE status = 'queued'``; it writes no events and
fires no trigger, so it is a floor, not a competitor.
"""

from __future__ import annotations

import dataclasses

import psycopg

from benchmarks.harness.jobs import CONFIG_SQL
from jobqueue.settings import Settings


@dataclasses.dataclass(frozen=True)
class Sizes:
    jobs: int  # (1) jobs drained by the claimers
    claimers: int  # (1) concurrent claimers
    slots: int  # (1) jobs one jobqueue claim may take
    rounds: int  # (1) alternating rounds the jobs are drained in
    pickup: int  # (2) jobs submitted one at a time
    pickup_gap_s: float  # (2) pause between two submits
    finished: int  # (3) finished rows of the backlog
    queued: int  # (3) queued rows of the backlog
    few_queued: int  # (3) queued rows of the near-empty table
    cycles: int  # (3) timed claim+finish cycles per case
    deep_queued: int  # (4) queued jobs of the deep queue
    shallow_queued: int  # (4) queued jobs of the shallow queue
    depth_cycles: int  # (4) timed cycles per depth


FULL = Sizes(20_000, 4, 8, 4, 200, 0.020, 1_000_000, 10_000, 10, 500, 100_000, 100, 300)
QUICK = Sizes(2_000, 4, 8, 2, 50, 0.020, 100_000, 1_000, 10, 200, 10_000, 100, 100)


def settings_for(url: str) -> Settings:
    """Leases long enough that none expires during a run."""
    return Settings(database_url=url, lease_seconds=600, heartbeat_seconds=30)


BASELINE_TABLE = """
    CREATE TABLE {t} (
        id bigserial PRIMARY KEY,
        status text NOT NULL,
        payload jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        finished_at timestamptz
    );
    CREATE INDEX {t}_queued ON {t} (id) WHERE status = 'queued';
"""


def baseline_table(conn: psycopg.Connection, table: str, *, finished: int, queued: int) -> None:
    conn.execute(BASELINE_TABLE.format(t=table))
    if finished:
        conn.execute(
            f"""
            INSERT INTO {table} (status, payload, created_at, started_at, finished_at)
            SELECT 'done', {CONFIG_SQL}, now() - g * interval '2 seconds',
                   now() - g * interval '2 seconds', now() - g * interval '1 second'
            FROM generate_series(1, %(n)s) AS g
            """,
            {"n": finished},
        )
    if queued:
        conn.execute(
            f"INSERT INTO {table} (status, payload) "
            f"SELECT 'queued', {CONFIG_SQL} FROM generate_series(1, %(n)s)",
            {"n": queued},
        )


def baseline_claim(cur: psycopg.Cursor, table: str) -> int | None:
    """The baseline's claim: lock the oldest queued row, mark it running, commit."""
    cur.execute(
        f"SELECT id FROM {table} WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
    row = cur.fetchone()
    if row is None:
        cur.connection.rollback()
        return None
    cur.execute(f"UPDATE {table} SET status = 'running', started_at = now() WHERE id = %s", row)
    cur.connection.commit()
    return row[0]


def baseline_finish(cur: psycopg.Cursor, table: str, job_id: int) -> None:
    cur.execute(f"UPDATE {table} SET status = 'done', finished_at = now() WHERE id = %s", (job_id,))
    cur.connection.commit()
