"""Reading what a client sent: JSON bodies, path ids and query arguments."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

from flask import request
from pydantic import BaseModel

from api.errors import ApiError
from jobqueue.specs import MAX_DEPTH

M = TypeVar("M", bound=BaseModel)
N = TypeVar("N", int, float)


def json_body(model: type[M], *, optional: bool = False) -> M:
    """The body validated by ``model``; an empty body is ``{}`` when ``optional``."""
    raw = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH: 413
    if not raw.strip():
        if optional:
            return model.model_validate({})
        raise ApiError(400, "invalid", "this request needs a JSON object body")
    if not request.is_json:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
            content_type=request.mimetype,
        )
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ApiError(400, "invalid", f"the body is nested over {MAX_DEPTH} levels") from exc
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid", "the body must be a JSON object")
    return model.model_validate(payload)


def job_id(raw: str, *, what: str = "job") -> UUID:
    """A path's id (a job's, or a sweep's with ``what``): a UUID, else 400 ``bad_id``."""
    try:
        return UUID(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_id", f"{raw!r} is not a {what} id (a UUID)", id=raw) from exc


def str_arg(name: str) -> str | None:
    """A text query argument; None when absent or empty."""
    raw = request.args.get(name)
    if raw and "\x00" in raw:
        raise ApiError(400, "invalid", f"{name} may not contain NUL (%00)", field=name)
    return raw or None


def int_arg(name: str, default: int, *, low: int, high: int) -> int:
    return _number_arg(name, default, int, "an integer", low, high)


def float_arg(name: str, default: float, *, low: float, high: float) -> float:
    """A number query argument: ``0.5`` means half, never truncated to ``0``."""
    return _number_arg(name, default, float, "a number", low, high)


def _number_arg(name: str, default: N, parse: Callable[[str], N], what: str, low: N, high: N) -> N:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = parse(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid", f"{name} must be {what}", field=name) from exc
    if not low <= value <= high:  # NaN compares false: refused too
        raise ApiError(400, "invalid", f"{name} must be between {low} and {high}", field=name)
    return value
