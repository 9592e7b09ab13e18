"""Real concurrency against a real PostgreSQL: racers on their own connections.

Each racer runs on its own thread with its own engine (so its own database
session), and a barrier lines them up so their transactions overlap. Every
assertion is about what the database holds afterwards.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine, text

from jobqueue.db import make_engine
from jobqueue.errors import InvalidTransition, LeaseLost
from jobqueue.outcomes import Exit
from jobqueue.queue import JobQueue
from jobqueue.states import JobStatus
from jobqueue.sweeper import sweep_expired_leases
from jobqueue.worker_store import WorkerIdentity, WorkerStore
from tests.helpers import spec

JOIN_SECONDS = 30.0
FINISHED = ("completed", "failed", "cancelled")


def run_together(*racers: Callable[[], Any]) -> list[tuple[str, Any]]:
    """Start every racer at the same moment; returns ("ok", result) or ("error", exc) each."""
    barrier = threading.Barrier(len(racers))
    results: list[tuple[str, Any]] = [("missing", None)] * len(racers)

    def run(i: int, racer: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = ("ok", racer())
        except BaseException as exc:
            results[i] = ("error", exc)

    threads = [
        threading.Thread(target=run, args=(i, r), name=f"racer-{i}", daemon=True)
        for i, r in enumerate(racers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_SECONDS)
    assert not any(t.is_alive() for t in threads), "a racer did not finish in time"
    return results


@pytest.fixture
def engines(database_url: str) -> Iterator[Callable[[], Engine]]:
    """Makes engines of their own for racers; disposes of them all afterwards."""
    made: list[Engine] = []

    def make() -> Engine:
        engine = make_engine(database_url, pool_size=2, application_name="race")
        with engine.connect() as conn:  # open the session before the race starts
            conn.execute(text("SELECT 1"))
        made.append(engine)
        return engine

    try:
        yield make
    finally:
        for engine in made:
            engine.dispose()


def identity(name: str, gpus: int = 0) -> WorkerIdentity:
    return WorkerIdentity(
        name=name, pools=("default",), kinds=("train",), gpu_ids=tuple(range(gpus))
    )


def expire_leases(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE jobs SET lease_expires_at = now() - interval '1 second'"
                " WHERE status = 'running'"
            )
        )


def event_counts(engine: Engine, action: str) -> Counter[UUID]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT job_id, count(*) FROM job_events WHERE action = :a GROUP BY job_id"),
            {"a": action},
        ).all()
    return Counter({r[0]: r[1] for r in rows})


def terminal_event_count(engine: Engine, job_id: UUID) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM job_events WHERE job_id = :id"
                " AND to_status::text IN ('completed', 'failed', 'cancelled')"
            ),
            {"id": job_id},
        ).scalar_one()


# -- (a) many claimers, every job claimed exactly once -----------------------------------------


def test_eight_claimers_claim_every_job_exactly_once(queue, engine, settings, engines):
    ids = {queue.submit(spec(name=f"j{i}", gpus=0), actor="op")[0].id for i in range(200)}
    claimers = [(identity(f"w{i}"), WorkerStore(engines(), settings)) for i in range(8)]

    def claimer(worker: WorkerIdentity, store: WorkerStore) -> list[UUID]:
        got: list[UUID] = []
        for _ in range(500):  # bounded; 200 jobs need far fewer rounds
            claimed = store.claim(worker, free_gpu_ids=[], slots=3)
            if not claimed:
                return got
            got.extend(c.id for c in claimed)
            assert all(c.job.worker_name == worker.name for c in claimed)
        raise AssertionError("claimer never ran out of jobs")

    results = run_together(*[lambda w=w, s=s: claimer(w, s) for w, s in claimers])
    errors = [r for kind, r in results if kind != "ok"]
    assert not errors, errors
    claims = [job_id for _, got in results for job_id in got]

    assert len(claims) == len(set(claims)), "a job was claimed twice"
    assert set(claims) == ids, "a job was left unclaimed"
    assert sum(1 for _, got in results if got) >= 2, "the claimers did not overlap at all"
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(text("SELECT status::text, count(*) FROM jobs GROUP BY 1")).all()
        )
        owners = dict(conn.execute(text("SELECT id, worker_name FROM jobs")).all())
    assert statuses == {"running": 200}
    assert event_counts(engine, "claim") == Counter(dict.fromkeys(ids, 1))
    # The row says the same worker as the claim that returned it.
    for (worker, _), (_, got) in zip(claimers, results, strict=True):
        assert all(owners[job_id] == worker.name for job_id in got)


def test_a_claim_takes_the_jobs_after_those_another_claimer_holds(queue, settings, engines):
    # Claimers woken by one NOTIFY read the same first jobs; the one that comes second
    # must still start the next ones rather than find nothing.
    ids = [queue.submit(spec(name=f"j{i}", gpus=0), actor="op")[0].id for i in range(6)]
    holder = engines()
    with holder.begin() as conn:  # another claimer, mid-claim, holding the first three
        held = conn.execute(
            text("SELECT id FROM jobs WHERE id = ANY(:ids) FOR UPDATE"), {"ids": ids[:3]}
        ).all()
        assert len(held) == 3
        got = WorkerStore(engines(), settings).claim(identity("w2"), free_gpu_ids=[], slots=3)
        assert [c.id for c in got] == ids[3:]


def test_the_scheduling_pass_writing_its_plan_hides_no_job_from_claims(
    queue, store, settings, engines
):
    # The pass rewrites reservations and expected starts (rows that reference jobs) in
    # its transaction; a claim meanwhile must not pass over those jobs, nor a submit wait.
    job, _ = queue.submit(spec(name="planned", gpus=1), actor="op")
    planner = engines()
    with planner.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO expected_starts (job_id, pool, worker_name, starts_at)"
                " VALUES (:id, 'default', 'w1', now())"
            ),
            {"id": job.id},
        )
        conn.execute(
            text(
                "INSERT INTO reservations (job_id, pool, worker_name, gpus, starts_at)"
                " VALUES (:id, 'default', 'w1', 1, now())"
            ),
            {"id": job.id},
        )
        conn.execute(text("UPDATE team_standing SET factor = 0.5"))
        submitter = JobQueue(engines(), settings)
        [(outcome, later)] = run_together(
            lambda: submitter.submit(spec(name="later", gpus=0), actor="op")[0]
        )
        assert outcome == "ok", later
        got = WorkerStore(engines(), settings).claim(identity("w1", gpus=1), free_gpu_ids=[0],
                                                     slots=1)  # fmt: skip
        assert [c.id for c in got] == [job.id]
    assert queue.get(later.id).status is JobStatus.QUEUED


def test_claimers_with_gpus_never_share_a_job(queue, engine, settings, engines):
    """1-GPU jobs: each claimer has its own GPUs; still one claim per job."""
    ids = {queue.submit(spec(name=f"g{i}", gpus=1), actor="op")[0].id for i in range(60)}
    claimers = [(identity(f"gw{i}", gpus=8), WorkerStore(engines(), settings)) for i in range(4)]

    def claimer(worker: WorkerIdentity, store: WorkerStore) -> list[UUID]:
        got: list[UUID] = []
        free = list(worker.gpu_ids)
        for _ in range(100):
            # Re-use the GPUs: only the database decides which jobs this claimer gets.
            claimed = store.claim(worker, free_gpu_ids=free, slots=4)
            if not claimed:
                return got
            for c in claimed:
                assert len(c.gpu_ids) == 1 and set(c.gpu_ids) <= set(free)
            got.extend(c.id for c in claimed)
        raise AssertionError("claimer never ran out of jobs")

    results = run_together(*[lambda w=w, s=s: claimer(w, s) for w, s in claimers])
    assert all(kind == "ok" for kind, _ in results), results
    claims = [job_id for _, got in results for job_id in got]
    assert len(claims) == len(set(claims))
    assert set(claims) == ids
    assert event_counts(engine, "claim") == Counter(dict.fromkeys(ids, 1))


# -- (b) force-start racing a claim --------------------------------------------------------------


def test_force_start_racing_claim_has_exactly_one_outcome(queue, engine, settings, engines):
    forcer = JobQueue(engines(), settings)
    store = WorkerStore(engines(), settings)
    worker = identity("racer", gpus=4)
    outcomes = Counter()
    for round_ in range(20):
        job, _ = queue.submit(spec(name=f"race{round_}", gpus=1), actor="op")

        def force(job_id: UUID = job.id) -> Any:
            return forcer.force_start(job_id, actor="op")

        def claim() -> list:
            return store.claim(worker, free_gpu_ids=[0, 1, 2, 3], slots=1)

        (f_kind, f_result), (c_kind, c_result) = run_together(force, claim)
        assert c_kind == "ok", c_result
        claimed_now = [c.id for c in c_result]
        assert claimed_now in ([], [job.id])

        if f_kind == "ok":
            # Force-start came first: the job was queued and forced when it changed.
            assert f_result.status is JobStatus.QUEUED and f_result.forced
            if not claimed_now:
                # The claim skipped the row force-start held locked; it is claimable now.
                again = store.claim(worker, free_gpu_ids=[0, 1, 2, 3], slots=1)
                assert [c.id for c in again] == [job.id], "forced job was left unclaimable"
                outcome = "forced, claimed after"
            else:
                outcome = "forced, then claimed"
            actions = [e.action for e in queue.events(job.id)]
            assert actions == ["submit", "force-start", "claim"]
        else:
            # The claim came first: force-start was refused as running, and changed nothing.
            assert isinstance(f_result, InvalidTransition), repr(f_result)
            assert f_result.status == "running"
            assert f_result.action == "force-start"
            assert claimed_now == [job.id], "force-start refused but nobody claimed the job"
            actions = [e.action for e in queue.events(job.id)]
            assert actions == ["submit", "claim"]
            outcome = "claimed, force refused"

        after = queue.get(job.id)
        assert after.status is JobStatus.RUNNING
        assert after.worker_name == "racer"
        assert after.forced == (f_kind == "ok")
        outcomes[outcome] += 1
    assert sum(outcomes.values()) == 20


# -- (c) a stop request racing the job's own end ------------------------------------------------


@pytest.mark.parametrize(
    ("action", "exit_code", "expected"),
    [
        # Finished work wins, whether the request came first or not.
        ("cancel", 0, JobStatus.COMPLETED),
        ("mark_failed", 0, JobStatus.COMPLETED),
        # A crash with attempts left: the request (first) or the immediate action on the
        # re-queued job (second) ends it as the person asked.
        ("cancel", 1, JobStatus.CANCELLED),
        ("mark_failed", 1, JobStatus.FAILED),
    ],
)
def test_request_racing_finish_ends_consistently(
    queue, engine, settings, engines, action, exit_code, expected
):
    operator = JobQueue(engines(), settings)
    store = WorkerStore(engines(), settings)
    worker = identity("finisher")
    seen = Counter()
    for round_ in range(20):
        job, _ = queue.submit(spec(name=f"c{round_}", gpus=0, max_attempts=3), actor="op")
        (claimed,) = store.claim(worker, free_gpu_ids=[], slots=1)
        assert claimed.id == job.id

        def request(job_id: UUID = job.id) -> Any:
            if action == "cancel":
                return operator.cancel(job_id, actor="op")
            return operator.mark_failed(job_id, actor="op", reason="bad run")

        def finish(c=claimed) -> Any:
            return store.finish(c.id, c.lease_token, Exit(exit_code=exit_code), actor=worker.actor)

        (r_kind, r_result), (f_kind, f_result) = run_together(request, finish)

        # The worker held the lease throughout: its finish is never refused.
        assert f_kind == "ok", repr(f_result)
        if r_kind == "ok":
            requested = r_result
            is_request = requested.stopping
            if is_request:
                seen["request first"] += 1
                assert requested.status is JobStatus.RUNNING
            else:
                # The job's crash re-queued it first; the action then ended it at once.
                seen["finish first, action immediate"] += 1
                assert exit_code != 0
                assert requested.status is expected
        else:
            seen["finish first, action refused"] += 1
            assert isinstance(r_result, InvalidTransition), repr(r_result)
            assert exit_code == 0
            assert r_result.status == "completed"

        final = queue.get(job.id)
        assert final.status is expected, (round_, final.status, r_kind, f_result.status)
        assert final.requested_action is None
        assert final.lease_token is None
        assert final.finished_at is not None
        assert terminal_event_count(engine, job.id) == 1
        if expected is JobStatus.COMPLETED:
            assert final.termination_reason == "completed"
        elif expected is JobStatus.CANCELLED:
            assert final.termination_reason == "cancelled"
        else:
            assert final.termination_reason == "marked_failed"
            assert final.error_message == "bad run"
    assert sum(seen.values()) == 20


# -- (d) concurrent sweeps ----------------------------------------------------------------------


@pytest.mark.parametrize("sweepers", [2, 4])
def test_concurrent_sweeps_requeue_each_expired_job_once(queue, store, engine, engines, sweepers):
    ids = {queue.submit(spec(name=f"s{i}", gpus=0), actor="op")[0].id for i in range(50)}
    worker = identity("dead-worker")
    claimed = store.claim(worker, free_gpu_ids=[], slots=50)
    assert {c.id for c in claimed} == ids
    expire_leases(engine)

    sweep_engines = [engines() for _ in range(sweepers)]
    results = run_together(*[lambda e=e: sweep_expired_leases(e, batch=7) for e in sweep_engines])
    assert all(kind == "ok" for kind, _ in results), results

    swept = [job.id for _, jobs in results for job in jobs]
    assert len(swept) == len(set(swept)), "two sweeps handled the same job"
    assert set(swept) == ids
    assert all(job.status is JobStatus.QUEUED for _, jobs in results for job in jobs)

    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status::text, interruptions, lease_token, worker_name FROM jobs")
        ).all()
    assert len(rows) == 50
    assert all(r == ("queued", 1, None, None) for r in rows), rows
    assert event_counts(engine, "lease_expired") == Counter(dict.fromkeys(ids, 1))

    # Nothing is left for a later sweep to do twice.
    assert sweep_expired_leases(engine) == []


def test_sweep_racing_a_late_finish_has_one_winner(queue, store, engine, engines, settings):
    """The sweep and the worker whose lease just expired both try to end the job."""
    worker = identity("late")
    late_store = WorkerStore(engines(), settings)
    sweep_engine = engines()
    seen = Counter()
    for round_ in range(15):
        job, _ = queue.submit(spec(name=f"l{round_}", gpus=0), actor="op")
        (claimed,) = store.claim(worker, free_gpu_ids=[], slots=1)
        expire_leases(engine)

        def finish(c=claimed) -> Any:
            return late_store.finish(c.id, c.lease_token, Exit(exit_code=0), actor=worker.actor)

        (f_kind, f_result), (s_kind, s_result) = run_together(
            finish, lambda: sweep_expired_leases(sweep_engine)
        )
        assert s_kind == "ok", s_result
        final = queue.get(job.id)
        if f_kind == "ok":
            seen["finish"] += 1
            assert [j.id for j in s_result] == []
            assert final.status is JobStatus.COMPLETED
            assert final.interruptions == 0
        else:
            seen["sweep"] += 1
            assert isinstance(f_result, LeaseLost), repr(f_result)
            assert [j.id for j in s_result] == [job.id]
            assert final.status is JobStatus.QUEUED
            assert final.interruptions == 1
            # Take it off the queue so the next round's claim gets the next job.
            queue.cancel(job.id, actor="op")
        actions = [e.action for e in queue.events(job.id)]
        assert actions.count("exit") + actions.count("lease_expired") == 1
    assert sum(seen.values()) == 15
