"""The API as it is deployed: a real gunicorn process (and ``jobqueue api``) over HTTP.

Each server runs in its own process group and is always stopped: SIGTERM, a bounded
wait, then SIGKILL of the whole group.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobqueue import api_models as schemas
from jobqueue.specs import JobSpec
from tests.helpers import OPERATOR, TOKENS, VIEWER

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def jobqueue_command() -> list[str]:
    script = Path(sys.executable).with_name("jobqueue")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "jobqueue.cli"]


def server_env(database_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JOBQUEUE_") and k not in ("DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(DATABASE_URL=database_url, JOBQUEUE_API_TOKENS=TOKENS, JOBQUEUE_AUTH="on")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def call(
    method: str, url: str, *, token: str | None = None, body: Any = None
) -> tuple[int, str, Any]:
    """One HTTP request; returns (status, content type, parsed JSON or text)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, ctype, raw = response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        status, ctype, raw = exc.code, exc.headers["Content-Type"], exc.read()
    text = raw.decode()
    return status, ctype, json.loads(text) if ctype.startswith("application/json") else text


class Server:
    def __init__(self, argv: list[str], env: dict[str, str], port: int, log: Path):
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            with contextlib.suppress(OSError):
                status, _, body = call("GET", self.base + "/healthz")
                if status == 200 and body == {"status": "ok"}:
                    return
            time.sleep(0.1)
        pytest.fail(f"no answer on /healthz within {START_TIMEOUT}s:\n{self.output()[-3000:]}")

    def stop(self) -> int | None:
        """SIGTERM, wait, then SIGKILL the whole group; returns the exit status of a clean stop."""
        clean = None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    clean = self.proc.wait(timeout=STOP_TIMEOUT)
            else:
                clean = self.proc.returncode
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # workers too, whatever happened
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            self._log_file.close()
        return clean


@contextlib.contextmanager
def serve(argv: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[Server]:
    server = Server(argv, env, port, log)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def exercise(base: str, existing: dict[str, Any] | None = None) -> None:
    """What a client does: submit, read, force-start, and the error shape over HTTP."""
    status, _, job = call(
        "POST",
        base + "/api/training",
        token=OPERATOR,
        body={"name": "over-http", "kind": "train", "config": {"lr": 0.01}},
    )
    assert status == 201, job
    schemas.Job.model_validate(job)
    assert job["status"] == "queued"
    # Several reads, so both gunicorn workers are likely to answer at least once.
    for _ in range(6):
        status, _, read = call("GET", f"{base}/api/training/{job['id']}", token=VIEWER)
        assert status == 200 and read["id"] == job["id"] and read["config"] == {"lr": 0.01}
    status, _, forced = call(
        "POST", f"{base}/api/training/{job['id']}/force-start", token=OPERATOR, body={}
    )
    assert status == 200, forced
    assert forced["forced"] is True and forced["queue_position"] == 1
    if existing is not None:
        status, _, old = call("GET", f"{base}/api/training/{existing['id']}", token=VIEWER)
        assert status == 200 and old["status"] == existing["status"]
        assert old["queue_position"] == 2  # behind the forced job now
    status, ctype, error = call("GET", base + "/api/training", token="wrong")
    assert status == 401 and ctype.startswith("application/json")
    schemas.Error.model_validate(error)
    status, ctype, error = call("GET", base + "/api/no-such-thing", token=VIEWER)
    assert status == 404 and ctype.startswith("application/json"), error
    status, _, listing = call("GET", base + "/api/training?limit=10", token=VIEWER)
    assert status == 200 and job["id"] in [j["id"] for j in listing["items"]]
    status, _, ready = call("GET", base + "/readyz")
    assert status == 200 and ready == {"status": "ready"}
    status, ctype, metrics = call("GET", base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert "jobqueue_jobs{" in metrics


def test_gunicorn_serves_the_api(database_url, tmp_path):
    port = free_port()
    argv = [
        sys.executable, "-m", "gunicorn",
        "--bind", f"127.0.0.1:{port}",
        "--workers", "2",
        "--graceful-timeout", "10",
        "api:create_app()",
    ]  # fmt: skip
    with serve(argv, server_env(database_url), port, tmp_path / "gunicorn.log") as server:
        exercise(server.base)
        status = server.stop()
    assert status == 0, server.output()[-3000:]


@pytest.mark.parametrize("access_log", [False, True], ids=["default", "access-log"])
def test_jobqueue_api_command_serves_what_is_in_the_database(
    database_url, queue, tmp_path, access_log
):
    # Submitted before the server exists: nothing about a job lives in an API process.
    before, _ = queue.submit(JobSpec(name="earlier", kind="train"), actor="operator")
    port = free_port()
    argv = [*jobqueue_command(), "api", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", *(["--access-log"] if access_log else [])]  # fmt: skip
    with serve(argv, server_env(database_url), port, tmp_path / "jobqueue-api.log") as server:
        exercise(server.base, existing={"id": str(before.id), "status": "queued"})
        status = server.stop()
    output = server.output()
    assert status == 0, output[-3000:]
    # One line per request only when asked for.
    request_line = re.compile(rf'"GET /api/training/{before.id} HTTP/1\.1" 200 ')
    assert bool(request_line.search(output)) is access_log, output[-3000:]


@pytest.mark.parametrize("how", ["jobqueue api", "gunicorn"])
def test_the_api_refuses_to_start_on_an_unmigrated_database(databases, tmp_path, how):
    url = databases.create(migrated=False)
    port = free_port()
    if how == "jobqueue api":
        argv = [*jobqueue_command(), "api", "--host", "127.0.0.1", "--port", str(port)]
    else:
        argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                "--workers", "1", "api:create_app()"]  # fmt: skip
    server = Server(argv, server_env(url), port, tmp_path / "refused.log")
    try:
        try:
            server.proc.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{how} kept running on an unmigrated database:\n{server.output()}")
        assert server.proc.returncode != 0
        assert "jobqueue migrate" in server.output()
        with pytest.raises(OSError):  # nothing listens
            call("GET", f"http://127.0.0.1:{port}/healthz")
    finally:
        server.stop()
        databases.drop(url)


def test_jobqueue_api_refuses_to_start_with_auth_on_and_no_tokens(database_url):
    env = {**server_env(database_url), "JOBQUEUE_AUTH": "on", "JOBQUEUE_API_TOKENS": ""}
    done = subprocess.run(
        [*jobqueue_command(), "api", "--host", "127.0.0.1", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=START_TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "JOBQUEUE_API_TOKENS" in done.stderr
