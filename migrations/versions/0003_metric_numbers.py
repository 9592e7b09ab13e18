"""Metric points numbered per job, like log lines.

``jobs.metric_count`` is the number of the job's last metric point and
``job_metrics.n`` each point's number (from 1). Trimming a job's chart to its
newest points then needs only the job's own count, and a client can fetch the
points after the last one it has.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("metric_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("job_metrics", sa.Column("n", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE job_metrics m SET n = numbered.n FROM ("
        " SELECT id, row_number() OVER (PARTITION BY job_id ORDER BY id) AS n FROM job_metrics"
        ") numbered WHERE m.id = numbered.id"
    )
    op.execute(
        "UPDATE jobs SET metric_count = counted.n FROM ("
        " SELECT job_id, max(n) AS n FROM job_metrics GROUP BY job_id"
        ") counted WHERE jobs.id = counted.job_id"
    )
    op.alter_column("job_metrics", "n", nullable=False)
    op.drop_index("ix_job_metrics_job", table_name="job_metrics")
    op.create_index("ix_job_metrics_job_n", "job_metrics", ["job_id", "n"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_job_metrics_job_n", table_name="job_metrics")
    op.create_index("ix_job_metrics_job", "job_metrics", ["job_id", "id"])
    op.drop_column("job_metrics", "n")
    op.drop_column("jobs", "metric_count")
