"""One job's processes, from the worker's side: start, signal, read, wait.

The job runs under a per-job supervisor (:mod:`worker.supervise`) in its own
process group. This module speaks the supervisor's small protocol and turns
what the job prints into log lines and reports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from jobqueue.outcomes import Exit, StopCause, stop_rank
from worker import supervise

log = logging.getLogger(__name__)

#: The supervisor uses only the standard library, so it starts as a plain script in
#: isolated mode without site-packages: that saves most of an interpreter start on the
#: way from claim to job.
SUPERVISOR = (sys.executable, "-I", "-S", str(Path(supervise.__file__)))

#: Called with each line the job prints: (stream, text).
LineSink = Callable[[str, str], None]


class JobProcess:
    """The supervisor and the job under it."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str | None,
        grace_seconds: float,
        lease_seconds: float,
        on_line: LineSink,
        on_started: Callable[[int], None] | None = None,
    ):
        self.grace_seconds = grace_seconds
        self.on_line = on_line
        self.on_started = on_started
        self.stop_cause: StopCause | None = None
        self.job_pid: int | None = None
        self._lock = threading.Lock()
        self._outcome: dict[str, Any] | None = None
        self._done = threading.Event()
        self._killed = False
        spec = {
            "argv": argv,
            "env": env,
            "cwd": cwd,
            "grace_seconds": grace_seconds,
            "lease_seconds": lease_seconds,
        }
        status_read, status_write = os.pipe()
        try:
            self.supervisor = subprocess.Popen(
                [*SUPERVISOR, "--status-fd", str(status_write)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(status_write,),
                env={**os.environ, "JOBQUEUE_SUPERVISOR_SPEC": json.dumps(spec)},
                start_new_session=True,  # terminal signals are for the worker, not its jobs
            )
        finally:
            os.close(status_write)
        self._readers = [
            threading.Thread(target=self._read, args=(self.supervisor.stdout, "stdout"),
                             daemon=True),
            threading.Thread(target=self._read, args=(self.supervisor.stderr, "stderr"),
                             daemon=True),
        ]  # fmt: skip
        for reader in self._readers:
            reader.start()
        self._status = threading.Thread(
            target=self._read_status, args=(os.fdopen(status_read, "r"),), daemon=True
        )
        self._status.start()

    # -- control -----------------------------------------------------------------

    def lease(self, seconds: float) -> None:
        """The lease was renewed: the job may run this many more seconds."""
        self._send(f"lease {max(seconds, 0.0):.3f}")

    def stop(self, cause: StopCause, *, kill: bool = False) -> None:
        """Ask the job to checkpoint and stop (SIGTERM, grace, SIGKILL), or kill it now.

        A stronger cause replaces a weaker one (:func:`jobqueue.outcomes.stop_rank`:
        cancel over pause over shutdown); the job is signalled only once.
        """
        with self._lock:
            first = self.stop_cause is None
            if self.stop_cause is None or stop_rank(cause) > stop_rank(self.stop_cause):
                self.stop_cause = cause
            if kill and not self._killed:
                self._killed = True
                self._send("kill")
            elif first:
                self._send(f"term {self.grace_seconds:.3f}")

    def _send(self, command: str) -> None:
        try:
            assert self.supervisor.stdin is not None
            self.supervisor.stdin.write((command + "\n").encode())
            self.supervisor.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the supervisor already ended

    # -- ending ------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Exit | None:
        """How the job ended, once it has (None on timeout)."""
        if not self._done.wait(timeout):
            return None
        for reader in self._readers:  # every line is read before the end is told
            reader.join(5)
        outcome = self._outcome or {}
        if "spawn_error" in outcome:
            return Exit(spawn_error=outcome["spawn_error"])
        cause = self.stop_cause
        if cause is None and outcome.get("self_stopped"):
            cause = StopCause.LEASE
        if "exit_code" not in outcome and "signal" not in outcome:
            code = self.supervisor.returncode
            return Exit(
                exit_code=None, signal=9, stopped_for=cause,
                error_message=f"the job's supervisor ended unexpectedly (status {code})",
            )  # fmt: skip
        return Exit(
            exit_code=outcome.get("exit_code"), signal=outcome.get("signal"), stopped_for=cause
        )

    def _read_status(self, pipe: IO[str]) -> None:
        with pipe:
            for line in pipe:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if "started" in message:
                    self.job_pid = int(message["started"])
                    if self.on_started is not None:
                        self.on_started(self.job_pid)
                else:
                    self._outcome = message
        self.supervisor.wait()
        if self.supervisor.stdin is not None:
            with contextlib.suppress(OSError):
                self.supervisor.stdin.close()
        self._done.set()

    def _read(self, pipe: IO[bytes] | None, stream: str) -> None:
        assert pipe is not None
        with pipe:
            for raw in pipe:
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                try:
                    self.on_line(stream, text)
                except Exception:
                    log.exception("handling a line of output failed")
