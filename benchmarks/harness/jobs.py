"""The jobs the benchmarks submit, and rows of them loaded in bulk.

Rows are loaded with one ``INSERT … SELECT generate_series(…)`` per table, seconds for a
million, where submitting them one by one would take an hour.
"""

from __future__ import annotations

import psycopg

KIND = "bench"
POOL = "default"
#: The config every benchmark job carries (and the baseline's payload), a typical small one.
CONFIG_SQL = """'{"model": "resnet50", "lr": 0.001, "epochs": 10, "batch_size": 256}'::jsonb"""
CONFIG = {"model": "resnet50", "lr": 0.001, "epochs": 10, "batch_size": 256}


def load_queued_jobs(conn: psycopg.Connection, count: int, *, teams: int = 1) -> None:
    """``count`` queued jobs (and their submit events) in one INSERT … SELECT each; with
    ``teams`` above 1, dealt round-robin to teams ``team-0``, ``team-1``, …"""
    team = "'default'" if teams == 1 else "'team-' || mod(g, %(teams)s)"
    conn.execute(
        f"""
        WITH new AS (
            INSERT INTO jobs (name, kind, config, status, pool, team, gpus, priority, queued_at,
                              max_attempts, max_interruptions)
            SELECT 'bench-' || g, '{KIND}', {CONFIG_SQL}, 'queued', '{POOL}', {team}, 0, 50,
                   now() + g * interval '1 microsecond', 3, 10
            FROM generate_series(1, %(count)s) AS g
            RETURNING id
        )
        INSERT INTO job_events (job_id, from_status, to_status, action, actor)
        SELECT id, NULL, 'queued', 'submit', 'bench' FROM new
        """,
        {"count": count, "teams": teams},
    )


def load_finished_jobs(conn: psycopg.Connection, count: int) -> None:
    """``count`` finished jobs spread over the last weeks (90% completed, 7% failed, 3%
    cancelled), valid under every CHECK constraint. No events: jobs rows only."""
    conn.execute(
        f"""
        INSERT INTO jobs (name, kind, config, status, pool, gpus, priority, queued_at,
                          attempt, max_attempts, interruptions, max_interruptions,
                          worker_name, gpu_ids, termination_reason, exit_code,
                          created_at, started_at, finished_at, updated_at)
        SELECT 'old-' || g, '{KIND}', {CONFIG_SQL},
               CAST(CASE WHEN mod(g, 100) < 90 THEN 'completed'
                         WHEN mod(g, 100) < 97 THEN 'failed' ELSE 'cancelled' END AS job_status),
               '{POOL}', 1, 50, t.finished - interval '70 minutes',
               1, 3, 0, 10,
               'gpu-host-' || mod(g, 16), ARRAY[mod(g, 8)],
               CASE WHEN mod(g, 100) < 90 THEN 'completed'
                    WHEN mod(g, 100) < 97 THEN 'exit_code' ELSE 'cancelled' END,
               CASE WHEN mod(g, 100) < 90 THEN 0 WHEN mod(g, 100) < 97 THEN 1 END,
               t.finished - interval '70 minutes', t.finished - interval '60 minutes',
               t.finished, t.finished
        FROM generate_series(1, %(count)s) AS g,
             LATERAL (SELECT now() - interval '1 hour' - g * interval '2 seconds') AS t(finished)
        """,
        {"count": count},
    )
