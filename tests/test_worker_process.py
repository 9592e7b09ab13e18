"""The worker as a real OS process (``python -m worker``): SIGTERM, SIGKILL, restart.

These are the cases an in-process daemon cannot show: a worker that is told to
stop by a signal, a worker that dies at once, and a worker started again with
the same name. Settings reach the worker through its environment (SPEC §5).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from jobqueue.queue import JobQueue
from jobqueue.states import JobStatus
from tests.helpers import (
    ACTOR,
    ROOT,
    assert_no_job_processes_left,
    describe,
    family_pids,
    group_alive,
    job_processes,
    kinds_file,
    log_texts,
    running_worker,
    submit,
    wait_for,
    wait_status,
    wait_step,
    worker_settings,
)
from worker.kinds import load_kinds

pytestmark = pytest.mark.system


class WorkerProcess:
    """``python -m worker …`` in its own session, its output in a file."""

    def __init__(self, env: dict[str, str], args: list[str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker did not exit within {timeout}s; its output:\n{self.output()}"
            ) from None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Whatever happened: the worker and its process group end."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()


def worker_env(database_url: str, tmp_path: Path, *, lease: float) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JOBQUEUE_") and k not in ("DATABASE_URL",)
    }
    env.update(
        DATABASE_URL=database_url,
        JOBQUEUE_LEASE_SECONDS=str(lease),
        JOBQUEUE_HEARTBEAT_SECONDS="0.5",
        JOBQUEUE_SWEEP_SECONDS="0.5",
        JOBQUEUE_GRACE_SECONDS="3",
        JOBQUEUE_RETRY_BACKOFF_SECONDS="0",
        # Shared by every worker of a test: checkpoints are seen by all of them.
        JOBQUEUE_STATE_DIR=str(tmp_path / "state"),
    )
    return env


@contextlib.contextmanager
def worker_process(
    env: dict[str, str], tmp_path: Path, name: str, *args: str
) -> Iterator[WorkerProcess]:
    log_path = tmp_path / f"worker-{name}.log"
    worker = WorkerProcess(
        env, ["--kinds", str(kinds_file(tmp_path)), "--name", name, *args], log_path
    )
    try:
        yield worker
    except BaseException:
        print(f"--- output of worker {name} ---\n{worker.output()}")
        raise
    finally:
        worker.stop()


def database_now(engine: Engine):
    with engine.connect() as conn:
        return conn.execute(text("SELECT now()")).scalar_one()


@pytest.fixture
def queue(engine: Engine, database_url: str, tmp_path: Path, no_leftover_processes) -> JobQueue:
    return JobQueue(engine, worker_settings(database_url, tmp_path))


@pytest.fixture
def no_leftover_processes(engine: Engine) -> Iterator[None]:
    yield
    assert_no_job_processes_left(engine)


def test_worker_sigterm_hands_the_job_back_and_another_worker_resumes_it(
    queue, database_url, tmp_path
):
    env = worker_env(database_url, tmp_path, lease=8)
    config = {"steps": 300, "step_seconds": 0.02, "checkpoint_every": 1000}
    with worker_process(env, tmp_path, "wa", "--virtual-gpus", "1") as wa:
        job = submit(queue, "sgd", config, gpus=1)
        running = wait_step(queue, job.id, 30, timeout=40)
        assert running.worker_name == "wa" and running.gpu_ids == [0]
        wa.signal(signal.SIGTERM)
        assert wa.wait(20) == 0
        # The worker waited for its job to checkpoint and end before it exited.
        assert not job_processes([job.id])

    back = queue.get(job.id)
    assert back.status is JobStatus.QUEUED, describe(queue, job.id)
    assert back.interruptions == 1 and back.attempt == 1
    assert back.queued_at == running.queued_at  # it keeps its place
    assert back.worker_name is None and back.requested_action is None
    assert back.termination_reason is None
    uri, step = back.checkpoint["uri"], back.checkpoint["step"]
    assert 30 <= step < 300 and Path(uri).is_file()
    last = queue.events(job.id)[-1]
    assert (last.from_status, last.to_status, last.action, last.actor) == (
        "running", "queued", "shutdown", "worker:wa",
    )  # fmt: skip
    assert back.waiting_reason == "no live worker in pool default knows kind sgd"
    assert [w.alive for w in queue.workers() if w.name == "wa"] == [False]

    logs_before = len(log_texts(queue, job.id))
    settings = worker_settings(database_url, tmp_path, lease_seconds=8)
    kinds = load_kinds(kinds_file(tmp_path))
    with running_worker(settings, kinds, name="wb", virtual_gpus=1):
        done = wait_status(queue, job.id, JobStatus.COMPLETED, JobStatus.FAILED, timeout=30)
    assert done.status is JobStatus.COMPLETED, describe(queue, job.id)
    assert done.worker_name == "wb" and done.interruptions == 1 and done.attempt == 1
    assert log_texts(queue, job.id)[logs_before] == f"resuming from {uri} at step {step}"
    assert done.progress["step"] == 300


def test_worker_sigkill_stops_its_jobs_before_the_lease_expires_and_they_resume(
    queue, engine, database_url, tmp_path
):
    lease = 8
    env = worker_env(database_url, tmp_path, lease=lease)
    config = {"steps": 250, "step_seconds": 0.02, "checkpoint_every": 20}
    with worker_process(env, tmp_path, "wa", "--virtual-gpus", "1") as wa:
        job = submit(queue, "sgd", config, gpus=1)
        wait_for(
            lambda: (queue.get(job.id).checkpoint or {}).get("step", 0) >= 40,
            timeout=40,
            what="a checkpoint at step 40",
        )
        assert job_processes([job.id])
        wa.signal(signal.SIGKILL)
        killed = time.monotonic()
        wa.wait(10)
        # The job's supervisor saw its worker die and stopped the job, long before
        # the lease ran out: no second copy can ever run beside it.
        wait_for(lambda: not job_processes([job.id]), timeout=4, what="the job's processes to go")
        gone_after = time.monotonic() - killed
        orphan = queue.get(job.id)
        assert orphan.status is JobStatus.RUNNING
        assert orphan.lease_expires_at > database_now(engine), (
            f"lease expired before the processes were gone ({gone_after:.1f}s)"
        )
        checkpoint = orphan.checkpoint

    logs_before = len(log_texts(queue, job.id))
    settings = worker_settings(database_url, tmp_path, lease_seconds=lease)
    kinds = load_kinds(kinds_file(tmp_path))
    with running_worker(settings, kinds, name="wb", virtual_gpus=1):
        done = wait_status(queue, job.id, JobStatus.COMPLETED, JobStatus.FAILED, timeout=lease + 30)
    assert done.status is JobStatus.COMPLETED, describe(queue, job.id)
    assert done.interruptions == 1 and done.attempt == 1 and done.worker_name == "wb"
    events = queue.events(job.id)
    swept = [e for e in events if e.action == "lease_expired"]
    assert [(e.from_status, e.to_status, e.actor) for e in swept] == [
        ("running", "queued", "system")
    ]
    assert swept[0].at >= orphan.lease_expires_at
    assert [e.actor for e in events if e.action == "claim"] == ["worker:wa", "worker:wb"]
    resumed = log_texts(queue, job.id)[logs_before]
    assert resumed == f"resuming from {checkpoint['uri']} at step {checkpoint['step']}"
    assert done.progress["step"] == 250


def test_worker_restarted_with_the_same_name_removes_leftovers_and_requeues_at_once(
    queue, database_url, tmp_path
):
    lease = 30  # left alone, the supervisor would kill the job only near the lease's end
    env = worker_env(database_url, tmp_path, lease=lease)
    with worker_process(env, tmp_path, "wa", "--gpus", "none") as first:
        job = submit(queue, "family", {"ignore_term": True}, gpus=0)
        _, pgid, _ = family_pids(queue, job.id)
        first.signal(signal.SIGKILL)
        first.wait(10)
    time.sleep(1.5)
    # SIGTERM from its supervisor was ignored: the job's processes are still there.
    assert group_alive(pgid)
    assert queue.get(job.id).status is JobStatus.RUNNING

    logs_before = len(log_texts(queue, job.id))
    with worker_process(env, tmp_path, "wa", "--gpus", "none") as second:
        started = time.monotonic()
        wait_for(lambda: not group_alive(pgid), timeout=10, what="the leftovers to be killed")
        # At once: well before the 30 s lease could have expired.
        assert time.monotonic() - started < 10

        def claimed_again() -> bool:
            return [e.action for e in queue.events(job.id)].count("claim") == 2

        wait_for(claimed_again, timeout=15, what="the job to be claimed again")
        events = queue.events(job.id)
        assert [(e.action, e.to_status, e.actor) for e in events[-2:]] == [
            ("worker_restart", "queued", "worker:wa"),
            ("claim", "running", "worker:wa"),
        ]
        assert "lease_expired" not in [e.action for e in events]
        job_now = wait_status(queue, job.id, JobStatus.RUNNING)
        assert job_now.interruptions == 1
        _, new_pgid, _ = family_pids(queue, job.id, after=logs_before)
        assert new_pgid != pgid and group_alive(new_pgid)

        queue.cancel(job.id, actor=ACTOR, force=True)
        wait_status(queue, job.id, JobStatus.CANCELLED, timeout=10)
        wait_for(lambda: not group_alive(new_pgid), timeout=5, what="the new group to go")
        second.signal(signal.SIGTERM)
        assert second.wait(20) == 0


def test_worker_refuses_bad_arguments_and_a_schema_that_is_behind(databases, tmp_path):
    empty = databases.create(migrated=False)
    try:
        env = worker_env(empty, tmp_path, lease=8)
        kinds = str(kinds_file(tmp_path))

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "worker", *args],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip

        behind = run("--kinds", kinds, "--gpus", "none", "--name", "w")
        assert behind.returncode == 2, behind.stderr
        assert "run `jobqueue migrate`" in behind.stderr

        no_kinds = run("--gpus", "none")
        assert no_kinds.returncode == 2
        assert "--kinds" in no_kinds.stderr

        bad_gpus = run("--kinds", kinds, "--gpus", "0,x")
        assert bad_gpus.returncode == 2
        assert "--gpus takes auto, none or ids like 0,1,2" in bad_gpus.stderr

        bad_kinds = tmp_path / "bad.toml"
        bad_kinds.write_text('[kinds.x]\nargv = "not a list"\n')
        wrong = run("--kinds", str(bad_kinds), "--gpus", "none")
        assert wrong.returncode == 2
        assert "argv must be a non-empty list of strings" in wrong.stderr
    finally:
        databases.drop(empty)
