"""The pure rules of SPEC §2, without a database: which jobs a worker starts,
how long a failed job waits, and the sentence that says why a job waits."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from jobqueue.clock import NOW as DB_NOW
from jobqueue.clock import DbTime
from jobqueue.fit import Candidate, choose
from jobqueue.outcomes import (
    MAX_BACKOFF_SECONDS,
    Exit,
    StopCause,
    after_exit,
    backoff_seconds,
    stop_rank,
)
from jobqueue.records import Job, WorkerInfo
from jobqueue.states import JobStatus
from jobqueue.waiting import Place, QueueEntry, waiting_reason

S = JobStatus
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


# -- builders ---------------------------------------------------------------------------


def make_job(**overrides) -> Job:
    values = dict(
        id=uuid4(),
        name="resnet",
        kind="train",
        config={},
        status=S.QUEUED,
        pool="default",
        team="default",
        owner="tester",
        max_runtime_seconds=None,
        preemptible=True,
        preempted=0,
        gpus=1,
        priority=50,
        forced_at=None,
        queued_at=NOW - timedelta(minutes=5),
        not_before=None,
        attempt=1,
        max_attempts=3,
        interruptions=0,
        max_interruptions=10,
        progress=None,
        checkpoint=None,
        worker_name=None,
        gpu_ids=None,
        lease_token=None,
        lease_expires_at=None,
        requested_action=None,
        requested_by=None,
        request_reason=None,
        request_kill=False,
        termination_reason=None,
        exit_code=None,
        signal=None,
        error_message=None,
        log_tail=None,
        log_count=0,
        metric_count=0,
        idempotency_key=None,
        request_fingerprint=None,
        sweep_id=None,
        sweep_index=None,
        sweep_held=False,
        created_at=NOW - timedelta(minutes=5),
        started_at=None,
        finished_at=None,
        updated_at=NOW - timedelta(minutes=5),
        expected_start_at=None,
    )
    values.update(overrides)
    return Job(**values)


def make_worker(**overrides) -> WorkerInfo:
    values = dict(
        name="gpu-a",
        hostname="host-a",
        pools=["default"],
        kinds=["train"],
        gpu_total=4,
        gpu_free=4,
        devices=[],
        started_at=NOW - timedelta(hours=1),
        last_heartbeat_at=NOW,
        stopped_at=None,
        alive=True,
        running_jobs=[],
    )
    values.update(overrides)
    return WorkerInfo(**values)


def entry(job: Job, position: int) -> QueueEntry:
    return QueueEntry(
        id=job.id,
        name=job.name,
        pool=job.pool,
        kind=job.kind,
        gpus=job.gpus,
        priority=job.priority,
        forced=job.forced,
        place=Place.exact(position),
    )


def reason(job: Job, *, queue: list[Job] | None = None, workers=None) -> str | None:
    """The job's waiting reason with ``queue`` (its pool, claim order) and ``workers``."""
    queue = [job] if queue is None else queue
    entries = [entry(j, i) for i, j in enumerate(queue, start=1)]
    place = next((e.place for e in entries if e.id == job.id), None)
    return waiting_reason(
        job,
        now=NOW,
        place=place,
        pool_queue=entries,
        workers=[make_worker()] if workers is None else workers,
    )


def cand(gpus: int, *, forced: bool = False) -> Candidate:
    return Candidate(uuid4(), gpus, forced)


def pick(candidates, *, free=(0, 1, 2, 3), total=4, slots=8) -> list[tuple[UUID, list[int]]]:
    return choose(candidates, free_gpu_ids=list(free), total_gpus=total, slots=slots)


# -- choose -------------------------------------------------------------------------------


def test_choose_starts_jobs_in_claim_order_on_distinct_free_gpus():
    a, b, c = cand(1), cand(2), cand(1)
    assert pick([a, b, c]) == [(a.id, [0]), (b.id, [1, 2]), (c.id, [3])]


def test_choose_uses_the_free_gpu_ids_it_is_given():
    a, b = cand(2), cand(1)
    assert pick([a, b], free=[5, 2, 7], total=8) == [(a.id, [5, 2]), (b.id, [7])]


def test_choose_starts_nothing_that_does_not_fit():
    assert pick([cand(3)], free=[0, 1]) == []
    assert pick([cand(1)], free=[]) == []
    assert pick([]) == []


def test_choose_respects_the_free_slots():
    jobs = [cand(0), cand(1), cand(0), cand(1)]
    assert [j for j, _ in pick(jobs, slots=2)] == [jobs[0].id, jobs[1].id]
    assert pick(jobs, slots=0) == []


def test_zero_gpu_jobs_start_without_free_gpus_and_take_none():
    a, b = cand(0), cand(0)
    assert pick([a, b], free=[]) == [(a.id, []), (b.id, [])]


def test_smaller_jobs_start_around_a_big_job_that_does_not_fit_yet():
    big, small, zero = cand(4), cand(2), cand(0)
    assert pick([big, small, zero], free=[1, 3]) == [(small.id, [1, 3]), (zero.id, [])]


def test_a_forced_job_waiting_for_gpus_of_this_host_blocks_other_gpu_jobs():
    forced, small, zero, other = cand(4, forced=True), cand(1), cand(0), cand(2)
    chosen = pick([forced, small, zero, other], free=[0, 2], total=4)
    # Nothing else goes on the GPUs it waits for; 0-GPU jobs need none of them.
    assert chosen == [(zero.id, [])]


def test_a_forced_job_bigger_than_the_host_does_not_block():
    forced, small = cand(8, forced=True), cand(1)
    assert pick([forced, small], free=[0, 1, 2, 3], total=4) == [(small.id, [0])]


def test_a_forced_job_that_fits_starts_first():
    forced, small = cand(3, forced=True), cand(1)
    assert pick([forced, small]) == [(forced.id, [0, 1, 2]), (small.id, [3])]


def test_a_big_non_forced_job_does_not_block():
    big, small = cand(4), cand(1)
    assert pick([big, small], free=[0], total=4) == [(small.id, [0])]


# -- backoff ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "base", "expected"),
    [
        (1, 30, 30),
        (2, 30, 60),
        (3, 30, 120),
        (4, 30, 240),
        (7, 30, 1920),
        (8, 30, 3600),  # 3840 capped at 1 h
        (100, 30, 3600),
        (10_000, 30, 3600),
        (1, 5000, 3600),
        (3, 0.5, 2.0),
        (0, 30, 0),
        (1, 0, 0),
    ],
)
def test_backoff_doubles_from_the_base_and_is_capped_at_an_hour(failures, base, expected):
    assert backoff_seconds(failures, base) == pytest.approx(expected)
    assert MAX_BACKOFF_SECONDS == 3600


def test_a_failure_waits_the_backoff_of_its_attempt_number():
    job = make_job(status=S.RUNNING, attempt=2, max_attempts=5, worker_name="w")
    transition = after_exit(job, Exit(exit_code=1), backoff_base=10)
    assert transition.to_status is S.QUEUED
    assert transition.values["attempt"] == 3
    assert "in 20s" in transition.reason
    # A plain value: the database's now plus the back-off, turned into SQL elsewhere.
    assert transition.values["not_before"] == DbTime(plus_seconds=20)


def test_the_rules_write_plain_values_never_sql():
    running = make_job(status=S.RUNNING, worker_name="w")
    transitions = [
        after_exit(running, Exit(exit_code=0), backoff_base=10),
        after_exit(running, Exit(exit_code=1), backoff_base=10),
        after_exit(running, Exit(signal=9, stopped_for=StopCause.SHUTDOWN), backoff_base=10),
        after_exit(running, Exit(spawn_error="no such file"), backoff_base=10),
    ]
    plain = (str, int, float, bool, type(None), list, dict, UUID, DbTime)
    for transition in transitions:
        for column, value in transition.values.items():
            assert isinstance(value, plain), (transition.action, column, value)
    assert transitions[0].values["finished_at"] is DB_NOW


def test_a_job_stopped_at_its_time_limit_fails_with_time_limit_and_no_retry():
    job = make_job(status=S.RUNNING, worker_name="w", attempt=1, max_attempts=3,
                   max_runtime_seconds=3600)  # fmt: skip
    # It checkpointed and exited 0 on SIGTERM: the limit decides, as a request would.
    transition = after_exit(job, Exit(exit_code=0, stopped_for=StopCause.TIME_LIMIT), 10)
    assert transition.to_status is S.FAILED
    assert transition.values["termination_reason"] == "time_limit"
    assert "3600 s" in transition.values["error_message"]
    assert transition.action == "time_limit"


def test_a_time_limit_outranks_a_pause_but_not_an_earlier_cancel():
    assert stop_rank(StopCause.TIME_LIMIT) > stop_rank(StopCause.PAUSE)
    assert stop_rank(StopCause.TIME_LIMIT) == stop_rank(StopCause.CANCEL)
    assert stop_rank(StopCause.TIME_LIMIT) > stop_rank(StopCause.SHUTDOWN)


def test_a_stronger_request_after_the_signal_decides_the_outcome():
    job = make_job(status=S.RUNNING, worker_name="w", requested_action="cancel")
    transition = after_exit(job, Exit(exit_code=0, stopped_for=StopCause.PAUSE), backoff_base=10)
    assert transition.to_status is S.CANCELLED


# -- why it waits ---------------------------------------------------------------------------


def test_a_held_job_says_it_is_held():
    assert reason(make_job(status=S.PENDING)).startswith("held")


@pytest.mark.parametrize(
    "status", [S.RUNNING, S.PAUSED, S.COMPLETED, S.FAILED, S.CANCELLED], ids=lambda s: s.value
)
def test_jobs_that_do_not_wait_have_no_reason(status):
    assert reason(make_job(status=status)) is None


def test_a_job_not_before_a_future_time_says_when():
    later = NOW + timedelta(minutes=10)
    job = make_job(not_before=later)
    assert reason(job, queue=[]) == f"not before {later.isoformat()}"


def test_a_not_before_in_the_past_does_not_hold_the_job():
    job = make_job(not_before=NOW - timedelta(seconds=1))
    assert reason(job) == "next in line: a worker will claim it shortly"


@pytest.mark.parametrize(
    "workers",
    [
        [],
        [make_worker(kinds=["eval"])],
        [make_worker(pools=["big"])],
    ],
    ids=["no-worker", "unknown-kind", "other-pool"],
)
def test_a_job_no_live_worker_can_run_says_so(workers):
    job = make_job(kind="train", pool="default")
    assert reason(job, workers=workers) == "no live worker in pool default knows kind train"


def test_the_pool_and_kind_are_named():
    job = make_job(kind="finetune", pool="a100")
    assert reason(job, workers=[make_worker()]) == "no live worker in pool a100 knows kind finetune"


def test_a_job_needing_more_gpus_than_are_free_says_the_largest_free_block():
    job = make_job(gpus=3)
    workers = [make_worker(name="a", gpu_free=1), make_worker(name="b", gpu_free=2)]
    expected = "needs 3 GPUs, the largest free block in pool default is 2"
    assert reason(job, workers=workers) == expected


def test_free_gpus_of_workers_that_cannot_run_the_job_do_not_count():
    job = make_job(gpus=2)
    workers = [
        make_worker(name="a", gpu_free=1),
        make_worker(name="b", gpu_free=4, kinds=["eval"]),
        make_worker(name="c", gpu_free=4, pools=["other"]),
    ]
    expected = "needs 2 GPUs, the largest free block in pool default is 1"
    assert reason(job, workers=workers) == expected


def test_a_job_bigger_than_every_worker_says_so():
    job = make_job(gpus=8)
    assert reason(job) == "needs 8 GPUs, the largest worker in pool default has 4"


def test_a_job_behind_a_forced_job_names_it():
    forced = make_job(name="urgent", forced_at=NOW, gpus=4)
    job = make_job(gpus=1)
    assert reason(job, queue=[forced, job]) == f"behind forced job urgent ({forced.id})"


def test_a_forced_job_is_not_behind_itself():
    forced = make_job(forced_at=NOW)
    assert reason(forced, queue=[forced]) == "next in line: a worker will claim it shortly"


def test_a_forced_job_behind_another_counts_the_jobs_ahead():
    first = make_job(forced_at=NOW - timedelta(seconds=5))
    second = make_job(forced_at=NOW)
    assert reason(second, queue=[first, second]) == "behind 1 job"


def test_a_zero_gpu_job_is_not_held_back_by_a_forced_job():
    """0-GPU jobs start around a forced job (fit.choose); the sentence must not say otherwise."""
    forced = make_job(name="urgent", forced_at=NOW, gpus=4)
    job = make_job(gpus=0)
    assert reason(job, queue=[forced, job]) == "behind 1 job"


def test_a_forced_job_no_worker_can_host_does_not_hold_others_back():
    """A forced job bigger than every host blocks nobody (fit.choose)."""
    forced = make_job(name="huge", forced_at=NOW, gpus=16)
    job = make_job(gpus=1)
    assert reason(job, queue=[forced, job]) == "behind 1 job"


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        (1, "next in line: a worker will claim it shortly"),
        (2, "behind 1 job"),
        (3, "behind 2 jobs"),
        (12, "behind 11 jobs"),
    ],
)
def test_a_job_says_how_many_jobs_are_ahead(position, expected):
    queue = [make_job(name=f"j{i}") for i in range(position)]
    assert reason(queue[-1], queue=queue) == expected


def test_the_first_obstacle_a_person_would_check_wins():
    forced = make_job(forced_at=NOW, gpus=1)
    job = make_job(gpus=3, not_before=NOW + timedelta(hours=1))
    busy = [make_worker(gpu_free=1)]
    assert reason(job, queue=[forced, job], workers=busy).startswith("not before")
    job = dataclasses.replace(job, not_before=None)
    assert reason(job, queue=[forced, job], workers=[]).startswith("no live worker")
    assert reason(job, queue=[forced, job], workers=busy).startswith("needs 3 GPUs")
    assert reason(job, queue=[forced, job], workers=[make_worker()]).startswith("behind forced job")


def test_with_wait_is_a_frozen_copy_that_changes_only_the_wait():
    job = make_job(status=JobStatus.QUEUED)
    waiting = job.with_wait(3, "behind 2 jobs")
    assert waiting == dataclasses.replace(
        job, queue_position=3, queue_position_estimate=3, waiting_reason="behind 2 jobs"
    )
    assert (job.queue_position, job.waiting_reason) == (None, None)
    far = job.with_wait(None, "behind about 900 jobs", None, 901)
    assert (far.queue_position, far.queue_position_estimate) == (None, 901)
    with pytest.raises(dataclasses.FrozenInstanceError):
        waiting.priority = 1  # type: ignore[misc]


def test_a_place_past_the_exact_range_says_about_or_more_than():
    job = make_job()
    far = waiting_reason(job, now=NOW, place=Place.of(500, 12_345, 500), pool_queue=[],
                         workers=[make_worker()])  # fmt: skip
    assert far == "behind about 12,345 jobs"
    unmarked = waiting_reason(job, now=NOW, place=Place.of(500, None, 500), pool_queue=[],
                              workers=[make_worker()])  # fmt: skip
    assert unmarked == "behind more than 500 jobs"
    # The marks' estimate never says less than the jobs counted exactly.
    assert Place.of(500, 120, 500) == Place(None, 501, 500)
    assert Place.of(499, None, 500) == Place(500, 500)
