"""Jobs, their events, log lines and metrics, and workers.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("pending", "queued", "running", "paused", "completed", "failed", "cancelled")
FINISHED = "('completed', 'failed', 'cancelled')"
REQUESTS = "'pause', 'cancel', 'fail'"
TERMINATIONS = (
    "'completed', 'exit_code', 'signal', 'cancelled', 'marked_failed', "
    "'max_interruptions', 'spawn_failed'"
)

# Wakes workers (LISTEN jobqueue_jobs) when a job becomes claimable or moves up, and
# the worker running a job (LISTEN jobqueue_actions) when someone asks it to stop.
NOTIFY_FUNCTION = """
CREATE FUNCTION jobqueue_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'queued' AND (TG_OP = 'INSERT' OR OLD.status <> 'queued'
            OR NEW.forced_at IS DISTINCT FROM OLD.forced_at OR NEW.pool <> OLD.pool
            OR NEW.priority <> OLD.priority OR NEW.not_before IS DISTINCT FROM OLD.not_before) THEN
        PERFORM pg_notify('jobqueue_jobs', NEW.pool);
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.status = 'running' AND NEW.requested_action IS NOT NULL
            AND (NEW.requested_action IS DISTINCT FROM OLD.requested_action
                 OR (NEW.request_kill AND NOT OLD.request_kill)) THEN
        PERFORM pg_notify('jobqueue_actions', NEW.worker_name || ' ' || NEW.id::text);
    END IF;
    RETURN NULL;
END
$$
"""

job_status = postgresql.ENUM(*STATUSES, name="job_status", create_type=False)


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


def upgrade() -> None:
    job_status.create(op.get_bind(), checkfirst=False)
    op.create_table(
        "jobs",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("config", postgresql.JSONB(), nullable=False),
        sa.Column("status", job_status, nullable=False),
        sa.Column("pool", sa.Text(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        _ts("forced_at"),
        _ts("queued_at", nullable=False),
        _ts("not_before"),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("interruptions", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_interruptions", sa.Integer(), nullable=False),
        sa.Column("progress", postgresql.JSONB()),
        sa.Column("checkpoint", postgresql.JSONB()),
        sa.Column("worker_name", sa.Text()),
        sa.Column("gpu_ids", postgresql.ARRAY(sa.Integer())),
        sa.Column("lease_token", sa.UUID()),
        _ts("lease_expires_at"),
        sa.Column("requested_action", sa.Text()),
        sa.Column("requested_by", sa.Text()),
        sa.Column("request_reason", sa.Text()),
        sa.Column("request_kill", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("termination_reason", sa.Text()),
        sa.Column("exit_code", sa.Integer()),
        sa.Column("signal", sa.Integer()),
        sa.Column("error_message", sa.Text()),
        sa.Column("log_tail", postgresql.JSONB()),
        sa.Column("log_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("idempotency_key", sa.Text()),
        sa.Column("request_fingerprint", sa.Text()),
        _ts("created_at", server_default=sa.text("now()"), nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        _ts("updated_at", server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("gpus BETWEEN 0 AND 64", name="ck_jobs_gpus_range"),
        sa.CheckConstraint("priority BETWEEN 0 AND 100", name="ck_jobs_priority_range"),
        sa.CheckConstraint("attempt BETWEEN 1 AND max_attempts", name="ck_jobs_attempt_range"),
        sa.CheckConstraint("max_attempts BETWEEN 1 AND 100", name="ck_jobs_max_attempts_range"),
        sa.CheckConstraint("interruptions >= 0", name="ck_jobs_interruptions_range"),
        sa.CheckConstraint(
            "max_interruptions BETWEEN 0 AND 1000", name="ck_jobs_max_interruptions_range"
        ),
        sa.CheckConstraint(
            "status <> 'running' OR (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL"
            " AND worker_name IS NOT NULL AND started_at IS NOT NULL)",
            name="ck_jobs_running_has_lease",
        ),
        sa.CheckConstraint(
            "status = 'running' OR lease_token IS NULL", name="ck_jobs_lease_only_when_running"
        ),
        sa.CheckConstraint(
            "requested_action IS NULL"
            f" OR (status = 'running' AND requested_action IN ({REQUESTS}))",
            name="ck_jobs_request_only_when_running",
        ),
        sa.CheckConstraint(
            f"(status IN {FINISHED}) = (finished_at IS NOT NULL)",
            name="ck_jobs_finished_iff_finished_at",
        ),
        sa.CheckConstraint(
            f"(status IN {FINISHED}) = (termination_reason IS NOT NULL)"
            f" AND (termination_reason IS NULL OR termination_reason IN ({TERMINATIONS}))",
            name="ck_jobs_finished_iff_termination_reason",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index(
        "uq_jobs_idempotency_key",
        "jobs",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "ix_jobs_claim_order",
        "jobs",
        [
            sa.text("forced_at ASC NULLS LAST"),
            sa.text("priority DESC"),
            "queued_at",
            "id",
        ],
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index("ix_jobs_created", "jobs", [sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index(
        "ix_jobs_status_created",
        "jobs",
        ["status", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_jobs_lease_expiry",
        "jobs",
        ["lease_expires_at"],
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index(
        "ix_jobs_finished",
        "jobs",
        ["finished_at"],
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )

    op.create_table(
        "job_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        _ts("at", server_default=sa.text("now()"), nullable=False),
        sa.Column("from_status", job_status),
        sa.Column("to_status", job_status, nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_events_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_job_events"),
    )
    op.create_index("ix_job_events_job", "job_events", ["job_id", "id"])

    op.create_table(
        "job_logs",
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        _ts("at", server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_logs_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "n", name="pk_job_logs"),
    )

    op.create_table(
        "job_metrics",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("step", sa.BigInteger()),
        _ts("at", server_default=sa.text("now()"), nullable=False),
        sa.Column("metrics", postgresql.JSONB(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_metrics_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_job_metrics"),
    )
    op.create_index("ix_job_metrics_job", "job_metrics", ["job_id", "id"])

    op.execute(NOTIFY_FUNCTION)
    op.execute(
        "CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE ON jobs"
        " FOR EACH ROW EXECUTE FUNCTION jobqueue_notify()"
    )

    op.create_table(
        "workers",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("pools", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("kinds", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("gpu_total", sa.Integer(), nullable=False),
        sa.Column("gpu_free", sa.Integer(), nullable=False),
        sa.Column(
            "devices", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        _ts("started_at", server_default=sa.text("now()"), nullable=False),
        _ts("last_heartbeat_at", server_default=sa.text("now()"), nullable=False),
        _ts("stopped_at"),
        sa.PrimaryKeyConstraint("name", name="pk_workers"),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.execute("DROP TRIGGER jobs_notify ON jobs")
    op.execute("DROP FUNCTION jobqueue_notify()")
    op.drop_index("ix_job_metrics_job", table_name="job_metrics")
    op.drop_table("job_metrics")
    op.drop_table("job_logs")
    op.drop_index("ix_job_events_job", table_name="job_events")
    op.drop_table("job_events")
    for name in (
        "uq_jobs_idempotency_key",
        "ix_jobs_finished",
        "ix_jobs_lease_expiry",
        "ix_jobs_status_created",
        "ix_jobs_created",
        "ix_jobs_claim_order",
    ):
        op.drop_index(name, table_name="jobs")
    op.drop_table("jobs")
    job_status.drop(op.get_bind(), checkfirst=False)
