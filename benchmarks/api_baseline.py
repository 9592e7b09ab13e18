"""The API benchmark's baseline: a minimal Flask app under the same gunicorn settings that
runs one ``SELECT * FROM jobs WHERE id = %s`` with psycopg and returns the row as JSON.

It is written to the run's folder and served from there, so that it imports nothing of
this repository.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from benchmarks.harness.servers import clean_env
from jobqueue.db import libpq_conninfo

#: The gunicorn app of the module :func:`write_baseline_app` writes.
BASELINE_APP_NAME = "jqbench_baseline_app:app"

BASELINE_APP = '''
"""The baseline: one SELECT with psycopg (a connection per thread), the row as JSON."""
import os
import threading
from datetime import datetime

import psycopg
from flask import Flask, jsonify
from psycopg.rows import dict_row

app = Flask(__name__)
app.json.default = lambda o: o.isoformat() if isinstance(o, datetime) else str(o)
_local = threading.local()


def connection():
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(
            os.environ["BASELINE_DSN"], autocommit=True, row_factory=dict_row
        )
    return conn


@app.get("/jobs/<job_id>")
def get_job(job_id):
    row = connection().execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()
    if row is None:
        return jsonify({"error": "not found"}), 404
    return jsonify(row)


@app.get("/healthz")
def healthz():
    return jsonify({"ok": True})
'''


def write_baseline_app(workdir: Path, url: str) -> dict[str, str]:
    """Writes the baseline app to ``workdir``; returns the environment to serve it with,
    whose ``BASELINE_DSN`` names the database at ``url``."""
    (workdir / "jqbench_baseline_app.py").write_text(textwrap.dedent(BASELINE_APP))
    return {
        **clean_env("PROMETHEUS_MULTIPROC_DIR"),
        "BASELINE_DSN": libpq_conninfo(url),
        "PYTHONPATH": str(workdir),
    }
