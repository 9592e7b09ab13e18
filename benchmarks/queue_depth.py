"""(4) the cost of one submit, one claim+finish and one GET of the newest queued job with
a deep queue, against the same with a shallow one (jobqueue's own ratio: what a user feels
as the queue grows). The two databases run interleaved, one cycle at a time; each cycle
submits one job and claims one, so the depth stays the same. The jobs belong to four teams
and the scheduling pass runs (untimed) every 50 cycles, as a worker daemon would run it.
"""

from __future__ import annotations

import time
from uuid import UUID

from benchmarks.harness.databases import Databases, engine_for
from benchmarks.harness.jobs import CONFIG, KIND, POOL, load_queued_jobs
from benchmarks.harness.report import Report, log, ms, verdict
from benchmarks.harness.stats import percentile
from benchmarks.queue_common import Sizes, settings_for
from jobqueue.db import connect_raw
from jobqueue.outcomes import Exit
from jobqueue.planner import run_pass
from jobqueue.queue import JobQueue
from jobqueue.specs import JobSpec
from jobqueue.worker_store import WorkerIdentity, WorkerStore

TEAMS = 4
#: Cycles between two scheduling passes.
PASS_EVERY = 50


class DepthCycles:
    """Submit, GET of the job just submitted, claim+finish of the head: each timed apart."""

    def __init__(self, url: str, depth: int):
        self.depth = depth
        self.settings = settings_for(url)
        self.engine = engine_for(url, 2)
        self.queue = JobQueue(self.engine, self.settings)
        self.store = WorkerStore(self.engine, self.settings)
        self.worker = WorkerIdentity(name="bench-depth", pools=(POOL,), kinds=(KIND,), gpu_ids=())
        self.submits: list[float] = []
        self.gets: list[float] = []
        self.claims: list[float] = []
        self.newest: UUID | None = None

    def once(self, n: int, timed: bool) -> None:
        if n % PASS_EVERY == 0:
            run_pass(self.engine, self.settings, force=True)
        spec = JobSpec(
            name=f"depth-{n}", kind=KIND, config=CONFIG, gpus=0, team=f"team-{n % TEAMS}"
        )
        t0 = time.perf_counter()
        job, _ = self.queue.submit(spec, actor="bench")
        t1 = time.perf_counter()
        got = self.queue.get(job.id)
        t2 = time.perf_counter()
        (claimed,) = self.store.claim(self.worker, free_gpu_ids=[], slots=1)
        self.store.finish(
            claimed.id, claimed.lease_token, Exit(exit_code=0), actor=self.worker.actor
        )
        t3 = time.perf_counter()
        assert got.queue_position_estimate is not None
        if timed:
            self.submits.append(t1 - t0)
            self.gets.append(t2 - t1)
            self.claims.append(t3 - t2)

    def close(self) -> None:
        self.engine.dispose()


def _loaded(dbs: Databases, depth: int) -> str:
    url = dbs.jobqueue()
    with connect_raw(url) as conn:
        t = time.perf_counter()
        load_queued_jobs(conn, depth, teams=TEAMS)
        conn.execute("VACUUM ANALYZE")
        log(f"    {depth:,} queued jobs loaded and vacuumed in {time.perf_counter() - t:.1f} s")
    return url


def bench_depth(dbs: Databases, sizes: Sizes, report: Report) -> None:
    log(f"(4) depth: {sizes.deep_queued:,} queued vs {sizes.shallow_queued} queued")
    shallow = DepthCycles(_loaded(dbs, sizes.shallow_queued), sizes.shallow_queued)
    deep = DepthCycles(_loaded(dbs, sizes.deep_queued), sizes.deep_queued)
    log(f"    {sizes.depth_cycles} timed cycles per depth, the two interleaved")
    try:
        warmup = 20
        for n in range(warmup + sizes.depth_cycles):
            for side in (shallow, deep) if n % 2 else (deep, shallow):
                side.once(n, timed=n >= warmup)
    finally:
        shallow.close()
        deep.close()

    for what, pick in (
        ("submit", lambda s: s.submits),
        ("GET of the newest queued job", lambda s: s.gets),
        ("claim+finish", lambda s: s.claims),
    ):
        for q in (50, 99):
            few, many = percentile(pick(shallow), q), percentile(pick(deep), q)
            ratio = many / few
            report.add(
                f"(4) {what} p{q}, {sizes.deep_queued:,} vs {sizes.shallow_queued} queued",
                ms(many),
                ms(few),
                f"{ratio:.2f}x",
                "<= 1.5x" if q == 50 else "-",
                verdict(ratio <= 1.5) if q == 50 else "info",
            )
    report.notes.append(
        f"(4) the baseline column is jobqueue itself with {sizes.shallow_queued} queued jobs; "
        f"{TEAMS} teams, the scheduling pass every {PASS_EVERY} cycles (untimed); each cycle "
        "submits one job, reads it back and claims+finishes the head, so the depth holds."
    )
