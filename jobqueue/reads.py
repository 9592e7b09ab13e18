"""Reading jobs as people see them: with queue position and why they wait."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy import Connection, Engine

from jobqueue import built_sql, sql
from jobqueue.errors import InvalidCursor, JobNotFound
from jobqueue.records import Event, Job, LogLine, MetricPoint, Team, WorkerInfo
from jobqueue.settings import Settings
from jobqueue.states import JobStatus
from jobqueue.waiting import LiveWorker, Place, QueueEntry, Scheduling, waiting_reason

_WAITING = (JobStatus.PENDING, JobStatus.QUEUED)


@dataclasses.dataclass(frozen=True)
class QueueStats:
    jobs: dict[tuple[str, str], int]
    oldest_queued_seconds: dict[str, float]


class Reads:
    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings

    def _reading(self) -> Connection:
        """A connection for reads: autocommit, so no BEGIN and ROLLBACK round trips."""
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def get(self, job_id: UUID) -> Job:
        """One job with its queue position and waiting reason, in one round trip."""
        with self._reading() as conn:
            job = self._job_with_wait(conn, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def list_jobs(
        self,
        *,
        statuses: Sequence[str] | None = None,
        pool: str | None = None,
        team: str | None = None,
        name_contains: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first; returns a page and the cursor of the next one (None at the end)."""
        before = decode_cursor(cursor) if cursor else None
        query = built_sql.list_jobs(
            statuses=statuses,
            pool=pool,
            team=team,
            name_contains=name_contains,
            before=before,
            limit=limit + 1,
        )
        with self._reading() as conn:
            found = [Job.from_row(r) for r in conn.execute(query).mappings().all()]
            page = self._with_wait(conn, found[:limit])
        next_cursor = encode_cursor(page[-1]) if len(found) > limit else None
        return page, next_cursor

    def events(self, job_id: UUID, *, after: int = 0) -> list[Event]:
        """The job's events, oldest first; those with an ``id`` above ``after``."""
        with self._reading() as conn:
            self._require(conn, job_id)
            rows = conn.execute(sql.EVENTS, {"id": job_id, "after": after})
            return [Event(**r) for r in rows.mappings()]

    def logs(self, job_id: UUID, *, after: int = 0, limit: int = 1000) -> tuple[list[LogLine], int]:
        """Lines numbered after ``after``; returns them and the number to ask after next."""
        with self._reading() as conn:
            self._require(conn, job_id)
            rows = conn.execute(sql.LOGS_AFTER, {"id": job_id, "after": after, "limit": limit})
            lines = [LogLine(**r) for r in rows.mappings()]
        return lines, (lines[-1].n if lines else after)

    def metrics(
        self, job_id: UUID, *, after: int | None = None, limit: int = 2000
    ) -> list[MetricPoint]:
        """Metric points oldest first: the newest ``limit``, or with ``after`` the first
        ``limit`` numbered above it (what a chart that has point ``after`` lacks)."""
        with self._reading() as conn:
            self._require(conn, job_id)
            if after is None:
                rows = conn.execute(sql.METRIC_POINTS, {"id": job_id, "limit": limit})
            else:
                rows = conn.execute(
                    sql.METRIC_POINTS_AFTER, {"id": job_id, "after": after, "limit": limit}
                )
            return [MetricPoint(**r) for r in rows.mappings()]

    def queue_stats(self) -> QueueStats:
        """Jobs per (status, pool), and per pool the age of the oldest claimable queued job:
        what the API's Prometheus gauges show."""
        with self._reading() as conn:
            counts = {
                (r["status"], r["pool"]): r["count"]
                for r in conn.execute(sql.JOB_COUNTS).mappings()
            }
            oldest = {r.pool: r.age_seconds for r in conn.execute(sql.OLDEST_QUEUED)}
        return QueueStats(jobs=counts, oldest_queued_seconds=oldest)

    def teams(self) -> list[Team]:
        """Every team an admin has set, by name (others have share 1 and no quota)."""
        with self._reading() as conn:
            return [Team(**r) for r in conn.execute(sql.TEAMS).mappings()]

    def workers(self) -> list[WorkerInfo]:
        with self._reading() as conn:
            return self._workers(conn)

    def queue(self) -> dict[str, list[dict[str, Any]]]:
        """Every pool's claimable jobs in claim order, with why each waits."""
        with self._reading() as conn:
            pools = [r[0] for r in conn.execute(sql.QUEUED_POOLS)]
            order = self._queue_order(conn, pools)
            ids = [e.id for entries in order.values() for e in entries]
            jobs = self._jobs_by_id(conn, ids)
            waits = {j.id: j for j in self._with_wait(conn, list(jobs.values()), order=order)}
        return {
            pool: [
                {
                    "id": e.id,
                    "name": e.name,
                    "position": e.position,
                    "gpus": e.gpus,
                    "priority": e.priority,
                    "forced": e.forced,
                    "expected_start_at": waits[e.id].expected_start_at if e.id in waits else None,
                    "waiting_reason": waits[e.id].waiting_reason if e.id in waits else None,
                }
                for e in entries
            ]
            for pool, entries in sorted(order.items())
        }

    # -- helpers --------------------------------------------------------------

    def _require(self, conn: Connection, job_id: UUID) -> None:
        if conn.execute(sql.JOB_BY_ID, {"id": job_id}).first() is None:
            raise JobNotFound(job_id)

    def _jobs_by_id(self, conn: Connection, ids: Sequence[UUID]) -> dict[UUID, Job]:
        if not ids:
            return {}
        rows = conn.execute(sql.JOBS_BY_IDS, {"ids": list(ids)})
        return {j.id: j for j in (Job.from_row(r) for r in rows.mappings())}

    def _workers(self, conn: Connection) -> list[WorkerInfo]:
        rows = conn.execute(sql.WORKERS, self._alive())
        return [_worker_info(r) for r in rows.mappings()]

    def _job_with_wait(self, conn: Connection, job_id: UUID) -> Job | None:
        """One job, with its position and waiting reason if it waits: one statement."""
        row = (
            conn.execute(sql.JOB_WITH_WAIT, {"id": job_id, **self._alive(), **self._exact()})
            .mappings()
            .first()
        )
        if row is None:
            return None
        job = Job.from_json(row["job"])
        if job.status not in _WAITING:
            return job
        forced = [
            QueueEntry(
                id=UUID(f["id"]), name=f["name"], pool=job.pool, kind=f["kind"], gpus=f["gpus"],
                priority=f["priority"], forced=True, place=None,
            )
            for f in row["wait_forced"] or ()
        ]  # fmt: skip
        place = Place.of(row["wait_ahead"], row["wait_ahead_estimate"], self._exact_positions)
        reason = waiting_reason(
            job,
            now=row["db_now"],
            place=place,
            pool_queue=forced,
            workers=LiveWorker.many(row["live_workers"]),
            scheduling=Scheduling.of(row["scheduling"]),
        )
        return _placed(job, place, reason, row["wait_expected_start"])

    def _one_with_wait(self, conn: Connection, job: Job) -> Job:
        """``job`` as just written in this transaction, with its wait if it waits."""
        if job.status not in _WAITING:
            return job
        found = self._job_with_wait(conn, job.id)
        assert found is not None  # written in this very transaction
        return found

    def _alive(self) -> dict[str, float]:
        return {"alive_seconds": self.settings.worker_alive_seconds}

    @property
    def _exact_positions(self) -> int:
        return self.settings.exact_positions

    def _exact(self) -> dict[str, int]:
        return {"exact_positions": self._exact_positions}

    def _wait_context(
        self, conn: Connection, ids: Sequence[UUID]
    ) -> tuple[datetime, list[LiveWorker], Scheduling, dict[UUID, datetime]]:
        """The database clock, the live workers, the scheduler's state and the expected
        starts of the jobs ``ids``: one round trip."""
        row = conn.execute(sql.WAIT_CONTEXT, {"ids": list(ids), **self._alive()}).one()
        starts = {
            UUID(job_id): datetime.fromisoformat(at)
            for job_id, at in (row.expected_starts or {}).items()
        }
        return row.db_now, LiveWorker.many(row.live_workers), Scheduling.of(row.scheduling), starts

    def _queue_order(
        self, conn: Connection, pools: Sequence[str], *, only: Sequence[UUID] | None = None
    ) -> dict[str, list[QueueEntry]]:
        """The pools' claimable jobs in claim order. With ``only``: just their forced jobs
        and the jobs ``only`` (each with its rank among all), which is what waiting reasons
        read, rather than every queued job of the pools."""
        order: dict[str, list[QueueEntry]] = defaultdict(list)
        if pools:
            if only is None:
                rows = conn.execute(sql.QUEUE_ORDER, {"pools": list(pools)})
                for r in rows.mappings():
                    entry = {k: v for k, v in r.items() if k != "position"}
                    order[r["pool"]].append(QueueEntry(**entry, place=Place.exact(r["position"])))
            else:
                params = {"pools": list(pools), "ids": list(only), **self._exact()}
                for r in conn.execute(sql.QUEUE_ORDER_OF, params).mappings():
                    entry = {k: v for k, v in r.items() if k not in ("ahead", "ahead_estimate")}
                    place = Place.of(r["ahead"], r["ahead_estimate"], self._exact_positions)
                    order[r["pool"]].append(QueueEntry(**entry, place=place))
        return order

    def _with_wait(
        self,
        conn: Connection,
        jobs: list[Job],
        *,
        order: dict[str, list[QueueEntry]] | None = None,
    ) -> list[Job]:
        """Fill queue_position and waiting_reason of pending and queued jobs.

        ``order`` is the full claim order of the jobs' pools when the caller has it;
        without it only the rows these jobs' reasons need are read (see _queue_order).
        """
        waiting = [j for j in jobs if j.status in _WAITING]
        waiting_ids = {j.id for j in waiting}
        if not waiting:
            return jobs
        if order is None:
            queued = [j for j in waiting if j.status is JobStatus.QUEUED]
            pools = sorted({j.pool for j in queued})
            order = self._queue_order(conn, pools, only=[j.id for j in queued])
        places = {e.id: e.place for entries in order.values() for e in entries}
        queued_ids = [j.id for j in waiting if j.status is JobStatus.QUEUED]
        now, live, scheduling, starts = self._wait_context(conn, queued_ids)
        return [
            _placed(
                j,
                places.get(j.id),
                waiting_reason(
                    j,
                    now=now,
                    place=places.get(j.id),
                    pool_queue=order.get(j.pool, []),
                    workers=live,
                    scheduling=scheduling,
                ),
                starts.get(j.id),
            )
            if j.id in waiting_ids
            else j
            for j in jobs
        ]


def _placed(
    job: Job, place: Place | None, reason: str | None, expected_start_at: datetime | None
) -> Job:
    if place is None:
        return job.with_wait(None, reason, expected_start_at)
    return job.with_wait(place.position, reason, expected_start_at, place.estimate)


def _worker_info(row: Mapping[Any, Any]) -> WorkerInfo:
    return WorkerInfo(**{k: v for k, v in row.items() if k in WorkerInfo.__dataclass_fields__})


class _Dated(Protocol):
    """What a page of newest-first rows is cut after (a job, a sweep)."""

    @property
    def id(self) -> UUID: ...
    @property
    def created_at(self) -> datetime: ...


def encode_cursor(row: _Dated) -> str:
    raw = json.dumps([row.created_at.isoformat(), str(row.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
        if not isinstance(created_at, str) or not isinstance(job_id, str):
            raise TypeError("cursor parts are not strings")
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when, UUID(job_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidCursor("cursor is not one this API handed out") from exc
