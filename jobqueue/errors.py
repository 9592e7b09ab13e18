"""Typed errors of the core. The API maps each to a status code and a JSON code."""

from __future__ import annotations

from uuid import UUID


class JobqueueError(Exception):
    """Base of every error the core raises on purpose."""

    code = "error"


class JobNotFound(JobqueueError):
    code = "not_found"

    def __init__(self, job_id: UUID | str):
        super().__init__(f"no job {job_id}")
        self.job_id = job_id


class InvalidTransition(JobqueueError):
    """The job's current status does not allow the action (SPEC §2)."""

    code = "invalid_transition"

    def __init__(self, job_id: UUID | str, status: str, action: str, message: str | None = None):
        super().__init__(message or f"cannot {action} a job that is {status}")
        self.job_id = job_id
        self.status = status
        self.action = action


class LeaseLost(JobqueueError):
    """A worker wrote about a job with a lease token that is no longer current."""

    code = "lease_lost"

    def __init__(self, job_id: UUID | str):
        super().__init__(f"the lease on job {job_id} is no longer held by this worker")
        self.job_id = job_id


class IdempotencyConflict(JobqueueError):
    code = "idempotency_conflict"

    def __init__(self, key: str, job_id: UUID):
        super().__init__(f"idempotency_key {key!r} was already used for another request")
        self.key = key
        self.job_id = job_id


class OtherTeam(JobqueueError):
    """An operator acted on a job (or sweep) of a team that is not its own."""

    code = "forbidden"

    def __init__(self, job_id: UUID | str, job_team: str, team: str, what: str = "job"):
        super().__init__(f"{what} {job_id} belongs to team {job_team}; this token acts for {team}")
        self.job_id = job_id
        self.job_team = job_team
        self.team = team


class SweepNotFound(JobqueueError):
    code = "not_found"

    def __init__(self, sweep_id: UUID | str):
        super().__init__(f"no sweep {sweep_id}")
        self.sweep_id = sweep_id


class SweepIdempotencyConflict(JobqueueError):
    code = "idempotency_conflict"

    def __init__(self, key: str, sweep_id: UUID):
        super().__init__(f"idempotency_key {key!r} was already used for another sweep")
        self.key = key
        self.sweep_id = sweep_id


class InvalidCursor(JobqueueError):
    code = "bad_cursor"


class SchemaNotAtHead(JobqueueError):
    """The database schema is behind or ahead of this code."""

    code = "schema_mismatch"
