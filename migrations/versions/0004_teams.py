"""Teams and owners: every job belongs to a team and has an owner; teams are rows.

``jobs.team`` (existing jobs: ``default``) and ``jobs.owner`` (existing jobs: the
actor of their submit event). ``teams`` holds what admins set per team: its
fair-share weight and its GPU quota per pool.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    now = sa.text("now()")
    op.create_table(
        "teams",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("share", sa.Float(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "quota_gpus", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.CheckConstraint("share > 0", name="ck_teams_share_positive"),
    )
    op.add_column(
        "jobs", sa.Column("team", sa.Text(), server_default=sa.text("'default'"), nullable=False)
    )
    op.add_column(
        "jobs", sa.Column("owner", sa.Text(), server_default=sa.text("''"), nullable=False)
    )
    op.execute(
        "UPDATE jobs SET owner = e.actor FROM job_events e"
        " WHERE e.job_id = jobs.id AND e.action = 'submit'"
    )
    op.create_index(
        "ix_jobs_team_created", "jobs", ["team", sa.text("created_at DESC"), sa.text("id DESC")]
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_team_created", table_name="jobs")
    op.drop_column("jobs", "owner")
    op.drop_column("jobs", "team")
    op.drop_table("teams")
