"""The PyTorch example under a real worker: pause, resume from its checkpoint, complete.

Skipped where torch is not installed (CI installs no torch); the same job runs on a
GPU host with `python examples/gpu_check.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobqueue.examples import KINDS_FILE
from jobqueue.queue import JobQueue
from jobqueue.states import JobStatus
from tests.helpers import (
    describe,
    log_texts,
    running_worker,
    submit,
    wait_status,
    wait_step,
    worker_settings,
)
from worker.kinds import load_kinds

pytestmark = pytest.mark.system

pytest.importorskip("torch")


def test_torch_example_pauses_and_resumes_from_its_checkpoint(database_url, engine, tmp_path):
    settings = worker_settings(database_url, tmp_path)
    queue = JobQueue(engine, settings)
    kinds = load_kinds(KINDS_FILE)
    config = {"steps": 300, "checkpoint_every": 1000, "hidden": 32, "step_seconds": 0.01}
    with running_worker(settings, kinds, virtual_gpus=1):
        job = submit(queue, "train-torch", config, gpus=1)
        wait_step(queue, job.id, 30, timeout=60)
        queue.pause(job.id, actor="test")
        paused = wait_status(queue, job.id, JobStatus.PAUSED, JobStatus.COMPLETED, timeout=60)
        assert paused.status is JobStatus.PAUSED, describe(queue, job.id)
        uri, step = paused.checkpoint["uri"], paused.checkpoint["step"]
        assert Path(uri).is_file() and 30 <= step < 300
        queue.resume(job.id, actor="test")
        done = wait_status(queue, job.id, JobStatus.COMPLETED, JobStatus.FAILED, timeout=120)
    assert done.status is JobStatus.COMPLETED, describe(queue, job.id)
    assert done.progress["step"] == 300
    logs = log_texts(queue, job.id)
    assert f"stopping at step {step} on SIGTERM" in logs
    assert f"resuming from {uri} at step {step}" in logs
    assert any("CUDA_VISIBLE_DEVICES='0'" in line for line in logs)
