"""Every fixed runtime statement of jobqueue, named, each with one line on what it does.

``api/`` and ``worker/`` hold no SQL; the core modules use these statements. The
statements whose shape depends on the call (a transition's columns, a list's
filters) are built in :mod:`jobqueue.built_sql`.
Statements take the database clock (``now()``) for every time they compare.
"""

from __future__ import annotations

from sqlalchemy import (
    DateTime,
    Integer,
    column,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from jobqueue.states import Cause


def claimable(job: str = "j") -> str:
    """The condition on job ``job`` (an alias, or ``jobs``) that a claim may take it now:
    queued, not held back by its sweep, past its ``not_before``. Every statement that
    reads claimable jobs says it this way: its first two terms are the predicate of the
    claim's partial indexes (:data:`jobqueue.schema.CLAIMABLE_ROWS`), which a query must
    state to be planned on them."""
    return (
        f"{job}.status = 'queued' AND NOT {job}.sweep_held"
        f" AND ({job}.not_before IS NULL OR {job}.not_before <= now())"
    )


# A submit's CTE ``standing``: the team :team gets a standing row if it has none (the
# claim reads the teams in play from team_standing), with factor 1 and the lead
# :new_team_lead until the next pass; the NOT EXISTS first, so that a submit never waits
# on the row the scheduling pass is updating (an ON CONFLICT alone waits for that
# transaction to end).
TEAM_STANDING_IF_NEW = """
    standing AS (
        INSERT INTO team_standing (team, lead_seconds)
        SELECT :team, :new_team_lead
        WHERE NOT EXISTS (SELECT 1 FROM team_standing WHERE team = :team)
        ON CONFLICT (team) DO NOTHING
    )"""

# Submit a job with its submit event (its team's standing row first), one round trip;
# with an idempotency_key already used, inserts nothing.
INSERT_JOB = text(f"""
    WITH {TEAM_STANDING_IF_NEW}, created AS (
        INSERT INTO jobs (name, kind, config, status, pool, team, owner, gpus, priority,
                          queued_at, not_before, max_attempts, max_interruptions,
                          max_runtime_seconds, preemptible, idempotency_key,
                          request_fingerprint)
        VALUES (:name, :kind, CAST(:config AS jsonb), CAST(:status AS job_status), :pool, :team,
                :owner, :gpus, :priority, now(), :not_before, :max_attempts,
                :max_interruptions, :max_runtime_seconds, :preemptible, :idempotency_key,
                :request_fingerprint)
        ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING *
    ), logged AS (
        INSERT INTO job_events (job_id, from_status, to_status, action, actor)
        SELECT id, NULL, status, '{Cause.SUBMIT.value}', :owner FROM created
    )
    SELECT * FROM created
""")

# Every team an admin set up or that has jobs or recent usage, by name: its row (share 1
# and no quota without one), its standing, its running GPUs per pool, its queued jobs.
TEAMS = text("""
    SELECT names.name, COALESCE(t.share, 1) AS share,
           COALESCE(t.quota_gpus, '{}'::jsonb) AS quota_gpus, t.created_at, t.updated_at,
           COALESCE(s.usage_gpu_seconds, 0) AS usage_gpu_seconds,
           COALESCE(s.usage_fraction, 0) AS usage_fraction,
           COALESCE(s.share_fraction, 0) AS share_fraction, COALESCE(s.factor, 1) AS factor,
           COALESCE(s.lead_seconds, 0) AS lead_seconds,
           COALESCE((SELECT jsonb_object_agg(pool, gpus) FROM (
                         SELECT pool, sum(gpus) AS gpus FROM jobs
                         WHERE status = 'running' AND team = names.name GROUP BY pool) held),
                    '{}'::jsonb) AS gpus_running,
           (SELECT count(*) FROM jobs WHERE status = 'queued' AND team = names.name)
               AS jobs_queued
    FROM (SELECT name FROM teams UNION SELECT team FROM team_standing WHERE usage_gpu_seconds > 0
          UNION SELECT DISTINCT team FROM jobs WHERE status IN ('queued', 'running')) names
    LEFT JOIN teams t ON t.name = names.name
    LEFT JOIN team_standing s ON s.team = names.name
    ORDER BY names.name
""")

# Create or change a team's row.
UPSERT_TEAM = text("""
    INSERT INTO teams (name, share, quota_gpus) VALUES (:name, :share, CAST(:quota AS jsonb))
    ON CONFLICT (name) DO UPDATE
    SET share = EXCLUDED.share, quota_gpus = EXCLUDED.quota_gpus, updated_at = now()
    RETURNING name, share, quota_gpus, created_at, updated_at
""")

# The job holding an idempotency key.
JOB_BY_IDEMPOTENCY_KEY = text("SELECT * FROM jobs WHERE idempotency_key = :key")

# One job.
JOB_BY_ID = text("SELECT * FROM jobs WHERE id = :id")

# Several jobs.
JOBS_BY_IDS = text("SELECT * FROM jobs WHERE id = ANY(:ids)")

# One job, locked for a transition; says whether its lease is still valid.
LOCK_JOB = text("""
    SELECT *, (lease_expires_at IS NOT NULL AND lease_expires_at > now()) AS lease_valid
    FROM jobs WHERE id = :id FOR UPDATE
""")

# A running job, locked, only if the caller still holds its lease (fencing).
LOCK_LEASED_JOB = text("""
    SELECT * FROM jobs
    WHERE id = :id AND lease_token = :token AND status = 'running'
    FOR UPDATE
""")

# Record one event of a job's history.
INSERT_EVENT = text("""
    INSERT INTO job_events (job_id, from_status, to_status, action, actor, reason)
    VALUES (:job_id, CAST(:from_status AS job_status), CAST(:to_status AS job_status),
            :action, :actor, :reason)
""")

# A job's events, oldest first.
EVENTS = text("""
    SELECT id, at, from_status::text AS from_status, to_status::text AS to_status, action, actor,
           reason
    FROM job_events WHERE job_id = :id AND id > :after ORDER BY id
""")


def _fair_queued_at(job: str) -> str:
    """When job ``job`` queues in the claim order: its time queued moved earlier by its
    team's fair-share lead (none for a team the scheduling pass has not seen). A team
    furthest below its share goes first among jobs queued at about the same time, and
    no job waits behind younger ones by more than the largest lead."""
    lead = f"(SELECT s.lead_seconds FROM team_standing s WHERE s.team = {job}.team)"
    return f"{job}.queued_at - make_interval(secs => COALESCE({lead}, 0))"


# The claim order of a job ``j``, as one ascending key (forced first, in force order;
# then priority; then time queued with its team's fair-share lead).
CLAIM_KEY_OF_J = f"""
    COALESCE(j.forced_at, 'infinity'::timestamptz), -j.priority, {_fair_queued_at("j")}, j.id
"""

# Extend the leases a worker still holds; returns the ones renewed and their requests.
RENEW_LEASES = text("""
    UPDATE jobs j
    SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS uuid[])) AS held(id, token)
    WHERE j.id = held.id AND j.lease_token = held.token AND j.status = 'running'
      AND j.lease_expires_at > now()
    RETURNING j.id, j.requested_action, j.request_kill
""")

# Store a running job's progress (fenced by its lease token); a report with metrics
# takes the job's next metric point number, returned as metric_count.
UPDATE_PROGRESS = text("""
    UPDATE jobs SET progress = CAST(:progress AS jsonb) || jsonb_build_object('updated_at', now()),
                    metric_count = metric_count + CAST(:points AS bigint),
                    updated_at = now()
    WHERE id = :id AND lease_token = :token AND status = 'running'
    RETURNING metric_count
""")

# Add metric point number :n to a job's chart.
INSERT_METRICS = text("""
    INSERT INTO job_metrics (job_id, n, step, metrics)
    VALUES (:id, :n, :step, CAST(:metrics AS jsonb))
""")

# Keep only the newest :keep metric points of a job, the last being number :newest.
TRIM_METRICS = text("DELETE FROM job_metrics WHERE job_id = :id AND n <= :newest - :keep")

# Record a running job's latest checkpoint (fenced).
UPDATE_CHECKPOINT = text("""
    UPDATE jobs
    SET checkpoint = jsonb_build_object('uri', CAST(:uri AS text), 'step', CAST(:step AS bigint),
                                        'at', now()),
        updated_at = now()
    WHERE id = :id AND lease_token = :token AND status = 'running'
    RETURNING id
""")

# Append log lines to a running job (fenced), numbering them after the last one.
APPEND_LOGS = text("""
    WITH counted AS (
        UPDATE jobs SET log_count = log_count + :count
        WHERE id = :id AND lease_token = :token AND status = 'running'
        RETURNING log_count
    )
    INSERT INTO job_logs (job_id, n, stream, text)
    SELECT :id, counted.log_count - :count + line.ord, line.stream, line.text
    FROM counted,
         unnest(CAST(:streams AS text[]), CAST(:texts AS text[])) WITH ORDINALITY
             AS line(stream, text, ord)
    RETURNING n
""")

# Drop a job's log lines older than the newest :keep.
TRIM_LOGS = text("DELETE FROM job_logs WHERE job_id = :id AND n <= :newest - :keep")

# Log lines after line :after.
LOGS_AFTER = text("""
    SELECT n, stream, text, at FROM job_logs
    WHERE job_id = :id AND n > :after ORDER BY n LIMIT :limit
""")

# A job's metric points numbered after :after, oldest first (the first :limit).
METRIC_POINTS_AFTER = text("""
    SELECT n, step, at, metrics FROM job_metrics WHERE job_id = :id AND n > :after
    ORDER BY n LIMIT :limit
""")

# A job's metric points, oldest first (the newest :limit).
METRIC_POINTS = text("""
    SELECT n, step, at, metrics FROM (
        SELECT n, step, at, metrics FROM job_metrics WHERE job_id = :id
        ORDER BY n DESC LIMIT :limit
    ) newest ORDER BY n
""")

# Running jobs whose lease has expired, oldest first, locked for the sweep.
EXPIRED_LEASES = text("""
    SELECT * FROM jobs
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
""")

# Running jobs a worker left behind under leases it no longer holds.
ORPHANED_JOBS = text("""
    SELECT * FROM jobs
    WHERE status = 'running' AND worker_name = :worker
      AND NOT (lease_token = ANY(CAST(:keep AS uuid[])))
    FOR UPDATE SKIP LOCKED
""")

# Claimable queued jobs of some pools, ranked per pool in claim order.
QUEUE_ORDER = text(f"""
    SELECT j.id, j.name, j.pool, j.kind, j.gpus, j.priority, j.forced_at IS NOT NULL AS forced,
           row_number() OVER (PARTITION BY j.pool ORDER BY {CLAIM_KEY_OF_J}) AS position
    FROM jobs j
    WHERE {claimable()} AND j.pool = ANY(:pools)
    ORDER BY j.pool, position
""")

#: Every how many claimable queued jobs of a team (per pool) the scheduling pass leaves
#: a queue mark (table queue_marks).
QUEUE_MARK_EVERY = 100

# Within one team the claim order is ix_jobs_team_rank's (a team's jobs share one lead),
# so "job a of team s is ahead of job j" is one index range: a's key in its team's order
# below j's claim key with the two teams' leads taken out, this bound.
_BOUND_IN_TEAM_S = """(
    COALESCE(j.forced_at, 'infinity'::timestamptz), -j.priority,
    j.queued_at
      - make_interval(secs => COALESCE((SELECT t.lead_seconds FROM team_standing t
                                        WHERE t.team = j.team), 0))
      + make_interval(secs => s.lead_seconds),
    j.id)"""
_KEY_IN_TEAM_OF_A = """(
    COALESCE(a.forced_at, 'infinity'::timestamptz), -a.priority, a.queued_at, a.id)"""
_CLAIMABLE_A_OF_TEAM_S = f"{claimable('a')} AND a.pool = j.pool AND a.team = s.team"

# How many claimable queued jobs of its pool are ahead of the job ``j`` in claim order,
# counted up to :exact_positions and no further: team by team (every team in play has a
# team_standing row, as the claim reads them), each an index range. Counting stops at
# the limit, so the cost is bounded whatever the depth; a job with :exact_positions
# ahead gets an estimate instead (_ESTIMATED_AHEAD_OF_J).
_EXACT_AHEAD_OF_J = f"""
    SELECT count(*) FROM (
        SELECT 1 FROM team_standing s CROSS JOIN LATERAL (
            SELECT 1 FROM jobs a
            WHERE {_CLAIMABLE_A_OF_TEAM_S} AND {_KEY_IN_TEAM_OF_A} < {_BOUND_IN_TEAM_S}
            LIMIT :exact_positions
        ) in_team
        LIMIT :exact_positions
    ) counted
"""

# About how many claimable queued jobs of its pool are ahead of the job ``j``: per team,
# the rank of the last queue mark ahead of j (as of the pass's last marking) plus the
# team's jobs between that mark (or the team's first job) and j, counted up to
# QUEUE_MARK_EVERY. A few index probes per team. Off by the jobs that left or joined the
# queue ahead of j since the marking; null when no pass has marked the queues yet.
_ESTIMATED_AHEAD_OF_J = f"""
    SELECT CASE WHEN (SELECT marked_at FROM scheduler_state WHERE id = 1) IS NOT NULL
                THEN sum(COALESCE(m.rank, 0) + past.n)::bigint END
    FROM team_standing s
    LEFT JOIN LATERAL (
        SELECT m.rank, m.forced_key, m.neg_priority, m.queued_at, m.job_id FROM queue_marks m
        WHERE m.pool = j.pool AND m.team = s.team
          AND (m.forced_key, m.neg_priority, m.queued_at, m.job_id) < {_BOUND_IN_TEAM_S}
        ORDER BY m.forced_key DESC, m.neg_priority DESC, m.queued_at DESC, m.job_id DESC
        LIMIT 1
    ) m ON true
    CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM (
            SELECT 1 FROM jobs a
            WHERE {_CLAIMABLE_A_OF_TEAM_S} AND {_KEY_IN_TEAM_OF_A} < {_BOUND_IN_TEAM_S}
              AND {_KEY_IN_TEAM_OF_A} > (
                  COALESCE(m.forced_key, '-infinity'::timestamptz),
                  COALESCE(m.neg_priority, -2147483648),
                  COALESCE(m.queued_at, '-infinity'::timestamptz),
                  COALESCE(m.job_id, '00000000-0000-0000-0000-000000000000'::uuid))
            LIMIT {QUEUE_MARK_EVERY}
        ) past_mark
    ) past
"""

# The jobs ahead of ``j`` (see _EXACT_AHEAD_OF_J) as a lateral row ``ahead(n)``, for a
# job that could be claimed now; no row otherwise.
_AHEAD_OF_J_LATERAL = f"""
    LEFT JOIN LATERAL (
        SELECT ({_EXACT_AHEAD_OF_J}) AS n
        WHERE {claimable()}
          {{only}}
    ) ahead ON true
"""

# Only the rows waiting reasons need: the pools' forced jobs (they hold others back; no
# rank) and the jobs :ids with the jobs ahead of them (``ahead``, counted up to
# :exact_positions; ``ahead_estimate`` beyond), instead of ranking every queued job.
QUEUE_ORDER_OF = text(f"""
    SELECT j.id, j.name, j.pool, j.kind, j.gpus, j.priority, j.forced_at IS NOT NULL AS forced,
           ahead.n AS ahead,
           CASE WHEN ahead.n >= :exact_positions THEN ({_ESTIMATED_AHEAD_OF_J}) END
               AS ahead_estimate
    FROM jobs j
    {_AHEAD_OF_J_LATERAL.format(only="AND j.id = ANY(:ids)")}
    WHERE {claimable()} AND j.pool = ANY(:pools)
      AND (j.forced_at IS NOT NULL OR j.id = ANY(:ids))
    ORDER BY j.pool, {CLAIM_KEY_OF_J}
""")

# Pools that have claimable queued jobs.
QUEUED_POOLS = text(f"SELECT DISTINCT pool FROM jobs WHERE {claimable('jobs')}")

# Jobs counted by status and pool, for the metrics endpoint.
JOB_COUNTS = text("""
    SELECT status::text AS status, pool, count(*) AS count FROM jobs GROUP BY status, pool
""")

# Per pool, how long the oldest claimable queued job has waited.
OLDEST_QUEUED = text(f"""
    SELECT pool, EXTRACT(EPOCH FROM now() - min(queued_at))::float AS age_seconds
    FROM jobs WHERE {claimable("jobs")}
    GROUP BY pool
""")

# Register a worker or refresh its heartbeat row.
UPSERT_WORKER = text("""
    INSERT INTO workers (name, hostname, pools, kinds, gpu_total, gpu_free, devices,
                         started_at, last_heartbeat_at, stopped_at)
    VALUES (:name, :hostname, :pools, :kinds, :gpu_total, :gpu_free, CAST(:devices AS jsonb),
            now(), now(), NULL)
    ON CONFLICT (name) DO UPDATE
    SET hostname = EXCLUDED.hostname, pools = EXCLUDED.pools, kinds = EXCLUDED.kinds,
        gpu_total = EXCLUDED.gpu_total, gpu_free = EXCLUDED.gpu_free,
        devices = EXCLUDED.devices, last_heartbeat_at = now(), stopped_at = NULL,
        started_at = CASE WHEN :restarted THEN now() ELSE workers.started_at END
""")

# Mark a worker as stopped cleanly.
STOP_WORKER = text("UPDATE workers SET stopped_at = now() WHERE name = :name")

# Whether the worker ``w`` is alive: not stopped, and heard from within :alive_seconds.
WORKER_ALIVE = """
    (w.stopped_at IS NULL AND w.last_heartbeat_at > now() - make_interval(secs => :alive_seconds))
"""

# Every worker with whether it is alive and the jobs it runs.
WORKERS = text(f"""
    SELECT w.*, {WORKER_ALIVE} AS alive,
           COALESCE(ARRAY(SELECT j.id FROM jobs j
                          WHERE j.status = 'running' AND j.worker_name = w.name
                          ORDER BY j.started_at), '{{}}') AS running_jobs,
           (SELECT jsonb_build_object('job_id', r.job_id, 'job_name', rj.name,
                                      'gpus', r.gpus, 'starts_at', r.starts_at,
                                      'extra_gpus', r.extra_gpus)
            FROM reservations r JOIN jobs rj ON rj.id = r.job_id AND rj.status = 'queued'
            WHERE r.worker_name = w.name LIMIT 1) AS reservation
    FROM workers w ORDER BY w.name
""")

# The live workers as waiting reasons read them (what each runs, its GPUs), as one JSON
# array: a waiting reason needs no more, and one value costs less to read than rows.
_LIVE_WORKERS_JSON = f"""
    SELECT COALESCE(jsonb_agg(jsonb_build_object(
               'name', w.name, 'pools', w.pools, 'kinds', w.kinds,
               'gpu_total', w.gpu_total, 'gpu_free', w.gpu_free)), '[]'::jsonb)
    FROM workers w WHERE {WORKER_ALIVE}
"""

# What the scheduler holds that waiting reasons explain, as one JSON object: the
# reservations (with their jobs' names), the teams' standings, and each quota with the
# GPUs its team holds in that pool. All small: a few rows per pool and team.
_SCHEDULING_JSON = """
    SELECT jsonb_build_object(
        'reservations', (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                             'job_id', r.job_id, 'job_name', rj.name, 'pool', r.pool,
                             'worker_name', r.worker_name, 'starts_at', r.starts_at,
                             'extra_gpus', r.extra_gpus)), '[]'::jsonb)
                         FROM reservations r JOIN jobs rj ON rj.id = r.job_id
                         WHERE rj.status = 'queued'),
        'standings', (SELECT COALESCE(jsonb_object_agg(s.team, jsonb_build_object(
                          'usage_fraction', s.usage_fraction,
                          'share_fraction', s.share_fraction)), '{}'::jsonb)
                      FROM team_standing s),
        'quotas', (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                       'team', t.name, 'pool', q.key, 'quota', (q.value)::int,
                       'held', (SELECT COALESCE(sum(h.gpus), 0) FROM jobs h
                                WHERE h.status = 'running' AND h.team = t.name
                                  AND h.pool = q.key))), '[]'::jsonb)
                   FROM teams t, jsonb_each(t.quota_gpus) q
                   WHERE jsonb_typeof(q.value) = 'number'))
"""

# What waiting reasons read besides the jobs: the database clock, the live workers, the
# scheduler's state and the expected starts of the jobs :ids (an object by job id).
WAIT_CONTEXT = text(f"""
    SELECT now() AS db_now, ({_LIVE_WORKERS_JSON}) AS live_workers,
           ({_SCHEDULING_JSON}) AS scheduling,
           (SELECT jsonb_object_agg(e.job_id, e.starts_at) FROM expected_starts e
            WHERE e.job_id = ANY(CAST(:ids AS uuid[]))) AS expected_starts
""")

# One job with all its waiting reason needs, in one round trip (the GET of a job, which
# a UI polls): the row as one JSON value (column job, see Job.from_json), the columns of
# WAIT_CONTEXT and, for a queued job, its expected start (wait_expected_start), the jobs
# ahead of it (wait_ahead up to :exact_positions, null before not_before; beyond it
# wait_ahead_estimate) and its pool's claimable forced jobs
# (wait_forced, a JSON array in force order, null when there are none). Each subquery
# sits in a CASE so that it runs only for a queued job.
JOB_WITH_WAIT = text(f"""
    SELECT to_jsonb(j) AS job,
           now() AS db_now,
           ahead.n AS wait_ahead,
           CASE WHEN ahead.n >= :exact_positions THEN ({_ESTIMATED_AHEAD_OF_J}) END
               AS wait_ahead_estimate,
           CASE WHEN j.status = 'queued' THEN (
               SELECT jsonb_agg(jsonb_build_object(
                          'id', f.id, 'name', f.name, 'kind', f.kind, 'gpus', f.gpus,
                          'priority', f.priority)
                      ORDER BY f.forced_at, -f.priority, f.queued_at, f.id)
               FROM jobs f
               WHERE {claimable("f")} AND f.pool = j.pool AND f.forced_at IS NOT NULL)
               END AS wait_forced,
           CASE WHEN j.status = 'queued' THEN ({_LIVE_WORKERS_JSON}) END AS live_workers,
           CASE WHEN j.status = 'queued' THEN ({_SCHEDULING_JSON}) END AS scheduling,
           CASE WHEN j.status = 'queued' THEN (
               SELECT e.starts_at FROM expected_starts e WHERE e.job_id = j.id) END
               AS wait_expected_start
    FROM jobs j
    {_AHEAD_OF_J_LATERAL.format(only="")}
    WHERE j.id = :id
""").columns(
    # Typed columns in the order selected: SQLAlchemy then keeps the result's column
    # map with the compiled statement instead of rebuilding it on every execution.
    column("job", JSONB),
    column("db_now", DateTime(timezone=True)),
    column("wait_ahead", Integer),
    column("wait_ahead_estimate", Integer),
    column("wait_forced", JSONB),
    column("live_workers", JSONB),
    column("scheduling", JSONB),
    column("wait_expected_start", DateTime(timezone=True)),
)

# Finished jobs older than the cut-off (their events, logs and metrics go with them).
PRUNE_FINISHED = text("""
    WITH doomed AS (
        SELECT id FROM jobs
        WHERE finished_at IS NOT NULL AND finished_at < now() - make_interval(secs => :age_seconds)
        ORDER BY finished_at
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM jobs USING doomed WHERE jobs.id = doomed.id
""")

# Workers that stopped or went silent long ago.
PRUNE_WORKERS = text("""
    DELETE FROM workers
    WHERE last_heartbeat_at < now() - make_interval(secs => :age_seconds)
      AND NOT EXISTS (SELECT 1 FROM jobs WHERE status = 'running' AND worker_name = workers.name)
""")
