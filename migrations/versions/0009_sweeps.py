"""Sweeps: jobs submitted together and managed as one (``sweeps``; each job's
``sweep_id`` and ``sweep_index``), with a cap on how many of them run at once
(``max_running``, Slurm's ``%N``).

A capped sweep admits at most ``max_running`` of its jobs into the queue: the others
wait with ``sweep_held`` set and are not claimable, so that the claim's indexes (now
over queued jobs not held) never walk past them, however many there are. Two triggers
keep that true on every path a job takes: one decides, as a job comes back to the
queue, whether it is admitted; the other lets the sweep's next held jobs in when one
stops counting (it finished, paused, was cancelled).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A job counts against its sweep's max_running while it runs or waits admitted.
_COUNTS = "(status = 'running' OR (status = 'queued' AND NOT sweep_held))"

ADMIT_FUNCTION = f"""
CREATE FUNCTION jobqueue_sweep_admit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cap int;
BEGIN
    -- A job of a sweep coming back to the queue (resume, retry, requeue) is admitted
    -- while its sweep has fewer than max_running jobs counting; a forced one always.
    IF NEW.sweep_id IS NULL OR NEW.status <> 'queued' OR OLD.status = 'queued' THEN
        RETURN NEW;
    END IF;
    SELECT max_running INTO cap FROM sweeps WHERE id = NEW.sweep_id FOR UPDATE;
    IF cap IS NULL OR NEW.forced_at IS NOT NULL THEN
        NEW.sweep_held := false;
    ELSE
        NEW.sweep_held := (SELECT count(*) FROM jobs WHERE sweep_id = NEW.sweep_id
                           AND id <> NEW.id AND {_COUNTS}) >= cap;
    END IF;
    RETURN NEW;
END
$$
"""

RELEASE_FUNCTION = f"""
CREATE FUNCTION jobqueue_sweep_release() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cap int;
    counting int;
BEGIN
    -- A job that stopped counting against its sweep's max_running lets the sweep's
    -- next held jobs (by index) into the queue. The sweep's row lock orders the
    -- sweep's admissions; held jobs another transaction holds are left for the next.
    IF NOT (OLD.status = 'running' OR (OLD.status = 'queued' AND NOT OLD.sweep_held))
       OR NEW.status = 'running' OR (NEW.status = 'queued' AND NOT NEW.sweep_held) THEN
        RETURN NULL;
    END IF;
    SELECT max_running INTO cap FROM sweeps WHERE id = OLD.sweep_id FOR UPDATE;
    IF cap IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT count(*) INTO counting FROM jobs WHERE sweep_id = OLD.sweep_id AND {_COUNTS};
    IF counting < cap THEN
        UPDATE jobs SET sweep_held = false, updated_at = now()
        WHERE id IN (SELECT id FROM jobs
                     WHERE sweep_id = OLD.sweep_id AND status = 'queued' AND sweep_held
                     ORDER BY sweep_index LIMIT cap - counting FOR UPDATE SKIP LOCKED);
    END IF;
    RETURN NULL;
END
$$
"""

# As in 0001, and a job let in by its sweep wakes the pool's workers too.
NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION jobqueue_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'queued' AND NOT NEW.sweep_held
       AND (TG_OP = 'INSERT' OR OLD.status <> 'queued' OR OLD.sweep_held
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

OLD_NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION jobqueue_notify() RETURNS trigger LANGUAGE plpgsql AS $$
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

# The claim's indexes, over the jobs a claim may take: queued and not held by a sweep.
RANK_INDEXES = {
    "ix_jobs_claim_order": (
        "(forced_at ASC NULLS LAST, priority DESC, queued_at, id)",
        "",
    ),
    "ix_jobs_queue_rank": (
        "(pool, COALESCE(forced_at, 'infinity'::timestamp with time zone), (-priority),"
        " queued_at, id)",
        " INCLUDE (not_before)",
    ),
    "ix_jobs_team_rank": (
        "(pool, team, COALESCE(forced_at, 'infinity'::timestamp with time zone), (-priority),"
        " queued_at, id)",
        "",
    ),
}


def _rank_indexes(where: str) -> None:
    for name, (columns, include) in RANK_INDEXES.items():
        op.execute(f"DROP INDEX {name}")
        op.execute(f"CREATE INDEX {name} ON jobs {columns}{include} WHERE {where}")


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column(
            "id",
            postgresql.UUID(as_uuid=True),
            server_default=sa.text("gen_random_uuid()"),
            primary_key=True,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("team", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("max_running", sa.Integer()),
        sa.Column("objective", postgresql.JSONB()),
        sa.Column("job_count", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.Text()),
        sa.Column("request_fingerprint", sa.Text()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("max_running IS NULL OR max_running >= 1",
                           name="ck_sweeps_max_running_positive"),
    )  # fmt: skip
    op.create_index(
        "uq_sweeps_idempotency_key",
        "sweeps",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "ix_sweeps_team_created", "sweeps", ["team", sa.text("created_at DESC"), sa.text("id DESC")]
    )
    op.create_index("ix_sweeps_created", "sweeps", [sa.text("created_at DESC"), sa.text("id DESC")])
    op.add_column(
        "jobs",
        sa.Column(
            "sweep_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("sweeps.id", name="fk_jobs_sweep_id_sweeps"),
        ),
    )
    op.add_column("jobs", sa.Column("sweep_index", sa.Integer()))
    op.add_column(
        "jobs",
        sa.Column("sweep_held", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_check_constraint(
        "ck_jobs_sweep_index_with_sweep", "jobs", "(sweep_id IS NULL) = (sweep_index IS NULL)"
    )
    op.create_check_constraint(
        "ck_jobs_held_only_in_a_sweep", "jobs", "NOT sweep_held OR sweep_id IS NOT NULL"
    )
    op.create_index(
        "ix_jobs_sweep_index", "jobs", ["sweep_id", "sweep_index"],
        postgresql_where=sa.text("sweep_id IS NOT NULL"),
    )  # fmt: skip
    _rank_indexes("status = 'queued' AND NOT sweep_held")
    op.execute(ADMIT_FUNCTION)
    op.execute(RELEASE_FUNCTION)
    op.execute(
        "CREATE TRIGGER jobs_sweep_admit BEFORE UPDATE OF status ON jobs FOR EACH ROW"
        " WHEN (NEW.sweep_id IS NOT NULL) EXECUTE FUNCTION jobqueue_sweep_admit()"
    )
    op.execute(
        "CREATE TRIGGER jobs_sweep_release AFTER UPDATE OF status ON jobs FOR EACH ROW"
        " WHEN (OLD.sweep_id IS NOT NULL) EXECUTE FUNCTION jobqueue_sweep_release()"
    )
    op.execute(NOTIFY_FUNCTION)
    # Called only for rows it may notify about: a bulk action on a sweep changes
    # thousands of rows that it would otherwise be called for in vain.
    op.execute("DROP TRIGGER jobs_notify ON jobs")
    op.execute(
        "CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE ON jobs FOR EACH ROW"
        " WHEN (NEW.status = 'queued' OR NEW.requested_action IS NOT NULL)"
        " EXECUTE FUNCTION jobqueue_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_notify ON jobs")
    op.execute(
        "CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE ON jobs"
        " FOR EACH ROW EXECUTE FUNCTION jobqueue_notify()"
    )
    op.execute(OLD_NOTIFY_FUNCTION)
    op.execute("DROP TRIGGER jobs_sweep_release ON jobs")
    op.execute("DROP TRIGGER jobs_sweep_admit ON jobs")
    op.execute("DROP FUNCTION jobqueue_sweep_release()")
    op.execute("DROP FUNCTION jobqueue_sweep_admit()")
    # Held jobs join the queue: without sweeps nothing holds them back.
    _rank_indexes("status = 'queued'")
    op.drop_index("ix_jobs_sweep_index", table_name="jobs")
    op.drop_constraint("ck_jobs_held_only_in_a_sweep", "jobs", type_="check")
    op.drop_constraint("ck_jobs_sweep_index_with_sweep", "jobs", type_="check")
    op.drop_column("jobs", "sweep_held")
    op.drop_column("jobs", "sweep_index")
    op.drop_column("jobs", "sweep_id")
    op.drop_index("ix_sweeps_created", table_name="sweeps")
    op.drop_index("ix_sweeps_team_created", table_name="sweeps")
    op.drop_index("uq_sweeps_idempotency_key", table_name="sweeps")
    op.drop_table("sweeps")
