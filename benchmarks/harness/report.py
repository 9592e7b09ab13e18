"""What a benchmark prints: progress lines on stderr while it runs, then one table on stdout
(each measurement beside its baseline, the ratio, the target and PASS/FAIL) with notes
under it, the last of which says how busy the machine was."""

from __future__ import annotations

import dataclasses
import os
import sys
import time


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


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

    def timing(
        self, what: str, value: float, base: float, target: str = "-", result: str = "info"
    ) -> None:
        """A row of two durations in seconds, shown in ms, and their ratio."""
        self.add(what, ms(value), ms(base), f"{value / base:.2f}x", target, result)

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


def postgres_version(server_version: int) -> str:
    """``PostgreSQL 15.20`` from libpq's server version number (150020)."""
    major, minor = divmod(server_version, 10000)
    return f"PostgreSQL {major}.{minor}"


@dataclasses.dataclass
class Stopwatch:
    """When a run began and the machine's load average then, for the run's last note: other
    sessions share the machine, and the reader should see how much."""

    began: float = dataclasses.field(default_factory=time.perf_counter)
    load_before: tuple[float, float, float] = dataclasses.field(default_factory=os.getloadavg)

    def seconds(self) -> float:
        return time.perf_counter() - self.began

    def machine_note(self, server_version: int, *, quick: bool, cpus_shared_by: str = "") -> str:
        """PostgreSQL's version, the CPUs (``cpus_shared_by``: by whom), the 1/5/15-minute
        load averages before and now, the sizes and the time the run took."""
        shared = f" shared by {cpus_shared_by}" if cpus_shared_by else ""
        return (
            f"{postgres_version(server_version)}; {os.cpu_count()} CPUs{shared}; load average "
            f"(1/5/15 min) {_loads(self.load_before)} before, {_loads(os.getloadavg())} after "
            f"(other sessions use this machine); {'quick' if quick else 'full'} run, "
            f"{self.seconds():.0f} s in all."
        )


def _loads(averages: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.1f}" for x in averages)
