"""An in-memory discrete-event simulator of a GPU cluster under reference policies.

Every policy sees the same cluster (hosts of 8 GPUs; a job needs all its GPUs
on one host) and the same trace. Jobs end after their true durations; the
policies that plan see only what a scheduler sees, the jobs' time limits
(``TraceJob.limit_s``; a job without one is planned with its true duration):

- ``fifo``: strict queue order; the head waits until it fits and everything
  waits behind it (head-of-line blocking).
- ``first-fit``: queue order, but any job that fits starts (what a claim loop
  that skips ahead does), with a global view and no scan limit.
- ``easy``: EASY backfill (Lifka 1995; Slurm's default), planned as Slurm plans
  it: the first job that does not fit gets a reservation on the host where enough
  GPUs free up earliest by the running jobs' *limits* (start + limit: the *shadow
  time*); a later job may start now only where it cannot delay that: on another
  host, or on the reserved host if ``now + its limit <= shadow``, or on the GPUs
  left over at the shadow time. Over-estimated limits make it backfill less, never
  delay the head job.
- ``jobqueue``: the twin of the real replay, calling jobqueue's own pure
  functions. Before each round of claims a scheduling pass (as
  :func:`jobqueue.planner.run_pass`) decays each team's GPU-seconds with the
  half-life, turns them into fair-share factors with
  :func:`jobqueue.planner.standings_of` (share 1 per team), and plans the first
  ``plan_depth`` queued jobs in claim order with :func:`jobqueue.plan.plan_pool`
  over the hosts' running jobs' limits: EASY reservations. Hosts then claim for
  themselves, as jobqueue's workers do: on every submit (NOTIFY wakes them all),
  when one of their own jobs ends, and every poll interval; each claim reads the
  first ``max(4 × free slots, 16)`` queued jobs that fit its free GPUs (or are
  forced) in claim order (forced, priority, fair-share factor descending, submit
  time) and picks with :func:`jobqueue.fit.choose` with its host's reservation,
  the jobs reserved elsewhere and the time, read ``claim_lag_s`` after the pass's
  (1 trace second by default: a real claim never reads the pass's own instant;
  0 is the pure functions' ideal). Which host claims first after a
  submit is ``wake``: ``random`` (hosts on separate machines race, and any may
  win) or ``ordered`` (host 0 first, then 1, …, no polls: the replay's ordered
  mode, which this must match). It does not model SKIP LOCKED contention between
  hosts claiming at the same instant.

The global policies place a job on the host where it fits most tightly (best
fit), which keeps whole hosts free for 8-GPU jobs. Forced jobs go to the head
of the queue in every policy, in the order they were forced.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence

from benchmarks.cluster.schedule import Cluster, HeldGpus, Placement, Reservation, Schedule
from benchmarks.cluster.trace import TraceJob
from jobqueue.fit import Candidate, HostReservation, choose
from jobqueue.plan import INFINITY, Host, Waiting, plan_pool
from jobqueue.planner import standings_of

POLICIES = ("fifo", "first-fit", "easy", "jobqueue")
#: jobqueue's defaults (jobqueue.settings): queued jobs a pass plans; usage half-life;
#: the largest fair-share lead in the claim order.
PLAN_DEPTH = 100
HALF_LIFE_HOURS = 168.0
MAX_LEAD_HOURS = 48.0
#: How long after the scheduling pass the twin's claims read the clock (trace seconds):
#: a real claim always comes after the pass (milliseconds; seconds of trace time), and
#: ``jobqueue.fit.choose`` compares its own ``now`` with the pass's reservations.
CLAIM_LAG_S = 1.0
#: What the twin's hosts and jobs are called, as in the real replay.
KIND = "trace"
POOL = "default"


def limit_of(job: TraceJob) -> float:
    """What a scheduler plans with: the job's limit, else its true duration."""
    return job.limit_s if job.limit_s is not None else job.duration_s


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
        self.started: dict[int, float] = {}  # running job → its start
        self.finished: list[tuple[int, float, float]] = []  # (job, start, end), for usage
        self.changes = 0  # submits, starts and ends so far

    def enqueue(self, job: TraceJob) -> None:
        self.changes += 1
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
        self.changes += 1
        self.started[index] = now
        self.placements.append(Placement(index, host, now, end))

    def finish_next(self) -> tuple[float, int]:
        """Ends the next running job; returns (time, its host)."""
        end, index, host, taken = heapq.heappop(self.ends)
        self.running[host].remove((end, index))
        self.free[host] = sorted(self.free[host] + taken)
        self.finished.append((index, self.started.pop(index), end))
        self.changes += 1
        return end, host

    def limit_end(self, index: int) -> float:
        """When a running job ends by its limit (what a scheduler plans with)."""
        return self.started[index] + limit_of(self.jobs[index])

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
    plan_depth: int = PLAN_DEPTH,
    half_life_hours: float = HALF_LIFE_HOURS,
    max_lead_hours: float = MAX_LEAD_HOURS,
    claim_lag_s: float = CLAIM_LAG_S,
    fair_share: bool = True,
) -> Schedule:
    """Run ``jobs`` (in submit order, indices 0…n-1) on ``cluster`` under ``policy``.

    ``plan_depth``, ``half_life_hours`` and ``max_lead_hours`` (trace hours) are the
    jobqueue twin's scheduling pass settings (``plan_depth``,
    ``fair_share_half_life_hours``, ``fair_share_max_lead_hours``), and
    ``claim_lag_s`` how long after the pass its claims read the clock (trace seconds);
    ``fair_share=False`` gives every team the factor 1 (claim order by submit time), to
    tell what the reservations do from what fair share costs."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: one of {', '.join(POLICIES)}")
    state = _State(jobs, cluster)
    reservations: list[Reservation] = []
    if wake not in ("random", "ordered"):
        raise ValueError(f"wake is random or ordered, not {wake!r}")
    twin = None
    if policy == "jobqueue":
        poll = poll_trace_s if wake == "random" else float("inf")
        twin = _Twin(state, poll, random.Random(seed), shuffle=wake == "random",
                     plan_depth=plan_depth, half_life_s=half_life_hours * 3600.0,
                     max_lead_s=max_lead_hours * 3600.0, claim_lag_s=claim_lag_s,
                     fair_share=fair_share)  # fmt: skip
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
    if twin is not None:
        twin.held.close(max((p.end_s for p in state.placements), default=0.0))
        reservations = twin.held.closed
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
        if now + limit_of(job) <= shadow:
            state.start(index, reserved_host, now)
        elif job.gpus <= extra:
            extra -= job.gpus
            state.start(index, reserved_host, now)
    held = min(len(state.free[reserved_host]), head.gpus)
    return Reservation(reserved_host, held, now, float("inf")) if held else None


def _shadow(state: _State, gpus: int, now: float) -> tuple[float, int, int]:
    """(shadow time, host, extra GPUs there at that time) for a job of ``gpus`` GPUs:
    the earliest moment some host has enough free, counting its running jobs' ends by
    their limits (start + limit), as Slurm sees them, not their true ends."""
    best: tuple[float, int, int] | None = None
    for host in range(state.cluster.hosts):
        free = len(state.free[host])
        when = now
        by_limit = sorted((state.limit_end(index), index) for _, index in state.running[host])
        for end, index in by_limit:
            if free >= gpus:
                break
            free += state.jobs[index].gpus
            when = max(end, now)
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
    """jobqueue's scheduling pass and claim loop, one claimer per host, with the real rules."""

    def __init__(
        self,
        state: _State,
        poll_s: float,
        rng: random.Random,
        *,
        shuffle: bool,
        plan_depth: int = PLAN_DEPTH,
        half_life_s: float = HALF_LIFE_HOURS * 3600.0,
        max_lead_s: float = MAX_LEAD_HOURS * 3600.0,
        claim_lag_s: float = 0.0,
        fair_share: bool = True,
    ):
        self.max_lead_s = max_lead_s
        self.claim_lag_s = claim_lag_s
        self.fair_share = fair_share
        self.state = state
        self.poll_s = poll_s
        self.rng = rng
        self.shuffle = shuffle
        self.plan_depth = plan_depth
        self.half_life_s = half_life_s
        hosts = state.cluster.hosts
        # Runners start together; their polls drift apart with their own claims.
        self.polls = [rng.uniform(0, poll_s) if shuffle else poll_s for _ in range(hosts)]
        #: The pass's state: each team's decayed GPU-seconds, its factor, the last pass.
        self.usage: dict[str, float] = {}
        self.factor: dict[str, float] = {}
        self.planned_at: float | None = None
        #: The last pass's expected starts and planned hosts (jobs.expected_start_at/_worker).
        self.expected: dict[int, float] = {}
        self.expected_host: dict[int, str] = {}
        #: The last pass's reservations: host → (job, starts_at, extra GPUs).
        self.plan: dict[int, HostReservation] = {}
        #: GPUs the reservations held (for the metrics); the open ones end at the next pass.
        self.held = HeldGpus()
        #: How many passes ran.
        self.passes = 0
        self._ordered: list[int] = []
        self._planned_changes = -1

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
        if order and self.state.queue and self.state.changes != self._planned_changes:
            # A poll that finds nothing changed since the last pass reuses its plan (only
            # the decay of usage would differ): a pass per poll costs minutes on 32 hosts.
            self.scheduling_pass(now)
            self._planned_changes = self.state.changes
        self._ordered = self.claim_order()  # the factors change only at a pass
        for host in order:
            self._claim_until_done(host, now)
            self.polls[host] = now + self.poll_s
        if order and self.state.queue:
            self._hold(now)

    # -- the scheduling pass (jobqueue.planner.run_pass) ------------------------------

    def scheduling_pass(self, now: float) -> None:
        """Usage and standings, then the plan: as :func:`jobqueue.planner.run_pass`."""
        self.passes += 1
        state = self.state
        last = self.planned_at
        added: dict[str, float] = {}
        if last is not None:
            for index, start in state.started.items():  # running: held until now
                job = state.jobs[index]
                if now > max(start, last):
                    added[job.team] = added.get(job.team, 0.0) + job.gpus * (now - max(start, last))
            for index, start, end in state.finished:  # ended since the last pass
                job = state.jobs[index]
                if end > max(start, last):
                    added[job.team] = added.get(job.team, 0.0) + job.gpus * (end - max(start, last))
            decay = 0.5 ** ((now - last) / self.half_life_s)
        else:
            decay = 1.0
        state.finished.clear()
        in_play = set(self.usage) | {state.jobs[i].team for i in (*state.queue, *state.started)}
        usage = {t: self.usage.get(t, 0.0) * decay + added.get(t, 0.0) for t in in_play}
        standings = standings_of(usage, dict.fromkeys(usage, 1.0))
        self.factor = {s.team: s.factor for s in standings} if self.fair_share else {}
        busy = {state.jobs[i].team for i in (*state.queue, *state.started)}
        self.usage = {t: u for t, u in usage.items() if u >= 1 or t in busy}  # FORGET_STANDINGS
        self.planned_at = now

        hosts = [
            Host(_host_name(h), state.cluster.gpus_per_host, frozenset({KIND}),
                 tuple((state.jobs[i].gpus, self._ends_by_limit(i, now))
                       for _, i in state.running[h] if state.jobs[i].gpus > 0))
            for h in range(state.cluster.hosts)
        ]  # fmt: skip
        order = self.claim_order()
        planned = order[: self.plan_depth]
        waiting_gpus = [i for i in state.queue if state.jobs[i].gpus > 0]
        if waiting_gpus:  # sql.PLAN_OLDEST: the longest-waiting GPU job, behind the rest
            oldest = min(waiting_gpus, key=lambda i: (state.jobs[i].submit_s, i))
            if oldest not in planned:
                planned.append(oldest)
        queue = [
            Waiting(i, state.jobs[i].gpus, KIND, state.jobs[i].forced, state.jobs[i].limit_s,
                    state.jobs[i].team, queued_at=state.jobs[i].submit_s)
            for i in planned
        ]  # fmt: skip
        plan = plan_pool(hosts, queue, now=now, quota_left={})
        self.expected = {i: t for i, t in plan.expected_start.items() if t is not None}
        self.expected_host = dict(plan.expected_host)
        by_name = {_host_name(h): h for h in range(state.cluster.hosts)}
        self.plan = {
            by_name[r.worker_name]: HostReservation(r.job_id, r.starts_at, r.extra_gpus)
            for r in plan.reservations
        }

    def _ends_by_limit(self, index: int, now: float) -> float:
        """As the pass reads a running job (sql.PLAN_RUNNING): start + limit, never before
        now; INFINITY without a limit."""
        limit = self.state.jobs[index].limit_s
        return INFINITY if limit is None else max(now, self.state.started[index] + limit)

    def claim_key(self, index: int) -> tuple:
        """jobqueue's claim order (sql.CLAIM_KEY_OF_J): forced first, in force order; then
        priority (0 for every trace job); then time queued less the team's lead (its
        fair-share factor × the largest lead). Without fair share every team's factor is
        1: the same lead for all, the order is time queued."""
        job = self.state.jobs[index]
        if job.forced:
            return (0, job.submit_s, index)
        return (1, job.submit_s - self.max_lead_s * self.factor.get(job.team, 1.0), index)

    def claim_order(self) -> list[int]:
        return sorted(self.state.queue, key=self.claim_key)

    def _hold(self, now: float) -> None:
        """Record the GPUs each reservation keeps free after the round (for the metrics)."""
        self.held.close(now)
        queued = set(self.state.queue)
        for host, r in sorted(self.plan.items()):
            if r.job_id in queued:
                gpus = self.state.jobs[int(r.job_id)].gpus
                self.held.hold(host, min(len(self.state.free[host]), gpus), now)

    # -- the claim (jobqueue.worker_store.WorkerStore.claim) ---------------------------

    def _claim_until_done(self, host: int, now: float) -> None:
        slots_total = self.state.cluster.gpus_per_host
        while True:
            free_slots = slots_total - len(self.state.running[host])
            if free_slots <= 0 or not self.state.queue:
                return
            free = len(self.state.free[host])
            scan = max(4 * free_slots, 16)  # as WorkerStore.claim
            queued = set(self.state.queue)
            jobs = self.state.jobs
            fitting = [i for i in self._ordered
                       if i in queued and (jobs[i].gpus <= free or jobs[i].forced)]  # fmt: skip
            # claim_sql.CLAIM_CANDIDATES reads each team's first free_slots jobs, then merges them.
            per_team: dict[str, int] = {}
            merged = []
            for i in fitting:
                seen = per_team.get(jobs[i].team, 0)
                if seen < free_slots:
                    per_team[jobs[i].team] = seen + 1
                    merged.append(i)
            fitting = merged
            claim_now = now + self.claim_lag_s  # the claim reads the clock after the pass did
            name = _host_name(host)
            candidates = [
                Candidate(i, jobs[i].gpus, jobs[i].forced, jobs[i].team, POOL, jobs[i].limit_s,
                          planned_now=self.expected.get(i, INFINITY) <= claim_now
                          and self.expected_host.get(i) == name)
                for i in fitting[:scan]
            ]  # fmt: skip
            mine = self.plan.get(host)
            if mine is not None and mine.job_id not in queued:
                mine = None  # its job started: CLAIM_RESERVATIONS reads queued jobs' only
            elsewhere = {r.job_id for h, r in self.plan.items() if h != host and r.job_id in queued}
            chosen = choose(
                candidates,  # ids are trace indices here, not UUIDs: choose only passes them on
                free_gpu_ids=self.state.free[host],
                total_gpus=slots_total,
                slots=free_slots,
                reservation=mine,
                reserved_elsewhere=elsewhere,
                now=claim_now,
            )
            if not chosen:
                return
            for index, gpu_ids in chosen:
                self.state.start(int(index), host, now, gpu_ids)


def _host_name(host: int) -> str:
    return f"host-{host:02d}"
