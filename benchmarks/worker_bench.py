"""How soon a job's process starts once it may: the worker daemon against plain process starts.

Run ``python -m benchmarks.worker_bench [--database-url URL] [--quick]``. It starts the worker
daemon as it is deployed (``python -m worker --virtual-gpus 2 --kinds FILE``) on a kinds file
whose one kind runs a tiny Python job: its first line takes ``time.time()``, which it prints
and writes to a file named after its job id; then it exits. Every measurement runs from just
before the call that lets the job start to that time:

(a) force-start: a held job (``hold``) is force-started through ``JobQueue.force_start``
    while the worker is idle with both GPU slots free;
(b) submit: ``JobQueue.submit`` of a job to the idle worker;
(c) baselines: the same job started directly with ``subprocess.Popen``, and under the
    worker's per-job supervisor (``worker.process.JobProcess``: ``python -m worker.supervise``
    and then the job), with no database.

The four run interleaved, one of each per round, each after the previous job ended. For (a)
and (b) the job's ``started_at`` (the claim, database clock) splits the time into the
queue's part and the process start. The database server comes from ``--database-url`` or
``JOBQUEUE_BENCH_DATABASE_URL``, else an embedded PostgreSQL (``benchmarks.queue_bench``);
the worker, its jobs and the database are always stopped and dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from uuid import UUID

import psycopg

from benchmarks.queue_bench import (
    Databases,
    Report,
    add_server_argument,
    log,
    ms,
    percentile,
    postgres_server,
    verdict,
)
from jobqueue.db import libpq_conninfo, make_engine
from jobqueue.outcomes import StopCause
from jobqueue.queue import JobQueue
from jobqueue.settings import Settings
from jobqueue.specs import JobSpec
from worker import supervise
from worker.process import JobProcess

ROOT = Path(__file__).resolve().parents[1]
KIND = "bench-tiny"
WORKER_NAME = "bench-worker"
TARGET_FORCE_P50 = 0.100
WAIT_TIMEOUT = 20.0

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


@dataclasses.dataclass(frozen=True)
class Sizes:
    rounds: int  # timed rounds (one of each measurement per round)
    warmup: int  # untimed rounds first


FULL = Sizes(50, 3)
QUICK = Sizes(10, 2)


class Bench:
    def __init__(self, url: str, workdir: Path):
        self.url = url
        self.workdir = workdir
        self.starts = workdir / "starts"
        self.starts.mkdir()
        (workdir / "tiny_job.py").write_text(JOB_SCRIPT)
        self.kinds_file = workdir / "kinds.toml"
        self.kinds_file.write_text(KINDS.format(kind=KIND, starts=self.starts))
        self.settings = Settings(database_url=url)
        self.engine = make_engine(url, pool_size=2, application_name="jobqueue-bench")
        self.queue = JobQueue(self.engine, self.settings)
        self.db = psycopg.connect(libpq_conninfo(url), autocommit=True)
        self.worker: subprocess.Popen | None = None
        self.worker_log = workdir / "worker.log"
        self.samples: dict[str, list[float]] = {}
        self.job_ids: list[UUID] = []

    # -- the worker process ------------------------------------------------------------

    def start_worker(self) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("JOBQUEUE_") and k != "DATABASE_URL"
        }
        env.update(
            DATABASE_URL=self.url,
            JOBQUEUE_STATE_DIR=str(self.workdir / "state"),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        argv = [
            sys.executable, "-m", "worker", "--virtual-gpus", "2", "--kinds",
            str(self.kinds_file), "--name", WORKER_NAME, "--log-level", "WARNING",
        ]  # fmt: skip
        with open(self.worker_log, "wb") as out:
            self.worker = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited early:\n{self.worker_log_tail()}")
            row = self.db.execute(
                "SELECT 1 FROM workers WHERE name = %s AND stopped_at IS NULL", (WORKER_NAME,)
            ).fetchone()
            if row:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the worker did not register in 30 s:\n{self.worker_log_tail()}")

    def worker_log_tail(self, lines: int = 30) -> str:
        try:
            text = self.worker_log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop_worker(self) -> None:
        if self.worker is None:
            return
        if self.worker.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.worker.pid, signal.SIGKILL)

    def close(self) -> None:
        try:
            self.stop_worker()
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
            if self.worker is not None and self.worker.poll() is not None:
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


def run(args: argparse.Namespace) -> str:
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = dataclasses.replace(sizes, rounds=args.rounds)
    report = Report()
    began = time.perf_counter()
    load_before = os.getloadavg()
    with (
        postgres_server(args.database_url) as server_url,
        tempfile.TemporaryDirectory(prefix="jqbench-worker-") as tmp,
    ):
        dbs = Databases(server_url)
        version = dbs.server_version
        try:
            bench = Bench(dbs.jobqueue("worker"), Path(tmp))
            try:
                log("starting the worker: python -m worker --virtual-gpus 2")
                bench.start_worker()
                steps: list[tuple[str, Callable[[int, bool], None]]] = [
                    ("force", lambda n, t: bench.through_queue("force", n, t, forced=True)),
                    ("submit", lambda n, t: bench.through_queue("submit", n, t, forced=False)),
                    ("raw", bench.raw),
                    ("chain", bench.supervised),
                    ("lean", bench.supervised_lean),
                ]
                log(
                    f"{sizes.warmup} warm-up + {sizes.rounds} timed rounds of {len(steps)} "
                    "starts each"
                )
                for n in range(sizes.warmup + sizes.rounds):
                    shift = n % len(steps)
                    for _, step in steps[shift:] + steps[:shift]:
                        step(n, n >= sizes.warmup)
                        time.sleep(0.05)
                agree, total = bench.logs_agree()
            finally:
                bench.close()
        finally:
            dbs.close()

    s = bench.samples
    p = percentile
    raw, chain = s["raw"], s["chain"]
    for key, what in (("force", "(a) force-start -> job started"),
                      ("submit", "(b) submit -> job started")):  # fmt: skip
        for q in (50, 99):
            value, base = p(s[key], q), p(raw, q)
            is_target = key == "force" and q == 50
            report.add(
                f"{what}, p{q} (N={len(s[key])})",
                ms(value),
                ms(base),
                f"{value / base:.2f}x",
                f"<= {TARGET_FORCE_P50 * 1000:.0f} ms" if is_target else "-",
                verdict(value <= TARGET_FORCE_P50) if is_target else "info",
            )
    for q in (50, 99):
        value, base = p(chain, q), p(raw, q)
        report.add(
            f"(c) supervisor chain -> job started, p{q}",
            ms(value),
            ms(base),
            f"{value / base:.2f}x",
            "-",
            "info",
        )
    for q in (50, 99):
        value, base = p(s["lean"], q), p(raw, q)
        report.add(
            f"(c) what-if: supervisor as python -I -S supervise.py, p{q}",
            ms(value),
            ms(base),
            f"{value / base:.2f}x",
            "-",
            "info",
        )
    for key, what in (("force", "(a)"), ("submit", "(b)")):
        report.add(
            f"{what} split p50: call returned | claimed | claim -> job",
            " | ".join(ms(p(s[f"{key}:{part}"], 50)) for part in ("call", "claimed", "spawn")),
            f"- | - | {ms(p(chain, 50))}",
            f"{p(s[f'{key}:spawn'], 50) / p(chain, 50):.2f}x (claim -> job)",
            "-",
            "info",
        )
    report.notes.append(
        "Baseline: the same job started with subprocess.Popen([python, tiny_job.py]) — the "
        "raw cost of a Python process start; jq/base = jobqueue / baseline. (c) is the "
        "worker's own JobProcess (python -m worker.supervise, then the job) with no database."
    )
    report.notes.append(
        "Split: call returned = JobQueue.force_start/submit returned (committed); claimed = "
        "the job's started_at (database clock, same host) after the call began; claim -> job "
        "= from started_at to the job's first line (the worker preparing the job's files, "
        "the supervisor and the job starting); its baseline is (c)."
    )
    report.notes.append(
        f"Worker: python -m worker --virtual-gpus 2 (4 slots), woken by NOTIFY, poll 2 s; "
        f"jobs of 1 GPU, each after the previous ended (a free GPU slot, an idle worker); "
        f"{sizes.rounds} timed rounds after {sizes.warmup} warm-up, the five starts "
        f"interleaved in rotating order. Stored log lines agree with the job's own timestamp "
        f"file for {agree}/{total} queue jobs."
    )
    major, minor = divmod(version, 10000)
    report.notes.append(
        f"PostgreSQL {major}.{minor}; {os.cpu_count()} CPUs; load average (1/5/15 min) "
        f"{'/'.join(f'{x:.1f}' for x in load_before)} before, "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} after (other sessions use this "
        f"machine); {'quick' if args.quick else 'full'} run, "
        f"{time.perf_counter() - began:.0f} s in all."
    )
    return report.render()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.worker_bench",
        description="Force-start and submit to job start on the worker daemon, beside "
        "plain process starts.",
    )
    add_server_argument(parser)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke test")
    parser.add_argument("--rounds", type=int, help="timed rounds")
    args = parser.parse_args(argv)
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
