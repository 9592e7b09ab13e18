"""How soon a job's process starts once it may: the worker daemon against plain process starts.

Run ``python -m benchmarks.worker_bench [--database-url URL] [--quick]``. It starts the worker
daemon as it is deployed (``python -m worker --virtual-gpus 2 --kinds FILE``) on a kinds file
whose one kind runs a tiny Python job: its first line takes ``time.time()``, which it prints
and writes to a file named after its job id; then it exits. Every measurement runs from just
before the call that lets the job start to that time (:mod:`benchmarks.worker_starts`):

(a) force-start: a held job (``hold``) is force-started through ``JobQueue.force_start``
    while the worker is idle with both GPU slots free;
(b) submit: ``JobQueue.submit`` of a job to the idle worker;
(c) baselines: the same job started directly with ``subprocess.Popen``, and under the
    worker's per-job supervisor (``worker.process.JobProcess``: ``python -m worker.supervise``
    and then the job), with no database.

The four run interleaved, one of each per round, each after the previous job ended. For (a)
and (b) the job's ``started_at`` (the claim, database clock) splits the time into the
queue's part and the process start. The database server comes from ``--database-url`` or
``JOBQUEUE_BENCH_DATABASE_URL``, else an embedded PostgreSQL
(:mod:`benchmarks.harness.databases`); the worker, its jobs and the database are always
stopped and dropped at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.harness.cli import benchmark_parser
from benchmarks.harness.databases import benchmark_databases
from benchmarks.harness.report import Report, Stopwatch, log, ms, verdict
from benchmarks.harness.stats import percentile
from benchmarks.worker_starts import Bench

TARGET_FORCE_P50 = 0.100


@dataclasses.dataclass(frozen=True)
class Sizes:
    rounds: int  # timed rounds (one of each measurement per round)
    warmup: int  # untimed rounds first


FULL = Sizes(50, 3)
QUICK = Sizes(10, 2)


def run(args: argparse.Namespace) -> str:
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes = dataclasses.replace(sizes, rounds=args.rounds)
    report = Report()
    clock = Stopwatch()
    with (
        benchmark_databases(args.database_url) as dbs,
        tempfile.TemporaryDirectory(prefix="jqbench-worker-") as tmp,
    ):
        bench = Bench(dbs.jobqueue(), Path(tmp))
        try:
            log("starting the worker: python -m worker --virtual-gpus 2")
            bench.start_worker()
            steps: list[tuple[str, Callable[[int, bool], None]]] = [
                ("force", lambda n, t: bench.through_queue("force", n, t, forced=True)),
                ("submit", lambda n, t: bench.through_queue("submit", n, t, forced=False)),
                ("raw", bench.raw),
                ("chain", bench.supervised),
                ("lean", bench.supervised_lean),
            ]
            log(f"{sizes.warmup} warm-up + {sizes.rounds} timed rounds of {len(steps)} starts each")
            for n in range(sizes.warmup + sizes.rounds):
                shift = n % len(steps)
                for _, step in steps[shift:] + steps[:shift]:
                    step(n, n >= sizes.warmup)
                    time.sleep(0.05)
            agree, total = bench.logs_agree()
        finally:
            bench.close()

    s = bench.samples
    p = percentile
    raw, chain = s["raw"], s["chain"]
    for key, what in (("force", "(a) force-start -> job started"),
                      ("submit", "(b) submit -> job started")):  # fmt: skip
        for q in (50, 99):
            value = p(s[key], q)
            is_target = key == "force" and q == 50
            report.timing(
                f"{what}, p{q} (N={len(s[key])})",
                value,
                p(raw, q),
                f"<= {TARGET_FORCE_P50 * 1000:.0f} ms" if is_target else "-",
                verdict(value <= TARGET_FORCE_P50) if is_target else "info",
            )
    for key, what in (
        ("chain", "(c) supervisor chain -> job started"),
        ("lean", "(c) what-if: supervisor as python -I -S supervise.py"),
    ):
        for q in (50, 99):
            report.timing(f"{what}, p{q}", p(s[key], q), p(raw, q))
    for key, what in (("force", "(a)"), ("submit", "(b)")):
        report.add(
            f"{what} split p50: call returned | claimed | claim -> job",
            " | ".join(ms(p(s[f"{key}:{part}"], 50)) for part in ("call", "claimed", "spawn")),
            f"- | - | {ms(p(chain, 50))}",
            f"{p(s[f'{key}:spawn'], 50) / p(chain, 50):.2f}x (claim -> job)",
            "-",
            "info",
        )
    report.notes.append(
        "Baseline: the same job started with subprocess.Popen([python, tiny_job.py]) — the "
        "raw cost of a Python process start; jq/base = jobqueue / baseline. (c) is the "
        "worker's own JobProcess (python -m worker.supervise, then the job) with no database."
    )
    report.notes.append(
        "Split: call returned = JobQueue.force_start/submit returned (committed); claimed = "
        "the job's started_at (database clock, same host) after the call began; claim -> job "
        "= from started_at to the job's first line (the worker preparing the job's files, "
        "the supervisor and the job starting); its baseline is (c)."
    )
    report.notes.append(
        f"Worker: python -m worker --virtual-gpus 2 (4 slots), woken by NOTIFY, poll 2 s; "
        f"jobs of 1 GPU, each after the previous ended (a free GPU slot, an idle worker); "
        f"{sizes.rounds} timed rounds after {sizes.warmup} warm-up, the five starts "
        f"interleaved in rotating order. Stored log lines agree with the job's own timestamp "
        f"file for {agree}/{total} queue jobs."
    )
    report.notes.append(clock.machine_note(dbs.server_version, quick=args.quick))
    return report.render()


def main(argv: Sequence[str] | None = None) -> int:
    parser = benchmark_parser(
        "python -m benchmarks.worker_bench",
        "Force-start and submit to job start on the worker daemon, beside plain process starts.",
        quick_help="fewer rounds, for a smoke test",
    )
    parser.add_argument("--rounds", type=int, help="timed rounds")
    args = parser.parse_args(argv)
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
