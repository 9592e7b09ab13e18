"""Response models of the REST API (SPEC §3).

They are the source of the OpenAPI document (:mod:`api.openapi`) and what the Python
client (:mod:`jobqueue.client`) parses answers into; request models are
:mod:`jobqueue.specs` and :mod:`jobqueue.sweep_specs`. The API renders responses from
the core's records directly, and the tests validate them against these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from jobqueue.states import Action as ActionName
from jobqueue.states import JobStatus

if TYPE_CHECKING:  # a Literal built at run time is no type to a checker: str to it
    Status = str
    Action = str
else:
    Status = Literal[tuple(s.value for s in JobStatus)]
    Action = Literal[tuple(a.value for a in ActionName)]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Progress(_Out):
    fraction: float | None
    step: int | None
    message: str | None
    metrics: dict[str, Any] | None
    updated_at: datetime | None


class Checkpoint(_Out):
    uri: str
    step: int | None
    at: datetime


class WorkerRef(_Out):
    name: str
    gpu_ids: list[int]


class Job(_Out):
    id: UUID
    name: str
    kind: str
    config: dict[str, Any]
    status: Status
    pool: str
    team: str
    owner: str
    gpus: int
    priority: int
    forced: bool
    #: Exact among the first JOBQUEUE_EXACT_POSITIONS claimable jobs of its pool, else null.
    queue_position: int | None
    #: queue_position when exact; further back an estimate from the scheduling pass's
    #: queue marks (null when the pass has not marked the queue yet).
    queue_position_estimate: int | None
    waiting_reason: str | None
    #: When the scheduling pass expects it to start (queued jobs it planned), else null.
    expected_start_at: datetime | None
    not_before: datetime | None
    attempt: int
    max_attempts: int
    interruptions: int
    max_interruptions: int
    max_runtime_seconds: int | None
    preemptible: bool
    #: Times the scheduler stopped it for another job (each also an interruption).
    preempted: int
    progress: Progress | None
    checkpoint: Checkpoint | None
    worker: WorkerRef | None
    requested_action: Literal["pause", "cancel", "fail", "preempt"] | None
    termination_reason: (
        Literal[
            "completed", "exit_code", "signal", "cancelled", "marked_failed",
            "max_interruptions", "spawn_failed", "time_limit",
        ]
        | None
    )  # fmt: skip
    exit_code: int | None
    signal: int | None
    error_message: str | None
    log_tail: list[str] | None
    idempotency_key: str | None
    #: The sweep it was submitted in and its index there (from 0); null for a lone job.
    sweep_id: UUID | None
    sweep_index: int | None
    created_at: datetime
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    #: The actions the job accepts now (SPEC §2), so that a client need not keep its
    #: own copy of the state table.
    allowed_actions: list[Action]


class JobList(_Out):
    items: list[Job]
    next_cursor: str | None


class Event(_Out):
    id: int
    at: datetime
    from_status: Status | None
    to_status: Status
    action: str
    actor: str
    reason: str | None


class EventList(_Out):
    items: list[Event]


class LogLine(_Out):
    n: int
    stream: str
    text: str
    at: datetime


class Logs(_Out):
    lines: list[LogLine]
    next: int


class MetricPoint(_Out):
    n: int
    step: int | None
    at: datetime
    metrics: dict[str, Any]


class Metrics(_Out):
    points: list[MetricPoint]


class QueueEntry(_Out):
    id: UUID
    name: str
    position: int
    gpus: int
    priority: int
    forced: bool
    expected_start_at: datetime | None
    waiting_reason: str | None


class Queue(_Out):
    pools: dict[str, list[QueueEntry]]


class Device(BaseModel):
    """Every field is always present; the stats are null where unknown (virtual GPUs)."""

    model_config = ConfigDict(extra="allow")

    id: int
    name: str | None
    utilization: float | None
    memory_used: int | None
    memory_total: int | None


class Gpus(_Out):
    total: int
    free: int
    devices: list[Device]


class HostReservation(_Out):
    """GPUs a host keeps for a job that does not fit yet (EASY backfill)."""

    job_id: UUID
    job_name: str
    gpus: int
    #: When enough of its GPUs free up by the running jobs' limits; null: unknown.
    starts_at: datetime | None
    #: GPUs beyond the job's need at that time, free for any job.
    extra_gpus: int


class Worker(_Out):
    name: str
    hostname: str
    pools: list[str]
    kinds: list[str]
    gpus: Gpus
    last_heartbeat_at: datetime
    alive: bool
    running_jobs: list[UUID]
    reservation: HostReservation | None


class WorkerList(_Out):
    items: list[Worker]


class Team(_Out):
    name: str
    share: float
    quota_gpus: dict[str, int | None]
    #: Null for a team nobody set up (one with jobs or recent usage only).
    created_at: datetime | None
    updated_at: datetime | None
    #: Recent GPU usage: GPU-seconds decayed with JOBQUEUE_FAIR_SHARE_HALF_LIFE_HOURS.
    usage_gpu_seconds: float
    #: Its part of all teams' recent usage, and of their shares (0…1).
    usage_fraction: float
    share_fraction: float
    #: Fair-share factor 2^(-usage_fraction/share_fraction): higher goes first.
    factor: float
    #: How much earlier than submitted its jobs queue among equal priorities:
    #: factor × JOBQUEUE_FAIR_SHARE_MAX_LEAD_HOURS, in seconds.
    lead_seconds: float
    gpus_running: dict[str, int]
    jobs_queued: int


class TeamList(_Out):
    items: list[Team]


class Pruned(_Out):
    deleted: int


class SweepObjective(_Out):
    metric: str
    mode: Literal["min", "max"]


class SweepBest(_Out):
    """Its best job so far by the objective's metric (each job's latest report)."""

    job_id: UUID
    index: int
    name: str
    metric: str
    value: float


class Sweep(_Out):
    id: UUID
    name: str
    team: str
    owner: str
    #: At most this many of its jobs run (or wait admitted) at once; null: no cap.
    max_running: int | None
    objective: SweepObjective | None
    #: The jobs this sweep created.
    job_count: int
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    #: Its jobs by status (every status, 0 where none).
    counts: dict[Status, int]
    #: Queued jobs its cap holds back (not claimable until one of its jobs ends).
    held: int
    best: SweepBest | None


class SweepList(_Out):
    items: list[Sweep]
    next_cursor: str | None


class SweepItem(_Out):
    index: int
    id: UUID
    #: False: a bulk item whose idempotency_key named a job that already existed.
    created: bool


class SweepSubmitted(_Out):
    sweep: Sweep
    jobs: list[SweepItem]


class SweepJob(_Out):
    """A row of a sweep's table: a job's config beside its latest metrics."""

    id: UUID
    sweep_index: int
    name: str
    status: Status
    config: dict[str, Any]
    progress: Progress | None
    metrics: dict[str, Any] | None
    attempt: int
    termination_reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    sweep_held: bool


class SweepJobList(_Out):
    items: list[SweepJob]


class SweepOutcome(_Out):
    """What a bulk action did: jobs changed at once, running jobs asked to stop (their
    workers carry it out), jobs it does not apply to."""

    sweep: Sweep
    changed: int
    requested: int
    unchanged: int


class ErrorBody(_Out):
    code: str
    message: str
    details: dict[str, Any]


class Error(_Out):
    error: ErrorBody
