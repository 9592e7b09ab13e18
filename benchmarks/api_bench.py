"""The REST API under load, served by gunicorn as it is deployed, beside a minimal app.

Run ``python -m benchmarks.api_bench [--database-url URL] [--quick]``. In one run it:

1. seeds one database with jobs of every status (mostly finished, a few hundred queued,
   some held, running and paused) and one live worker whose heartbeat it keeps fresh
   (:mod:`benchmarks.api_seed`);
2. serves the API with the gunicorn command line of ``jobqueue api`` (its processes and
   threads; ``--access-log`` as ``jobqueue api --access-log``); with ``--shape``
   (repeatable) it first tries those shapes on GET of a queued job and keeps the fastest;
3. loads each scenario for a while after a short warm-up: GET of a queued job (the common
   case for a UI: it computes ``queue_position`` and ``waiting_reason``), GET of a completed
   job, GET of the newest 50 jobs, POST force-start of queued jobs;
4. serves, under the same gunicorn settings, a baseline Flask app that runs one
   ``SELECT * FROM jobs WHERE id = %s`` with psycopg and returns the row as JSON, and loads
   it the same way (:mod:`benchmarks.api_baseline`);
5. counts the database round trips of one request of each scenario (libpq's protocol
   trace, in-process, :mod:`benchmarks.harness.trace`), which is where the time of a read
   goes.

The load generator (:mod:`benchmarks.harness.load`) is ``wrk`` (``apt-get install wrk``)
with a small Lua script, else a Python one (threads with keep-alive ``http.client``
connections). Both are closed-loop: each connection sends its next request when the answer
to the last one arrived.

The database server comes from ``--database-url`` or ``JOBQUEUE_BENCH_DATABASE_URL``, else
an embedded PostgreSQL (:mod:`benchmarks.harness.databases`). Every server process and
database the run starts is stopped and dropped at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.api_baseline import BASELINE_APP_NAME, write_baseline_app
from benchmarks.api_seed import Population, Scenario, Seeded, heartbeats, scenarios, seed
from benchmarks.api_table import Measured, fill
from benchmarks.harness.cli import benchmark_parser
from benchmarks.harness.databases import benchmark_databases
from benchmarks.harness.load import Load, load_generator, measure, median_round
from benchmarks.harness.report import Report, Stopwatch, log
from benchmarks.harness.servers import ROOT, Gunicorn, GunicornServers, clean_env, root_pythonpath
from benchmarks.harness.trace import round_trips
from jobqueue.cli.serving import API_THREADS, default_api_processes


@dataclasses.dataclass(frozen=True)
class Sizes:
    seconds: float  # measured seconds per scenario
    warmup: float  # warm-up seconds before each
    tune_seconds: float  # measured seconds per gunicorn shape tried
    seeded: Population = dataclasses.field(default_factory=Population)


FULL = Sizes(6.0, 2.0, 4.0)
QUICK = Sizes(2.0, 1.0, 1.5)
#: gunicorn processes and threads of each.
Shape = tuple[int, int]
#: What `jobqueue api` runs on this machine.
DEFAULT_SHAPE: Shape = (default_api_processes(), API_THREADS)
#: Rounds of the one-job GETs and the baseline; each is reported by its median round.
ROUNDS = 5
JOBQUEUE_APP = "api:create_app()"


def parse_shape(raw: str) -> Shape:
    workers, _, threads = raw.lower().partition("x")
    return int(workers), int(threads)


class Run:
    """One run's servers, load generator and token, over the seeded database."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes, seeded: Seeded, workdir: Path):
        self.args = args
        self.sizes = sizes
        self.seeded = seeded
        self.workdir = workdir
        self.generator = load_generator(args.load_generator, workdir, args.connections)
        self.token = secrets.token_urlsafe(24)
        self.servers = GunicornServers(workdir, access_log=args.access_log)

    def jobqueue_env(self) -> dict[str, str]:
        metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=self.workdir))
        return {
            **clean_env("PROMETHEUS_MULTIPROC_DIR"),
            "DATABASE_URL": self.seeded.url,
            "JOBQUEUE_AUTH": "on",
            "JOBQUEUE_API_TOKENS": f"bench:operator:{self.token}",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),  # as `jobqueue api` sets it
            "PYTHONPATH": root_pythonpath(),
        }

    def start_jobqueue(self, shape: Shape) -> Gunicorn:
        return self.servers.start(JOBQUEUE_APP, self.jobqueue_env(), ROOT, "jobqueue", shape)

    def measure(
        self, server: Gunicorn, scenario: Scenario, seconds: float, *, token: str | None = None
    ) -> Load:
        """A warm-up and one measured run of ``scenario`` (with the operator token unless
        ``token`` says otherwise)."""
        return measure(
            self.generator, server, self.seeded.database, scenario.method, scenario.paths,
            self.token if token is None else token, self.sizes.warmup, seconds,
        )  # fmt: skip

    def choose_shape(
        self, shapes: list[Shape], scenario: Scenario
    ) -> tuple[Shape, list[tuple[Shape, Load]]]:
        """The shape of most req/s without errors, and each tried with its load (none
        tried when there is one shape)."""
        if len(shapes) == 1:
            return shapes[0], []
        tried: list[tuple[Shape, Load]] = []
        for shape in shapes:
            log(f"trying gunicorn {shape[0]}x{shape[1]} on {scenario.label}")
            server = self.start_jobqueue(shape)
            try:
                tried.append((shape, self.measure(server, scenario, self.sizes.tune_seconds)))
            finally:
                self.servers.stop(server)
        return max(tried, key=lambda t: (t[1].errors == 0, t[1].rps))[0], tried

    def measure_all(self, shapes: list[Shape]) -> Measured:
        all_scenarios = scenarios(self.seeded)
        # Round trips first (in-process, before the load changes anything).
        requests = [(s.label, s.method, s.paths[0]) for s in all_scenarios]
        profile = all_scenarios[0].label if self.args.profile else None
        trips, in_process, profile_text = round_trips(self.seeded.url, requests, profile=profile)
        best, tried = self.choose_shape(shapes, all_scenarios[0])

        # The two one-job GETs and the baseline, in alternating rounds with both servers up,
        # so that a slow spell of this shared machine hits them alike; each is reported by
        # its median round. Then the other scenarios once (force-start changes the queue).
        base_env = write_baseline_app(self.workdir, self.seeded.url)
        base_scenario = Scenario(
            "baseline GET", "GET", [f"/jobs/{i}" for i in self.seeded.queued_ids]
        )
        one_job, others = all_scenarios[:2], all_scenarios[2:]
        rounds: dict[str, list[Load]] = {s.label: [] for s in one_job}
        base_rounds: list[Load] = []
        results: dict[str, Load] = {}
        seconds = self.sizes.seconds
        server = self.start_jobqueue(best)
        baseline = self.servers.start(BASELINE_APP_NAME, base_env, self.workdir, "baseline", best)
        try:
            for n in range(1, ROUNDS + 1):
                log(f"round {n}/{ROUNDS}, gunicorn {best[0]}x{best[1]}, {seconds:.0f} s each")
                for scenario in one_job:
                    log(f"    {scenario.label}")
                    rounds[scenario.label].append(self.measure(server, scenario, seconds))
                log("    baseline GET")
                base_rounds.append(self.measure(baseline, base_scenario, seconds, token=""))
            for scenario in others:
                log(f"    {scenario.label}")
                results[scenario.label] = self.measure(server, scenario, seconds)
        finally:
            self.servers.stop(baseline)
            self.servers.stop(server)
        return Measured(
            results={label: median_round(loads) for label, loads in rounds.items()} | results,
            base=median_round(base_rounds),
            one_job=tuple(s.label for s in one_job),
            trips=trips,
            in_process=in_process,
            profile_text=profile_text,
            tried=tried,
            best=best,
            access_log=self.args.access_log,
            generator=self.generator.name,
            connections=self.args.connections,
            warmup=self.sizes.warmup,
            seconds=seconds,
            rounds=ROUNDS,
        )


def run(args: argparse.Namespace) -> str:
    sizes = QUICK if args.quick else FULL
    if args.seconds:
        sizes = dataclasses.replace(sizes, seconds=args.seconds)
    shapes = [parse_shape(s) for s in args.shape] if args.shape else [DEFAULT_SHAPE]
    report = Report()
    clock = Stopwatch()
    workdir = Path(tempfile.mkdtemp(prefix="jqbench-api-", dir=tempfile.gettempdir()))
    try:
        with benchmark_databases(args.database_url) as dbs:
            log(f"seeding {sizes.seeded.total:,} jobs and one live worker")
            seeded = seed(dbs, sizes.seeded)
            bench = Run(args, sizes, seeded, workdir)
            try:
                with heartbeats(seeded.url):
                    measured = bench.measure_all(shapes)
            finally:
                bench.servers.stop_all()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    fill(report, measured, seeded)
    report.notes.append(
        clock.machine_note(
            dbs.server_version,
            quick=args.quick,
            cpus_shared_by="gunicorn, PostgreSQL and the load generator",
        )
    )
    return report.render()


def main(argv: Sequence[str] | None = None) -> int:
    parser = benchmark_parser(
        "python -m benchmarks.api_bench",
        "The REST API under gunicorn and HTTP load, beside a minimal Flask app.",
        quick_help="short runs, for a smoke test",
    )
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
