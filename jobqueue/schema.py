"""The tables, as SQLAlchemy Core metadata.

Alembic migrations are the schema's only source; this module describes the
same schema for the code and for the test that proves the two agree
(``tests/test_migrations.py``). Change both together.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from jobqueue.states import JobStatus, RequestedAction, TerminationReason

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

job_status = Enum(
    *[s.value for s in JobStatus],
    name="job_status",
    metadata=metadata,
    create_type=False,
)

#: The rows the claim's indexes cover: queued jobs their sweep does not hold back. A
#: query that is to use those indexes says the same in its WHERE.
CLAIMABLE_ROWS = "status = 'queued' AND NOT sweep_held"

_FINISHED = "(" + ", ".join(f"'{s.value}'" for s in JobStatus if s.finished) + ")"
_REQUESTS = ", ".join(f"'{r.value}'" for r in RequestedAction)
_TERMINATIONS = ", ".join(f"'{t.value}'" for t in TerminationReason)


def _ts(name: str, **kw) -> Column:
    return Column(name, DateTime(timezone=True), **kw)


def _job_ref(**kw) -> Column:
    """A ``job_id`` column of a job's own rows: they go with the job."""
    return Column("job_id", UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), **kw)


jobs = Table(
    "jobs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("config", JSONB, nullable=False),
    Column("status", job_status, nullable=False),
    Column("pool", Text, nullable=False),
    # Whose job it is: the team it counts against, and who submitted it.
    Column("team", Text, nullable=False, server_default=text("'default'")),
    Column("owner", Text, nullable=False, server_default=text("''")),
    Column("gpus", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    # Set by force-start; forced jobs are claimed first, in the order forced.
    _ts("forced_at"),
    _ts("queued_at", nullable=False),
    _ts("not_before"),
    Column("attempt", Integer, nullable=False, server_default=text("1")),
    Column("max_attempts", Integer, nullable=False),
    Column("interruptions", Integer, nullable=False, server_default=text("0")),
    Column("max_interruptions", Integer, nullable=False),
    # Seconds a run may last before the worker stops it (time_limit); null: no limit.
    Column("max_runtime_seconds", Integer),
    # Whether the scheduling pass may stop it for another job (it resumes later).
    Column("preemptible", Boolean, nullable=False, server_default=text("true")),
    # How often it was preempted (each also counts as an interruption).
    Column("preempted", Integer, nullable=False, server_default=text("0")),
    Column("progress", JSONB),
    Column("checkpoint", JSONB),
    Column("worker_name", Text),
    Column("gpu_ids", ARRAY(Integer)),
    # Fencing: every write a worker makes about a running job must match it.
    Column("lease_token", UUID(as_uuid=True)),
    _ts("lease_expires_at"),
    Column("requested_action", Text),
    Column("requested_by", Text),
    Column("request_reason", Text),
    # A second cancel or a forced one: the worker kills without a grace period.
    Column("request_kill", Boolean, nullable=False, server_default=text("false")),
    Column("termination_reason", Text),
    Column("exit_code", Integer),
    Column("signal", Integer),
    Column("error_message", Text),
    Column("log_tail", JSONB),
    # Number of the last log line written; lines are numbered from 1.
    Column("log_count", BigInteger, nullable=False, server_default=text("0")),
    # Number of the last metric point written; points are numbered from 1.
    Column("metric_count", BigInteger, nullable=False, server_default=text("0")),
    Column("idempotency_key", Text),
    # Hash of the submit body, so a repeated key with another body is refused.
    Column("request_fingerprint", Text),
    # The sweep it was submitted in, and its place there (from 0).
    Column("sweep_id", UUID(as_uuid=True), ForeignKey("sweeps.id")),
    Column("sweep_index", Integer),
    # Queued but not admitted by its sweep's max_running: not claimable until a job of
    # the sweep stops counting (migration 0009's triggers let it in).
    Column("sweep_held", Boolean, nullable=False, server_default=text("false")),
    _ts("created_at", nullable=False, server_default=text("now()")),
    _ts("started_at"),
    _ts("finished_at"),
    _ts("updated_at", nullable=False, server_default=text("now()")),
    CheckConstraint("gpus BETWEEN 0 AND 64", name="gpus_range"),
    CheckConstraint("(sweep_id IS NULL) = (sweep_index IS NULL)", name="sweep_index_with_sweep"),
    CheckConstraint("NOT sweep_held OR sweep_id IS NOT NULL", name="held_only_in_a_sweep"),
    CheckConstraint("priority BETWEEN 0 AND 100", name="priority_range"),
    CheckConstraint("attempt BETWEEN 1 AND max_attempts", name="attempt_range"),
    CheckConstraint("max_attempts BETWEEN 1 AND 100", name="max_attempts_range"),
    CheckConstraint("interruptions >= 0", name="interruptions_range"),
    CheckConstraint("max_interruptions BETWEEN 0 AND 1000", name="max_interruptions_range"),
    CheckConstraint(
        "max_runtime_seconds IS NULL OR max_runtime_seconds > 0", name="max_runtime_positive"
    ),
    CheckConstraint(
        "status <> 'running' OR (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL"
        " AND worker_name IS NOT NULL AND started_at IS NOT NULL)",
        name="running_has_lease",
    ),
    CheckConstraint("status = 'running' OR lease_token IS NULL", name="lease_only_when_running"),
    CheckConstraint(
        f"requested_action IS NULL OR (status = 'running' AND requested_action IN ({_REQUESTS}))",
        name="request_only_when_running",
    ),
    CheckConstraint(
        f"(status IN {_FINISHED}) = (finished_at IS NOT NULL)", name="finished_iff_finished_at"
    ),
    CheckConstraint(
        f"(status IN {_FINISHED}) = (termination_reason IS NOT NULL)"
        f" AND (termination_reason IS NULL OR termination_reason IN ({_TERMINATIONS}))",
        name="finished_iff_termination_reason",
    ),
)

# Serves the claim query: only queued rows, already in claim order.
Index(
    "ix_jobs_claim_order",
    jobs.c.forced_at.asc().nulls_last(),
    jobs.c.priority.desc(),
    jobs.c.queued_at,
    jobs.c.id,
    postgresql_where=text(CLAIMABLE_ROWS),
)
# Partial: most jobs have no key, and every row version would otherwise add an entry.
Index(
    "uq_jobs_idempotency_key",
    jobs.c.idempotency_key,
    unique=True,
    postgresql_where=text("idempotency_key IS NOT NULL"),
)
# A queued job's rank in its pool: the claim order as one ascending key, so the jobs
# ahead of a job are one index range (queue_position on every status read).
Index(
    "ix_jobs_queue_rank",
    jobs.c.pool,
    func.coalesce(jobs.c.forced_at, text("'infinity'::timestamp with time zone")),
    (-jobs.c.priority),
    jobs.c.queued_at,
    jobs.c.id,
    postgresql_include=["not_before"],
    postgresql_where=text(CLAIMABLE_ROWS),
)
Index("ix_jobs_created", jobs.c.created_at.desc(), jobs.c.id.desc())
Index("ix_jobs_team_created", jobs.c.team, jobs.c.created_at.desc(), jobs.c.id.desc())
Index("ix_jobs_status_created", jobs.c.status, jobs.c.created_at.desc(), jobs.c.id.desc())
Index(
    "ix_jobs_lease_expiry",
    jobs.c.lease_expires_at,
    postgresql_where=text("status = 'running'"),
)
# The claim order within one team of a pool (claim_sql.CLAIM_CANDIDATES merges the teams').
Index(
    "ix_jobs_team_rank",
    jobs.c.pool,
    jobs.c.team,
    func.coalesce(jobs.c.forced_at, text("'infinity'::timestamp with time zone")),
    (-jobs.c.priority),
    jobs.c.queued_at,
    jobs.c.id,
    postgresql_where=text(CLAIMABLE_ROWS),
)
Index("ix_jobs_finished", jobs.c.finished_at, postgresql_where=text("finished_at IS NOT NULL"))

job_events = Table(
    "job_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    _job_ref(nullable=False),
    _ts("at", nullable=False, server_default=text("now()")),
    Column("from_status", job_status),
    Column("to_status", job_status, nullable=False),
    Column("action", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("reason", Text),
)
Index("ix_job_events_job", job_events.c.job_id, job_events.c.id)

job_logs = Table(
    "job_logs",
    metadata,
    _job_ref(primary_key=True),
    Column("n", BigInteger, primary_key=True),
    Column("stream", Text, nullable=False),
    Column("text", Text, nullable=False),
    _ts("at", nullable=False, server_default=text("now()")),
)

job_metrics = Table(
    "job_metrics",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    _job_ref(nullable=False),
    # The point's number within its job, from 1 (jobs.metric_count is the last).
    Column("n", BigInteger, nullable=False),
    Column("step", BigInteger),
    _ts("at", nullable=False, server_default=text("now()")),
    Column("metrics", JSONB, nullable=False),
)
Index("ix_job_metrics_job_n", job_metrics.c.job_id, job_metrics.c.n, unique=True)

Index(
    "ix_jobs_sweep_index",
    jobs.c.sweep_id,
    jobs.c.sweep_index,
    postgresql_where=text("sweep_id IS NOT NULL"),
)

# Jobs submitted together and managed as one; max_running caps how many run at once.
sweeps = Table(
    "sweeps",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("name", Text, nullable=False),
    Column("team", Text, nullable=False),
    Column("owner", Text, nullable=False),
    Column("max_running", Integer),
    # {"metric": "loss", "mode": "min"}: which reported metric ranks its jobs.
    Column("objective", JSONB),
    Column("job_count", Integer, nullable=False),
    Column("idempotency_key", Text),
    Column("request_fingerprint", Text),
    _ts("created_at", nullable=False, server_default=text("now()")),
    _ts("updated_at", nullable=False, server_default=text("now()")),
    CheckConstraint("max_running IS NULL OR max_running >= 1", name="max_running_positive"),
)
Index(
    "uq_sweeps_idempotency_key",
    sweeps.c.idempotency_key,
    unique=True,
    postgresql_where=text("idempotency_key IS NOT NULL"),
)
Index("ix_sweeps_team_created", sweeps.c.team, sweeps.c.created_at.desc(), sweeps.c.id.desc())
Index("ix_sweeps_created", sweeps.c.created_at.desc(), sweeps.c.id.desc())

# What admins set per team; a team without a row has share 1 and no quota.
teams = Table(
    "teams",
    metadata,
    Column("name", Text, primary_key=True),
    # Its weight in fair share (Slurm's shares): a team of share 2 is owed twice as much.
    Column("share", Float, nullable=False, server_default=text("1")),
    # GPUs it may hold at once, per pool ({"a100": 16}); a pool left out: no quota.
    Column("quota_gpus", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    _ts("created_at", nullable=False, server_default=text("now()")),
    _ts("updated_at", nullable=False, server_default=text("now()")),
    CheckConstraint("share > 0", name="share_positive"),
)

# Each team's recent GPU usage, decayed with a half-life, its fair-share factor (Slurm's
# 2^(-usage/share)) and the lead in the claim order that follows; kept by the pass.
team_standing = Table(
    "team_standing",
    metadata,
    Column("team", Text, primary_key=True),
    Column("usage_gpu_seconds", Float, nullable=False, server_default=text("0")),
    # Its part of all recent usage and of all shares, both in [0, 1].
    Column("usage_fraction", Float, nullable=False, server_default=text("0")),
    Column("share_fraction", Float, nullable=False, server_default=text("0")),
    # 2^(-usage_fraction / share_fraction): 1 for a team that used nothing.
    Column("factor", Float, nullable=False, server_default=text("1")),
    # How much earlier than their submit its jobs queue: factor × the settings' largest
    # lead. The claim order's fair-share term (0 for a team the pass has not seen).
    Column("lead_seconds", Float, nullable=False, server_default=text("0")),
    _ts("updated_at", nullable=False, server_default=text("now()")),
)

# GPUs a host keeps free for a job that does not fit yet (EASY backfill): other jobs
# start there only if their limit ends before starts_at, or on the extra GPUs.
reservations = Table(
    "reservations",
    metadata,
    _job_ref(primary_key=True),
    Column("pool", Text, nullable=False),
    Column("worker_name", Text, nullable=False),
    Column("gpus", Integer, nullable=False),
    # When enough of the host's GPUs free up by the running jobs' limits (null: unknown).
    _ts("starts_at"),
    # GPUs the host has beyond the job's need at starts_at: free for anyone.
    Column("extra_gpus", Integer, nullable=False, server_default=text("0")),
    _ts("planned_at", nullable=False, server_default=text("now()")),
)
Index("ix_reservations_worker_name", reservations.c.worker_name)

# When the scheduling pass expects a queued job to start, and on which host (there it may
# start by its plan, reservation or not); a job without a row: not planned, or unknown.
# Apart from the jobs so that the pass, which rewrites every row of it, never locks a
# job row that a claim would then skip.
expected_starts = Table(
    "expected_starts",
    metadata,
    _job_ref(primary_key=True),
    Column("pool", Text, nullable=False),
    Column("worker_name", Text),
    _ts("starts_at", nullable=False),
)

# Every 100th claimable queued job of each team in each pool, in the team's claim
# order, with its rank there (the number of the team's claimable jobs up to it), as of
# the scheduling pass's last marking. A job far back in a deep queue gets an estimated
# position from the mark just ahead of it in each team (sql._ESTIMATED_AHEAD_OF_J)
# rather than by counting every job ahead. No foreign key: a mark whose job has left
# the queue still marks a place, and the pass rewrites them all.
queue_marks = Table(
    "queue_marks",
    metadata,
    Column("pool", Text, primary_key=True),
    Column("team", Text, primary_key=True),
    _ts("forced_key", primary_key=True),
    Column("neg_priority", Integer, primary_key=True),
    _ts("queued_at", primary_key=True),
    Column("job_id", UUID(as_uuid=True), primary_key=True),
    Column("rank", BigInteger, nullable=False),
)

# One row: when the scheduling pass last ran and last wrote the queue marks (any
# process may run it; one at a time).
scheduler_state = Table(
    "scheduler_state",
    metadata,
    Column("id", Integer, primary_key=True),
    _ts("planned_at"),
    _ts("marked_at"),
    CheckConstraint("id = 1", name="single_row"),
)

workers = Table(
    "workers",
    metadata,
    Column("name", Text, primary_key=True),
    Column("hostname", Text, nullable=False),
    Column("pools", ARRAY(Text), nullable=False),
    Column("kinds", ARRAY(Text), nullable=False),
    Column("gpu_total", Integer, nullable=False),
    Column("gpu_free", Integer, nullable=False),
    # Per-device detail for people: id, name, utilization, memory.
    Column("devices", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    _ts("started_at", nullable=False, server_default=text("now()")),
    _ts("last_heartbeat_at", nullable=False, server_default=text("now()")),
    # Set when the worker stops cleanly, so it is not shown alive until it expires.
    _ts("stopped_at"),
)
