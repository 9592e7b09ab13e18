"""/api/teams: the teams admins set up (fair-share weight, GPU quotas per pool)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from api.errors import ApiError
from api.requests import json_body
from jobqueue.queue import JobQueue
from jobqueue.specs import TeamSpec, check_team_name

bp = Blueprint("teams", __name__, url_prefix="/api/teams")


def _queue() -> JobQueue:
    return current_app.extensions["jobqueue"]


@bp.get("")
def list_teams():
    return jsonify({"items": [t.public() for t in _queue().teams()]})


@bp.put("/<name>")
def put_team(name: str):
    """Create or change a team (admin): ``{"share": 1, "quota_gpus": {"<pool>": 16}}``."""
    try:
        check_team_name(name)
    except ValueError as exc:
        raise ApiError(400, "invalid", str(exc), team=name) from exc
    spec = json_body(TeamSpec)
    return jsonify(_queue().set_team(name, spec).public())
