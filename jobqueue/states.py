"""The job state machine, written down once.

:data:`ALLOWED_FROM` decides which actions a job accepts: the rules in
:mod:`jobqueue.outcomes` refuse the rest (the API answers 409), each job's JSON
lists what it accepts now (``allowed_actions``, which the web monitor shows), and
the database mirrors :class:`JobStatus` as an enum type, so a state cannot exist
in one place and not another. :data:`REQUEST_RANK` decides which request on a
running job replaces which, for the API and the worker alike.
"""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    """Where a job is. Each comment says who moves a job out of the state."""

    #: Submitted with ``hold``; never claimed. Left by an operator: release,
    #: force-start, pause, cancel or mark-failed.
    PENDING = "pending"
    #: Eligible to run. Left when a worker claims it, or by an operator:
    #: pause, cancel or mark-failed.
    QUEUED = "queued"
    #: Claimed by one worker holding a lease. Left by that worker (the process
    #: ended, it was stopped on request, or the worker shut down) or by the
    #: lease sweep when the lease expired.
    RUNNING = "running"
    #: Stopped by a user, keeps its checkpoint. Left by an operator: resume,
    #: cancel or mark-failed.
    PAUSED = "paused"
    #: Finished successfully. Final; only pruning removes it.
    COMPLETED = "completed"
    #: Finished unsuccessfully. Left only by retry (or pruning).
    FAILED = "failed"
    #: Stopped for good by a user. Left only by retry (or pruning).
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class Action(enum.StrEnum):
    """What a person (through the API or CLI) asks of a job."""

    RELEASE = "release"
    FORCE_START = "force-start"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    MARK_FAILED = "mark-failed"
    RETRY = "retry"
    PATCH = "patch"


S = JobStatus

#: The statuses each action is accepted from. Anything else is refused (409).
ALLOWED_FROM: dict[Action, frozenset[JobStatus]] = {
    Action.RELEASE: frozenset({S.PENDING}),
    Action.FORCE_START: frozenset({S.PENDING, S.QUEUED}),
    Action.PAUSE: frozenset({S.PENDING, S.QUEUED, S.RUNNING}),
    Action.RESUME: frozenset({S.PAUSED}),
    Action.CANCEL: frozenset({S.PENDING, S.QUEUED, S.PAUSED, S.RUNNING}),
    Action.MARK_FAILED: frozenset({S.PENDING, S.QUEUED, S.PAUSED, S.RUNNING}),
    Action.RETRY: frozenset({S.FAILED, S.CANCELLED}),
    Action.PATCH: frozenset({S.PENDING, S.QUEUED}),
}


class RequestedAction(enum.StrEnum):
    """A request recorded on a running job for its worker to carry out."""

    PAUSE = "pause"
    CANCEL = "cancel"
    FAIL = "fail"
    #: The scheduling pass needs its GPUs: checkpoint and go back to the queue.
    PREEMPT = "preempt"


#: The status a running job ends in once its worker carried out the request.
REQUEST_OUTCOME: dict[RequestedAction, JobStatus] = {
    RequestedAction.PAUSE: S.PAUSED,
    RequestedAction.CANCEL: S.CANCELLED,
    RequestedAction.FAIL: S.FAILED,
    RequestedAction.PREEMPT: S.QUEUED,
}

#: The request an action on a running job turns into.
ACTION_REQUEST: dict[Action, RequestedAction] = {
    Action.PAUSE: RequestedAction.PAUSE,
    Action.CANCEL: RequestedAction.CANCEL,
    Action.MARK_FAILED: RequestedAction.FAIL,
}


#: How strong each request is: a request replaces a weaker one (a cancel or a
#: mark-failed replaces a pause, a person's request the scheduler's), never an
#: equal or stronger one.
REQUEST_RANK: dict[RequestedAction, int] = {
    RequestedAction.PREEMPT: -1,
    RequestedAction.PAUSE: 0,
    RequestedAction.CANCEL: 1,
    RequestedAction.FAIL: 1,
}


def request_accepted(new: RequestedAction, current: RequestedAction | None) -> bool:
    """Whether ``new`` may be recorded on a running job that carries ``current``: the
    same request again (a second cancel kills at once), or a stronger one."""
    return current is None or new is current or REQUEST_RANK[new] > REQUEST_RANK[current]


class TerminationReason(enum.StrEnum):
    """What ended a finished job's last attempt."""

    COMPLETED = "completed"
    EXIT_CODE = "exit_code"
    SIGNAL = "signal"
    CANCELLED = "cancelled"
    MARKED_FAILED = "marked_failed"
    MAX_INTERRUPTIONS = "max_interruptions"
    SPAWN_FAILED = "spawn_failed"
    TIME_LIMIT = "time_limit"


#: Termination reason of a job finished by carrying out a request.
REQUEST_TERMINATION: dict[RequestedAction, TerminationReason | None] = {
    RequestedAction.PAUSE: None,
    RequestedAction.CANCEL: TerminationReason.CANCELLED,
    RequestedAction.FAIL: TerminationReason.MARKED_FAILED,
    RequestedAction.PREEMPT: None,
}


class Cause(enum.StrEnum):
    """Event names for transitions nobody asked for through the API."""

    SUBMIT = "submit"
    CLAIM = "claim"
    EXIT = "exit"
    SPAWN_FAILED = "spawn_failed"
    STOPPED = "stopped"
    SHUTDOWN = "shutdown"
    LEASE_EXPIRED = "lease_expired"
    WORKER_RESTART = "worker_restart"
    TIME_LIMIT = "time_limit"
    PREEMPT = "preempt"


def allowed(action: Action, status: JobStatus) -> bool:
    return status in ALLOWED_FROM[action]


def allowed_actions(status: JobStatus, requested_action: str | None = None) -> list[Action]:
    """The actions a job accepts now, in :class:`Action` order: those its status allows,
    less, on a running job, a request that the one it carries outranks.

    (A running job whose lease has expired accepts every action of its status; the
    sweep re-queues it within seconds, so the list leaves that case out.)
    """
    current = RequestedAction(requested_action) if requested_action else None
    return [
        action
        for action in Action
        if status in ALLOWED_FROM[action]
        and not (
            status is S.RUNNING
            and action in ACTION_REQUEST
            and not request_accepted(ACTION_REQUEST[action], current)
        )
    ]
