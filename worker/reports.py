"""The ``::jobqueue::`` report lines a job prints (SPEC §4)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

PREFIX = "::jobqueue:: "
MAX_LINE_CHARS = 8192


@dataclasses.dataclass(frozen=True)
class Report:
    fraction: float | None = None
    step: int | None = None
    message: str | None = None
    metrics: dict[str, Any] | None = None
    checkpoint: str | None = None

    @property
    def has_progress(self) -> bool:
        return any(v is not None for v in (self.fraction, self.message, self.metrics)) or (
            self.step is not None and self.checkpoint is None
        )


def parse_report(line: str) -> Report | None:
    """The report on this line, or None when it is a log line (malformed ones too)."""
    if not line.startswith(PREFIX):
        return None
    try:
        body = json.loads(line[len(PREFIX) :])
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    try:
        if _has_nul(body):  # PostgreSQL can store no NUL character in text or jsonb
            return None
        return Report(
            fraction=_fraction(body.get("progress")),
            step=_int(body.get("step")),
            message=_str(body.get("message")),
            metrics=_metrics(body.get("metrics")),
            checkpoint=_str(body.get("checkpoint")),
        )
    except (TypeError, ValueError, OverflowError, RecursionError):
        return None


def _fraction(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError("progress must be a number")
    return min(max(float(value), 0.0), 1.0)


def _int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("step must be a number")
    step = int(value)
    if not -(2**63) <= step < 2**63:  # the database keeps steps as bigint
        raise ValueError("step is out of range")
    return step


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value[:2000]


def _metrics(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("metrics must be an object")
    # JSON has no NaN/Infinity: keep such values as strings rather than break storage.
    return {
        str(k): (v if not isinstance(v, float) or math.isfinite(v) else str(v))
        for k, v in value.items()
    }
