"""The scheduling pass's statements (:mod:`jobqueue.planner`), each with a line on what
it does: its lock and clock, team usage, what a plan reads, and what it writes.

They share the claim order and the liveness test with :mod:`jobqueue.sql`.
"""

from __future__ import annotations

from sqlalchemy import text

from jobqueue.sql import CLAIM_KEY_OF_J, QUEUE_MARK_EVERY, WORKER_ALIVE, claimable

# Only one process plans at a time; the others skip the pass (held until commit).
TRY_PLAN_LOCK = text("SELECT pg_try_advisory_xact_lock(7242674513380352)")

# When the last pass ran and last wrote the queue marks, with the database clock, all
# as epoch seconds.
PLAN_STATE = text("""
    SELECT EXTRACT(EPOCH FROM planned_at)::float AS planned_at,
           EXTRACT(EPOCH FROM marked_at)::float AS marked_at,
           EXTRACT(EPOCH FROM now())::float AS db_now
    FROM scheduler_state WHERE id = 1
""")

# Record this pass.
PLANNED = text("UPDATE scheduler_state SET planned_at = now() WHERE id = 1")

# GPU-seconds each team's jobs held between :since and now (epoch seconds): running
# jobs, and jobs that finished since.
USAGE_SINCE = text("""
    SELECT team, sum(gpus * EXTRACT(EPOCH FROM (held_until - GREATEST(started_at,
                                                 to_timestamp(:since)))))::float AS gpu_seconds
    FROM (
        SELECT team, gpus, started_at, now() AS held_until FROM jobs
        WHERE status = 'running' AND gpus > 0
        UNION ALL
        SELECT team, gpus, started_at, finished_at FROM jobs
        WHERE finished_at > to_timestamp(:since) AND gpus > 0 AND started_at IS NOT NULL
    ) held
    WHERE held_until > GREATEST(started_at, to_timestamp(:since))
    GROUP BY team
""")

# Every team's standing, with its share (1 without a teams row) and whether it has jobs
# queued or running now.
STANDINGS = text("""
    WITH active AS (SELECT DISTINCT team FROM jobs WHERE status IN ('queued', 'running'))
    SELECT names.team, COALESCE(s.usage_gpu_seconds, 0) AS usage_gpu_seconds,
           COALESCE(t.share, 1) AS share, active.team IS NOT NULL AS active
    FROM (SELECT team FROM team_standing UNION SELECT team FROM active) names
    LEFT JOIN team_standing s ON s.team = names.team
    LEFT JOIN teams t ON t.name = names.team
    LEFT JOIN active ON active.team = names.team
""")

# Write the teams' standings (arrays of equal length).
UPSERT_STANDINGS = text("""
    INSERT INTO team_standing (team, usage_gpu_seconds, usage_fraction, share_fraction, factor,
                               lead_seconds, updated_at)
    SELECT * , now() FROM unnest(CAST(:teams AS text[]), CAST(:usage AS float8[]),
                                 CAST(:usage_fraction AS float8[]),
                                 CAST(:share_fraction AS float8[]), CAST(:factor AS float8[]),
                                 CAST(:lead AS float8[]))
    ON CONFLICT (team) DO UPDATE
    SET usage_gpu_seconds = EXCLUDED.usage_gpu_seconds,
        usage_fraction = EXCLUDED.usage_fraction, share_fraction = EXCLUDED.share_fraction,
        factor = EXCLUDED.factor, lead_seconds = EXCLUDED.lead_seconds, updated_at = now()
""")

# The live workers of a pool, as the plan sees them.
PLAN_HOSTS = text(f"""
    SELECT w.name, w.gpu_total, w.kinds FROM workers w
    WHERE :pool = ANY(w.pools) AND {WORKER_ALIVE}
""")

# The running jobs of live workers: GPUs, end by the time limit (epoch; null: none),
# and what preemption weighs (epoch times; work_since: the last checkpoint or the start).
PLAN_RUNNING = text(f"""
    SELECT j.id, j.worker_name, j.pool, j.gpus, j.team, j.priority,
           j.forced_at IS NOT NULL AS forced, j.preemptible,
           j.requested_action IS NOT NULL AS stopping,
           j.requested_action = 'preempt' AS preempting,
           EXTRACT(EPOCH FROM j.started_at)::float AS started_at,
           EXTRACT(EPOCH FROM GREATEST(j.started_at,
                                       (j.checkpoint ->> 'at')::timestamptz))::float AS work_since,
           EXTRACT(EPOCH FROM j.started_at)::float + j.max_runtime_seconds AS ends_at
    FROM jobs j JOIN workers w ON w.name = j.worker_name AND {WORKER_ALIVE}
    WHERE j.status = 'running' AND j.gpus > 0
""")

# Running jobs chosen as victims, locked, if nothing changed them meanwhile.
LOCK_VICTIMS = text("""
    SELECT * FROM jobs
    WHERE id = ANY(:ids) AND status = 'running' AND requested_action IS NULL AND preemptible
    ORDER BY id
    FOR UPDATE SKIP LOCKED
""")

# The first :depth claimable queued jobs of a pool, in claim order.
PLAN_QUEUE = text(f"""
    SELECT j.id, j.name, j.gpus, j.kind, j.forced_at IS NOT NULL AS forced,
           j.max_runtime_seconds AS limit_s, j.team, j.priority,
           EXTRACT(EPOCH FROM j.queued_at)::float AS queued_at
    FROM jobs j
    WHERE {claimable()} AND j.pool = :pool
    ORDER BY {CLAIM_KEY_OF_J}
    LIMIT :depth
""")

# The pool's longest-waiting claimable job that needs GPUs (the plan protects it too, so
# that a job that fair share keeps behind others still reaches a reservation).
PLAN_OLDEST = text(f"""
    SELECT j.id, j.name, j.gpus, j.kind, j.forced_at IS NOT NULL AS forced,
           j.max_runtime_seconds AS limit_s, j.team, j.priority,
           EXTRACT(EPOCH FROM j.queued_at)::float AS queued_at
    FROM jobs j
    WHERE {claimable()} AND j.pool = :pool AND j.gpus > 0
    ORDER BY j.queued_at, j.id
    LIMIT 1
""")

# Each team's quota in a pool and the GPUs its running jobs hold there.
PLAN_QUOTAS = text("""
    SELECT t.name AS team, (t.quota_gpus ->> :pool)::int AS quota,
           COALESCE((SELECT sum(gpus) FROM jobs
                     WHERE status = 'running' AND team = t.name AND pool = :pool), 0) AS held
    FROM teams t WHERE t.quota_gpus ->> :pool IS NOT NULL
""")

# Drop every reservation (the pass writes all of them again, in the same transaction;
# one statement cannot: its INSERT would not see its own DELETE).
DROP_RESERVATIONS = text("DELETE FROM reservations")

# Write the pass's reservations (arrays of equal length).
INSERT_RESERVATIONS = text("""
    INSERT INTO reservations (job_id, pool, worker_name, gpus, starts_at, extra_gpus)
    SELECT r.job_id, r.pool, r.worker_name, r.gpus, to_timestamp(r.starts_at), r.extra_gpus
    FROM unnest(CAST(:job_ids AS uuid[]), CAST(:pools AS text[]), CAST(:workers AS text[]),
                CAST(:gpus AS int[]), CAST(:starts_at AS float8[]), CAST(:extra AS int[]))
        AS r(job_id, pool, worker_name, gpus, starts_at, extra_gpus)
""")

# Drop every expected start (written again by the pass, in the same transaction).
DROP_EXPECTED_STARTS = text("DELETE FROM expected_starts")

# Write the pass's expected starts and hosts (arrays of equal length; epoch seconds).
INSERT_EXPECTED_STARTS = text("""
    INSERT INTO expected_starts (job_id, pool, worker_name, starts_at)
    SELECT e.job_id, e.pool, e.worker_name, to_timestamp(e.starts_at)
    FROM unnest(CAST(:job_ids AS uuid[]), CAST(:pools AS text[]), CAST(:workers AS text[]),
                CAST(:starts_at AS float8[])) AS e(job_id, pool, worker_name, starts_at)
""")

# Drop every queue mark (written again by the pass, in the same transaction).
DROP_QUEUE_MARKS = text("DELETE FROM queue_marks")

# Mark every QUEUE_MARK_EVERY-th claimable queued job of each team in each pool with its
# rank in the team's claim order (ix_jobs_team_rank gives that order: no sort), and
# record when.
WRITE_QUEUE_MARKS = text(f"""
    WITH ranked AS (
        SELECT pool, team, COALESCE(forced_at, 'infinity'::timestamptz) AS forced_key,
               -priority AS neg_priority, queued_at, id,
               row_number() OVER (PARTITION BY pool, team
                                  ORDER BY COALESCE(forced_at, 'infinity'::timestamptz),
                                           -priority, queued_at, id) AS rank
        FROM jobs WHERE {claimable("jobs")}
    ), written AS (
        INSERT INTO queue_marks (pool, team, forced_key, neg_priority, queued_at, job_id, rank)
        SELECT pool, team, forced_key, neg_priority, queued_at, id, rank FROM ranked
        WHERE rank % {QUEUE_MARK_EVERY} = 0
    )
    UPDATE scheduler_state SET marked_at = now() WHERE id = 1
""")
