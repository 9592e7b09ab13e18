"""The statements of sweeps (:mod:`jobqueue.sweeps`): create one with all its jobs,
summarise it, list its jobs, lock them for a bulk action, change its cap.

Apart from :mod:`jobqueue.sql` because a sweep writes thousands of rows per statement
(arrays and one JSON array of rows, not a statement per job).
"""

from __future__ import annotations

import functools

from sqlalchemy import TextClause, text

from jobqueue.sql import TEAM_STANDING_IF_NEW
from jobqueue.states import Cause
from jobqueue.sweep_specs import SWEEP_JOB_ORDERS

# Create a sweep's row; with an idempotency_key already used, inserts nothing.
INSERT_SWEEP = text("""
    INSERT INTO sweeps (name, team, owner, max_running, objective, job_count, idempotency_key,
                        request_fingerprint)
    VALUES (:name, :team, :owner, :max_running, CAST(:objective AS jsonb), :job_count,
            :idempotency_key, :request_fingerprint)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
""")

# The sweep holding an idempotency key.
SWEEP_BY_IDEMPOTENCY_KEY = text("SELECT * FROM sweeps WHERE idempotency_key = :key")

# Insert a sweep's jobs from one JSON array of rows (:rows), each with its index and
# whether the sweep holds it back, and their submit events; the team gets a standing row
# (as INSERT_JOB). A row whose idempotency_key is taken inserts nothing. Jobs queue in
# index order: each is queued a microsecond after the one before it.
INSERT_SWEEP_JOBS = text(f"""
    WITH {TEAM_STANDING_IF_NEW}, created AS (
        INSERT INTO jobs (name, kind, config, status, pool, team, owner, gpus, priority,
                          queued_at, not_before, max_attempts, max_interruptions,
                          max_runtime_seconds, preemptible, idempotency_key,
                          request_fingerprint, sweep_id, sweep_index, sweep_held)
        SELECT r.name, r.kind, r.config, r.status, r.pool, :team, :owner, r.gpus, r.priority,
               now() + make_interval(secs => r.sweep_index * 0.000001), r.not_before,
               r.max_attempts, r.max_interruptions, r.max_runtime_seconds, r.preemptible,
               r.idempotency_key, r.request_fingerprint, :sweep_id, r.sweep_index, r.sweep_held
        FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
            name text, kind text, config jsonb, status job_status, pool text, gpus int,
            priority int, not_before timestamptz, max_attempts int, max_interruptions int,
            max_runtime_seconds int, preemptible boolean, idempotency_key text,
            request_fingerprint text, sweep_index int, sweep_held boolean)
        ORDER BY r.sweep_index
        ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING id, sweep_index, status
    ), logged AS (
        INSERT INTO job_events (job_id, from_status, to_status, action, actor, reason)
        SELECT id, NULL, status, '{Cause.SUBMIT.value}', :owner, :reason FROM created
    )
    SELECT id, sweep_index FROM created
""")

# The jobs holding some idempotency keys (the items of a bulk submit already created).
JOBS_BY_IDEMPOTENCY_KEYS = text("""
    SELECT id, idempotency_key, request_fingerprint FROM jobs
    WHERE idempotency_key = ANY(CAST(:keys AS text[]))
""")


def _metric_of_j(name: str) -> str:
    """A job ``j``'s latest reported metric ``name`` (an SQL text expression) as a
    number; null when absent or not a number."""
    return (
        f"CASE WHEN jsonb_typeof(j.progress -> 'metrics' -> ({name})) = 'number'"
        f" THEN (j.progress -> 'metrics' ->> ({name}))::float8 END"
    )


# What a sweep's summary shows besides its row: its jobs counted by status, those its
# cap holds back, and its best job by the objective's metric (the latest report each).
_SUMMARY_COLUMNS = f"""
    s.*,
    (SELECT COALESCE(jsonb_object_agg(c.status, c.n), '{{}}'::jsonb) FROM (
         SELECT j.status::text AS status, count(*) AS n FROM jobs j
         WHERE j.sweep_id = s.id GROUP BY j.status) c) AS counts,
    (SELECT count(*) FROM jobs j
     WHERE j.sweep_id = s.id AND j.status = 'queued' AND j.sweep_held) AS held,
    CASE WHEN s.objective IS NOT NULL THEN (
        SELECT jsonb_build_object('job_id', b.id, 'index', b.sweep_index, 'name', b.name,
                                  'metric', s.objective ->> 'metric', 'value', b.value)
        FROM (SELECT j.id, j.sweep_index, j.name,
                     {_metric_of_j("s.objective ->> 'metric'")} AS value
              FROM jobs j WHERE j.sweep_id = s.id) b
        WHERE b.value IS NOT NULL
        ORDER BY CASE WHEN s.objective ->> 'mode' = 'max' THEN -b.value ELSE b.value END,
                 b.sweep_index
        LIMIT 1) END AS best
"""

# One sweep with its summary.
SWEEP = text(f"SELECT {_SUMMARY_COLUMNS} FROM sweeps s WHERE s.id = :id")

# Sweeps newest first (of one team, or of all with :team null), with their summaries;
# :before_at/:before_id page past the last one seen.
SWEEPS = text(f"""
    SELECT {_SUMMARY_COLUMNS} FROM sweeps s
    WHERE (CAST(:team AS text) IS NULL OR s.team = :team)
      AND (CAST(:before_at AS timestamptz) IS NULL
           OR (s.created_at, s.id) < (CAST(:before_at AS timestamptz), CAST(:before_id AS uuid)))
    ORDER BY s.created_at DESC, s.id DESC
    LIMIT :limit
""")

# A sweep's count of its own jobs, when some bulk items named existing jobs instead.
SET_JOB_COUNT = text("UPDATE sweeps SET job_count = :n WHERE id = :id")

# A sweep's own row (its team, its job count): what a check before an action reads,
# rather than the summary.
SWEEP_ROW = text("SELECT * FROM sweeps WHERE id = :id")

# The sweep's jobs in these statuses, locked in id order (so that two bulk actions on one
# sweep never deadlock), each with whether its lease is valid (as sql.LOCK_JOB).
LOCK_SWEEP_JOBS = text("""
    SELECT *, (lease_expires_at IS NOT NULL AND lease_expires_at > now()) AS lease_valid
    FROM jobs WHERE sweep_id = :id AND status = ANY(CAST(:statuses AS job_status[]))
    ORDER BY id
    FOR UPDATE
""")

# Change a sweep's cap; its row lock then orders this change against the triggers'
# admissions until the transaction ends.
SET_MAX_RUNNING = text("""
    UPDATE sweeps SET max_running = :max_running, updated_at = now() WHERE id = :id
""")

# After a change of the cap: admit the sweep's first held jobs (by index) while fewer
# than the cap count, or hold its last admitted queued jobs while more do (running jobs
# are never stopped for it). Held or admitted rows another transaction holds are left
# for the triggers to settle when that transaction's job changes.
REBALANCE_SWEEP = text("""
    WITH counting AS (
        SELECT count(*) AS n FROM jobs
        WHERE sweep_id = :id AND (status = 'running' OR (status = 'queued' AND NOT sweep_held))
    ), admit AS (
        SELECT j.id FROM jobs j
        WHERE j.sweep_id = :id AND j.status = 'queued' AND j.sweep_held
        ORDER BY j.sweep_index
        LIMIT GREATEST(0, COALESCE(CAST(:max_running AS int), 2147483647)
                          - (SELECT n FROM counting))
        FOR UPDATE SKIP LOCKED
    ), hold AS (
        SELECT j.id FROM jobs j
        WHERE j.sweep_id = :id AND j.status = 'queued' AND NOT j.sweep_held
          AND j.forced_at IS NULL
        ORDER BY j.sweep_index DESC
        LIMIT GREATEST(0, (SELECT n FROM counting)
                          - COALESCE(CAST(:max_running AS int), 2147483647))
        FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs SET sweep_held = jobs.id IN (SELECT id FROM hold), updated_at = now()
    WHERE jobs.id IN (SELECT id FROM admit UNION ALL SELECT id FROM hold)
""")

#: How a sweep's jobs may be ordered in its table: column expressions by name.
_JOB_ORDERS = {
    "index": "j.sweep_index",
    "status": "j.status::text",
    "progress": "(j.progress ->> 'fraction')::float8",
}


@functools.lru_cache(maxsize=16)
def sweep_jobs(sort: str, descending: bool) -> TextClause:
    """A page of a sweep's jobs (:limit from :offset) with their configs and latest
    metrics, ordered by ``sort``: ``index``, ``status``, ``progress`` or ``metric`` (the
    reported metric :metric; jobs without it last)."""
    order = _metric_of_j("CAST(:metric AS text)") if sort == "metric" else _JOB_ORDERS[sort]
    direction = "DESC" if descending else "ASC"
    return text(f"""
        SELECT j.id, j.sweep_index, j.name, j.status::text AS status, j.config, j.progress,
               j.attempt, j.termination_reason, j.started_at, j.finished_at, j.sweep_held
        FROM jobs j WHERE j.sweep_id = :id
        ORDER BY {order} {direction} NULLS LAST, j.sweep_index
        LIMIT :limit OFFSET :offset
    """)


assert set(SWEEP_JOB_ORDERS) == {*_JOB_ORDERS, "metric"}
