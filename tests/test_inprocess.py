"""The in-process API against a real PostgreSQL: ``jobqueue.connect``, submit, and a
``PythonWorker`` running callables with everything the daemon does around its jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

import jobqueue
from jobqueue.outcomes import Exit
from jobqueue.states import JobStatus
from jobqueue.worker_store import WorkerStore

S = JobStatus


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.fixture
def queue(database_url, settings):
    q = jobqueue.connect(database_url, settings=settings)
    try:
        yield q
    finally:
        q.engine.dispose()


def submit(queue, name="job", kind="train", **fields):
    job, _ = queue.submit(jobqueue.JobSpec(name=name, kind=kind, gpus=0, **fields), actor="me")
    return job


def test_a_python_worker_runs_callables_with_their_reports(queue):
    def train(job: jobqueue.JobContext) -> None:
        job.log("starting", f"lr={job.config['lr']}")
        job.progress(0.5, step=5, metrics={"loss": 0.25})
        job.checkpoint("/ckpt/5", step=5)

    jobs = [submit(queue, f"j{i}", config={"lr": i}) for i in range(3)]
    with jobqueue.PythonWorker(queue, {"train": train}, name="py-1", slots=2):
        wait_for(lambda: all(queue.get(j.id).status is S.COMPLETED for j in jobs))
        [me] = [w for w in queue.workers() if w.name == "py-1"]
        assert me.alive and me.kinds == ["train"]
    done = queue.get(jobs[2].id)
    assert done.progress["metrics"] == {"loss": 0.25} and done.checkpoint["uri"] == "/ckpt/5"
    lines, _ = queue.logs(done.id)
    assert [line.text for line in lines] == ["starting", "lr=2"]
    [me] = [w for w in queue.workers() if w.name == "py-1"]
    assert not me.alive  # stopped cleanly


def test_an_exception_fails_the_attempt_and_an_exit_decides_the_end(queue):
    def broken(job):
        raise ValueError("bad batch")

    def exits(job):
        return Exit(exit_code=3)

    failing = submit(queue, "f", kind="broken", max_attempts=1)
    three = submit(queue, "x", kind="exits", max_attempts=1)
    with jobqueue.PythonWorker(queue, {"broken": broken, "exits": exits}, name="py-2"):
        wait_for(lambda: queue.get(failing.id).status is S.FAILED)
        wait_for(lambda: queue.get(three.id).status is S.FAILED)
    assert "ValueError: bad batch" in queue.get(failing.id).error_message
    assert queue.get(three.id).exit_code == 3


def test_a_pause_reaches_the_callable_and_decides_its_end(queue):
    started = threading.Event()

    def long(job):
        started.set()
        deadline = time.monotonic() + 20
        while job.stop_requested is None and time.monotonic() < deadline:
            time.sleep(0.05)
        job.checkpoint("/ckpt/late", step=7)

    job = submit(queue, "long", kind="long")
    with jobqueue.PythonWorker(queue, {"long": long}, name="py-3"):
        assert started.wait(10)
        queue.pause(job.id, actor="me")
        wait_for(lambda: queue.get(job.id).status is S.PAUSED)
    paused = queue.get(job.id)
    assert paused.checkpoint["uri"] == "/ckpt/late"  # it checkpointed, then was paused


def test_stopping_the_worker_hands_running_jobs_back_and_a_new_run_requeues_orphans(
    queue, settings
):
    started = threading.Event()

    def patient(job):
        started.set()
        deadline = time.monotonic() + 20
        while job.stop_requested is None and time.monotonic() < deadline:
            time.sleep(0.05)

    handed = submit(queue, "handed", kind="patient")
    worker = jobqueue.PythonWorker(queue, {"patient": patient}, name="py-4").start()
    assert started.wait(10)
    worker.stop()
    back = queue.get(handed.id)
    assert back.status is S.QUEUED and back.interruptions == 1  # an interruption, no failure
    # A run that died with a job on its books: the next run of the same name re-queues it.
    store = WorkerStore(queue.engine, settings)
    [orphan] = store.claim(worker.identity, free_gpu_ids=[], slots=1)
    with jobqueue.PythonWorker(queue, {"patient": lambda job: None}, name="py-4"):
        wait_for(lambda: queue.get(orphan.id).status is S.COMPLETED)
    assert queue.get(orphan.id).interruptions == 2


def test_the_report_helper_of_job_code_loads_no_database_driver():
    import subprocess
    import sys

    code = ("from jobqueue import report; import sys; "
            "print(sorted(m for m in ('sqlalchemy', 'psycopg') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
