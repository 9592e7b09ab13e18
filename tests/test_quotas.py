"""GPU quotas: a team never holds more than its ``quota_gpus`` of a pool at once,
even when several hosts claim for it at the same instant."""

from __future__ import annotations

import threading
from uuid import uuid4

from sqlalchemy import text

from jobqueue.fit import Candidate, choose
from jobqueue.outcomes import Exit
from jobqueue.specs import TeamSpec
from jobqueue.worker_store import WorkerIdentity
from tests.helpers import spec


def running_gpus(engine, team: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT COALESCE(sum(gpus), 0) FROM jobs WHERE status = 'running' AND team = :t"),
            {"t": team},
        ).scalar_one()


def submit_many(queue, team: str, count: int, gpus: int = 1) -> None:
    for n in range(count):
        queue.submit(spec(name=f"{team}-{n}", team=team, gpus=gpus), actor="tester")


def test_the_choice_passes_by_jobs_over_their_teams_quota():
    jobs = [
        Candidate(uuid4(), 2, False, "nlp"),
        Candidate(uuid4(), 2, False, "nlp"),
        Candidate(uuid4(), 1, False, "vision"),
        Candidate(uuid4(), 0, False, "nlp"),
    ]
    chosen = choose(jobs, free_gpu_ids=range(8), total_gpus=8, slots=8,
                    quota_left={("nlp", "default"): 3})  # fmt: skip
    # One 2-GPU nlp job fits under 3; the second would make 4. Others and 0-GPU jobs start.
    assert [job_id for job_id, _ in chosen] == [jobs[0].id, jobs[2].id, jobs[3].id]
    assert choose(jobs, free_gpu_ids=range(8), total_gpus=8, slots=8,
                  quota_left={("nlp", "other-pool"): 0}) == choose(
        jobs, free_gpu_ids=range(8), total_gpus=8, slots=8)  # fmt: skip


def test_a_team_at_its_quota_waits_while_others_start(queue, store, engine):
    queue.set_team("nlp", TeamSpec(quota_gpus={"default": 2}))
    submit_many(queue, "nlp", 4)
    submit_many(queue, "vision", 1)
    host = WorkerIdentity(name="h", kinds=("train",), gpu_ids=(0, 1, 2, 3, 4, 5))
    store.heartbeat_worker(host, free_gpus=6)
    claimed = store.claim(host, free_gpu_ids=list(host.gpu_ids), slots=6)
    assert sorted(c.job.team for c in claimed) == ["nlp", "nlp", "vision"]
    assert running_gpus(engine, "nlp") == 2
    # One nlp job ends: the next one may start in its place, and no more.
    first = next(c for c in claimed if c.job.team == "nlp")
    store.finish(first.id, first.lease_token, Exit(exit_code=0), actor=host.actor)
    free = [g for g in host.gpu_ids if g not in {i for c in claimed for i in c.gpu_ids}]
    more = store.claim(host, free_gpu_ids=free + list(first.gpu_ids), slots=6)
    assert [c.job.team for c in more] == ["nlp"]
    assert running_gpus(engine, "nlp") == 2


def test_no_quota_or_a_null_one_limits_nothing(queue, store, engine):
    queue.set_team("nlp", TeamSpec(quota_gpus={"default": None, "a100": 0}))
    submit_many(queue, "nlp", 4)
    host = WorkerIdentity(name="h", kinds=("train",), gpu_ids=(0, 1, 2, 3))
    claimed = store.claim(host, free_gpu_ids=list(host.gpu_ids), slots=4)
    assert len(claimed) == 4


def claim_together(store, hosts: list[WorkerIdentity]) -> list:
    """Every host claims (2 GPUs, 2 slots) at the same instant; returns all they started."""
    barrier = threading.Barrier(len(hosts))
    results: dict[str, list] = {}
    errors: list[BaseException] = []

    def claim(host: WorkerIdentity) -> None:
        try:
            barrier.wait(timeout=10)
            results[host.name] = store.claim(host, free_gpu_ids=[0, 1], slots=2)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(h,)) for h in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    return [c for found in results.values() for c in found]


def test_hosts_claiming_at_the_same_instant_never_pass_the_quota(queue, store, engine):
    queue.set_team("nlp", TeamSpec(quota_gpus={"default": 4}))
    hosts = [WorkerIdentity(name=f"h{n}", kinds=("train",), gpu_ids=(0, 1)) for n in range(6)]
    for round_ in range(5):
        # More than every host's scan (16 rows each): SKIP LOCKED gives each host its own
        # candidates, so all six reach the quota check together (without the team lock
        # they start 12 GPUs' worth).
        submit_many(queue, "nlp", 6 * 16)
        started = claim_together(store, hosts)
        assert running_gpus(engine, "nlp") == sum(c.job.gpus for c in started) == 4, round_
        # Clear the round: end every running job, drop the queued ones.
        for job in started:
            store.finish(job.id, job.lease_token, Exit(exit_code=0), actor="tester")
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM jobs WHERE status = 'queued'"))
