"""End-to-end check on a real GPU host: discovery, GPU assignment, pause and resume.

    python examples/gpu_check.py [--summary FILE]   # needs torch; nvidia-ml-py for NVML

It starts an embedded PostgreSQL (or uses DATABASE_URL), migrates it, runs a
worker with ``--gpus auto`` and the example kinds, then checks what a team
relies on when the queue drives real GPUs:

1. the worker finds the GPUs (NVML, else nvidia-smi) and its heartbeat row
   carries each device's name and memory;
2. a one-GPU ``train-torch`` job runs on ``cuda:0`` with
   ``CUDA_VISIBLE_DEVICES`` set to exactly the id it was given;
3. while every GPU is taken, a second GPU job waits and says why, and a
   0-GPU job still runs, with ``CUDA_VISIBLE_DEVICES`` empty;
4. pausing the first job frees its GPU (the waiting job starts on it); the
   paused job resumes from its checkpoint and completes.

It prints what it saw at each step, writes the findings as JSON to
``--summary`` when given, and exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jobqueue.examples import KINDS_FILE

findings: dict[str, Any] = {"ok": False}


def say(what: str, value: object = "") -> None:
    print(f"[gpu-check] {what}", value if value != "" else "", flush=True)


def check(condition: bool, describe: str) -> None:
    findings.setdefault("checks", []).append({"check": describe, "ok": bool(condition)})
    say(("ok: " if condition else "FAILED: ") + describe)
    if not condition:
        raise SystemExit(1)


def wait_for(describe: str, probe, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.3)
    check(False, f"{describe} within {timeout:g}s")


def main(summary: Path | None, gpus: str, device: str) -> int:
    from jobqueue.db import make_engine
    from jobqueue.migrate import upgrade
    from jobqueue.queue import JobQueue
    from jobqueue.settings import Settings
    from jobqueue.specs import JobSpec
    from jobqueue.testing import throwaway_server
    from worker.gpus import discover

    inventory = discover(gpus)
    findings["discovery"] = {
        "source": inventory.source,
        "ids": list(inventory.ids),
        "devices": inventory.devices(),
    }
    say("GPU discovery:", json.dumps(findings["discovery"]))
    check(bool(inventory.ids), "the worker's discovery finds a GPU")
    gpu_count = len(inventory.ids)

    state = Path(tempfile.mkdtemp(prefix="jobqueue-gpu-check-"))
    database = contextlib.ExitStack()
    url = os.environ.get("DATABASE_URL") or (
        database.enter_context(throwaway_server("jobqueue-gpu-check-pg-")).get_uri()
    )
    upgrade(url)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "JOBQUEUE_STATE_DIR": str(state),
        "JOBQUEUE_HEARTBEAT_SECONDS": "1",
        "JOBQUEUE_GRACE_SECONDS": "60",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "--gpus",
            gpus,
            "--kinds",
            str(KINDS_FILE),
            "--name",
            "gpu-check",
        ],
        env=env,
    )
    engine = make_engine(url, pool_size=2)
    queue = JobQueue(engine, Settings(database_url=url, state_dir=state))

    def job(job_id):
        return queue.get(job_id)

    def in_status(job_id, *statuses):
        current = job(job_id)
        return current if current.status.value in statuses else None

    def log_text(job_id) -> list[str]:
        return [line.text for line in queue.logs(job_id, limit=100_000)[0]]

    def submit(name: str, kind: str, gpus: int, config: dict[str, Any]):
        spec = JobSpec.model_validate({"name": name, "kind": kind, "gpus": gpus, "config": config})
        return queue.submit(spec, actor="gpu-check")[0].id

    started = time.monotonic()
    try:
        worker_row = wait_for(
            "the worker's heartbeat with GPU devices",
            lambda: next((w for w in queue.workers() if w.alive and w.devices), None),
            60,
        )
        findings["worker"] = worker_row.public()
        say("worker:", json.dumps(findings["worker"], default=str))
        check(worker_row.gpu_total == gpu_count, f"the worker advertises {gpu_count} GPU(s)")
        if inventory.source in ("nvml", "nvidia-smi"):
            check(
                all(d.get("name") and d.get("memory_total") for d in worker_row.devices),
                "each device in the heartbeat has a name and its memory",
            )

        # One GPU job per GPU, so every GPU is taken; each sleeps a little per step
        # so it is still running when it is paused.
        training = {
            "steps": 4000,
            "checkpoint_every": 250,
            "hidden": 2048,
            "batch": 4096,
            "step_seconds": 0.004,
        }
        firsts = [
            submit(f"gpu-check-torch-{i}", "train-torch", 1, training) for i in range(gpu_count)
        ]
        first = firsts[0]
        running = wait_for("the first GPU job runs", lambda: in_status(first, "running"), 120)
        say("first job running on", f"{running.worker_name}, GPUs {running.gpu_ids}")
        device_line = wait_for(
            "the job's device line",
            lambda: next((t for t in log_text(first) if t.startswith("device ")), None),
            120,
        )
        findings["first_job_device_line"] = device_line
        say("first job:", device_line)
        gpu_id = running.gpu_ids[0]
        expected = "device cuda:0" if device == "cuda" else "device cpu"
        check(device_line.startswith(expected), f"the job trains on {expected[7:]}")
        check(
            f"CUDA_VISIBLE_DEVICES='{gpu_id}'" in device_line,
            f"CUDA_VISIBLE_DEVICES is exactly the assigned GPU ({gpu_id})",
        )
        for other in firsts[1:]:
            wait_for("every GPU taken", lambda o=other: in_status(o, "running"), 120)

        waiting = submit("gpu-check-waits", "train-torch", 1, {"steps": 200, "hidden": 512})
        cpu_only = submit("gpu-check-cpu", "train-torch", 0, {"steps": 50})
        reason = wait_for(
            "a waiting reason about GPUs",
            lambda: (r := job(waiting).waiting_reason) and "GPU" in r and r,
            30,
        )
        findings["waiting_reason"] = reason
        say("second GPU job waits:", reason)
        check(
            job(waiting).status.value == "queued" and "GPU" in reason,
            "a GPU job waits while every GPU is taken, and says it needs GPUs",
        )
        cpu_done = wait_for(
            "the 0-GPU job ends", lambda: in_status(cpu_only, "completed", "failed"), 180
        )
        cpu_line = next((t for t in log_text(cpu_only) if t.startswith("device ")), "")
        findings["cpu_job_device_line"] = cpu_line
        say("0-GPU job:", f"{cpu_done.status.value}; {cpu_line}")
        check(
            cpu_done.status.value == "completed"
            and "CUDA_VISIBLE_DEVICES=''" in cpu_line
            and cpu_line.startswith("device cpu"),
            "a 0-GPU job runs beside them on the CPU with CUDA_VISIBLE_DEVICES empty",
        )

        wait_for("a checkpoint of the first job", lambda: job(first).checkpoint, 180)
        queue.pause(first, actor="gpu-check")
        paused = wait_for("the first job paused", lambda: in_status(first, "paused"), 120)
        findings["paused_checkpoint"] = paused.checkpoint
        say("paused with checkpoint", paused.checkpoint)
        check(
            paused.checkpoint is not None and not paused.gpu_ids,
            "pause ends with a checkpoint and frees the GPU",
        )
        moved_in = wait_for(
            "the waiting job starts on the freed GPU",
            lambda: in_status(waiting, "running", "completed"),
            120,
        )
        say("waiting job now", moved_in.status.value)

        queue.resume(first, actor="gpu-check")
        done = wait_for("the first job ends", lambda: in_status(first, "completed", "failed"), 600)
        lines = log_text(first)
        resumed = [t for t in lines if t.startswith("resuming from")]
        findings["resumed_line"] = resumed[0] if resumed else None
        findings["first_job_final"] = {
            "status": done.status.value,
            "termination_reason": done.termination_reason,
            "progress": done.progress,
            "attempt": done.attempt,
        }
        for text in lines:
            if text.startswith(("device", "resuming", "stopping", "done")):
                say("  log:", text)
        check(
            bool(resumed) and str(paused.checkpoint["uri"]) in resumed[0],
            "the resumed run starts from the paused checkpoint",
        )
        check(
            done.status.value == "completed" and done.attempt == 1,
            "the job completes on its first attempt after pause and resume",
        )
        for other in [*firsts[1:], waiting]:
            wait_for("every other job completes", lambda o=other: in_status(o, "completed"), 300)
        findings["ok"] = True
        findings["seconds"] = round(time.monotonic() - started, 1)
        say(f"all checks passed in {findings['seconds']} s")
        return 0
    finally:
        try:
            findings["jobs"] = [
                {
                    "name": j.name,
                    "status": j.status.value,
                    "waiting_reason": j.waiting_reason,
                    "termination_reason": j.termination_reason,
                    "log_tail": j.log_tail,
                }
                for j in queue.list_jobs(limit=50)[0]
            ]
            if not findings["ok"]:
                for entry in findings["jobs"]:
                    say("job:", json.dumps(entry))
        except Exception as error:  # the database itself may be what failed
            say("could not list the jobs:", error)
        if summary is not None:
            summary.write_text(json.dumps(findings, indent=2, default=str))
        worker.terminate()
        try:
            worker.wait(120)
        except subprocess.TimeoutExpired:
            worker.kill()
        engine.dispose()
        database.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", type=Path, help="write the findings here as JSON")
    parser.add_argument("--gpus", default="auto", help="as the worker's --gpus (default auto)")
    parser.add_argument(
        "--expect-device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu: rehearse the check on a host without CUDA (with --gpus 0)",
    )
    args = parser.parse_args()
    sys.exit(main(args.summary, args.gpus, args.expect_device))
