"""Queue positions in a deep queue, against the real database: exact near the head of the
pool, estimated from the scheduling pass's queue marks further back (so that reading a
job costs the same at any depth), and said so in the job and its waiting reason."""

from __future__ import annotations

from sqlalchemy import text

from jobqueue.planner import run_pass
from jobqueue.queue import JobQueue
from jobqueue.sql import QUEUE_MARK_EVERY
from tests.helpers import spec

EXACT = 10
#: Jobs per team: past two marks each.
PER_TEAM = 2 * QUEUE_MARK_EVERY + 40


def deep_queue(engine, settings, queue) -> list:
    """Teams a and b, PER_TEAM jobs each, queued a second apart alternately, team b's
    jobs moved 61 s ahead by its fair-share lead: the two teams' jobs interleave in
    the claim order, so that a position counts both."""
    jobs = []
    for n in range(2 * PER_TEAM):
        job, _ = queue.submit(spec(name=f"j{n:03d}", team="ab"[n % 2], gpus=0), actor="tester")
        jobs.append(job)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE jobs SET queued_at = '2026-01-01T00:00:00Z'::timestamptz"
                " + make_interval(secs => substr(name, 2)::int) WHERE status = 'queued'"
            )
        )
    run_pass(engine, settings, force=True)
    lead(engine, a=0, b=61)
    return jobs


def lead(engine, **seconds: float) -> None:
    with engine.begin() as conn:
        for team, lead_s in seconds.items():
            conn.execute(
                text("UPDATE team_standing SET lead_seconds = :s WHERE team = :t"),
                {"s": lead_s, "t": team},
            )


def true_positions(queue) -> dict:
    """Every claimable job's exact position, from the full ranking of the pool."""
    return {e["id"]: e["position"] for e in queue.queue()["default"]}


def exact_within(settings, engine) -> JobQueue:
    return JobQueue(engine, settings.model_copy(update={"exact_positions": EXACT}))


def test_positions_are_exact_near_the_head_and_estimated_from_the_marks_beyond(
    queue, engine, settings, worker
):
    jobs = deep_queue(engine, settings, queue)
    reads = exact_within(settings, engine)
    truth = true_positions(queue)
    assert sorted(truth.values()) == list(range(1, 2 * PER_TEAM + 1))
    for job in jobs:
        got = reads.get(job.id)
        if truth[job.id] <= EXACT:
            assert got.queue_position == got.queue_position_estimate == truth[job.id]
        else:
            # Nothing changed since the marking: the estimate is the position.
            assert got.queue_position is None
            assert got.queue_position_estimate == truth[job.id], job.name
    far = max(jobs, key=lambda j: truth[j.id])
    assert reads.get(far.id).waiting_reason == f"behind about {truth[far.id] - 1:,} jobs"
    near = min(jobs, key=lambda j: truth[j.id] if truth[j.id] > 1 else 10**9)
    assert reads.get(near.id).waiting_reason == f"behind {truth[near.id] - 1} job"


def test_an_estimate_overcounts_by_at_most_the_jobs_that_left_since_the_marking(
    queue, store, engine, settings, worker
):
    jobs = deep_queue(engine, settings, queue)
    reads = exact_within(settings, engine)
    claimed = store.claim(worker, free_gpu_ids=[0, 1, 2, 3], slots=4)
    assert len(claimed) == 4
    cancelled = [j for j in jobs[100:130]]
    for job in cancelled:
        queue.cancel(job.id, actor="tester")
    left = len(claimed) + len(cancelled)
    truth = true_positions(queue)
    for job in jobs:
        if job.id not in truth:
            continue
        got = reads.get(job.id)
        if truth[job.id] > EXACT:
            assert truth[job.id] <= got.queue_position_estimate <= truth[job.id] + left


def test_the_list_shows_the_same_places_as_the_job(queue, engine, settings, worker):
    deep_queue(engine, settings, queue)
    reads = exact_within(settings, engine)
    page, _ = reads.list_jobs(statuses=["queued"], limit=200)
    for job in page:
        one = reads.get(job.id)
        assert (job.queue_position, job.queue_position_estimate, job.waiting_reason) == (
            one.queue_position,
            one.queue_position_estimate,
            one.waiting_reason,
        )
    assert any(j.queue_position is None and j.queue_position_estimate for j in page)


def test_without_marks_a_job_past_the_exact_range_says_only_that(queue, engine, settings, worker):
    first = [queue.submit(spec(name=f"j{n}", gpus=0), actor="tester")[0] for n in range(EXACT + 3)]
    reads = exact_within(settings, engine)
    last = reads.get(first[-1].id)
    assert last.queue_position is None and last.queue_position_estimate is None
    assert last.waiting_reason == f"behind more than {EXACT} jobs"
    assert reads.get(first[EXACT - 1].id).queue_position == EXACT


def test_the_pass_rewrites_the_marks_only_when_they_are_due(queue, engine, settings, worker):
    deep_queue(engine, settings, queue)
    often = settings.model_copy(update={"plan_interval_seconds": 0.001})

    def marks():
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*), max(rank) FROM queue_marks")).one()

    assert tuple(marks()) == (4, 2 * QUEUE_MARK_EVERY)  # two per team
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs WHERE name LIKE 'j0%'"))
    assert run_pass(engine, often) is not None
    assert tuple(marks()) == (4, 2 * QUEUE_MARK_EVERY)  # marked seconds ago: kept
    assert run_pass(engine, often, force=True) is not None
    remaining = 2 * PER_TEAM - 100
    assert marks()[0] == 2 * ((remaining // 2) // QUEUE_MARK_EVERY)


def test_the_command_line_marks_an_estimated_position():
    from jobqueue.cli import _place

    assert _place({"queue_position": 7, "queue_position_estimate": 7}) == "#7"
    assert _place({"queue_position": None, "queue_position_estimate": 901}) == "~#901"
    assert _place({"queue_position": None, "queue_position_estimate": None}) == ""
