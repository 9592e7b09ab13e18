"""jobqueue against a hand-written psycopg 3 SKIP LOCKED loop, on a real PostgreSQL.

Run ``python -m benchmarks.queue_bench [--database-url URL] [--quick]``. In one run it
measures, each beside the same measurement of a minimal baseline:

1. claim+finish throughput with N concurrent claimers over a queue of jobs
   (:mod:`benchmarks.queue_throughput`);
2. pickup latency from a submit's commit to the claim by an idle claimer woken by NOTIFY
   (:mod:`benchmarks.queue_pickup`);
3. single claim+finish latency with a backlog of finished and queued rows vs a near-empty
   table (:mod:`benchmarks.queue_backlog`);
4. submit, claim+finish and the GET of the newest queued job with a deep queue vs a shallow
   one (:mod:`benchmarks.queue_depth`; jobqueue against itself).

The server comes from ``--database-url`` or ``JOBQUEUE_BENCH_DATABASE_URL`` (a maintenance
database where ``CREATE DATABASE`` may run), else an embedded PostgreSQL under the temporary
folder. The benchmark creates its own databases (jobqueue's migrated with alembic, the
baseline's with one minimal table per measurement) and drops them at the end
(:mod:`benchmarks.harness.databases`).

The baseline (:mod:`benchmarks.queue_common`) uses its own minimal table ``(id bigserial,
status text, payload jsonb, timestamps)`` with a partial index on ``id WHERE status =
'queued'``; it writes no events and fires no trigger, so it is a floor, not a competitor.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence

from benchmarks.harness.cli import benchmark_parser
from benchmarks.harness.databases import Databases, benchmark_databases
from benchmarks.harness.report import Report, Stopwatch, postgres_version
from benchmarks.queue_backlog import bench_backlog
from benchmarks.queue_common import FULL, QUICK, Sizes
from benchmarks.queue_depth import bench_depth
from benchmarks.queue_pickup import bench_pickup
from benchmarks.queue_throughput import bench_throughput

BENCHES: dict[str, Callable[[Databases, Sizes, Report], None]] = {
    "throughput": bench_throughput,
    "pickup": bench_pickup,
    "backlog": bench_backlog,
    "depth": bench_depth,
}
#: The flags that override one of the sizes.
SIZE_FLAGS = (
    "jobs",
    "claimers",
    "slots",
    "rounds",
    "pickup",
    "finished",
    "queued",
    "cycles",
    "deep_queued",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = benchmark_parser(
        "python -m benchmarks.queue_bench",
        "jobqueue vs a minimal psycopg SKIP LOCKED loop on a real PostgreSQL.",
        quick_help="smaller sizes for a smoke run",
    )
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
    parser.add_argument("--deep-queued", type=int, help="(4) queued jobs of the deep queue")
    args = parser.parse_args(argv)

    overrides = {k: getattr(args, k) for k in SIZE_FLAGS if getattr(args, k) is not None}
    sizes = dataclasses.replace(QUICK if args.quick else FULL, **overrides)
    chosen = args.only or list(BENCHES)

    report = Report()
    report.notes.append(
        "Baseline: its own minimal table (id bigserial, status text, payload jsonb, timestamps) "
        "with a partial index on id WHERE status = 'queued'; claim = SELECT id … ORDER BY id "
        "LIMIT 1 FOR UPDATE SKIP LOCKED + UPDATE running + COMMIT; finish = UPDATE done + "
        "COMMIT; no events, no trigger. jq/base = jobqueue / baseline."
    )
    clock = Stopwatch()
    with benchmark_databases(args.database_url) as dbs:
        for name in chosen:
            BENCHES[name](dbs, sizes, report)
    report.notes.append(
        f"{postgres_version(dbs.server_version)}, {os.cpu_count()} CPUs (client and server "
        f"share them), load average {clock.load_before[0]:.1f} before / "
        f"{os.getloadavg()[0]:.1f} after; {'quick' if args.quick else 'full'} sizes, "
        f"{clock.seconds():.0f} s in all."
    )
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
