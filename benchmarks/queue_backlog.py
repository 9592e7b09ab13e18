"""(3) single claim+finish latency with a backlog of finished and queued rows, against a
near-empty table: four cases (jobqueue and baseline, each near-empty and with the backlog)
run interleaved, one cycle at a time. One job is submitted before each cycle, untimed, so
the number of queued jobs stays the same."""

from __future__ import annotations

import time

from benchmarks.harness.databases import Databases, engine_for
from benchmarks.harness.jobs import (
    CONFIG,
    CONFIG_SQL,
    KIND,
    POOL,
    load_finished_jobs,
    load_queued_jobs,
)
from benchmarks.harness.report import Report, log, ms, verdict
from benchmarks.harness.stats import percentile
from benchmarks.queue_common import (
    Sizes,
    baseline_claim,
    baseline_finish,
    baseline_table,
    settings_for,
)
from jobqueue.db import connect_raw
from jobqueue.outcomes import Exit
from jobqueue.queue import JobQueue
from jobqueue.specs import JobSpec
from jobqueue.worker_store import WorkerIdentity, WorkerStore


class JobqueueCycles:
    """Single claim+finish cycles; one job submitted before each (not timed) keeps the number
    of queued jobs constant."""

    def __init__(self, url: str, label: str):
        self.label = label
        settings = settings_for(url)
        self.engine = engine_for(url, 2)
        self.queue = JobQueue(self.engine, settings)
        self.store = WorkerStore(self.engine, settings)
        self.worker = WorkerIdentity(name="bench-cycles", pools=(POOL,), kinds=(KIND,), gpu_ids=())
        self.cycles: list[float] = []
        self.claims: list[float] = []

    def once(self, n: int, timed: bool) -> None:
        spec = JobSpec(name=f"cycle-{n}", kind=KIND, config=CONFIG, gpus=0)
        self.queue.submit(spec, actor="bench")
        t0 = time.perf_counter()
        (job,) = self.store.claim(self.worker, free_gpu_ids=[], slots=1)
        t1 = time.perf_counter()
        self.store.finish(job.id, job.lease_token, Exit(exit_code=0), actor=self.worker.actor)
        t2 = time.perf_counter()
        if timed:
            self.cycles.append(t2 - t0)
            self.claims.append(t1 - t0)

    def close(self) -> None:
        self.engine.dispose()


class BaselineCycles:
    def __init__(self, url: str, table: str, label: str):
        self.label = label
        self.table = table
        self.conn = connect_raw(url, autocommit=False)
        self.cycles: list[float] = []

    def once(self, n: int, timed: bool) -> None:
        with self.conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO {self.table} (status, payload) VALUES ('queued', {CONFIG_SQL})"
            )
            self.conn.commit()
            t0 = time.perf_counter()
            job_id = baseline_claim(cur, self.table)
            assert job_id is not None
            baseline_finish(cur, self.table, job_id)
            if timed:
                self.cycles.append(time.perf_counter() - t0)

    def close(self) -> None:
        self.conn.close()


def bench_backlog(dbs: Databases, sizes: Sizes, report: Report) -> None:
    log(
        f"(3) backlog: {sizes.finished:,} finished + {sizes.queued:,} queued rows vs "
        f"{sizes.few_queued} queued"
    )
    empty_url = dbs.jobqueue()
    with connect_raw(empty_url) as conn:
        load_queued_jobs(conn, sizes.few_queued)
        conn.execute("VACUUM ANALYZE")
    backlog_url = dbs.jobqueue()
    with connect_raw(backlog_url) as conn:
        t = time.perf_counter()
        load_finished_jobs(conn, sizes.finished)
        log(f"    jobqueue: {sizes.finished:,} finished jobs in {time.perf_counter() - t:.1f} s")
        load_queued_jobs(conn, sizes.queued)
        t = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        log(f"    jobqueue: VACUUM ANALYZE in {time.perf_counter() - t:.1f} s")
    base_url = dbs.plain()
    with connect_raw(base_url) as conn:
        baseline_table(conn, "empty_jobs", finished=0, queued=sizes.few_queued)
        t = time.perf_counter()
        baseline_table(conn, "backlog_jobs", finished=sizes.finished, queued=sizes.queued)
        conn.execute("VACUUM ANALYZE")
        log(f"    baseline: backlog loaded and vacuumed in {time.perf_counter() - t:.1f} s")

    jq_empty = JobqueueCycles(empty_url, "jq-empty")
    jq_backlog = JobqueueCycles(backlog_url, "jq-backlog")
    b_empty = BaselineCycles(base_url, "empty_jobs", "base-empty")
    b_backlog = BaselineCycles(base_url, "backlog_jobs", "base-backlog")
    sides: list[JobqueueCycles | BaselineCycles] = [jq_empty, jq_backlog, b_empty, b_backlog]
    log(f"    {sizes.cycles} timed claim+finish cycles per case, the four cases interleaved")
    try:
        warmup = 20
        for n in range(warmup + sizes.cycles):
            shift = n % len(sides)
            for side in sides[shift:] + sides[:shift]:
                side.once(n, timed=n >= warmup)
    finally:
        for side in sides:
            side.close()

    p = percentile
    for q in (50, 99):
        for what, jq, base in (
            (f"near-empty ({sizes.few_queued} queued)", jq_empty, b_empty),
            (
                f"backlog ({sizes.finished:,} finished + {sizes.queued:,} queued)",
                jq_backlog,
                b_backlog,
            ),
        ):
            report.timing(f"(3) claim+finish p{q}, {what}", p(jq.cycles, q), p(base.cycles, q))
    for q in (50, 99):
        jq_ratio = p(jq_backlog.cycles, q) / p(jq_empty.cycles, q)
        b_ratio = p(b_backlog.cycles, q) / p(b_empty.cycles, q)
        report.add(
            f"(3) backlog / near-empty, claim+finish p{q} (N={sizes.cycles})",
            f"{jq_ratio:.2f}x",
            f"{b_ratio:.2f}x",
            "",
            "<= 1.5x" if q == 50 else "-",
            verdict(jq_ratio <= 1.5) if q == 50 else "info",
        )
    report.add(
        "(3) jobqueue claim alone p50, near-empty -> backlog",
        f"{ms(p(jq_empty.claims, 50))} -> {ms(p(jq_backlog.claims, 50))}",
        "",
        "",
        "-",
        "info",
    )
    report.notes.append(
        "(3) one job is submitted (untimed) before each cycle, so the queued count stays "
        "constant; the four cases run interleaved, cycle by cycle; the backlog's finished "
        "rows are jobs rows only (no events); VACUUM ANALYZE after loading."
    )
