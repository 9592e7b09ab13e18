"""What a sweep submit may ask for, validated whole before anything is written.

A sweep is one request for many jobs: a shared job body and a list of configs (or a
grid of them), or a list of whole job bodies (bulk submit). Every item is checked
first and every error reported with its index, so that either all jobs are created
or none.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, ValidationError, model_validator

from jobqueue.specs import (
    MAX_CONFIG_BYTES,
    ConfigTooLarge,
    JobSpec,
    StrictModel,
    TeamName,
    Unstorable,
    check_storable,
    config_json,
)

#: The most jobs one sweep (or bulk submit) may hold.
MAX_SWEEP_JOBS = 10_000

#: How a sweep's table may be ordered: by index, status, progress, or a reported metric.
SWEEP_JOB_ORDERS = ("index", "status", "progress", "metric")

#: A shared body's name leaves room for the ``[9999]`` each job's name gets (≤ 200 in all).
MAX_TEMPLATE_NAME = 194
SweepName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEMPLATE_NAME)]


class Objective(StrictModel):
    """Which reported metric ranks a sweep's jobs, and whether lower or higher is better."""

    metric: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    mode: Literal["min", "max"] = "min"


class SweepSpec(StrictModel):
    """The body of ``POST /api/sweeps``: exactly one of ``configs``, ``grid`` (both with
    ``job``, the body every job shares) or ``jobs`` (whole job bodies: bulk submit)."""

    name: SweepName
    #: The job body the configs or the grid fill in (its ``config`` is their base). Its
    #: ``name`` defaults to the sweep's; job ``i`` is named ``<name>[i]``.
    job: dict[str, Any] | None = None
    #: One job per config, each merged over the shared body's config.
    configs: list[Any] | None = None
    #: One job per combination of these values (the last key varies fastest).
    grid: dict[str, list[Any]] | None = None
    #: Whole job bodies, each with its own ``idempotency_key`` if wanted.
    jobs: list[Any] | None = None
    #: At most this many of its jobs run (or wait admitted) at once; null: no cap.
    max_running: int | None = Field(default=None, ge=1, le=MAX_SWEEP_JOBS)
    objective: Objective | None = None
    #: None: the submitting token's team; every job of the sweep is of its team.
    team: TeamName | None = None
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> SweepSpec:
        forms = [f for f in ("configs", "grid", "jobs") if getattr(self, f) is not None]
        if len(forms) != 1:
            raise ValueError("give exactly one of configs, grid or jobs")
        if forms[0] == "jobs" and self.job is not None:
            raise ValueError("jobs are whole job bodies: leave job out")
        if forms[0] != "jobs" and self.job is None:
            raise ValueError(f"{forms[0]} fill in a shared job body: give job too")
        count = self.size()
        if count == 0:
            raise ValueError(f"{forms[0]} is empty: a sweep has at least one job")
        if count > MAX_SWEEP_JOBS:
            raise ValueError(f"a sweep holds at most {MAX_SWEEP_JOBS:,} jobs, not {count:,}")
        return self

    def size(self) -> int:
        if self.grid is not None:
            return math.prod(len(values) for values in self.grid.values())
        return len(self.configs if self.configs is not None else self.jobs or [])

    def fingerprint(self) -> str:
        body = self.model_dump(mode="json", exclude={"idempotency_key"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def expand(self, team: str) -> list[JobSpec]:
        """The sweep's jobs in index order, all of team ``team``; raises
        :class:`SweepItemsInvalid` with every item's errors if any is invalid."""
        if self.jobs is not None:
            return _whole_bodies(self.jobs, team)
        template = _template(self.job or {}, self.name, team)
        return _filled(template, self._item_configs())

    def _item_configs(self) -> list[Any]:
        if self.configs is not None:
            return self.configs
        grid = self.grid or {}
        keys = list(grid)
        return [
            dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())
        ]


class SweepPatch(StrictModel):
    """What may change on a whole sweep: its waiting jobs' priority, and its cap on
    running jobs (``"max_running": null`` removes it; left out, it stays)."""

    priority: int | None = Field(default=None, ge=0, le=100)
    max_running: int | None = Field(default=None, ge=1, le=MAX_SWEEP_JOBS)

    @property
    def changes_cap(self) -> bool:
        return "max_running" in self.model_fields_set


class SweepItemsInvalid(ValueError):
    """Some items of a sweep are invalid: ``items`` lists each with its errors."""

    def __init__(self, items: list[dict[str, Any]]):
        first = items[0]
        super().__init__(
            f"{len(items)} of the sweep's items are invalid; item {first['index']}: "
            f"{first['errors'][0]['field'] or 'body'}: {first['errors'][0]['message']}"
        )
        self.items = items


def describe(exc: ValidationError) -> list[dict[str, Any]]:
    """A validation error as the API shows it: field, message, type per problem."""
    return [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def _problem(field: str, message: str, kind: str) -> dict[str, Any]:
    return {"field": field, "message": message, "type": kind}


def _template(body: dict[str, Any], sweep_name: str, team: str) -> JobSpec:
    if "idempotency_key" in body:
        raise SweepItemsInvalid([{"index": None, "errors": [_problem(
            "job.idempotency_key", "a sweep's jobs share one body: give the sweep the key",
            "value_error")]}])  # fmt: skip
    try:
        template = JobSpec.model_validate({"name": sweep_name, **body, "team": team})
    except ValidationError as exc:
        errors = [{**e, "field": f"job.{e['field']}"} for e in describe(exc)]
        raise SweepItemsInvalid([{"index": None, "errors": errors}]) from None
    if len(template.name) > MAX_TEMPLATE_NAME:
        raise SweepItemsInvalid([{"index": None, "errors": [_problem(
            "job.name", f"at most {MAX_TEMPLATE_NAME} characters in a sweep: each job's "
            "index is appended", "string_too_long")]}])  # fmt: skip
    return template


def _filled(template: JobSpec, configs: list[Any]) -> list[JobSpec]:
    """The template once per config (merged over its own), checked item by item: the
    template itself is valid, so only each config can be wrong."""
    bad: list[dict[str, Any]] = []
    specs = []
    base = template.config
    for index, config in enumerate(configs):
        problem = _config_problem(config)
        if problem is not None:
            bad.append({"index": index, "errors": [problem]})
            continue
        merged = {**base, **config}
        if len(config_json(merged).encode()) > MAX_CONFIG_BYTES:
            message = str(ConfigTooLarge(f"config is over {MAX_CONFIG_BYTES // 1024} KiB"))
            bad.append({"index": index, "errors": [_problem("config", message, "too_large")]})
            continue
        specs.append(
            template.model_copy(update={"name": f"{template.name}[{index}]", "config": merged})
        )
    if bad:
        raise SweepItemsInvalid(bad)
    return specs


def _config_problem(config: Any) -> dict[str, Any] | None:
    if not isinstance(config, dict):
        return _problem("config", "each config must be a JSON object", "dict_type")
    try:
        check_storable(config)
    except Unstorable as exc:
        return _problem("config", str(exc), exc.reason)
    return None


def _whole_bodies(bodies: list[Any], team: str) -> list[JobSpec]:
    bad: list[dict[str, Any]] = []
    specs = []
    for index, body in enumerate(bodies):
        if not isinstance(body, dict):
            problem = _problem("", "each job must be a JSON object", "dict_type")
            bad.append({"index": index, "errors": [problem]})
            continue
        if body.get("team", team) != team:
            problem = _problem("team", f"every job of the sweep is of team {team}", "value_error")
            bad.append({"index": index, "errors": [problem]})
            continue
        try:
            specs.append(JobSpec.model_validate({**body, "team": team}))
        except ValidationError as exc:
            bad.append({"index": index, "errors": describe(exc)})
    if bad:
        raise SweepItemsInvalid(bad)
    return specs
