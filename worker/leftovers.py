"""Job processes a previous run of this worker may have left behind.

The supervisor stops a job when its worker dies, so normally nothing is left;
but a worker started again with the same name makes sure: it kills every
process whose group it recorded and whose environment names that job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from pathlib import Path
from uuid import UUID

log = logging.getLogger(__name__)


class Leftovers:
    def __init__(self, directory: Path):
        self.directory = directory

    def remember(self, job_id: UUID, pgid: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"{job_id}.json").write_text(json.dumps({"pgid": pgid}))

    def forget(self, job_id: UUID) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{job_id}.json").unlink()

    def remove_all(self) -> int:
        """Kill what is left of the recorded jobs; returns how many groups had processes."""
        if not self.directory.is_dir():
            return 0
        groups: dict[int, str] = {}
        for path in self.directory.glob("*.json"):
            with contextlib.suppress(ValueError, KeyError, OSError):
                groups[int(json.loads(path.read_text())["pgid"])] = path.stem
            path.unlink(missing_ok=True)
        found = set()
        for pid, pgid in _processes():
            job_id = groups.get(pgid)
            if job_id is not None and _environ_names_job(pid, job_id):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                found.add(pgid)
        return len(found)


def _processes():
    """(pid, process group id) of every process we can see (Linux /proc)."""
    # The folder listing is closed before the scan, whatever the caller does with it.
    with os.scandir("/proc") as entries:
        pids = [e.name for e in entries if e.name.isdigit()]
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2:
            yield int(pid), int(fields[2])


def _environ_names_job(pid: int, job_id: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"JOBQUEUE_JOB_ID={job_id}".encode() in environ.split(b"\0")
