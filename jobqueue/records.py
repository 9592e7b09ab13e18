"""Plain records the core hands out: a job row, and what people see of it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from jobqueue.states import JobStatus, allowed_actions

#: Fields of the job object in SPEC §3, in the order the API shows them.
PUBLIC_FIELDS = (
    "id", "name", "kind", "config", "status", "pool", "team", "owner", "gpus", "priority",
    "forced",
    "queue_position", "queue_position_estimate", "waiting_reason", "expected_start_at",
    "not_before", "attempt",
    "max_attempts",
    "interruptions", "max_interruptions", "max_runtime_seconds", "preemptible", "preempted",
    "progress", "checkpoint",
    "worker",
    "requested_action", "termination_reason", "exit_code", "signal", "error_message",
    "log_tail", "idempotency_key", "sweep_id", "sweep_index", "created_at", "queued_at",
    "started_at", "finished_at",
    "updated_at", "allowed_actions",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Job:
    """One row of ``jobs``. ``queue_position``/``waiting_reason`` are filled by reads."""

    id: UUID
    name: str
    kind: str
    config: dict[str, Any]
    status: JobStatus
    pool: str
    team: str
    owner: str
    gpus: int
    priority: int
    forced_at: datetime | None
    queued_at: datetime
    not_before: datetime | None
    attempt: int
    max_attempts: int
    interruptions: int
    max_interruptions: int
    max_runtime_seconds: int | None
    preemptible: bool
    preempted: int
    progress: dict[str, Any] | None
    checkpoint: dict[str, Any] | None
    worker_name: str | None
    gpu_ids: list[int] | None
    lease_token: UUID | None
    lease_expires_at: datetime | None
    requested_action: str | None
    requested_by: str | None
    request_reason: str | None
    request_kill: bool
    termination_reason: str | None
    exit_code: int | None
    signal: int | None
    error_message: str | None
    log_tail: list[str] | None
    log_count: int
    metric_count: int
    idempotency_key: str | None
    request_fingerprint: str | None
    sweep_id: UUID | None
    sweep_index: int | None
    #: Queued but held back by its sweep's ``max_running`` (not claimable yet).
    sweep_held: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    #: Exact near the head of the queue (the first ``exact_positions``), else None.
    queue_position: int | None = None
    #: ``queue_position`` when exact, else an estimate from the pass's queue marks.
    queue_position_estimate: int | None = None
    waiting_reason: str | None = None
    #: The scheduling pass's estimate (table expected_starts), read with the wait.
    expected_start_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Job:
        values = {f.name: row[f.name] for f in _ROW_FIELDS}
        values["status"] = JobStatus(values["status"])
        return cls(**values)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Job:
        """A job from its row as PostgreSQL's ``to_jsonb`` gives it (``values`` is used up).

        One JSON value costs far less to fetch and decode than a column for each field, which is
        what the GET of a job, polled by every open job page, reads. Only the times and
        ids need turning back into Python values.
        """
        for name in _JSON_TIMES:
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        for name in _JSON_UUIDS:
            if values[name] is not None:
                values[name] = UUID(values[name])
        values["status"] = JobStatus(values["status"])
        return cls(**{f.name: values[f.name] for f in _ROW_FIELDS})

    @property
    def forced(self) -> bool:
        return self.forced_at is not None

    @property
    def stopping(self) -> bool:
        """Running with a request its worker has yet to carry out (the API answers 202)."""
        return self.status is JobStatus.RUNNING and self.requested_action is not None

    def with_wait(
        self,
        position: int | None,
        reason: str | None,
        expected_start_at: datetime | None = None,
        position_estimate: int | None = None,
    ) -> Job:
        """A copy with its queue position (exact, or only estimated), waiting reason and
        expected start.

        A plain copy of the fields: ``dataclasses.replace`` runs ``__init__`` over every
        field again, the largest single cost of building a list page in a profile.
        """
        clone = object.__new__(Job)
        clone.__dict__.update(
            self.__dict__,
            queue_position=position,
            queue_position_estimate=position if position is not None else position_estimate,
            waiting_reason=reason,
            expected_start_at=expected_start_at,
        )
        return clone

    def public(self) -> dict[str, Any]:
        """The job object of SPEC §3 (JSON-ready apart from datetimes and the UUID)."""
        out: dict[str, Any] = {}
        for name in PUBLIC_FIELDS:
            if name == "forced":
                out[name] = self.forced
            elif name == "worker":
                out[name] = (
                    {"name": self.worker_name, "gpu_ids": list(self.gpu_ids or [])}
                    if self.worker_name
                    else None
                )
            elif name == "status":
                out[name] = self.status.value
            elif name == "expected_start_at":
                # The scheduling pass's estimate; only a queued job has one.
                queued = self.status is JobStatus.QUEUED
                out[name] = self.expected_start_at if queued else None
            elif name == "allowed_actions":
                out[name] = [a.value for a in allowed_actions(self.status, self.requested_action)]
            else:
                out[name] = getattr(self, name)
        return out


_ROW_FIELDS = [
    f
    for f in dataclasses.fields(Job)
    if f.name
    not in ("queue_position", "queue_position_estimate", "waiting_reason", "expected_start_at")
]
# The fields a JSON row holds as strings (annotations are strings here: see __future__).
_JSON_TIMES = [f.name for f in _ROW_FIELDS if f.type in ("datetime", "datetime | None")]
_JSON_UUIDS = [f.name for f in _ROW_FIELDS if f.type in ("UUID", "UUID | None")]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A sweep's row and its summary: its jobs by status, how many its cap holds back,
    and its best job by its objective."""

    id: UUID
    name: str
    team: str
    owner: str
    max_running: int | None
    objective: dict[str, Any] | None
    job_count: int
    idempotency_key: str | None
    request_fingerprint: str | None
    created_at: datetime
    updated_at: datetime
    counts: dict[str, int]
    held: int
    best: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Sweep:
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})

    def public(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        del out["request_fingerprint"]
        counts = {s.value: 0 for s in JobStatus}
        counts.update(self.counts)
        out["counts"] = counts
        return out


@dataclasses.dataclass(frozen=True)
class SweepJob:
    """A row of a sweep's table: a job's config beside its latest metrics."""

    id: UUID
    sweep_index: int
    name: str
    status: str
    config: dict[str, Any]
    progress: dict[str, Any] | None
    attempt: int
    termination_reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    sweep_held: bool

    def public(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["metrics"] = (self.progress or {}).get("metrics")
        return out


@dataclasses.dataclass(frozen=True)
class Event:
    #: Increasing within a job (and across jobs): what ``events?after=`` takes.
    id: int
    at: datetime
    from_status: str | None
    to_status: str
    action: str
    actor: str
    reason: str | None

    def public(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LogLine:
    n: int
    stream: str
    text: str
    at: datetime

    def public(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MetricPoint:
    #: The point's number within its job, from 1: what ``metrics?after=`` takes.
    n: int
    step: int | None
    at: datetime
    metrics: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Team:
    """A team's row: its fair-share weight and GPU quota per pool (None: no quota)."""

    name: str
    share: float
    quota_gpus: dict[str, int | None]
    #: None for a team nobody has set up (it has jobs or recent usage).
    created_at: datetime | None
    updated_at: datetime | None
    #: Its recent GPU usage (decayed GPU-seconds) and the scheduling pass's view of it.
    usage_gpu_seconds: float = 0.0
    usage_fraction: float = 0.0
    share_fraction: float = 0.0
    factor: float = 1.0
    lead_seconds: float = 0.0
    #: GPUs its running jobs hold now, per pool.
    gpus_running: dict[str, int] = dataclasses.field(default_factory=dict)
    jobs_queued: int = 0

    def public(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_UNKNOWN_DEVICE: dict[str, Any] = dict.fromkeys(
    ("id", "name", "utilization", "memory_used", "memory_total")
)


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """A worker's heartbeat row, as people and the waiting reasons see it."""

    name: str
    hostname: str
    pools: list[str]
    kinds: list[str]
    gpu_total: int
    gpu_free: int
    devices: list[dict[str, Any]]
    started_at: datetime
    last_heartbeat_at: datetime
    stopped_at: datetime | None
    alive: bool
    running_jobs: list[UUID]
    #: The reservation its GPUs are kept for (job_id, job_name, gpus, starts_at, extra_gpus).
    reservation: dict[str, Any] | None = None

    def public(self) -> dict[str, Any]:
        # A virtual GPU, or one whose stats could not be read, still has every field.
        devices = [{**_UNKNOWN_DEVICE, **device} for device in self.devices]
        return {
            "name": self.name,
            "hostname": self.hostname,
            "pools": self.pools,
            "kinds": self.kinds,
            "gpus": {"total": self.gpu_total, "free": self.gpu_free, "devices": devices},
            "last_heartbeat_at": self.last_heartbeat_at,
            "alive": self.alive,
            "running_jobs": self.running_jobs,
            "reservation": self.reservation,
        }


@dataclasses.dataclass(frozen=True)
class Claimed:
    """A job a worker just claimed: what it needs to run it and to write about it."""

    job: Job

    @property
    def id(self) -> UUID:
        return self.job.id

    @property
    def lease_token(self) -> UUID:
        assert self.job.lease_token is not None
        return self.job.lease_token

    @property
    def gpu_ids(self) -> list[int]:
        return list(self.job.gpu_ids or [])
