"""The OpenAPI 3 document, generated from the same pydantic models the API uses."""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from jobqueue import api_models as schemas
from jobqueue.specs import (
    CancelBody,
    EmptyBody,
    JobPatch,
    JobSpec,
    MarkFailedBody,
    RetryBody,
    TeamSpec,
)
from jobqueue.states import JobStatus
from jobqueue.sweep_specs import SWEEP_JOB_ORDERS, SweepPatch, SweepSpec

REF = "#/components/schemas/{model}"


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    body_required: bool = False
    query: tuple[dict[str, Any], ...] = ()
    errors: tuple[int, ...] = (400, 401, 403, 404)
    open: bool = False  # no token needed


def _q(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description, **extra}  # fmt: skip


_ID = "/api/training/{id}"
_SWEEP = "/api/sweeps/{id}"
_ACTION_ERRORS = (400, 401, 403, 404, 409, 413, 415)
_BULK_ERRORS = (400, 401, 403, 404, 413, 415)


def _bulk(name: str, summary: str, body: type[BaseModel]) -> Route:
    return Route("post", f"{_SWEEP}/{name}", summary, {200: schemas.SweepOutcome}, body=body,
                 errors=_BULK_ERRORS)  # fmt: skip


ROUTES: tuple[Route, ...] = (
    Route("post", "/api/training", "Submit a job", {201: schemas.Job, 200: schemas.Job},
          body=JobSpec, body_required=True, errors=(400, 401, 403, 409, 413, 415)),
    Route("get", "/api/training", "List jobs, newest first", {200: schemas.JobList},
          query=(
              _q("status", {"type": "array", "items": {"type": "string",
                 "enum": [s.value for s in JobStatus]}}, "only these statuses",
                 style="form", explode=True),
              _q("pool", {"type": "string"}, "only this pool"),
              _q("team", {"type": "string"}, "only this team's jobs"),
              _q("q", {"type": "string"}, "name contains (case-insensitive)"),
              _q("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                 "page size"),
              _q("cursor", {"type": "string"}, "next_cursor of the previous page"),
          ), errors=(400, 401, 403)),
    Route("get", _ID, "One job", {200: schemas.Job}),
    Route("patch", _ID, "Change priority or pool of a pending or queued job", {200: schemas.Job},
          body=JobPatch, body_required=True, errors=_ACTION_ERRORS),
    Route("get", _ID + "/events", "The job's events, oldest first", {200: schemas.EventList},
          query=(_q("after", {"type": "integer", "minimum": 0, "default": 0},
                    "id of the last event seen: only later ones"),)),
    Route("get", _ID + "/logs", "Log lines numbered after `after`", {200: schemas.Logs},
          query=(
              _q("after", {"type": "integer", "minimum": 0, "default": 0}, "last line seen"),
              _q("limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
                 "most lines"),
          )),
    Route("get", _ID + "/metrics", "Reported metrics, oldest first", {200: schemas.Metrics},
          query=(_q("limit", {"type": "integer", "minimum": 1, "maximum": 10000,
                              "default": 2000}, "most points"),
                 _q("after", {"type": "integer", "minimum": 0},
                    "n of the last point seen: the points after it (else the newest)"))),
    Route("post", _ID + "/release", "Queue a held job", {200: schemas.Job},
          body=EmptyBody, errors=_ACTION_ERRORS),
    Route("post", _ID + "/force-start", "Put a pending or queued job ahead of every "
          "non-forced job", {200: schemas.Job}, body=EmptyBody, errors=_ACTION_ERRORS),
    Route("post", _ID + "/pause", "Pause a job", {200: schemas.Job, 202: schemas.Job},
          body=EmptyBody, errors=_ACTION_ERRORS),
    Route("post", _ID + "/resume", "Resume a paused job", {200: schemas.Job},
          body=EmptyBody, errors=_ACTION_ERRORS),
    Route("post", _ID + "/cancel", "Cancel a job", {200: schemas.Job, 202: schemas.Job},
          body=CancelBody, errors=_ACTION_ERRORS),
    Route("post", _ID + "/mark-failed", "End a job as failed, with a reason",
          {200: schemas.Job, 202: schemas.Job}, body=MarkFailedBody, body_required=True,
          errors=_ACTION_ERRORS),
    Route("post", _ID + "/retry", "New attempt of a failed or cancelled job",
          {200: schemas.Job}, body=RetryBody, errors=_ACTION_ERRORS),
    Route("post", "/api/sweeps", "Submit a sweep (configs or a grid over one job body) or a "
          "bulk of whole job bodies: every item valid, or nothing is created",
          {201: schemas.SweepSubmitted, 200: schemas.SweepSubmitted}, body=SweepSpec,
          body_required=True, errors=(400, 401, 403, 409, 413, 415)),
    Route("get", "/api/sweeps", "List sweeps, newest first, with their summaries",
          {200: schemas.SweepList},
          query=(_q("team", {"type": "string"}, "only this team's sweeps"),
                 _q("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                    "page size"),
                 _q("cursor", {"type": "string"}, "next_cursor of the previous page")),
          errors=(400, 401, 403)),
    Route("get", _SWEEP, "One sweep: counts by status, held jobs, best job",
          {200: schemas.Sweep}),
    Route("get", _SWEEP + "/jobs", "The sweep's jobs: configs beside latest metrics",
          {200: schemas.SweepJobList},
          query=(_q("sort", {"type": "string", "enum": list(SWEEP_JOB_ORDERS),
                             "default": "index"}, "order by; metric needs metric=<name>"),
                 _q("metric", {"type": "string"}, "the reported metric sort=metric orders by"),
                 _q("order", {"type": "string", "enum": ["asc", "desc"], "default": "asc"},
                    "direction (jobs without the value last)"),
                 _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                              "default": 100}, "page size"),
                 _q("offset", {"type": "integer", "minimum": 0, "default": 0}, "rows to skip"))),
    Route("patch", _SWEEP, "Change the waiting jobs' priority and/or max_running (null: no "
          "cap)", {200: schemas.SweepOutcome}, body=SweepPatch, body_required=True,
          errors=_BULK_ERRORS),
    _bulk("release", "Queue the sweep's held jobs", EmptyBody),
    _bulk("force-start", "Force-start the sweep's pending and queued jobs", EmptyBody),
    _bulk("pause", "Pause the sweep's jobs (running ones by their workers)", EmptyBody),
    _bulk("resume", "Resume the sweep's paused jobs", EmptyBody),
    _bulk("cancel", "Cancel the sweep's jobs (running ones by their workers)", CancelBody),
    _bulk("retry", "Retry the sweep's failed jobs", RetryBody),
    Route("get", "/api/queue", "Claimable jobs per pool in claim order", {200: schemas.Queue},
          errors=(401, 403)),
    Route("get", "/api/workers", "Workers, their GPUs and running jobs",
          {200: schemas.WorkerList}, errors=(401, 403)),
    Route("get", "/api/teams", "Teams with their fair-share weight and GPU quotas",
          {200: schemas.TeamList}, errors=(401, 403)),
    Route("put", "/api/teams/{team}", "Create or change a team (admin)", {200: schemas.Team},
          body=TeamSpec, body_required=True, errors=(400, 401, 403, 413, 415)),
    Route("post", "/api/admin/prune", "Delete finished jobs older than a cut-off",
          {200: schemas.Pruned},
          query=(_q("older_than_days", {"type": "number", "minimum": 0, "maximum": 36500},
                    "age in days, fractions allowed; default JOBQUEUE_PRUNE_AFTER_DAYS"),),
          errors=(400, 401, 403)),
    Route("get", "/api/openapi.json", "This document", {200: None}, errors=(401, 403)),
    Route("get", "/healthz", "Liveness", {200: None}, errors=(), open=True),
    Route("get", "/readyz", "Readiness: database reachable and schema at head",
          {200: None, 503: schemas.Error}, errors=(), open=True),
    Route("get", "/metrics", "Prometheus metrics", {200: None}, errors=(), open=True),
)  # fmt: skip

_ERROR_TEXT = {
    400: "Bad input",
    401: "No or invalid token",
    403: "The token's role is not allowed",
    404: "Unknown job",
    409: "Not allowed in the job's current status",
    413: "Body over 1 MiB",
    415: "Body is not JSON",
    503: "Not ready",
}


def _models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = [schemas.Error]
    for route in ROUTES:
        if route.body is not None:
            found.append(route.body)
        found.extend(m for m in route.responses.values() if m is not None)
    return list(dict.fromkeys(found))


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _operation(route: Route) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, model in route.responses.items():
        content = {"application/json": {"schema": _ref(model)}} if model else None
        responses[str(status)] = {"description": "OK" if status < 300 else _ERROR_TEXT[status]}
        if content:
            responses[str(status)]["content"] = content
    for status in route.errors:
        responses[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {"application/json": {"schema": _ref(schemas.Error)}},
        }
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method}_{route.path.strip('/').replace('/', '_')}".replace("{", "")
        .replace("}", "")
        .replace("-", "_")
        .replace(".", "_"),
        "responses": responses,
    }
    parameters = list(route.query)
    if "{id}" in route.path:
        parameters.insert(0, {"name": "id", "in": "path", "required": True,
                              "schema": {"type": "string", "format": "uuid"}})  # fmt: skip
    if "{team}" in route.path:
        name = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,100}$"}
        parameters.insert(0, {"name": "team", "in": "path", "required": True, "schema": name})
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": _ref(route.body)}},
        }
    if route.open:
        operation["security"] = []
    return operation


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    models = _models()
    _, top = models_json_schema(
        [(m, "serialization" if m.__module__ == schemas.__name__ else "validation")
         for m in models],
        ref_template=REF,
    )  # fmt: skip
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "jobqueue", "version": "1.0.0",
                 "description": "Durable job queue for ML training jobs on your own GPU hosts."},
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }  # fmt: skip
