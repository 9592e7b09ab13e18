"""Shared fixtures and helpers of the REST API tests (SPEC §3).

The app is the real one (``api.create_app``) over a fresh migrated database
per test, with auth on and three tokens:

- ``operator:op-token``  — unnamed operator: events record the actor ``operator``;
- ``ci:viewer:view-token`` — a viewer named ``ci``;
- ``admin:admin-token``  — an admin.

Every response that goes through :class:`Api` is checked for what holds
everywhere: never a 5xx (``/readyz`` may say 503), JSON (never HTML) under
``/api``, error bodies of the shape ``{"error": {"code", "message", "details"}}``,
and every 2xx body valid for its published model in :mod:`api.schemas`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import BaseModel
from sqlalchemy import Engine, text
from werkzeug.test import TestResponse

from api import create_app, schemas
from jobqueue.db import make_engine
from jobqueue.leases import WorkerIdentity, WorkerStore
from jobqueue.settings import Settings

__all__ = [
    "ADMIN",
    "OPERATOR",
    "TOKENS",
    "VIEWER",
    "Api",
    "api_fixture",
    "api_settings_fixture",
    "app_fixture",
    "bearer",
    "error_of",
    "job_of",
    "make_settings",
    "run_job",
    "shared_api_fixture",
]

OPERATOR = "op-token"
VIEWER = "view-token"
ADMIN = "admin-token"
TOKENS = f"operator:{OPERATOR},ci:viewer:{VIEWER},admin:{ADMIN}"

_MISSING: Any = object()

_ID = r"/api/training/[^/]+"
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

    def submit(self, **overrides: Any) -> dict[str, Any]:
        """Submit a job (name ``resnet``, kind ``train``); returns the 201 job object."""
        body: dict[str, Any] = {"name": "resnet", "kind": "train", "config": {"lr": 0.1}}
        body.update(overrides)
        return job_of(self.post("/api/training", json=body), 201)

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


@pytest.fixture(name="api_settings")
def api_settings_fixture(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(name="app")
def app_fixture(api_settings: Settings, engine: Engine) -> Flask:
    """The API over this test's own fresh database."""
    return create_app(api_settings, engine=engine, background=False)


@pytest.fixture(name="api")
def api_fixture(app: Flask) -> Api:
    return Api(app.test_client())


@pytest.fixture(scope="module", name="shared_api")
def shared_api_fixture(databases) -> Iterator[Api]:
    """One API over one database for a whole module: for checks that leave nothing behind
    (refused input, auth, unknown ids), where a fresh database per test costs more than
    the test."""
    url = databases.create()
    engine = make_engine(url, pool_size=2)
    try:
        yield Api(create_app(make_settings(url), engine=engine, background=False).test_client())
    finally:
        engine.dispose()
        databases.drop(url)
