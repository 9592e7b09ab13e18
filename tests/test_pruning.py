"""Pruning finished jobs: fractional cut-offs, by hand and on the API's schedule."""

from __future__ import annotations

import time
from uuid import UUID

import pytest
from sqlalchemy import event, text

from api import create_app
from jobqueue.db import make_engine
from jobqueue.pruner import PRUNE_LOCK_KEY, prune_finished, scheduled_prune
from tests.helpers import ADMIN, Api, make_settings, spec


def finished(queue, engine, name: str, hours_ago: float) -> UUID:
    """A cancelled job whose end lies ``hours_ago`` in the past."""
    job, _ = queue.submit(spec(name=name), actor="tester")
    queue.cancel(job.id, actor="tester")
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE jobs SET finished_at = now() - make_interval(secs => :s) WHERE id = :id"),
            {"s": hours_ago * 3600, "id": job.id},
        )
    return job.id


def names(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT name FROM jobs")).scalars())


def test_api_prune_honours_a_fractional_setting(database_url, engine, queue):
    finished(queue, engine, "a-day-old", hours_ago=24)
    finished(queue, engine, "an-hour-old", hours_ago=1)
    settings = make_settings(database_url, prune_after_days=0.5)
    api = Api(create_app(settings, engine=engine, background=False).test_client())
    response = api.post("/api/admin/prune", token=ADMIN)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"deleted": 1}
    assert names(engine) == {"an-hour-old"}


def test_api_prune_takes_fractional_days_as_given(database_url, engine, queue, api):
    finished(queue, engine, "three-hours-old", hours_ago=3)
    finished(queue, engine, "an-hour-old", hours_ago=1)
    # 0.1 days is 2.4 hours: only the older job goes (truncated to 0 both would).
    response = api.post("/api/admin/prune", token=ADMIN, query={"older_than_days": "0.1"})
    assert response.get_json() == {"deleted": 1}
    assert names(engine) == {"an-hour-old"}
    for bad in ("soon", "nan", "inf", "-0.5"):
        response = api.post("/api/admin/prune", token=ADMIN, query={"older_than_days": bad})
        assert response.status_code == 400, bad
        assert response.get_json()["error"]["code"] == "invalid"
    assert names(engine) == {"an-hour-old"}


def test_prune_works_in_batches_and_leaves_unfinished_jobs(engine, queue):
    for n in range(7):
        finished(queue, engine, f"old-{n}", hours_ago=48)
    queue.submit(spec(name="waiting"), actor="tester")
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        if statement.lstrip().startswith("WITH doomed"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert prune_finished(engine, older_than_seconds=86400, batch=3) == 7
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(statements) == 3  # 3 + 3 + 1
    assert names(engine) == {"waiting"}


def test_scheduled_prune_skips_while_another_process_prunes(database_url, engine, queue):
    finished(queue, engine, "old", hours_ago=48)
    other = make_engine(database_url, pool_size=1)
    try:
        with other.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PRUNE_LOCK_KEY})
            assert scheduled_prune(engine, older_than_days=1) is None
            assert names(engine) == {"old"}
            holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PRUNE_LOCK_KEY})
        assert scheduled_prune(engine, older_than_days=1) == 1
        assert names(engine) == set()
        # The lock was let go: the next run may take it again.
        assert scheduled_prune(engine, older_than_days=1) == 0
    finally:
        other.dispose()


@pytest.mark.timeout(30)
def test_the_api_prunes_on_its_own_schedule(database_url, engine, queue):
    finished(queue, engine, "old", hours_ago=48)
    finished(queue, engine, "recent", hours_ago=1)
    settings = make_settings(database_url, prune_after_days=1, prune_interval_seconds=0.2)
    app = create_app(settings, engine=engine, background=True)
    try:
        deadline = time.monotonic() + 15
        while names(engine) != {"recent"} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert names(engine) == {"recent"}
    finally:
        for looper in app.extensions["jobqueue.loopers"]:
            looper.stop()
