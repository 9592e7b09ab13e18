"""The real replay: a cluster trace through jobqueue's own claim path.

Where the simulator decides placements by a policy's rules, this runs them: one
:class:`~jobqueue.runner.SlotRunner` per virtual host (its own
:class:`~jobqueue.worker_store.WorkerIdentity`, engine and LISTEN connection), jobs
submitted through :meth:`JobQueue.submit` at their (compressed) trace times, each
claimed by the real ``claim`` (SKIP LOCKED, the fit rule of :mod:`jobqueue.fit`),
"run" by a handler that sleeps its compressed duration, and finished through the
normal fenced finish. What the database recorded is read back on its own clock and
turned into a :class:`~benchmarks.cluster.schedule.Schedule` of policy ``jobqueue``,
so that the simulator's metrics judge it line by line.

*Compression* is trace seconds per real second: a job of ``duration_s`` sleeps
``duration_s / compression`` real seconds, and database times ``t`` come back as
``(t - t0) * compression`` trace seconds, ``t0`` being the database clock at the
replay's start instant (when trace time 0 is submitted). A job's time limit is
submitted compressed too (``max_runtime_seconds = ceil(limit_s / compression)``, at
least 1): the scheduling pass plans on the database clock. (SlotRunner does not stop
Python callables at their limit; the sleeps end on time anyway.) The fair-share
half-life and the largest fair-share lead are compressed the same way
(``fair_share_half_life_hours / compression``, ``fair_share_max_lead_hours / compression``).

The hosts register as workers and heartbeat, so that the scheduling pass
(:func:`jobqueue.planner.run_pass`) sees them. In the ordered mode the dispatcher runs
the pass itself (``force=True``) before each round of claims, as the twin does; with
NOTIFY a process of its own runs it every ``plan_interval_seconds`` (set to the poll
interval), as one host's daemon would (:mod:`benchmarks.cluster.planner_process`).

Besides the placements it measures the scheduler's own cost: every claim call of
every host in real milliseconds with the queue depth at the call
(:attr:`Schedule.claim_calls`), and in :attr:`Schedule.notes` what claim, finish and
timer jitter add to each job and how late submits land.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

from benchmarks.cluster.feed import POOL, Depth, Dispatcher, Submitter
from benchmarks.cluster.planner_process import PlannerProcess
from benchmarks.cluster.readback import KIND, ReplayError, notes_of, placements_of, read_back
from benchmarks.cluster.schedule import Cluster, Reservation, Schedule
from benchmarks.cluster.trace import TraceJob
from benchmarks.harness.stats import percentile
from jobqueue.db import make_engine
from jobqueue.outcomes import Exit, StopCause
from jobqueue.queue import JobQueue
from jobqueue.records import Claimed
from jobqueue.runner import SlotRunner
from jobqueue.settings import Settings
from jobqueue.worker_store import WorkerIdentity, WorkerStore

POLICY = "jobqueue"
#: How often the replay asks the database whether every job has finished (real seconds).
DONE_POLL_S = 0.5
#: Connections per host engine (claims, finishes from slot threads, lease renewals).
HOST_POOL_SIZE = 2
#: How often every host's worker row is refreshed (real seconds): the pass plans only
#: for live workers.
WORKER_HEARTBEAT_S = 2.0
#: jobqueue's default half-life of team usage and largest fair-share lead (trace hours),
#: compressed for the replay.
HALF_LIFE_HOURS = 168.0
MAX_LEAD_HOURS = 48.0


_FINISHED = text("SELECT count(*) FROM jobs WHERE kind = :kind AND finished_at IS NOT NULL")


class _TimedStore(WorkerStore):
    """A host's WorkerStore whose claims are timed, with the queue depth at each call."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        depth: Depth,
        calls: list[tuple[int, float, int]],
        calls_lock: threading.Lock,
    ):
        super().__init__(engine, settings)
        self._depth = depth
        self._calls = calls
        self._calls_lock = calls_lock

    def claim(self, worker: WorkerIdentity, *, free_gpu_ids: Sequence[int], slots: int):
        depth = self._depth.now()
        before = time.perf_counter()
        claimed = super().claim(worker, free_gpu_ids=free_gpu_ids, slots=slots)
        ms = (time.perf_counter() - before) * 1000.0
        self._depth.add_started(len(claimed))
        with self._calls_lock:
            self._calls.append((depth, ms, len(claimed)))
        return claimed


def _sleeper(compression: float, abort: threading.Event) -> Callable[[Claimed], Exit]:
    """The handler: sleep the job's compressed duration; on abort, hand the job back."""

    def run(job: Claimed) -> Exit:
        seconds = float(job.job.config["duration_s"]) / compression
        if abort.wait(seconds):
            return Exit(stopped_for=StopCause.SHUTDOWN)
        return Exit(exit_code=0)

    return run


def default_timeout_s(jobs: Sequence[TraceJob], compression: float) -> float:
    """Twice the compressed span of arrivals plus the longest compressed duration, + 60 s."""
    if not jobs:
        return 60.0
    span = max(j.submit_s for j in jobs) / compression
    longest = max(j.duration_s for j in jobs) / compression
    return 2.0 * (span + longest) + 60.0


def replay(
    jobs: Sequence[TraceJob],
    cluster: Cluster,
    database_url: str,
    *,
    compression: float,
    poll_trace_s: float,
    wake: str = "notify",
    half_life_hours: float = HALF_LIFE_HOURS,
    max_lead_hours: float = MAX_LEAD_HOURS,
    settings_overrides: dict | None = None,
    timeout_s: float | None = None,
    log: Callable[[str], None] = print,
) -> Schedule:
    """Replay ``jobs`` on ``cluster`` through jobqueue against ``database_url`` (migrated,
    empty); returns the run's :class:`Schedule` in trace seconds.

    ``wake="notify"`` runs the system as deployed: each host a running ``SlotRunner`` woken
    by NOTIFY on submit, by its own job's end, and every poll, the hosts racing for each
    job. ``wake="ordered"`` wakes them in index order from one dispatcher instead (see
    :class:`Dispatcher`), so the run is deterministic and the simulator's ordered twin
    must agree with it: the harness's own check.

    Raises :class:`ReplayError` on a timeout (saying how many jobs are left) or when a
    job did not complete exactly once. Every runner is stopped and every engine
    disposed on the way out, on errors and Ctrl-C too.
    """
    jobs = list(jobs)
    _check_inputs(jobs, cluster, compression, poll_trace_s)
    if wake not in ("notify", "ordered"):
        raise ValueError(f"wake is notify or ordered, not {wake!r}")
    if not jobs:
        return Schedule(POLICY, cluster, jobs, [], notes=["no jobs"])
    longest_real = max(j.duration_s for j in jobs) / compression
    lease = max(60.0, 3.0 * longest_real)
    values: dict[str, Any] = {
        "database_url": database_url,
        "lease_seconds": lease,
        "heartbeat_seconds": lease / 3.0,
        "retry_backoff_seconds": 0,
        # Trace hours of half-life are real hours / compression, as every other time.
        "fair_share_half_life_hours": half_life_hours / compression,
        "fair_share_max_lead_hours": max_lead_hours / compression,
        # With NOTIFY the runners' planners run the pass about once a poll interval.
        "plan_interval_seconds": poll_trace_s / compression,
    }
    values.update(settings_overrides or {})
    settings = Settings(**values)
    timeout = timeout_s if timeout_s is not None else default_timeout_s(jobs, compression)
    poll_real = poll_trace_s / compression

    depth = Depth()
    calls: list[tuple[int, float, int]] = []  # (depth, ms, jobs claimed)
    calls_lock = threading.Lock()
    abort = threading.Event()
    engines: list[Engine] = []
    runners: list[SlotRunner] = []
    submitter: Submitter | None = None
    heart: _Heartbeat | None = None
    planner: PlannerProcess | None = None

    def engine(name: str, size: int) -> Engine:
        made = make_engine(database_url, pool_size=size, application_name=f"jobqueue-replay:{name}")
        engines.append(made)
        return made

    try:
        reader = engine("reader", 1)
        queue = JobQueue(engine("submitter", 2), settings)
        handler = _sleeper(compression, abort)
        for h in range(cluster.hosts):
            identity = WorkerIdentity(
                name=f"host-{h:02d}",
                pools=(POOL,),
                kinds=(KIND,),
                gpu_ids=tuple(range(cluster.gpus_per_host)),
            )
            host_engine = engine(identity.name, HOST_POOL_SIZE)
            with host_engine.connect() as conn:  # so that no timed claim pays for the connect
                conn.execute(text("SELECT 1"))
            store = _TimedStore(host_engine, settings, depth, calls, calls_lock)
            runner = SlotRunner(
                store,
                identity,
                handler,
                slots=cluster.gpus_per_host,
                listen_url=database_url if wake == "notify" else None,
                poll_seconds=poll_real,
                plan=False,  # the dispatcher or the planner process runs the pass
            )
            runners.append(runner)
            store.heartbeat_worker(identity, free_gpus=cluster.gpus_per_host, restarted=True)
        heart = _Heartbeat(engine("heartbeat", 1), settings, runners, abort)
        heart.start()
        if wake == "notify":
            planner = PlannerProcess(values).start()
            for runner in runners:
                runner.start()

        start, t0 = _start_instant(reader)
        log(
            f"replay: {len(jobs)} jobs on {cluster.hosts} hosts x {cluster.gpus_per_host} GPUs, "
            f"compression {compression:g}, poll {poll_real:.3f} s real, timeout {timeout:.0f} s"
        )
        if wake == "ordered":
            submitter = Dispatcher(queue, jobs, start=start, compression=compression,
                                    depth=depth, abort=abort, runners=runners,
                                    engine=engine("planner", 1), settings=settings)  # fmt: skip
        else:
            submitter = Submitter(
                queue, jobs, start=start, compression=compression, depth=depth, abort=abort
            )
        submitter.start_thread()
        _wait_until_done(reader, submitter, len(jobs), start + timeout, timeout, log)
        wall = time.monotonic() - start
        rows = read_back(reader)
    finally:
        abort.set()  # stops the submitter's waits and any handler still sleeping
        if submitter is not None:
            submitter.join(10.0)
        if heart is not None:
            heart.join(10.0)
        for runner in runners:
            try:
                runner.stop()
            except Exception as exc:  # stop the others all the same
                log(f"replay: stopping {runner.worker.name} failed: {exc!r}")
        if planner is not None:
            planner.stop()
        for made in engines:
            made.dispose()

    placements, real = placements_of(jobs, rows, t0, compression)
    with calls_lock:
        timed = list(calls)
    claim_calls = [(depth_, ms) for depth_, ms, _ in timed]
    notes = notes_of(
        jobs, real, submitter, timed, wake=wake,
        compression=compression, poll_trace_s=poll_trace_s, poll_real=poll_real, wall=wall,
    )  # fmt: skip
    reservations: list[Reservation] = []
    if isinstance(submitter, Dispatcher):
        submitter.held.close(max((p.end_s for p in placements), default=0.0))
        reservations = submitter.held.closed
        if submitter.pass_ms:
            ms = submitter.pass_ms
            notes.append(
                f"{len(ms):,} scheduling passes (run_pass, force=True) before rounds of claims: "
                f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
                f"max {max(ms):.1f} ms real"
            )
    limits = [j for j in jobs if j.limit_s is not None]
    if limits:
        notes.append(
            f"{len(limits)} jobs submitted with max_runtime_seconds = ceil(limit / "
            f"{compression:g}); fair-share half-life "
            f"{settings.fair_share_half_life_hours * 3600:.1f} s real = {half_life_hours:g} h "
            f"trace; plan interval {settings.plan_interval_seconds:.3f} s real"
        )
    for note in notes:
        log(f"replay: {note}")
    return Schedule(POLICY, cluster, jobs, placements, reservations, claim_calls=claim_calls,
                    notes=notes)  # fmt: skip


class _Heartbeat(threading.Thread):
    """Refreshes every host's worker row, so that the scheduling pass counts it alive."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        runners: Sequence[SlotRunner],
        abort: threading.Event,
    ):
        super().__init__(name="replay-heartbeat", daemon=True)
        self.store = WorkerStore(engine, settings)
        self.runners = runners
        self.abort = abort

    def run(self) -> None:
        while not self.abort.wait(WORKER_HEARTBEAT_S):
            for runner in self.runners:
                # A failed beat is tried again at the next; the run itself goes on.
                with contextlib.suppress(Exception):
                    self.store.heartbeat_worker(runner.worker, free_gpus=len(runner.gpus.free()))


def _check_inputs(
    jobs: Sequence[TraceJob], cluster: Cluster, compression: float, poll_trace_s: float
) -> None:
    if compression <= 0:
        raise ValueError(f"compression must be positive, not {compression}")
    if poll_trace_s <= 0:
        raise ValueError(f"poll_trace_s must be positive, not {poll_trace_s}")
    if cluster.hosts < 1 or cluster.hosts > 100:
        raise ValueError(f"between 1 and 100 hosts, not {cluster.hosts}")
    indices = [j.index for j in jobs]
    if len(set(indices)) != len(indices):
        raise ValueError("trace indices must be unique")
    too_big = [j.index for j in jobs if not 0 <= j.gpus <= cluster.gpus_per_host]
    if too_big:
        raise ValueError(f"jobs {too_big[:10]} need more GPUs than a host has")
    early = [j.index for j in jobs if j.submit_s < 0]
    if early:
        raise ValueError(f"jobs {early[:10]} are submitted before trace time 0")


def _start_instant(reader: Engine) -> tuple[float, datetime]:
    """The start instant on the monotonic clock and the database clock at it."""
    with reader.connect() as conn:
        conn.execute(text("SELECT 1"))  # the connection is open: time only the clock read
        before = time.monotonic()
        t0 = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        after = time.monotonic()
    return (before + after) / 2.0, t0


def _wait_until_done(
    reader: Engine,
    submitter: Submitter,
    n: int,
    deadline: float,
    timeout: float,
    log: Callable[[str], None],
) -> None:
    last_report = time.monotonic()
    while True:
        if submitter.error is not None:
            raise ReplayError(f"submitting failed: {submitter.error!r}") from submitter.error
        submitting = submitter.alive()
        with reader.connect() as conn:
            finished = conn.execute(_FINISHED, {"kind": KIND}).scalar_one()
        if not submitting and finished >= n:
            return
        now = time.monotonic()
        if now > deadline:
            raise ReplayError(
                f"timed out after {timeout:.0f} s: {n - finished} of {n} jobs left unfinished"
            )
        if now - last_report >= 10.0:
            log(f"replay: {finished}/{n} jobs finished")
            last_report = now
        time.sleep(DONE_POLL_S)
