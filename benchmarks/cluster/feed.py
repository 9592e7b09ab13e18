"""Feeding the real replay: submitting the trace's jobs at their compressed times.

:class:`Submitter` submits each job at its time (the NOTIFY mode: the runners wake
themselves); :class:`Dispatcher` also wakes the hosts itself, in index order, with a
scheduling pass before each round of claims (the ordered mode, which the simulator's
ordered twin must match). :class:`Depth` counts the jobs submitted but not yet started.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from benchmarks.cluster.readback import KIND
from benchmarks.cluster.schedule import HeldGpus
from benchmarks.cluster.trace import TraceJob
from jobqueue.errors import InvalidTransition
from jobqueue.planner import run_pass
from jobqueue.queue import JobQueue
from jobqueue.runner import SlotRunner
from jobqueue.settings import Settings
from jobqueue.specs import JobSpec

POOL = "default"
ACTOR = "replay"


def real_limit_s(limit_s: float | None, compression: float) -> int | None:
    """The ``max_runtime_seconds`` a job of trace limit ``limit_s`` is submitted with."""
    if limit_s is None:
        return None
    return max(1, math.ceil(limit_s / compression - 1e-9))


@dataclasses.dataclass
class Depth:
    """Jobs submitted but not yet started, from the replay's own counters. Thread-safe."""

    submitted: int = 0
    started: int = 0
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def add_submitted(self, n: int) -> None:
        with self._lock:
            self.submitted += n

    def add_started(self, n: int) -> None:
        with self._lock:
            self.started += n

    def now(self) -> int:
        # A claim may start a job between the submit's commit and the submitter's count.
        with self._lock:
            return max(0, self.submitted - self.started)


class Submitter:
    """One thread that submits each job at its compressed submit time (and force-starts
    the forced ones right after their submit)."""

    def __init__(
        self,
        queue: JobQueue,
        jobs: Sequence[TraceJob],
        *,
        start: float,
        compression: float,
        depth: Depth,
        abort: threading.Event,
    ):
        self.queue = queue
        self.jobs = sorted(jobs, key=lambda j: (j.submit_s, j.index))
        self.start = start
        self.compression = compression
        self.depth = depth
        self.abort = abort
        #: trace index → real seconds after the start instant the force-start returned.
        self.forced_at: dict[int, float] = {}
        #: trace indices whose force-start was refused (already running or finished).
        self.force_refused: dict[int, str] = {}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="replay-submitter", daemon=True)

    def start_thread(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            for job in self.jobs:
                due = self.start + job.submit_s / self.compression
                if self.abort.wait(max(0.0, due - time.monotonic())):
                    return
                self._submit(job)
        except Exception as exc:  # handed to the main thread
            self.error = exc
            self.abort.set()

    def _submit(self, job: TraceJob) -> None:
        """Submit one job (and force-start it if it is a forced one)."""
        spec = JobSpec(
            name=f"{job.team}/{job.index}",
            kind=KIND,
            pool=POOL,
            gpus=job.gpus,
            team=job.team,
            max_runtime_seconds=real_limit_s(job.limit_s, self.compression),
            config={"team": job.team, "trace_index": job.index, "duration_s": job.duration_s},
        )
        created, _ = self.queue.submit(spec, actor=ACTOR)
        self.depth.add_submitted(1)
        if job.forced:
            try:
                self.queue.force_start(created.id, actor=ACTOR)
            except InvalidTransition as exc:  # claimed (or done) before it could be forced
                self.force_refused[job.index] = str(exc)
            self.forced_at[job.index] = time.monotonic() - self.start


class HostWake:
    """Stands in for a runner's ``wakeup`` event in the ordered mode: the runner sets it when
    one of its jobs has ended, and the dispatcher learns which host to let claim."""

    def __init__(self, host: int, ended: set[int], lock: threading.Lock, any_end: threading.Event):
        self.host, self._ended, self._lock, self._any = host, ended, lock, any_end

    def set(self) -> None:
        with self._lock:
            self._ended.add(self.host)
        self._any.set()

    def clear(self) -> None:
        pass


class Dispatcher(Submitter):
    """The ordered mode: one thread submits the jobs that are due, then wakes the hosts
    itself, in index order, as the simulator's ordered twin does: a host whose job ended
    claims first, then after submits every host in turn; each claims until nothing more
    fits. The claims are the runners' own (``SlotRunner.claim_once``: the real claim, the
    real choice rule, the real fenced finish); only the NOTIFY race is replaced."""

    def __init__(
        self,
        *args: Any,
        runners: Sequence[SlotRunner],
        engine: Engine,
        settings: Settings,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.runners = runners
        self.engine = engine
        self.settings = settings
        self.plan: dict = {}
        #: Each scheduling pass's real milliseconds.
        self.pass_ms: list[float] = []
        #: GPUs the pass's reservations kept free (trace seconds), for the metrics.
        self.held = HeldGpus()
        self.any_end = threading.Event()
        self._ended: set[int] = set()
        self._lock = threading.Lock()
        for host, runner in enumerate(runners):
            runner.wakeup = HostWake(host, self._ended, self._lock, self.any_end)  # type: ignore[assignment]

    def _run(self) -> None:
        try:
            pending = list(self.jobs)
            while not self.abort.is_set():
                if not pending and self.depth.now() == 0:
                    return  # every job submitted and claimed; the runners finish them
                wait = 0.5  # bounded, so that an abort is seen
                if pending:
                    due = self.start + pending[0].submit_s / self.compression
                    wait = min(wait, max(0.0, due - time.monotonic()))
                self.any_end.wait(wait)
                self.any_end.clear()
                with self._lock:  # emptied in place: the hosts' HostWake hold this set
                    ended = sorted(self._ended)
                    self._ended.clear()
                if ended:
                    self._round(ended)
                now = time.monotonic()
                submitted = False
                while pending and self.start + pending[0].submit_s / self.compression <= now:
                    self._submit(pending.pop(0))
                    submitted = True
                if submitted:
                    self._round(range(len(self.runners)))
        except Exception as exc:  # handed to the main thread
            self.error = exc
            self.abort.set()

    def _round(self, hosts: Sequence[int]) -> None:
        """A scheduling pass (when jobs wait), then each host in turn claims until nothing
        more fits; then what the reservations hold, for the metrics."""
        planned = self.depth.now() > 0
        if planned:
            before = time.perf_counter()
            result = run_pass(self.engine, self.settings, force=True)
            self.pass_ms.append((time.perf_counter() - before) * 1000.0)
            self.plan = result.plans if result is not None else {}
        started: set = set()
        for host in hosts:
            while claimed := self.runners[host].claim_once():
                started.update(c.job.id for c in claimed)
        if planned:
            self._hold(started)

    def _hold(self, started: set) -> None:
        now = (time.monotonic() - self.start) * self.compression
        self.held.close(now)
        names = {r.worker.name: h for h, r in enumerate(self.runners)}
        for plan in self.plan.values():
            for r in plan.reservations:
                host = names.get(r.worker_name)
                if host is not None and r.job_id not in started:
                    self.held.hold(host, min(len(self.runners[host].gpus.free()), r.gpus), now)
