"""/healthz, /readyz and /metrics: open to probes and Prometheus, no token."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy.exc import SQLAlchemyError

from api.errors import error_response
from jobqueue.migrate import schema_status

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    engine = current_app.extensions["jobqueue"].engine
    try:
        problem = schema_status(engine).problem()
    except SQLAlchemyError as exc:
        message = f"database unreachable: {type(exc).__name__}"
        return error_response(503, "not_ready", message)
    if problem:
        return error_response(503, "not_ready", problem)
    return jsonify({"status": "ready"})


@bp.get("/metrics")
def metrics():
    body, content_type = current_app.extensions["jobqueue.metrics"].render()
    return Response(body, content_type=content_type)
