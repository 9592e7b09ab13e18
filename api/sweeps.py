"""/api/sweeps: many jobs in one request (a sweep of configs, a grid, or a bulk submit of
whole job bodies), managed as one: its summary, its table, and bulk actions."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from pydantic import BaseModel

from api.acting import acting, count, queue, submitting_team
from api.auth import actor
from api.errors import ApiError
from api.requests import int_arg, job_id, json_body, str_arg
from jobqueue.specs import CancelBody, EmptyBody, RetryBody
from jobqueue.states import Action
from jobqueue.sweep_specs import SWEEP_JOB_ORDERS, SweepPatch, SweepSpec
from jobqueue.sweeps import BulkOutcome

bp = Blueprint("sweeps", __name__, url_prefix="/api/sweeps")

#: A sweep body may hold 10,000 jobs: more than the 1 MiB the other routes take.
MAX_SWEEP_BODY_BYTES = 32 * 1024 * 1024

#: The bulk actions, each with the body it takes (all optional).
_ACTIONS: dict[str, tuple[Action, type[BaseModel]]] = {
    "release": (Action.RELEASE, EmptyBody),
    "force-start": (Action.FORCE_START, EmptyBody),
    "pause": (Action.PAUSE, EmptyBody),
    "resume": (Action.RESUME, EmptyBody),
    "cancel": (Action.CANCEL, CancelBody),
    "retry": (Action.RETRY, RetryBody),
}


@bp.before_request
def _larger_bodies() -> None:
    request.max_content_length = MAX_SWEEP_BODY_BYTES


def _outcome(outcome: BulkOutcome):
    return jsonify({
        "sweep": outcome.sweep.public(), "changed": outcome.changed,
        "requested": outcome.requested, "unchanged": outcome.unchanged,
    })  # fmt: skip


@bp.post("")
def submit():
    spec = json_body(SweepSpec)
    spec = spec.model_copy(update={"team": submitting_team(spec.team)})
    done = queue().submit_sweep(spec, actor=actor())
    count("submit", sum(1 for item in done.items if item.created))
    body = {
        "sweep": done.sweep.public(),
        "jobs": [{"index": i.index, "id": i.id, "created": i.created} for i in done.items],
    }
    return jsonify(body), 201 if done.created else 200


@bp.get("")
def list_sweeps():
    sweeps, next_cursor = queue().sweeps(
        team=str_arg("team"),
        limit=int_arg("limit", 50, low=1, high=200),
        cursor=str_arg("cursor"),
    )
    return jsonify({"items": [s.public() for s in sweeps], "next_cursor": next_cursor})


@bp.get("/<raw_id>")
def get_sweep(raw_id: str):
    return jsonify(queue().sweep(job_id(raw_id, what="sweep")).public())


@bp.get("/<raw_id>/jobs")
def sweep_jobs(raw_id: str):
    """The sweep's table: each job's config beside its latest metrics, sortable by
    ``sort`` (index, status, progress, or metric with ``metric=<name>``) and ``order``."""
    sort = str_arg("sort") or "index"
    if sort not in SWEEP_JOB_ORDERS:
        raise ApiError(400, "invalid", f"sort must be one of {', '.join(SWEEP_JOB_ORDERS)}",
                       field="sort", allowed=list(SWEEP_JOB_ORDERS))  # fmt: skip
    metric = str_arg("metric")
    if sort == "metric" and not metric:
        raise ApiError(400, "invalid", "sort=metric needs metric=<name>", field="metric")
    order = str_arg("order") or "asc"
    if order not in ("asc", "desc"):
        raise ApiError(400, "invalid", "order must be asc or desc", field="order")
    rows = queue().sweep_jobs(
        job_id(raw_id, what="sweep"),
        sort=sort,
        descending=order == "desc",
        metric=metric,
        limit=int_arg("limit", 100, low=1, high=1000),
        offset=int_arg("offset", 0, low=0, high=10**6),
    )
    return jsonify({"items": [r.public() for r in rows]})


@bp.patch("/<raw_id>")
def patch_sweep(raw_id: str):
    """The waiting jobs' priority and/or the cap (``"max_running": null`` removes it)."""
    patch = json_body(SweepPatch)
    return _outcome(acting().patch_sweep(job_id(raw_id, what="sweep"), patch, actor=actor()))


@bp.post("/<raw_id>/<name>")
def act(raw_id: str, name: str):
    if name not in _ACTIONS:
        raise ApiError(404, "not_found", f"no route {request.method} {request.path}")
    action, model = _ACTIONS[name]
    body: BaseModel = json_body(model, optional=True)
    options = body.model_dump(exclude_unset=False)
    outcome = acting().act_on_sweep(job_id(raw_id, what="sweep"), action, actor=actor(), **options)
    count(name)
    return _outcome(outcome)
