"""The API benchmark's table and notes, from what :mod:`benchmarks.api_bench` measured."""

from __future__ import annotations

import dataclasses

from benchmarks.api_seed import Seeded
from benchmarks.harness.jobs import KIND, POOL
from benchmarks.harness.load import Load
from benchmarks.harness.report import Report, ms, verdict

TARGET_RPS = 800.0
TARGET_P99 = 0.030


@dataclasses.dataclass
class Measured:
    """Everything one run measured, and how."""

    results: dict[str, Load]  # by scenario; the one-job GETs by their median round
    base: Load  # the baseline's median round
    one_job: tuple[str, ...]  # the scenarios compared with the baseline and judged
    trips: dict[str, list[str]]  # the statements of one request, by scenario
    in_process: dict[str, float]  # ms per request through Flask's test client
    profile_text: str
    tried: list[tuple[tuple[int, int], Load]]  # gunicorn shapes tried, when several
    best: tuple[int, int]  # the shape measured
    access_log: bool
    generator: str
    connections: int
    warmup: float
    seconds: float
    rounds: int


def add_rows(report: Report, label: str, load: Load, statements: list[str], b: Load | None) -> None:
    """A scenario's rows: req/s, p50, p99, round trips; beside the baseline ``b`` and judged
    against the targets when it is one of the one-job GETs."""
    report.add(
        f"{label}: req/s",
        f"{load.rps:,.0f}",
        f"{b.rps:,.0f}" if b else "-",
        f"{load.rps / b.rps:.2f}x" if b else "",
        f">= {TARGET_RPS:.0f}" if b else "-",
        verdict(load.rps >= TARGET_RPS) if b else "info",
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
        f"<= {TARGET_P99 * 1000:.0f} ms" if b else "-",
        verdict(load.p99 <= TARGET_P99) if b else "info",
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


def fill(report: Report, m: Measured, seeded: Seeded) -> None:
    """The table's rows and the notes under it."""
    for label, load in m.results.items():
        add_rows(report, label, load, m.trips[label], m.base if label in m.one_job else None)
    for shape, load in m.tried:
        report.add(
            f"tuning: GET queued job, gunicorn {shape[0]}x{shape[1]}",
            f"{load.rps:,.0f} req/s, p99 {ms(load.p99)}",
            "",
            "",
            "-",
            "chosen" if shape == m.best else "info",
        )
    report.notes.append(
        f"gunicorn as `jobqueue api` runs it (--workers {m.best[0]} --threads {m.best[1]} "
        f"--worker-class gthread, access log {'on' if m.access_log else 'off'}"
        + (", shape chosen by req/s on GET queued job" if len(m.tried) > 1 else "")
        + "), auth on (one operator token), PROMETHEUS_MULTIPROC_DIR set as `jobqueue api` "
        "sets it. Load: "
        f"{m.generator}, {m.connections} keep-alive connections, closed loop, "
        f"{m.warmup:.0f} s warm-up + {m.seconds:.0f} s per scenario; the two one-job "
        f"GETs and the baseline in {m.rounds} alternating rounds, each shown by its median round."
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
        *((f"tuning {shape[0]}x{shape[1]}", load) for shape, load in m.tried),
        *m.results.items(),
        ("baseline GET", m.base),
    ]:
        report.notes.append(f"{label}: {load.cpu_line()}.")
    for label, statements in m.trips.items():
        report.notes.append(
            f"{label}: {len(statements)} round trips: {', '.join(statements)}; in-process "
            f"(Flask test client, one at a time) {m.in_process[label]:.2f} ms/request."
        )
    if m.profile_text:
        report.notes.append(
            "cProfile of 300 in-process GET queued job requests:\n" + m.profile_text
        )
