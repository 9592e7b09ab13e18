"""The scheduling pass's expected starts move from ``jobs`` to their own table
``expected_starts``, so that the pass, which rewrites them all, never locks a job row
(a claim's SKIP LOCKED would pass over that job); and each team's standing gets the
lead in the claim order that its fair-share factor earns (``lead_seconds``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "team_standing",
        sa.Column("lead_seconds", sa.Float(), server_default=sa.text("0"), nullable=False),
    )
    op.create_table(
        "expected_starts",
        sa.Column(
            "job_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("jobs.id", ondelete="CASCADE", name="fk_expected_starts_job_id_jobs"),
            primary_key=True,
        ),
        sa.Column("pool", sa.Text(), nullable=False),
        sa.Column("worker_name", sa.Text()),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(
        "INSERT INTO expected_starts (job_id, pool, worker_name, starts_at)"
        " SELECT id, pool, expected_worker, expected_start_at FROM jobs"
        " WHERE status = 'queued' AND expected_start_at IS NOT NULL"
    )
    op.drop_index("ix_jobs_expected_start", table_name="jobs")
    op.drop_column("jobs", "expected_worker")
    op.drop_column("jobs", "expected_start_at")


def downgrade() -> None:
    op.add_column("jobs", sa.Column("expected_start_at", sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("expected_worker", sa.Text()))
    op.create_index(
        "ix_jobs_expected_start",
        "jobs",
        ["expected_start_at"],
        postgresql_where=sa.text("expected_start_at IS NOT NULL"),
    )
    op.execute(
        "UPDATE jobs SET expected_start_at = e.starts_at, expected_worker = e.worker_name"
        " FROM expected_starts e WHERE e.job_id = jobs.id"
    )
    op.drop_table("expected_starts")
    op.drop_column("team_standing", "lead_seconds")
