"""/api/training: submit, read and recover training jobs."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from api.acting import acting, count, queue, submitting_team
from api.auth import actor
from api.errors import ApiError
from api.requests import int_arg, job_id, json_body, str_arg
from jobqueue.records import Job
from jobqueue.specs import CancelBody, EmptyBody, JobPatch, JobSpec, MarkFailedBody, RetryBody
from jobqueue.states import JobStatus

bp = Blueprint("jobs", __name__, url_prefix="/api/training")


def _job(job: Job, status: int = 200):
    return jsonify(job.public()), status


def _acted(action: str, job: Job):
    """Count the accepted action; 200 when done, 202 while a running job's worker
    carries the request out."""
    count(action)
    return _job(job, 202 if job.stopping else 200)


@bp.post("")
def submit():
    spec = json_body(JobSpec)
    spec = spec.model_copy(update={"team": submitting_team(spec.team)})
    job, created = queue().submit(spec, actor=actor())
    if created:
        count("submit")
    return _job(job, 201 if created else 200)


@bp.get("")
def list_jobs():
    statuses = request.args.getlist("status")
    known = {s.value for s in JobStatus}
    unknown = [s for s in statuses if s not in known]
    if unknown:
        raise ApiError(
            400, "invalid", f"unknown status {unknown[0]!r}", field="status", allowed=sorted(known)
        )
    jobs, next_cursor = queue().list_jobs(
        statuses=statuses or None,
        pool=str_arg("pool"),
        team=str_arg("team"),
        name_contains=str_arg("q"),
        limit=int_arg("limit", 50, low=1, high=200),
        cursor=str_arg("cursor"),
    )
    return jsonify({"items": [j.public() for j in jobs], "next_cursor": next_cursor})


@bp.get("/<raw_id>")
def get_job(raw_id: str):
    return _job(queue().get(job_id(raw_id)))


@bp.patch("/<raw_id>")
def patch_job(raw_id: str):
    patch = json_body(JobPatch)
    job = acting().patch(job_id(raw_id), actor=actor(), priority=patch.priority, pool=patch.pool)
    count("patch")
    return _job(job)


@bp.get("/<raw_id>/events")
def events(raw_id: str):
    after = int_arg("after", 0, low=0, high=2**62)
    items = queue().events(job_id(raw_id), after=after)
    return jsonify({"items": [e.public() for e in items]})


@bp.get("/<raw_id>/logs")
def logs(raw_id: str):
    after = int_arg("after", 0, low=0, high=2**62)
    limit = int_arg("limit", 1000, low=1, high=10_000)
    lines, next_n = queue().logs(job_id(raw_id), after=after, limit=limit)
    return jsonify({"lines": [line.public() for line in lines], "next": next_n})


@bp.get("/<raw_id>/metrics")
def metrics(raw_id: str):
    limit = int_arg("limit", 2000, low=1, high=10_000)
    after = int_arg("after", -1, low=0, high=2**62)
    points = queue().metrics(job_id(raw_id), after=None if after < 0 else after, limit=limit)
    return jsonify({"points": [p.public() for p in points]})


@bp.post("/<raw_id>/release")
def release(raw_id: str):
    json_body(EmptyBody, optional=True)
    return _acted("release", acting().release(job_id(raw_id), actor=actor()))


@bp.post("/<raw_id>/force-start")
def force_start(raw_id: str):
    json_body(EmptyBody, optional=True)
    return _acted("force-start", acting().force_start(job_id(raw_id), actor=actor()))


@bp.post("/<raw_id>/pause")
def pause(raw_id: str):
    body = json_body(EmptyBody, optional=True)
    return _acted("pause", acting().pause(job_id(raw_id), actor=actor(), reason=body.reason))


@bp.post("/<raw_id>/resume")
def resume(raw_id: str):
    json_body(EmptyBody, optional=True)
    return _acted("resume", acting().resume(job_id(raw_id), actor=actor()))


@bp.post("/<raw_id>/cancel")
def cancel(raw_id: str):
    body = json_body(CancelBody, optional=True)
    outcome = acting().cancel(job_id(raw_id), actor=actor(), force=body.force, reason=body.reason)
    return _acted("cancel", outcome)


@bp.post("/<raw_id>/mark-failed")
def mark_failed(raw_id: str):
    body = json_body(MarkFailedBody)
    outcome = acting().mark_failed(job_id(raw_id), actor=actor(), reason=body.reason)
    return _acted("mark-failed", outcome)


@bp.post("/<raw_id>/retry")
def retry(raw_id: str):
    body = json_body(RetryBody, optional=True)
    job = acting().retry(job_id(raw_id), actor=actor(), from_checkpoint=body.from_checkpoint)
    return _acted("retry", job)
