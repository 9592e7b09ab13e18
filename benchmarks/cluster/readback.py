"""Reading a real replay back: what the database recorded, as a Schedule in trace time.

Each job's created, started and finished times come from the database's own clock;
``(t - t0) * compression`` turns them into trace seconds. Every job must have
completed after exactly one claim. The notes say what the system itself added
(overhead per job, submit lag, claim calls).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

from benchmarks.cluster.schedule import Placement
from benchmarks.cluster.trace import TraceJob
from benchmarks.harness.stats import percentile

KIND = "trace"

_READ_BACK = text("""
    SELECT j.created_at, j.started_at, j.finished_at, j.worker_name, j.status::text AS status,
           j.config, j.attempt, j.forced_at,
           (SELECT count(*) FROM job_events e
            WHERE e.job_id = j.id AND e.action = 'claim') AS claims
    FROM jobs j
    WHERE j.kind = :kind
""")


class ReplayError(RuntimeError):
    """The replay did not end as it must: a timeout, or a job not run exactly once."""


def read_back(reader: Engine) -> list[dict[str, Any]]:
    with reader.connect() as conn:
        return [dict(r) for r in conn.execute(_READ_BACK, {"kind": KIND}).mappings()]


@dataclasses.dataclass(frozen=True)
class _Real:
    """One job's times in real seconds after the start instant (the database clock)."""

    created: float
    started: float
    finished: float
    forced: float | None


def placements_of(
    jobs: Sequence[TraceJob], rows: list[dict[str, Any]], t0: datetime, compression: float
) -> tuple[list[Placement], dict[int, _Real]]:
    """Each job's placement in trace seconds, after checking it ran exactly once."""
    by_index = {j.index: j for j in jobs}
    seen: dict[int, dict[str, Any]] = {}
    problems: list[str] = []
    for row in rows:
        index = int(row["config"]["trace_index"])
        if index in seen or index not in by_index:
            problems.append(f"job {index}: submitted more than once or not in the trace")
            continue
        seen[index] = row
        if row["status"] != "completed":
            problems.append(f"job {index}: {row['status']}, not completed")
        elif row["claims"] != 1 or row["attempt"] != 1:
            problems.append(
                f"job {index}: claimed {row['claims']} times (attempt {row['attempt']}), "
                "not exactly once"
            )
    missing = sorted(set(by_index) - set(seen))
    if missing:
        problems.append(f"jobs {missing[:10]} are not in the database")
    if problems:
        raise ReplayError(
            f"{len(problems)} jobs did not run exactly once: " + "; ".join(problems[:10])
        )

    def real(t: datetime | None) -> float | None:
        return None if t is None else (t - t0).total_seconds()

    placements: list[Placement] = []
    times: dict[int, _Real] = {}
    for index in sorted(seen):
        row = seen[index]
        r = _Real(real(row["created_at"]), real(row["started_at"]), real(row["finished_at"]),
                  real(row["forced_at"]))  # fmt: skip
        times[index] = r
        placements.append(
            Placement(
                job=index,
                host=int(row["worker_name"].split("-")[1]),
                start_s=r.started * compression,
                end_s=r.finished * compression,
            )
        )
    return placements, times


def notes_of(
    jobs: Sequence[TraceJob],
    real: dict[int, _Real],
    submitter: Any,
    claim_calls: list[tuple[int, float, int]],
    *,
    wake: str,
    compression: float,
    poll_trace_s: float,
    poll_real: float,
    wall: float,
) -> list[str]:
    by_index = {j.index: j for j in jobs}
    overhead = [
        (r.finished - r.started) - by_index[i].duration_s / compression for i, r in real.items()
    ]
    lag = [r.created - by_index[i].submit_s / compression for i, r in real.items()]
    ms = [m for _, m, _ in claim_calls]
    empty = sum(1 for _, _, n in claim_calls if n == 0)
    notes = [
        f"compression {compression:g} trace s per real s; wall {wall:.1f} s real "
        f"({wall * compression:.0f} trace s)",
        (
            f"poll {poll_real:.3f} s real = {poll_trace_s:g} s trace (hosts also wake on NOTIFY)"
            if wake == "notify"
            else "hosts woken in index order by one dispatcher (no polls)"
        ),
        f"median overhead per job (run time minus compressed duration) "
        f"{statistics.median(overhead) * 1000:.1f} ms real, max {max(overhead) * 1000:.1f} ms",
        f"median lag from scheduled submit to created_at {statistics.median(lag) * 1000:.1f} ms "
        f"real, max {max(lag) * 1000:.1f} ms",
    ]
    if ms:
        notes.append(
            f"{len(ms)} claim calls for {len(jobs)} jobs ({empty} claimed nothing): "
            f"p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
            f"max {max(ms):.2f} ms real"
        )
    if submitter is not None:
        for index in sorted(submitter.forced_at):
            r = real[index]
            refused = submitter.force_refused.get(index)
            forced = r.forced if r.forced is not None else submitter.forced_at[index]
            notes.append(
                f"job {index} submitted at {r.created * compression:.2f} trace s, "
                + (
                    f"force-start refused ({refused})"
                    if refused
                    else f"forced at {forced * compression:.2f}"
                )
                + f", started at {r.started * compression:.2f}"
            )
    return notes
