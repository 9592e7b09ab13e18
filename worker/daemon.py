"""The worker daemon: claims jobs that fit this host's free GPUs and runs them.

It is the core's claim loop (:class:`jobqueue.runner.SlotRunner`) with real
processes: each job runs under a supervisor in its own process group, with
``CUDA_VISIBLE_DEVICES`` set to exactly the GPUs it was given. The daemon
passes lease renewals to the supervisors, carries out requests (pause,
cancel, mark-failed), and on SIGTERM hands its jobs back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from uuid import UUID

from sqlalchemy import Engine

from jobqueue.db import make_engine
from jobqueue.outcomes import Exit, StopCause
from jobqueue.records import Claimed
from jobqueue.runner import SlotRunner
from jobqueue.settings import Settings
from jobqueue.worker_life import WorkerLife
from jobqueue.worker_store import Renewal, WorkerIdentity, WorkerStore
from worker.gpus import GpuInventory
from worker.kinds import Kind
from worker.leftovers import Leftovers
from worker.output import OutputSink
from worker.process import JobProcess

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    name: str
    pools: tuple[str, ...]
    kinds: dict[str, Kind]
    gpus: GpuInventory
    slots: int
    state_dir: Path
    checkpoint_root: Path
    poll_seconds: float = 2.0

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        kinds: dict[str, Kind],
        gpus: GpuInventory,
        name: str | None = None,
        pools: tuple[str, ...] = ("default",),
        slots: int | None = None,
    ) -> WorkerConfig:
        name = name or socket.gethostname()
        state_dir = settings.state_dir / "workers" / name
        return cls(
            name=name,
            pools=pools or ("default",),
            kinds=kinds,
            gpus=gpus,
            slots=slots or max(4, 2 * len(gpus.ids)),
            state_dir=state_dir,
            checkpoint_root=settings.checkpoint_root or settings.state_dir / "checkpoints",
        )


class WorkerDaemon:
    def __init__(self, config: WorkerConfig, settings: Settings, engine: Engine | None = None):
        self.config = config
        self.settings = settings
        url = settings.require_database_url()
        self.engine = engine or make_engine(url, application_name=f"jobqueue-worker:{config.name}")
        self.store = WorkerStore(self.engine, settings)
        self.identity = WorkerIdentity(
            name=config.name,
            pools=config.pools,
            kinds=tuple(sorted(config.kinds)),
            gpu_ids=config.gpus.ids,
        )
        self.runner = SlotRunner(
            self.store, self.identity, self.run_job, slots=config.slots, listen_url=url,
            poll_seconds=config.poll_seconds, hooks=self,
        )  # fmt: skip
        self.leftovers = Leftovers(config.state_dir / "running")
        self._jobs: dict[UUID, JobProcess] = {}
        self._lock = threading.Lock()
        self._shutting_down = False
        self.life = WorkerLife(self.store, self.identity, self.runner, devices=config.gpus.devices)

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> WorkerDaemon:
        self.life.start(before_requeue=self._remove_leftovers)
        log.info(
            "worker %s: pools %s, kinds %s, GPUs %s (%s), %d slots",
            self.config.name, ",".join(self.config.pools), ",".join(self.identity.kinds) or "-",
            list(self.config.gpus.ids), self.config.gpus.source, self.config.slots,
        )  # fmt: skip
        return self

    def stop(self) -> None:
        """Stop claiming, ask running jobs to checkpoint and stop, hand them back."""
        log.info("worker %s stopping: handing back %d job(s)", self.config.name, len(self._jobs))
        self.life.stop(timeout=30)
        self.engine.dispose()

    def _remove_leftovers(self) -> None:
        killed = self.leftovers.remove_all()
        if killed:
            log.warning("removed %d job process group(s) left by a previous run", killed)

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        stop.wait()
        self.stop()

    # -- hooks of the claim loop -------------------------------------------------------

    def renewed(self, renewal: Renewal, seconds_left: float) -> None:
        with self._lock:
            running = dict(self._jobs)
        for job_id, process in running.items():
            if job_id in renewal.lost:
                log.error("job %s: lease lost; killing its processes", job_id)
                process.stop(StopCause.LEASE, kill=True)
            elif job_id in renewal.held:
                process.lease(seconds_left)
                request = renewal.held[job_id]
                if request is not None:
                    process.stop(StopCause(request), kill=job_id in renewal.kill_now)

    def shutting_down(self) -> None:
        with self._lock:
            self._shutting_down = True
            running = list(self._jobs.values())
        for process in running:
            process.stop(StopCause.SHUTDOWN)

    # -- one job -----------------------------------------------------------------------

    def run_job(self, job: Claimed) -> Exit:
        kind = self.config.kinds.get(job.job.kind)
        if kind is None:  # claimed only kinds it knows; a reload could change that
            return Exit(spawn_error=f"this worker does not know kind {job.job.kind!r}")
        try:
            env = self._environment(job, kind)
        except OSError as exc:
            return Exit(spawn_error=f"could not prepare the job's files: {exc}")
        sink = OutputSink(self.store, job, max_buffered_lines=self.settings.log_max_lines)
        grace = (
            kind.grace_seconds if kind.grace_seconds is not None else self.settings.grace_seconds
        )
        process = JobProcess(
            list(kind.argv), env=env, cwd=str(kind.workdir) if kind.workdir else None,
            grace_seconds=grace, lease_seconds=self.settings.lease_seconds - 1.0,
            on_line=sink.line, on_started=lambda pid: self.leftovers.remember(job.id, pid),
        )  # fmt: skip
        with self._lock:
            self._jobs[job.id] = process
            shutting_down = self._shutting_down
        if shutting_down:  # claimed just before the worker was told to stop: hand it back
            process.stop(StopCause.SHUTDOWN)
        limit = _time_limit(job, process)
        try:
            exit = process.wait()
            assert exit is not None
            return exit
        finally:
            if limit is not None:
                limit.cancel()
            with self._lock:
                self._jobs.pop(job.id, None)
            sink.close()
            self.leftovers.forget(job.id)

    def _environment(self, job: Claimed, kind: Kind) -> dict[str, str]:
        job_dir = self.config.state_dir / "jobs" / str(job.id)
        job_dir.mkdir(parents=True, exist_ok=True)
        config_path = job_dir / "config.json"
        config_path.write_text(json.dumps(job.job.config))
        checkpoint_dir = self.config.checkpoint_root / str(job.id)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        inherited = dict(os.environ)
        # The job has no business with the queue's database or tokens.
        for secret in ("DATABASE_URL", "JOBQUEUE_DATABASE_URL", "JOBQUEUE_API_TOKENS",
                       "JOBQUEUE_RESUME_FROM"):  # fmt: skip
            inherited.pop(secret, None)
        env = {
            **inherited,
            **kind.env,
            "JOBQUEUE_JOB_ID": str(job.id),
            "JOBQUEUE_ATTEMPT": str(job.job.attempt),
            "JOBQUEUE_CONFIG": str(config_path),
            "JOBQUEUE_CHECKPOINT_DIR": str(checkpoint_dir),
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in job.gpu_ids),
            "PYTHONUNBUFFERED": "1",
        }
        if job.job.checkpoint and job.job.checkpoint.get("uri"):
            env["JOBQUEUE_RESUME_FROM"] = str(job.job.checkpoint["uri"])
        return env


def _time_limit(job: Claimed, process: JobProcess) -> threading.Timer | None:
    """Stop the job (SIGTERM, its grace, SIGKILL) once this run has lasted its
    ``max_runtime_seconds``; it then ends ``failed`` with ``time_limit``."""
    seconds = job.job.max_runtime_seconds
    if not seconds:
        return None
    timer = threading.Timer(seconds, process.stop, args=(StopCause.TIME_LIMIT,))
    timer.daemon = True
    timer.name = f"time-limit-{job.id}"
    timer.start()
    return timer
