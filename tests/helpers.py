"""Helpers of the tests, in one module; the fixtures live in ``conftest.py``.

- Jobs: :func:`spec`, a valid submit body.
- The REST API (SPEC §3): :class:`Api` over Flask's test client. The app is the
  real one (``api.create_app``) over a fresh migrated database per test, with
  auth on and three tokens:

  - ``operator:op-token``  — unnamed operator: events record the actor ``operator``;
  - ``ci:viewer:view-token`` — a viewer named ``ci``;
  - ``admin:admin-token``  — an admin.

  Every response that goes through :class:`Api` is checked for what holds
  everywhere: never a 5xx (``/readyz`` may say 503), JSON (never HTML) under
  ``/api``, error bodies of the shape ``{"error": {"code", "message", "details"}}``,
  and every 2xx body valid for its published model in :mod:`api.schemas`.
- The worker daemon (SPEC §4): settings with short timings, a daemon running in
  this process, bounded waits, and scans of /proc for the jobs' processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from flask.testing import FlaskClient
from pydantic import BaseModel
from sqlalchemy import Engine, text
from werkzeug.test import TestResponse

from jobqueue import api_models as schemas
from jobqueue.examples import EXAMPLES_DIR
from jobqueue.queue import JobQueue
from jobqueue.records import Job
from jobqueue.settings import Settings
from jobqueue.specs import JobSpec
from jobqueue.states import JobStatus
from jobqueue.worker_store import WorkerIdentity, WorkerStore
from worker.daemon import WorkerConfig, WorkerDaemon
from worker.gpus import discover
from worker.kinds import Kind

OPERATOR = "op-token"
VIEWER = "view-token"
ADMIN = "admin-token"
TOKENS = f"operator:{OPERATOR},ci:viewer:{VIEWER},admin:{ADMIN}"

_MISSING: Any = object()

_ID = r"/api/training/[^/]+"
_SWEEP = r"/api/sweeps/[^/]+"
#: The published model of every 2xx body, by method and path.
RESPONSE_MODELS: list[tuple[str, re.Pattern[str], type[BaseModel]]] = [
    (method, re.compile(path), model)
    for method, path, model in [
        ("POST", r"/api/training", schemas.Job),
        ("GET", r"/api/training", schemas.JobList),
        ("GET", _ID, schemas.Job),
        ("PATCH", _ID, schemas.Job),
        ("GET", _ID + "/events", schemas.EventList),
        ("GET", _ID + "/logs", schemas.Logs),
        ("GET", _ID + "/metrics", schemas.Metrics),
        ("POST", _ID + "/(release|force-start|pause|resume|cancel|mark-failed|retry)", schemas.Job),
        ("GET", r"/api/queue", schemas.Queue),
        ("GET", r"/api/workers", schemas.WorkerList),
        ("POST", r"/api/admin/prune", schemas.Pruned),
        ("GET", r"/api/teams", schemas.TeamList),
        ("PUT", r"/api/teams/[^/]+", schemas.Team),
        ("POST", r"/api/sweeps", schemas.SweepSubmitted),
        ("GET", r"/api/sweeps", schemas.SweepList),
        ("GET", _SWEEP, schemas.Sweep),
        ("GET", _SWEEP + "/jobs", schemas.SweepJobList),
        ("PATCH", _SWEEP, schemas.SweepOutcome),
        ("POST", _SWEEP + "/(release|force-start|pause|resume|cancel|retry)", schemas.SweepOutcome),
    ]
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "api_tokens": TOKENS,
        "auth": "on",
        "lease_seconds": 30,
        "heartbeat_seconds": 1,
        "retry_backoff_seconds": 30,
        "state_dir": "/nonexistent",
    }
    values.update(overrides)
    return Settings(**values)


def job_of(response: TestResponse, status: int | None = None) -> dict[str, Any]:
    """The job object of a 2xx response, validated against the published model."""
    body = response.get_json()
    if status is not None:
        assert response.status_code == status, (response.status_code, body)
    assert 200 <= response.status_code < 300, (response.status_code, body)
    schemas.Job.model_validate(body)
    return body


def error_of(response: TestResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """The ``error`` member of an error response, validated against the published model."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json", response.get_data(as_text=True)[:200]
    body = response.get_json()
    schemas.Error.model_validate(body)
    if code is not None:
        assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


class Api:
    """The Flask test client with bearer tokens and the checks every response must pass."""

    def __init__(self, client: FlaskClient):
        self.client = client
        self.engine: Engine = client.application.extensions["jobqueue"].engine

    def count_jobs(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = _MISSING,
        json: Any = _MISSING,
        data: bytes | str | None = None,
        content_type: str | None = None,
        query: Any = None,
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        if token is _MISSING:
            token = VIEWER if method in ("GET", "HEAD") else OPERATOR
        all_headers = dict(bearer(token)) if token else {}
        all_headers.update(headers or {})
        kwargs: dict[str, Any] = {"method": method, "headers": all_headers}
        if json is not _MISSING:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        if content_type is not None:
            kwargs["content_type"] = content_type
        if query is not None:
            kwargs["query_string"] = query
        response = self.client.open(path, **kwargs)
        self.check(method, path, response)
        return response

    @staticmethod
    def check(method: str, path: str, response: TestResponse) -> None:
        path = path.split("?", 1)[0]
        status = response.status_code
        allowed_5xx = path == "/readyz" and status == 503
        assert status < 500 or allowed_5xx, (status, response.get_data(as_text=True)[:500])
        if path.startswith("/api") and response.data:
            assert response.mimetype == "application/json", (path, response.mimetype)
            assert not response.get_data(as_text=True).lstrip().startswith("<")
        if status >= 400 and response.mimetype == "application/json":
            schemas.Error.model_validate(response.get_json())
        if 200 <= status < 300:
            for model_method, pattern, model in RESPONSE_MODELS:
                if model_method == method and pattern.fullmatch(path):
                    model.model_validate(response.get_json())
                    break

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("PATCH", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("PUT", path, **kwargs)

    def submit(self, *, token: str | None = _MISSING, **overrides: Any) -> dict[str, Any]:
        """Submit a job (name ``resnet``, kind ``train``); returns the 201 job object."""
        body: dict[str, Any] = {"name": "resnet", "kind": "train", "config": {"lr": 0.1}}
        body.update(overrides)
        return job_of(self.post("/api/training", json=body, token=token), 201)

    def job(self, job_id: str | UUID) -> dict[str, Any]:
        return job_of(self.get(f"/api/training/{job_id}"), 200)

    def act(self, job_id: str | UUID, action: str, body: Any = _MISSING, **kwargs: Any):
        return self.post(f"/api/training/{job_id}/{action}", json=body, **kwargs)


def run_job(api: Api, store: WorkerStore, worker: WorkerIdentity, **overrides: Any):
    """Submit a job and have ``worker`` claim it; returns (job object, lease token).

    Needs no other claimable job in the pool: the claim takes the queue's first.
    """
    submitted = api.submit(**overrides)
    claimed = store.claim(worker, free_gpu_ids=list(worker.gpu_ids), slots=1)
    assert [c.id for c in claimed] == [UUID(submitted["id"])]
    job = api.job(submitted["id"])
    assert job["status"] == "running"
    return job, claimed[0].lease_token


# -- jobs --------------------------------------------------------------------------------


def spec(**overrides) -> JobSpec:
    body = {"name": "resnet", "kind": "train", "config": {"lr": 0.1}}
    body.update(overrides)
    return JobSpec.model_validate(body)


# -- the worker daemon and its processes (SPEC §4) ------------------------------------------

TRAIN_SGD = EXAMPLES_DIR / "train_sgd.py"
JOBS = Path(__file__).resolve().parent / "jobs"
ROOT = Path(__file__).resolve().parent.parent
ACTOR = "tester"

T = TypeVar("T")


def worker_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Short lease, heartbeat, sweep and grace, and no retry back-off."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "lease_seconds": 6,
        "heartbeat_seconds": 0.5,
        "sweep_seconds": 0.5,
        "grace_seconds": 3,
        "retry_backoff_seconds": 0,
        "state_dir": tmp_path / "state",
        "checkpoint_root": None,  # under state_dir, whatever the environment says
    }
    values.update(overrides)
    return Settings(**values)


def kinds_file(tmp_path: Path, extra: str = "") -> Path:
    """A kinds TOML file with the kinds the tests use, plus ``extra`` TOML."""
    path = tmp_path / "kinds.toml"
    path.write_text(
        f"""
[kinds.sgd]
argv = ["{{python}}", {json.dumps(str(TRAIN_SGD))}]
grace_seconds = 5

[kinds.say]
argv = ["{{python}}", {json.dumps(str(JOBS / "say.py"))}]

[kinds.family]
argv = ["{{python}}", {json.dumps(str(JOBS / "family.py"))}]
grace_seconds = 60

[kinds.slow-stop]
argv = ["{{python}}", {json.dumps(str(JOBS / "slow_stop.py"))}]
grace_seconds = 12
{extra}
"""
    )
    return path


def submit(queue: JobQueue, kind: str, config: dict[str, Any] | None = None, **fields: Any) -> Job:
    body = {"name": f"{kind}-job", "kind": kind, "config": config or {}, **fields}
    job, created = queue.submit(JobSpec.model_validate(body), actor=ACTOR)
    assert created
    return job


def wait_for(predicate: Callable[[], T], *, timeout: float, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.1)


def describe(queue: JobQueue, job_id: UUID) -> str:
    """The job's state, events and last log lines, for failure messages."""
    job = queue.get(job_id)
    events = [(e.from_status, e.to_status, e.action, e.reason) for e in queue.events(job_id)]
    lines = [f"{line.stream}: {line.text}" for line in queue.logs(job_id, limit=10_000)[0][-15:]]
    return (
        f"status={job.status.value} reason={job.termination_reason} exit={job.exit_code} "
        f"signal={job.signal} error={job.error_message!r} waiting={job.waiting_reason!r} "
        f"progress={job.progress} checkpoint={job.checkpoint} request={job.requested_action}\n"
        f"events={events}\nlogs=" + "\n".join(lines)
    )


def wait_status(queue: JobQueue, job_id: UUID, *statuses: JobStatus, timeout: float = 30) -> Job:
    """Wait until the job is in one of ``statuses``; the failure message tells its story."""
    deadline = time.monotonic() + timeout
    while True:
        job = queue.get(job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(
                f"job not {[s.value for s in statuses]} after {timeout}s: "
                + describe(queue, job_id)
            )
        time.sleep(0.1)


def wait_step(queue: JobQueue, job_id: UUID, step: int, timeout: float = 30) -> Job:
    """Wait until the running job reported progress at ``step`` or beyond."""

    def reached() -> Job | None:
        job = queue.get(job_id)
        assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING), describe(queue, job_id)
        if job.progress and (job.progress.get("step") or 0) >= step:
            return job
        return None

    return wait_for(reached, timeout=timeout, what=f"job {job_id} to reach step {step}")


def log_texts(queue: JobQueue, job_id: UUID) -> list[str]:
    return [line.text for line in queue.logs(job_id, limit=100_000)[0]]


def actions(queue: JobQueue, job_id: UUID) -> list[str]:
    return [e.action for e in queue.events(job_id)]


def proc_stat(pid: str) -> tuple[str, int] | None:
    """(state, process group) of a live process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0], int(fields[2])


def group_alive(pgid: int) -> bool:
    """Whether any process of this process group still runs (zombies do not count)."""
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                stat = proc_stat(entry.name)
                if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                    return True
    return False


def pid_alive(pid: int) -> bool:
    stat = proc_stat(str(pid))
    return stat is not None and stat[0] not in ("Z", "X")


def job_processes(job_ids: list[UUID] | list[str]) -> list[int]:
    """Live processes whose environment mentions one of these jobs: the job, its
    children and its supervisor (whose spec names the job)."""
    needles = [str(i).encode() for i in job_ids]
    found = []
    if not needles:
        return found
    with os.scandir("/proc") as entries:
        pids = [int(e.name) for e in entries if e.name.isdigit()]
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if any(n in environ for n in needles) and pid_alive(pid):
            found.append(pid)
    return found


def family_pids(queue: JobQueue, job_id: UUID, *, after: int = 0) -> tuple[int, int, int]:
    """(pid, pgid, child pid) that tests/jobs/family.py printed, in its newest run."""

    def printed() -> tuple[int, int, int] | None:
        found = None
        for text_ in log_texts(queue, job_id)[after:]:
            match = re.fullmatch(r"family pid=(\d+) pgid=(\d+) child=(\d+)", text_)
            if match:
                found = (int(match[1]), int(match[2]), int(match[3]))
        return found

    return wait_for(printed, timeout=20, what=f"job {job_id} to print its pids")


@contextlib.contextmanager
def running_worker(
    settings: Settings,
    kinds: dict[str, Kind],
    *,
    name: str = "w1",
    virtual_gpus: int | None = 2,
    gpus: str = "none",
    slots: int | None = None,
) -> Iterator[WorkerDaemon]:
    config = WorkerConfig.build(
        settings,
        kinds=kinds,
        gpus=discover(gpus, virtual_gpus),
        name=name,
        slots=slots,
    )
    daemon = WorkerDaemon(config, settings).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def assert_no_job_processes_left(engine: Engine) -> None:
    """No process of any job in the database may be left (they are killed, then it fails)."""
    with engine.connect() as conn:
        ids = [str(r[0]) for r in conn.execute(text("SELECT id FROM jobs"))]
    deadline = time.monotonic() + 10
    while job_processes(ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = job_processes(ids)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the test's jobs were left running: {left}"
