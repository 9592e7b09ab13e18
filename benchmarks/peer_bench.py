"""jobqueue against the strong baseline of :mod:`benchmarks.queue_async_baseline` (async
psycopg, batched claims and acks, LISTEN, no safety), through each one's own API, in one
run on one server:

1. drain: N queued no-op jobs, one worker with 10 slots (jobqueue: ``PythonWorker``);
2. single enqueue: jobs submitted one at a time, each its own request
   (jobqueue: ``JobQueue.submit``);
3. pickup: from a submit's return to the job starting on an idle worker woken by NOTIFY.

Run ``python -m benchmarks.peer_bench [--database-url URL] [--quick]``. Targets (issue
"sweeps and deep queues"): drain ≥ 0.4× the baseline, single enqueue ≥ 0.7×, pickup p50
≤ 3 ms and p99 ≤ 10 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Sequence

from sqlalchemy import text

from benchmarks import queue_async_baseline as baseline
from benchmarks.harness.cli import benchmark_parser
from benchmarks.harness.databases import benchmark_databases, engine_for
from benchmarks.harness.jobs import CONFIG, KIND, load_queued_jobs
from benchmarks.harness.report import Report, Stopwatch, log, ms, verdict
from benchmarks.harness.stats import percentile
from benchmarks.queue_common import settings_for
from jobqueue.db import connect_raw, libpq_conninfo
from jobqueue.inprocess import PythonWorker
from jobqueue.queue import JobQueue
from jobqueue.specs import JobSpec

SLOTS = 10


def _queue(url: str) -> JobQueue:
    return JobQueue(engine_for(url, SLOTS + 2), settings_for(url))


def jobqueue_drain(url: str, jobs: int) -> float:
    with connect_raw(url) as conn:
        load_queued_jobs(conn, jobs)
        conn.execute("VACUUM ANALYZE")
    queue = _queue(url)
    done = text("SELECT count(*) FROM jobs WHERE status = 'completed'")
    started = time.perf_counter()
    with PythonWorker(queue, {KIND: lambda job: None}, name="bench-drain", slots=SLOTS):
        with queue.engine.connect() as conn:
            while conn.execute(done).scalar_one() < jobs:
                conn.commit()
                time.sleep(0.01)
        elapsed = time.perf_counter() - started
    queue.engine.dispose()
    return elapsed


def jobqueue_enqueue(url: str, jobs: int) -> float:
    queue = _queue(url)
    spec = JobSpec(name="enqueue", kind=KIND, config=CONFIG, gpus=0)
    queue.submit(spec, actor="bench")  # warm the pool
    started = time.perf_counter()
    for _ in range(jobs):
        queue.submit(spec, actor="bench")
    elapsed = time.perf_counter() - started
    queue.engine.dispose()
    return elapsed


def jobqueue_pickup(url: str, jobs: int, gap: float) -> list[float]:
    queue = _queue(url)
    started: dict[object, float] = {}
    arrived = threading.Condition()

    def note(job) -> None:
        with arrived:
            started[job.job.id] = time.perf_counter()
            arrived.notify_all()

    latencies = []
    spec = JobSpec(name="pickup", kind=KIND, config=CONFIG, gpus=0)
    with PythonWorker(queue, {KIND: note}, name="bench-pickup", slots=SLOTS):
        time.sleep(0.5)
        for _ in range(jobs):
            t0 = time.perf_counter()
            job_id = queue.submit(spec, actor="bench")[0].id
            with arrived:
                if not arrived.wait_for(lambda j=job_id: j in started, timeout=10):
                    raise RuntimeError("a job was not picked up within 10 s")
            latencies.append(started[job_id] - t0)
            time.sleep(gap)
    queue.engine.dispose()
    return latencies


def main(argv: Sequence[str] | None = None) -> int:
    parser = benchmark_parser(
        "python -m benchmarks.peer_bench",
        "jobqueue against a hand-written async psycopg queue with batched acks.",
        quick_help="fewer jobs, one round",
    )
    args = parser.parse_args(argv)
    drained, enqueued, picked, rounds = (
        (2_000, 200, 50, 1) if args.quick else (10_000, 1_000, 200, 2)
    )
    report = Report()
    clock = Stopwatch()
    rates: dict[str, list[float]] = {k: [] for k in ("jq_drain", "b_drain", "jq_enq", "b_enq")}
    jq_pick: list[float] = []
    b_pick: list[float] = []
    with benchmark_databases(args.database_url) as dbs:
        for r in range(1, rounds + 1):
            base_url = dbs.plain()
            conninfo = libpq_conninfo(base_url)
            asyncio.run(baseline.prepare(conninfo, drained))
            rates["b_drain"].append(drained / asyncio.run(baseline.drain(conninfo, drained, SLOTS)))
            rates["jq_drain"].append(drained / jobqueue_drain(dbs.jobqueue(), drained))
            asyncio.run(baseline.prepare(conninfo))
            rates["b_enq"].append(enqueued / asyncio.run(baseline.enqueue(conninfo, enqueued)))
            rates["jq_enq"].append(enqueued / jobqueue_enqueue(dbs.jobqueue(), enqueued))
            asyncio.run(baseline.prepare(conninfo))
            b_pick += asyncio.run(baseline.pickup(conninfo, picked, 0.02))
            jq_pick += jobqueue_pickup(dbs.jobqueue(), picked, 0.02)
            log(
                f"round {r}: drain {rates['jq_drain'][-1]:,.0f} vs {rates['b_drain'][-1]:,.0f}"
                f" jobs/s; enqueue {rates['jq_enq'][-1]:,.0f} vs {rates['b_enq'][-1]:,.0f}/s"
            )
    med = statistics.median
    drain_ratio = med(rates["jq_drain"]) / med(rates["b_drain"])
    enq_ratio = med(rates["jq_enq"]) / med(rates["b_enq"])
    report.add(f"drain {drained:,} queued no-op jobs, 1 worker x {SLOTS} slots",
               f"{med(rates['jq_drain']):,.0f} jobs/s", f"{med(rates['b_drain']):,.0f} jobs/s",
               f"{drain_ratio:.2f}x", ">= 0.40x", verdict(drain_ratio >= 0.4))  # fmt: skip
    report.add(f"single enqueue, {enqueued:,} one at a time",
               f"{med(rates['jq_enq']):,.0f}/s", f"{med(rates['b_enq']):,.0f}/s",
               f"{enq_ratio:.2f}x", ">= 0.70x", verdict(enq_ratio >= 0.7))  # fmt: skip
    for q, target in ((50, 0.003), (99, 0.010)):
        value = percentile(jq_pick, q)
        report.add(f"pickup p{q}, submit -> job started on an idle worker (NOTIFY)", ms(value),
                   ms(percentile(b_pick, q)), f"{value / percentile(b_pick, q):.2f}x",
                   f"<= {target * 1000:.0f} ms", verdict(value <= target))  # fmt: skip
    report.notes.append(
        f"Baseline: benchmarks/queue_async_baseline.py (async psycopg 3; one INSERT+NOTIFY per "
        f"enqueue; batched claims; acks batched by {baseline.ACK_BATCH} or "
        f"{baseline.ACK_MAX_AGE * 1000:.0f} ms; LISTEN; no lease, fencing or events). Medians "
        f"of {rounds} rounds; jobqueue through PythonWorker and JobQueue.submit."
    )
    report.notes.append(clock.machine_note(dbs.server_version, quick=args.quick))
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
