"""How busy, how fast and how fair jobqueue keeps a shared GPU cluster, on a real trace.

    python -m benchmarks.cluster_bench [--quick] [--database-url URL] [--trace FILE]

A window of a cluster trace (``submit_s, team, gpus, duration_s``) is replayed
through jobqueue's real claim path: one claimer per virtual host of 8 GPUs
against a real PostgreSQL, each job sleeping its compressed duration and
finishing through the fenced finish. The same window runs in an in-memory
simulator under reference policies (strict FIFO, first fit, EASY backfill) and
under a twin of jobqueue's claim loop; every figure is computed by one metrics
module from each run's schedule. The real run must agree with its twin: that
checks the harness. See benchmarks/README.md.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.cluster import plots, trace
from benchmarks.cluster.metrics import measure
from benchmarks.cluster.replay import replay
from benchmarks.cluster.schedule import Cluster, Schedule
from benchmarks.cluster.simulate import simulate
from benchmarks.cluster.table import agreement, claim_table, duration, policy_table, team_table
from benchmarks.harness.cli import benchmark_parser
from benchmarks.harness.databases import benchmark_databases
from benchmarks.harness.report import Stopwatch, log

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TRACE = REPO.parent / "shared" / "traces" / "philly-gavel-seed0.csv"
REFERENCES = ("fifo", "first-fit", "easy")


@dataclasses.dataclass(frozen=True)
class Sizes:
    hosts: int
    start_day: float  # where the window of arrivals begins in the trace
    days: float  # how long it is, before its arrivals are stretched to the load
    max_hours: float  # run times capped here, as a cluster's time limit would
    load: float  # offered load the arrivals are stretched (or packed) to
    forced: int  # jobs force-started at their submit
    compression: float  # trace seconds per real second
    poll_trace_s: float  # the claimers' poll interval, in trace seconds


# Compressions that divide an hour, so that the jobs' limits (whole hours) are whole real
# seconds in the real replay, as its twin plans them.
FULL = Sizes(hosts=8, start_day=30, days=2, max_hours=24, load=1.0, forced=5,
             compression=1800, poll_trace_s=400)  # fmt: skip
QUICK = Sizes(hosts=8, start_day=30, days=1, max_hours=12, load=1.0, forced=3,
              compression=3600, poll_trace_s=400)  # fmt: skip


def choose_jobs(args, sizes: Sizes) -> tuple[list[trace.TraceJob], str]:
    """The window to replay (with time limits unless --no-limits), and a sentence saying
    what it is."""
    jobs, what = _window_of(args, sizes)
    if args.no_limits:
        return jobs, what + "; no time limits (planners see the true run times)"
    # Limits in whole real seconds: what the real replay submits (max_runtime_seconds).
    jobs = trace.with_limit_resolution(trace.with_limits(jobs, seed=args.seed), sizes.compression)
    over = sum(j.gpus * j.limit_s for j in jobs) / sum(j.gpus * j.duration_s for j in jobs)
    return jobs, what + (
        f"; time limits: run time × U[1, 3] rounded up to the hour (seed {args.seed}; "
        f"{over:.2f}× the GPU time asked for)"
    )


def _window_of(args, sizes: Sizes) -> tuple[list[trace.TraceJob], str]:
    gpus = sizes.hosts * 8
    if args.synthetic:
        jobs = trace.synthetic(args.synthetic, gpus_total=gpus, load=sizes.load, seed=args.seed)
        return trace.with_forced(jobs, sizes.forced, seed=args.seed), (
            f"{len(jobs)} synthetic jobs (seed {args.seed}), offered load {sizes.load:.2f}"
        )
    path = Path(args.trace or DEFAULT_TRACE)
    if not path.is_file():
        raise SystemExit(f"no trace at {path}: give --trace FILE or --synthetic N")
    everything = trace.fits_a_host(trace.read_trace(path))
    jobs = trace.window(everything, start_s=sizes.start_day * 86400, length_s=sizes.days * 86400,
                        max_duration_s=sizes.max_hours * 3600)  # fmt: skip
    raw_load = trace.offered_load(jobs, gpus)
    jobs = trace.with_forced(trace.stretch_to_load(jobs, gpus, sizes.load), sizes.forced,
                             seed=args.seed)  # fmt: skip
    teams = len({j.team for j in jobs})
    return jobs, (
        f"{path.name}: {len(jobs)} jobs of {teams} teams submitted from day {sizes.start_day:g} "
        f"for {sizes.days:g} days, run times capped at {sizes.max_hours:g} h; arrivals scaled "
        f"×{raw_load / sizes.load:.2f} to an offered load of {sizes.load:.2f} "
        f"(it was {raw_load:.2f} on {gpus} GPUs); {sizes.forced} jobs force-started at submit"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = benchmark_parser(
        "python -m benchmarks.cluster_bench",
        "Replay a GPU-cluster trace through jobqueue and beside reference policies.",
        quick_help="a one-day window, compressed 4000×: about a minute",
    )
    parser.add_argument("--trace", help=f"a CSV trace (default: {DEFAULT_TRACE})")
    parser.add_argument("--synthetic", type=int, metavar="N", help="N synthetic jobs instead")
    parser.add_argument("--hosts", type=int, help="virtual hosts of 8 GPUs (default 8)")
    parser.add_argument("--start-day", type=float, help="the window's first day in the trace")
    parser.add_argument("--days", type=float, help="the window's length in days")
    parser.add_argument("--load", type=float, help="offered load to scale arrivals to")
    parser.add_argument("--compression", type=float, help="trace seconds per real second")
    parser.add_argument("--seed", type=int, default=0, help="for forced jobs and synthetic traces")
    parser.add_argument("--sim-only", action="store_true", help="the simulated policies only")
    parser.add_argument("--no-limits", action="store_true",
                        help="no time limits: planners see the true run times")  # fmt: skip
    parser.add_argument(
        "--wake",
        choices=("ordered", "notify"),
        default="ordered",
        help="the real run's hosts woken in index order (deterministic, checked "
        "against its twin) or by NOTIFY, racing as deployed (default ordered)",
    )
    parser.add_argument("--plots", default=str(REPO / "benchmarks" / "results"),
                        help="folder for the PNG plots ('' for none)")  # fmt: skip
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    overrides = {
        "hosts": args.hosts, "start_day": args.start_day, "days": args.days, "load": args.load,
        "compression": args.compression,
    }  # fmt: skip
    sizes = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    cluster = Cluster(sizes.hosts)
    jobs, what = choose_jobs(args, sizes)
    clock = Stopwatch()

    schedules: list[Schedule] = []
    runs = [(p, p, "random", True) for p in REFERENCES]
    # The twin without fair share tells what the reservations do from what fairness costs.
    runs += [("jobqueue", "jobqueue (sim, ordered, no fair share)", "ordered", False),
             ("jobqueue", "jobqueue (sim)", "random", True),
             ("jobqueue", "jobqueue (sim, ordered)", "ordered", True)]  # fmt: skip
    for policy, label, wake, fair in runs:
        log(f"simulating {label}")
        schedule = simulate(jobs, cluster, policy, poll_trace_s=sizes.poll_trace_s, wake=wake,
                            seed=args.seed, fair_share=fair)  # fmt: skip
        schedule.policy = label
        schedules.append(schedule)
    server_version = None
    if not args.sim_only:
        span = max(j.submit_s + j.duration_s for j in jobs) / sizes.compression
        log(f"replaying {len(jobs)} jobs on {cluster.hosts} hosts (about {span:.0f} s or more)")
        with benchmark_databases(args.database_url) as dbs:
            server_version = dbs.server_version
            real = replay(jobs, cluster, dbs.jobqueue(), compression=sizes.compression,
                          poll_trace_s=sizes.poll_trace_s, wake=args.wake, log=log)  # fmt: skip
        real.policy = f"jobqueue (real, {args.wake})"
        schedules.append(real)
    results = [measure(s) for s in schedules]

    print(f"Cluster: {cluster.hosts} hosts × 8 GPUs = {cluster.gpus} GPUs. Window: {what}.")
    print("All times are trace time.\n")
    print(policy_table(results))
    print("\nTeam GPU time while jobs wait, as a share of its max-min fair share:\n")
    print(team_table(results))
    if not args.sim_only:
        # The ordered run is deterministic and must match its twin; a NOTIFY race need not.
        real_metrics = results[-1]
        twin_metrics = results[-2] if args.wake == "ordered" else results[-3]
        print("\njobqueue's claim call, real milliseconds, by queue depth:\n")
        print(claim_table(real_metrics))
        print()
        print(agreement(real_metrics, twin_metrics))
        for note in schedules[-1].notes:
            print(note)
    print(
        f"Simulated policies place a job on the host it fills most (best fit); jobqueue's hosts "
        f"claim for themselves (on submit, on their own job's end, every "
        f"{duration(sizes.poll_trace_s)} of trace time). Bounded slowdown: "
        f"max(1, (wait + run) / max(run, 10 s))."
    )
    if args.plots:
        if plots.available():
            written = plots.write_all(schedules, results, Path(args.plots))
            print("Plots: " + ", ".join(str(p.relative_to(REPO)) if p.is_relative_to(REPO)
                                        else str(p) for p in written))  # fmt: skip
        else:
            print("Plots: none (pip install -e '.[bench]' for matplotlib).")
    if server_version is not None:
        shared_by = "the claimers, PostgreSQL and the submitter"
        print(clock.machine_note(server_version, quick=args.quick, cpus_shared_by=shared_by))
    return 0


if __name__ == "__main__":
    sys.exit(main())
