"""Who a request acts for: the queue as the caller's token may use it, and the team a
submit counts against. Shared by the routes that change jobs and sweeps."""

from __future__ import annotations

from flask import current_app

from api.auth import token
from api.errors import ApiError
from jobqueue.queue import JobQueue


def queue() -> JobQueue:
    return current_app.extensions["jobqueue"]


def acting() -> JobQueue:
    """The queue as the caller may change it: an admin's every team, an operator's own."""
    caller = token()
    if caller.role == "admin":
        return queue()
    return queue().for_team(caller.team)


def submitting_team(named: str | None) -> str:
    """The team a submit counts against: the one the body names, else the token's; only an
    admin may name another team than its own (403 otherwise)."""
    caller = token()
    if named is None:
        return caller.team
    if named != caller.team and caller.role != "admin":
        raise ApiError(403, "forbidden", f"this token submits for team {caller.team}, "
                       f"not {named}", team=caller.team, job_team=named)  # fmt: skip
    return named


def count(action: str, n: int = 1) -> None:
    """Count accepted actions in the API's Prometheus metrics."""
    current_app.extensions["jobqueue.metrics"].actions.labels(action=action).inc(n)
