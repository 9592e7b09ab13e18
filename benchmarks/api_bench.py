"""The REST API under load, served by gunicorn as it is deployed, beside a minimal app.

Run ``python -m benchmarks.api_bench [--database-url URL] [--quick]``. In one run it:

1. seeds one database with jobs of every status (mostly finished, a few hundred queued,
   some held, running and paused) and one live worker whose heartbeat it keeps fresh;
2. serves the API with the gunicorn command line of ``jobqueue api`` (its processes and
   threads; ``--access-log`` as ``jobqueue api --access-log``); with ``--shape``
   (repeatable) it first tries those shapes on GET of a queued job and keeps the fastest;
3. loads each scenario for a while after a short warm-up: GET of a queued job (the common
   case for a UI: it computes ``queue_position`` and ``waiting_reason``), GET of a completed
   job, GET of the newest 50 jobs, POST force-start of queued jobs;
4. serves, under the same gunicorn settings, a baseline Flask app that runs one
   ``SELECT * FROM jobs WHERE id = %s`` with psycopg and returns the row as JSON, and loads
   it the same way;
5. counts the database round trips of one request of each scenario (libpq's protocol
   trace, in-process), which is where the time of a read goes.

The load generator is ``wrk`` (``apt-get install wrk``) with a small Lua script, else a
Python one (threads with keep-alive ``http.client`` connections). Both are closed-loop:
each connection sends its next request when the answer to the last one arrived.

The database server comes from ``--database-url`` or ``JOBQUEUE_BENCH_DATABASE_URL``, else
an embedded PostgreSQL (see ``benchmarks.queue_bench``). Every server process and database
the run starts is stopped and dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import http.client
import io
import json
import os
import pstats
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import TextualSelect

from benchmarks.queue_bench import (
    CONFIG,
    KIND,
    POOL,
    Databases,
    Report,
    add_server_argument,
    load_finished_jobs,
    load_queued_jobs,
    log,
    ms,
    postgres_server,
    server_cpu,
    verdict,
)
from jobqueue import sql
from jobqueue.db import connect_raw, libpq_conninfo, make_engine
from jobqueue.leases import WorkerIdentity, WorkerStore
from jobqueue.looper import Looper
from jobqueue.queue import JobQueue
from jobqueue.serving import API_THREADS, default_api_processes, gunicorn_argv
from jobqueue.settings import Settings
from jobqueue.specs import JobSpec

ROOT = Path(__file__).resolve().parents[1]
TARGET_RPS = 800.0
TARGET_P99 = 0.030
WORKER_NAME = "gpu-host-bench"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@dataclasses.dataclass(frozen=True)
class Sizes:
    seconds: float  # measured seconds per scenario
    warmup: float  # warm-up seconds before each
    tune_seconds: float  # measured seconds per gunicorn shape tried
    finished: int  # seeded jobs of each status (2,000 in all by default)
    queued: int
    pending: int
    running: int
    paused: int


FULL = Sizes(6.0, 2.0, 4.0, 1_400, 400, 100, 50, 50)
QUICK = Sizes(2.0, 1.0, 1.5, 1_400, 400, 100, 50, 50)
#: What `jobqueue api` runs on this machine: gunicorn processes and threads.
DEFAULT_SHAPE = (default_api_processes(), API_THREADS)
#: Rounds of the one-job GETs and the baseline; each is reported by its median round.
ROUNDS = 5


# -- the seeded database -------------------------------------------------------------------


@dataclasses.dataclass
class Seeded:
    url: str
    database: str
    queued_ids: list[UUID]  # from the middle of the queue
    completed_ids: list[UUID]
    force_ids: list[UUID]  # queued jobs the force-start scenario forces (and then repeats)
    counts: dict[str, int]


def seed(dbs: Databases, sizes: Sizes) -> Seeded:
    url = dbs.jobqueue("api")
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
            counts = dict(conn.execute("SELECT status::text, count(*) FROM jobs GROUP BY 1"))
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


# -- gunicorn ------------------------------------------------------------------------------

BASELINE_APP = '''
"""The baseline: one SELECT with psycopg (a connection per thread), the row as JSON."""
import os
import threading
from datetime import datetime

import psycopg
from flask import Flask, jsonify
from psycopg.rows import dict_row

app = Flask(__name__)
app.json.default = lambda o: o.isoformat() if isinstance(o, datetime) else str(o)
_local = threading.local()


def connection():
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(
            os.environ["BASELINE_DSN"], autocommit=True, row_factory=dict_row
        )
    return conn


@app.get("/jobs/<job_id>")
def get_job(job_id):
    row = connection().execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()
    if row is None:
        return jsonify({"error": "not found"}), 404
    return jsonify(row)


@app.get("/healthz")
def healthz():
    return jsonify({"ok": True})
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JOBQUEUE_") and k not in ("DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")
    }


class Gunicorn:
    """One gunicorn server in its own process group; always stopped (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        app: str,
        *,
        workers: int,
        threads: int,
        env: dict[str, str],
        cwd: Path,
        workdir: Path,
        label: str,
        access_log: bool = False,
    ):
        self.port = free_port()
        self.label = label
        self.workers = workers
        self.log_path = workdir / f"gunicorn-{label}-{self.port}.log"
        # What `jobqueue api` runs (an access log lands in the log file).
        argv = gunicorn_argv(
            f"127.0.0.1:{self.port}", processes=workers, threads=threads, app=app,
            access_log=access_log,
        )  # fmt: skip
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    conn.request("GET", "/healthz")
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn ({self.label}) did not start; its log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cpu(self) -> dict[int, float]:
        """CPU seconds used so far by each live process of the server's group."""
        return group_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # Workers that outlived their master (they should not) go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def group_cpu(pgid: int) -> dict[int, float]:
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


# -- load generators -----------------------------------------------------------------------

WRK_SCRIPT = r"""
-- wrk -s this.lua URL -- METHOD PATHS_FILE TOKEN
local paths, method, body, headers, idx = {}, "GET", nil, {}, 0

function init(args)
  method = args[1]
  for line in io.lines(args[2]) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  idx = math.random(#paths)
  if args[3] ~= nil and args[3] ~= "" then headers["Authorization"] = "Bearer " .. args[3] end
  if method == "POST" then
    body = "{}"
    headers["Content-Type"] = "application/json"
  end
end

function request()
  idx = idx % #paths + 1
  return wrk.format(method, paths[idx], headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "JQBENCH {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p99_us\": %d, " ..
    "\"mean_us\": %.1f, \"max_us\": %d, \"connect\": %d, \"read\": %d, \"write\": %d, " ..
    "\"status\": %d, \"timeout\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclasses.dataclass
class Load:
    """One measured load run."""

    requests: int
    seconds: float
    p50: float
    p99: float
    errors: int  # transport errors and non-2xx answers
    client_cpu: float  # CPU seconds of the load generator
    server_cpu: dict[int, float] = dataclasses.field(default_factory=dict)  # per gunicorn pid
    db_cpu: float | None = None
    #: req/s of earlier attempts dropped because one gunicorn worker got every connection
    lopsided: list[float] = dataclasses.field(default_factory=list)
    #: req/s of every round, when this is the median of several (see median_round)
    rounds: list[float] = dataclasses.field(default_factory=list)

    def one_worker_only(self, workers: int) -> bool:
        """Did a single process do (nearly) all the work while there were several?"""
        total = sum(self.server_cpu.values())
        return workers > 1 and total > 0 and max(self.server_cpu.values()) > 0.9 * total

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def cpu_line(self) -> str:
        per = 1000.0 / max(self.requests, 1)
        app = sum(self.server_cpu.values())
        shares = sorted((v for v in self.server_cpu.values() if v > 0.05), reverse=True)
        split = "/".join(f"{100 * v / app:.0f}%" for v in shares) if app else "-"
        db = f"{self.db_cpu * per:.2f} ms" if self.db_cpu is not None else "n/a"
        again = (
            f"; measured again after {len(self.lopsided)} run(s) where one worker got every "
            f"connection ({', '.join(f'{r:,.0f}' for r in self.lopsided)} req/s)"
            if self.lopsided
            else ""
        )
        of_rounds = (
            f"; median of {len(self.rounds)} rounds: "
            f"{', '.join(f'{r:,.0f}' for r in self.rounds)} req/s"
            if self.rounds
            else ""
        )
        return (
            f"CPU per request: gunicorn {app * per:.2f} ms (split over processes {split}), "
            f"PostgreSQL {db}, load generator {self.client_cpu * per:.2f} ms{again}{of_rounds}"
        )


class Wrk:
    name = "wrk"

    def __init__(self, workdir: Path, connections: int):
        self.script = workdir / "jqbench.lua"
        self.script.write_text(WRK_SCRIPT)
        self.workdir = workdir
        self.connections = connections

    def run(self, port: int, method: str, paths: Sequence[str], token: str, seconds: float) -> Load:
        paths_file = self.workdir / f"paths-{secrets.token_hex(4)}.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        argv = [
            "wrk", "-t1", f"-c{self.connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "5s", "-s", str(self.script), f"http://127.0.0.1:{port}",
            "--", method, str(paths_file), token,
        ]  # fmt: skip
        before = os.times()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        after = os.times()
        paths_file.unlink()
        line = next((x for x in done.stdout.splitlines() if x.startswith("JQBENCH ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
        r = json.loads(line[len("JQBENCH ") :])
        return Load(
            requests=r["requests"],
            seconds=r["duration_us"] / 1e6,
            p50=r["p50_us"] / 1e6,
            p99=r["p99_us"] / 1e6,
            errors=sum(r[k] for k in ("connect", "read", "write", "status", "timeout")),
            client_cpu=(after.children_user - before.children_user)
            + (after.children_system - before.children_system),
        )


class PythonLoad:
    """Threads, each with one keep-alive http.client connection, for a bounded time."""

    name = "python (http.client threads)"

    def __init__(self, workdir: Path, connections: int):
        self.connections = connections

    def run(self, port: int, method: str, paths: Sequence[str], token: str, seconds: float) -> Load:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = None
        if method == "POST":
            body, headers = b"{}", {**headers, "Content-Type": "application/json"}
        latencies: list[list[float]] = [[] for _ in range(self.connections)]
        errors = [0] * self.connections
        start = time.perf_counter()
        deadline = start + seconds

        def client(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            n = i
            mine = latencies[i]
            try:
                while (t0 := time.perf_counter()) < deadline:
                    path = paths[n % len(paths)]
                    n += self.connections
                    try:
                        conn.request(method, path, body=body, headers=headers)
                        resp = conn.getresponse()
                        resp.read()
                        mine.append(time.perf_counter() - t0)
                        if not 200 <= resp.status < 300:
                            errors[i] += 1
                    except (OSError, http.client.HTTPException):
                        errors[i] += 1
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            finally:
                conn.close()

        cpu0 = time.process_time()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(self.connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        everything = sorted(x for xs in latencies for x in xs)

        def pct(q: float) -> float:
            return everything[min(len(everything) - 1, int(q / 100 * len(everything)))]

        return Load(
            requests=len(everything),
            seconds=elapsed,
            p50=pct(50),
            p99=pct(99),
            errors=sum(errors),
            client_cpu=time.process_time() - cpu0,
        )


def median_round(loads: Sequence[Load]) -> Load:
    """The round with the median req/s, with every round's req/s noted on it."""
    ordered = sorted(loads, key=lambda load: load.rps)
    chosen = dataclasses.replace(ordered[len(ordered) // 2])
    chosen.rounds = [load.rps for load in loads]
    return chosen


def measure(
    generator: Wrk | PythonLoad,
    server: Gunicorn,
    database: str,
    method: str,
    paths: Sequence[str],
    token: str,
    sizes_warmup: float,
    seconds: float,
    *,
    retries: int = 1,
) -> Load:
    """Warm up, then one measured run with the CPU the server processes used meanwhile.

    gunicorn's gthread workers keep the keep-alive connections they accepted, and now and
    then one worker accepts all of them while the others idle (about one run in four here
    with 2 workers): such a run is noted and measured again on fresh connections, up to
    ``retries`` times."""
    if sizes_warmup > 0:
        generator.run(server.port, method, paths, token, sizes_warmup)
    dropped: list[float] = []
    while True:
        app0, db0 = server.cpu(), server_cpu(database)
        load = generator.run(server.port, method, paths, token, seconds)
        app1, db1 = server.cpu(), server_cpu(database)
        load.server_cpu = {pid: app1[pid] - app0.get(pid, 0.0) for pid in app1}
        load.db_cpu = None if db0 is None or db1 is None else db1 - db0
        if not load.one_worker_only(server.workers) or len(dropped) >= retries:
            load.lopsided = dropped
            return load
        log(f"      one worker got every connection ({load.rps:,.0f} req/s): measuring again")
        dropped.append(load.rps)


# -- round trips per request, in-process ---------------------------------------------------

_PLACEHOLDER = re.compile(r"(?<![:\w]):\w+|\$\d+|%\(\w+\)s")
_WS = re.compile(r"\s+")


def _normalize(statement: str) -> str:
    return _WS.sub(" ", _PLACEHOLDER.sub("?", statement)).strip()


def _statement_names() -> dict[str, str]:
    names = {}
    for name, value in vars(sql).items():
        if isinstance(value, TextualSelect):  # text(...).columns(...)
            value = value.element
        if isinstance(value, TextClause):
            names[_normalize(value.text)] = name
    return names


def _label(statement: str, names: dict[str, str]) -> str:
    normalized = _normalize(statement)
    if normalized in ("", ";"):
        return "pre-ping"
    if normalized in names:
        return names[normalized]
    upper = normalized.upper()
    if upper in ("BEGIN", "ROLLBACK", "COMMIT"):
        return upper
    if upper.startswith("WITH MOVED AS") or upper.startswith("UPDATE JOBS SET STATUS"):
        return "transition_update"
    if upper.startswith("SELECT JOBS.ID"):
        return "list_jobs"
    return normalized[:40] + "…"


_MESSAGE_START = re.compile(r"^(?=[FB]\t\d+\t)", re.M)
_QUOTED = re.compile(r'"((?:[^"]|"")*)"', re.S)


def _round_trips_in(trace: str, start: int, names: dict[str, str]) -> list[str]:
    """The round trips the client sent from offset ``start`` of a libpq trace, each named
    by its statement: a simple Query is one, and so is each Sync of the extended protocol
    (Parse/Bind/Execute; a Bind of a statement prepared earlier names it)."""
    prepared: dict[str, str] = {}
    current = "?"
    out: list[str] = []
    offset = 0
    for message in _MESSAGE_START.split(trace):
        here, offset = offset, offset + len(message)
        parts = message.split("\t", 3)
        if len(parts) < 3 or parts[0] != "F":
            continue
        kind, rest = parts[2].strip(), parts[3] if len(parts) > 3 else ""
        quoted = [q.replace('""', '"') for q in _QUOTED.findall(rest)]
        if kind == "Query" and quoted:
            if here >= start:
                out.append(_label(quoted[0], names))
        elif kind == "Parse" and len(quoted) >= 2:
            current = _label(quoted[1], names)
            if quoted[0]:
                prepared[quoted[0]] = current
        elif kind == "Bind" and len(quoted) >= 2 and quoted[1]:
            current = prepared.get(quoted[1], "prepared statement")
        elif kind == "Sync" and here >= start:
            out.append(current)
    return out


def round_trips(
    url: str,
    requests: Sequence[tuple[str, str, str]],
    *,
    profile: bool = False,
) -> tuple[dict[str, list[str]], dict[str, float], str]:
    """For each (label, method, path): the statements one request sends, in order (each one
    a round trip: pings, BEGIN and ROLLBACK included), and the in-process milliseconds per
    request of 200 requests, one at a time, untraced. With ``profile``, a cProfile of GET
    queued job."""
    from psycopg.pq import Trace

    from api.app import create_app  # the API's own imports stay out of the load runs

    settings = Settings(database_url=url, auth="off", heartbeat_seconds=10)
    # As create_app makes it: no pre-ping.
    engine = make_engine(url, pool_size=2, application_name="jobqueue-bench-trace", pre_ping=False)
    trace_file = tempfile.NamedTemporaryFile(prefix="jqbench-trace-", delete=False)  # noqa: SIM115
    connections: list[Any] = []
    tracing = [True]

    @event.listens_for(engine, "connect")
    def _trace(dbapi_conn: Any, record: Any) -> None:
        connections.append(dbapi_conn.pgconn)
        if tracing[0]:
            dbapi_conn.pgconn.trace(trace_file.fileno())
            dbapi_conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)

    names = _statement_names()
    found: dict[str, list[str]] = {}
    timings: dict[str, float] = {}
    profile_text = ""
    try:
        app = create_app(settings, engine=engine, background=False)
        client = app.test_client()
        calls: list[tuple[str, Callable[[], Any]]] = []
        for label, method, path in requests:
            if method == "POST":
                calls.append((label, lambda p=path: client.post(p, json={})))
            else:
                calls.append((label, lambda p=path: client.get(p)))
        for label, call in calls:
            for _ in range(8):  # warm: pool filled, statements prepared where psycopg does
                response = call()
                if response.status_code >= 300:
                    raise RuntimeError(f"{label}: {response.status_code} {response.data!r}")
            trace_file.flush()
            start = os.lseek(trace_file.fileno(), 0, os.SEEK_END)
            call()
            trace_file.flush()
            with open(trace_file.name, errors="replace") as f:
                found[label] = _round_trips_in(f.read(), start, names)
        tracing[0] = False
        for pgconn in connections:
            pgconn.untrace()
        for label, call in calls:
            for _ in range(20):
                call()
            t0 = time.perf_counter()
            for _ in range(200):
                call()
            timings[label] = (time.perf_counter() - t0) / 200 * 1000
            if profile and label == "GET queued job":
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(300):
                    call()
                prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
                profile_text = out.getvalue()
    finally:
        engine.dispose()
        trace_file.close()
        os.unlink(trace_file.name)
    return found, timings, profile_text


# -- the run -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    label: str
    method: str
    paths: list[str]


def scenarios(seeded: Seeded) -> list[Scenario]:
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


def parse_shape(raw: str) -> tuple[int, int]:
    workers, _, threads = raw.lower().partition("x")
    return int(workers), int(threads)


def run(args: argparse.Namespace) -> str:
    sizes = QUICK if args.quick else FULL
    if args.seconds:
        sizes = dataclasses.replace(sizes, seconds=args.seconds)
    shapes = [parse_shape(s) for s in args.shape] if args.shape else [DEFAULT_SHAPE]
    report = Report()
    began = time.perf_counter()
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="jqbench-api-", dir=tempfile.gettempdir()))
    generator_cls = Wrk if args.load_generator == "wrk" else PythonLoad
    if args.load_generator == "auto":
        generator_cls = Wrk if shutil.which("wrk") else PythonLoad
    generator = generator_cls(workdir, args.connections)
    token = secrets.token_urlsafe(24)
    servers: list[Gunicorn] = []

    def start(app: str, env: dict[str, str], cwd: Path, label: str, shape: tuple[int, int]):
        server = Gunicorn(
            app, workers=shape[0], threads=shape[1], env=env, cwd=cwd, workdir=workdir,
            label=label, access_log=args.access_log,
        )  # fmt: skip
        servers.append(server)
        server.wait_ready()
        return server

    def stop(server: Gunicorn) -> None:
        server.stop()
        servers.remove(server)

    try:
        with postgres_server(args.database_url) as server_url:
            dbs = Databases(server_url)
            try:
                log(f"seeding {sum(dataclasses.astuple(sizes)[3:]):,} jobs and one live worker")
                seeded = seed(dbs, sizes)
                with heartbeats(seeded.url):
                    _run_loaded(
                        args, sizes, shapes, seeded, generator, token, workdir, start, stop,
                        report,
                    )  # fmt: skip
                major, minor = divmod(dbs.server_version, 10000)
            finally:
                for server in list(servers):
                    server.stop()
                dbs.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    report.notes.append(
        f"PostgreSQL {major}.{minor}; {os.cpu_count()} CPUs shared by gunicorn, PostgreSQL and "
        f"the load generator; load average (1/5/15 min) "
        f"{'/'.join(f'{x:.1f}' for x in load_before)} before, "
        f"{'/'.join(f'{x:.1f}' for x in load_after)} after (other sessions use this machine); "
        f"{'quick' if args.quick else 'full'} run, {time.perf_counter() - began:.0f} s in all."
    )
    return report.render()


def _run_loaded(
    args: argparse.Namespace,
    sizes: Sizes,
    shapes: list[tuple[int, int]],
    seeded: Seeded,
    generator: Wrk | PythonLoad,
    token: str,
    workdir: Path,
    start: Callable[..., Gunicorn],
    stop: Callable[[Gunicorn], None],
    report: Report,
) -> None:
    all_scenarios = scenarios(seeded)
    get_queued = all_scenarios[0]

    def jobqueue_env() -> dict[str, str]:
        metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=workdir))
        return {
            **clean_env(),
            "DATABASE_URL": seeded.url,
            "JOBQUEUE_AUTH": "on",
            "JOBQUEUE_API_TOKENS": f"bench:operator:{token}",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),  # as `jobqueue api` sets it
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }

    # Round trips first (in-process, before the load changes anything).
    requests = [(s.label, s.method, s.paths[0]) for s in all_scenarios]
    trips, in_process, profile_text = round_trips(seeded.url, requests, profile=args.profile)

    # Which gunicorn shape?
    tried: list[tuple[tuple[int, int], Load]] = []
    if len(shapes) > 1:
        for shape in shapes:
            log(f"trying gunicorn {shape[0]}x{shape[1]} on {get_queued.label}")
            server = start("api:create_app()", jobqueue_env(), ROOT, "jobqueue", shape)
            try:
                load = measure(
                    generator, server, seeded.database, get_queued.method, get_queued.paths,
                    token, sizes.warmup, sizes.tune_seconds,
                )  # fmt: skip
            finally:
                stop(server)
            tried.append((shape, load))
        best = max(tried, key=lambda t: (t[1].errors == 0, t[1].rps))[0]
    else:
        best = shapes[0]
    shape_text = f"{best[0]}x{best[1]}"

    # The two one-job GETs and the baseline, in alternating rounds with both servers up,
    # so that a slow spell of this shared machine hits them alike; each is reported by
    # its median round. Then the other scenarios once (force-start changes the queue).
    (workdir / "jqbench_baseline_app.py").write_text(textwrap.dedent(BASELINE_APP))
    base_env = {
        **clean_env(),
        "BASELINE_DSN": libpq_conninfo(seeded.url),
        "PYTHONPATH": str(workdir),
    }
    one_job, others = all_scenarios[:2], all_scenarios[2:]
    rounds: dict[str, list[Load]] = {s.label: [] for s in one_job}
    base_rounds: list[Load] = []
    results: dict[str, Load] = {}
    server = start("api:create_app()", jobqueue_env(), ROOT, "jobqueue", best)
    baseline_server = start("jqbench_baseline_app:app", base_env, workdir, "baseline", best)
    try:
        for n in range(1, ROUNDS + 1):
            log(f"round {n}/{ROUNDS}, gunicorn {shape_text}, {sizes.seconds:.0f} s each")
            for scenario in one_job:
                log(f"    {scenario.label}")
                rounds[scenario.label].append(measure(
                    generator, server, seeded.database, scenario.method, scenario.paths, token,
                    sizes.warmup, sizes.seconds,
                ))  # fmt: skip
            log("    baseline GET")
            base_rounds.append(measure(
                generator, baseline_server, seeded.database, "GET",
                [f"/jobs/{i}" for i in seeded.queued_ids], "", sizes.warmup, sizes.seconds,
            ))  # fmt: skip
        for scenario in others:
            log(f"    {scenario.label}")
            results[scenario.label] = measure(
                generator, server, seeded.database, scenario.method, scenario.paths, token,
                sizes.warmup, sizes.seconds,
            )  # fmt: skip
    finally:
        stop(baseline_server)
        stop(server)
    results = {label: median_round(loads) for label, loads in rounds.items()} | results
    base = median_round(base_rounds)

    # -- the table -------------------------------------------------------------------------
    def rows(
        scenario: str, load: Load, statements: list[str], *, judged: bool, prefix: str = ""
    ) -> None:
        label = prefix + scenario
        one_job = scenario in (all_scenarios[0].label, all_scenarios[1].label)
        b = base if one_job else None
        judge = judged and one_job
        report.add(
            f"{label}: req/s",
            f"{load.rps:,.0f}",
            f"{b.rps:,.0f}" if b else "-",
            f"{load.rps / b.rps:.2f}x" if b else "",
            f">= {TARGET_RPS:.0f}" if one_job else "-",
            verdict(load.rps >= TARGET_RPS) if judge else "info",
        )
        report.add(
            f"{label}: p50",
            ms(load.p50),
            ms(b.p50) if b else "-",
            f"{load.p50 / b.p50:.2f}x" if b else "",
            "-",
            "info",
        )
        report.add(
            f"{label}: p99",
            ms(load.p99),
            ms(b.p99) if b else "-",
            f"{load.p99 / b.p99:.2f}x" if b else "",
            f"<= {TARGET_P99 * 1000:.0f} ms" if one_job else "-",
            verdict(load.p99 <= TARGET_P99) if judge else "info",
        )
        report.add(
            f"{label}: DB round trips / request",
            str(len(statements)),
            "1" if b else "-",
            f"{len(statements):.0f}x" if b else "",
            "-",
            "info",
        )
        if load.errors:
            report.add(f"{label}: errors (non-2xx or transport)", str(load.errors), "", "", "0",
                       "FAIL")  # fmt: skip

    for label, load in results.items():
        rows(label, load, trips[label], judged=True)
    for shape, load in tried:
        report.add(
            f"tuning: GET queued job, gunicorn {shape[0]}x{shape[1]}",
            f"{load.rps:,.0f} req/s, p99 {ms(load.p99)}",
            "",
            "",
            "-",
            "chosen" if shape == best else "info",
        )
    report.notes.append(
        f"gunicorn as `jobqueue api` runs it (--workers {best[0]} --threads {best[1]} "
        f"--worker-class gthread, access log {'on' if args.access_log else 'off'}"
        + (", shape chosen by req/s on GET queued job" if len(tried) > 1 else "")
        + "), auth on (one operator token), PROMETHEUS_MULTIPROC_DIR set as `jobqueue api` "
        "sets it. Load: "
        f"{generator.name}, {args.connections} keep-alive connections, closed loop, "
        f"{sizes.warmup:.0f} s warm-up + {sizes.seconds:.0f} s per scenario; the two one-job "
        f"GETs and the baseline in {ROUNDS} alternating rounds, each shown by its median round."
    )
    report.notes.append(
        "Seeded: "
        + ", ".join(f"{n} {s}" for s, n in sorted(seeded.counts.items()))
        + f"; one live worker (pool {POOL}, kind {KIND}, 8 GPUs). GET queued job cycles over "
        f"{len(seeded.queued_ids)} jobs from the middle of the {seeded.counts.get('queued', 0)}"
        f"-job queue; GET completed job over {len(seeded.completed_ids)}; force-start over the "
        f"{len(seeded.force_ids)} last queued jobs (forced once, then repeats, which are "
        "idempotent but still write an event)."
    )
    report.notes.append(
        "Baseline: a Flask app under the same gunicorn settings, psycopg connection per "
        "thread (autocommit), `SELECT * FROM jobs WHERE id = %s`, the row as JSON; it GETs "
        "the same queued jobs. jq/base = jobqueue / baseline."
    )
    for label, load in [
        *((f"tuning {shape[0]}x{shape[1]}", load) for shape, load in tried),
        *results.items(),
        ("baseline GET", base),
    ]:
        report.notes.append(f"{label}: {load.cpu_line()}.")
    for label, statements in trips.items():
        report.notes.append(
            f"{label}: {len(statements)} round trips: {', '.join(statements)}; in-process "
            f"(Flask test client, one at a time) {in_process[label]:.2f} ms/request."
        )
    if profile_text:
        report.notes.append("cProfile of 300 in-process GET queued job requests:\n" + profile_text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.api_bench",
        description="The REST API under gunicorn and HTTP load, beside a minimal Flask app.",
    )
    add_server_argument(parser)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument(
        "--shape",
        action="append",
        help="gunicorn WORKERSxTHREADS to try (repeatable; the best is kept; default: what "
        "`jobqueue api` runs on this machine)",
    )
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--seconds", type=float, help="measured seconds per scenario")
    parser.add_argument(
        "--load-generator", choices=("auto", "wrk", "python"), default="auto",
        help="auto: wrk when installed, else Python threads",
    )  # fmt: skip
    parser.add_argument(
        "--access-log", action="store_true", help="serve as `jobqueue api --access-log` does"
    )
    parser.add_argument(
        "--profile", action="store_true", help="add a cProfile of in-process GET queued job"
    )
    args = parser.parse_args(argv)
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
