"""A small periodic duty (sweep, prune, heartbeat) that survives its own failures."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Looper:
    """Runs ``duty`` every ``interval`` seconds in a daemon thread until stopped.

    A failed iteration is logged and the loop goes on: a database outage must
    not kill the duty that recovers from it.
    """

    def __init__(self, name: str, duty: Callable[[], object], interval: float):
        self.name = name
        self.duty = duty
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Looper:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> None:
        try:
            self.duty()
        except Exception:
            log.exception("%s failed; trying again in %.1fs", self.name, self.interval)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval)
