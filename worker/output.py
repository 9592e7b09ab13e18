"""What a job prints, on its way to the database: log lines and reports.

Lines are buffered and written every half second in one statement, so a
chatty job costs a few transactions a second. While the database is away the
buffer is kept (bounded, oldest dropped) and written once it is back. When
the lease is lost, nothing more is written: the job belongs to someone else.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from jobqueue.errors import LeaseLost
from jobqueue.records import Claimed
from jobqueue.worker_store import Progress, WorkerStore
from worker.reports import MAX_LINE_CHARS, parse_report

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
MAX_PENDING_REPORTS = 500


class OutputSink:
    def __init__(self, store: WorkerStore, job: Claimed, *, max_buffered_lines: int):
        self.store = store
        self.job = job
        self._lines: deque[tuple[str, str]] = deque(maxlen=max_buffered_lines)
        self._progress: deque[Progress] = deque(maxlen=MAX_PENDING_REPORTS)
        self._checkpoint: tuple[str, int | None] | None = None
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self.lease_lost = False
        self._thread = threading.Thread(target=self._loop, name=f"output-{job.id}", daemon=True)
        self._thread.start()

    def line(self, stream: str, text: str) -> None:
        report = parse_report(text)
        with self._lock:
            if report is None:
                self._lines.append((stream, text[:MAX_LINE_CHARS]))
                return
            if report.checkpoint is not None:
                self._checkpoint = (report.checkpoint, report.step)
            if report.has_progress:
                self._progress.append(
                    Progress(report.fraction, report.step, report.message, report.metrics)
                )

    def close(self) -> None:
        """Stop the timer and write what is left (before the job's end is recorded)."""
        self._stop.set()
        self._thread.join(5)
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        if self.lease_lost:
            return
        with self._flush_lock:
            with self._lock:
                lines = list(self._lines)
                self._lines.clear()
                checkpoint, self._checkpoint = self._checkpoint, None
                reports = list(self._progress)
                self._progress.clear()
            try:
                if lines:
                    self.store.append_logs(self.job.id, self.job.lease_token, lines)
                    lines = []
                if checkpoint is not None:
                    uri, step = checkpoint
                    self.store.report_checkpoint(self.job.id, self.job.lease_token, uri, step)
                    checkpoint = None
                while reports:
                    self.store.report_progress(self.job.id, self.job.lease_token, reports[0])
                    reports.pop(0)
            except LeaseLost:
                self.lease_lost = True
            except Exception as exc:
                log.warning("job %s: could not store its output yet (%s)", self.job.id, exc)
                with self._lock:  # keep it for the next try, in order
                    self._lines.extendleft(reversed(lines))
                    if self._checkpoint is None:
                        self._checkpoint = checkpoint
                    self._progress.extendleft(reversed(reports))
