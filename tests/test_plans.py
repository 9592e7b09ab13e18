"""The hot statements reach jobs through an index, never by reading the whole table.

Their cost must not grow with the depth of the queue; a partial index whose predicate a
query's WHERE no longer implies (say after a new column joins the claimable rows'
definition) silently turns it into a scan of every job. Over a queue of 20,000 jobs with
fresh statistics, PostgreSQL plans as it would in production: these tests read its
plans, without timing anything.

Not here, because they read every queued job by what they are: the full queue listing
(``GET /api/queue``), the teams' queued counts (``GET /api/teams``), and the scheduling
pass's pools, oldest job and queue marks (one process, every few seconds).
"""

from __future__ import annotations

from uuid import uuid4

import pytest
from sqlalchemy import TextClause, text
from sqlalchemy.sql.selectable import TextualSelect

from jobqueue import claim_sql, planner_sql, sql
from jobqueue.db import make_engine

ID = str(uuid4())
STATEMENTS = {
    "GET of a job (JOB_WITH_WAIT)": (
        sql.JOB_WITH_WAIT, {"id": ID, "alive_seconds": 30, "exact_positions": 500}),
    "positions of a page (QUEUE_ORDER_OF)": (
        sql.QUEUE_ORDER_OF, {"pools": ["default"], "ids": [ID], "exact_positions": 500}),
    "claim candidates": (
        claim_sql.CLAIM_CANDIDATES, {"pools": ["default"], "kinds": ["train"], "scan": 16,
                                     "per_team": 4, "free_gpus": 4, "worker": "w"}),
    "claim candidates past held rows": (
        claim_sql.CLAIM_CANDIDATES_PAST_LOCKED, {"pools": ["default"], "kinds": ["train"],
                                                 "scan": 16, "per_team": 4, "free_gpus": 4,
                                                 "worker": "w"}),
    "the pass's queue (PLAN_QUEUE)": (planner_sql.PLAN_QUEUE, {"pool": "default", "depth": 100}),
}  # fmt: skip


def _text(statement: TextClause | TextualSelect) -> str:
    return statement.element.text if isinstance(statement, TextualSelect) else statement.text


DEEP = 20_000


@pytest.fixture(scope="module")
def deep_engine(databases):
    """A database of DEEP queued jobs of four teams, analysed."""
    url = databases.create()
    engine = make_engine(url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO jobs (name, kind, config, status, pool, team, gpus, priority,
                              queued_at, max_attempts, max_interruptions)
            SELECT 'j' || g, 'train', '{}', 'queued', 'default', 'team-' || mod(g, 4), 1, 50,
                   now() + g * interval '1 microsecond', 3, 10
            FROM generate_series(1, :n) AS g
        """), {"n": DEEP})  # fmt: skip
        conn.execute(text("INSERT INTO team_standing (team) SELECT DISTINCT team FROM jobs"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    try:
        yield engine
    finally:
        engine.dispose()
        databases.drop(url)


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_a_hot_statement_reads_jobs_through_an_index(deep_engine, name):
    statement, params = STATEMENTS[name]
    with deep_engine.connect() as conn:
        plan = "\n".join(
            row[0] for row in conn.execute(text("EXPLAIN " + _text(statement)), params)
        )
    scans = [line.strip() for line in plan.splitlines() if "Seq Scan on jobs" in line]
    assert not scans, f"{name} reads every job:\n{plan}"
