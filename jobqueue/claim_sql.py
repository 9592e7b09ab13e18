"""The claim's statements (:meth:`jobqueue.worker_store.WorkerStore.claim`): the
candidates it reads and locks, the quota it counts, the start of what it chose.

Apart from :mod:`jobqueue.sql` because the candidates' read is the one statement that
merges the teams' queues; it shares the claim order's definition with the rest
(:data:`jobqueue.sql.CLAIM_KEY_OF_J` orders the same way).
"""

from __future__ import annotations

from sqlalchemy import text

from jobqueue.sql import claimable

# Claim candidates: claimable queued jobs of these pools and kinds that could fit the
# free GPUs (forced ones too: they may hold others back), in claim order, locked; each
# carries whether the scheduling pass planned it to start here by now. Always at least
# one row: the first carries the database clock, the pools' reservations whose jobs
# still wait (one JSON array, read once) and how many jobs were read (``read``); with no
# candidate locked it is the only row, its job columns null.
#
# The claim order moves each job earlier by its team's fair-share lead, a per-team
# value, so no index gives it directly; within a team it is the index's order. So each
# team in play (a row of team_standing: every team that submitted has one) gives its
# first :per_team jobs by ix_jobs_team_rank, read without locks; they are merged in
# claim order and only the first :scan that no other claimer holds are locked (SKIP
# LOCKED, so that claimers at the same instant get different rows). Locking is what
# costs (a write per row), so the claim locks at most :scan rows however many teams
# there are; it reads teams × :per_team index entries, whatever the depth of the queue.
#
# Fewer locked than read (and than :scan) means other claimers hold some of the first
# jobs (claimers woken by one NOTIFY all read the same ones). CLAIM_CANDIDATES_PAST_LOCKED
# then reads past them: each team's read skips locked rows and locks its :per_team, as
# many rows as teams × :per_team, but only when claimers collide (WorkerStore.claim).
#
# The lock is the one the claim's UPDATE takes (NO KEY UPDATE): it does not conflict with
# the key-share locks that the scheduling pass's rows referencing jobs take.
_CLAIM_CANDIDATES = """
    WITH picked AS MATERIALIZED (
        SELECT c.id, c.forced_key, c.neg_priority,
               c.queued_at - make_interval(secs => s.lead_seconds) AS fair_queued_at
        FROM team_standing s CROSS JOIN unnest(CAST(:pools AS text[])) AS p(pool)
        CROSS JOIN LATERAL (
            SELECT j.id, COALESCE(j.forced_at, 'infinity'::timestamptz) AS forced_key,
                   -j.priority AS neg_priority, j.queued_at
            FROM jobs j
            WHERE {claimable} AND j.pool = p.pool AND j.team = s.team AND j.kind = ANY(:kinds)
              AND (j.gpus <= :free_gpus OR j.forced_at IS NOT NULL)
            ORDER BY COALESCE(j.forced_at, 'infinity'::timestamptz), -j.priority,
                     j.queued_at, j.id
            LIMIT :per_team
            {team_lock}
        ) c
    ), locked AS (
        SELECT c.*, p.forced_key, p.neg_priority, p.fair_queued_at
        FROM (SELECT * FROM picked ORDER BY forced_key, neg_priority, fair_queued_at, id) p
        CROSS JOIN LATERAL (
            SELECT j.id, j.gpus, j.forced_at IS NOT NULL AS forced, j.team, j.pool,
                   j.max_runtime_seconds AS limit_s,
                   COALESCE((SELECT e.starts_at <= now() AND e.worker_name = :worker
                             FROM expected_starts e WHERE e.job_id = j.id), false)
                       AS planned_now
            FROM jobs j WHERE j.id = p.id AND {claimable}
            FOR NO KEY UPDATE SKIP LOCKED
        ) c
        ORDER BY p.forced_key, p.neg_priority, p.fair_queued_at, p.id
        LIMIT :scan
    )
    SELECT locked.id, locked.gpus, locked.forced, locked.team, locked.pool, locked.limit_s,
           locked.planned_now,
           (SELECT count(*) FROM picked) AS read,
           EXTRACT(EPOCH FROM now())::float AS db_now,
           (SELECT jsonb_agg(jsonb_build_object(
                       'job_id', r.job_id, 'worker_name', r.worker_name,
                       'starts_at', EXTRACT(EPOCH FROM r.starts_at),
                       'extra_gpus', r.extra_gpus))
            FROM reservations r JOIN jobs rj ON rj.id = r.job_id AND rj.status = 'queued'
            WHERE r.pool = ANY(:pools)) AS reservations
    FROM (SELECT) AS one LEFT JOIN locked ON true
    ORDER BY locked.forced_key, locked.neg_priority, locked.fair_queued_at, locked.id
"""
CLAIM_CANDIDATES = text(_CLAIM_CANDIDATES.format(team_lock="", claimable=claimable()))
CLAIM_CANDIDATES_PAST_LOCKED = text(
    _CLAIM_CANDIDATES.format(team_lock="FOR NO KEY UPDATE OF j SKIP LOCKED", claimable=claimable())
)

# The teams among :teams with a quota in one of :pools, locked in name order: claimers of
# the same team wait for each other here, so that together they never pass its quota.
LOCK_QUOTA_TEAMS = text("""
    SELECT name, quota_gpus FROM teams
    WHERE name = ANY(:teams) AND quota_gpus ?| CAST(:pools AS text[])
    ORDER BY name
    FOR UPDATE
""")

# GPUs the teams' running jobs hold, per team and pool (read after LOCK_QUOTA_TEAMS).
TEAM_GPUS_RUNNING = text("""
    SELECT team, pool, COALESCE(sum(gpus), 0) AS gpus FROM jobs
    WHERE status = 'running' AND team = ANY(:teams) AND pool = ANY(:pools)
    GROUP BY team, pool
""")

# Start the chosen jobs on a worker: each gets a fresh lease token; one claim event each.
# Their reservations and expected starts stay until the next pass rewrites them (every
# reader takes only those of queued jobs): deleting them here would wait for a pass that
# is rewriting them.
CLAIM_JOBS = text(f"""
    WITH chosen AS (
        SELECT * FROM jsonb_to_recordset(CAST(:assignments AS jsonb))
            AS a(id uuid, gpu_ids int[])
    ), started AS (
        UPDATE jobs j
        SET status = 'running', worker_name = :worker, gpu_ids = chosen.gpu_ids,
            lease_token = gen_random_uuid(),
            lease_expires_at = now() + make_interval(secs => :lease_seconds),
            started_at = now(), updated_at = now(), not_before = NULL
        FROM chosen
        WHERE j.id = chosen.id AND {claimable()}
        RETURNING j.*
    ), logged AS (
        INSERT INTO job_events (job_id, from_status, to_status, action, actor, reason)
        SELECT id, 'queued', 'running', 'claim', :actor,
               'GPUs [' || array_to_string(gpu_ids, ',') || ']'
        FROM started
    )
    SELECT * FROM started
""")
