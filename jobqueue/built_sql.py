"""Statements built per call: a transition's compare-and-set UPDATE and the job list.

The fixed statements live in :mod:`jobqueue.sql`; these depend on which columns a
transition sets or which filters a list has, and are cached per shape where that pays.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Float,
    Select,
    Text,
    Update,
    any_,
    bindparam,
    func,
    insert,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from jobqueue.clock import DbTime
from jobqueue.schema import job_events, job_logs, jobs
from jobqueue.states import JobStatus

#: How a transition sets one column in a statement built once per shape: from a parameter,
#: from the database clock, or from the clock plus a number of seconds (a parameter): the
#: forms of :class:`jobqueue.clock.DbTime`.
_PARAM, _CLOCK, _CLOCK_PLUS = "param", "clock", "clock_plus"


def transition_update(
    job_id: UUID,
    from_status: JobStatus,
    to_status: JobStatus,
    values: dict[str, Any],
    *,
    capture_log_tail: bool,
    lease_token: UUID | None = None,
) -> tuple[Update, dict[str, Any]]:
    """The compare-and-set UPDATE of one transition (applies only if the status is unchanged),
    and the parameters to execute it with.

    With ``capture_log_tail`` the job's last 20 log lines are copied onto the row. With
    ``lease_token`` it applies only while that lease is the job's (fencing).

    The statement is built once per shape of transition (statuses, columns set, which of them
    take the database clock) and reused: building and hashing a fresh UPDATE of every column
    cost more than its execution. A back-off is a parameter of its shape's statement.
    """
    params: dict[str, Any] = {"job_id": job_id}
    fenced = lease_token is not None
    if fenced:
        params["fence_token"] = lease_token
    shape = _shape(values, params)
    statement = _shaped_transition_update(from_status, to_status, shape, capture_log_tail, fenced)
    return statement, params


def transition_update_many(
    job_ids: list[UUID],
    from_status: JobStatus,
    to_status: JobStatus,
    values: dict[str, Any],
    *,
    capture_log_tail: bool,
    action: str,
    actor: str,
    reason: str | None,
) -> tuple[Select, dict[str, Any]]:
    """The same transition of many jobs and their events in one statement (a bulk action
    on a sweep): each row changes only if its status is still ``from_status``, and each
    changed row gets its event. It returns each changed job's id and new status, not the
    whole row (thousands of them)."""
    params: dict[str, Any] = {"job_ids": job_ids, "ev_action": action, "ev_actor": actor,
                              "ev_reason": reason}  # fmt: skip
    shape = _shape(values, params)
    return _shaped_update_many(from_status, to_status, shape, capture_log_tail), params


@functools.lru_cache(maxsize=128)
def _shaped_update_many(
    from_status: JobStatus,
    to_status: JobStatus,
    shape: tuple[tuple[str, str], ...],
    capture_log_tail: bool,
) -> Select:
    values = {key: _column_value(key, how) for key, how in shape}
    changed = _transition_update(
        from_status, to_status, values, capture_log_tail, False, many=True
    ).cte("changed")
    status = job_events.c.to_status.type
    logged = insert(job_events).from_select(
        ["job_id", "from_status", "to_status", "action", "actor", "reason"],
        select(
            changed.c.id,
            literal(from_status.value, status),
            literal(to_status.value, status),
            bindparam("ev_action", type_=Text),
            bindparam("ev_actor", type_=Text),
            bindparam("ev_reason", type_=Text),
        ),
    )
    return select(changed.c.id, changed.c.status).add_cte(logged.cte("logged"))


def _shape(values: dict[str, Any], params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """How each column of ``values`` is set (see _PARAM, _CLOCK, _CLOCK_PLUS); the values
    go into ``params``."""
    shape: list[tuple[str, str]] = []
    for key, value in values.items():
        if isinstance(value, DbTime) and not value.plus_seconds:
            shape.append((key, _CLOCK))
        elif isinstance(value, DbTime):
            shape.append((key, _CLOCK_PLUS))
            params[f"set_{key}"] = value.plus_seconds
        else:
            shape.append((key, _PARAM))
            params[f"set_{key}"] = value
    return tuple(sorted(shape))


@functools.lru_cache(maxsize=512)
def _shaped_transition_update(
    from_status: JobStatus,
    to_status: JobStatus,
    shape: tuple[tuple[str, str], ...],
    capture_log_tail: bool,
    fenced: bool,
) -> Update:
    values = {key: _column_value(key, how) for key, how in shape}
    return _transition_update(from_status, to_status, values, capture_log_tail, fenced)


def _column_value(key: str, how: str) -> Any:
    if how == _CLOCK:
        return func.now()
    if how == _CLOCK_PLUS:
        seconds = bindparam(f"set_{key}", type_=Float)
        return func.now() + func.make_interval(0, 0, 0, 0, 0, 0, seconds)
    return bindparam(f"set_{key}", type_=jobs.c[key].type)


def _transition_update(
    from_status: JobStatus,
    to_status: JobStatus,
    values: dict[str, Any],
    capture_log_tail: bool,
    fenced: bool,
    many: bool = False,
) -> Update:
    """The UPDATE itself; the job's id is the parameter ``job_id`` (``many``: the ids are
    the array ``job_ids``)."""
    if many:
        ids = bindparam("job_ids", type_=ARRAY(PG_UUID(as_uuid=True)))
        this_job: Any = jobs.c.id == any_(ids)
        row_id: Any = jobs.c.id
    else:
        row_id = bindparam("job_id", type_=jobs.c.id.type)
        this_job = jobs.c.id == row_id
    values = {**values, "status": to_status.value, "updated_at": text("now()")}
    if capture_log_tail:
        newest = (
            select(job_logs.c.n, job_logs.c.text)
            .where(job_logs.c.job_id == row_id)
            .order_by(job_logs.c.n.desc())
            .limit(20)
            .subquery()
        )
        values["log_tail"] = (
            select(text("COALESCE(jsonb_agg(text ORDER BY n), '[]'::jsonb)"))
            .select_from(newest)
            .scalar_subquery()
        )
    guard = [this_job, jobs.c.status == from_status.value]
    if fenced:
        guard.append(jobs.c.lease_token == bindparam("fence_token", type_=jobs.c.lease_token.type))
    returned = (jobs.c.id, jobs.c.status) if many else tuple(jobs.c)
    return update(jobs).where(*guard).values(**values).returning(*returned)


def list_jobs(
    *,
    statuses: Iterable[str] | None,
    pool: str | None,
    name_contains: str | None,
    before: tuple[Any, UUID] | None,
    limit: int,
    team: str | None = None,
) -> Select:
    """Newest first, filtered; ``before`` is the (created_at, id) of the last row seen."""
    query = select(jobs)
    if statuses:
        query = query.where(jobs.c.status.in_(list(statuses)))
    if pool is not None:
        query = query.where(jobs.c.pool == pool)
    if team is not None:
        query = query.where(jobs.c.team == team)
    if name_contains:
        escaped = name_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(jobs.c.name.ilike(f"%{escaped}%", escape="\\"))
    if before is not None:
        query = query.where(tuple_(jobs.c.created_at, jobs.c.id) < tuple_(*before))
    return query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
