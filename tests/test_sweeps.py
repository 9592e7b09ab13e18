"""Sweeps against the real database: one request for many jobs, all-or-nothing
validation, idempotent repeats, the cap on running jobs under concurrent claimers, bulk
actions (and bulk actions racing claims), the summary and the sweep's table."""

from __future__ import annotations

import threading
from uuid import UUID

import pytest
from sqlalchemy import text

from jobqueue.errors import IdempotencyConflict, OtherTeam, SweepIdempotencyConflict
from jobqueue.outcomes import Exit
from jobqueue.states import Action, JobStatus
from jobqueue.sweep_specs import SweepItemsInvalid, SweepPatch, SweepSpec
from jobqueue.worker_store import Progress, WorkerIdentity

S = JobStatus
ACTOR = "alice"
TRAIN = {"kind": "train", "gpus": 0}


def sweep_of(queue, n: int = 6, **fields):
    body = {"name": "lr", "job": {**TRAIN, "config": {"epochs": 3}},
            "configs": [{"lr": 10.0**-i} for i in range(n)], **fields}  # fmt: skip
    return queue.submit_sweep(SweepSpec.model_validate(body), actor=ACTOR)


def statuses(queue, sweep_id) -> dict[int, str]:
    return {j.sweep_index: j.status for j in queue.sweep_jobs(sweep_id, limit=1000)}


def claim_all(store, worker, slots=16):
    return store.claim(worker, free_gpu_ids=list(worker.gpu_ids), slots=slots)


def finish(store, worker, job):
    store.finish(job.id, job.lease_token, Exit(exit_code=0), actor=worker.actor)


def count(engine, sql: str, **params) -> int:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


# -- submit ------------------------------------------------------------------------------


def test_a_grid_makes_one_job_per_combination_in_index_order(queue, engine):
    spec = SweepSpec.model_validate({
        "name": "grid", "job": {**TRAIN, "config": {"epochs": 3, "lr": 1.0}},
        "grid": {"lr": [0.1, 0.01], "batch": [32, 64, 128]},
    })  # fmt: skip
    done = queue.submit_sweep(spec, actor=ACTOR)
    assert done.created and [i.index for i in done.items] == list(range(6))
    jobs = [queue.get(i.id) for i in done.items]
    assert [j.config for j in jobs[:3]] == [
        {"epochs": 3, "lr": 0.1, "batch": 32},
        {"epochs": 3, "lr": 0.1, "batch": 64},
        {"epochs": 3, "lr": 0.1, "batch": 128},
    ]
    assert [j.name for j in jobs] == [f"grid[{i}]" for i in range(6)]
    assert {(j.sweep_id, j.owner, j.team) for j in jobs} == {(done.sweep.id, ACTOR, "default")}
    # They queue in index order, each with its submit event.
    assert [e["id"] for e in queue.queue()["default"]] == [j.id for j in jobs]
    assert count(engine, "SELECT count(*) FROM job_events WHERE action = 'submit'") == 6
    assert done.sweep.counts["queued"] == 6 and done.sweep.job_count == 6


def test_invalid_items_are_all_reported_and_nothing_is_written(queue, engine):
    spec = SweepSpec.model_validate({"name": "bulk", "jobs": [
        {"name": "ok", **TRAIN}, {"name": "", **TRAIN}, {"name": "ok2", **TRAIN},
        {"name": "bad", "kind": "no spaces"}, "not an object",
    ]})  # fmt: skip
    with pytest.raises(SweepItemsInvalid) as caught:
        queue.submit_sweep(spec, actor=ACTOR)
    assert [item["index"] for item in caught.value.items] == [1, 3, 4]
    assert caught.value.items[0]["errors"][0]["field"] == "name"
    assert count(engine, "SELECT count(*) FROM jobs") == 0
    assert count(engine, "SELECT count(*) FROM sweeps") == 0


def test_a_bad_shared_body_or_config_is_reported_with_its_place(queue):
    with pytest.raises(SweepItemsInvalid) as caught:
        sweep_of(queue, job={"kind": "train", "gpus": 65})
    assert caught.value.items == [{"index": None, "errors": [
        {"field": "job.gpus", "message": "Input should be less than or equal to 64",
         "type": "less_than_equal"}]}]  # fmt: skip
    with pytest.raises(SweepItemsInvalid) as caught:
        queue.submit_sweep(SweepSpec.model_validate(
            {"name": "c", "job": TRAIN, "configs": [{}, [1, 2], {}]}), actor=ACTOR)  # fmt: skip
    assert [i["index"] for i in caught.value.items] == [1]
    with pytest.raises(SweepItemsInvalid) as caught:
        sweep_of(queue, job={**TRAIN, "name": "n" * 195})  # no room for "[i]" in 200
    assert caught.value.items[0]["errors"][0]["field"] == "job.name"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "job": TRAIN},  # no form
        {"name": "x", "job": TRAIN, "configs": [{}], "grid": {"a": [1]}},  # two forms
        {"name": "x", "configs": [{}]},  # configs without the shared body
        {"name": "x", "job": TRAIN, "jobs": [{"name": "a", **TRAIN}]},
        {"name": "x", "job": TRAIN, "configs": []},
        {"name": "x", "job": TRAIN, "grid": {"a": list(range(101)), "b": list(range(100))}},
    ],
)
def test_a_sweep_has_one_form_and_at_most_10000_jobs(body):
    with pytest.raises(ValueError):
        SweepSpec.model_validate(body)


def test_a_repeated_sweep_key_gives_the_same_sweep_and_another_body_conflicts(queue, engine):
    first = sweep_of(queue, 3, idempotency_key="sweep-1")
    again = sweep_of(queue, 3, idempotency_key="sweep-1")
    assert not again.created and again.sweep.id == first.sweep.id
    assert [i.id for i in again.items] == [i.id for i in first.items]
    with pytest.raises(SweepIdempotencyConflict):
        sweep_of(queue, 4, idempotency_key="sweep-1")
    assert count(engine, "SELECT count(*) FROM jobs") == 3


def test_bulk_items_with_used_keys_are_named_not_made_again(queue, engine):
    alone, _ = queue.submit(
        SweepSpec.model_validate({"name": "b", "jobs": [{"name": "a", **TRAIN}]})
        .expand("default")[0]
        .model_copy(update={"idempotency_key": "a-1"}),
        actor=ACTOR,
    )
    jobs = [{"name": "a", **TRAIN, "idempotency_key": "a-1"}, {"name": "b", **TRAIN}]
    done = queue.submit_sweep(SweepSpec.model_validate({"name": "b", "jobs": jobs}), actor=ACTOR)
    assert [(i.index, i.created) for i in done.items] == [(0, False), (1, True)]
    assert done.items[0].id == alone.id
    conflicting = [{"name": "other", **TRAIN, "idempotency_key": "a-1"}]
    with pytest.raises(IdempotencyConflict):
        queue.submit_sweep(SweepSpec.model_validate({"name": "c", "jobs": conflicting}),
                           actor=ACTOR)  # fmt: skip
    assert count(engine, "SELECT count(*) FROM jobs") == 2


# -- the cap on running jobs ------------------------------------------------------------------


def test_max_running_admits_the_first_jobs_and_the_next_as_each_ends(queue, store, worker):
    done = sweep_of(queue, 6, max_running=2)
    held = queue.get(done.items[4].id)
    assert held.queue_position is None and "max_running" in held.waiting_reason
    first = claim_all(store, worker)
    assert sorted(c.job.sweep_index for c in first) == [0, 1]
    assert claim_all(store, worker) == []
    finish(store, worker, first[0].job)
    [third] = claim_all(store, worker)
    assert third.job.sweep_index == 2
    assert queue.sweep(done.sweep.id).held == 3


def test_the_cap_holds_under_concurrent_claimers(queue, store, engine):
    done = sweep_of(queue, 24, max_running=3)
    hosts = [WorkerIdentity(name=f"h{n}", kinds=("train",), gpu_ids=()) for n in range(4)]
    for h in hosts:
        store.heartbeat_worker(h, free_gpus=0)
    start = threading.Barrier(len(hosts) + 1)
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[tuple[int, int]] = []  # (running, running or admitted), one snapshot each

    def host(identity: WorkerIdentity) -> None:
        try:
            start.wait(timeout=10)
            for _ in range(60):
                for c in store.claim(identity, free_gpu_ids=[], slots=2):
                    finish(store, identity, c.job)
        except BaseException as exc:
            errors.append(exc)

    def sample() -> None:
        start.wait(timeout=10)
        with engine.connect() as conn:
            while not stop.is_set():
                seen.append(tuple(conn.execute(text(
                    "SELECT count(*) FILTER (WHERE status = 'running'),"
                    " count(*) FILTER (WHERE status = 'running'"
                    " OR (status = 'queued' AND NOT sweep_held)) FROM jobs WHERE sweep_id = :s"
                ), {"s": done.sweep.id}).one()))  # fmt: skip
                conn.commit()

    threads = [threading.Thread(target=host, args=(h,)) for h in hosts]
    sampler = threading.Thread(target=sample)
    for t in [*threads, sampler]:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    sampler.join(timeout=10)
    assert not errors and not any(t.is_alive() for t in [*threads, sampler])
    assert set(statuses(queue, done.sweep.id).values()) == {"completed"}
    # Every snapshot: at most three running or admitted; and the hosts did overlap.
    assert seen and max(counting for _, counting in seen) <= 3
    assert max(running for running, _ in seen) >= 2


def test_a_capped_bulk_admits_its_own_jobs_when_some_items_name_existing_ones(queue, store,
                                                                              worker):  # fmt: skip
    first = SweepSpec.model_validate({"name": "a", "jobs": [{"name": "x", **TRAIN,
                                      "idempotency_key": "x"}]})  # fmt: skip
    queue.submit_sweep(first, actor=ACTOR)
    jobs = [{"name": "x", **TRAIN, "idempotency_key": "x"}, {"name": "y", **TRAIN},
            {"name": "z", **TRAIN}]  # fmt: skip
    done = queue.submit_sweep(
        SweepSpec.model_validate({"name": "b", "max_running": 1, "jobs": jobs}), actor=ACTOR
    )
    # Item 0 is the other sweep's job: of this sweep's own two, one runs, one waits.
    assert done.sweep.held == 1 and done.sweep.job_count == 2
    assert statuses(queue, done.sweep.id) == {1: "queued", 2: "queued"}
    [claimed] = [c for c in claim_all(store, worker) if c.job.sweep_id == done.sweep.id]
    assert claimed.job.sweep_index == 1


def test_a_forced_job_starts_past_the_cap(queue, store, worker):
    done = sweep_of(queue, 4, max_running=1)
    queue.force_start(done.items[3].id, actor=ACTOR)
    claimed = claim_all(store, worker)
    assert sorted(c.job.sweep_index for c in claimed) == [0, 3]


def test_changing_the_cap_admits_or_holds_waiting_jobs_never_running_ones(queue, store, worker):
    done = sweep_of(queue, 6, max_running=2)
    running = claim_all(store, worker)
    assert len(running) == 2
    raised = queue.patch_sweep(done.sweep.id, SweepPatch(max_running=4), actor=ACTOR)
    assert raised.sweep.held == 2 and raised.sweep.max_running == 4
    lowered = queue.patch_sweep(done.sweep.id, SweepPatch(max_running=1), actor=ACTOR)
    assert lowered.sweep.held == 4 and lowered.sweep.counts["running"] == 2
    assert claim_all(store, worker) == []
    uncapped = queue.patch_sweep(
        done.sweep.id, SweepPatch.model_validate({"max_running": None}), actor=ACTOR
    )
    assert uncapped.sweep.held == 0 and uncapped.sweep.max_running is None
    assert len(claim_all(store, worker)) == 4


# -- bulk actions -----------------------------------------------------------------------------


def test_bulk_cancel_ends_waiting_jobs_and_asks_running_ones_to_stop(queue, store, worker):
    done = sweep_of(queue, 5)
    claim_all(store, worker, slots=2)
    outcome = queue.act_on_sweep(done.sweep.id, Action.CANCEL, actor=ACTOR)
    assert (outcome.changed, outcome.requested, outcome.unchanged) == (3, 2, 0)
    jobs = [queue.get(i.id) for i in done.items]
    assert [j.status for j in jobs[2:]] == [S.CANCELLED] * 3
    assert {(j.status, j.requested_action) for j in jobs[:2]} == {(S.RUNNING, "cancel")}
    assert [e.action for e in queue.events(jobs[4].id)] == ["submit", "cancel"]
    # A second cancel, as for one job, kills the running ones at once.
    again = queue.act_on_sweep(done.sweep.id, Action.CANCEL, actor=ACTOR)
    assert (again.changed, again.requested, again.unchanged) == (0, 2, 3)
    assert all(queue.get(j.id).request_kill for j in jobs[:2])


def test_bulk_pause_resume_retry_and_priority(queue, store, worker):
    done = sweep_of(queue, 4)
    [one] = claim_all(store, worker, slots=1)
    store.finish(one.job.id, one.job.lease_token, Exit(exit_code=1), actor=worker.actor)
    queue.mark_failed(done.items[1].id, actor=ACTOR, reason="bad config")
    paused = queue.act_on_sweep(done.sweep.id, Action.PAUSE, actor=ACTOR)
    assert paused.sweep.counts["paused"] == 3  # job 0 went back to the queue to retry
    resumed = queue.act_on_sweep(done.sweep.id, Action.RESUME, actor=ACTOR)
    assert resumed.sweep.counts["queued"] == 3 and resumed.changed == 3
    retried = queue.act_on_sweep(done.sweep.id, Action.RETRY, actor=ACTOR)
    assert retried.changed == 1 and retried.sweep.counts["queued"] == 4
    urgent = queue.patch_sweep(done.sweep.id, SweepPatch(priority=90), actor=ACTOR)
    assert urgent.changed == 4
    assert {queue.get(i.id).priority for i in done.items} == {90}


def test_bulk_cancel_racing_claims_never_starts_a_cancelled_job(queue, store, engine):
    done = sweep_of(queue, 60)
    hosts = [WorkerIdentity(name=f"h{n}", kinds=("train",), gpu_ids=()) for n in range(3)]
    for h in hosts:
        store.heartbeat_worker(h, free_gpus=0)
    go = threading.Barrier(len(hosts) + 1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def host(identity: WorkerIdentity) -> None:
        try:
            go.wait(timeout=10)
            while not stop.is_set():
                store.claim(identity, free_gpu_ids=[], slots=2)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=host, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    go.wait(timeout=10)
    outcome = queue.act_on_sweep(done.sweep.id, Action.CANCEL, actor=ACTOR)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors and not any(t.is_alive() for t in threads)
    final = statuses(queue, done.sweep.id)
    running = [i for i, s in final.items() if s == "running"]
    assert outcome.requested == len(running)
    assert outcome.changed == sum(1 for s in final.values() if s == "cancelled")
    assert set(final.values()) <= {"running", "cancelled"}
    assert all(queue.get(done.items[i].id).requested_action == "cancel" for i in running)
    # No job was claimed after it was cancelled.
    assert count(engine, """
        SELECT count(*) FROM job_events c JOIN job_events k ON k.job_id = c.job_id
        WHERE c.action = 'cancel' AND k.action = 'claim' AND k.id > c.id""") == 0  # fmt: skip


def test_an_operator_of_another_team_may_not_act_on_the_sweep(queue):
    done = sweep_of(queue, 2, team="vision")
    with pytest.raises(OtherTeam):
        queue.for_team("nlp").act_on_sweep(done.sweep.id, Action.CANCEL, actor="bob")
    with pytest.raises(OtherTeam):
        queue.for_team("nlp").patch_sweep(done.sweep.id, SweepPatch(max_running=1), actor="bob")
    assert queue.for_team("vision").act_on_sweep(done.sweep.id, Action.PAUSE,
                                                 actor="carol").changed == 2  # fmt: skip


# -- reading ---------------------------------------------------------------------------------


def test_the_summary_names_the_best_job_and_the_table_sorts_by_a_metric(queue, store, worker):
    done = sweep_of(queue, 4, objective={"metric": "loss", "mode": "min"})
    claimed = {c.job.sweep_index: c.job for c in claim_all(store, worker, slots=3)}
    for index, loss in ((0, 0.9), (1, 0.3), (2, 0.5)):
        job = claimed[index]
        store.report_progress(job.id, job.lease_token, Progress(step=10, metrics={"loss": loss}))
    summary = queue.sweep(done.sweep.id)
    assert summary.best == {"job_id": str(claimed[1].id), "index": 1, "name": "lr[1]",
                            "metric": "loss", "value": 0.3}  # fmt: skip
    assert summary.counts == {"running": 3, "queued": 1}
    table = queue.sweep_jobs(done.sweep.id, sort="metric", metric="loss")
    assert [row.sweep_index for row in table] == [1, 2, 0, 3]  # no metric yet: last
    assert table[0].public()["metrics"] == {"loss": 0.3}
    newest_first, _ = queue.sweeps()
    assert [s.id for s in newest_first] == [done.sweep.id]


def test_sweeps_page_newest_first_by_team(queue):
    made = [sweep_of(queue, 1, name=f"s{n}", team="ab"[n % 2]).sweep.id for n in range(5)]
    page, cursor = queue.sweeps(limit=2)
    assert [s.id for s in page] == made[::-1][:2] and cursor
    rest, end = queue.sweeps(limit=10, cursor=cursor)
    assert [s.id for s in rest] == made[::-1][2:] and end is None
    team_a, _ = queue.sweeps(team="a")
    assert [s.id for s in team_a] == [made[4], made[2], made[0]]
    assert all(isinstance(s.id, UUID) for s in team_a)
