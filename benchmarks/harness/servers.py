"""Server processes a benchmark starts (the worker daemon, gunicorn), each in a process
group of its own so that stopping it stops its children too, and always stopped.

gunicorn runs with the command line of ``jobqueue api`` (:func:`jobqueue.cli.serving.
gunicorn_argv`), so that the figures are those of what is deployed.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness.cpu import group_cpu
from jobqueue.cli.serving import gunicorn_argv

#: The repository, for the servers' working folder and PYTHONPATH.
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def clean_env(*also: str) -> dict[str, str]:
    """This process's environment without jobqueue's settings (``JOBQUEUE_*``,
    ``DATABASE_URL``) or the variables named in ``also``: a server gets only those the
    benchmark gives it."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JOBQUEUE_") and k != "DATABASE_URL" and k not in also
    }


def root_pythonpath() -> str:
    """PYTHONPATH with the repository first, so a server imports this checkout."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProcessGroup:
    """A process started in a new session (its own process group), its output in a log file."""

    def __init__(self, argv: Sequence[str], *, cwd: Path, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cpu(self) -> dict[int, float]:
        """CPU seconds used so far by each live process of the group."""
        return group_cpu(self.proc.pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the group, SIGKILL after ``timeout`` seconds; then SIGKILL to whatever
        of the group outlived its leader (nothing should)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


class Gunicorn(ProcessGroup):
    """One gunicorn server as ``jobqueue api`` runs it (an access log lands in its log file)."""

    def __init__(
        self,
        app: str,
        *,
        workers: int,
        threads: int,
        env: dict[str, str],
        cwd: Path,
        workdir: Path,
        label: str,
        access_log: bool = False,
    ):
        self.port = free_port()
        self.label = label
        self.workers = workers
        argv = gunicorn_argv(
            f"127.0.0.1:{self.port}", processes=workers, threads=threads, app=app,
            access_log=access_log,
        )  # fmt: skip
        log_path = workdir / f"gunicorn-{label}-{self.port}.log"
        super().__init__(argv, cwd=cwd, env=env, log_path=log_path)

    def wait_ready(self) -> None:
        """Until ``/healthz`` answers 200; stops the server and raises if it does not."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.exited():
                break
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    conn.request("GET", "/healthz")
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn ({self.label}) did not start; its log:\n{self.log_tail()}")


class GunicornServers:
    """The gunicorn servers of a run, each started and ready; :meth:`stop_all` stops those
    still up."""

    def __init__(self, workdir: Path, *, access_log: bool):
        self.workdir = workdir
        self.access_log = access_log
        self._up: list[Gunicorn] = []

    def start(
        self, app: str, env: dict[str, str], cwd: Path, label: str, shape: tuple[int, int]
    ) -> Gunicorn:
        server = Gunicorn(
            app, workers=shape[0], threads=shape[1], env=env, cwd=cwd, workdir=self.workdir,
            label=label, access_log=self.access_log,
        )  # fmt: skip
        self._up.append(server)
        server.wait_ready()
        return server

    def stop(self, server: Gunicorn) -> None:
        server.stop()
        self._up.remove(server)

    def stop_all(self) -> None:
        for server in list(self._up):
            self.stop(server)
