"""Every row of the SPEC §2 transition table, against the real database.

Each allowed transition is checked for the status it leads to, the fields it
sets and the event it writes; each refused one for InvalidTransition carrying
the job's current status, and for leaving the job and its history untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import text

from jobqueue.errors import IdempotencyConflict, InvalidTransition, LeaseLost
from jobqueue.outcomes import Exit, StopCause, for_action
from jobqueue.queue import JobQueue
from jobqueue.records import Claimed, Job
from jobqueue.states import ALLOWED_FROM, Action, JobStatus
from jobqueue.sweeper import sweep_expired_leases
from jobqueue.transitions import apply_transition
from jobqueue.worker_store import WorkerIdentity, WorkerStore
from tests.helpers import spec

S = JobStatus
OP = "alice"  # the operator acting through the API


# -- a database for the module ----------------------------------------------------------


@pytest.fixture
def database_url(emptied_module_database: str) -> str:
    return emptied_module_database


# -- helpers ------------------------------------------------------------------------


def db_now(engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(text("SELECT now()")).scalar_one()


def expire_lease(engine, job_id: UUID) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": job_id},
        )


def claim_one(store: WorkerStore, worker: WorkerIdentity, job_id: UUID) -> Claimed:
    claimed = store.claim(worker, free_gpu_ids=list(worker.gpu_ids), slots=1)
    assert [c.id for c in claimed] == [job_id]
    return claimed[0]


def start(queue: JobQueue, store: WorkerStore, worker: WorkerIdentity, **overrides):
    """A running job and its claim."""
    job, _ = queue.submit(spec(**overrides), actor=OP)
    claimed = claim_one(store, worker, job.id)
    assert claimed.job.status is S.RUNNING
    return claimed.job, claimed


def job_in(status: JobStatus, queue, store, worker, **overrides) -> Job:
    """A job brought into ``status`` by real operations."""
    if status is S.PENDING:
        job, _ = queue.submit(spec(hold=True, **overrides), actor=OP)
    elif status is S.QUEUED:
        job, _ = queue.submit(spec(**overrides), actor=OP)
    elif status is S.RUNNING:
        job, _ = start(queue, store, worker, **overrides)
    elif status is S.PAUSED:
        job, _ = queue.submit(spec(**overrides), actor=OP)
        job = queue.pause(job.id, actor=OP)
    elif status is S.COMPLETED:
        _, claimed = start(queue, store, worker, **overrides)
        job = store.finish(claimed.id, claimed.lease_token, Exit(exit_code=0), actor=worker.actor)
    elif status is S.FAILED:
        _, claimed = start(queue, store, worker, max_attempts=1, **overrides)
        job = store.finish(claimed.id, claimed.lease_token, Exit(exit_code=1), actor=worker.actor)
    elif status is S.CANCELLED:
        job, _ = queue.submit(spec(**overrides), actor=OP)
        job = queue.cancel(job.id, actor=OP)
    else:  # pragma: no cover
        raise AssertionError(status)
    job = queue.get(job.id)
    assert job.status is status
    return job


def last_event(queue: JobQueue, job_id: UUID):
    return queue.events(job_id)[-1]


def assert_event(queue, job_id, from_status, to_status, action, actor):
    event = last_event(queue, job_id)
    assert (event.from_status, event.to_status, event.action, event.actor) == (
        from_status.value if from_status else None,
        to_status.value,
        action,
        actor,
    )
    return event


ACTIONS: dict[Action, Callable[[JobQueue, UUID], Any]] = {
    Action.RELEASE: lambda q, i: q.release(i, actor=OP),
    Action.FORCE_START: lambda q, i: q.force_start(i, actor=OP),
    Action.PAUSE: lambda q, i: q.pause(i, actor=OP),
    Action.RESUME: lambda q, i: q.resume(i, actor=OP),
    Action.CANCEL: lambda q, i: q.cancel(i, actor=OP),
    Action.MARK_FAILED: lambda q, i: q.mark_failed(i, actor=OP, reason="bad data"),
    Action.RETRY: lambda q, i: q.retry(i, actor=OP),
    Action.PATCH: lambda q, i: q.patch(i, actor=OP, priority=90),
}

REFUSED = [
    pytest.param(action, status, id=f"{action.value}-from-{status.value}")
    for action in Action
    for status in JobStatus
    if status not in ALLOWED_FROM[action]
]


def test_the_table_refuses_what_the_spec_does_not_list():
    """ALLOWED_FROM is the table of SPEC §2, so the parametrized refusals cover it."""
    assert {a: {s.value for s in ss} for a, ss in ALLOWED_FROM.items()} == {
        Action.RELEASE: {"pending"},
        Action.FORCE_START: {"pending", "queued"},
        Action.PAUSE: {"pending", "queued", "running"},
        Action.RESUME: {"paused"},
        Action.CANCEL: {"pending", "queued", "paused", "running"},
        Action.MARK_FAILED: {"pending", "queued", "paused", "running"},
        Action.RETRY: {"failed", "cancelled"},
        Action.PATCH: {"pending", "queued"},
    }


@pytest.mark.parametrize(("action", "status"), REFUSED)
def test_refused_actions_raise_and_change_nothing(queue, store, worker, action, status):
    job = job_in(status, queue, store, worker)
    events_before = queue.events(job.id)
    with pytest.raises(InvalidTransition) as caught:
        ACTIONS[action](queue, job.id)
    assert caught.value.status == status.value
    assert caught.value.action == action.value
    assert caught.value.job_id == job.id
    after = queue.get(job.id)
    assert after.status is status
    assert after.updated_at == job.updated_at
    assert after.requested_action is None
    assert queue.events(job.id) == events_before


def test_force_start_of_a_paused_job_says_to_resume(queue, store, worker):
    job = job_in(S.PAUSED, queue, store, worker)
    with pytest.raises(InvalidTransition, match="resume"):
        queue.force_start(job.id, actor=OP)


def test_a_write_from_a_stale_read_is_refused_with_the_status_it_found(queue, engine):
    """The compare-and-set guard: a transition computed from a job read before another
    change (a caller that broke the row-lock contract) writes nothing and says what
    the status is now."""
    job, _ = queue.submit(spec(), actor=OP)
    stale = queue.get(job.id)
    queue.pause(job.id, actor=OP)
    transition = for_action(stale, Action.CANCEL, actor=OP, lease_valid=False)
    with engine.begin() as conn, pytest.raises(InvalidTransition) as refused:
        apply_transition(conn, stale, transition, actor=OP)
    assert (refused.value.status, refused.value.action) == ("paused", "cancel")
    assert queue.get(job.id).status is S.PAUSED
    assert [e.to_status for e in queue.events(job.id)] == ["queued", "paused"]


# -- submit ---------------------------------------------------------------------------


def test_submit_queues_the_job_and_records_the_first_event(queue, engine):
    before = db_now(engine)
    job, created = queue.submit(spec(priority=70, gpus=2), actor=OP)
    assert created is True
    assert job.status is S.QUEUED
    assert (job.priority, job.gpus, job.pool) == (70, 2, "default")
    assert job.queued_at >= before
    assert job.forced is False and job.not_before is None
    assert (job.attempt, job.max_attempts, job.interruptions) == (1, 3, 0)
    assert job.termination_reason is None and job.finished_at is None
    [event] = queue.events(job.id)
    assert (event.from_status, event.to_status, event.action, event.actor) == (
        None,
        "queued",
        "submit",
        OP,
    )


def test_submit_with_hold_is_pending_and_never_claimed(queue, store, worker):
    job, created = queue.submit(spec(hold=True), actor=OP)
    assert created and job.status is S.PENDING
    assert job.queue_position is None
    assert store.claim(worker, free_gpu_ids=[0, 1, 2, 3], slots=4) == []
    assert_event(queue, job.id, None, S.PENDING, "submit", OP)


def test_same_idempotency_key_and_body_returns_the_same_job(queue):
    first, created = queue.submit(spec(idempotency_key="run-42"), actor=OP)
    again, created_again = queue.submit(spec(idempotency_key="run-42"), actor=OP)
    assert created is True and created_again is False
    assert again.id == first.id
    assert len(queue.list_jobs()[0]) == 1
    assert len(queue.events(first.id)) == 1


def test_same_idempotency_key_with_another_body_conflicts(queue):
    first, _ = queue.submit(spec(idempotency_key="run-42"), actor=OP)
    with pytest.raises(IdempotencyConflict) as caught:
        queue.submit(spec(idempotency_key="run-42", config={"lr": 0.2}), actor=OP)
    assert caught.value.job_id == first.id
    assert [j.id for j in queue.list_jobs()[0]] == [first.id]


# -- release, force-start -------------------------------------------------------------


def test_release_queues_a_held_job_at_release_time(queue, engine):
    held, _ = queue.submit(spec(hold=True), actor=OP)
    other, _ = queue.submit(spec(name="later"), actor=OP)
    before = db_now(engine)
    job = queue.release(held.id, actor=OP)
    assert job.status is S.QUEUED
    assert job.queued_at >= before > held.queued_at
    assert job.forced is False
    # It joined the queue now: behind the job submitted while it was held.
    assert job.queue_position == 2
    assert queue.get(other.id).queue_position == 1
    assert_event(queue, job.id, S.PENDING, S.QUEUED, "release", OP)


def test_force_start_of_a_pending_job_queues_it_forced(queue):
    queue.submit(spec(name="first"), actor=OP)
    held, _ = queue.submit(spec(hold=True, not_before="2999-01-01T00:00:00Z"), actor=OP)
    job = queue.force_start(held.id, actor=OP)
    assert job.status is S.QUEUED
    assert job.forced is True
    assert job.not_before is None
    assert job.queue_position == 1
    assert_event(queue, job.id, S.PENDING, S.QUEUED, "force-start", OP)


def test_force_start_of_a_queued_job_clears_not_before_and_repeats_as_no_op(queue):
    queue.submit(spec(name="first"), actor=OP)
    job, _ = queue.submit(spec(not_before="2999-01-01T00:00:00Z"), actor=OP)
    assert job.queue_position is None
    forced = queue.force_start(job.id, actor=OP)
    assert forced.status is S.QUEUED and forced.forced
    assert forced.not_before is None
    assert forced.queued_at == job.queued_at
    assert forced.queue_position == 1
    assert_event(queue, job.id, S.QUEUED, S.QUEUED, "force-start", OP)

    again = queue.force_start(job.id, actor=OP)
    assert again.forced_at == forced.forced_at
    assert again.queued_at == forced.queued_at
    assert again.queue_position == 1


# -- pause, resume ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.PENDING, S.QUEUED])
def test_pause_of_a_waiting_job_is_immediate(queue, store, worker, status):
    job = job_in(status, queue, store, worker)
    paused = queue.pause(job.id, actor=OP)
    is_request = paused.stopping
    assert is_request is False
    assert paused.status is S.PAUSED
    assert paused.queue_position is None and paused.waiting_reason is None
    assert_event(queue, job.id, status, S.PAUSED, "pause", OP)


def test_resume_keeps_priority_and_original_queued_at(queue):
    job, _ = queue.submit(spec(priority=80), actor=OP)
    later, _ = queue.submit(spec(name="later", priority=80), actor=OP)
    queue.pause(job.id, actor=OP)
    resumed = queue.resume(job.id, actor=OP)
    assert resumed.status is S.QUEUED
    assert resumed.priority == 80
    assert resumed.queued_at == job.queued_at
    assert resumed.queue_position == 1
    assert queue.get(later.id).queue_position == 2
    assert_event(queue, job.id, S.PAUSED, S.QUEUED, "resume", OP)


def test_pause_of_a_running_job_is_a_request_the_worker_carries_out(queue, store, worker):
    job, claimed = start(queue, store, worker)
    store.report_checkpoint(job.id, claimed.lease_token, "/ckpt/step-10", 10)
    requested = queue.pause(job.id, actor=OP, reason="need the GPUs")
    is_request = requested.stopping
    assert is_request is True
    assert requested.status is S.RUNNING
    assert requested.requested_action == "pause"
    assert requested.worker_name == worker.name
    assert_event(queue, job.id, S.RUNNING, S.RUNNING, "pause", OP)

    # The script checkpoints and exits 0 on SIGTERM: paused, not completed.
    paused = store.finish(
        job.id,
        claimed.lease_token,
        Exit(exit_code=0, stopped_for=StopCause.PAUSE),
        actor=worker.actor,
    )
    assert paused.status is S.PAUSED
    assert paused.termination_reason is None and paused.finished_at is None
    assert paused.requested_action is None
    assert paused.worker_name is None and paused.gpu_ids is None
    assert paused.lease_token is None
    assert paused.checkpoint["uri"] == "/ckpt/step-10"
    assert paused.attempt == 1
    assert_event(queue, job.id, S.RUNNING, S.PAUSED, "stopped", worker.actor)

    resumed = queue.resume(job.id, actor=OP)
    assert resumed.status is S.QUEUED
    assert resumed.queued_at == job.queued_at
    assert resumed.checkpoint["uri"] == "/ckpt/step-10"
    assert resumed.attempt == 1


@pytest.mark.parametrize(
    "exit",
    [Exit(exit_code=0), Exit(exit_code=1), Exit(signal=15), Exit(exit_code=-9, signal=9)],
    ids=["exit0", "exit1", "sigterm", "sigkill"],
)
@pytest.mark.parametrize(
    ("stop", "status", "termination"),
    [
        (StopCause.PAUSE, S.PAUSED, None),
        (StopCause.CANCEL, S.CANCELLED, "cancelled"),
        (StopCause.FAIL, S.FAILED, "marked_failed"),
    ],
    ids=["pause", "cancel", "fail"],
)
def test_once_signalled_the_request_decides_whatever_the_exit(
    queue, store, worker, stop, status, termination, exit
):
    job, claimed = start(queue, store, worker)
    request = {
        StopCause.PAUSE: lambda: queue.pause(job.id, actor=OP),
        StopCause.CANCEL: lambda: queue.cancel(job.id, actor=OP),
        StopCause.FAIL: lambda: queue.mark_failed(job.id, actor=OP, reason="diverged"),
    }[stop]
    acted = request()
    is_request = acted.stopping
    assert is_request
    ended = store.finish(
        job.id,
        claimed.lease_token,
        Exit(exit_code=exit.exit_code, signal=exit.signal, stopped_for=stop),
        actor=worker.actor,
    )
    assert ended.status is status
    assert ended.termination_reason == termination
    assert ended.requested_action is None
    assert ended.attempt == 1  # a request is not a failure of the job's code
    if status is S.FAILED:
        assert ended.error_message == "diverged"
    assert_event(queue, job.id, S.RUNNING, status, "stopped", worker.actor)


def test_exit_0_before_the_signal_wins_over_a_pending_request(queue, store, worker):
    job, claimed = start(queue, store, worker)
    queue.cancel(job.id, actor=OP)
    done = store.finish(job.id, claimed.lease_token, Exit(exit_code=0), actor=worker.actor)
    assert done.status is S.COMPLETED
    assert done.termination_reason == "completed"
    assert done.exit_code == 0
    assert done.requested_action is None
    assert done.finished_at is not None
    assert_event(queue, job.id, S.RUNNING, S.COMPLETED, "exit", worker.actor)


def test_a_failure_before_the_signal_carries_out_the_pending_request(queue, store, worker):
    job, claimed = start(queue, store, worker)
    queue.pause(job.id, actor=OP)
    ended = store.finish(job.id, claimed.lease_token, Exit(exit_code=3), actor=worker.actor)
    assert ended.status is S.PAUSED
    assert ended.attempt == 1


# -- cancel, mark-failed -------------------------------------------------------------


@pytest.mark.parametrize("status", [S.PENDING, S.QUEUED, S.PAUSED])
def test_cancel_of_a_job_not_running_is_immediate(queue, store, worker, engine, status):
    job = job_in(status, queue, store, worker)
    before = db_now(engine)
    cancelled = queue.cancel(job.id, actor=OP)
    is_request = cancelled.stopping
    assert is_request is False
    assert cancelled.status is S.CANCELLED
    assert cancelled.termination_reason == "cancelled"
    assert cancelled.finished_at >= before
    assert cancelled.queue_position is None
    assert_event(queue, job.id, status, S.CANCELLED, "cancel", OP)


@pytest.mark.parametrize("status", [S.PENDING, S.QUEUED, S.PAUSED])
def test_mark_failed_of_a_job_not_running_is_immediate_with_the_reason(
    queue, store, worker, status
):
    job = job_in(status, queue, store, worker)
    failed = queue.mark_failed(job.id, actor=OP, reason="bad dataset")
    is_request = failed.stopping
    assert is_request is False
    assert failed.status is S.FAILED
    assert failed.termination_reason == "marked_failed"
    assert failed.error_message == "bad dataset"
    assert failed.finished_at is not None
    event = assert_event(queue, job.id, status, S.FAILED, "mark-failed", OP)
    assert event.reason == "bad dataset"


def test_cancel_of_a_running_job_is_a_request_a_second_one_kills(queue, store, worker):
    job, claimed = start(queue, store, worker)
    first = queue.cancel(job.id, actor=OP)
    is_request = first.stopping
    assert is_request and first.status is S.RUNNING
    assert first.requested_action == "cancel"
    assert first.request_kill is False
    assert store.renew({job.id: claimed.lease_token}).kill_now == frozenset()
    second = queue.cancel(job.id, actor=OP)
    is_request = second.stopping
    assert is_request and second.status is S.RUNNING
    assert second.request_kill is True
    renewal = store.renew({job.id: claimed.lease_token})
    assert renewal.held == {job.id: "cancel"}
    assert renewal.kill_now == {job.id}
    events = queue.events(job.id)[-2:]
    assert [(e.from_status, e.to_status, e.action) for e in events] == [
        ("running", "running", "cancel"),
        ("running", "running", "cancel"),
    ]
    ended = store.finish(
        job.id,
        claimed.lease_token,
        Exit(signal=9, stopped_for=StopCause.CANCEL),
        actor=worker.actor,
    )
    assert ended.status is S.CANCELLED and ended.signal == 9
    assert ended.termination_reason == "cancelled"


def test_forced_cancel_of_a_running_job_kills_at_once(queue, store, worker):
    job, claimed = start(queue, store, worker)
    requested = queue.cancel(job.id, actor=OP, force=True)
    is_request = requested.stopping
    assert is_request
    assert requested.requested_action == "cancel"
    assert requested.request_kill is True
    assert store.renew({job.id: claimed.lease_token}).kill_now == {job.id}


def test_cancel_upgrades_a_pause_request(queue, store, worker):
    job, _ = start(queue, store, worker)
    queue.pause(job.id, actor=OP)
    upgraded = queue.cancel(job.id, actor=OP)
    is_request = upgraded.stopping
    assert is_request and upgraded.requested_action == "cancel"


def test_pause_does_not_downgrade_a_cancel_request(queue, store, worker):
    job, _ = start(queue, store, worker)
    queue.cancel(job.id, actor=OP)
    with pytest.raises(InvalidTransition) as caught:
        queue.pause(job.id, actor=OP)
    assert caught.value.status == "running"
    assert queue.get(job.id).requested_action == "cancel"


def test_a_cancel_that_came_after_the_pause_signal_ends_cancelled(queue, store, worker):
    """The worker signalled for a pause; the user then cancelled: they expect cancelled."""
    job, claimed = start(queue, store, worker)
    queue.pause(job.id, actor=OP)
    queue.cancel(job.id, actor=OP)
    ended = store.finish(
        job.id,
        claimed.lease_token,
        Exit(exit_code=0, stopped_for=StopCause.PAUSE),
        actor=worker.actor,
    )
    assert ended.status is S.CANCELLED
    assert ended.termination_reason == "cancelled"


def test_mark_failed_of_a_running_job_ends_failed_with_the_reason(queue, store, worker):
    job, claimed = start(queue, store, worker)
    requested = queue.mark_failed(job.id, actor=OP, reason="loss is NaN")
    is_request = requested.stopping
    assert is_request and requested.status is S.RUNNING
    assert requested.requested_action == "fail"
    assert_event(queue, job.id, S.RUNNING, S.RUNNING, "mark-failed", OP)
    ended = store.finish(
        job.id,
        claimed.lease_token,
        Exit(signal=15, stopped_for=StopCause.FAIL),
        actor=worker.actor,
    )
    assert ended.status is S.FAILED
    assert ended.termination_reason == "marked_failed"
    assert ended.error_message == "loss is NaN"


@pytest.mark.parametrize(
    ("act", "status", "termination"),
    [
        (lambda q, i: q.pause(i, actor=OP), S.PAUSED, None),
        (lambda q, i: q.cancel(i, actor=OP), S.CANCELLED, "cancelled"),
        (lambda q, i: q.mark_failed(i, actor=OP, reason="gone"), S.FAILED, "marked_failed"),
    ],
    ids=["pause", "cancel", "mark-failed"],
)
def test_actions_on_a_running_job_with_an_expired_lease_are_immediate(
    queue, store, worker, engine, act, status, termination
):
    job, claimed = start(queue, store, worker)
    expire_lease(engine, job.id)
    ended = act(queue, job.id)
    is_request = ended.stopping
    assert is_request is False
    assert ended.status is status
    assert ended.termination_reason == termination
    assert ended.requested_action is None
    assert ended.lease_token is None
    if status is S.FAILED:
        assert ended.error_message == "gone"
    event = last_event(queue, job.id)
    assert (event.from_status, event.to_status, event.actor) == ("running", status.value, OP)
    # The worker that lost the lease can write nothing more about the job.
    with pytest.raises(LeaseLost):
        store.finish(job.id, claimed.lease_token, Exit(exit_code=0), actor=worker.actor)


# -- retry --------------------------------------------------------------------------------


def _failed_with_checkpoint(queue, store, worker) -> Job:
    job, claimed = start(queue, store, worker, max_attempts=1)
    store.report_checkpoint(job.id, claimed.lease_token, "/ckpt/step-7", 7)
    failed = store.finish(job.id, claimed.lease_token, Exit(exit_code=2), actor=worker.actor)
    assert failed.status is S.FAILED and failed.checkpoint is not None
    return failed


@pytest.mark.parametrize("status", [S.FAILED, S.CANCELLED])
def test_retry_queues_a_fresh_attempt(queue, store, worker, engine, status):
    job = job_in(status, queue, store, worker)
    before = db_now(engine)
    retried = queue.retry(job.id, actor=OP)
    assert retried.status is S.QUEUED
    assert (retried.attempt, retried.interruptions) == (1, 0)
    assert retried.queued_at >= before
    assert retried.finished_at is None
    assert retried.termination_reason is None
    assert retried.exit_code is None and retried.error_message is None
    assert retried.not_before is None and retried.forced is False
    assert retried.queue_position == 1
    assert_event(queue, job.id, status, S.QUEUED, "retry", OP)


def test_retry_resumes_from_the_checkpoint_by_default(queue, store, worker):
    failed = _failed_with_checkpoint(queue, store, worker)
    retried = queue.retry(failed.id, actor=OP)
    assert retried.checkpoint["uri"] == "/ckpt/step-7"
    assert retried.checkpoint["step"] == 7


def test_retry_without_checkpoint_starts_from_scratch(queue, store, worker):
    failed = _failed_with_checkpoint(queue, store, worker)
    retried = queue.retry(failed.id, actor=OP, from_checkpoint=False)
    assert retried.status is S.QUEUED
    assert retried.checkpoint is None
    assert retried.progress is None


def test_after_retry_a_failure_is_retried_again(queue, store, worker):
    job, claimed = start(queue, store, worker, max_attempts=2)
    store.finish(job.id, claimed.lease_token, Exit(exit_code=1), actor=worker.actor)
    queue.force_start(job.id, actor=OP)
    claimed = claim_one(store, worker, job.id)
    failed = store.finish(job.id, claimed.lease_token, Exit(exit_code=1), actor=worker.actor)
    assert failed.status is S.FAILED and failed.attempt == 2
    retried = queue.retry(job.id, actor=OP)
    assert retried.attempt == 1 and retried.forced is False
    claimed = claim_one(store, worker, job.id)
    again = store.finish(job.id, claimed.lease_token, Exit(exit_code=1), actor=worker.actor)
    assert again.status is S.QUEUED
    assert again.attempt == 2


# -- the process ends by itself ----------------------------------------------------------


def test_exit_0_completes(queue, store, worker):
    job, claimed = start(queue, store, worker)
    done = store.finish(job.id, claimed.lease_token, Exit(exit_code=0), actor=worker.actor)
    assert done.status is S.COMPLETED
    assert done.termination_reason == "completed"
    assert (done.exit_code, done.signal, done.error_message) == (0, None, None)
    assert done.finished_at is not None and done.lease_token is None
    assert done.log_tail == []
    assert_event(queue, job.id, S.RUNNING, S.COMPLETED, "exit", worker.actor)


def test_failures_back_off_until_the_last_attempt_fails(queue, store, worker, engine):
    job, claimed = start(queue, store, worker, max_attempts=3)
    store.report_checkpoint(job.id, claimed.lease_token, "/ckpt/a", 5)

    for attempt, backoff in [(1, 30), (2, 60)]:
        before = db_now(engine)
        queued = store.finish(job.id, claimed.lease_token, Exit(exit_code=1), actor=worker.actor)
        after = db_now(engine)
        assert queued.status is S.QUEUED
        assert queued.attempt == attempt + 1
        assert queued.exit_code == 1
        assert queued.error_message == "exit code 1"
        assert queued.checkpoint["uri"] == "/ckpt/a"  # resumes from the last checkpoint
        assert queued.worker_name is None and queued.lease_token is None
        assert queued.termination_reason is None and queued.finished_at is None
        assert before.timestamp() + backoff - 1 <= queued.not_before.timestamp()
        assert queued.not_before.timestamp() <= after.timestamp() + backoff + 1
        seen = queue.get(job.id)
        assert seen.queue_position is None
        assert seen.waiting_reason.startswith("not before")
        assert_event(queue, job.id, S.RUNNING, S.QUEUED, "exit", worker.actor)
        # Not claimed before not_before.
        assert store.claim(worker, free_gpu_ids=[0, 1, 2, 3], slots=1) == []
        # An operator skips the back-off (force-start clears not_before).
        queue.force_start(job.id, actor=OP)
        claimed = claim_one(store, worker, job.id)
        assert claimed.job.attempt == attempt + 1

    failed = store.finish(job.id, claimed.lease_token, Exit(exit_code=4), actor=worker.actor)
    assert failed.status is S.FAILED
    assert failed.termination_reason == "exit_code"
    assert failed.exit_code == 4
    assert failed.attempt == failed.max_attempts == 3
    assert failed.not_before is None
    assert_event(queue, job.id, S.RUNNING, S.FAILED, "exit", worker.actor)


def test_death_by_signal_on_the_last_attempt_ends_signal(queue, store, worker):
    job, claimed = start(queue, store, worker, max_attempts=1)
    failed = store.finish(job.id, claimed.lease_token, Exit(signal=9), actor=worker.actor)
    assert failed.status is S.FAILED
    assert failed.termination_reason == "signal"
    assert failed.signal == 9
    assert "signal 9" in failed.error_message
    assert failed.attempt == 1


def test_death_by_signal_with_attempts_left_is_retried(queue, store, worker):
    job, claimed = start(queue, store, worker, max_attempts=2)
    queued = store.finish(job.id, claimed.lease_token, Exit(signal=11), actor=worker.actor)
    assert queued.status is S.QUEUED and queued.attempt == 2
    assert queued.signal == 11
    assert queued.not_before is not None


def test_a_program_that_cannot_start_fails_spawn_failed(queue, store, worker):
    job, claimed = start(queue, store, worker, max_attempts=5)
    failed = store.finish(
        job.id,
        claimed.lease_token,
        Exit(spawn_error="no such file: train.py"),
        actor=worker.actor,
    )
    assert failed.status is S.FAILED
    assert failed.termination_reason == "spawn_failed"
    assert failed.error_message == "no such file: train.py"
    assert failed.attempt == 1
    assert_event(queue, job.id, S.RUNNING, S.FAILED, "spawn_failed", worker.actor)


def test_log_tail_is_kept_when_the_job_ends(queue, store, worker):
    job, claimed = start(queue, store, worker)
    store.append_logs(job.id, claimed.lease_token, [("stdout", f"line {i}") for i in range(25)])
    done = store.finish(job.id, claimed.lease_token, Exit(exit_code=1), actor=worker.actor)
    assert done.log_tail == [f"line {i}" for i in range(5, 25)]


# -- the worker goes away ------------------------------------------------------------


def test_graceful_hand_back_keeps_the_place_and_counts_an_interruption(queue, store, worker):
    job, claimed = start(queue, store, worker)
    later, _ = queue.submit(spec(name="later"), actor=OP)
    store.report_checkpoint(job.id, claimed.lease_token, "/ckpt/s", 3)
    back = store.hand_back(job.id, claimed.lease_token, actor=worker.actor)
    assert back.status is S.QUEUED
    assert back.interruptions == 1
    assert back.attempt == 1
    assert back.queued_at == job.queued_at
    assert back.not_before is None
    assert back.worker_name is None and back.lease_token is None
    assert back.checkpoint["uri"] == "/ckpt/s"
    assert queue.get(job.id).queue_position == 1
    assert queue.get(later.id).queue_position == 2
    assert_event(queue, job.id, S.RUNNING, S.QUEUED, "shutdown", worker.actor)
    # Its old lease is gone for good.
    with pytest.raises(LeaseLost):
        store.finish(job.id, claimed.lease_token, Exit(exit_code=0), actor=worker.actor)


def test_hand_back_carries_out_a_pending_request(queue, store, worker):
    job, claimed = start(queue, store, worker)
    queue.cancel(job.id, actor=OP)
    ended = store.hand_back(job.id, claimed.lease_token, actor=worker.actor)
    assert ended.status is S.CANCELLED


def test_expired_lease_requeues_keeping_the_place(queue, store, worker, engine):
    job, claimed = start(queue, store, worker)
    later, _ = queue.submit(spec(name="later"), actor=OP)
    expire_lease(engine, job.id)
    [swept] = sweep_expired_leases(engine)
    assert swept.id == job.id
    assert swept.status is S.QUEUED
    assert swept.interruptions == 1 and swept.attempt == 1
    assert swept.queued_at == job.queued_at
    assert swept.lease_token is None
    assert queue.get(job.id).queue_position == 1
    assert queue.get(later.id).queue_position == 2
    assert_event(queue, job.id, S.RUNNING, S.QUEUED, "lease_expired", "system")
    assert sweep_expired_leases(engine) == []
    with pytest.raises(LeaseLost):
        store.finish(job.id, claimed.lease_token, Exit(exit_code=0), actor=worker.actor)


def test_expired_lease_past_max_interruptions_fails(queue, store, worker, engine):
    job, claimed = start(queue, store, worker, max_interruptions=1)
    store.hand_back(job.id, claimed.lease_token, actor=worker.actor)
    claim_one(store, worker, job.id)
    expire_lease(engine, job.id)
    [swept] = sweep_expired_leases(engine)
    assert swept.status is S.FAILED
    assert swept.termination_reason == "max_interruptions"
    assert swept.interruptions == 2
    assert swept.finished_at is not None
    assert_event(queue, job.id, S.RUNNING, S.FAILED, "lease_expired", "system")


@pytest.mark.parametrize(
    ("act", "status"),
    [
        (lambda q, i: q.pause(i, actor=OP), S.PAUSED),
        (lambda q, i: q.cancel(i, actor=OP), S.CANCELLED),
        (lambda q, i: q.mark_failed(i, actor=OP, reason="x"), S.FAILED),
    ],
    ids=["pause", "cancel", "mark-failed"],
)
def test_expired_lease_carries_out_a_pending_request(queue, store, worker, engine, act, status):
    job, _ = start(queue, store, worker)
    act(queue, job.id)
    expire_lease(engine, job.id)
    [swept] = sweep_expired_leases(engine)
    assert swept.status is status
    assert swept.interruptions == 0
    assert swept.requested_action is None
    assert_event(queue, job.id, S.RUNNING, status, "lease_expired", "system")


# -- patch ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.PENDING, S.QUEUED])
def test_patch_changes_priority_and_pool_keeping_queued_at(queue, store, worker, status):
    job = job_in(status, queue, store, worker)
    patched = queue.patch(job.id, actor=OP, priority=95, pool="big")
    assert patched.status is status
    assert (patched.priority, patched.pool) == (95, "big")
    assert patched.queued_at == job.queued_at
    event = assert_event(queue, job.id, status, status, "patch", OP)
    assert "priority" in event.reason and "pool" in event.reason
