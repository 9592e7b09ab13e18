"""The scheduling pass in a process of its own, for the NOTIFY replay.

Deployed, every host is a worker daemon of its own and the pass runs inside one of them
(whichever takes the advisory lock), so its Python work competes with one host's claims
at most. The replay runs every host in one Python process; a pass run by one of its
runners would hold that process's interpreter lock against all of them at once, and the
claim latencies measured would be the harness's. So the replay's runners do not plan,
and this process runs :func:`jobqueue.planner.run_pass` every ``plan_interval_seconds``,
the loop a daemon's planner runs.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import sys
from typing import Any

from jobqueue.db import make_engine
from jobqueue.planner import run_pass
from jobqueue.settings import Settings

#: How long a stop waits for the process before it is terminated (real seconds).
STOP_TIMEOUT_S = 10.0


def _plan_until(values: dict[str, Any], stop: multiprocessing.synchronize.Event) -> None:
    settings = Settings(**values)
    engine = make_engine(settings.database_url, pool_size=1, application_name="jobqueue-planner")
    try:
        while not stop.wait(settings.plan_interval_seconds):
            try:
                run_pass(engine, settings)
            except Exception as exc:  # as a daemon's planner: say so, plan again next time
                print(f"planner: the scheduling pass failed: {exc!r}", file=sys.stderr)
    finally:
        engine.dispose()


class PlannerProcess:
    """Runs the pass in a child process from :meth:`start` to :meth:`stop`."""

    def __init__(self, settings_values: dict[str, Any]):
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._process = context.Process(
            target=_plan_until, args=(settings_values, self._stop), name="planner", daemon=True
        )

    def start(self) -> PlannerProcess:
        self._process.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._process.join(STOP_TIMEOUT_S)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(STOP_TIMEOUT_S)
