"""Queue marks: every 100th queued job of each team in each pool, with its rank in its
team's queue, written by the scheduling pass, so that a job far back in a deep queue
gets an estimated position from a few index probes instead of counting every job
ahead of it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_marks",
        sa.Column("pool", sa.Text(), nullable=False),
        sa.Column("team", sa.Text(), nullable=False),
        sa.Column("forced_key", sa.DateTime(timezone=True), nullable=False),
        sa.Column("neg_priority", sa.Integer(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("rank", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "pool", "team", "forced_key", "neg_priority", "queued_at", "job_id",
            name="pk_queue_marks",
        ),
    )  # fmt: skip
    op.add_column("scheduler_state", sa.Column("marked_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("scheduler_state", "marked_at")
    op.drop_table("queue_marks")
