"""/api/queue, /api/workers and admin maintenance."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from api.requests import float_arg
from jobqueue.pruner import prune_finished
from jobqueue.queue import JobQueue

bp = Blueprint("overview", __name__, url_prefix="/api")


def _queue() -> JobQueue:
    return current_app.extensions["jobqueue"]


@bp.get("/queue")
def queue():
    return jsonify({"pools": _queue().queue()})


@bp.get("/workers")
def workers():
    return jsonify({"items": [w.public() for w in _queue().workers()]})


@bp.post("/admin/prune")
def prune():
    """Delete finished jobs older than ``older_than_days`` (default: the setting)."""
    queue = _queue()
    days = float_arg("older_than_days", queue.settings.prune_after_days, low=0, high=36500)
    deleted = prune_finished(queue.engine, older_than_seconds=days * 86400)
    return jsonify({"deleted": deleted})
