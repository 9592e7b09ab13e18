"""Index for queue positions: the claim order as one ascending key per pool.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_jobs_queue_rank ON jobs (pool,"
        " COALESCE(forced_at, 'infinity'::timestamp with time zone), (-priority), queued_at, id)"
        " INCLUDE (not_before) WHERE status = 'queued'"
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_queue_rank", table_name="jobs")
