"""What every worker does around its jobs, whatever runs them.

Start: check the schema, re-queue the jobs a previous run of this worker's name left
running (their leases are no one's now), register the heartbeat row, then start the
heartbeat, the lease sweep and the claim loop. Stop: stop claiming and let the running
jobs end (the runner's hooks ask them to), stop the loops, mark the worker stopped so the
API shows it gone at once. The worker daemon (processes) and
:class:`jobqueue.inprocess.PythonWorker` (callables) both live this way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jobqueue.looper import Looper
from jobqueue.migrate import require_head
from jobqueue.runner import SlotRunner
from jobqueue.sweeper import sweep_expired_leases
from jobqueue.worker_store import WorkerIdentity, WorkerStore

log = logging.getLogger(__name__)


class WorkerLife:
    """The start and stop of one worker ``identity`` whose jobs ``runner`` runs;
    ``devices`` gives the per-GPU detail its heartbeat row shows."""

    def __init__(
        self,
        store: WorkerStore,
        identity: WorkerIdentity,
        runner: SlotRunner,
        *,
        devices: Callable[[], Sequence[Mapping[str, Any]]] = lambda: (),
    ):
        self.store = store
        self.identity = identity
        self.runner = runner
        self._devices = devices
        settings = store.settings
        self._heartbeat = Looper("heartbeat", self.heartbeat, settings.heartbeat_seconds)
        self._sweeper = Looper(
            "lease-sweep", lambda: sweep_expired_leases(store.engine), settings.sweep_seconds
        )

    def start(self, *, before_requeue: Callable[[], None] | None = None) -> None:
        """Start the worker; ``before_requeue`` runs after the schema check, before the
        orphans go back to the queue (the daemon removes leftover processes there)."""
        require_head(self.store.engine)
        if before_requeue is not None:
            before_requeue()
        for job in self.store.requeue_orphans(self.identity):
            log.warning("job %s left running by a previous run is now %s", job.id,
                        job.status.value)  # fmt: skip
        self.store.heartbeat_worker(
            self.identity, free_gpus=len(self.identity.gpu_ids), devices=self._devices(),
            restarted=True,
        )  # fmt: skip
        self._heartbeat.start()
        self._sweeper.start()
        self.runner.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.runner.stop(timeout=timeout)
        self._heartbeat.stop()
        self._sweeper.stop()
        try:
            self.store.stop_worker(self.identity)
        except Exception:
            log.warning("could not mark the worker stopped", exc_info=True)

    def heartbeat(self) -> None:
        self.store.heartbeat_worker(
            self.identity, free_gpus=len(self.runner.gpus.free()), devices=self._devices()
        )
