"""The per-job supervisor: a small process between the worker and one job.

Why it exists: a job must never outlive its lease (SPEC §2, "Leases are
fenced"). The worker tells the supervisor, over its stdin, how long the lease
is good for after every renewal. The supervisor stops the job's whole process
group before that time runs out, and also as soon as its stdin reaches EOF —
which is what happens when the worker dies, even by SIGKILL. So a job's
processes are gone before anyone else can claim the job, whether or not a
worker ever starts again on this host.

Protocol, one line each on stdin::

    lease <seconds>   the lease is valid for this many more seconds
    term <seconds>    SIGTERM the group now, SIGKILL after that grace period
    kill              SIGKILL the group now

On the status pipe (``--status-fd``) it writes JSON lines: ``{"started": pid}``
or ``{"spawn_error": "..."}``, then ``{"exit_code": n}`` or ``{"signal": n}``
with ``"self_stopped": true`` when it stopped the job on its own (lease about
to expire, or the worker gone). The job inherits stdout and stderr, so the
worker reads the job's output directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

#: SIGKILL lands this long before the lease runs out, at the latest.
SAFETY_SECONDS = 1.0


class Supervisor:
    def __init__(self, spec: dict, status_fd: int):
        self.argv: list[str] = spec["argv"]
        self.cwd: str | None = spec.get("cwd")
        self.env: dict[str, str] = spec["env"]
        self.grace: float = float(spec["grace_seconds"])
        self.status = os.fdopen(status_fd, "w", buffering=1)
        lease = float(spec["lease_seconds"])
        self.kill_at = time.monotonic() + lease - SAFETY_SECONDS
        self.term_at = self.kill_at - min(self.grace, lease / 3)
        self.grace_ends = float("inf")  # once SIGTERM went out: when its grace period ends
        self.stopping_on_own = False
        self.proc: subprocess.Popen | None = None
        self.exited = threading.Event()

    def say(self, **message) -> None:
        with contextlib.suppress(OSError):  # the worker is gone; nobody is listening
            self.status.write(json.dumps(message) + "\n")

    def run(self) -> int:
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, killed as a whole
            )
        except OSError as exc:
            self.say(spawn_error=f"{type(exc).__name__}: {exc}")
            return 0
        self.say(started=self.proc.pid)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        threading.Thread(target=self._wait, daemon=True).start()
        self._control()
        return 0

    def _wait(self) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        self._killpg(signal.SIGKILL)  # whatever it left behind in its group goes too
        if code < 0:
            self.say(signal=-code, self_stopped=self.stopping_on_own)
        else:
            self.say(exit_code=code, self_stopped=self.stopping_on_own)
        self.exited.set()

    def _on_sigterm(self, signum, frame) -> None:
        """Someone stops the supervisor itself: the job goes first, with its grace."""
        self.stopping_on_own = True
        if self.term_at != float("inf"):
            self._terminate(max(0.0, min(self.grace, self.kill_at - time.monotonic())))

    def _killpg(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def _terminate(self, grace: float) -> None:
        self._killpg(signal.SIGTERM)
        self.grace_ends = time.monotonic() + grace
        self.kill_at = min(self.kill_at, self.grace_ends)
        self.term_at = float("inf")

    def _control(self) -> None:
        stdin = sys.stdin.buffer
        buffered = b""
        worker_alive = True
        while not self.exited.is_set():
            now = time.monotonic()
            if now >= self.kill_at:
                self.stopping_on_own = self.stopping_on_own or self.term_at != float("inf")
                self._killpg(signal.SIGKILL)
                self.exited.wait(5)
                return
            if now >= self.term_at:
                self.stopping_on_own = True
                self._terminate(self.kill_at - now)
            timeout = max(0.0, min(self.kill_at, self.term_at, now + 0.5) - now)
            if not worker_alive:
                self.exited.wait(timeout)
                continue
            ready, _, _ = select.select([stdin], [], [], timeout)
            if not ready:
                continue
            chunk = os.read(stdin.fileno(), 4096)
            if not chunk:  # EOF: the worker died; stop the job before its lease runs out
                worker_alive = False
                self.stopping_on_own = True
                self._terminate(max(0.0, min(self.grace, self.kill_at - time.monotonic())))
                continue
            buffered += chunk
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                self._command(line.decode(errors="replace").split())

    def _command(self, words: list[str]) -> None:
        if not words:
            return
        if words[0] == "lease" and len(words) == 2:
            lease = float(words[1])
            lease_ends = time.monotonic() + lease - SAFETY_SECONDS
            if self.term_at != float("inf"):
                self.kill_at = lease_ends
                self.term_at = self.kill_at - min(self.grace, lease / 3)
            else:  # stopping: a renewed lease lets the grace period run, never past either
                self.kill_at = min(self.grace_ends, lease_ends)
        elif words[0] == "term" and len(words) == 2:
            if self.term_at != float("inf"):
                self._terminate(float(words[1]))
        elif words[0] == "kill":
            self._killpg(signal.SIGKILL)
            self.kill_at = self.grace_ends = time.monotonic()


def main() -> int:
    # Ctrl-C in the worker's terminal is for the worker; it decides what jobs do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    status_fd = int(sys.argv[sys.argv.index("--status-fd") + 1])
    spec = json.loads(os.environ.pop("JOBQUEUE_SUPERVISOR_SPEC"))
    return Supervisor(spec, status_fd).run()


if __name__ == "__main__":
    sys.exit(main())
