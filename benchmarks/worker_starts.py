"""The five ways the worker benchmark starts its tiny job, each timed from just before the
call that lets the job start to the ``time.time()`` the job takes first thing.

Through the queue, with the worker daemon as it is deployed (``python -m worker
--virtual-gpus 2 --kinds FILE``): a force-start of a held job, and a submit. Without it: a
plain ``subprocess.Popen``, the worker's per-job supervisor (``worker.process.JobProcess``),
and, as a what-if, that supervisor started as ``python -I -S worker/supervise.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import psycopg

from benchmarks.harness.databases import engine_for
from benchmarks.harness.servers import ROOT, ProcessGroup, clean_env, root_pythonpath
from jobqueue.db import libpq_conninfo
from jobqueue.outcomes import StopCause
from jobqueue.queue import JobQueue
from jobqueue.settings import Settings
from jobqueue.specs import JobSpec
from worker import supervise
from worker.process import JobProcess

KIND = "bench-tiny"
WORKER_NAME = "bench-worker"
WAIT_TIMEOUT = 20.0
WORKER_STOP_TIMEOUT = 20.0

JOB_SCRIPT = """\
import time; t = time.time()  # the first thing the job does
import os

print(f"started {t:.6f}", flush=True)
path = os.path.join(os.environ["JQBENCH_STARTS"], os.environ["JOBQUEUE_JOB_ID"])
with open(path + ".tmp", "w") as f:
    f.write(repr(t))
os.rename(path + ".tmp", path)
"""

KINDS = """\
[kinds.{kind}]
argv = ["{{python}}", "tiny_job.py"]
workdir = "."
grace_seconds = 5
env = {{ JQBENCH_STARTS = "{starts}" }}
"""


class Bench:
    """The kinds file and the job, the worker daemon, and the samples of every start."""

    def __init__(self, url: str, workdir: Path):
        self.url = url
        self.workdir = workdir
        self.starts = workdir / "starts"
        self.starts.mkdir()
        (workdir / "tiny_job.py").write_text(JOB_SCRIPT)
        self.kinds_file = workdir / "kinds.toml"
        self.kinds_file.write_text(KINDS.format(kind=KIND, starts=self.starts))
        self.settings = Settings(database_url=url)
        self.engine = engine_for(url, 2)
        self.queue = JobQueue(self.engine, self.settings)
        self.db = psycopg.connect(libpq_conninfo(url), autocommit=True)
        self.worker: ProcessGroup | None = None
        self.samples: dict[str, list[float]] = {}
        self.job_ids: list[UUID] = []

    # -- the worker process ------------------------------------------------------------

    def start_worker(self) -> None:
        env = clean_env()
        env.update(
            DATABASE_URL=self.url,
            JOBQUEUE_STATE_DIR=str(self.workdir / "state"),
            PYTHONPATH=root_pythonpath(),
        )
        argv = [
            sys.executable, "-m", "worker", "--virtual-gpus", "2", "--kinds",
            str(self.kinds_file), "--name", WORKER_NAME, "--log-level", "WARNING",
        ]  # fmt: skip
        self.worker = ProcessGroup(argv, cwd=ROOT, env=env, log_path=self.workdir / "worker.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.worker.exited():
                raise RuntimeError(f"the worker exited early:\n{self.worker_log_tail()}")
            row = self.db.execute(
                "SELECT 1 FROM workers WHERE name = %s AND stopped_at IS NULL", (WORKER_NAME,)
            ).fetchone()
            if row:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the worker did not register in 30 s:\n{self.worker_log_tail()}")

    def worker_log_tail(self) -> str:
        return self.worker.log_tail() if self.worker is not None else "(no log)"

    def close(self) -> None:
        try:
            if self.worker is not None:
                self.worker.stop(WORKER_STOP_TIMEOUT)
        finally:
            self.db.close()
            self.engine.dispose()

    # -- one job, timed ------------------------------------------------------------------

    def wait_started(self, tag: str) -> float:
        """The time.time() the job with this id (or tag) took first thing."""
        path = self.starts / tag
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"job {tag} did not start within {WAIT_TIMEOUT:.0f} s; worker log:\n"
                    f"{self.worker_log_tail()}"
                )
            if self.worker is not None and self.worker.exited():
                raise RuntimeError(f"the worker died:\n{self.worker_log_tail()}")
            time.sleep(0.001)
        return float(path.read_text())

    def wait_finished(self, job_id: UUID) -> tuple[str, float]:
        """Waits until the job has ended; returns its status and started_at (epoch)."""
        deadline = time.monotonic() + WAIT_TIMEOUT
        while True:
            row = self.db.execute(
                "SELECT status::text, extract(epoch FROM started_at)::float8 FROM jobs "
                "WHERE id = %s",
                (job_id,),
            ).fetchone()
            assert row is not None
            if row[0] in ("completed", "failed", "cancelled"):
                return row[0], row[1]
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} is still {row[0]} after {WAIT_TIMEOUT:.0f} s")
            time.sleep(0.005)

    def record(self, key: str, value: float, timed: bool) -> None:
        if timed:
            self.samples.setdefault(key, []).append(value)

    def through_queue(self, key: str, n: int, timed: bool, *, forced: bool) -> None:
        spec = JobSpec(name=f"{key}-{n}", kind=KIND, config={"n": n}, gpus=1, hold=forced)
        if forced:
            job, _ = self.queue.submit(spec, actor="bench")
            time.sleep(0.05)  # let the worker see (and ignore) the held job
            t0 = time.time()
            self.queue.force_start(job.id, actor="bench")
        else:
            t0 = time.time()
            job, _ = self.queue.submit(spec, actor="bench")
        returned = time.time()
        began = self.wait_started(str(job.id))
        status, claimed = self.wait_finished(job.id)
        if status != "completed":
            raise RuntimeError(f"job {job.id} ended {status}")
        self.job_ids.append(job.id)
        self.record(key, began - t0, timed)
        self.record(f"{key}:call", returned - t0, timed)
        self.record(f"{key}:claimed", claimed - t0, timed)
        self.record(f"{key}:spawn", began - claimed, timed)

    def job_env(self, tag: str) -> dict[str, str]:
        return {
            **os.environ,
            "JQBENCH_STARTS": str(self.starts),
            "JOBQUEUE_JOB_ID": tag,
            "CUDA_VISIBLE_DEVICES": "0",
            "PYTHONUNBUFFERED": "1",
        }

    def raw(self, n: int, timed: bool) -> None:
        tag = f"raw-{n}"
        env = self.job_env(tag)
        t0 = time.time()
        proc = subprocess.Popen(
            [sys.executable, "tiny_job.py"], cwd=self.workdir, env=env,
            stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        began = self.wait_started(tag)
        proc.wait(WAIT_TIMEOUT)
        self.record("raw", began - t0, timed)

    def supervised(self, n: int, timed: bool) -> None:
        tag = f"chain-{n}"
        env = self.job_env(tag)
        t0 = time.time()
        process = JobProcess(
            [sys.executable, "tiny_job.py"], env=env, cwd=str(self.workdir),
            grace_seconds=5, lease_seconds=60, on_line=lambda stream, text: None,
        )  # fmt: skip
        began = self.wait_started(tag)
        if process.wait(WAIT_TIMEOUT) is None:
            process.stop(StopCause.CANCEL, kill=True)
            raise RuntimeError("the supervised job did not end")
        self.record("chain", began - t0, timed)

    def supervised_lean(self, n: int, timed: bool) -> None:
        """What-if: the same supervisor started as ``python -I -S worker/supervise.py`` (it
        imports only the standard library), so no site-packages and no .pth files; the
        job is the same. Speaks the supervisor's protocol as JobProcess does."""
        tag = f"lean-{n}"
        spec = {
            "argv": [sys.executable, "tiny_job.py"],
            "env": self.job_env(tag),
            "cwd": str(self.workdir),
            "grace_seconds": 5,
            "lease_seconds": 60,
        }
        status_read, status_write = os.pipe()
        t0 = time.time()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", supervise.__file__, "--status-fd", str(status_write)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(status_write,), start_new_session=True,
                env={"JOBQUEUE_SUPERVISOR_SPEC": json.dumps(spec)},
            )  # fmt: skip
        finally:
            os.close(status_write)
        try:
            began = self.wait_started(tag)
            with os.fdopen(status_read) as status:
                status_read = -1
                messages = status.read()  # until the supervisor ends, after the job
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(WAIT_TIMEOUT)
        finally:
            if status_read >= 0:
                os.close(status_read)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if '"exit_code": 0' not in messages:
            raise RuntimeError(f"the lean supervisor reported {messages!r}")
        self.record("lean", began - t0, timed)

    def logs_agree(self) -> tuple[int, int]:
        """How many queue jobs' stored first log line carries the time their file holds."""
        rows = self.db.execute(
            "SELECT job_id, text FROM job_logs WHERE n = 1 AND job_id = ANY(%s)",
            (self.job_ids,),
        ).fetchall()
        agree = 0
        for job_id, text in rows:
            stamp = float((self.starts / str(job_id)).read_text())
            agree += text == f"started {stamp:.6f}"
        return agree, len(self.job_ids)
