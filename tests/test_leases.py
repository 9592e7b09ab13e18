"""Leases: fencing, renewal, the sweep, orphans, and the in-process slot runner."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine, text

from jobqueue.errors import LeaseLost
from jobqueue.outcomes import Exit
from jobqueue.queue import JobQueue
from jobqueue.records import Claimed
from jobqueue.runner import SlotRunner
from jobqueue.states import JobStatus
from jobqueue.sweeper import SYSTEM_ACTOR, sweep_expired_leases
from jobqueue.worker_store import Progress, WorkerIdentity, WorkerStore
from tests.helpers import spec

ALL_GPUS = [0, 1, 2, 3]


def expire(engine: Engine, *job_ids: UUID) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE jobs SET lease_expires_at = now() - interval '1 second'"
                " WHERE id = ANY(:ids)"
            ),
            {"ids": list(job_ids)},
        )


def row(engine: Engine, job_id: UUID) -> dict[str, Any]:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings()
        return dict(found.one())


def counts(engine: Engine, job_id: UUID) -> tuple[int, int]:
    with engine.connect() as conn:
        logs = conn.execute(
            text("SELECT count(*) FROM job_logs WHERE job_id = :id"), {"id": job_id}
        ).scalar_one()
        points = conn.execute(
            text("SELECT count(*) FROM job_metrics WHERE job_id = :id"), {"id": job_id}
        ).scalar_one()
    return logs, points


def db_now(engine: Engine):
    with engine.connect() as conn:
        return conn.execute(text("SELECT now()")).scalar_one()


def claim_one(store: WorkerStore, worker: WorkerIdentity, job_id: UUID) -> Claimed:
    claimed = store.claim(worker, free_gpu_ids=list(worker.gpu_ids), slots=1)
    assert [c.id for c in claimed] == [job_id]
    return claimed[0]


def other_worker(store: WorkerStore) -> WorkerIdentity:
    identity = WorkerIdentity(name="gpu-b", kinds=("train",), gpu_ids=(0, 1, 2, 3))
    store.heartbeat_worker(identity, free_gpus=4)
    return identity


# -- fencing --------------------------------------------------------------------------------------


@pytest.fixture
def stale(queue, store, worker, engine):
    """A job that worker A lost (lease expired, swept) and worker B now runs.

    Returns (A's stale claim, B's claim).
    """
    job, _ = queue.submit(spec(), actor="op")
    first = claim_one(store, worker, job.id)
    store.append_logs(job.id, first.lease_token, [("stdout", "a: epoch 1")])
    store.report_checkpoint(job.id, first.lease_token, "/ckpt/a-1", 1)
    expire(engine, job.id)
    (swept,) = sweep_expired_leases(engine)
    assert swept.status is JobStatus.QUEUED
    second = claim_one(store, other_worker(store), job.id)
    assert second.lease_token != first.lease_token
    return first, second


def test_stale_worker_writes_are_refused_and_change_nothing(queue, store, engine, worker, stale):
    first, second = stale
    job_id = first.id
    before = row(engine, job_id)
    logs_before, points_before = counts(engine, job_id)
    token = first.lease_token

    with pytest.raises(LeaseLost):
        store.report_progress(
            job_id, token, Progress(fraction=0.9, step=900, metrics={"loss": 0.1})
        )
    with pytest.raises(LeaseLost):
        store.report_checkpoint(job_id, token, "/ckpt/a-900", 900)
    with pytest.raises(LeaseLost):
        store.append_logs(job_id, token, [("stdout", "a: epoch 9"), ("stderr", "a: warn")])
    with pytest.raises(LeaseLost):
        store.finish(job_id, token, Exit(exit_code=0), actor=worker.actor)
    with pytest.raises(LeaseLost):
        store.finish(job_id, token, Exit(exit_code=1), actor=worker.actor)
    with pytest.raises(LeaseLost):
        store.hand_back(job_id, token, actor=worker.actor)

    renewal = store.renew({job_id: token})
    assert renewal.lost == {job_id}
    assert renewal.held == {}

    after = row(engine, job_id)
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert counts(engine, job_id) == (logs_before, points_before)
    assert after["status"] == "running"
    assert after["worker_name"] == "gpu-b"
    assert after["lease_token"] == second.lease_token
    assert after["checkpoint"]["uri"] == "/ckpt/a-1"  # the old attempt's checkpoint, untouched
    assert after["progress"] is None
    # No event was written for any of the refused writes.
    assert [e.action for e in queue.events(job_id)] == ["submit", "claim", "lease_expired", "claim"]


def test_current_holder_still_writes_after_a_stale_one_was_refused(queue, store, worker, stale):
    first, second = stale
    job_id = second.id
    with pytest.raises(LeaseLost):
        store.append_logs(job_id, first.lease_token, [("stdout", "stale")])
    store.report_progress(job_id, second.lease_token, Progress(fraction=0.5, step=5))
    store.report_checkpoint(job_id, second.lease_token, "/ckpt/b-5", 5)
    assert store.append_logs(job_id, second.lease_token, [("stdout", "b: epoch 5")]) == 2
    assert store.renew({job_id: second.lease_token}).held == {job_id: None}
    done = store.finish(job_id, second.lease_token, Exit(exit_code=0), actor="worker:gpu-b")
    assert done.status is JobStatus.COMPLETED
    assert done.checkpoint["uri"] == "/ckpt/b-5"
    assert done.progress["fraction"] == 0.5
    lines, _ = queue.logs(job_id)
    assert [line.text for line in lines] == ["a: epoch 1", "b: epoch 5"]
    assert done.log_tail == ["a: epoch 1", "b: epoch 5"]


def test_token_of_another_job_is_refused(queue, store, worker):
    a, _ = queue.submit(spec(name="a"), actor="op")
    b, _ = queue.submit(spec(name="b"), actor="op")
    claimed = {c.id: c for c in store.claim(worker, free_gpu_ids=ALL_GPUS, slots=2)}
    with pytest.raises(LeaseLost):
        store.report_checkpoint(a.id, claimed[b.id].lease_token, "/ckpt/x", 1)
    with pytest.raises(LeaseLost):
        store.finish(a.id, claimed[b.id].lease_token, Exit(exit_code=0), actor=worker.actor)
    assert queue.get(a.id).status is JobStatus.RUNNING
    assert queue.get(a.id).checkpoint is None


# -- renewing -------------------------------------------------------------------------------------


def test_renew_extends_the_lease(queue, store, worker, engine, settings):
    job, _ = queue.submit(spec(), actor="op")
    claimed = claim_one(store, worker, job.id)
    with engine.begin() as conn:  # nearly run out
        conn.execute(
            text("UPDATE jobs SET lease_expires_at = now() + interval '2 seconds' WHERE id = :id"),
            {"id": job.id},
        )
    before = row(engine, job.id)["lease_expires_at"]

    renewal = store.renew({job.id: claimed.lease_token})
    assert renewal.held == {job.id: None}
    assert renewal.kill_now == frozenset()
    assert renewal.lost == frozenset()

    after = row(engine, job.id)["lease_expires_at"]
    assert after > before
    remaining = (after - db_now(engine)).total_seconds()
    assert settings.lease_seconds - 5 < remaining <= settings.lease_seconds
    # Renewing writes no event and keeps the token.
    assert row(engine, job.id)["lease_token"] == claimed.lease_token
    assert [e.action for e in queue.events(job.id)] == ["submit", "claim"]


def test_renew_reports_requests_and_kill_flags(queue, store, worker):
    a, _ = queue.submit(spec(name="a", gpus=1), actor="op")
    b, _ = queue.submit(spec(name="b", gpus=1), actor="op")
    c, _ = queue.submit(spec(name="c", gpus=1), actor="op")
    claimed = {x.id: x for x in store.claim(worker, free_gpu_ids=ALL_GPUS, slots=3)}
    leases = {job_id: x.lease_token for job_id, x in claimed.items()}
    assert set(leases) == {a.id, b.id, c.id}

    assert store.renew(leases).held == dict.fromkeys(leases)

    assert queue.pause(a.id, actor="op").stopping is True
    assert queue.cancel(b.id, actor="op").stopping is True
    renewal = store.renew(leases)
    assert renewal.held == {a.id: "pause", b.id: "cancel", c.id: None}
    assert renewal.kill_now == frozenset()

    # A second cancel, and a forced one, ask to kill at once.
    queue.cancel(b.id, actor="op")
    queue.cancel(c.id, actor="op", force=True)
    renewal = store.renew(leases)
    assert renewal.held == {a.id: "pause", b.id: "cancel", c.id: "cancel"}
    assert renewal.kill_now == {b.id, c.id}
    assert renewal.lost == frozenset()

    # Pause escalated to mark-failed: the worker sees the stronger request.
    queue.mark_failed(a.id, actor="op", reason="diverged")
    assert store.renew(leases).held[a.id] == "fail"


def test_renew_of_an_expired_lease_is_refused(queue, store, worker, engine):
    job, _ = queue.submit(spec(name="expired"), actor="op")
    live, _ = queue.submit(spec(name="live"), actor="op")
    claimed = {c.id: c for c in store.claim(worker, free_gpu_ids=ALL_GPUS, slots=2)}
    expire(engine, job.id)
    expired_at = row(engine, job.id)["lease_expires_at"]

    renewal = store.renew({j: c.lease_token for j, c in claimed.items()})
    assert renewal.lost == {job.id}
    assert renewal.held == {live.id: None}
    # The expired lease stays expired: the sweep, not the late worker, decides.
    assert row(engine, job.id)["lease_expires_at"] == expired_at
    (swept,) = sweep_expired_leases(engine)
    assert swept.id == job.id and swept.status is JobStatus.QUEUED


def test_renew_of_nothing_is_a_no_op(store):
    renewal = store.renew({})
    assert renewal.held == {} and renewal.lost == frozenset() and renewal.kill_now == frozenset()


# -- the sweep ------------------------------------------------------------------------------------


def test_sweep_requeues_keeping_place_and_checkpoint(queue, store, worker, engine):
    first, _ = queue.submit(spec(name="first", gpus=4), actor="op")
    queue.force_start(first.id, actor="op")
    claimed = claim_one(store, worker, first.id)
    store.report_checkpoint(first.id, claimed.lease_token, "/ckpt/first/step-7", 7)
    later, _ = queue.submit(spec(name="later", priority=100, gpus=4), actor="op")
    before = row(engine, first.id)

    expire(engine, first.id)
    swept = sweep_expired_leases(engine)
    assert [j.id for j in swept] == [first.id]

    job = queue.get(first.id)
    assert job.status is JobStatus.QUEUED
    assert job.interruptions == 1
    assert job.attempt == 1  # not the job's fault: no attempt used
    assert job.queued_at == before["queued_at"]
    assert job.forced_at == before["forced_at"] and job.forced
    assert job.checkpoint["uri"] == "/ckpt/first/step-7"
    assert job.checkpoint["step"] == 7
    assert job.worker_name is None and job.gpu_ids is None
    assert job.lease_token is None and job.lease_expires_at is None
    assert job.finished_at is None and job.termination_reason is None
    # Forced earlier: still ahead of a higher-priority job submitted while it ran.
    assert job.queue_position == 1
    assert queue.get(later.id).queue_position == 2
    (again,) = store.claim(worker, free_gpu_ids=ALL_GPUS, slots=1)
    assert again.id == first.id

    (event,) = [e for e in queue.events(first.id) if e.action == "lease_expired"]
    assert (event.from_status, event.to_status, event.actor) == ("running", "queued", SYSTEM_ACTOR)
    assert "gpu-a" in (event.reason or "")


def test_sweep_keeps_queued_at_order_among_unforced_jobs(queue, store, worker, engine):
    old, _ = queue.submit(spec(name="old", gpus=4), actor="op")
    claim_one(store, worker, old.id)
    newer, _ = queue.submit(spec(name="newer", gpus=4), actor="op")
    expire(engine, old.id)
    sweep_expired_leases(engine)
    assert queue.get(old.id).queue_position == 1
    assert queue.get(newer.id).queue_position == 2


def test_sweep_leaves_live_leases_alone(queue, store, worker, engine):
    job, _ = queue.submit(spec(), actor="op")
    claimed = claim_one(store, worker, job.id)
    assert sweep_expired_leases(engine) == []
    assert row(engine, job.id)["lease_token"] == claimed.lease_token
    assert queue.get(job.id).status is JobStatus.RUNNING


def test_sweep_fails_a_job_out_of_interruptions(queue, store, worker, engine):
    job, _ = queue.submit(spec(max_interruptions=1), actor="op")

    claim_one(store, worker, job.id)
    expire(engine, job.id)
    (swept,) = sweep_expired_leases(engine)
    assert swept.status is JobStatus.QUEUED and swept.interruptions == 1

    claim_one(store, worker, job.id)
    expire(engine, job.id)
    (swept,) = sweep_expired_leases(engine)
    assert swept.status is JobStatus.FAILED
    assert swept.termination_reason == "max_interruptions"
    assert swept.finished_at is not None
    assert swept.lease_token is None
    assert "max_interruptions" in (swept.error_message or "")
    assert store.claim(worker, free_gpu_ids=ALL_GPUS, slots=1) == []


def test_sweep_with_no_interruptions_allowed_fails_at_once(queue, store, worker, engine):
    job, _ = queue.submit(spec(max_interruptions=0), actor="op")
    claim_one(store, worker, job.id)
    expire(engine, job.id)
    (swept,) = sweep_expired_leases(engine)
    assert swept.status is JobStatus.FAILED
    assert swept.termination_reason == "max_interruptions"


@pytest.mark.parametrize(
    ("act", "status", "termination"),
    [
        (lambda q, j: q.pause(j, actor="op"), JobStatus.PAUSED, None),
        (lambda q, j: q.cancel(j, actor="op"), JobStatus.CANCELLED, "cancelled"),
        (
            lambda q, j: q.mark_failed(j, actor="op", reason="bad data"),
            JobStatus.FAILED,
            "marked_failed",
        ),
    ],
    ids=["pause", "cancel", "mark-failed"],
)
def test_sweep_carries_out_a_pending_request(
    queue, store, worker, engine, act: Callable, status, termination
):
    job, _ = queue.submit(spec(), actor="op")
    claimed = claim_one(store, worker, job.id)
    store.report_checkpoint(job.id, claimed.lease_token, "/ckpt/r/step-3", 3)
    acted = act(queue, job.id)
    is_request = acted.stopping
    assert is_request  # lease valid: the worker was asked
    expire(engine, job.id)

    (swept,) = sweep_expired_leases(engine)
    assert swept.status is status
    assert swept.termination_reason == termination
    assert swept.interruptions == 0  # carried out, not counted as an interruption
    assert swept.requested_action is None and swept.lease_token is None
    assert swept.checkpoint["uri"] == "/ckpt/r/step-3"
    if status is JobStatus.PAUSED:
        assert swept.worker_name is None and swept.finished_at is None
    else:
        assert swept.finished_at is not None
    if termination == "marked_failed":
        assert swept.error_message == "bad data"
    assert store.claim(worker, free_gpu_ids=ALL_GPUS, slots=1) == []
    last = queue.events(job.id)[-1]
    assert (last.action, last.to_status, last.actor) == ("lease_expired", status.value, "system")


def test_action_on_a_running_job_with_expired_lease_is_immediate(queue, store, worker, engine):
    job, _ = queue.submit(spec(), actor="op")
    claimed = claim_one(store, worker, job.id)
    expire(engine, job.id)
    cancelled = queue.cancel(job.id, actor="op")
    is_request = cancelled.stopping
    assert not is_request
    assert cancelled.status is JobStatus.CANCELLED
    with pytest.raises(LeaseLost):
        store.finish(job.id, claimed.lease_token, Exit(exit_code=0), actor=worker.actor)
    assert sweep_expired_leases(engine) == []


# -- orphans of a restarted worker ----------------------------------------------------------------


def test_requeue_orphans_puts_back_all_but_the_kept(queue, store, worker, engine):
    ids = [queue.submit(spec(name=f"o{i}"), actor="op")[0].id for i in range(3)]
    claimed = {c.id: c for c in store.claim(worker, free_gpu_ids=ALL_GPUS, slots=3)}
    assert set(claimed) == set(ids)
    kept = ids[2]
    store.report_checkpoint(ids[0], claimed[ids[0]].lease_token, "/ckpt/o0", 1)
    # Another worker's job is none of this worker's business.
    mine_not, _ = queue.submit(spec(name="other"), actor="op")
    other = other_worker(store)
    other_claim = claim_one(store, other, mine_not.id)
    # A pending cancel on an orphan is carried out instead.
    queue.cancel(ids[1], actor="op")

    back = store.requeue_orphans(worker, keep=[claimed[kept].lease_token])
    assert {j.id: j.status for j in back} == {
        ids[0]: JobStatus.QUEUED,
        ids[1]: JobStatus.CANCELLED,
    }

    requeued = queue.get(ids[0])
    assert requeued.interruptions == 1
    assert requeued.checkpoint["uri"] == "/ckpt/o0"
    assert requeued.lease_token is None and requeued.worker_name is None
    assert queue.events(ids[0])[-1].action == "worker_restart"
    assert queue.events(ids[0])[-1].actor == worker.actor

    still = row(engine, kept)
    assert still["status"] == "running" and still["lease_token"] == claimed[kept].lease_token
    theirs = row(engine, mine_not.id)
    assert theirs["status"] == "running" and theirs["lease_token"] == other_claim.lease_token

    # The previous run's tokens are dead.
    with pytest.raises(LeaseLost):
        store.report_progress(ids[0], claimed[ids[0]].lease_token, Progress(fraction=1.0))


def test_requeue_orphans_with_nothing_kept(queue, store, worker):
    job, _ = queue.submit(spec(), actor="op")
    claim_one(store, worker, job.id)
    (back,) = store.requeue_orphans(worker)
    assert back.id == job.id and back.status is JobStatus.QUEUED
    assert store.requeue_orphans(worker) == []


# -- the slot runner end to end -------------------------------------------------------------------


@pytest.fixture
def runners() -> Iterator[Callable[..., SlotRunner]]:
    """Starts runners and always stops them."""
    started: list[SlotRunner] = []

    def start(*args: Any, **kwargs: Any) -> SlotRunner:
        runner = SlotRunner(*args, **kwargs)
        started.append(runner)
        return runner.start()

    try:
        yield start
    finally:
        for runner in started:
            runner.stop(timeout=10)


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def statuses(queue: JobQueue, ids: list[UUID]) -> dict[UUID, JobStatus]:
    return {job_id: queue.get(job_id).status for job_id in ids}


def test_runner_completes_every_job_woken_by_notify(queue, store, database_url, runners):
    identity = WorkerIdentity(name="runner", kinds=("train",))
    lock = threading.Lock()
    running = {"now": 0, "peak": 0}
    ran: list[UUID] = []

    def handler(job: Claimed) -> Exit:
        with lock:
            running["now"] += 1
            running["peak"] = max(running["peak"], running["now"])
            ran.append(job.id)
        time.sleep(0.2)
        with lock:
            running["now"] -= 1
        return Exit(exit_code=0)

    # A long poll: only NOTIFY (and finished jobs) can wake the runner in time.
    runners(store, identity, handler, slots=4, listen_url=database_url, poll_seconds=60)
    time.sleep(0.2)  # the runner found nothing and is asleep
    ids = [queue.submit(spec(name=f"r{i}", gpus=0), actor="op")[0].id for i in range(20)]

    wait_until(
        lambda: set(statuses(queue, ids).values()) == {JobStatus.COMPLETED}, 30, "20 completions"
    )
    assert sorted(ran) == sorted(ids)  # each job ran once
    assert 2 <= running["peak"] <= 4
    for job_id in ids:
        job = queue.get(job_id)
        assert job.termination_reason == "completed" and job.exit_code == 0
        assert job.worker_name == "runner"
        assert [e.action for e in queue.events(job_id)] == ["submit", "claim", "exit"]


def test_runner_handler_raising_fails_or_retries(queue, engine, database_url, runners, settings):
    quick = settings.model_copy(update={"retry_backoff_seconds": 0})
    store = WorkerStore(engine, quick)
    identity = WorkerIdentity(name="flaky", kinds=("train",))
    attempts: dict[str, list[int]] = {}
    lock = threading.Lock()

    def handler(job: Claimed) -> Exit:
        with lock:
            attempts.setdefault(job.job.name, []).append(job.job.attempt)
        if job.job.name == "always" or job.job.attempt == 1:
            raise RuntimeError(f"boom on attempt {job.job.attempt}")
        return Exit(exit_code=0)

    always, _ = queue.submit(spec(name="always", gpus=0, max_attempts=2), actor="op")
    once, _ = queue.submit(spec(name="once", gpus=0, max_attempts=3), actor="op")
    runners(store, identity, handler, slots=2, listen_url=database_url, poll_seconds=0.2)

    wait_until(
        lambda: queue.get(always.id).status.finished and queue.get(once.id).status.finished,
        20,
        "both jobs to finish",
    )
    failed = queue.get(always.id)
    assert failed.status is JobStatus.FAILED
    assert failed.termination_reason == "exit_code" and failed.exit_code == 1
    assert failed.attempt == failed.max_attempts == 2
    assert "RuntimeError: boom on attempt 2" in (failed.error_message or "")
    assert attempts["always"] == [1, 2]

    recovered = queue.get(once.id)
    assert recovered.status is JobStatus.COMPLETED
    assert recovered.attempt == 2
    assert attempts["once"] == [1, 2]
    actions = [(e.action, e.to_status) for e in queue.events(once.id)]
    assert actions == [
        ("submit", "queued"),
        ("claim", "running"),
        ("exit", "queued"),
        ("claim", "running"),
        ("exit", "completed"),
    ]


def test_runner_handler_raising_requeues_with_backoff(queue, store, database_url, runners):
    """With the default back-off the failed attempt waits before it is tried again."""
    identity = WorkerIdentity(name="backoff", kinds=("train",))
    calls: list[int] = []

    def handler(job: Claimed) -> Exit:
        calls.append(job.job.attempt)
        raise ValueError("bad batch")

    job, _ = queue.submit(spec(gpus=0, max_attempts=3), actor="op")
    runners(store, identity, handler, slots=1, listen_url=database_url, poll_seconds=0.2)
    wait_until(lambda: queue.get(job.id).attempt == 2, 10, "the retry to be scheduled")
    time.sleep(0.5)  # the runner keeps polling; the back-off holds the job
    again = queue.get(job.id)
    assert again.status is JobStatus.QUEUED
    assert again.not_before is not None
    assert again.error_message == "ValueError: bad batch"
    assert calls == [1]


def test_runner_stop_is_bounded_and_lets_running_jobs_end(queue, store, database_url):
    identity = WorkerIdentity(name="stopper", kinds=("train",))
    started = threading.Event()

    def handler(job: Claimed) -> Exit:
        started.set()
        time.sleep(1.0)
        return Exit(exit_code=0)

    job, _ = queue.submit(spec(gpus=0), actor="op")
    runner = SlotRunner(
        store, identity, handler, slots=2, listen_url=database_url, poll_seconds=60
    ).start()
    try:
        assert started.wait(10), "the runner never ran the job"
        t0 = time.monotonic()
        runner.stop(timeout=5)
        elapsed = time.monotonic() - t0
    finally:
        runner.stop(timeout=5)
    assert elapsed < 8, f"stop took {elapsed:.1f}s"
    assert queue.get(job.id).status is JobStatus.COMPLETED
    assert runner.busy() == 0
    # A stopped runner claims nothing more.
    later, _ = queue.submit(spec(gpus=0), actor="op")
    time.sleep(0.5)
    assert queue.get(later.id).status is JobStatus.QUEUED


def test_idle_runner_stops_quickly(store, database_url):
    identity = WorkerIdentity(name="idle", kinds=("train",))
    runner = SlotRunner(
        store,
        identity,
        lambda job: Exit(exit_code=0),
        slots=1,
        listen_url=database_url,
        poll_seconds=60,
    ).start()
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        runner.stop(timeout=5)
        elapsed = time.monotonic() - t0
    finally:
        runner.stop(timeout=5)
    assert elapsed < 8, f"stop took {elapsed:.1f}s"


def test_two_gpu_runner_gives_jobs_disjoint_gpus(queue, store, database_url, runners):
    identity = WorkerIdentity(name="two-gpu", kinds=("train",), gpu_ids=(0, 1))
    lock = threading.Lock()
    in_use: set[int] = set()
    overlaps: list[list[int]] = []
    seen: dict[UUID, list[int]] = {}
    peak = {"jobs": 0, "now": 0}
    both = threading.Event()

    def handler(job: Claimed) -> Exit:
        gpus = job.gpu_ids
        with lock:
            if in_use & set(gpus) or len(gpus) != 1:
                overlaps.append(gpus)
            in_use.update(gpus)
            seen[job.id] = gpus
            peak["now"] += 1
            peak["jobs"] = max(peak["jobs"], peak["now"])
            if peak["now"] == 2:
                both.set()
        both.wait(10)  # the first two run at the same time
        time.sleep(0.2)
        with lock:
            in_use.difference_update(gpus)
            peak["now"] -= 1
        return Exit(exit_code=0)

    ids = [queue.submit(spec(name=f"g{i}", gpus=1), actor="op")[0].id for i in range(3)]
    runners(store, identity, handler, slots=4, listen_url=database_url, poll_seconds=0.2)
    wait_until(
        lambda: set(statuses(queue, ids).values()) == {JobStatus.COMPLETED}, 20, "3 completions"
    )
    assert both.is_set(), "two 1-GPU jobs never ran at once on a 2-GPU runner"
    assert overlaps == []
    assert peak["jobs"] == 2  # a third 1-GPU job waited for a free GPU
    first_two = [seen[i] for i in ids[:2]]
    assert sorted(g for ids_ in first_two for g in ids_) == [0, 1]
    assert all(set(g) <= {0, 1} for g in seen.values())
    # The row said the same GPUs the handler got.
    for job_id in ids:
        claim = next(e for e in queue.events(job_id) if e.action == "claim")
        assert claim.reason == f"GPUs [{seen[job_id][0]}]"
