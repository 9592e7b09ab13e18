"""The scheduling pass against a real PostgreSQL: fair-share order, reservations and
EASY backfill through the real claim, expected starts, and the waits they explain."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import text

from jobqueue.outcomes import Exit, StopCause
from jobqueue.planner import run_pass
from jobqueue.specs import TeamSpec
from jobqueue.states import JobStatus
from jobqueue.worker_store import WorkerIdentity
from tests.helpers import spec

HOUR = 3600


def host(store, name: str, gpus: int = 4) -> WorkerIdentity:
    identity = WorkerIdentity(name=name, kinds=("train",), gpu_ids=tuple(range(gpus)))
    store.heartbeat_worker(identity, free_gpus=gpus)
    return identity


def submit(queue, name: str, **fields):
    job, _ = queue.submit(spec(name=name, **fields), actor="tester")
    return job


def start(queue, store, worker: WorkerIdentity, name: str, gpu_ids, **fields):
    """Submit a job and have ``worker`` start it on ``gpu_ids`` (nothing else queued)."""
    job = submit(queue, name, gpus=len(gpu_ids), **fields)
    [claimed] = store.claim(worker, free_gpu_ids=list(gpu_ids), slots=1)
    assert claimed.id == job.id
    return claimed


def names(claimed) -> list[str]:
    return [c.job.name for c in claimed]


def standing(engine, team: str):
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT * FROM team_standing WHERE team = :t"), {"t": team}
        ).first()


# -- fair share -------------------------------------------------------------------------


def test_among_equal_priorities_the_team_below_its_share_goes_first(queue, store, engine,
                                                                     settings):  # fmt: skip
    h = host(store, "h1")
    run_pass(engine, settings, force=True)  # the first pass only starts the clock
    heavy = start(queue, store, h, "vision-heavy", [0, 1], team="vision")
    time.sleep(0.3)
    result = run_pass(engine, settings, force=True)
    assert result is not None
    by_team = {s.team: s for s in result.standings}
    assert by_team["vision"].usage_gpu_seconds == pytest.approx(0.6, abs=0.3)
    assert standing(engine, "vision").factor < 1
    early = submit(queue, "vision-early", team="vision")
    late = submit(queue, "nlp-late", team="nlp")
    assert queue.get(late.id).queue_position == 1
    assert queue.get(early.id).queue_position == 2
    assert names(store.claim(h, free_gpu_ids=[2], slots=1)) == ["nlp-late"]
    assert heavy.job.team == "vision"


def test_fair_share_moves_a_job_ahead_of_older_ones_by_at_most_the_largest_lead(
    queue, store, engine, settings
):
    hour = settings.model_copy(update={"fair_share_max_lead_hours": 1})
    h = host(store, "h1")
    run_pass(engine, hour, force=True)
    start(queue, store, h, "vision-heavy", [0, 1], team="vision")
    time.sleep(0.2)
    old = submit(queue, "vision-old", team="vision")
    recent = submit(queue, "vision-recent", team="vision")
    new = submit(queue, "nlp-new", team="nlp")
    with engine.begin() as conn:  # as if they had waited: 2 h and 10 min
        for job, minutes in [(old, 120), (recent, 10)]:
            conn.execute(
                text(
                    "UPDATE jobs SET queued_at = now() - make_interval(mins => :m) WHERE id = :id"
                ),
                {"m": minutes, "id": job.id},
            )
    run_pass(engine, hour, force=True)
    # vision used everything: factor 2^-2, a 15 min lead; nlp nothing: 1, the full hour.
    assert standing(engine, "vision").lead_seconds == pytest.approx(900, rel=0.01)
    assert standing(engine, "nlp").lead_seconds == pytest.approx(3600, rel=0.01)
    # nlp's 45 min more lead passes the job 10 min older, not the one 2 h older.
    positions = {j.name: queue.get(j.id).queue_position for j in (old, recent, new)}
    assert positions == {"vision-old": 1, "nlp-new": 2, "vision-recent": 3}
    assert names(store.claim(h, free_gpu_ids=[2], slots=1)) == ["vision-old"]
    assert names(store.claim(h, free_gpu_ids=[3], slots=1)) == ["nlp-new"]


def test_a_team_new_to_the_pass_has_the_full_lead(queue, engine, settings):
    submit(queue, "first", team="newcomers")
    lead = standing(engine, "newcomers").lead_seconds
    assert lead == settings.fair_share_max_lead_hours * 3600


def test_priority_and_force_still_order_above_fair_share(queue, store, engine, settings):
    h = host(store, "h1")
    run_pass(engine, settings, force=True)
    start(queue, store, h, "vision-heavy", [0, 1], team="vision")
    time.sleep(0.2)
    run_pass(engine, settings, force=True)
    submit(queue, "nlp-normal", team="nlp", priority=50)
    submit(queue, "vision-urgent", team="vision", priority=60)
    forced = submit(queue, "vision-forced", team="vision", priority=10)
    queue.force_start(forced.id, actor="tester")
    assert names(store.claim(h, free_gpu_ids=[2], slots=1)) == ["vision-forced"]
    assert names(store.claim(h, free_gpu_ids=[3], slots=1)) == ["vision-urgent"]


def test_usage_decays_with_the_half_life(queue, store, engine, settings):
    fast = settings.model_copy(update={"fair_share_half_life_hours": 1 / 3600})  # 1 s
    h = host(store, "h1")
    run_pass(engine, fast, force=True)
    job = start(queue, store, h, "vision", [0, 1, 2, 3], team="vision")
    time.sleep(0.3)
    run_pass(engine, fast, force=True)
    store.finish(job.id, job.lease_token, Exit(exit_code=0), actor="tester")
    run_pass(engine, fast, force=True)
    used = standing(engine, "vision").usage_gpu_seconds
    assert used > 0.5
    time.sleep(1.2)
    run_pass(engine, fast, force=True)
    after = standing(engine, "vision")
    # More than a half-life later: under half of it is left (and the row is kept while
    # anything is left to forget).
    assert after is None or after.usage_gpu_seconds < used / 2


def test_a_teams_share_weights_its_standing(queue, store, engine, settings):
    queue.set_team("vision", TeamSpec(share=3))
    h = host(store, "h1")
    run_pass(engine, settings, force=True)
    start(queue, store, h, "vision", [0, 1], team="vision")
    start(queue, store, h, "nlp", [2, 3], team="nlp")
    time.sleep(0.2)
    run_pass(engine, settings, force=True)
    vision, nlp = standing(engine, "vision"), standing(engine, "nlp")
    assert vision.share_fraction == pytest.approx(0.75)
    assert vision.usage_fraction == pytest.approx(0.5, abs=0.05)
    assert vision.factor > nlp.factor  # same use, three times the share


def test_only_one_process_runs_a_pass_at_a_time(engine, settings):
    barrier = threading.Barrier(4)
    results = []

    def plan() -> None:
        barrier.wait(timeout=10)
        results.append(run_pass(engine, settings))

    threads = [threading.Thread(target=plan) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 4
    assert sum(r is not None for r in results) == 1  # the others skip: locked, or fresh


# -- reservations and backfill ----------------------------------------------------------


def test_backfill_starts_only_jobs_that_end_before_the_reservation(queue, store, engine,
                                                                   settings):  # fmt: skip
    h = host(store, "h1")
    running = start(queue, store, h, "running", [0, 1], max_runtime_seconds=HOUR)
    big = submit(queue, "big", gpus=4, max_runtime_seconds=HOUR)
    long_ = submit(queue, "long", gpus=2, max_runtime_seconds=2 * HOUR)
    endless = submit(queue, "endless", gpus=2)
    short = submit(queue, "short", gpus=2, max_runtime_seconds=600)
    run_pass(engine, settings, force=True)

    with engine.connect() as conn:
        [reserved] = conn.execute(text("SELECT * FROM reservations")).all()
    assert (reserved.job_id, reserved.worker_name, reserved.gpus) == (big.id, "h1", 4)
    ends = running.job.started_at + timedelta(seconds=HOUR)
    assert abs((reserved.starts_at - ends).total_seconds()) < 1

    got = queue.get(big.id)
    assert abs((got.expected_start_at - ends).total_seconds()) < 1
    long_wait = queue.get(long_.id).waiting_reason
    assert "reserved for job big" in long_wait and "its time limit ends later" in long_wait
    assert "it has no time limit" in queue.get(endless.id).waiting_reason

    # Only the job that ends before the big one's GPUs free up starts on them.
    assert names(store.claim(h, free_gpu_ids=[2, 3], slots=4)) == ["short"]
    assert queue.get(short.id).expected_start_at is None  # running now: no estimate


def test_without_a_pass_a_queue_behind_a_big_job_is_not_protected(queue, store):
    # The contrast to the test above: the reservation is what stops the long job.
    h = host(store, "h1")
    start(queue, store, h, "running", [0, 1], max_runtime_seconds=HOUR)
    submit(queue, "big", gpus=4, max_runtime_seconds=HOUR)
    submit(queue, "long", gpus=2, max_runtime_seconds=2 * HOUR)
    assert names(store.claim(h, free_gpu_ids=[2, 3], slots=4)) == ["long"]


def test_a_forced_job_reserves_one_host_and_the_others_go_on(queue, store, engine, settings):
    h1, h2 = host(store, "h1"), host(store, "h2")
    start(queue, store, h1, "r1", [0, 1], max_runtime_seconds=HOUR)
    start(queue, store, h2, "r2", [0, 1], max_runtime_seconds=2 * HOUR)
    forced = submit(queue, "forced", gpus=4)
    queue.force_start(forced.id, actor="tester")
    small = submit(queue, "small", gpus=1)
    # Not planned yet: force-start holds back every host that could run it.
    assert store.claim(h2, free_gpu_ids=[2, 3], slots=4) == []
    run_pass(engine, settings, force=True)
    with engine.connect() as conn:
        [(worker,)] = conn.execute(text("SELECT worker_name FROM reservations")).all()
    assert worker == "h1"  # its running job's limit ends first
    assert store.claim(h1, free_gpu_ids=[2, 3], slots=4) == []  # small has no limit
    assert names(store.claim(h2, free_gpu_ids=[2, 3], slots=4)) == ["small"]
    assert queue.get(small.id).status.value == "running"


def test_the_reserved_job_starts_when_its_gpus_free_up(api, queue, store, engine, settings):
    h = host(store, "h1")
    running = start(queue, store, h, "running", [0, 1, 2], max_runtime_seconds=HOUR)
    big = submit(queue, "big", gpus=4)
    run_pass(engine, settings, force=True)
    [worker] = api.get("/api/workers").get_json()["items"]
    assert worker["reservation"]["job_id"] == str(big.id)
    store.finish(running.id, running.lease_token, Exit(exit_code=0), actor="tester")
    assert [c.id for c in store.claim(h, free_gpu_ids=[0, 1, 2, 3], slots=4)] == [big.id]
    # Started: the host holds nothing for it any more, before the next pass too.
    [worker] = api.get("/api/workers").get_json()["items"]
    assert worker["reservation"] is None


# -- waits explained ------------------------------------------------------------------------


def test_a_job_over_its_teams_quota_says_so(queue, store, engine, settings):
    queue.set_team("nlp", TeamSpec(quota_gpus={"default": 2}))
    h = host(store, "h1")
    start(queue, store, h, "nlp-1", [0, 1], team="nlp")
    waiting = submit(queue, "nlp-2", team="nlp")
    assert queue.get(waiting.id).waiting_reason == (
        "team nlp is at its quota of 2 GPUs in pool default"
    )
    [listed] = [j for j in queue.list_jobs(statuses=["queued"])[0]]
    assert listed.waiting_reason == queue.get(waiting.id).waiting_reason


def test_a_job_behind_others_for_its_teams_usage_says_so(queue, store, engine, settings):
    h = host(store, "h1")
    run_pass(engine, settings, force=True)
    start(queue, store, h, "vision-heavy", [0, 1], team="vision")
    store.heartbeat_worker(h, free_gpus=2)
    time.sleep(0.2)
    submit(queue, "nlp", team="nlp")
    waiting = submit(queue, "vision-next", team="vision")
    run_pass(engine, settings, force=True)
    reason = queue.get(waiting.id).waiting_reason
    assert reason == "team vision used 100% of recent GPU time for a 50% share: behind 1 job"


def test_expected_starts_follow_the_running_jobs_limits(api, queue, store, engine, settings):
    h = host(store, "h1")
    running = start(queue, store, h, "running", [0, 1, 2, 3], max_runtime_seconds=HOUR)
    first = submit(queue, "first", gpus=4, max_runtime_seconds=HOUR)
    second = submit(queue, "second", gpus=4, max_runtime_seconds=HOUR)
    unknown = submit(queue, "unknown", gpus=4)  # no limit: and nothing after it is known
    after = submit(queue, "after", gpus=4)
    run_pass(engine, settings, force=True)
    ends = running.job.started_at + timedelta(seconds=HOUR)
    body = api.job(second.id)
    expected = {
        first.id: ends,
        second.id: ends + timedelta(seconds=HOUR),
        unknown.id: ends + timedelta(seconds=2 * HOUR),
    }
    for job_id, when in expected.items():
        assert abs((queue.get(job_id).expected_start_at - when).total_seconds()) < 1
    assert queue.get(after.id).expected_start_at is None
    assert body["expected_start_at"] is not None
    [entry] = [e for e in api.get("/api/queue").get_json()["pools"]["default"]
               if e["id"] == str(first.id)]  # fmt: skip
    assert entry["expected_start_at"] is not None


# -- preemption ---------------------------------------------------------------------------


def events(engine, job_id):
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT action, actor, reason FROM job_events WHERE job_id = :id ORDER BY id"),
            {"id": job_id},
        ).all()


def test_a_forced_job_preempts_a_lower_priority_job_which_requeues_in_place(
    queue, store, engine, settings
):
    eager = settings.model_copy(update={"preempt_min_runtime_seconds": 0})
    h = host(store, "h1")
    victim = start(queue, store, h, "victim", [0, 1, 2, 3], priority=10)
    keeper = submit(queue, "later", priority=10)  # queued after the victim
    forced = submit(queue, "forced", gpus=4, priority=50)
    queue.force_start(forced.id, actor="tester")

    result = run_pass(engine, eager, force=True)
    assert result.preemptions == {"default": (forced.id, [victim.id])}
    asked = queue.get(victim.id)
    assert (asked.requested_action, asked.requested_by) == ("preempt", "scheduler")
    action, actor, reason = events(engine, victim.id)[-1]
    assert (action, actor) == ("preempt", "scheduler") and str(forced.id) in reason
    with engine.connect() as conn:
        [(worker,)] = conn.execute(
            text("SELECT worker_name FROM reservations WHERE job_id = :id"), {"id": forced.id}
        ).all()
    assert worker == "h1"
    assert run_pass(engine, eager, force=True).preemptions == {}  # not twice

    # The worker carries it out (the pause path): back to the queue in its old place.
    back = store.finish(victim.id, victim.lease_token, Exit(stopped_for=StopCause.PREEMPT),
                        actor=h.actor)  # fmt: skip
    assert back.status is JobStatus.QUEUED
    assert (back.interruptions, back.preempted, back.attempt) == (1, 1, 1)
    assert back.queued_at == victim.job.queued_at and back.finished_at is None
    assert events(engine, victim.id)[-1][0] == "preempt"
    [first] = store.claim(h, free_gpu_ids=[0, 1, 2, 3], slots=1)
    assert first.id == forced.id
    assert queue.get(victim.id).queue_position < queue.get(keeper.id).queue_position


def test_no_preemption_of_young_or_non_preemptible_jobs(queue, store, engine, settings):
    h = host(store, "h1")
    start(queue, store, h, "young", [0, 1], priority=10)  # min runtime: 600 s by default
    old = start(queue, store, h, "pinned", [2, 3], priority=10, preemptible=False)
    forced = submit(queue, "forced", gpus=4)
    queue.force_start(forced.id, actor="tester")
    eager = settings.model_copy(update={"preempt_min_runtime_seconds": 0})
    assert run_pass(engine, settings, force=True).preemptions == {}
    # Old enough now, but the other one may not be stopped: 2 GPUs are not enough.
    assert run_pass(engine, eager, force=True).preemptions == {}
    assert queue.get(old.id).requested_action is None


def test_a_team_below_its_share_that_waited_long_preempts_a_team_above_it(
    queue, store, engine, settings
):
    patient = settings.model_copy(
        update={"preempt_min_runtime_seconds": 0, "preempt_wait_seconds": 0.5}
    )
    h = host(store, "h1")
    run_pass(engine, patient, force=True)
    hog = start(queue, store, h, "vision-hog", [0, 1, 2, 3], team="vision")
    nlp = submit(queue, "nlp", team="nlp", gpus=2)
    time.sleep(0.2)
    # nlp has used nothing: below its share, but it has not waited long enough.
    assert run_pass(engine, patient, force=True).preemptions == {}
    time.sleep(0.5)
    assert run_pass(engine, patient, force=True).preemptions == {"default": (nlp.id, [hog.id])}
    # A person's pause replaces the scheduler's request.
    assert queue.pause(hog.id, actor="tester").requested_action == "pause"


def test_the_api_shows_team_usage_and_host_reservations(api, queue, store, engine, settings):
    queue.set_team("vision", TeamSpec(share=2, quota_gpus={"default": 8}))
    h = host(store, "h1")
    run_pass(engine, settings, force=True)
    start(queue, store, h, "vision", [0, 1, 2], team="vision", max_runtime_seconds=HOUR)
    big = submit(queue, "big", team="nlp", gpus=4)
    time.sleep(0.2)
    run_pass(engine, settings, force=True)
    teams = {t["name"]: t for t in api.get("/api/teams").get_json()["items"]}
    assert set(teams) == {"vision", "nlp"}
    vision, nlp = teams["vision"], teams["nlp"]
    assert vision["gpus_running"] == {"default": 3} and vision["quota_gpus"] == {"default": 8}
    assert vision["usage_fraction"] == pytest.approx(1.0)
    assert vision["share_fraction"] == pytest.approx(2 / 3)
    assert nlp["created_at"] is None and nlp["share"] == 1 and nlp["jobs_queued"] == 1
    assert nlp["factor"] == pytest.approx(1.0) and vision["factor"] < 1
    full_lead = settings.fair_share_max_lead_hours * 3600
    assert nlp["lead_seconds"] == pytest.approx(full_lead)
    assert vision["lead_seconds"] == pytest.approx(vision["factor"] * full_lead)
    [worker] = api.get("/api/workers").get_json()["items"]
    reservation = worker["reservation"]
    assert (reservation["job_id"], reservation["job_name"], reservation["gpus"]) == (
        str(big.id), "big", 4,
    )  # fmt: skip
    assert reservation["starts_at"] is not None


def test_a_claim_after_the_pass_starts_the_job_the_pass_planned_here_now(
    queue, store, engine, settings
):
    h = host(store, "h1")
    start(queue, store, h, "running", [0, 1], max_runtime_seconds=HOUR)
    planned = submit(queue, "planned", gpus=2, max_runtime_seconds=2 * HOUR)
    big = submit(queue, "big", gpus=4, max_runtime_seconds=HOUR)
    run_pass(engine, settings, force=True)
    with engine.connect() as conn:
        [reserved] = conn.execute(text("SELECT job_id, starts_at FROM reservations")).all()
    # The big job's GPUs free up exactly when the planned job's limit ends...
    assert reserved.job_id == big.id
    assert reserved.starts_at == queue.get(planned.id).expected_start_at + timedelta(hours=2)
    time.sleep(0.05)  # ...so by the claim's later clock it would end after that
    assert names(store.claim(h, free_gpu_ids=[2, 3], slots=4)) == ["planned"]
