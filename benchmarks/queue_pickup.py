"""(2) pickup latency: from a submit's commit to the claim by an idle claimer that NOTIFY
wakes, submits alternating between jobqueue and the baseline."""

from __future__ import annotations

import threading
import time
from typing import Any

from benchmarks.harness.databases import Databases, engine_for
from benchmarks.harness.jobs import CONFIG, CONFIG_SQL, KIND, POOL
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
from jobqueue.records import Claimed
from jobqueue.runner import SlotRunner
from jobqueue.specs import JobSpec
from jobqueue.worker_store import WorkerIdentity, WorkerStore

PICKUP_TIMEOUT = 10.0


class Arrivals:
    """When each job was claimed (``perf_counter``), recorded by the claiming thread and
    awaited by the submitting one."""

    def __init__(self) -> None:
        self.at: dict[Any, float] = {}
        self._arrived = threading.Condition()

    def record(self, job_id: Any) -> None:
        now = time.perf_counter()
        with self._arrived:
            self.at[job_id] = now
            self._arrived.notify_all()

    def wait(self, job_id: Any, what: str) -> float:
        with self._arrived:
            if not self._arrived.wait_for(lambda: job_id in self.at, timeout=PICKUP_TIMEOUT):
                raise RuntimeError(f"{what} was not picked up within {PICKUP_TIMEOUT:.0f} s")
        return self.at[job_id]


class JobqueuePickup:
    """A SlotRunner woken by NOTIFY (poll 30 s); its handler records when it runs."""

    label = "jobqueue"

    def __init__(self, dbs: Databases):
        url = dbs.jobqueue()
        settings = settings_for(url)
        self.queue_engine = engine_for(url, 2)
        self.worker_engine = engine_for(url, 4)
        self.queue = JobQueue(self.queue_engine, settings)
        store = WorkerStore(self.worker_engine, settings)
        self.arrivals = Arrivals()
        worker = WorkerIdentity(name="bench-pickup", pools=(POOL,), kinds=(KIND,), gpu_ids=())
        self.runner = SlotRunner(
            store, worker, self._handler, slots=4, listen_url=url, poll_seconds=30.0
        )
        self.runner.start()
        self.submit_seconds: list[float] = []

    def _handler(self, job: Claimed) -> Exit:
        self.arrivals.record(job.id)
        return Exit(exit_code=0)

    def once(self, n: int) -> float:
        spec = JobSpec(name=f"pickup-{n}", kind=KIND, config=CONFIG, gpus=0)
        before = time.perf_counter()
        job, _ = self.queue.submit(spec, actor="bench")
        committed = time.perf_counter()
        self.submit_seconds.append(committed - before)
        return self.arrivals.wait(job.id, f"job {job.id}") - committed

    def close(self) -> None:
        self.runner.stop()
        self.queue_engine.dispose()
        self.worker_engine.dispose()


class BaselinePickup:
    """INSERT + NOTIFY; a LISTEN thread that claims with SKIP LOCKED on each notification."""

    label = "baseline"
    table = "baseline_jobs"
    channel = "baseline_jobs"

    def __init__(self, dbs: Databases):
        self.url = dbs.plain()
        with connect_raw(self.url) as conn:
            baseline_table(conn, self.table, finished=0, queued=0)
        self.arrivals = Arrivals()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        ready = threading.Event()
        self.thread = threading.Thread(
            target=self._listen, args=(ready,), name="baseline-listener", daemon=True
        )
        self.thread.start()
        ready.wait(10.0)
        self.conn = connect_raw(self.url, autocommit=False)

    def _listen(self, ready: threading.Event) -> None:
        try:
            with (
                connect_raw(self.url) as listener,
                connect_raw(self.url, autocommit=False) as work,
                work.cursor() as cur,
            ):
                listener.execute(f"LISTEN {self.channel}")
                ready.set()
                while not self.stop.is_set():
                    for _ in listener.notifies(timeout=0.5, stop_after=1):
                        while (job_id := baseline_claim(cur, self.table)) is not None:
                            self.arrivals.record(job_id)
                            baseline_finish(cur, self.table, job_id)
        except BaseException as exc:
            self.errors.append(exc)
            ready.set()

    def once(self, n: int) -> float:
        if self.errors:
            raise self.errors[0]
        row = self.conn.execute(
            f"INSERT INTO {self.table} (status, payload) VALUES ('queued', {CONFIG_SQL}) "
            "RETURNING id"
        ).fetchone()
        assert row is not None
        self.conn.execute(f"NOTIFY {self.channel}")
        self.conn.commit()
        committed = time.perf_counter()
        job_id = row[0]
        return self.arrivals.wait(job_id, f"baseline job {job_id}") - committed

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5.0)
        self.conn.close()


def bench_pickup(dbs: Databases, sizes: Sizes, report: Report) -> None:
    log(
        f"(2) pickup latency: {sizes.pickup} submits each, {sizes.pickup_gap_s * 1000:.0f} ms apart"
    )
    jq_side = JobqueuePickup(dbs)
    sides: list[JobqueuePickup | BaselinePickup] = [jq_side]
    try:
        sides.append(BaselinePickup(dbs))
        latencies: dict[str, list[float]] = {side.label: [] for side in sides}
        warmup = 5
        for n in range(warmup + sizes.pickup):
            for side in sides if n % 2 == 0 else sides[::-1]:
                latency = side.once(n)
                if n >= warmup:
                    latencies[side.label].append(latency)
                time.sleep(sizes.pickup_gap_s)
    finally:
        for side in sides:
            side.close()
    jq, base = latencies["jobqueue"], latencies["baseline"]
    for q in (50, 99):
        jq_q, b_q = percentile(jq, q), percentile(base, q)
        report.timing(
            f"(2) pickup latency p{q}, commit -> claimed (N={sizes.pickup})",
            jq_q,
            b_q,
            "<= 5 ms" if q == 50 else "-",
            verdict(jq_q <= 0.005) if q == 50 else "info",
        )
    report.notes.append(
        "(2) jobqueue: JobQueue.submit (its own time, p50 "
        f"{ms(percentile(jq_side.submit_seconds[warmup:], 50))}, not counted) to a SlotRunner "
        "with listen_url whose handler starts; baseline: INSERT + NOTIFY + COMMIT to a LISTEN "
        "thread that claims with SKIP LOCKED. Submits alternate between the two, "
        f"{sizes.pickup_gap_s * 1000:.0f} ms apart."
    )
