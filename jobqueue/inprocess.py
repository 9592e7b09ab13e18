"""A worker inside your own process: jobs run as Python callables on N slots.

What the worker daemon does around its jobs, without processes: the schema check, the
worker's heartbeat row (so the API lists it and waiting reasons know its kinds), lease
renewal, the lease sweep, the scheduling pass, re-queueing what a previous run of the
same name left running, and marking itself stopped. For scripts, notebooks, tests and
benchmarks that want the queue's guarantees for work done in Python::

    import jobqueue

    def train(job: jobqueue.JobContext) -> None:
        for step in range(100):
            ...
            job.progress(step / 100, step=step, metrics={"loss": 0.1})

    queue = jobqueue.connect("postgresql://…")
    queue.submit(jobqueue.JobSpec(name="a", kind="train", gpus=0), actor="me")
    with jobqueue.PythonWorker(queue, {"train": train}, slots=4):
        ...  # runs until the block ends

A callable returns None (success) or an :class:`~jobqueue.outcomes.Exit`; an exception
fails the attempt (retried while attempts remain). A Python callable cannot be stopped
from outside, so pause, cancel and preemption requests, and the worker's own stop, reach
it as ``job.stop_requested`` for it to honour; a job whose lease is lost is only logged.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jobqueue.db import make_engine
from jobqueue.migrate import require_head
from jobqueue.outcomes import Exit, StopCause
from jobqueue.queue import JobQueue
from jobqueue.records import Claimed, Job
from jobqueue.runner import SlotRunner
from jobqueue.settings import Settings
from jobqueue.worker_life import WorkerLife
from jobqueue.worker_store import Progress, WorkerIdentity, WorkerStore


class JobContext:
    """One running job as its callable sees it: the job, and its fenced reports."""

    def __init__(self, claimed: Claimed, store: WorkerStore, request: Callable[[], str | None]):
        self.job: Job = claimed.job
        self._claimed = claimed
        self._store = store
        self._request = request
        #: The request the callable was told of (it then decides the outcome).
        self.told: str | None = None

    @property
    def config(self) -> dict[str, Any]:
        return self.job.config

    @property
    def gpu_ids(self) -> list[int]:
        return self._claimed.gpu_ids

    @property
    def stop_requested(self) -> str | None:
        """Why the job should stop now, if it should: a request on it (``pause``,
        ``cancel``, ``fail``, ``preempt``, as the last lease renewal saw it) or
        ``shutdown`` (the worker is stopping). Checkpoint and return when set: once the
        callable has been told, the request decides how the job ends, as a signal does
        for a process."""
        request = self._request()
        if request is not None:
            self.told = request
        return request

    def progress(
        self,
        fraction: float | None = None,
        *,
        step: int | None = None,
        metrics: Mapping[str, float] | None = None,
        message: str | None = None,
    ) -> None:
        progress = Progress(fraction=fraction, step=step, metrics=metrics, message=message)
        self._store.report_progress(self.job.id, self._claimed.lease_token, progress)

    def checkpoint(self, uri: str, *, step: int | None = None) -> None:
        self._store.report_checkpoint(self.job.id, self._claimed.lease_token, uri, step)

    def log(self, *lines: str) -> None:
        self._store.append_logs(
            self.job.id, self._claimed.lease_token, [("stdout", line) for line in lines]
        )


#: A job kind's code: it gets the running job and returns None or how it ended.
JobFunction = Callable[[JobContext], "Exit | None"]


class PythonWorker:
    """Claims jobs of ``kinds`` (kind name → callable) in ``pools`` and runs ``slots`` of
    them at once on threads, as worker ``name``; ``gpus`` are the GPU ids it hands out
    (none by default: it runs 0-GPU jobs)."""

    def __init__(
        self,
        queue: JobQueue,
        kinds: Mapping[str, JobFunction],
        *,
        name: str | None = None,
        pools: Sequence[str] = ("default",),
        slots: int = 4,
        gpus: Sequence[int] = (),
        listen: bool = True,
    ):
        settings = queue.settings
        self.kinds = dict(kinds)
        self.store = WorkerStore(queue.engine, settings)
        self.identity = WorkerIdentity(
            name=name or f"{socket.gethostname()}-python", pools=tuple(pools),
            kinds=tuple(sorted(self.kinds)), gpu_ids=tuple(gpus),
        )  # fmt: skip
        self.runner = SlotRunner(
            self.store, self.identity, self._run, slots=slots,
            listen_url=settings.database_url if listen else None,
            poll_seconds=min(1.0, settings.heartbeat_seconds),
        )  # fmt: skip
        self._stopping = False
        self.life = WorkerLife(self.store, self.identity, self.runner)

    def start(self) -> PythonWorker:
        self.life.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, tell running callables (``stop_requested`` is ``shutdown``) and
        let them return: a job that returns once told goes back to the queue in its
        place, an interruption; mark the worker stopped."""
        self._stopping = True
        self.life.stop(timeout=timeout)

    def __enter__(self) -> PythonWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, claimed: Claimed) -> Exit:
        function = self.kinds.get(claimed.job.kind)
        if function is None:
            return Exit(spawn_error=f"this worker does not know kind {claimed.job.kind!r}")
        job = JobContext(claimed, self.store, lambda: self._request(claimed))
        ended = function(job) or Exit(exit_code=0)
        if job.told is not None and ended.stopped_for is None:
            ended = dataclasses.replace(ended, stopped_for=StopCause(job.told))
        return ended

    def _request(self, claimed: Claimed) -> str | None:
        if self._stopping:
            return StopCause.SHUTDOWN.value
        return self.runner.requested(claimed.id)


def connect(url: str | None = None, *, settings: Settings | None = None) -> JobQueue:
    """The queue at ``url`` (default: ``DATABASE_URL`` and the ``JOBQUEUE_*`` settings),
    checked to be at the schema this code expects."""
    settings = settings or Settings()
    if url is not None:
        settings = settings.model_copy(update={"database_url": url})
    engine = make_engine(settings.require_database_url())
    require_head(engine)
    return JobQueue(engine, settings)
