"""How the API is served: the gunicorn command line of ``jobqueue api`` and ``jobqueue up``.

The API benchmark (``benchmarks/harness/servers.py``) serves with the same line, so that its
figures are those of what is deployed.
"""

from __future__ import annotations

import os
import sys

#: Threads of each gunicorn process.
API_THREADS = 4


def default_api_processes() -> int:
    """One process more than cores (at most 8): with fewer processes than gunicorn's usual
    2 × cores + 1 they take turns on the cores less often, which gave more requests per
    second on 2 cores (``python -m benchmarks.api_bench --shape 2x4 --shape 3x4 ...``)."""
    return min((os.cpu_count() or 1) + 1, 8)


def gunicorn_argv(
    bind: str,
    *,
    processes: int | None = None,
    threads: int = API_THREADS,
    app: str = "api:create_app()",
    access_log: bool = False,
    graceful_timeout: int | None = None,
) -> list[str]:
    """gunicorn serving ``app`` on ``bind`` (``host:port``) with gthread workers.

    ``access_log`` writes one line per request to standard output. It is off unless asked
    for: gunicorn's access line cost 12–19% of the requests per second of a job's GET on
    2 cores, on the path every open job page polls, and each action is already recorded in
    the job's events with its actor. ``graceful_timeout`` (gunicorn's default is 30 s) is
    how long a stopping worker may finish its requests.
    """
    processes = processes or default_api_processes()
    access = ["--access-logfile", "-"] if access_log else []
    graceful = ["--graceful-timeout", str(graceful_timeout)] if graceful_timeout else []
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", bind,
        "--workers", str(processes),
        "--threads", str(threads),
        "--worker-class", "gthread",
        *access,
        *graceful,
        app,
    ]  # fmt: skip
