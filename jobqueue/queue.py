"""What people do with jobs: submit, look, and recover (SPEC §2, §3).

Every action reads the job under a row lock, asks :mod:`jobqueue.outcomes`
where it goes, and writes it with a compare-and-set UPDATE plus its event in
one short transaction. Actions on a running job become requests that the
job's worker carries out (a trigger NOTIFYs it).
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from sqlalchemy import Engine

from jobqueue import sql
from jobqueue.errors import IdempotencyConflict, JobNotFound, OtherTeam
from jobqueue.outcomes import for_action
from jobqueue.reads import Reads
from jobqueue.records import Job, Team
from jobqueue.settings import Settings
from jobqueue.specs import DEFAULT_TEAM, JobSpec, TeamSpec, config_json
from jobqueue.states import Action, JobStatus
from jobqueue.sweeps import SweepActions
from jobqueue.transitions import apply_transition


class JobQueue(SweepActions, Reads):
    """The queue as people and their tools use it (sweeps: :class:`SweepActions`). Safe
    to share between threads."""

    def __init__(self, engine: Engine, settings: Settings, *, team_only: str | None = None):
        super().__init__(engine, settings)
        #: Set: actions on jobs of any other team are refused (:class:`OtherTeam`).
        self.team_only = team_only

    def for_team(self, team: str) -> JobQueue:
        """The same queue acting for one team: what an operator's token may do."""
        return JobQueue(self.engine, self.settings, team_only=team)

    # -- submit ---------------------------------------------------------------

    def submit(self, spec: JobSpec, *, actor: str) -> tuple[Job, bool]:
        """Add a job; returns it and whether it was created (False: a repeated key).

        ``actor`` becomes its owner; its team is the spec's, else ``default``.
        """
        status = JobStatus.PENDING if spec.hold else JobStatus.QUEUED
        params = {
            "name": spec.name,
            "kind": spec.kind,
            "config": config_json(spec.config),
            "status": status.value,
            "pool": spec.pool,
            "team": spec.team or DEFAULT_TEAM,
            "owner": actor,
            "gpus": spec.gpus,
            "priority": spec.priority,
            "not_before": spec.not_before,
            "max_attempts": spec.max_attempts,
            "max_interruptions": spec.max_interruptions,
            "max_runtime_seconds": spec.max_runtime_seconds
            or self.settings.pool_max_runtime_seconds.get(spec.pool),
            "preemptible": spec.preemptible,
            "idempotency_key": spec.idempotency_key,
            "request_fingerprint": spec.fingerprint() if spec.idempotency_key else None,
            # A team new to the pass has used nothing: factor 1, the largest lead.
            "new_team_lead": self.settings.fair_share_max_lead_hours * 3600.0,
        }
        with self.engine.begin() as conn:
            row = conn.execute(sql.INSERT_JOB, params).mappings().first()
            if row is None:
                existing = (
                    conn.execute(sql.JOB_BY_IDEMPOTENCY_KEY, {"key": spec.idempotency_key})
                    .mappings()
                    .one()
                )
                job = Job.from_row(existing)
                if job.request_fingerprint != params["request_fingerprint"]:
                    raise IdempotencyConflict(spec.idempotency_key or "", job.id)
                return self._one_with_wait(conn, job), False
            return self._one_with_wait(conn, Job.from_row(row)), True

    # -- teams ----------------------------------------------------------------

    def set_team(self, name: str, spec: TeamSpec) -> Team:
        """Create or change a team's share and quotas; returns it with its usage."""
        with self.engine.begin() as conn:
            conn.execute(
                sql.UPSERT_TEAM,
                {"name": name, "share": spec.share, "quota": json.dumps(spec.quota_gpus)},
            )
        return next(team for team in self.teams() if team.name == name)

    # -- actions --------------------------------------------------------------

    # Each returns the job as the action left it. A running job that only got a
    # request (pause, cancel, mark-failed) is still running with ``requested_action``
    # set (:attr:`Job.stopping`) until its worker carries the request out.

    def release(self, job_id: UUID, *, actor: str) -> Job:
        return self._act(job_id, Action.RELEASE, actor=actor)

    def force_start(self, job_id: UUID, *, actor: str) -> Job:
        return self._act(job_id, Action.FORCE_START, actor=actor)

    def pause(self, job_id: UUID, *, actor: str, reason: str | None = None) -> Job:
        return self._act(job_id, Action.PAUSE, actor=actor, reason=reason)

    def resume(self, job_id: UUID, *, actor: str) -> Job:
        return self._act(job_id, Action.RESUME, actor=actor)

    def cancel(
        self, job_id: UUID, *, actor: str, force: bool = False, reason: str | None = None
    ) -> Job:
        return self._act(job_id, Action.CANCEL, actor=actor, force=force, reason=reason)

    def mark_failed(self, job_id: UUID, *, actor: str, reason: str) -> Job:
        return self._act(job_id, Action.MARK_FAILED, actor=actor, reason=reason)

    def retry(self, job_id: UUID, *, actor: str, from_checkpoint: bool = True) -> Job:
        return self._act(job_id, Action.RETRY, actor=actor, from_checkpoint=from_checkpoint)

    def patch(
        self, job_id: UUID, *, actor: str, priority: int | None = None, pool: str | None = None
    ) -> Job:
        changes: dict[str, Any] = {}
        if priority is not None:
            changes["priority"] = priority
        if pool is not None:
            changes["pool"] = pool
        return self._act(job_id, Action.PATCH, actor=actor, changes=changes)

    def _act(self, job_id: UUID, action: Action, *, actor: str, **options: Any) -> Job:
        with self.engine.begin() as conn:
            row = conn.execute(sql.LOCK_JOB, {"id": job_id}).mappings().first()
            if row is None:
                raise JobNotFound(job_id)
            job = Job.from_row(row)
            if self.team_only is not None and job.team != self.team_only:
                raise OtherTeam(job.id, job.team, self.team_only)
            transition = for_action(
                job, action, actor=actor, lease_valid=bool(row["lease_valid"]), **options
            )
            updated = apply_transition(conn, job, transition, actor=actor)
            return self._one_with_wait(conn, updated)
