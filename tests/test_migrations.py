"""Migrations as ops run them: the alembic CLI from the repo root, and `jobqueue migrate`.

Each test that migrates starts from an empty database of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from jobqueue import migrate
from jobqueue.db import connect_raw, libpq_conninfo, make_engine
from jobqueue.errors import SchemaNotAtHead
from jobqueue.listener import ACTIONS_CHANNEL, JOBS_CHANNEL
from jobqueue.queue import JobQueue
from jobqueue.schema import metadata
from jobqueue.settings import Settings
from jobqueue.states import JobStatus
from jobqueue.sweep_specs import SweepSpec
from jobqueue.testing import DatabaseFactory
from jobqueue.worker_store import WorkerIdentity, WorkerStore
from tests.helpers import spec

REPO = Path(__file__).resolve().parents[1]
TABLES = {"jobs", "job_events", "job_logs", "job_metrics", "workers"}
CLI_TIMEOUT = 60


def alembic_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`alembic -c alembic.ini …` from the repository root, the database in DATABASE_URL."""
    script = Path(sys.executable).parent / "alembic"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "alembic"]
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run(
        [*command, "-c", "alembic.ini", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"alembic {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def empty_url(databases: DatabaseFactory) -> Iterator[str]:
    url = databases.create(migrated=False)
    try:
        yield url
    finally:
        databases.drop(url)


@pytest.fixture
def empty_engine(empty_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_url, pool_size=2)
    try:
        yield engine
    finally:
        engine.dispose()


def head() -> str:
    current = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    assert current is not None
    return current


def tables(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
        )


def has_type(engine: Engine, name: str) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text("SELECT count(*) FROM pg_type WHERE typname = :n"), {"n": name}
            ).scalar_one()
        )


def has_function(engine: Engine, name: str) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text("SELECT count(*) FROM pg_proc WHERE proname = :n"), {"n": name}
            ).scalar_one()
        )


def version(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def assert_at_head(engine: Engine) -> None:
    assert tables(engine) >= TABLES
    assert has_type(engine, "job_status")
    assert has_function(engine, "jobqueue_notify")
    assert version(engine) == head()
    assert migrate.schema_status(engine).at_head


def assert_gone(engine: Engine) -> None:
    # alembic keeps its (now empty) version table; everything of jobqueue is gone.
    assert tables(engine) <= {"alembic_version"}
    assert not has_type(engine, "job_status")
    assert not has_function(engine, "jobqueue_notify")
    assert version(engine) is None


def assert_usable(engine: Engine, url: str) -> None:
    """The migrated schema does what the code needs: submit, claim, finish."""
    from jobqueue.outcomes import Exit

    settings = Settings(database_url=url, state_dir="/nonexistent")
    queue = JobQueue(engine, settings)
    store = WorkerStore(engine, settings)
    job, created = queue.submit(spec(gpus=0), actor="ops")
    assert created and job.status is JobStatus.QUEUED
    worker = WorkerIdentity(name="m", kinds=("train",))
    (claimed,) = store.claim(worker, free_gpu_ids=[], slots=1)
    done = store.finish(claimed.id, claimed.lease_token, Exit(exit_code=0), actor=worker.actor)
    assert done.status is JobStatus.COMPLETED


# -- up, down, up ---------------------------------------------------------------------------------


def test_alembic_cli_upgrade_downgrade_upgrade(empty_url, empty_engine):
    assert tables(empty_engine) == set()

    alembic_cli(empty_url, "upgrade", "head")
    assert_at_head(empty_engine)
    assert_usable(empty_engine, empty_url)

    alembic_cli(empty_url, "downgrade", "base")
    assert_gone(empty_engine)

    alembic_cli(empty_url, "upgrade", "head")
    assert_at_head(empty_engine)
    assert_usable(empty_engine, empty_url)

    # `alembic current` agrees.
    assert head() in alembic_cli(empty_url, "current").stdout


def test_alembic_cli_upgrade_is_idempotent_at_head(empty_url, empty_engine):
    alembic_cli(empty_url, "upgrade", "head")
    alembic_cli(empty_url, "upgrade", "head")  # nothing to do, no error
    assert_at_head(empty_engine)


def test_migrate_module_upgrade_downgrade_upgrade(empty_url, empty_engine):
    migrate.upgrade(empty_url)
    assert_at_head(empty_engine)
    migrate.require_head(empty_engine)

    migrate.downgrade(empty_url, "base")
    assert_gone(empty_engine)
    with pytest.raises(SchemaNotAtHead):
        migrate.require_head(empty_engine)

    migrate.upgrade(empty_url)
    assert_at_head(empty_engine)
    assert_usable(empty_engine, empty_url)


def test_migrate_accepts_plain_postgresql_url(empty_url, empty_engine):
    """Ops paste `postgresql://…`; it must mean psycopg 3, not a missing psycopg2."""
    plain = empty_url.replace("postgresql+psycopg://", "postgresql://", 1)
    assert plain.startswith("postgresql://")
    migrate.upgrade(plain)
    assert_at_head(empty_engine)


def insert_old_job(conn, job_id) -> None:
    """A queued job written with only the columns every revision has (an older schema)."""
    conn.execute(
        text(
            "INSERT INTO jobs (id, name, kind, config, status, pool, gpus, priority,"
            " queued_at, max_attempts, max_interruptions)"
            " VALUES (:id, 'j', 'train', '{}', 'queued', 'default', 1, 50, now(), 3, 10)"
        ),
        {"id": job_id},
    )


def test_upgrade_to_0003_numbers_existing_metric_points_per_job(empty_url, empty_engine):
    migrate.upgrade(empty_url, "0002")
    first, second = uuid4(), uuid4()
    with empty_engine.begin() as conn:
        for job_id in (first, second):
            insert_old_job(conn, job_id)
        for job_id, step in [(first, 1), (second, 1), (first, 2), (first, 3), (second, 2)]:
            conn.execute(
                text("INSERT INTO job_metrics (job_id, step, metrics) VALUES (:id, :s, '{}')"),
                {"id": job_id, "s": step},
            )
    migrate.upgrade(empty_url)
    with empty_engine.connect() as conn:
        numbered = conn.execute(
            text("SELECT job_id, n, step FROM job_metrics ORDER BY job_id, n")
        ).all()
        counts = dict(conn.execute(text("SELECT id, metric_count FROM jobs")).all())
    assert sorted((j, n, s) for j, n, s in numbered) == sorted(
        [(first, 1, 1), (first, 2, 2), (first, 3, 3), (second, 1, 1), (second, 2, 2)]
    )
    assert counts == {first: 3, second: 2}


def test_upgrade_to_0004_puts_old_jobs_in_the_default_team_owned_by_their_submitter(
    empty_url, empty_engine
):
    migrate.upgrade(empty_url, "0003")
    job_id = uuid4()
    with empty_engine.begin() as conn:
        insert_old_job(conn, job_id)
        conn.execute(
            text(
                "INSERT INTO job_events (job_id, to_status, action, actor)"
                " VALUES (:id, 'queued', 'submit', 'ci-bot')"
            ),
            {"id": job_id},
        )
    migrate.upgrade(empty_url)
    with empty_engine.connect() as conn:
        row = conn.execute(text("SELECT team, owner FROM jobs")).one()
    assert tuple(row) == ("default", "ci-bot")
    migrate.downgrade(empty_url, "0003")
    with empty_engine.connect() as conn:
        columns = (
            conn.execute(
                text("SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs'")
            )
            .scalars()
            .all()
        )
        teams = conn.execute(text("SELECT to_regclass('teams')")).scalar_one()
    assert "team" not in columns and "owner" not in columns and teams is None


def test_0005_adds_time_limits_and_its_downgrade_keeps_time_limited_jobs_valid(
    empty_url, empty_engine
):
    migrate.upgrade(empty_url)
    job_id = uuid4()
    with empty_engine.begin() as conn:
        insert_old_job(conn, job_id)
        conn.execute(
            text(
                "UPDATE jobs SET status = 'failed', finished_at = now(), max_runtime_seconds = 60,"
                " termination_reason = 'time_limit' WHERE id = :id"
            ),
            {"id": job_id},
        )
        with pytest.raises(IntegrityError, match="max_runtime_positive"), conn.begin_nested():
            conn.execute(text("UPDATE jobs SET max_runtime_seconds = 0"))
    migrate.downgrade(empty_url, "0004")
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT termination_reason FROM jobs")).scalar_one() == "signal"
    migrate.upgrade(empty_url)
    assert_at_head(empty_engine)


def test_0006_old_jobs_are_preemptible_and_its_downgrade_drops_preempt_requests(
    empty_url, empty_engine
):
    migrate.upgrade(empty_url, "0005")
    job_id = uuid4()
    with empty_engine.begin() as conn:
        insert_old_job(conn, job_id)
    migrate.upgrade(empty_url, "0006")
    with empty_engine.begin() as conn:
        row = conn.execute(text("SELECT preemptible, preempted, expected_start_at FROM jobs")).one()
        assert tuple(row) == (True, 0, None)
        assert conn.execute(text("SELECT planned_at FROM scheduler_state")).one() == (None,)
        conn.execute(
            text(
                "UPDATE jobs SET status = 'running', worker_name = 'w', started_at = now(),"
                " lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 min',"
                " requested_action = 'preempt', requested_by = 'scheduler' WHERE id = :id"
            ),
            {"id": job_id},
        )
        conn.execute(
            text(
                "INSERT INTO reservations (job_id, pool, worker_name, gpus)"
                " VALUES (:id, 'default', 'w', 1)"
            ),
            {"id": job_id},
        )
    migrate.downgrade(empty_url, "0005")
    with empty_engine.connect() as conn:
        # The older schema has no preempt request: the job just keeps running.
        row = conn.execute(text("SELECT status, requested_action FROM jobs")).one()
        assert tuple(row) == ("running", None)
        assert conn.execute(text("SELECT to_regclass('reservations')")).scalar_one() is None
    migrate.upgrade(empty_url)
    assert_at_head(empty_engine)


def test_0007_moves_expected_starts_to_their_own_table_and_back(empty_url, empty_engine):
    migrate.upgrade(empty_url, "0006")
    planned, started = uuid4(), uuid4()
    with empty_engine.begin() as conn:
        for job_id in (planned, started):
            insert_old_job(conn, job_id)
        conn.execute(
            text(
                "UPDATE jobs SET expected_start_at = '2026-12-03 12:00+00', expected_worker = 'h1'"
            )
        )
        conn.execute(
            text(
                "UPDATE jobs SET status = 'running', worker_name = 'h1', started_at = now(),"
                " lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 min'"
                " WHERE id = :id"
            ),
            {"id": started},
        )
    migrate.upgrade(empty_url, "0007")
    with empty_engine.begin() as conn:
        # Only a queued job's estimate means anything: the running one's is dropped.
        rows = conn.execute(text("SELECT job_id, worker_name, starts_at FROM expected_starts"))
        [(job_id, worker, at)] = rows.all()
        assert (job_id, worker, at) == (planned, "h1", datetime(2026, 12, 3, 12, tzinfo=UTC))
    migrate.downgrade(empty_url, "0006")
    with empty_engine.connect() as conn:
        rows = conn.execute(text("SELECT id, expected_worker FROM jobs WHERE expected_start_at"
                                 " IS NOT NULL")).all()  # fmt: skip
        assert rows == [(planned, "h1")]
        assert conn.execute(text("SELECT to_regclass('expected_starts')")).scalar_one() is None
    migrate.upgrade(empty_url)
    assert_at_head(empty_engine)


def test_0008_adds_the_queue_marks_and_its_downgrade_drops_them(empty_url, empty_engine):
    migrate.upgrade(empty_url, "0007")
    queued = uuid4()
    with empty_engine.begin() as conn:
        insert_old_job(conn, queued)
    migrate.upgrade(empty_url, "0008")
    with empty_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO queue_marks (pool, team, forced_key, neg_priority, queued_at,"
                " job_id, rank) SELECT pool, team, 'infinity', -priority, queued_at, id, 100"
                " FROM jobs"
            )
        )
        conn.execute(text("UPDATE scheduler_state SET marked_at = now()"))
    migrate.downgrade(empty_url, "0007")
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('queue_marks')")).scalar_one() is None
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 1
    migrate.upgrade(empty_url)
    assert_at_head(empty_engine)


def test_0009_adds_sweeps_and_its_downgrade_lets_held_jobs_into_the_queue(empty_url, empty_engine):
    migrate.upgrade(empty_url, "0008")
    lone = uuid4()
    with empty_engine.begin() as conn:
        insert_old_job(conn, lone)
    migrate.upgrade(empty_url, "0009")
    with empty_engine.begin() as conn:
        assert conn.execute(text("SELECT sweep_id, sweep_held FROM jobs")).one() == (None, False)
        sweep = conn.execute(
            text("INSERT INTO sweeps (name, team, owner, max_running, job_count)"
                 " VALUES ('s', 'default', 'me', 1, 2) RETURNING id")
        ).scalar_one()  # fmt: skip
        conn.execute(
            text("UPDATE jobs SET sweep_id = :s, sweep_index = 0 WHERE id = :id"),
            {"s": sweep, "id": lone},
        )
        held = uuid4()
        insert_old_job(conn, held)
        conn.execute(
            text("UPDATE jobs SET sweep_id = :s, sweep_index = 1, sweep_held = true"
                 " WHERE id = :id"), {"s": sweep, "id": held},
        )  # fmt: skip
        # The triggers: cancelling the admitted job lets the held one in.
        conn.execute(
            text("UPDATE jobs SET status = 'cancelled', finished_at = now(),"
                 " termination_reason = 'cancelled' WHERE id = :id"), {"id": lone},
        )  # fmt: skip
        assert conn.execute(text("SELECT sweep_held FROM jobs WHERE id = :id"),
                            {"id": held}).scalar_one() is False  # fmt: skip
        conn.execute(text("UPDATE jobs SET sweep_held = true WHERE id = :id"), {"id": held})
    migrate.downgrade(empty_url, "0008")
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('sweeps')")).scalar_one() is None
        assert (
            conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'queued'")).scalar_one()
            == 1
        )
    migrate.upgrade(empty_url)
    assert_at_head(empty_engine)


# -- offline SQL ----------------------------------------------------------------------------------


def test_offline_sql_creates_the_schema(empty_url, empty_engine):
    out = alembic_cli(empty_url, "upgrade", "head", "--sql").stdout
    assert "CREATE TYPE job_status AS ENUM" in out
    assert "CREATE TABLE jobs" in out
    for table in TABLES - {"jobs"}:
        assert f"CREATE TABLE {table}" in out
    assert "CREATE FUNCTION jobqueue_notify()" in out
    assert "CREATE TRIGGER jobs_notify" in out
    assert "INSERT INTO alembic_version (version_num) VALUES ('0001')" in out
    assert f"version_num='{head()}'" in out or f"VALUES ('{head()}')" in out
    # Printing SQL touches nothing.
    assert tables(empty_engine) == set()

    # The printed script is what a DBA would run: it yields the same schema, at head.
    with psycopg.connect(libpq_conninfo(empty_url), autocommit=True) as conn:
        conn.execute(out)
    assert_at_head(empty_engine)
    with empty_engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    assert_usable(empty_engine, empty_url)


def test_offline_sql_needs_no_reachable_database():
    """A DBA prints the SQL on a machine that cannot reach the server."""
    out = alembic_cli("postgresql://nobody@127.0.0.1:1/nowhere", "upgrade", "head", "--sql").stdout
    assert "CREATE TABLE jobs" in out
    assert "CREATE TYPE job_status AS ENUM" in out


def test_offline_sql_downgrade_drops_everything(empty_url):
    out = alembic_cli(empty_url, "downgrade", f"{head()}:base", "--sql").stdout
    for table in TABLES:
        assert f"DROP TABLE {table}" in out
    assert "DROP TYPE job_status" in out
    assert "DROP FUNCTION jobqueue_notify()" in out


# -- the code's schema and the migrations agree --------------------------------------------------


def test_no_drift_between_migrations_and_schema_module(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(context, metadata)
    assert diff == [], f"jobqueue/schema.py and migrations/ disagree: {diff}"


def test_no_drift_after_cli_upgrade(empty_url, empty_engine):
    alembic_cli(empty_url, "upgrade", "head")
    with empty_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_status_enum_matches_the_code(engine):
    with engine.connect() as conn:
        labels = conn.execute(text("SELECT unnest(enum_range(NULL::job_status))::text")).scalars()
        assert list(labels) == [s.value for s in JobStatus]


# -- refusing to run against the wrong schema ----------------------------------------------------


def test_schema_status_of_an_empty_database(empty_engine):
    status = migrate.schema_status(empty_engine)
    assert status.current is None
    assert not status.at_head
    problem = status.problem()
    assert problem is not None and "jobqueue migrate" in problem
    with pytest.raises(SchemaNotAtHead, match="jobqueue migrate"):
        migrate.require_head(empty_engine)


def test_schema_status_at_head(engine):
    status = migrate.schema_status(engine)
    assert status.current == status.head == head()
    assert status.problem() is None
    assert migrate.require_head(engine) is None


def test_schema_status_of_a_newer_database(engine):
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    status = migrate.schema_status(engine)
    assert status.current == "9999"
    assert not status.known
    problem = status.problem()
    assert problem is not None and "older than the database" in problem
    assert "jobqueue migrate" not in problem  # migrating would not help
    with pytest.raises(SchemaNotAtHead, match="older than the database"):
        migrate.require_head(engine)


def test_upgrade_refuses_a_newer_database(engine, database_url):
    """`alembic upgrade head` against a database from a newer jobqueue fails, changing nothing."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(Exception, match="9999"):
        migrate.upgrade(database_url)
    assert version(engine) == "9999"
    assert tables(engine) >= TABLES


# -- the NOTIFY trigger ---------------------------------------------------------------------------


def wait_for(conn: psycopg.Connection, seconds: float) -> list[tuple[str, str]]:
    """Notifications that arrive within ``seconds`` (stops at the first batch)."""
    got: list[tuple[str, str]] = []
    deadline = time.monotonic() + seconds
    while not got and time.monotonic() < deadline:
        for note in conn.notifies(timeout=max(0.05, deadline - time.monotonic())):
            got.append((note.channel, note.payload))
            break
    return got


def test_submit_notifies_workers_of_the_pool(queue, database_url):
    with connect_raw(database_url) as listener:
        listener.execute(f"LISTEN {JOBS_CHANNEL}")
        started = time.monotonic()
        queue.submit(spec(pool="nightly"), actor="op")
        got = wait_for(listener, 5.0)
        assert got == [(JOBS_CHANNEL, "nightly")]
        assert time.monotonic() - started < 5.0


def test_held_job_notifies_only_when_released(queue, database_url):
    with connect_raw(database_url) as listener:
        listener.execute(f"LISTEN {JOBS_CHANNEL}")
        job, _ = queue.submit(spec(pool="held", hold=True), actor="op")
        assert wait_for(listener, 0.5) == []  # pending: nothing to claim yet
        queue.release(job.id, actor="op")
        assert wait_for(listener, 5.0) == [(JOBS_CHANNEL, "held")]


def test_a_job_its_sweep_lets_in_notifies_and_a_finished_one_does_not(queue, database_url):
    body = {"name": "s", "max_running": 1, "job": {"kind": "train", "pool": "swept"},
            "configs": [{}, {}]}  # fmt: skip
    done = queue.submit_sweep(SweepSpec.model_validate(body), actor="op")
    with connect_raw(database_url) as listener:
        listener.execute(f"LISTEN {JOBS_CHANNEL}")
        queue.cancel(done.items[0].id, actor="op")  # ends; the held job joins the queue
        assert wait_for(listener, 5.0) == [(JOBS_CHANNEL, "swept")]
        queue.cancel(done.items[1].id, actor="op")
        assert wait_for(listener, 0.5) == []


def test_request_on_running_job_notifies_its_worker(queue, store, worker, database_url):
    job, _ = queue.submit(spec(), actor="op")
    (claimed,) = store.claim(worker, free_gpu_ids=[0, 1, 2, 3], slots=1)
    with connect_raw(database_url) as listener:
        listener.execute(f"LISTEN {ACTIONS_CHANNEL}")
        acted = queue.cancel(job.id, actor="op")
        is_request = acted.stopping
        assert is_request
        assert wait_for(listener, 5.0) == [(ACTIONS_CHANNEL, f"{worker.name} {claimed.id}")]
