"""The API benchmark's database: jobs of every status and one live worker, and the
scenarios that load it.

Mostly finished jobs, a few hundred queued, some held, running and paused, with creation
times spread over three days so that the newest page mixes statuses as a real one does.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.engine import make_url

from benchmarks.harness.databases import Databases
from benchmarks.harness.jobs import CONFIG, KIND, POOL, load_finished_jobs, load_queued_jobs
from jobqueue.db import connect_raw, make_engine
from jobqueue.looper import Looper
from jobqueue.queue import JobQueue
from jobqueue.settings import Settings
from jobqueue.specs import JobSpec
from jobqueue.worker_store import WorkerIdentity, WorkerStore

WORKER_NAME = "gpu-host-bench"


@dataclasses.dataclass(frozen=True)
class Population:
    """Seeded jobs of each status (2,000 in all by default)."""

    finished: int = 1_400
    queued: int = 400
    pending: int = 100
    running: int = 50
    paused: int = 50

    @property
    def total(self) -> int:
        return sum(dataclasses.astuple(self))


@dataclasses.dataclass
class Seeded:
    url: str
    database: str
    queued_ids: list[UUID]  # from the middle of the queue
    completed_ids: list[UUID]
    force_ids: list[UUID]  # queued jobs the force-start scenario forces (and then repeats)
    counts: dict[str, int]


def seed(dbs: Databases, sizes: Population) -> Seeded:
    url = dbs.jobqueue()
    settings = Settings(database_url=url, lease_seconds=3600, heartbeat_seconds=10)
    engine = make_engine(url, pool_size=2, application_name="jobqueue-bench-seed")
    try:
        queue = JobQueue(engine, settings)
        store = WorkerStore(engine, settings)
        with connect_raw(url) as conn:
            load_finished_jobs(conn, sizes.finished)
            load_queued_jobs(conn, sizes.queued + sizes.running + sizes.paused)
        worker = live_worker()
        store.heartbeat_worker(worker, free_gpus=len(worker.gpu_ids), restarted=True)
        # Running: claimed by the live worker (0-GPU jobs, so its GPUs stay free).
        claimed = store.claim(worker, free_gpu_ids=[], slots=sizes.running)
        assert len(claimed) == sizes.running, len(claimed)
        with engine.connect() as conn:
            tail = conn.execute(
                text(
                    "SELECT id FROM jobs WHERE status = 'queued' ORDER BY queued_at DESC LIMIT :n"
                ),
                {"n": sizes.paused},
            ).scalars()
            for job_id in list(tail):
                queue.pause(job_id, actor="bench")
        for n in range(sizes.pending):
            spec = JobSpec(name=f"held-{n}", kind=KIND, config=CONFIG, gpus=1, hold=True)
            queue.submit(spec, actor="bench")
        with connect_raw(url) as conn:
            # Spread creation times so that the newest page mixes statuses as a real one does.
            conn.execute("UPDATE jobs SET created_at = now() - random() * interval '3 days'")
            conn.execute("VACUUM ANALYZE")
            counts: dict[str, int] = dict(
                conn.execute("SELECT status::text, count(*) FROM jobs GROUP BY 1")
            )
            order = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM jobs WHERE status = 'queued' "
                    "ORDER BY forced_at NULLS LAST, priority DESC, queued_at, id"
                )
            ]
            completed = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM jobs WHERE status = 'completed' ORDER BY random() LIMIT 20"
                )
            ]
    finally:
        engine.dispose()
    middle = len(order) // 2
    return Seeded(
        url=url,
        database=make_url(url).database or "",
        queued_ids=order[middle - 10 : middle + 10],
        completed_ids=completed,
        force_ids=order[-200:],
        counts=counts,
    )


def live_worker() -> WorkerIdentity:
    return WorkerIdentity(
        name=WORKER_NAME, pools=(POOL,), kinds=(KIND,), gpu_ids=tuple(range(8)), hostname="bench"
    )


@contextlib.contextmanager
def heartbeats(url: str) -> Iterator[None]:
    """Keeps the seeded worker alive for as long as the benchmark runs."""
    settings = Settings(database_url=url, heartbeat_seconds=10)
    engine = make_engine(url, pool_size=1, application_name="jobqueue-bench-heartbeat")
    store = WorkerStore(engine, settings)
    worker = live_worker()
    looper = Looper("bench-heartbeat", lambda: store.heartbeat_worker(worker, free_gpus=8), 5.0)
    looper.start()
    try:
        yield
    finally:
        looper.stop()
        engine.dispose()


@dataclasses.dataclass(frozen=True)
class Scenario:
    label: str
    method: str
    paths: list[str]


def scenarios(seeded: Seeded) -> list[Scenario]:
    """GET of a queued job (the common case for a UI: it computes ``queue_position`` and
    ``waiting_reason``), GET of a completed job, GET of the newest 50, POST force-start."""
    return [
        Scenario("GET queued job", "GET", [f"/api/training/{i}" for i in seeded.queued_ids]),
        Scenario("GET completed job", "GET", [f"/api/training/{i}" for i in seeded.completed_ids]),
        Scenario("GET list of 50 (newest)", "GET", ["/api/training?limit=50"]),
        Scenario(
            "POST force-start (queued)",
            "POST",
            [f"/api/training/{i}/force-start" for i in seeded.force_ids],
        ),
    ]
