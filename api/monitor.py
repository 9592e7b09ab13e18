"""The web monitor at ``/``: one page of plain HTML and vanilla JS over the REST API.

It holds no data of its own and takes no second code path: every list,
detail and action goes through the same ``/api`` endpoints the frontend uses,
with the token the person typed (kept in the browser's localStorage).

Its files are served at ``/static``; the app itself serves none (see
:func:`api.app.create_app`), so that one URL rule answers there.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

bp = Blueprint(
    "monitor", __name__, template_folder="templates", static_folder="static",
    static_url_path="/static",
)  # fmt: skip


@bp.get("/")
def index():
    auth_on = current_app.extensions["jobqueue.auth"].enabled
    return render_template("monitor.html", auth_on=auth_on)
