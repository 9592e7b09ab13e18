"""jobqueue against a hand-written psycopg 3 SKIP LOCKED loop, on a real PostgreSQL.

Run ``python -m benchmarks.queue_bench [--database-url URL] [--quick]``. In one run it
measures, each beside the same measurement of a minimal baseline:

1. claim+finish throughput with N concurrent claimers over a queue of jobs;
2. pickup latency from a submit's commit to the claim by an idle claimer woken by NOTIFY;
3. single claim+finish latency with a backlog of finished and queued rows vs a near-empty
   table.

The server comes from ``--database-url`` or ``JOBQUEUE_BENCH_DATABASE_URL`` (a maintenance
database where ``CREATE DATABASE`` may run), else an embedded PostgreSQL under the temporary
folder. The benchmark creates its own databases (jobqueue's migrated with alembic, the
baseline's with one minimal table per measurement) and drops them at the end.

The baseline uses its own minimal table ``(id bigserial, status text, payload jsonb,
timestamps)`` with a partial index on ``id WHERE status = 'queued'``; it writes no events and
fires no trigger, so it is a floor, not a competitor.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from jobqueue.db import connect_raw, libpq_conninfo, make_engine, normalize_url
from jobqueue.embedded import throwaway_server
from jobqueue.leases import WorkerIdentity, WorkerStore
from jobqueue.migrate import upgrade
from jobqueue.outcomes import Exit
from jobqueue.queue import JobQueue
from jobqueue.records import Claimed
from jobqueue.runner import SlotRunner
from jobqueue.settings import Settings
from jobqueue.specs import JobSpec

KIND = "bench"
POOL = "default"
#: The config every benchmark job carries (and the baseline's payload), a typical small one.
CONFIG_SQL = """'{"model": "resnet50", "lr": 0.001, "epochs": 10, "batch_size": 256}'::jsonb"""
CONFIG = {"model": "resnet50", "lr": 0.001, "epochs": 10, "batch_size": 256}

# -- sizes ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sizes:
    jobs: int  # (1) jobs drained by the claimers
    claimers: int  # (1) concurrent claimers
    slots: int  # (1) jobs one jobqueue claim may take
    rounds: int  # (1) alternating rounds the jobs are drained in
    pickup: int  # (2) jobs submitted one at a time
    pickup_gap_s: float  # (2) pause between two submits
    finished: int  # (3) finished rows of the backlog
    queued: int  # (3) queued rows of the backlog
    few_queued: int  # (3) queued rows of the near-empty table
    cycles: int  # (3) timed claim+finish cycles per case


FULL = Sizes(20_000, 4, 8, 4, 200, 0.020, 1_000_000, 10_000, 10, 500)
QUICK = Sizes(2_000, 4, 8, 2, 50, 0.020, 100_000, 1_000, 10, 200)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), linearly interpolated."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# -- server and databases ------------------------------------------------------------------


def add_server_argument(parser: argparse.ArgumentParser) -> None:
    """``--database-url``, which every benchmark takes and :func:`postgres_server` reads."""
    parser.add_argument(
        "--database-url",
        help="a maintenance database where CREATE DATABASE may run "
        "(default: $JOBQUEUE_BENCH_DATABASE_URL, else an embedded PostgreSQL)",
    )


@contextlib.contextmanager
def postgres_server(url: str | None) -> Iterator[str]:
    """Yields the URL of a maintenance database where CREATE DATABASE may run."""
    url = url or os.environ.get("JOBQUEUE_BENCH_DATABASE_URL")
    if url:
        yield url
        return
    log("starting an embedded PostgreSQL under the temporary folder")
    with throwaway_server("jobqueue-bench-pg-") as server:
        yield server.get_uri()


def with_database(url: str, name: str) -> str:
    return make_url(normalize_url(url)).set(database=name).render_as_string(hide_password=False)


class Databases:
    """Creates the benchmark's databases on one server and drops every one of them."""

    def __init__(self, server_url: str):
        self.server_url = server_url
        self.prefix = f"jqbench_{uuid.uuid4().hex[:8]}"
        self._admin = psycopg.connect(libpq_conninfo(server_url), autocommit=True)
        self.server_version = self._admin.info.server_version
        self._created: list[str] = []
        self._template: str | None = None

    def jobqueue(self, label: str) -> str:
        """A fresh database migrated to head (cloned from one migrated template)."""
        if self._template is None:
            self._template = self._create("template")
            upgrade(with_database(self.server_url, self._template))
        name = f"{self.prefix}_{label}"
        strategy = " STRATEGY = FILE_COPY" if self.server_version >= 150000 else ""
        self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"{strategy}')
        self._created.append(name)
        return with_database(self.server_url, name)

    def plain(self, label: str) -> str:
        return with_database(self.server_url, self._create(label))

    def _create(self, label: str) -> str:
        name = f"{self.prefix}_{label}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return name

    def close(self) -> None:
        for name in reversed(self._created):
            try:
                self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error as exc:
                log(f"could not drop database {name}: {exc}")
        self._admin.close()


def settings_for(url: str) -> Settings:
    return Settings(database_url=url, lease_seconds=600, heartbeat_seconds=30)


def engine_for(url: str, connections: int) -> Engine:
    return make_engine(url, pool_size=connections, application_name="jobqueue-bench")


# -- loading rows fast ---------------------------------------------------------------------


def load_queued_jobs(conn: psycopg.Connection, count: int) -> None:
    """``count`` queued jobs (and their submit events) in one INSERT … SELECT each."""
    conn.execute(
        f"""
        WITH new AS (
            INSERT INTO jobs (name, kind, config, status, pool, gpus, priority, queued_at,
                              max_attempts, max_interruptions)
            SELECT 'bench-' || g, '{KIND}', {CONFIG_SQL}, 'queued', '{POOL}', 0, 50,
                   now() + g * interval '1 microsecond', 3, 10
            FROM generate_series(1, %(count)s) AS g
            RETURNING id
        )
        INSERT INTO job_events (job_id, from_status, to_status, action, actor)
        SELECT id, NULL, 'queued', 'submit', 'bench' FROM new
        """,
        {"count": count},
    )


def load_finished_jobs(conn: psycopg.Connection, count: int) -> None:
    """``count`` finished jobs spread over the last weeks (90% completed, 7% failed, 3%
    cancelled), valid under every CHECK constraint. No events: jobs rows only."""
    conn.execute(
        f"""
        INSERT INTO jobs (name, kind, config, status, pool, gpus, priority, queued_at,
                          attempt, max_attempts, interruptions, max_interruptions,
                          worker_name, gpu_ids, termination_reason, exit_code,
                          created_at, started_at, finished_at, updated_at)
        SELECT 'old-' || g, '{KIND}', {CONFIG_SQL},
               CAST(CASE WHEN mod(g, 100) < 90 THEN 'completed'
                         WHEN mod(g, 100) < 97 THEN 'failed' ELSE 'cancelled' END AS job_status),
               '{POOL}', 1, 50, t.finished - interval '70 minutes',
               1, 3, 0, 10,
               'gpu-host-' || mod(g, 16), ARRAY[mod(g, 8)],
               CASE WHEN mod(g, 100) < 90 THEN 'completed'
                    WHEN mod(g, 100) < 97 THEN 'exit_code' ELSE 'cancelled' END,
               CASE WHEN mod(g, 100) < 90 THEN 0 WHEN mod(g, 100) < 97 THEN 1 END,
               t.finished - interval '70 minutes', t.finished - interval '60 minutes',
               t.finished, t.finished
        FROM generate_series(1, %(count)s) AS g,
             LATERAL (SELECT now() - interval '1 hour' - g * interval '2 seconds') AS t(finished)
        """,
        {"count": count},
    )


BASELINE_TABLE = """
    CREATE TABLE {t} (
        id bigserial PRIMARY KEY,
        status text NOT NULL,
        payload jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        finished_at timestamptz
    );
    CREATE INDEX {t}_queued ON {t} (id) WHERE status = 'queued';
"""


def baseline_table(conn: psycopg.Connection, table: str, *, finished: int, queued: int) -> None:
    conn.execute(BASELINE_TABLE.format(t=table))
    if finished:
        conn.execute(
            f"""
            INSERT INTO {table} (status, payload, created_at, started_at, finished_at)
            SELECT 'done', {CONFIG_SQL}, now() - g * interval '2 seconds',
                   now() - g * interval '2 seconds', now() - g * interval '1 second'
            FROM generate_series(1, %(n)s) AS g
            """,
            {"n": finished},
        )
    if queued:
        conn.execute(
            f"INSERT INTO {table} (status, payload) "
            f"SELECT 'queued', {CONFIG_SQL} FROM generate_series(1, %(n)s)",
            {"n": queued},
        )


def baseline_claim(cur: psycopg.Cursor, table: str) -> int | None:
    """The baseline's claim: lock the oldest queued row, mark it running, commit."""
    cur.execute(
        f"SELECT id FROM {table} WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
    row = cur.fetchone()
    if row is None:
        cur.connection.rollback()
        return None
    cur.execute(f"UPDATE {table} SET status = 'running', started_at = now() WHERE id = %s", row)
    cur.connection.commit()
    return row[0]


def baseline_finish(cur: psycopg.Cursor, table: str, job_id: int) -> None:
    cur.execute(f"UPDATE {table} SET status = 'done', finished_at = now() WHERE id = %s", (job_id,))
    cur.connection.commit()


# -- results -------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    what: str
    jobqueue: str
    baseline: str
    ratio: str = ""
    target: str = ""
    result: str = ""


@dataclasses.dataclass
class Report:
    rows: list[Row] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, *args: str, **kwargs: str) -> None:
        self.rows.append(Row(*args, **kwargs))

    def render(self) -> str:
        header = Row("what", "jobqueue", "baseline", "jq/base", "target", "result")
        rows = [header, *self.rows]
        fields = [f.name for f in dataclasses.fields(Row)]
        widths = {f: max(len(getattr(r, f)) for r in rows) for f in fields}

        def line(r: Row) -> str:
            return "  ".join(getattr(r, f).ljust(widths[f]) for f in fields).rstrip()

        rule = "  ".join("-" * widths[f] for f in fields)
        out = [line(header), rule, *(line(r) for r in self.rows), rule]
        out.extend(self.notes)
        return "\n".join(out)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


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


# -- (1) throughput ------------------------------------------------------------------------


def server_cpu(database: str) -> float | None:
    """CPU seconds used so far by the server processes serving ``database``, when the server
    runs on this machine (its backends' /proc entries are readable); else None."""
    total, found = 0, False
    marker = f" {database} ".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "cmdline").read_bytes().replace(b"\0", b" ") + b" ":
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
        found = True
    return total / os.sysconf("SC_CLK_TCK") if found else None


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
        url = dbs.jobqueue("throughput")
        self.database = make_url(url).database
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
        lock = threading.Lock()
        done = [0]

        def claimer(i: int, barrier: threading.Barrier) -> None:
            worker = self.workers[i]
            barrier.wait()
            while done[0] < quota:
                claimed = self.store.claim(worker, free_gpu_ids=[], slots=self.sizes.slots)
                if not claimed:
                    return
                for job in claimed:
                    self.store.finish(
                        job.id, job.lease_token, Exit(exit_code=0), actor=worker.actor
                    )
                with lock:
                    done[0] += len(claimed)

        run_threads(self.sizes.claimers, claimer)
        return done[0]

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
        self.url = dbs.plain("baseline_throughput")
        self.database = make_url(self.url).database
        with connect_raw(self.url) as conn:
            baseline_table(conn, self.table, finished=0, queued=sizes.jobs)
            conn.execute("VACUUM ANALYZE")
        self.conns = [connect_raw(self.url, autocommit=False) for _ in range(sizes.claimers)]

    def drain(self, quota: int) -> int:
        lock = threading.Lock()
        done = [0]

        def claimer(i: int, barrier: threading.Barrier) -> None:
            with self.conns[i].cursor() as cur:
                barrier.wait()
                while done[0] < quota:
                    job_id = baseline_claim(cur, self.table)
                    if job_id is None:
                        return
                    baseline_finish(cur, self.table, job_id)
                    with lock:
                        done[0] += 1

        run_threads(self.sizes.claimers, claimer)
        return done[0]

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        with connect_raw(self.url) as conn:
            rows = conn.execute(f"SELECT status, count(*) FROM {self.table} GROUP BY 1").fetchall()
        counts = dict(rows)
        if counts != {"done": self.sizes.jobs}:
            raise RuntimeError(f"baseline throughput run ended with {counts}")


def bench_throughput(dbs: Databases, sizes: Sizes, report: Report) -> None:
    log(
        f"(1) throughput: {sizes.claimers} claimers, {sizes.jobs:,} jobs each, "
        f"jobqueue slots={sizes.slots}; {sizes.rounds} alternating rounds"
    )
    drains = [JobqueueDrain(dbs, sizes), BaselineDrain(dbs, sizes)]
    tallies = {d.label: Tally() for d in drains}
    try:
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
    report.add(
        "(1) client CPU per job (this process, all threads)",
        ms(jq.cpu_per_job),
        ms(base.cpu_per_job),
        f"{jq.cpu_per_job / base.cpu_per_job:.2f}x",
        "-",
        "info",
    )
    if jq.server_per_job is not None and base.server_per_job is not None:
        report.add(
            "(1) server CPU per job (backends of its database)",
            ms(jq.server_per_job),
            ms(base.server_per_job),
            f"{jq.server_per_job / base.server_per_job:.2f}x",
            "-",
            "info",
        )
    report.notes.append(
        f"(1) jobqueue: {sizes.claimers} threads, each its own WorkerIdentity, "
        f"WorkerStore.claim(slots={sizes.slots}) then WorkerStore.finish(Exit(exit_code=0)) for "
        "each job claimed; baseline: as many threads, one job at a time. Both queues hold all "
        f"{sizes.jobs:,} jobs from the start; they are drained in {sizes.rounds} alternating "
        "rounds (ABBA) and the rate is jobs / summed seconds."
    )


# -- (2) pickup latency --------------------------------------------------------------------


class JobqueuePickup:
    """A SlotRunner woken by NOTIFY (poll 30 s); its handler records when it runs."""

    label = "jobqueue"

    def __init__(self, dbs: Databases):
        url = dbs.jobqueue("pickup")
        settings = settings_for(url)
        self.queue_engine = engine_for(url, 2)
        self.worker_engine = engine_for(url, 4)
        self.queue = JobQueue(self.queue_engine, settings)
        store = WorkerStore(self.worker_engine, settings)
        self.started: dict[Any, float] = {}
        self.arrived = threading.Condition()
        worker = WorkerIdentity(name="bench-pickup", pools=(POOL,), kinds=(KIND,), gpu_ids=())
        self.runner = SlotRunner(
            store, worker, self._handler, slots=4, listen_url=url, poll_seconds=30.0
        )
        self.runner.start()
        self.submit_seconds: list[float] = []

    def _handler(self, job: Claimed) -> Exit:
        now = time.perf_counter()
        with self.arrived:
            self.started[job.id] = now
            self.arrived.notify_all()
        return Exit(exit_code=0)

    def once(self, n: int) -> float:
        spec = JobSpec(name=f"pickup-{n}", kind=KIND, config=CONFIG, gpus=0)
        before = time.perf_counter()
        job, _ = self.queue.submit(spec, actor="bench")
        committed = time.perf_counter()
        self.submit_seconds.append(committed - before)
        with self.arrived:
            if not self.arrived.wait_for(lambda: job.id in self.started, timeout=10.0):
                raise RuntimeError(f"job {job.id} was not picked up within 10 s")
        return self.started[job.id] - committed

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
        self.url = dbs.plain("baseline_pickup")
        with connect_raw(self.url) as conn:
            baseline_table(conn, self.table, finished=0, queued=0)
        self.started: dict[int, float] = {}
        self.arrived = threading.Condition()
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
                            now = time.perf_counter()
                            with self.arrived:
                                self.started[job_id] = now
                                self.arrived.notify_all()
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
        with self.arrived:
            if not self.arrived.wait_for(lambda: job_id in self.started, timeout=10.0):
                raise RuntimeError(f"baseline job {job_id} was not picked up within 10 s")
        return self.started[job_id] - committed

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
        report.add(
            f"(2) pickup latency p{q}, commit -> claimed (N={sizes.pickup})",
            ms(jq_q),
            ms(b_q),
            f"{jq_q / b_q:.2f}x",
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


# -- (3) claim latency with a backlog --------------------------------------------------------


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
    empty_url = dbs.jobqueue("empty")
    with connect_raw(empty_url) as conn:
        load_queued_jobs(conn, sizes.few_queued)
        conn.execute("VACUUM ANALYZE")
    backlog_url = dbs.jobqueue("backlog")
    with connect_raw(backlog_url) as conn:
        t = time.perf_counter()
        load_finished_jobs(conn, sizes.finished)
        log(f"    jobqueue: {sizes.finished:,} finished jobs in {time.perf_counter() - t:.1f} s")
        load_queued_jobs(conn, sizes.queued)
        t = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        log(f"    jobqueue: VACUUM ANALYZE in {time.perf_counter() - t:.1f} s")
    base_url = dbs.plain("baseline_backlog")
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
            jq_q, b_q = p(jq.cycles, q), p(base.cycles, q)
            report.add(
                f"(3) claim+finish p{q}, {what}",
                ms(jq_q),
                ms(b_q),
                f"{jq_q / b_q:.2f}x",
                "-",
                "info",
            )
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


# -- main ----------------------------------------------------------------------------------

BENCHES = {"throughput": bench_throughput, "pickup": bench_pickup, "backlog": bench_backlog}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.queue_bench",
        description="jobqueue vs a minimal psycopg SKIP LOCKED loop on a real PostgreSQL.",
    )
    add_server_argument(parser)
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHES),
        help="run only this measurement (repeatable)",
    )
    parser.add_argument("--jobs", type=int, help="(1) jobs to drain")
    parser.add_argument("--claimers", type=int, help="(1) concurrent claimers")
    parser.add_argument("--slots", type=int, help="(1) jobs one jobqueue claim may take")
    parser.add_argument("--rounds", type=int, help="(1) alternating rounds")
    parser.add_argument("--pickup", type=int, help="(2) jobs submitted one at a time")
    parser.add_argument("--finished", type=int, help="(3) finished rows in the backlog")
    parser.add_argument("--queued", type=int, help="(3) queued rows in the backlog")
    parser.add_argument("--cycles", type=int, help="(3) timed claim+finish cycles per case")
    args = parser.parse_args(argv)

    sizes = QUICK if args.quick else FULL
    overrides = {
        k: getattr(args, k)
        for k in ("jobs", "claimers", "slots", "rounds", "pickup", "finished", "queued", "cycles")
        if getattr(args, k) is not None
    }
    sizes = dataclasses.replace(sizes, **overrides)
    chosen = args.only or list(BENCHES)

    # A SIGTERM unwinds like Ctrl-C, so the benchmark's databases are dropped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = Report()
    report.notes.append(
        "Baseline: its own minimal table (id bigserial, status text, payload jsonb, timestamps) "
        "with a partial index on id WHERE status = 'queued'; claim = SELECT id … ORDER BY id "
        "LIMIT 1 FOR UPDATE SKIP LOCKED + UPDATE running + COMMIT; finish = UPDATE done + "
        "COMMIT; no events, no trigger. jq/base = jobqueue / baseline."
    )
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    with postgres_server(args.database_url) as server_url:
        dbs = Databases(server_url)
        version = dbs.server_version
        try:
            for name in chosen:
                BENCHES[name](dbs, sizes, report)
        finally:
            dbs.close()
    major, minor = divmod(version, 10000)
    report.notes.append(
        f"PostgreSQL {major}.{minor}, {os.cpu_count()} CPUs (client and server share them), "
        f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; "
        f"{'quick' if args.quick else 'full'} sizes, {time.perf_counter() - began:.0f} s in all."
    )
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
