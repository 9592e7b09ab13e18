"""Every error the API answers is JSON: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from jobqueue.errors import (
    IdempotencyConflict,
    InvalidCursor,
    InvalidTransition,
    JobNotFound,
    JobqueueError,
    OtherTeam,
    SweepIdempotencyConflict,
    SweepNotFound,
)
from jobqueue.specs import ConfigTooLarge, Unstorable
from jobqueue.sweep_specs import SweepItemsInvalid, describe

log = logging.getLogger(__name__)

#: JSON codes of the HTTP errors Flask/werkzeug raise by themselves.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None):
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return describe(exc)


def validation_code(exc: ValidationError) -> str:
    """The error code, from what the core's validators raised: a config over its size is
    ``config_too_large``, a NaN or infinity (which JSON parsing let through) ``bad_json``."""
    for error in exc.errors(include_url=False, include_input=False):
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, ConfigTooLarge):
            return "config_too_large"
        if isinstance(cause, Unstorable) and cause.reason == "not_finite":
            return "bad_json"
    return "invalid"


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError):
        errors = validation_details(exc)
        message = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
        return error_response(400, validation_code(exc), message, {"errors": errors})

    @app.errorhandler(JobNotFound)
    def _not_found(exc: JobNotFound):
        return error_response(404, "not_found", str(exc), {"id": str(exc.job_id)})

    @app.errorhandler(InvalidTransition)
    def _conflict(exc: InvalidTransition):
        details = {"status": exc.status, "action": exc.action, "id": str(exc.job_id)}
        return error_response(409, "invalid_transition", str(exc), details)

    @app.errorhandler(IdempotencyConflict)
    def _idempotency(exc: IdempotencyConflict):
        details = {"idempotency_key": exc.key, "id": str(exc.job_id)}
        return error_response(409, "idempotency_conflict", str(exc), details)

    @app.errorhandler(OtherTeam)
    def _other_team(exc: OtherTeam):
        details = {"id": str(exc.job_id), "job_team": exc.job_team, "team": exc.team}
        return error_response(403, "forbidden", str(exc), details)

    @app.errorhandler(SweepItemsInvalid)
    def _sweep_items(exc: SweepItemsInvalid):
        return error_response(400, "invalid_items", str(exc), {"items": exc.items})

    @app.errorhandler(SweepNotFound)
    def _sweep_not_found(exc: SweepNotFound):
        return error_response(404, "not_found", str(exc), {"id": str(exc.sweep_id)})

    @app.errorhandler(SweepIdempotencyConflict)
    def _sweep_idempotency(exc: SweepIdempotencyConflict):
        details = {"idempotency_key": exc.key, "id": str(exc.sweep_id)}
        return error_response(409, "idempotency_conflict", str(exc), details)

    @app.errorhandler(InvalidCursor)
    def _cursor(exc: InvalidCursor):
        return error_response(400, "bad_cursor", str(exc))

    @app.errorhandler(JobqueueError)
    def _core(exc: JobqueueError):
        return error_response(409, exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        status = exc.code or 500
        details: dict[str, Any] = {}
        if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            details["allowed"] = sorted(exc.valid_methods)  # type: ignore[attr-defined]
        message = exc.description or exc.name
        if status == 404 and request.path.startswith("/api"):
            message = f"no route {request.method} {request.path}"
        return error_response(status, HTTP_CODES.get(status, "http_error"), message, details)

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def _database_away(exc: Exception):
        log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
        return error_response(503, "database_unavailable", "the database is not reachable; retry")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the server log")
