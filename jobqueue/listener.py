"""Waking up on NOTIFY: new claimable jobs, and requests for a worker's jobs."""

from __future__ import annotations

import logging
import threading

import psycopg

from jobqueue.db import connect_raw

log = logging.getLogger(__name__)

JOBS_CHANNEL = "jobqueue_jobs"
ACTIONS_CHANNEL = "jobqueue_actions"
_KEEP_PAYLOADS = 1000


class Listener:
    """LISTENs on the given channels and sets ``wakeup`` on each notification.

    Runs in a thread; when the connection drops it reconnects with back-off and
    sets ``wakeup`` anyway, since notifications may have been missed meanwhile.
    It keeps the latest payloads of every channel (at most 1000) until the owner
    takes them with :meth:`drain`.
    """

    def __init__(self, url: str, channels: tuple[str, ...], wakeup: threading.Event):
        self.url = url
        self.channels = channels
        self.wakeup = wakeup
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._payloads: list[tuple[str, str]] = []

    def start(self, *, wait: float = 10.0) -> Listener:
        self._thread = threading.Thread(target=self._run, name="listener", daemon=True)
        self._thread.start()
        self._ready.wait(wait)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def drain(self) -> list[tuple[str, str]]:
        """(channel, payload) pairs received since the last drain."""
        with self._lock:
            out, self._payloads = self._payloads, []
        return out

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                with connect_raw(self.url, autocommit=True) as conn:
                    for channel in self.channels:
                        conn.execute(f"LISTEN {channel}")
                    self._ready.set()
                    delay = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            with self._lock:
                                self._payloads.append((note.channel, note.payload))
                                del self._payloads[:-_KEEP_PAYLOADS]
                            self.wakeup.set()
            except psycopg.Error as exc:
                log.warning("listener lost the database (%s); reconnecting in %.1fs", exc, delay)
                self.wakeup.set()
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
