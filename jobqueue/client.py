"""The REST API from Python, for notebooks and scripts: ``Client(url, token)``.

Every method is one request (``wait`` and ``follow_logs`` poll), with the request
validated by the same models the API validates with (:mod:`jobqueue.specs`,
:mod:`jobqueue.sweep_specs`) and the answer parsed into the API's response models
(:mod:`jobqueue.api_models`). Fields a newer server adds are ignored, so a client keeps
working across an upgrade of the server. An error answer raises :class:`ApiError` with
the API's code, message and details.

    from jobqueue.client import Client

    with Client("http://gpu-head:8000", token="s3cret") as jq:
        job = jq.submit({"name": "resnet", "kind": "train", "gpus": 2, "config": {"lr": 0.1}})
        for line in jq.follow_logs(job.id):
            print(line.text)
        print(jq.wait(job.id).status)
"""

from __future__ import annotations

import os
import time
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel

from jobqueue import api_models as models
from jobqueue.errors import JobqueueError
from jobqueue.specs import JobPatch, JobSpec
from jobqueue.states import JobStatus
from jobqueue.sweep_specs import SweepPatch, SweepSpec

M = TypeVar("M", bound=BaseModel)
#: A listing's answer: a page of items and the cursor of the next one.
Paged = models.JobList | models.SweepList

#: The statuses a job stays in: ``wait`` returns once it leaves them.
FINISHED = frozenset(s.value for s in JobStatus if s.finished)


class ApiError(JobqueueError):
    """An error answer of the API: its HTTP status and ``{"code", "message", "details"}``."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class Client:
    """A jobqueue API at ``url`` (default ``JOBQUEUE_API_URL``) with a bearer ``token``
    (default ``JOBQUEUE_API_TOKEN``; none for an API with auth off)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        url = url or os.environ.get("JOBQUEUE_API_URL")
        if not url:
            raise ValueError("no API address: pass url or set JOBQUEUE_API_URL")
        token = token if token is not None else os.environ.get("JOBQUEUE_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs -----------------------------------------------------------------

    def submit(self, spec: JobSpec | Mapping[str, Any]) -> models.Job:
        """Submit a job (201), or get the one a repeated ``idempotency_key`` made (200)."""
        return self._call(models.Job, "POST", "/api/training", json=_body(JobSpec, spec))

    def get(self, job_id: UUID | str) -> models.Job:
        return self._call(models.Job, "GET", f"/api/training/{job_id}")

    def jobs(
        self,
        *,
        status: Iterable[str] | str | None = None,
        pool: str | None = None,
        team: str | None = None,
        name_contains: str | None = None,
        page_size: int = 200,
    ) -> Iterator[models.Job]:
        """Every job that matches, newest first, page after page."""
        params: dict[str, Any] = {"limit": page_size, "pool": pool, "team": team,
                                  "q": name_contains}  # fmt: skip
        if status is not None:
            params["status"] = [status] if isinstance(status, str) else list(status)
        yield from self._pages(models.JobList, "/api/training", params)

    def events(self, job_id: UUID | str) -> list[models.Event]:
        return self._call(models.EventList, "GET", f"/api/training/{job_id}/events").items

    def logs(self, job_id: UUID | str, *, after: int = 0, limit: int = 1000) -> models.Logs:
        params = {"after": after, "limit": limit}
        return self._call(models.Logs, "GET", f"/api/training/{job_id}/logs", params=params)

    def follow_logs(
        self, job_id: UUID | str, *, after: int = 0, poll_seconds: float = 1.0,
        timeout: float | None = None,
    ) -> Iterator[models.LogLine]:  # fmt: skip
        """Each log line as it arrives, until the job has finished and every line is read
        (or ``timeout`` seconds pass: TimeoutError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            finished = self.get(job_id).status in FINISHED
            while True:
                page = self.logs(job_id, after=after)
                yield from page.lines
                after = page.next
                if not page.lines:
                    break
            if finished:
                return
            _sleep_until(deadline, poll_seconds, f"job {job_id} still runs")

    def metrics(self, job_id: UUID | str, *, limit: int = 2000) -> list[models.MetricPoint]:
        path = f"/api/training/{job_id}/metrics"
        return self._call(models.Metrics, "GET", path, params={"limit": limit}).points

    def wait(
        self, job_id: UUID | str, *, timeout: float | None = None, poll_seconds: float = 1.0,
        statuses: Iterable[str] = FINISHED,
    ) -> models.Job:  # fmt: skip
        """The job once its status is one of ``statuses`` (default: finished); raises
        TimeoutError after ``timeout`` seconds."""
        wanted = set(statuses)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.status in wanted:
                return job
            _sleep_until(deadline, poll_seconds, f"job {job_id} is still {job.status}")

    def wait_all(
        self, job_ids: Iterable[UUID | str], *, timeout: float | None = None,
        poll_seconds: float = 1.0,
    ) -> list[models.Job]:  # fmt: skip
        """Every job once each has finished, in the order given."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done: dict[str, models.Job] = {}
        ids = [str(i) for i in job_ids]
        while True:
            for job_id in ids:
                if job_id not in done:
                    job = self.get(job_id)
                    if job.status in FINISHED:
                        done[job_id] = job
            if len(done) == len(ids):
                return [done[i] for i in ids]
            _sleep_until(deadline, poll_seconds, f"{len(ids) - len(done)} jobs still run")

    def release(self, job_id: UUID | str) -> models.Job:
        return self._act(job_id, "release", {})

    def force_start(self, job_id: UUID | str) -> models.Job:
        return self._act(job_id, "force-start", {})

    def pause(self, job_id: UUID | str) -> models.Job:
        return self._act(job_id, "pause", {})

    def resume(self, job_id: UUID | str) -> models.Job:
        return self._act(job_id, "resume", {})

    def cancel(self, job_id: UUID | str, *, force: bool = False) -> models.Job:
        return self._act(job_id, "cancel", {"force": force})

    def mark_failed(self, job_id: UUID | str, reason: str) -> models.Job:
        return self._act(job_id, "mark-failed", {"reason": reason})

    def retry(self, job_id: UUID | str, *, from_checkpoint: bool = True) -> models.Job:
        return self._act(job_id, "retry", {"from_checkpoint": from_checkpoint})

    def patch(
        self, job_id: UUID | str, *, priority: int | None = None, pool: str | None = None
    ) -> models.Job:
        body = _body(JobPatch, {k: v for k, v in (("priority", priority), ("pool", pool))
                                if v is not None})  # fmt: skip
        return self._call(models.Job, "PATCH", f"/api/training/{job_id}", json=body)

    # -- sweeps -----------------------------------------------------------------

    def submit_sweep(self, spec: SweepSpec | Mapping[str, Any]) -> models.SweepSubmitted:
        """A sweep (or bulk submit): every item valid, or ApiError ``invalid_items`` with
        each bad item's index and errors in ``details["items"]``."""
        return self._call(models.SweepSubmitted, "POST", "/api/sweeps", json=_body(SweepSpec, spec))

    def sweep(self, sweep_id: UUID | str) -> models.Sweep:
        return self._call(models.Sweep, "GET", f"/api/sweeps/{sweep_id}")

    def sweeps(self, *, team: str | None = None, page_size: int = 200) -> Iterator[models.Sweep]:
        params: dict[str, Any] = {"limit": page_size, "team": team}
        yield from self._pages(models.SweepList, "/api/sweeps", params)

    def sweep_jobs(
        self, sweep_id: UUID | str, *, sort: str = "index", descending: bool = False,
        metric: str | None = None, limit: int = 1000, offset: int = 0,
    ) -> list[models.SweepJob]:  # fmt: skip
        params = {"sort": sort, "order": "desc" if descending else "asc", "metric": metric,
                  "limit": limit, "offset": offset}  # fmt: skip
        path = f"/api/sweeps/{sweep_id}/jobs"
        return self._call(models.SweepJobList, "GET", path, params=params).items

    def act_on_sweep(self, sweep_id: UUID | str, action: str, **body: Any) -> models.SweepOutcome:
        """A bulk action: ``release``, ``force-start``, ``pause``, ``resume``, ``cancel``
        (``force=True``) or ``retry`` (of the failed jobs; ``from_checkpoint=False``)."""
        path = f"/api/sweeps/{sweep_id}/{action}"
        return self._call(models.SweepOutcome, "POST", path, json=body)

    def patch_sweep(self, sweep_id: UUID | str, **changes: Any) -> models.SweepOutcome:
        """``priority=`` for its waiting jobs, ``max_running=`` (None removes the cap)."""
        body = _body(SweepPatch, changes)
        return self._call(models.SweepOutcome, "PATCH", f"/api/sweeps/{sweep_id}", json=body)

    def wait_sweep(
        self, sweep_id: UUID | str, *, timeout: float | None = None, poll_seconds: float = 2.0
    ) -> models.Sweep:
        """The sweep once every one of its jobs has finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            sweep = self.sweep(sweep_id)
            if all(n == 0 for status, n in sweep.counts.items() if status not in FINISHED):
                return sweep
            _sleep_until(deadline, poll_seconds, f"sweep {sweep_id} still has jobs to run")

    # -- the cluster ------------------------------------------------------------

    def queue(self) -> models.Queue:
        return self._call(models.Queue, "GET", "/api/queue")

    def workers(self) -> list[models.Worker]:
        return self._call(models.WorkerList, "GET", "/api/workers").items

    def teams(self) -> list[models.Team]:
        return self._call(models.TeamList, "GET", "/api/teams").items

    # -- plumbing ---------------------------------------------------------------

    def _pages(self, model: type[Paged], path: str, params: dict[str, Any]) -> Iterator[Any]:
        """Every item of a listing, following its ``next_cursor`` page after page."""
        while True:
            page = self._call(model, "GET", path, params=params)
            yield from page.items
            if page.next_cursor is None:
                return
            params = {**params, "cursor": page.next_cursor}

    def _act(self, job_id: UUID | str, action: str, body: dict[str, Any]) -> models.Job:
        return self._call(models.Job, "POST", f"/api/training/{job_id}/{action}", json=body)

    def _call(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        if "params" in kwargs:
            kwargs["params"] = {k: v for k, v in kwargs["params"].items() if v is not None}
        response = self._http.request(method, path, **kwargs)
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_error:
            error = (data or {}).get("error") if isinstance(data, dict) else None
            if not isinstance(error, dict):
                raise ApiError(response.status_code, "http_error", response.text[:200], {})
            raise ApiError(response.status_code, str(error.get("code")),
                           str(error.get("message")), error.get("details") or {})  # fmt: skip
        return model.model_validate(known_fields(model, data))


def _body(model: type[BaseModel], spec: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """A request body checked here first (the same validation the API runs), without the
    fields left at their defaults; and sent as the API reads JSON."""
    if not isinstance(spec, BaseModel):
        spec = model.model_validate(dict(spec))
    return spec.model_dump(mode="json", exclude_unset=True)


def _sleep_until(deadline: float | None, seconds: float, what: str) -> None:
    if deadline is not None and time.monotonic() + seconds > deadline:
        raise TimeoutError(what)
    time.sleep(seconds)


def known_fields(model: Any, data: Any) -> Any:
    """``data`` without the keys ``model`` does not know, at every depth: the response
    models forbid unknown fields (the API's own tests rely on it), and a newer server
    may send more."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        if not isinstance(data, dict):
            return data
        fields = model.model_fields
        return {k: known_fields(fields[k].annotation, v) for k, v in data.items() if k in fields}
    origin = typing.get_origin(model)
    args = typing.get_args(model)
    if origin in (typing.Union, types.UnionType):
        nested = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        return known_fields(nested[0], data) if nested and isinstance(data, dict) else data
    if origin is list and isinstance(data, list) and args:
        return [known_fields(args[0], item) for item in data]
    if origin is dict and isinstance(data, dict) and len(args) == 2:
        return {k: known_fields(args[1], v) for k, v in data.items()}
    return data
