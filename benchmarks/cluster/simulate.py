"""An in-memory discrete-event simulator of a GPU cluster under reference policies.

Every policy sees the same cluster (hosts of 8 GPUs; a job needs all its GPUs
on one host) and the same trace, with run times known exactly:

- ``fifo``: strict queue order; the head waits until it fits and everything
  waits behind it (head-of-line blocking).
- ``first-fit``: queue order, but any job that fits starts (what a claim loop
  that skips ahead does), with a global view and no scan limit.
- ``easy``: EASY backfill (Lifka 1995; Slurm's default): the first job that
  does not fit gets a reservation on the host where enough GPUs free up
  earliest, by the running jobs' known ends (the *shadow time*); a later job
  may start now only where it cannot delay that: on another host, or ending
  before the shadow time, or on the GPUs left over at the shadow time.
- ``jobqueue``: the twin of the real replay. Hosts claim for themselves, as
  jobqueue's workers do: on every submit (NOTIFY wakes them all), when one of
  their own jobs ends, and every poll interval; each claim looks at the first
  ``max(4 × free slots, 16)`` queued jobs and picks with :func:`jobqueue.fit.choose`,
  the rule the real claim path runs (forced jobs included). Which host claims
  first after a submit is ``wake``: ``random`` (hosts on separate machines race,
  and any may win) or ``ordered`` (host 0 first, then 1, …, no polls: the
  replay's ordered mode, which this must match). It does not model SKIP LOCKED
  contention between hosts claiming at the same instant.

The global policies place a job on the host where it fits most tightly (best
fit), which keeps whole hosts free for 8-GPU jobs. Forced jobs go to the head
of the queue in every policy, in the order they were forced.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence

from benchmarks.cluster.schedule import Cluster, Placement, Reservation, Schedule
from benchmarks.cluster.trace import TraceJob
from jobqueue.fit import Candidate, choose

POLICIES = ("fifo", "first-fit", "easy", "jobqueue")


class _State:
    """The cluster at one instant: free GPU ids per host, what runs where, the queue."""

    def __init__(self, jobs: Sequence[TraceJob], cluster: Cluster):
        self.jobs = jobs
        self.cluster = cluster
        self.free = [list(range(cluster.gpus_per_host)) for _ in range(cluster.hosts)]
        self.running: list[list[tuple[float, int]]] = [[] for _ in range(cluster.hosts)]
        self.queue: list[int] = []  # job indices, queue order
        self.ends: list[tuple[float, int, int, list[int]]] = []  # heap: (end, job, host, gpus)
        self.placements: list[Placement] = []

    def enqueue(self, job: TraceJob) -> None:
        if job.forced:  # behind the jobs forced before it, ahead of every other
            at = sum(1 for i in self.queue if self.jobs[i].forced)
            self.queue.insert(at, job.index)
        else:
            self.queue.append(job.index)

    def start(self, index: int, host: int, now: float, gpu_ids: list[int] | None = None) -> None:
        job = self.jobs[index]
        taken = gpu_ids if gpu_ids is not None else self.free[host][: job.gpus]
        self.free[host] = [g for g in self.free[host] if g not in taken]
        end = now + job.duration_s
        self.running[host].append((end, index))
        heapq.heappush(self.ends, (end, index, host, taken))
        self.queue.remove(index)
        self.placements.append(Placement(index, host, now, end))

    def finish_next(self) -> tuple[float, int]:
        """Ends the next running job; returns (time, its host)."""
        end, index, host, taken = heapq.heappop(self.ends)
        self.running[host].remove((end, index))
        self.free[host] = sorted(self.free[host] + taken)
        return end, host

    def best_fit(self, gpus: int, hosts: Sequence[int] | None = None) -> int | None:
        fitting = [h for h in (hosts if hosts is not None else range(self.cluster.hosts))
                   if len(self.free[h]) >= gpus]  # fmt: skip
        return min(fitting, key=lambda h: (len(self.free[h]), h)) if fitting else None


def simulate(
    jobs: Sequence[TraceJob],
    cluster: Cluster,
    policy: str,
    *,
    poll_trace_s: float = 60.0,
    wake: str = "random",
    seed: int = 0,
) -> Schedule:
    """Run ``jobs`` (in submit order, indices 0…n-1) on ``cluster`` under ``policy``."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: one of {', '.join(POLICIES)}")
    state = _State(jobs, cluster)
    reservations: list[Reservation] = []
    if wake not in ("random", "ordered"):
        raise ValueError(f"wake is random or ordered, not {wake!r}")
    twin = None
    if policy == "jobqueue":
        poll = poll_trace_s if wake == "random" else float("inf")
        twin = _Twin(state, poll, random.Random(seed), shuffle=wake == "random")
    arrivals = sorted(jobs, key=lambda j: (j.submit_s, j.index))
    next_arrival = 0
    while next_arrival < len(arrivals) or state.ends or state.queue:
        times = []
        if next_arrival < len(arrivals):
            times.append(arrivals[next_arrival].submit_s)
        if state.ends:
            times.append(state.ends[0][0])
        if twin is not None and state.queue:
            times.append(twin.next_poll())
        if not times:
            raise RuntimeError(f"{policy}: jobs left in the queue that no host can ever run")
        now = min(times)
        woken: set[int] = set()
        while state.ends and state.ends[0][0] <= now:
            _, host = state.finish_next()
            woken.add(host)
        arrived = False
        while next_arrival < len(arrivals) and arrivals[next_arrival].submit_s <= now:
            state.enqueue(arrivals[next_arrival])
            next_arrival += 1
            arrived = True
        if twin is not None:
            twin.step(now, woken, everyone=arrived)
        elif policy == "fifo":
            _fifo(state, now)
        elif policy == "first-fit":
            _first_fit(state, now)
        else:
            _close(reservations, now)
            reservation = _easy(state, now)
            if reservation is not None:
                reservations.append(reservation)
    _close(reservations, max((p.end_s for p in state.placements), default=0.0))
    return Schedule(policy, cluster, jobs, state.placements, reservations)


def _fifo(state: _State, now: float) -> None:
    while state.queue:
        head = state.queue[0]
        host = state.best_fit(state.jobs[head].gpus)
        if host is None:
            return
        state.start(head, host, now)


def _first_fit(state: _State, now: float) -> None:
    for index in list(state.queue):
        host = state.best_fit(state.jobs[index].gpus)
        if host is not None:
            state.start(index, host, now)


def _easy(state: _State, now: float) -> Reservation | None:
    """One EASY pass; returns the head job's reservation if it waits (open-ended)."""
    _fifo(state, now)
    if not state.queue:
        return None
    head = state.jobs[state.queue[0]]
    shadow, reserved_host, extra = _shadow(state, head.gpus, now)
    for index in list(state.queue[1:]):
        job = state.jobs[index]
        others = [h for h in range(state.cluster.hosts) if h != reserved_host]
        host = state.best_fit(job.gpus, others)
        if host is not None:
            state.start(index, host, now)
            continue
        if len(state.free[reserved_host]) < job.gpus:
            continue
        if now + job.duration_s <= shadow:
            state.start(index, reserved_host, now)
        elif job.gpus <= extra:
            extra -= job.gpus
            state.start(index, reserved_host, now)
    held = min(len(state.free[reserved_host]), head.gpus)
    return Reservation(reserved_host, held, now, float("inf")) if held else None


def _shadow(state: _State, gpus: int, now: float) -> tuple[float, int, int]:
    """(shadow time, host, extra GPUs there at that time) for a job of ``gpus`` GPUs:
    the earliest moment some host has enough free, counting its running jobs' ends."""
    best: tuple[float, int, int] | None = None
    for host in range(state.cluster.hosts):
        free = len(state.free[host])
        when = now
        for end, index in sorted(state.running[host]):
            if free >= gpus:
                break
            free += state.jobs[index].gpus
            when = end
        if free >= gpus and (best is None or when < best[0]):
            best = (when, host, free - gpus)
    if best is None:
        raise RuntimeError(f"a job of {gpus} GPUs fits no host")
    return best


def _close(reservations: list[Reservation], now: float) -> None:
    """End the open reservation (EASY recomputes it at every event)."""
    if reservations and reservations[-1].until_s == float("inf"):
        last = reservations.pop()
        if now > last.from_s:
            reservations.append(Reservation(last.host, last.gpus, last.from_s, now))


class _Twin:
    """jobqueue's claim loop, one per host, with the real choice rule."""

    def __init__(self, state: _State, poll_s: float, rng: random.Random, *, shuffle: bool):
        self.state = state
        self.poll_s = poll_s
        self.rng = rng
        self.shuffle = shuffle
        hosts = state.cluster.hosts
        # Runners start together; their polls drift apart with their own claims.
        self.polls = [rng.uniform(0, poll_s) if shuffle else poll_s for _ in range(hosts)]

    def next_poll(self) -> float:
        return min(self.polls)

    def step(self, now: float, finished_on: set[int], *, everyone: bool) -> None:
        hosts = list(range(self.state.cluster.hosts))
        order = sorted(finished_on)  # a host whose job ended claims at once
        if everyone:
            if self.shuffle:
                self.rng.shuffle(hosts)  # NOTIFY wakes every host; they race
            order += hosts
        order += [h for h in hosts if self.polls[h] <= now and h not in order]
        for host in order:
            self._claim_until_done(host, now)
            self.polls[host] = now + self.poll_s

    def _claim_until_done(self, host: int, now: float) -> None:
        slots_total = self.state.cluster.gpus_per_host
        while True:
            free_slots = slots_total - len(self.state.running[host])
            if free_slots <= 0 or not self.state.queue:
                return
            scan = max(4 * free_slots, 16)  # as WorkerStore.claim
            candidates = [
                Candidate(index, self.state.jobs[index].gpus, self.state.jobs[index].forced)
                for index in self.state.queue[:scan]
            ]
            chosen = choose(
                candidates,  # ids are trace indices here, not UUIDs: choose only passes them on
                free_gpu_ids=self.state.free[host],
                total_gpus=slots_total,
                slots=free_slots,
            )
            if not chosen:
                return
            for index, gpu_ids in chosen:
                self.state.start(int(index), host, now, gpu_ids)
