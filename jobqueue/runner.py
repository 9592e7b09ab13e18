"""Claim and run jobs in-process with N concurrent slots.

The loop every claimer shares: claim what fits the free slots and GPUs in one
short transaction, run each job on a thread, record how it ended, and sleep
until a NOTIFY (or the poll interval) says there may be more. The worker
daemon runs processes through the same loop; benchmarks and tests run Python
callables.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol
from uuid import UUID

from jobqueue.errors import LeaseLost
from jobqueue.listener import ACTIONS_CHANNEL, JOBS_CHANNEL, Listener
from jobqueue.looper import Looper
from jobqueue.outcomes import Exit
from jobqueue.planner import run_pass
from jobqueue.records import Claimed
from jobqueue.worker_store import Renewal, WorkerIdentity, WorkerStore

log = logging.getLogger(__name__)

#: Runs one claimed job and says how it ended.
Handler = Callable[[Claimed], Exit]


class RunnerHooks(Protocol):
    """What a runner of real processes adds to the loop (the worker daemon)."""

    def renewed(self, renewal: Renewal, seconds_left: float) -> None:
        """Leases were renewed for ``seconds_left`` more; requests and lost leases
        must be acted on (a lost lease: stop that job's processes at once)."""

    def shutting_down(self) -> None:
        """The runner stops: ask running jobs to checkpoint and stop."""


class GpuSlots:
    """The GPUs of one host and which of them are free. Thread-safe."""

    def __init__(self, gpu_ids: Sequence[int]):
        self.all = tuple(gpu_ids)
        self._free = list(gpu_ids)
        self._lock = threading.Lock()

    def free(self) -> list[int]:
        with self._lock:
            return list(self._free)

    def take(self, ids: Sequence[int]) -> None:
        with self._lock:
            missing = set(ids) - set(self._free)
            if missing:
                raise RuntimeError(f"GPUs {sorted(missing)} are already in use")
            self._free = [i for i in self._free if i not in ids]

    def give_back(self, ids: Sequence[int]) -> None:
        with self._lock:
            self._free = [i for i in self.all if i in self._free or i in ids]


class SlotRunner:
    """Runs up to ``slots`` jobs at once for one worker identity."""

    def __init__(
        self,
        store: WorkerStore,
        worker: WorkerIdentity,
        handler: Handler,
        *,
        slots: int,
        listen_url: str | None = None,
        poll_seconds: float = 1.0,
        hooks: RunnerHooks | None = None,
        plan: bool = True,
    ):
        self.store = store
        self.worker = worker
        self.handler = handler
        self.slots = slots
        self.gpus = GpuSlots(worker.gpu_ids)
        self.poll_seconds = poll_seconds
        self.wakeup = threading.Event()
        self.hooks = hooks
        channels = (JOBS_CHANNEL, ACTIONS_CHANNEL) if hooks else (JOBS_CHANNEL,)
        self._listener = Listener(listen_url, channels, self.wakeup) if listen_url else None
        self._stop = threading.Event()
        self._running: dict[Future[Exit], Claimed] = {}
        #: The request (pause, cancel, fail, preempt) the last renewal saw on a running job.
        self._requests: dict[UUID, str] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="slot")
        self._thread: threading.Thread | None = None
        self._renewer = Looper("lease-renewer", self.renew_leases, store.settings.heartbeat_seconds)
        # Every claimer offers to run the scheduling pass; one at a time does (planner).
        self._planner = (
            Looper(
                "scheduling-pass",
                lambda: run_pass(store.engine, store.settings),
                store.settings.plan_interval_seconds,
            )
            if plan
            else None
        )

    def start(self) -> SlotRunner:
        if self._listener is not None:
            self._listener.start()
        self._thread = threading.Thread(target=self.run, name="claimer", daemon=True)
        self._thread.start()
        self._renewer.start()
        if self._planner is not None:
            self._planner.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, let running jobs end (hooks ask them to stop), and return."""
        self._stop.set()
        self.wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.hooks is not None:
            self.hooks.shutting_down()
        self._pool.shutdown(wait=True)
        self._renewer.stop()
        if self._planner is not None:
            self._planner.stop()
        if self._listener is not None:
            self._listener.stop()

    def busy(self) -> int:
        with self._lock:
            return len(self._running)

    def requested(self, job_id: UUID) -> str | None:
        """The request on a running job as the last lease renewal saw it, if any."""
        with self._lock:
            return self._requests.get(job_id)

    def run(self) -> None:
        while not self._stop.is_set():
            self.wakeup.clear()
            if self._listener is not None and self.hooks is not None:
                mine = [p for ch, p in self._listener.drain() if ch == ACTIONS_CHANNEL]
                if any(p.rsplit(" ", 1)[0] == self.worker.name for p in mine):
                    self._renew_safely()  # a request for one of our jobs: act now
            claimed = self.claim_once()
            if claimed and self.busy() < self.slots:
                continue  # the queue may hold more right away
            self.wakeup.wait(self.poll_seconds)

    def renew_leases(self) -> None:
        """Keep the leases of running jobs and pass requests on to the hooks.

        Without hooks (Python callables cannot be stopped) a lost lease is only
        logged; the worker daemon's hooks stop the job's processes instead.
        """
        with self._lock:
            leases = {job.id: job.lease_token for job in self._running.values()}
        asked = time.monotonic()
        renewal = self.store.renew(leases)
        with self._lock:
            self._requests.update({i: r for i, r in renewal.held.items() if r is not None})
        seconds_left = self.store.settings.lease_seconds - (time.monotonic() - asked)
        if self.hooks is not None:
            self.hooks.renewed(renewal, seconds_left)
        for job_id in renewal.lost:
            log.warning("job %s: lease lost while running", job_id)

    def _renew_safely(self) -> None:
        try:
            self.renew_leases()
        except Exception:
            log.exception("lease renewal failed")

    def claim_once(self) -> list[Claimed]:
        free_slots = self.slots - self.busy()
        if free_slots <= 0:
            return []
        try:
            claimed = self.store.claim(self.worker, free_gpu_ids=self.gpus.free(), slots=free_slots)
        except Exception:
            log.exception("claim failed; retrying in %.1fs", self.poll_seconds)
            return []
        for job in claimed:
            self.gpus.take(job.gpu_ids)
            future = self._pool.submit(self.handler, job)
            with self._lock:
                self._running[future] = job
            future.add_done_callback(self._done)
        return claimed

    def _done(self, future: Future[Exit]) -> None:
        with self._lock:
            job = self._running.pop(future)
            self._requests.pop(job.id, None)
        try:
            exit = future.result()
        except Exception as exc:  # the handler itself broke: the job failed
            log.exception("job %s raised", job.id)
            exit = Exit(exit_code=1, error_message=f"{type(exc).__name__}: {exc}")
        try:
            self._record_end(job, exit)
        finally:
            self.gpus.give_back(job.gpu_ids)
            self.wakeup.set()

    def _record_end(self, job: Claimed, exit: Exit) -> None:
        """Write how the job ended, retrying through a database outage for as long
        as the lease could still be valid; after that the sweep owns the job."""
        deadline = time.monotonic() + self.store.settings.lease_seconds
        delay = 0.25
        while True:
            try:
                self.store.finish(job.id, job.lease_token, exit, actor=self.worker.actor)
                return
            except LeaseLost:
                log.warning("job %s: lease lost before it finished; the sweep owns it", job.id)
                return
            except Exception:
                if time.monotonic() + delay > deadline:
                    log.exception("job %s: could not record its end; its lease will expire",
                                  job.id)  # fmt: skip
                    return
                log.warning("job %s: could not record its end; retrying", job.id, exc_info=True)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
