"""Where a job goes next: the rules of SPEC §2 as pure functions.

Each function takes the job as it is (read under a row lock) and returns a
:class:`Transition`: the new status, the column values to write and the event
to record. The store applies it with a compare-and-set UPDATE, so these rules
are the only place that decides an outcome, whichever process observed it.
They are plain Python: a time is a :class:`jobqueue.clock.DbTime` ("the
database's now, plus a back-off"), which the statement builder turns into SQL.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from jobqueue.clock import NOW
from jobqueue.errors import InvalidTransition
from jobqueue.records import Job
from jobqueue.states import (
    ACTION_REQUEST,
    REQUEST_OUTCOME,
    REQUEST_RANK,
    REQUEST_TERMINATION,
    Action,
    Cause,
    JobStatus,
    RequestedAction,
    TerminationReason,
    allowed,
    request_accepted,
)

S = JobStatus
MAX_BACKOFF_SECONDS = 3600.0


@dataclasses.dataclass(frozen=True)
class Transition:
    to_status: JobStatus
    values: dict[str, Any]
    action: str
    reason: str | None = None


class StopCause(enum.StrEnum):
    """Why a worker signalled a job before it exited."""

    PAUSE = "pause"
    CANCEL = "cancel"
    FAIL = "fail"
    SHUTDOWN = "shutdown"
    LEASE = "lease"  # it could not renew the lease in time
    TIME_LIMIT = "time_limit"  # it ran for its max_runtime_seconds
    PREEMPT = "preempt"  # the scheduling pass asked for its GPUs


def stop_rank(cause: StopCause) -> int:
    """How strongly a cause decides a signalled job's outcome.

    A person's request ranks by :data:`jobqueue.states.REQUEST_RANK` (a cancel
    overrides a pause), above the worker's own reasons (shutdown, a lost lease):
    a pause asked while the worker shuts down still pauses the job.
    """
    if cause is StopCause.SHUTDOWN or cause is StopCause.LEASE:
        return -1
    if cause is StopCause.TIME_LIMIT:  # ends the job, like a cancel: the first of them sticks
        return REQUEST_RANK[RequestedAction.CANCEL]
    return REQUEST_RANK[RequestedAction(cause.value)]


@dataclasses.dataclass(frozen=True)
class Exit:
    """How a job's process ended, as its worker saw it."""

    exit_code: int | None = None
    signal: int | None = None
    #: Set when the worker signalled the job before it exited; the cause then
    #: decides the outcome whatever the exit code (SPEC §2).
    stopped_for: StopCause | None = None
    #: Set when the program could not be started at all.
    spawn_error: str | None = None
    error_message: str | None = None


_LEAVE_RUNNING = {
    "lease_token": None,
    "lease_expires_at": None,
    "requested_action": None,
    "requested_by": None,
    "request_reason": None,
    "request_kill": False,
}
_OFF_WORKER = {**_LEAVE_RUNNING, "worker_name": None, "gpu_ids": None}


def backoff_seconds(failures: int, base: float) -> float:
    """Delay before the next attempt after the n-th failure: base × 2^(n−1), ≤ 1 h."""
    if failures < 1 or base <= 0:
        return 0.0
    return min(base * 2 ** min(failures - 1, 30), MAX_BACKOFF_SECONDS)


def _finish(reason: TerminationReason, **values: Any) -> dict[str, Any]:
    return {
        **_LEAVE_RUNNING,
        "finished_at": NOW,
        "termination_reason": reason.value,
        "not_before": None,
        **values,
    }


def _carry_out_request(job: Job, request: RequestedAction, cause: str) -> Transition:
    """A running job stops because of a recorded request (or the lease ran out on one)."""
    status = REQUEST_OUTCOME[request]
    termination = REQUEST_TERMINATION[request]
    if request is RequestedAction.PREEMPT:
        # Back in its old place (queued_at kept), an interruption that never fails it.
        counts = {"interruptions": job.interruptions + 1, "preempted": job.preempted + 1}
        return Transition(
            status, {**_OFF_WORKER, **counts}, Cause.PREEMPT.value, reason=job.request_reason
        )
    if termination is None:  # paused: keeps its checkpoint, off its worker
        return Transition(status, {**_OFF_WORKER}, cause, reason=job.request_reason)
    values = _finish(termination)
    if request is RequestedAction.FAIL:
        values["error_message"] = job.request_reason
    return Transition(status, values, cause, reason=job.request_reason)


def _interrupted(job: Job, cause: Cause, why: str) -> Transition:
    """Worker died or shut down: not the job's fault; keeps its place, counted apart."""
    if job.requested_action:
        return _carry_out_request(job, RequestedAction(job.requested_action), cause.value)
    count = job.interruptions + 1
    if count > job.max_interruptions:
        values = _finish(
            TerminationReason.MAX_INTERRUPTIONS,
            interruptions=count,
            error_message=f"{why}; interrupted {count} times (max_interruptions "
            f"{job.max_interruptions})",
        )
        return Transition(S.FAILED, values, cause.value, reason=why)
    return Transition(S.QUEUED, {**_OFF_WORKER, "interruptions": count}, cause.value, reason=why)


def after_lease_expired(job: Job) -> Transition:
    return _interrupted(job, Cause.LEASE_EXPIRED, f"lease of worker {job.worker_name} expired")


def after_worker_restart(job: Job) -> Transition:
    return _interrupted(
        job, Cause.WORKER_RESTART, f"worker {job.worker_name} restarted while it ran"
    )


def completion(exit: Exit) -> Transition | None:
    """The outcome of a process that exited 0 before anyone signalled it: completed,
    whatever the row says — finished work wins, even if a request was on its way.
    None for every other exit, whose outcome depends on the job's row."""
    if (
        exit.exit_code == 0
        and exit.signal is None
        and exit.stopped_for is None
        and exit.spawn_error is None
    ):
        values = _finish(TerminationReason.COMPLETED, error_message=None, exit_code=0, signal=None)
        return Transition(S.COMPLETED, values, Cause.EXIT.value, reason="exit code 0")
    return None


def after_exit(job: Job, exit: Exit, backoff_base: float) -> Transition:
    """The job's process ended (or never started)."""
    base = {"exit_code": exit.exit_code, "signal": exit.signal}
    if exit.spawn_error is not None:
        values = _finish(TerminationReason.SPAWN_FAILED, error_message=exit.spawn_error, **base)
        return Transition(S.FAILED, values, Cause.SPAWN_FAILED.value, reason=exit.spawn_error)

    if exit.stopped_for is StopCause.SHUTDOWN or exit.stopped_for is StopCause.LEASE:
        why = (
            f"worker {job.worker_name} shut down"
            if exit.stopped_for is StopCause.SHUTDOWN
            else f"worker {job.worker_name} could not renew the lease"
        )
        transition = _interrupted(job, Cause.SHUTDOWN, why)
        return dataclasses.replace(transition, values={**transition.values, **base})
    if exit.stopped_for is StopCause.TIME_LIMIT:
        limit = job.max_runtime_seconds
        message = f"ran for its time limit of {limit} s" if limit else "ran for its time limit"
        values = _finish(TerminationReason.TIME_LIMIT, error_message=message, **base)
        return Transition(S.FAILED, values, Cause.TIME_LIMIT.value, reason=message)
    if exit.stopped_for is not None:
        request = RequestedAction(exit.stopped_for.value)
        pending = RequestedAction(job.requested_action) if job.requested_action else None
        if pending is not None and REQUEST_RANK[pending] > REQUEST_RANK[request]:
            # A cancel or mark-failed came after the worker signalled for a pause:
            # the person's latest request decides.
            request = pending
        transition = _carry_out_request(job, request, Cause.STOPPED.value)
        return dataclasses.replace(transition, values={**transition.values, **base})

    completed = completion(exit)
    if completed is not None:
        return completed

    if job.requested_action:
        # It failed by itself while a request waited: the person's request is what
        # they expect to see carried out, rather than a retry they did not want.
        transition = _carry_out_request(
            job, RequestedAction(job.requested_action), Cause.EXIT.value
        )
        return dataclasses.replace(transition, values={**transition.values, **base})

    if exit.signal is not None:
        termination, what = TerminationReason.SIGNAL, f"killed by signal {exit.signal}"
    else:
        termination, what = TerminationReason.EXIT_CODE, f"exit code {exit.exit_code}"
    message = exit.error_message or what
    if job.attempt < job.max_attempts:
        delay = backoff_seconds(job.attempt, backoff_base)
        values = {
            **_OFF_WORKER,
            **base,
            "attempt": job.attempt + 1,
            "not_before": NOW + delay,
            "error_message": message,
        }
        return Transition(
            S.QUEUED,
            values,
            Cause.EXIT.value,
            reason=f"{what}; attempt {job.attempt + 1} of {job.max_attempts} in {delay:g}s",
        )
    values = _finish(termination, error_message=message, **base)
    return Transition(S.FAILED, values, Cause.EXIT.value, reason=what)


def for_action(
    job: Job,
    action: Action,
    *,
    actor: str,
    lease_valid: bool = False,
    reason: str | None = None,
    force: bool = False,
    from_checkpoint: bool = True,
    changes: dict[str, Any] | None = None,
) -> Transition:
    """An operator's action on a job; raises :class:`InvalidTransition` when refused."""
    status = job.status
    if not allowed(action, status):
        raise InvalidTransition(job.id, status.value, action.value, _refusal(action, status))

    if status is S.RUNNING:
        if lease_valid:
            return _request(job, action, actor=actor, reason=reason, force=force)
        # Nobody holds the job any more: carry the action out now.
        request = ACTION_REQUEST[action]
        job = dataclasses.replace(job, request_reason=reason)
        transition = _carry_out_request(job, request, action.value)
        return dataclasses.replace(transition, reason=reason or "lease had expired")

    if action is Action.RELEASE:
        return Transition(S.QUEUED, {"queued_at": NOW}, action.value, reason)
    if action is Action.FORCE_START:
        # A forced job of a capped sweep starts past the sweep's max_running.
        values: dict[str, Any] = {
            "forced_at": job.forced_at or NOW,
            "not_before": None,
            "sweep_held": False,
        }
        if status is S.PENDING:
            values["queued_at"] = NOW
        return Transition(S.QUEUED, values, action.value, reason)
    if action is Action.PAUSE:
        return Transition(S.PAUSED, {}, action.value, reason)
    if action is Action.RESUME:
        return Transition(S.QUEUED, {"not_before": None}, action.value, reason)
    if action is Action.CANCEL:
        return Transition(S.CANCELLED, _finish(TerminationReason.CANCELLED), action.value, reason)
    if action is Action.MARK_FAILED:
        values = _finish(TerminationReason.MARKED_FAILED, error_message=reason)
        return Transition(S.FAILED, values, action.value, reason)
    if action is Action.RETRY:
        values = {
            **_OFF_WORKER,
            "queued_at": NOW,
            "forced_at": None,
            "not_before": None,
            "attempt": 1,
            "interruptions": 0,
            "finished_at": None,
            "termination_reason": None,
            "exit_code": None,
            "signal": None,
            "error_message": None,
        }
        if not from_checkpoint:
            values.update(checkpoint=None, progress=None)
        why = "from checkpoint" if from_checkpoint and job.checkpoint else "from scratch"
        return Transition(S.QUEUED, values, action.value, reason or why)
    if action is Action.PATCH:
        changes = {k: v for k, v in (changes or {}).items() if getattr(job, k) != v}
        what = ", ".join(f"{k} {getattr(job, k)} → {v}" for k, v in changes.items())
        return Transition(status, changes, action.value, what or "no change")
    raise AssertionError(f"unhandled action {action}")  # pragma: no cover


def _request(
    job: Job, action: Action, *, actor: str, reason: str | None, force: bool
) -> Transition:
    """Record a request on a running job for its worker to carry out."""
    new = ACTION_REQUEST[action]
    current = RequestedAction(job.requested_action) if job.requested_action else None
    if current is not None and not request_accepted(new, current):
        raise InvalidTransition(
            job.id,
            job.status.value,
            action.value,
            f"cannot {action.value}: the job is already being stopped to {current.value}",
        )
    kill = job.request_kill or force or (new is RequestedAction.CANCEL and current is new)
    values: dict[str, Any] = {
        "requested_action": new.value,
        "requested_by": actor,
        "request_reason": reason if reason is not None else job.request_reason,
        "request_kill": kill,
    }
    note = reason
    if kill and not job.request_kill:
        note = (reason + "; " if reason else "") + "kill now"
    return Transition(S.RUNNING, values, action.value, note)


def preempt_request(job: Job, reason: str) -> Transition:
    """The scheduling pass asks a running job's worker to stop it for another job (the
    pause path: SIGTERM, grace for a checkpoint); a person's request replaces it."""
    if job.status is not S.RUNNING or job.requested_action is not None or not job.preemptible:
        raise InvalidTransition(job.id, job.status.value, Cause.PREEMPT.value)
    values = {
        "requested_action": RequestedAction.PREEMPT.value,
        "requested_by": "scheduler",
        "request_reason": reason,
        "request_kill": False,
    }
    return Transition(S.RUNNING, values, Cause.PREEMPT.value, reason)


def _refusal(action: Action, status: JobStatus) -> str:
    if action is Action.FORCE_START and status is S.PAUSED:
        return "cannot force-start a paused job: resume it instead"
    if action is Action.FORCE_START and status is S.RUNNING:
        return "the job is already running"
    return f"cannot {action.value} a job that is {status.value}"
