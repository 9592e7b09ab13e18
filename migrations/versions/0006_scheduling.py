"""Fair scheduling: team standing (decayed usage, fair-share factor), reservations,
the scheduling pass's own row, and ``jobs.expected_start_at``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


REQUEST_CHECK = "ck_jobs_request_only_when_running"


def _request_check(requests: str) -> None:
    op.drop_constraint(REQUEST_CHECK, "jobs", type_="check")
    op.create_check_constraint(
        REQUEST_CHECK,
        "jobs",
        f"requested_action IS NULL OR (status = 'running' AND requested_action IN ({requests}))",
    )


def upgrade() -> None:
    now = sa.text("now()")
    op.add_column(
        "jobs",
        sa.Column("preemptible", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )
    op.add_column(
        "jobs", sa.Column("preempted", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    _request_check("'pause', 'cancel', 'fail', 'preempt'")
    op.add_column("jobs", sa.Column("expected_start_at", sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("expected_worker", sa.Text()))
    op.create_index(
        "ix_jobs_expected_start",
        "jobs",
        ["expected_start_at"],
        postgresql_where=sa.text("expected_start_at IS NOT NULL"),
    )
    op.create_table(
        "team_standing",
        sa.Column("team", sa.Text(), primary_key=True),
        sa.Column("usage_gpu_seconds", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("usage_fraction", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("share_fraction", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("factor", sa.Float(), server_default=sa.text("1"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
    )
    # Every team that has jobs is in play: the claim reads the teams from here.
    op.execute(
        "INSERT INTO team_standing (team) SELECT 'default' UNION SELECT DISTINCT team FROM jobs"
    )
    op.execute(
        "CREATE INDEX ix_jobs_team_rank ON jobs (pool, team,"
        " COALESCE(forced_at, 'infinity'::timestamp with time zone), (- priority), queued_at, id)"
        " WHERE status = 'queued'"
    )
    op.create_table(
        "reservations",
        sa.Column(
            "job_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("jobs.id", ondelete="CASCADE", name="fk_reservations_job_id_jobs"),
            primary_key=True,
        ),
        sa.Column("pool", sa.Text(), nullable=False),
        sa.Column("worker_name", sa.Text(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True)),
        sa.Column("extra_gpus", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("planned_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
    )
    op.create_index("ix_reservations_worker_name", "reservations", ["worker_name"])
    op.create_table(
        "scheduler_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("planned_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("id = 1", name="ck_scheduler_state_single_row"),
    )
    op.execute("INSERT INTO scheduler_state (id) VALUES (1)")


def downgrade() -> None:
    # The older schema knows no preempt request: those jobs just keep running.
    op.execute(
        "UPDATE jobs SET requested_action = NULL, requested_by = NULL, request_reason = NULL"
        " WHERE requested_action = 'preempt'"
    )
    _request_check("'pause', 'cancel', 'fail'")
    op.drop_column("jobs", "preempted")
    op.drop_column("jobs", "preemptible")
    op.drop_table("scheduler_state")
    op.drop_index("ix_reservations_worker_name", table_name="reservations")
    op.drop_table("reservations")
    op.drop_index("ix_jobs_team_rank", table_name="jobs")
    op.drop_table("team_standing")
    op.drop_index("ix_jobs_expected_start", table_name="jobs")
    op.drop_column("jobs", "expected_worker")
    op.drop_column("jobs", "expected_start_at")
