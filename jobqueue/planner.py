"""The scheduling pass: fair-share standings, reservations and expected starts.

Any claimer runs it (the worker daemon, every ``plan_interval_seconds``); one process
at a time, by a transaction-scoped advisory lock, and only when the last pass is
older than the interval, so many hosts cost one pass. Everything it writes is
derived from the job rows and recomputed from them by the next pass: a pass that
dies, or a cluster whose planner stopped, loses nothing — hosts keep claiming by
priority and the last standings, and the forced-job rule still holds.

Every ``QUEUE_MARKS_INTERVAL_SECONDS`` it also marks every 100th queued job of each team
with its rank (table ``queue_marks``), what positions far back in a deep queue are
estimated from.

1. **Usage.** Each team's GPU-seconds since the last pass are added to its usage,
   which decays with ``fair_share_half_life_hours`` (Slurm's ``PriorityDecayHalfLife``);
   the team's factor ``2^(-usage_fraction / share_fraction)`` (Slurm's fair-share
   factor) times ``fair_share_max_lead_hours`` is how much earlier than their submit its
   jobs queue among equal priorities: the team furthest below its share goes first among
   jobs queued at about the same time, and no job waits behind younger ones by more
   than the largest lead (what Slurm's age factor bounds, ``PriorityWeightAge``).
2. **Plan.** Per pool, :func:`jobqueue.plan.plan_pool` over the live workers, the
   running jobs' time limits and the first ``plan_depth`` queued jobs: the
   reservations the claim honours, and each planned job's ``expected_start_at``.
3. **Preempt.** The first job of a pool that cannot start now and is forced, or is of
   a team below its share and has waited ``preempt_wait_seconds``, may have running
   jobs stopped for it (:func:`jobqueue.plan.choose_victims`): they get a ``preempt``
   request by ``scheduler`` (the pause path; back to the queue in their old place),
   and it gets the reservation of their host, so that nobody else takes their GPUs.
   One preemption per pool at a time: none while earlier victims are still stopping.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from uuid import UUID

from sqlalchemy import Connection, Engine

from jobqueue import planner_sql, sql
from jobqueue.outcomes import preempt_request
from jobqueue.plan import (
    INFINITY,
    Host,
    PoolPlan,
    Reservation,
    Running,
    Waiting,
    choose_victims,
    plan_pool,
)
from jobqueue.records import Job
from jobqueue.settings import Settings
from jobqueue.transitions import apply_transition

#: The actor of the scheduling pass's own events (preemptions).
SCHEDULER = "scheduler"
#: How often a pass rewrites the queue marks that positions far back in the queue are
#: estimated from: ranking every queued job costs about 1.5 ms per 1,000 of them, too
#: much for every pass of a deep queue, and an estimate a few seconds older is as good.
QUEUE_MARKS_INTERVAL_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class Standing:
    team: str
    usage_gpu_seconds: float
    usage_fraction: float
    share_fraction: float
    factor: float


@dataclasses.dataclass(frozen=True)
class PassResult:
    standings: list[Standing]
    plans: dict[str, PoolPlan]
    #: pool → (the job preempted for, the victims) of this pass.
    preemptions: dict[str, tuple[UUID, list[UUID]]] = dataclasses.field(default_factory=dict)


def run_pass(engine: Engine, settings: Settings, *, force: bool = False) -> PassResult | None:
    """One scheduling pass, or None when another process is planning or the last pass
    is younger than the interval (``force`` skips that second check)."""
    with engine.begin() as conn:
        if not conn.execute(planner_sql.TRY_PLAN_LOCK).scalar_one():
            return None
        state = conn.execute(planner_sql.PLAN_STATE).one()
        now, last = state.db_now, state.planned_at
        if not force and last is not None and now - last < settings.plan_interval_seconds:
            return None
        standings = _update_standings(conn, settings, now=now, since=last)
        plans, preemptions = _plan_pools(conn, settings, now=now, standings=standings)
        marked = state.marked_at
        if force or marked is None or now - marked >= QUEUE_MARKS_INTERVAL_SECONDS:
            conn.execute(planner_sql.DROP_QUEUE_MARKS)
            conn.execute(planner_sql.WRITE_QUEUE_MARKS)
        conn.execute(planner_sql.PLANNED)
        return PassResult(standings, plans, preemptions)


def _update_standings(
    conn: Connection, settings: Settings, *, now: float, since: float | None
) -> list[Standing]:
    added: dict[str, float] = {}
    if since is not None:
        used = conn.execute(planner_sql.USAGE_SINCE, {"since": since})
        added = {r.team: r.gpu_seconds for r in used}
        decay = 0.5 ** ((now - since) / (settings.fair_share_half_life_hours * 3600.0))
    else:
        decay = 1.0
    rows = conn.execute(planner_sql.STANDINGS).all()
    usage = {r.team: r.usage_gpu_seconds * decay + added.get(r.team, 0.0) for r in rows}
    # Shares are split among the teams in play: with jobs now, or usage not yet forgotten.
    in_play = {r.team for r in rows if r.active or usage[r.team] >= 1.0}
    standings = standings_of(
        {t: u for t, u in usage.items() if t in in_play},
        {r.team: float(r.share) for r in rows if r.team in in_play},
    )
    standings += [Standing(t, u, 0.0, 0.0, 1.0) for t, u in sorted(usage.items())
                  if t not in in_play]  # fmt: skip
    if standings:
        max_lead_s = settings.fair_share_max_lead_hours * 3600.0
        conn.execute(
            planner_sql.UPSERT_STANDINGS,
            {
                "teams": [s.team for s in standings],
                "usage": [s.usage_gpu_seconds for s in standings],
                "usage_fraction": [s.usage_fraction for s in standings],
                "share_fraction": [s.share_fraction for s in standings],
                "factor": [s.factor for s in standings],
                "lead": [s.factor * max_lead_s for s in standings],
            },
        )
    return standings


def standings_of(usage: dict[str, float], shares: dict[str, float]) -> list[Standing]:
    """Slurm's fair-share factor per team: ``2^(-U/S)``, U its part of all usage and S
    its part of all shares (of the teams in play); 1 when nobody used anything."""
    total_usage = sum(usage.values())
    total_share = sum(shares.values())
    out = []
    for team in sorted(usage):
        u = usage[team] / total_usage if total_usage > 0 else 0.0
        s = shares[team] / total_share if total_share > 0 else 0.0
        factor = 2.0 ** (-u / s) if s > 0 else 0.0
        out.append(Standing(team, usage[team], u, s, factor))
    return out


def _plan_pools(
    conn: Connection, settings: Settings, *, now: float, standings: list[Standing]
) -> tuple[dict[str, PoolPlan], dict[str, tuple[UUID, list[UUID]]]]:
    alive = {"alive_seconds": settings.worker_alive_seconds}
    rows = conn.execute(planner_sql.PLAN_RUNNING, alive).all()
    running: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        ends = INFINITY if r.ends_at is None else max(now, float(r.ends_at))
        running[r.worker_name].append((int(r.gpus), ends))
    above_share = {s.team for s in standings if s.usage_fraction > s.share_fraction}
    below_share = {s.team for s in standings if s.usage_fraction < s.share_fraction}
    plans: dict[str, PoolPlan] = {}
    preemptions: dict[str, tuple[UUID, list[UUID]]] = {}
    for pool in [r[0] for r in conn.execute(sql.QUEUED_POOLS)]:
        hosts = [
            Host(h.name, int(h.gpu_total), frozenset(h.kinds), tuple(running.get(h.name, ())))
            for h in conn.execute(planner_sql.PLAN_HOSTS, {"pool": pool, **alive})
        ]
        rows_queued = list(
            conn.execute(planner_sql.PLAN_QUEUE, {"pool": pool, "depth": settings.plan_depth})
        )
        oldest = conn.execute(planner_sql.PLAN_OLDEST, {"pool": pool}).first()
        if oldest is not None and all(q.id != oldest.id for q in rows_queued):
            rows_queued.append(oldest)  # behind every planned job in claim order
        queue = [
            Waiting(q.id, int(q.gpus), q.kind, bool(q.forced),
                    None if q.limit_s is None else float(q.limit_s), q.team, int(q.priority),
                    float(q.queued_at))
            for q in rows_queued
        ]  # fmt: skip
        quota_left = {
            q.team: max(0, int(q.quota) - int(q.held))
            for q in conn.execute(planner_sql.PLAN_QUOTAS, {"pool": pool})
        }
        plan = plan_pool(hosts, queue, now=now, quota_left=quota_left)
        in_pool = [r for r in rows if r.pool == pool]
        if not any(r.preempting for r in in_pool):
            names = {q.id: q.name for q in rows_queued}
            preempted = _preempt(conn, settings, plan, hosts, queue, in_pool, names, now=now,
                                 quota_left=quota_left, above_share=above_share,
                                 below_share=below_share)  # fmt: skip
            if preempted is not None:
                plan, preemptions[pool] = preempted
        plans[pool] = plan
    _write_plans(conn, plans)
    return plans, preemptions


def _preempt(
    conn: Connection,
    settings: Settings,
    plan: PoolPlan,
    hosts: list[Host],
    queue: list[Waiting],
    running: list,
    names: dict[UUID, str],
    *,
    now: float,
    quota_left: dict[str, int],
    above_share: set[str],
    below_share: set[str],
) -> tuple[PoolPlan, tuple[UUID, list[UUID]]] | None:
    """Preempt for the pool's first job owed it (see the module's docstring), if any."""
    owed = next(
        (
            job
            for job in queue
            if job.gpus > 0
            and plan.expected_start.get(job.id) != now
            and not (job.team in quota_left and job.gpus > quota_left[job.team])
            and (
                job.forced
                or (
                    job.team in below_share and now - job.queued_at >= settings.preempt_wait_seconds
                )
            )
        ),
        None,
    )
    if owed is None:
        return None
    candidates = [
        Running(r.id, r.worker_name, int(r.gpus), r.team, int(r.priority), bool(r.forced),
                bool(r.preemptible), float(r.started_at), float(r.work_since), bool(r.stopping))
        for r in running
    ]  # fmt: skip
    chosen = choose_victims(owed, hosts, candidates, now=now,
                            min_runtime_s=settings.preempt_min_runtime_seconds,
                            above_share=above_share - {owed.team})  # fmt: skip
    if chosen is None:
        return None
    worker_name, victim_ids = chosen
    rows = conn.execute(planner_sql.LOCK_VICTIMS, {"ids": victim_ids}).mappings()
    locked = [Job.from_row(r) for r in rows]
    if len(locked) != len(victim_ids):
        return None  # one changed meanwhile: try again next pass
    reason = f"preempted for job {names.get(owed.id, '')} ({owed.id})"
    for victim in locked:
        apply_transition(conn, victim, preempt_request(victim, reason), actor=SCHEDULER)
    # The preemptor takes the victims' host: nobody else starts on the GPUs they free.
    kept = [r for r in plan.reservations if r.job_id != owed.id and r.worker_name != worker_name]
    reservations = [Reservation(owed.id, worker_name, owed.gpus, now, 0), *kept]
    return PoolPlan(reservations, plan.expected_start, plan.expected_host), (owed.id, victim_ids)


def _write_plans(conn: Connection, plans: dict[str, PoolPlan]) -> None:
    reserved = [(pool, r) for pool, plan in plans.items() for r in plan.reservations]
    conn.execute(planner_sql.DROP_RESERVATIONS)
    conn.execute(
        planner_sql.INSERT_RESERVATIONS,
        {
            "job_ids": [r.job_id for _, r in reserved],
            "pools": [pool for pool, _ in reserved],
            "workers": [r.worker_name for _, r in reserved],
            "gpus": [r.gpus for _, r in reserved],
            "starts_at": [r.starts_at for _, r in reserved],
            "extra": [r.extra_gpus for _, r in reserved],
        },
    )
    starts = [
        (job_id, pool, plan.expected_host.get(job_id), t)
        for pool, plan in plans.items()
        for job_id, t in plan.expected_start.items()
        if t is not None and math.isfinite(t)
    ]
    conn.execute(planner_sql.DROP_EXPECTED_STARTS)
    conn.execute(
        planner_sql.INSERT_EXPECTED_STARTS,
        {
            "job_ids": [job_id for job_id, _, _, _ in starts],
            "pools": [pool for _, pool, _, _ in starts],
            "workers": [host for _, _, host, _ in starts],
            "starts_at": [t for _, _, _, t in starts],
        },
    )
