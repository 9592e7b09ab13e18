"""CPU seconds used so far by processes of this machine, read from ``/proc``.

Rates on a shared machine move with the background load; the CPU a job or a request costs
moves much less, so the benchmarks print it beside their rates.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def _processes() -> Iterator[tuple[Path, list[str]]]:
    """Each live process's /proc folder and the fields of its ``stat`` after the name."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield entry, (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue


def _ticks(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])  # utime + stime


def server_cpu(database: str) -> float | None:
    """CPU seconds used so far by the server processes serving ``database``, when the server
    runs on this machine (its backends' /proc entries are readable); else None."""
    total, found = 0, False
    marker = f" {database} ".encode()
    for entry, fields in _processes():
        try:
            if marker not in (entry / "cmdline").read_bytes().replace(b"\0", b" ") + b" ":
                continue
        except OSError:
            continue
        total += _ticks(fields)
        found = True
    return total / os.sysconf("SC_CLK_TCK") if found else None


def group_cpu(pgid: int) -> dict[int, float]:
    """CPU seconds used so far by each live process of the process group ``pgid``."""
    tick = os.sysconf("SC_CLK_TCK")
    return {
        int(entry.name): _ticks(fields) / tick
        for entry, fields in _processes()
        if int(fields[2]) == pgid
    }
