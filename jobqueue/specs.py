"""What callers may ask for, validated once (SPEC §3).

The API uses these same models for request validation and for its OpenAPI
document; the CLI and in-process callers go through them too.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

MAX_CONFIG_BYTES = 256 * 1024

Kind = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]
PoolName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
]
TeamName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
]
#: The team of a job submitted by a caller that names none.
DEFAULT_TEAM = "default"
_TEAM_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def check_team_name(name: str) -> str:
    """A team's name as a path segment or argument: 1-100 letters, digits and ._-."""
    if not _TEAM_NAME.match(name):
        raise ValueError(f"{name!r} is not a team name (1-100 letters, digits and ._-)")
    return name


#: Deepest nesting of objects and arrays a request may have (configs are far shallower).
MAX_DEPTH = 64


class ConfigTooLarge(ValueError):
    """The job's config is over 256 KiB serialized."""


class Unstorable(ValueError):
    """A value PostgreSQL cannot store: ``reason`` is ``nul``, ``not_finite`` or ``too_deep``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def check_storable(value: Any) -> None:
    """Refuse what Python and JSON allow but PostgreSQL cannot store, and absurd nesting:
    text and jsonb refuse NUL characters; jsonb refuses NaN and infinities."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise Unstorable("too_deep", f"nested over {MAX_DEPTH} levels")
            members = item.values() if isinstance(item, dict) else item
            stack.extend((member, depth + 1) for member in members)
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise Unstorable("nul", "strings may not contain NUL (\\u0000)")
        elif isinstance(item, float) and not math.isfinite(item):
            raise Unstorable("not_finite", "numbers must be finite (no NaN or Infinity)")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        """Every caller (API, CLI, in-process) gets a clear error, not a database error."""
        check_storable(data)
        return data


class JobSpec(StrictModel):
    """The body of a submit."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    kind: Kind
    config: dict[str, Any] = Field(default_factory=dict)
    gpus: int = Field(default=1, ge=0, le=64)
    pool: PoolName = "default"
    #: None: the submitting token's team, else ``default``.
    team: TeamName | None = None
    priority: int = Field(default=50, ge=0, le=100)
    max_attempts: int = Field(default=3, ge=1, le=100)
    max_interruptions: int = Field(default=10, ge=0, le=1000)
    #: Seconds a run may last before the worker stops it; None: the pool's default
    #: (``JOBQUEUE_POOL_MAX_RUNTIME_SECONDS``), else no limit.
    max_runtime_seconds: int | None = Field(default=None, ge=1, le=10**9)
    #: Whether the scheduler may stop it (checkpoint, back to the queue) for a job it owes.
    preemptible: bool = True
    hold: bool = False
    # Not strict: JSON carries datetimes as strings; a naive time is refused.
    not_before: Annotated[AwareDatetime | None, Field(strict=False)] = None
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    @field_validator("config")
    @classmethod
    def _config_size(cls, config: dict[str, Any]) -> dict[str, Any]:
        if len(config_json(config).encode()) > MAX_CONFIG_BYTES:
            raise ConfigTooLarge(f"config is over {MAX_CONFIG_BYTES // 1024} KiB serialized")
        return config

    @field_validator("not_before", mode="before")
    @classmethod
    def _iso_8601(cls, value: Any) -> Any:
        """ISO-8601 text (or a datetime): lax parsing would take numbers as Unix times."""
        if value is None or isinstance(value, datetime):
            return value
        if isinstance(value, str) and not _is_number(value):
            return value
        raise ValueError("not_before must be an ISO-8601 date-time with a time zone")

    @field_validator("not_before")
    @classmethod
    def _in_range(cls, value: datetime | None) -> datetime | None:
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError("not_before is out of range (years 1 to 9999 in UTC)") from None
        return value

    def fingerprint(self) -> str:
        """Identifies the request, so a reused idempotency key with another body is caught."""
        body = self.model_dump(mode="json")
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class TeamSpec(StrictModel):
    """What an admin sets for a team (``PUT /api/teams/{team}``)."""

    #: Its weight in fair share; a team of share 2 is owed twice the GPU time of share 1.
    share: float = Field(default=1.0, gt=0, le=1_000_000)
    #: GPUs the team may hold at once per pool; a pool left out, or null: no quota.
    quota_gpus: dict[PoolName, Annotated[int, Field(ge=0, le=100_000)] | None] = Field(
        default_factory=dict
    )


class JobPatch(StrictModel):
    """Fields of a pending or queued job that may change without losing its place."""

    priority: int | None = Field(default=None, ge=0, le=100)
    pool: PoolName | None = None


class CancelBody(StrictModel):
    force: bool = False
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


class MarkFailedBody(StrictModel):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class RetryBody(StrictModel):
    from_checkpoint: bool = True


class EmptyBody(StrictModel):
    """Actions that take no options accept an empty object."""

    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def config_json(config: dict[str, Any]) -> str:
    return json.dumps(config, separators=(",", ":"), ensure_ascii=False)
