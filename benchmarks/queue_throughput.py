"""(1) claim+finish throughput: N claimer threads drain a queue that holds all its jobs from
the start, jobqueue's and the baseline's in alternating rounds (ABBA order, so that a change
of background load hurts neither side more); the rate is jobs divided by the summed
seconds. Beside it, the CPU per job of this process and of the server backends, which
move much less with background load than the rates do."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import make_url

from benchmarks.harness.cpu import server_cpu
from benchmarks.harness.databases import Databases, engine_for
from benchmarks.harness.jobs import KIND, POOL, load_queued_jobs
from benchmarks.harness.report import Report, log, verdict
from benchmarks.queue_common import (
    Sizes,
    baseline_claim,
    baseline_finish,
    baseline_table,
    settings_for,
)
from jobqueue.db import connect_raw
from jobqueue.outcomes import Exit
from jobqueue.worker_store import WorkerIdentity, WorkerStore


def run_threads(count: int, target: Callable[[int, threading.Barrier], None]) -> float:
    """Runs ``target(i, barrier)`` on ``count`` threads; returns the seconds from the moment
    all passed the barrier until the last one ended."""
    barrier = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            target(i, barrier)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,), name=f"bench-{i}") for i in range(count)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


def drain_with(claimers: int, quota: int, step: Callable[[int], int]) -> int:
    """``claimers`` threads, released together, call ``step(i)`` (claim and finish; it returns
    how many jobs, 0 when the queue is empty) until about ``quota`` jobs are done; returns
    how many were."""
    lock = threading.Lock()
    done = [0]

    def claimer(i: int, barrier: threading.Barrier) -> None:
        barrier.wait()
        while done[0] < quota:
            jobs = step(i)
            if not jobs:
                return
            with lock:
                done[0] += jobs

    run_threads(claimers, claimer)
    return done[0]


@dataclasses.dataclass
class Tally:
    """Jobs done, wall seconds, client and server CPU seconds, summed over slices."""

    jobs: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    server: float | None = 0.0

    def add(self, jobs: int, seconds: float, cpu: float, server: float | None) -> None:
        self.jobs += jobs
        self.seconds += seconds
        self.cpu += cpu
        self.server = None if server is None or self.server is None else self.server + server

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def cpu_per_job(self) -> float:
        return self.cpu / self.jobs

    @property
    def server_per_job(self) -> float | None:
        return None if self.server is None else self.server / self.jobs


class JobqueueDrain:
    """N claimer threads, each its own WorkerIdentity: WorkerStore.claim(slots) and then
    WorkerStore.finish(Exit(exit_code=0)) for each job claimed."""

    label = "jobqueue"

    def __init__(self, dbs: Databases, sizes: Sizes):
        self.sizes = sizes
        url = dbs.jobqueue()
        self.database = make_url(url).database or ""
        with connect_raw(url) as conn:
            load_queued_jobs(conn, sizes.jobs)
            conn.execute("VACUUM ANALYZE")
        self.engine = engine_for(url, sizes.claimers + 1)
        self.store = WorkerStore(self.engine, settings_for(url))
        self.workers = [
            WorkerIdentity(name=f"bench-{i}", pools=(POOL,), kinds=(KIND,), gpu_ids=())
            for i in range(sizes.claimers)
        ]
        with contextlib.ExitStack() as stack:  # open every pooled connection before timing
            for _ in range(sizes.claimers):
                stack.enter_context(self.engine.connect()).execute(text("SELECT 1"))

    def drain(self, quota: int) -> int:
        """Claim and finish about ``quota`` jobs (or all that are left); returns how many."""

        def step(i: int) -> int:
            worker = self.workers[i]
            claimed = self.store.claim(worker, free_gpu_ids=[], slots=self.sizes.slots)
            for job in claimed:
                self.store.finish(job.id, job.lease_token, Exit(exit_code=0), actor=worker.actor)
            return len(claimed)

        return drain_with(self.sizes.claimers, quota, step)

    def close(self) -> None:
        try:
            with self.engine.connect() as c:
                rows = c.execute(text("SELECT status::text, count(*) FROM jobs GROUP BY 1")).all()
        finally:
            self.engine.dispose()
        counts = {status: n for status, n in rows}
        if counts != {"completed": self.sizes.jobs}:
            raise RuntimeError(f"jobqueue throughput run ended with {counts}")


class BaselineDrain:
    """N threads, each its own connection, one job at a time: SELECT … FOR UPDATE SKIP
    LOCKED LIMIT 1, UPDATE running, COMMIT, UPDATE done, COMMIT."""

    label = "baseline"
    table = "baseline_jobs"

    def __init__(self, dbs: Databases, sizes: Sizes):
        self.sizes = sizes
        self.url = dbs.plain()
        self.database = make_url(self.url).database or ""
        with connect_raw(self.url) as conn:
            baseline_table(conn, self.table, finished=0, queued=sizes.jobs)
            conn.execute("VACUUM ANALYZE")
        self.conns = [connect_raw(self.url, autocommit=False) for _ in range(sizes.claimers)]

    def drain(self, quota: int) -> int:
        cursors = [conn.cursor() for conn in self.conns]

        def step(i: int) -> int:
            job_id = baseline_claim(cursors[i], self.table)
            if job_id is None:
                return 0
            baseline_finish(cursors[i], self.table, job_id)
            return 1

        try:
            return drain_with(self.sizes.claimers, quota, step)
        finally:
            for cur in cursors:
                cur.close()

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        with connect_raw(self.url) as conn:
            rows = conn.execute(f"SELECT status, count(*) FROM {self.table} GROUP BY 1").fetchall()
        counts: dict[str, int] = dict(rows)
        if counts != {"done": self.sizes.jobs}:
            raise RuntimeError(f"baseline throughput run ended with {counts}")


def bench_throughput(dbs: Databases, sizes: Sizes, report: Report) -> None:
    log(
        f"(1) throughput: {sizes.claimers} claimers, {sizes.jobs:,} jobs each, "
        f"jobqueue slots={sizes.slots}; {sizes.rounds} alternating rounds"
    )
    drains: list[JobqueueDrain | BaselineDrain] = [
        JobqueueDrain(dbs, sizes),
        BaselineDrain(dbs, sizes),
    ]
    try:
        tallies = _drain_rounds(drains, sizes)
    finally:
        errors = []
        for drain in drains:
            try:
                drain.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
    jq, base = tallies["jobqueue"], tallies["baseline"]
    ratio = jq.rate / base.rate
    report.add(
        f"(1) claim+finish throughput, {sizes.claimers} claimers, {sizes.jobs:,} jobs",
        f"{jq.rate:,.0f} jobs/s",
        f"{base.rate:,.0f} jobs/s",
        f"{ratio:.2f}x",
        ">= 0.40x (aim 0.60x)",
        verdict(ratio >= 0.4),
    )
    report.timing(
        "(1) client CPU per job (this process, all threads)", jq.cpu_per_job, base.cpu_per_job
    )
    if jq.server_per_job is not None and base.server_per_job is not None:
        report.timing(
            "(1) server CPU per job (backends of its database)",
            jq.server_per_job,
            base.server_per_job,
        )
    report.notes.append(
        f"(1) jobqueue: {sizes.claimers} threads, each its own WorkerIdentity, "
        f"WorkerStore.claim(slots={sizes.slots}) then WorkerStore.finish(Exit(exit_code=0)) for "
        "each job claimed; baseline: as many threads, one job at a time. Both queues hold all "
        f"{sizes.jobs:,} jobs from the start; they are drained in {sizes.rounds} alternating "
        "rounds (ABBA) and the rate is jobs / summed seconds."
    )


def _drain_rounds(drains: list[JobqueueDrain | BaselineDrain], sizes: Sizes) -> dict[str, Tally]:
    """Both queues drained in ``sizes.rounds`` rounds, ABBA; the last round drains the rest."""
    tallies = {d.label: Tally() for d in drains}
    per_round = -(-sizes.jobs // sizes.rounds)
    for r in range(sizes.rounds):
        last = r == sizes.rounds - 1
        # ABBA order, so a change of background load hurts neither side more.
        for drain in drains if r % 2 == 0 else drains[::-1]:
            server0 = server_cpu(drain.database)
            cpu0, t0 = time.process_time(), time.perf_counter()
            jobs = drain.drain(sizes.jobs if last else per_round)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            server1 = server_cpu(drain.database)
            server = None if server0 is None or server1 is None else server1 - server0
            tallies[drain.label].add(jobs, seconds, cpu, server)
        log(
            f"    round {r + 1}: "
            + ", ".join(f"{k} {t.jobs:,} jobs at {t.rate:,.0f}/s" for k, t in tallies.items())
        )
    return tallies
