"""Sweeps: many jobs submitted in one request and managed as one.

A submit validates every item first (:mod:`jobqueue.sweep_specs`) and writes the sweep
and all its jobs in one transaction, a few statements whatever their number. A bulk
action locks the sweep's jobs it applies to, asks the same rules as a single action
(:func:`jobqueue.outcomes.for_action`) for each, and writes them with one UPDATE per
kind of transition (:func:`jobqueue.transitions.apply_many`). A capped sweep's
``max_running`` is kept by the database itself (migration 0009's triggers): the claim
never sees the jobs it holds back.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, RowMapping

from jobqueue import sweep_sql
from jobqueue.errors import (
    IdempotencyConflict,
    InvalidTransition,
    OtherTeam,
    SweepIdempotencyConflict,
    SweepNotFound,
)
from jobqueue.outcomes import Transition, for_action
from jobqueue.reads import decode_cursor, encode_cursor
from jobqueue.records import Job, Sweep, SweepJob
from jobqueue.settings import Settings
from jobqueue.specs import DEFAULT_TEAM, JobSpec
from jobqueue.states import ALLOWED_FROM, Action, JobStatus
from jobqueue.sweep_specs import SweepPatch, SweepSpec
from jobqueue.transitions import apply_many

#: Where a bulk action applies when not everywhere a single one would: retrying a sweep
#: retries its failed jobs (cancelled ones were stopped on purpose).
_BULK_FROM = {Action.RETRY: frozenset({JobStatus.FAILED})}


@dataclasses.dataclass(frozen=True)
class SweepItem:
    """One job of a submitted sweep: its index, id, and whether this request created it
    (False: a bulk item whose idempotency_key named an existing job)."""

    index: int
    id: UUID
    created: bool


@dataclasses.dataclass(frozen=True)
class Submitted:
    sweep: Sweep
    items: list[SweepItem]
    #: False: the sweep's idempotency_key was already used, for this same request.
    created: bool


@dataclasses.dataclass(frozen=True)
class BulkOutcome:
    """What a bulk action did: jobs changed at once, running jobs asked to stop (their
    workers carry it out), and jobs the action does not apply to (left as they are)."""

    sweep: Sweep
    changed: int
    requested: int
    unchanged: int


class SweepActions:
    """The sweep half of :class:`jobqueue.queue.JobQueue` (which supplies ``engine``,
    ``settings`` and ``team_only``)."""

    engine: Engine
    settings: Settings
    team_only: str | None

    # -- submit ---------------------------------------------------------------

    def submit_sweep(self, spec: SweepSpec, *, actor: str) -> Submitted:
        """Create a sweep and all its jobs, or nothing: raises
        :class:`~jobqueue.sweep_specs.SweepItemsInvalid` listing every invalid item."""
        team = spec.team or DEFAULT_TEAM
        items = spec.expand(team)
        fingerprint = spec.fingerprint() if spec.idempotency_key else None
        with self.engine.begin() as conn:
            row = (
                conn.execute(
                    sweep_sql.INSERT_SWEEP,
                    {
                        "name": spec.name,
                        "team": team,
                        "owner": actor,
                        "max_running": spec.max_running,
                        "objective": json.dumps(spec.objective.model_dump())
                        if spec.objective
                        else None,
                        "job_count": len(items),
                        "idempotency_key": spec.idempotency_key,
                        "request_fingerprint": fingerprint,
                    },
                )
                .mappings()
                .first()
            )
            if row is None:
                return self._repeated(conn, spec, fingerprint)
            sweep_id = row["id"]
            created = conn.execute(
                sweep_sql.INSERT_SWEEP_JOBS,
                {
                    "rows": json.dumps(self._rows(items, spec.max_running)),
                    "team": team,
                    "owner": actor,
                    "sweep_id": sweep_id,
                    "reason": f"sweep {spec.name}",
                    "new_team_lead": self.settings.fair_share_max_lead_hours * 3600.0,
                },
            ).all()
            made = {r.sweep_index: r.id for r in created}
            found = _existing(conn, items, made)
            if found:
                conn.execute(sweep_sql.SET_JOB_COUNT, {"id": sweep_id, "n": len(made)})
            if found and spec.max_running is not None:
                # _rows admitted the first max_running queued items, but some of them
                # name jobs of another sweep: admit this sweep's own instead.
                conn.execute(
                    sweep_sql.REBALANCE_SWEEP, {"id": sweep_id, "max_running": spec.max_running}
                )
            summary = _summary(conn, sweep_id)
        listed = [
            SweepItem(i, made[i], True) if i in made else SweepItem(i, found[i], False)
            for i in range(len(items))
        ]
        return Submitted(summary, listed, True)

    def _rows(self, items: list[JobSpec], max_running: int | None) -> list[dict[str, Any]]:
        rows = []
        admitted = 0
        defaults = self.settings.pool_max_runtime_seconds
        for index, spec in enumerate(items):
            queued = not spec.hold
            held = queued and max_running is not None and admitted >= max_running
            admitted += queued and not held
            rows.append(
                {
                    "name": spec.name,
                    "kind": spec.kind,
                    "config": spec.config,
                    "status": (JobStatus.QUEUED if queued else JobStatus.PENDING).value,
                    "pool": spec.pool,
                    "gpus": spec.gpus,
                    "priority": spec.priority,
                    "not_before": spec.not_before.isoformat() if spec.not_before else None,
                    "max_attempts": spec.max_attempts,
                    "max_interruptions": spec.max_interruptions,
                    "max_runtime_seconds": spec.max_runtime_seconds or defaults.get(spec.pool),
                    "preemptible": spec.preemptible,
                    "idempotency_key": spec.idempotency_key,
                    "request_fingerprint": spec.fingerprint() if spec.idempotency_key else None,
                    "sweep_index": index,
                    "sweep_held": held,
                }
            )
        return rows

    def _repeated(self, conn: Connection, spec: SweepSpec, fingerprint: str | None) -> Submitted:
        """The sweep an idempotency_key already made, if this is the same request."""
        key = spec.idempotency_key or ""
        row = conn.execute(sweep_sql.SWEEP_BY_IDEMPOTENCY_KEY, {"key": key}).mappings().one()
        if row["request_fingerprint"] != fingerprint:
            raise SweepIdempotencyConflict(key, row["id"])
        jobs = conn.execute(
            sweep_sql.sweep_jobs("index", False),
            {"id": row["id"], "limit": row["job_count"], "offset": 0, "metric": None},
        ).mappings()
        items = [SweepItem(r["sweep_index"], r["id"], False) for r in jobs]
        return Submitted(_summary(conn, row["id"]), items, False)

    # -- read -----------------------------------------------------------------

    def sweep(self, sweep_id: UUID) -> Sweep:
        with self.engine.connect() as conn:
            return _summary(conn, sweep_id)

    def sweeps(
        self, *, team: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Sweep], str | None]:
        """Newest first; returns a page and the cursor of the next one (None at the end)."""
        before_at, before_id = decode_cursor(cursor) if cursor else (None, None)
        params = {"team": team, "before_at": before_at, "before_id": before_id,
                  "limit": limit + 1}  # fmt: skip
        with self.engine.connect() as conn:
            rows = conn.execute(sweep_sql.SWEEPS, params).mappings().all()
        found = [Sweep.from_row(r) for r in rows]
        page = found[:limit]
        return page, (encode_cursor(page[-1]) if len(found) > limit else None)

    def sweep_jobs(
        self,
        sweep_id: UUID,
        *,
        sort: str = "index",
        descending: bool = False,
        metric: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[SweepJob]:
        """A page of the sweep's table: each job's config beside its latest metrics,
        ordered by ``sort`` (see :func:`jobqueue.sweep_sql.sweep_jobs`)."""
        with self.engine.connect() as conn:
            _row(conn, sweep_id)  # raises SweepNotFound
            rows = conn.execute(
                sweep_sql.sweep_jobs(sort, descending),
                {"id": sweep_id, "limit": limit, "offset": offset, "metric": metric},
            ).mappings()
            return [SweepJob(**r) for r in rows]

    # -- bulk actions -----------------------------------------------------------

    def act_on_sweep(
        self, sweep_id: UUID, action: Action, *, actor: str, **options: Any
    ) -> BulkOutcome:
        """``action`` on every job of the sweep it applies to (as one action on each
        would be); the others are left as they are and counted."""
        with self.engine.begin() as conn:
            changed, requested, unchanged = self._apply(conn, sweep_id, action, actor, options)
            return BulkOutcome(_summary(conn, sweep_id), changed, requested, unchanged)

    def patch_sweep(self, sweep_id: UUID, patch: SweepPatch, *, actor: str) -> BulkOutcome:
        """Change the waiting jobs' priority and/or the sweep's cap, in one transaction:
        the jobs first, then the sweep's row (the order a finishing job locks them in)."""
        with self.engine.begin() as conn:
            changed = requested = unchanged = 0
            if patch.priority is not None:
                options = {"changes": {"priority": patch.priority}}
                changed, requested, unchanged = self._apply(
                    conn, sweep_id, Action.PATCH, actor, options
                )
            else:
                self._check_team(_row(conn, sweep_id))
            if patch.changes_cap:
                params = {"id": sweep_id, "max_running": patch.max_running}
                conn.execute(sweep_sql.SET_MAX_RUNNING, params)
                conn.execute(sweep_sql.REBALANCE_SWEEP, params)
            return BulkOutcome(_summary(conn, sweep_id), changed, requested, unchanged)

    def _apply(
        self,
        conn: Connection,
        sweep_id: UUID,
        action: Action,
        actor: str,
        options: dict[str, Any],
    ) -> tuple[int, int, int]:
        sweep = _row(conn, sweep_id)
        self._check_team(sweep)
        statuses = [s.value for s in _BULK_FROM.get(action, ALLOWED_FROM[action])]
        rows = conn.execute(sweep_sql.LOCK_SWEEP_JOBS, {"id": sweep_id, "statuses": statuses})
        changes: list[tuple[Job, Transition]] = []
        for row in rows.mappings():
            job = Job.from_row(row)
            try:
                transition = for_action(
                    job, action, actor=actor, lease_valid=bool(row["lease_valid"]), **options
                )
            except InvalidTransition:
                continue  # e.g. a running job that already carries a stronger request
            if transition.to_status is job.status and not transition.values:
                continue  # nothing to change (a priority it already has)
            changes.append((job, transition))
        written = apply_many(conn, changes, actor=actor)
        requested = sum(1 for _, status in written if status is JobStatus.RUNNING)
        return len(written) - requested, requested, sweep["job_count"] - len(written)

    def _check_team(self, sweep: RowMapping) -> None:
        if self.team_only is not None and sweep["team"] != self.team_only:
            raise OtherTeam(sweep["id"], sweep["team"], self.team_only, what="sweep")


def _row(conn: Connection, sweep_id: UUID) -> RowMapping:
    """The sweep's own row, without the summary's counts (which read all its jobs)."""
    row = conn.execute(sweep_sql.SWEEP_ROW, {"id": sweep_id}).mappings().first()
    if row is None:
        raise SweepNotFound(sweep_id)
    return row


def _summary(conn: Connection, sweep_id: UUID) -> Sweep:
    row = conn.execute(sweep_sql.SWEEP, {"id": sweep_id}).mappings().first()
    if row is None:
        raise SweepNotFound(sweep_id)
    return Sweep.from_row(row)


def _existing(conn: Connection, items: list[JobSpec], made: dict[int, UUID]) -> dict[int, UUID]:
    """The jobs that the items not created name by their idempotency_key; raises
    :class:`IdempotencyConflict` for a key used with another body (the whole sweep is
    then refused)."""
    missing = {i: spec for i, spec in enumerate(items) if i not in made}
    if not missing:
        return {}
    keys = [spec.idempotency_key for spec in missing.values()]
    rows = conn.execute(sweep_sql.JOBS_BY_IDEMPOTENCY_KEYS, {"keys": keys}).mappings()
    by_key = {r["idempotency_key"]: r for r in rows}
    found = {}
    for index, spec in missing.items():
        row = by_key[spec.idempotency_key]
        if row["request_fingerprint"] != spec.fingerprint():
            raise IdempotencyConflict(spec.idempotency_key or "", row["id"])
        found[index] = row["id"]
    return found
