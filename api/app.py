"""The application factory: ``gunicorn 'api:create_app()'``."""

from __future__ import annotations

import atexit
import logging
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from flask import Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from sqlalchemy import Engine

from api import auth, errors, health, jobs, monitor, openapi, overview, sweeps, teams
from api.metrics import ApiMetrics
from jobqueue.db import make_engine
from jobqueue.looper import Looper
from jobqueue.migrate import require_head
from jobqueue.pruner import scheduled_prune
from jobqueue.queue import JobQueue
from jobqueue.settings import Settings, get_settings
from jobqueue.sweeper import sweep_expired_leases

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


class JSONProvider(DefaultJSONProvider):
    """JSON bodies encoded by orjson; ISO-8601 times with their zone (Flask's default is an
    HTTP date) and ids as strings.

    Encoding is a fair share of a job read's time: the standard encoder calls back into
    Python for each of a job's dozen times and its id, orjson encodes them natively and
    hands back bytes. What orjson refuses (an integer beyond 64 bits in a job's config, a
    dict with non-string keys) goes through the standard encoder, so nothing a client
    stored fails to come back.
    """

    sort_keys = False
    ensure_ascii = False

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, datetime):
            return o.isoformat()
        if isinstance(o, UUID):
            return str(o)
        return DefaultJSONProvider.default(o)

    def encode(self, obj: Any, *, indent: bool = False) -> bytes:
        try:
            return orjson.dumps(
                obj, default=self.default, option=orjson.OPT_INDENT_2 if indent else 0
            )
        except TypeError:  # orjson.JSONEncodeError is one
            separators = None if indent else (",", ":")
            text = super().dumps(obj, indent=2 if indent else None, separators=separators)
            return text.encode()

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:
            return super().dumps(obj, **kwargs)
        return self.encode(obj).decode()

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        indent = self.compact is False or (self.compact is None and self._app.debug)
        return Response(self.encode(obj, indent=indent) + b"\n", mimetype=self.mimetype)


def create_app(
    settings: Settings | None = None, *, engine: Engine | None = None, background: bool = True
) -> Flask:
    """Build the API. Refuses to start against a schema that is not at head, or with
    auth on and no tokens. ``background`` runs the lease sweep and the scheduled pruning
    in this process."""
    settings = settings or get_settings()
    engine = engine or make_engine(
        settings.require_database_url(), application_name="jobqueue-api", pre_ping=False
    )
    require_head(engine)
    authenticator = auth.Authenticator(
        auth.parse_tokens(settings.api_tokens), enabled=settings.auth == "on"
    )

    # No static folder of the app's own: the monitor's blueprint serves /static.
    app = Flask(__name__, static_folder=None)
    app.json = JSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    queue = JobQueue(engine, settings)
    metrics = ApiMetrics(queue)
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
    for blueprint in (jobs.bp, sweeps.bp, overview.bp, teams.bp, health.bp, monitor.bp):
        app.register_blueprint(blueprint)

    if background:
        sweeper = Looper(
            "lease-sweep", lambda: sweep_expired_leases(engine), settings.sweep_seconds
        ).start()
        pruner = Looper(
            "prune",
            lambda: scheduled_prune(engine, older_than_days=settings.prune_after_days),
            settings.prune_interval_seconds,
        ).start()
        app.extensions["jobqueue.loopers"] = [sweeper, pruner]
        atexit.register(sweeper.stop)
        atexit.register(pruner.stop)
    return app
