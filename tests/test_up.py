"""``jobqueue up`` as a real process: embedded PostgreSQL, migrations, gunicorn, a worker.

Each run is started in its own session and, whatever happens, its process
group and every process it started (found by a marker in their environment)
are killed at the end, so no server or job outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from jobqueue.cli.up import DEMO_JOBS
from jobqueue.db import make_engine
from jobqueue.queue import JobQueue
from jobqueue.settings import Settings

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parent.parent
MARKER = "JOBQUEUE_UP_TEST_MARK"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
DEMO_NAMES = {job["name"] for job in DEMO_JOBS}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Up:
    """One ``jobqueue up`` process, its output collected by a thread."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        port: int,
        *,
        command: tuple[str, ...] = (sys.executable, "-m", "jobqueue.cli"),
        cwd: Path = REPO,
    ):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [*command, "up", "--port", str(port), *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.process.poll() is not None:
                time.sleep(0.5)  # let the reader catch the last lines
                raise AssertionError(
                    f"jobqueue up exited ({self.process.returncode}) before printing "
                    f"{text!r}:\n{self.output[-6000:]}"
                )
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} within {timeout:g}s:\n{self.output[-6000:]}")

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, timeout=10)

    def submit_held(self, name: str) -> str:
        """Submit a held job of the demo kind; returns its id."""
        response = requests.post(
            f"{self.base}/api/training",
            json={"name": name, "kind": "train-sgd", "hold": True, "config": {}},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def jobs(self) -> dict[str, dict[str, Any]]:
        response = self.get("/api/training?limit=200")
        assert response.status_code == 200, response.text
        return {job["name"]: job for job in response.json()["items"]}

    def wait_jobs(self, predicate, timeout: float) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs()
            if predicate(jobs):
                return jobs
            if time.monotonic() > deadline:
                statuses = {name: job["status"] for name, job in jobs.items()}
                raise AssertionError(f"jobs never got there: {statuses}\n{self.output[-4000:]}")
            time.sleep(0.5)

    def stop(self, sig: signal.Signals, *, group: bool) -> int:
        """Ctrl-C in a terminal signals the whole foreground process group."""
        if group:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"jobqueue up did not stop within {STOP_TIMEOUT:g}s after {sig.name}:\n"
                f"{self.output[-6000:]}"
            ) from None
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def marked_processes(mark: str) -> list[psutil.Process]:
    """Every live process that inherited this test's marker (API, worker, jobs, postgres)."""
    found = []
    for process in psutil.process_iter(["pid"]):
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(MARKER) == mark and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def processes_mentioning(*texts: str) -> list[str]:
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if process.pid != os.getpid() and any(text in cmdline for text in texts):
            found.append(f"{process.pid}: {cmdline}")
    return found


def wait_gone(mark: str, *texts: str, timeout: float = 10.0) -> list[str]:
    """What is still alive after ``timeout``: should be nothing."""
    deadline = time.monotonic() + timeout
    while True:
        left = [f"{p.pid}: {' '.join(p.cmdline())}" for p in _alive(marked_processes(mark))]
        left += processes_mentioning(*texts)
        if not left or time.monotonic() > deadline:
            return sorted(set(left))
        time.sleep(0.3)


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            process.cmdline()
            alive.append(process)
    return alive


def kill_marked(mark: str) -> None:
    for process in marked_processes(mark):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            process.kill()


def clean_env(tmp_path: Path, mark: str, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "PYTHONWARNINGS") and not key.startswith("JOBQUEUE_")
    }
    env.update(
        {
            "JOBQUEUE_STATE_DIR": str(tmp_path / "state"),
            "JOBQUEUE_GRACE_SECONDS": "10",
            "PYTHONUNBUFFERED": "1",
            MARKER: mark,
        }
    )
    env.update(extra)
    return env


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Under the temporary folder, readable to the server's own user when run as root.
    parent = Path(tempfile.mkdtemp(prefix="jobqueue-up-test-", dir=tempfile.gettempdir()))
    os.chmod(parent, 0o755)
    try:
        yield parent / "pgdata"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.timeout(240)
def test_up_runs_everything_stops_cleanly_and_keeps_the_jobs(tmp_path, data_dir):
    mark = uuid.uuid4().hex
    env = clean_env(tmp_path, mark)
    port = free_port()
    runs: list[Up] = []
    try:
        # -- first run, with the demo jobs ----------------------------------------------
        up = Up(["--data-dir", str(data_dir), "--demo"], env, port)
        runs.append(up)
        up.wait_for_line(f"Web monitor: http://127.0.0.1:{port}/", START_TIMEOUT)
        assert "starting the embedded PostgreSQL" in up.output
        assert (data_dir / "PG_VERSION").is_file()
        assert up.get("/healthz").status_code == 200
        assert up.get("/readyz").status_code == 200

        page = up.get("/")
        assert page.status_code == 200
        assert page.headers["Content-Type"].startswith("text/html")
        assert "monitor.js" in page.text and 'data-auth="off"' in page.text

        # The scan that later proves nothing is left behind sees the running system.
        started = " ".join(" ".join(p.cmdline()) for p in _alive(marked_processes(mark)))
        assert "gunicorn" in started and "-m worker" in started, started
        assert str(data_dir) in started, started  # the embedded postgres

        jobs = up.jobs()  # auth is off on loopback: no token needed
        assert set(jobs) == DEMO_NAMES, sorted(jobs)
        assert jobs["sgd-demo-held"]["status"] == "pending"

        response = up.get("/api/workers")
        assert response.status_code == 200
        (worker,) = response.json()["items"]
        assert worker["alive"]
        assert "train-sgd" in worker["kinds"]
        assert worker["gpus"]["total"] >= 1  # detected GPUs, or 2 virtual slots
        if not shutil.which("nvidia-smi"):
            assert worker["gpus"]["total"] == 2

        jobs = up.wait_jobs(lambda j: j["sgd-demo-2"]["status"] == "completed", timeout=60)
        assert jobs["sgd-demo-2"]["termination_reason"] == "completed"
        assert jobs["sgd-demo-2"]["progress"]["step"] == 200
        ids = {name: job["id"] for name, job in jobs.items()}
        running = [name for name, job in jobs.items() if job["status"] == "running"]

        # -- Ctrl-C: everything stops, the database last -------------------------------
        code = up.stop(signal.SIGINT, group=True)
        assert code == 0, up.output[-6000:]
        output = up.output
        assert "stopping: worker" in output
        assert output.rindex("stopping: worker") < output.rindex("stopping the embedded PostgreSQL")
        left = wait_gone(mark, str(data_dir), f"127.0.0.1:{port}")
        assert not left, f"processes left behind: {left}"

        # -- second run on the same data dir, without --demo --------------------------
        env2 = clean_env(tmp_path, mark)
        up2 = Up(["--data-dir", str(data_dir)], env2, port)
        runs.append(up2)
        up2.wait_for_line(f"Web monitor: http://127.0.0.1:{port}/", START_TIMEOUT)
        assert "submitting demo jobs" not in up2.output
        again = up2.jobs()
        assert {name: job["id"] for name, job in again.items()} == ids
        assert again["sgd-demo-2"]["status"] == "completed"
        assert again["sgd-demo-held"]["status"] == "pending"
        # A job that was running at Ctrl-C was handed back, not failed: it goes on.
        for name in running:
            assert again[name]["status"] in ("queued", "running", "completed"), again[name]
            assert again[name]["termination_reason"] in (None, "completed"), again[name]
            assert again[name]["interruptions"] >= 1, again[name]
            assert again[name]["checkpoint"] is not None, again[name]

        # -- SIGTERM to the main process alone stops everything too --------------------
        code = up2.stop(signal.SIGTERM, group=False)
        assert code == 0, up2.output[-6000:]
        assert "stopping the embedded PostgreSQL" in up2.output
        left = wait_gone(mark, str(data_dir), f"127.0.0.1:{port}")
        assert not left, f"processes left behind: {left}"
    finally:
        for run in runs:
            run.kill()
        kill_marked(mark)


@pytest.mark.timeout(120)
def test_up_with_database_url_uses_that_database_and_starts_no_server(tmp_path, database_url):
    mark = uuid.uuid4().hex
    env = clean_env(tmp_path, mark, DATABASE_URL=database_url)
    port = free_port()
    up = Up(["--virtual-gpus", "1"], env, port)
    try:
        up.wait_for_line(f"Web monitor: http://127.0.0.1:{port}/", START_TIMEOUT)
        assert "embedded PostgreSQL" not in up.output
        assert up.get("/readyz").status_code == 200
        # No PostgreSQL server among the processes it started.
        names = {p.name() for p in _alive(marked_processes(mark))}
        assert not any(name.startswith("postgres") for name in names), names

        response = requests.post(
            f"{up.base}/api/training",
            json={"name": "via-url", "kind": "train-sgd", "gpus": 1,
                  "config": {"steps": 30, "step_seconds": 0.01}},
            timeout=10,
        )  # fmt: skip
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        up.wait_jobs(lambda j: j["via-url"]["status"] == "completed", timeout=45)

        # The job is a row of the database that DATABASE_URL names.
        engine = make_engine(database_url, pool_size=1)
        try:
            job = JobQueue(engine, Settings(database_url=database_url)).get(uuid.UUID(job_id))
            assert job.status.value == "completed"
        finally:
            engine.dispose()

        code = up.stop(signal.SIGTERM, group=False)
        assert code == 0, up.output[-6000:]
        left = wait_gone(mark, f"127.0.0.1:{port}")
        assert not left, f"processes left behind: {left}"
    finally:
        up.kill()
        kill_marked(mark)


@pytest.mark.timeout(200)
def test_up_after_a_killed_up_still_stops_its_database(tmp_path, data_dir):
    mark = uuid.uuid4().hex
    env = clean_env(tmp_path, mark)
    port = free_port()
    runs: list[Up] = []
    try:
        up = Up(["--data-dir", str(data_dir), "--virtual-gpus", "1"], env, port)
        runs.append(up)
        up.wait_for_line(f"Web monitor: http://127.0.0.1:{port}/", START_TIMEOUT)
        job_id = up.submit_held("kept")

        # kill -9 of the whole group: no clean-up runs; the database (its own session)
        # keeps running, as after a crash.
        os.killpg(up.process.pid, signal.SIGKILL)
        up.process.wait(10)
        assert processes_mentioning(str(data_dir)), "the database should have outlived it"

        up2 = Up(["--data-dir", str(data_dir), "--virtual-gpus", "1"], env, port)
        runs.append(up2)
        up2.wait_for_line(f"Web monitor: http://127.0.0.1:{port}/", START_TIMEOUT)
        assert up2.jobs()["kept"]["id"] == job_id

        code = up2.stop(signal.SIGINT, group=True)
        assert code == 0, up2.output[-6000:]
        left = wait_gone(mark, str(data_dir), f"127.0.0.1:{port}")
        assert not left, f"processes left behind: {left}"
    finally:
        for run in runs:
            run.kill()
        kill_marked(mark)


def _installed_from_wheel(tmp_path: Path) -> Path:
    """A fresh virtual environment with jobqueue installed from a wheel built now.

    The wheel is installed without its dependencies, which come from this
    environment's site-packages through a ``.pth`` line instead (no downloads).
    That line adds a plain folder, so this environment's editable jobqueue is
    not seen: ``jobqueue``, ``api``, ``worker`` and ``migrations`` are the wheel's.
    """
    # Built from a copy, so that the build leaves nothing in the checkout.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "node_modules",
    ))  # fmt: skip
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--wheel-dir", str(wheels), str(source)],
        check=True, timeout=180,
    )  # fmt: skip
    (wheel,) = wheels.glob("jobqueue-*.whl")
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         str(wheel)],
        check=True, timeout=180,
    )  # fmt: skip
    dev_site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    Path(site, "zz_dependencies.pth").write_text(dev_site + "\n")
    return venv


@pytest.mark.timeout(300)
def test_up_runs_the_demo_from_a_wheel_in_a_fresh_environment(tmp_path, data_dir):
    venv = _installed_from_wheel(tmp_path)
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import jobqueue, worker; print(jobqueue.__file__)"],
        cwd=tmp_path, check=True, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert probe.startswith(str(venv)), f"jobqueue was imported from {probe}, not the wheel"

    mark = uuid.uuid4().hex
    env = clean_env(tmp_path, mark)
    port = free_port()
    runs: list[Up] = []
    launch = {"command": (str(venv / "bin" / "jobqueue"),), "cwd": tmp_path}
    try:
        up = Up(["--data-dir", str(data_dir), "--demo", "--virtual-gpus", "2"], env, port, **launch)
        runs.append(up)
        up.wait_for_line(f"Web monitor: http://127.0.0.1:{port}/", START_TIMEOUT)
        held_id = up.submit_held("from-wheel")
        # The demo's training script, shipped in the wheel, runs to the end.
        jobs = up.wait_jobs(lambda j: j["sgd-demo-2"]["status"] == "completed", timeout=90)
        assert jobs["sgd-demo-2"]["progress"]["step"] == 200
        assert up.stop(signal.SIGINT, group=True) == 0, up.output[-6000:]

        up2 = Up(["--data-dir", str(data_dir), "--virtual-gpus", "1"], env, port, **launch)
        runs.append(up2)
        up2.wait_for_line(f"Web monitor: http://127.0.0.1:{port}/", START_TIMEOUT)
        again = up2.jobs()
        assert again["from-wheel"]["id"] == held_id
        assert again["from-wheel"]["status"] == "pending"
        assert up2.stop(signal.SIGINT, group=True) == 0, up2.output[-6000:]
        left = wait_gone(mark, str(data_dir), f"127.0.0.1:{port}")
        assert not left, f"processes left behind: {left}"
    finally:
        for run in runs:
            run.kill()
        kill_marked(mark)
