"""The application factory: ``gunicorn 'api:create_app()'``."""

from __future__ import annotations

import atexit
import logging
from datetime import datetime
from typing import Any
from uuid import UUID

from flask import Flask, jsonify, request
from flask.json.provider import DefaultJSONProvider
from sqlalchemy import Engine

from api import auth, errors, health, jobs, monitor, openapi, overview
from api.metrics import ApiMetrics
from jobqueue.db import make_engine
from jobqueue.looper import Looper
from jobqueue.migrate import require_head
from jobqueue.queue import JobQueue
from jobqueue.settings import Settings, get_settings
from jobqueue.sweeper import sweep_expired_leases

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


class JSONProvider(DefaultJSONProvider):
    """ISO-8601 times with their zone (Flask's default is an HTTP date), ids as strings."""

    sort_keys = False

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, datetime):
            return o.isoformat()
        if isinstance(o, UUID):
            return str(o)
        return DefaultJSONProvider.default(o)


def create_app(
    settings: Settings | None = None, *, engine: Engine | None = None, background: bool = True
) -> Flask:
    """Build the API. Refuses to start against a schema that is not at head, or with
    auth on and no tokens. ``background`` runs the lease sweep in this process."""
    settings = settings or get_settings()
    engine = engine or make_engine(
        settings.require_database_url(), application_name="jobqueue-api", pre_ping=False
    )
    require_head(engine)
    authenticator = auth.Authenticator(
        auth.parse_tokens(settings.api_tokens), enabled=settings.auth == "on"
    )

    app = Flask(__name__)
    app.json = JSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    queue = JobQueue(engine, settings)
    metrics = ApiMetrics(engine)
    app.extensions["jobqueue"] = queue
    app.extensions["jobqueue.metrics"] = metrics
    app.extensions["jobqueue.auth"] = authenticator

    @app.before_request
    def _authorize():
        role = auth.required_role(request.method, request.path)
        if role is not None:
            authenticator.require(role)

    @app.get("/api/openapi.json")
    def _openapi():
        return jsonify(openapi.document())

    metrics.install(app)
    errors.register(app)
    for blueprint in (jobs.bp, overview.bp, health.bp, monitor.bp):
        app.register_blueprint(blueprint)

    if background:
        sweeper = Looper(
            "lease-sweep", lambda: sweep_expired_leases(engine), settings.sweep_seconds
        ).start()
        atexit.register(sweeper.stop)
    return app
