"""Time limits: a job's ``max_runtime_seconds``, and ``time_limit`` as a way to end.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINISHED = "('completed', 'failed', 'cancelled')"
BEFORE = (
    "'completed', 'exit_code', 'signal', 'cancelled', 'marked_failed', "
    "'max_interruptions', 'spawn_failed'"
)
AFTER = BEFORE + ", 'time_limit'"
CONSTRAINT = "ck_jobs_finished_iff_termination_reason"


def _termination_check(reasons: str) -> None:
    op.drop_constraint(CONSTRAINT, "jobs", type_="check")
    op.create_check_constraint(
        CONSTRAINT,
        "jobs",
        f"(status IN {FINISHED}) = (termination_reason IS NOT NULL)"
        f" AND (termination_reason IS NULL OR termination_reason IN ({reasons}))",
    )


def upgrade() -> None:
    op.add_column("jobs", sa.Column("max_runtime_seconds", sa.Integer(), nullable=True))
    op.create_check_constraint(
        "ck_jobs_max_runtime_positive",
        "jobs",
        "max_runtime_seconds IS NULL OR max_runtime_seconds > 0",
    )
    _termination_check(AFTER)


def downgrade() -> None:
    # The older schema has no such reason: a job stopped at its limit was ended by a signal.
    op.execute(
        "UPDATE jobs SET termination_reason = 'signal' WHERE termination_reason = 'time_limit'"
    )
    _termination_check(BEFORE)
    op.drop_constraint("ck_jobs_max_runtime_positive", "jobs", type_="check")
    op.drop_column("jobs", "max_runtime_seconds")
