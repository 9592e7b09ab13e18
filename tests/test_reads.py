"""What people read about jobs, against the real database: queue order and
positions, why jobs wait, listing and paging, events, logs, metrics,
checkpoints, pruning and workers."""

from __future__ import annotations

import base64
import json
from uuid import UUID, uuid4

import pytest
from sqlalchemy import event, text

from jobqueue.errors import InvalidCursor, JobNotFound
from jobqueue.outcomes import Exit, StopCause
from jobqueue.pruner import prune_finished
from jobqueue.records import Job
from jobqueue.settings import Settings
from jobqueue.states import JobStatus
from jobqueue.worker_store import Progress, WorkerIdentity, WorkerStore
from tests.helpers import spec

S = JobStatus
OP = "alice"
QUEUE_KEYS = {
    "id", "name", "position", "gpus", "priority", "forced", "expected_start_at", "waiting_reason"
}  # fmt: skip


# -- a database for the module ------------------------------------------------------------


@pytest.fixture
def database_url(emptied_module_database: str) -> str:
    return emptied_module_database


# -- helpers --------------------------------------------------------------------------------


def submit(queue, name="job", **overrides):
    job, created = queue.submit(spec(name=name, **overrides), actor=OP)
    assert created
    return job


def positions(queue, *jobs) -> list[int | None]:
    return [queue.get(j.id).queue_position for j in jobs]


def queue_ids(queue, pool="default") -> list[UUID]:
    return [e["id"] for e in queue.queue().get(pool, [])]


def start(queue, store, worker, name="job", **overrides):
    job = submit(queue, name, **overrides)
    claimed = store.claim(worker, free_gpu_ids=list(worker.gpu_ids), slots=1)
    assert [c.id for c in claimed] == [job.id]
    return claimed[0]


def store_with(settings: Settings, engine, **changes) -> WorkerStore:
    return WorkerStore(engine, Settings(**{**settings.model_dump(), **changes}))


def count_rows(engine, table: str, job_id: UUID) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text(f"SELECT count(*) FROM {table} WHERE job_id = :id"), {"id": job_id}
        ).scalar_one()


# -- queue order and positions ---------------------------------------------------------------


def test_forced_jobs_come_first_in_the_order_they_were_forced(queue, worker):
    a, b, c = submit(queue, "a"), submit(queue, "b"), submit(queue, "c")
    d = submit(queue, "d", priority=90)
    assert positions(queue, a, b, c, d) == [2, 3, 4, 1]
    queue.force_start(c.id, actor=OP)
    queue.force_start(a.id, actor=OP)
    # Forced first (c before a), then priority (d), then queued_at (b).
    assert positions(queue, c, a, d, b) == [1, 2, 3, 4]
    assert queue_ids(queue) == [c.id, a.id, d.id, b.id]
    # Forcing c again does not move it behind a.
    queue.force_start(c.id, actor=OP)
    assert queue_ids(queue) == [c.id, a.id, d.id, b.id]


def test_claims_follow_the_queue_order(queue, store, worker):
    a, b = submit(queue, "a"), submit(queue, "b")
    c = submit(queue, "c", priority=70)
    queue.force_start(b.id, actor=OP)
    claimed = store.claim(worker, free_gpu_ids=[0, 1, 2, 3], slots=3)
    assert [x.id for x in claimed] == [b.id, c.id, a.id]


def test_a_priority_change_moves_the_job_and_keeps_its_queued_at(queue, worker):
    a, b, c = submit(queue, "a"), submit(queue, "b"), submit(queue, "c")
    patched = queue.patch(c.id, actor=OP, priority=90)
    assert patched.queued_at == c.queued_at
    assert patched.queue_position == 1
    assert positions(queue, c, a, b) == [1, 2, 3]
    # Back to the same priority: its original queued_at puts it last again.
    queue.patch(c.id, actor=OP, priority=50)
    assert positions(queue, a, b, c) == [1, 2, 3]


def test_a_pool_change_moves_the_job_to_the_other_pools_queue(queue, worker):
    a, b = submit(queue, "a"), submit(queue, "b")
    other = submit(queue, "x", pool="big")
    queue.patch(a.id, actor=OP, pool="big")
    assert positions(queue, a, other, b) == [1, 2, 1]
    assert queue_ids(queue, "big") == [a.id, other.id]
    assert queue_ids(queue, "default") == [b.id]


def test_resume_keeps_the_original_place(queue, worker):
    a, b, c = submit(queue, "a"), submit(queue, "b"), submit(queue, "c")
    queue.pause(a.id, actor=OP)
    assert positions(queue, a, b, c) == [None, 1, 2]
    resumed = queue.resume(a.id, actor=OP)
    assert resumed.queue_position == 1
    assert positions(queue, a, b, c) == [1, 2, 3]


def test_a_job_not_before_a_future_time_has_no_position_and_says_when(queue, worker, engine):
    later = submit(queue, "later", not_before="2999-01-01T00:00:00Z")
    now = submit(queue, "now")
    seen = queue.get(later.id)
    assert seen.queue_position is None
    assert seen.waiting_reason.startswith("not before 2999-01-01")
    assert queue.get(now.id).queue_position == 1
    assert queue_ids(queue) == [now.id]
    # Once the time has passed it takes its place by queued_at.
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE jobs SET not_before = now() - interval '1 second' WHERE id = :id"),
            {"id": later.id},
        )
    assert positions(queue, later, now) == [1, 2]


def test_positions_are_per_pool(queue, worker):
    a, b = submit(queue, "a"), submit(queue, "b")
    c, d = submit(queue, "c", pool="big"), submit(queue, "d", pool="big")
    assert positions(queue, a, b, c, d) == [1, 2, 1, 2]
    listed = queue.queue()
    assert list(listed) == ["big", "default"]
    assert [e["position"] for e in listed["big"]] == [1, 2]


def test_jobs_that_do_not_wait_have_no_position(queue, store, worker):
    running = start(queue, store, worker, "running")
    held = submit(queue, "held", hold=True)
    paused = submit(queue, "paused")
    queue.pause(paused.id, actor=OP)
    for job_id in (running.id, held.id, paused.id):
        assert queue.get(job_id).queue_position is None
    assert queue.get(held.id).waiting_reason.startswith("held")
    assert queue.get(running.id).waiting_reason is None
    assert queue.queue() == {}


def test_queue_lists_each_pools_claimable_jobs_in_claim_order(queue, worker):
    a = submit(queue, "a", gpus=2, priority=10)
    b = submit(queue, "b", priority=60)
    c = submit(queue, "c", pool="other")
    submit(queue, "held", hold=True)
    submit(queue, "later", not_before="2999-01-01T00:00:00Z")
    queue.force_start(a.id, actor=OP)
    listed = queue.queue()
    assert set(listed) == {"default", "other"}
    for entries in listed.values():
        for e in entries:
            assert set(e) == QUEUE_KEYS
    assert listed["default"] == [
        {
            "id": a.id,
            "name": "a",
            "position": 1,
            "gpus": 2,
            "priority": 10,
            "forced": True,
            "expected_start_at": None,
            "waiting_reason": "next in line: a worker will claim it shortly",
        },
        {
            "id": b.id,
            "name": "b",
            "position": 2,
            "gpus": 1,
            "priority": 60,
            "forced": False,
            "expected_start_at": None,
            "waiting_reason": f"behind forced job a ({a.id})",
        },
    ]
    [only] = listed["other"]
    assert only["id"] == c.id
    assert only["waiting_reason"] == "no live worker in pool other knows kind train"


def test_waiting_reasons_follow_the_workers(queue, store, worker):
    a, b = submit(queue, "a"), submit(queue, "b")
    assert queue.get(a.id).waiting_reason == "next in line: a worker will claim it shortly"
    assert queue.get(b.id).waiting_reason == "behind 1 job"
    big = submit(queue, "big", gpus=3, priority=90)
    assert queue.get(big.id).queue_position == 1
    store.heartbeat_worker(worker, free_gpus=1)
    assert queue.get(big.id).waiting_reason == (
        "needs 3 GPUs, the largest free block in pool default is 1"
    )
    assert queue.get(b.id).waiting_reason == "behind 2 jobs"
    queue.force_start(big.id, actor=OP)
    assert queue.get(a.id).waiting_reason == f"behind forced job big ({big.id})"
    odd = submit(queue, "odd", kind="eval")
    assert queue.get(odd.id).waiting_reason == "no live worker in pool default knows kind eval"
    store.stop_worker(worker)
    assert queue.get(a.id).waiting_reason == "no live worker in pool default knows kind train"


def test_one_job_reads_the_same_position_and_reason_as_the_list_and_the_queue(queue, store, worker):
    """GET of one job reads its wait in one statement; lists and the queue view read it
    another way. Over a queue with every kind of obstacle, all three must agree."""
    store.heartbeat_worker(worker, free_gpus=2)
    other = WorkerIdentity(name="cpu-b", pools=("cpu",), kinds=("eval",), gpu_ids=())
    store.heartbeat_worker(other, free_gpus=0)
    jobs = [
        submit(queue, "small", gpus=1),
        submit(queue, "urgent", gpus=4, priority=10),
        submit(queue, "urgent-too", gpus=1),
        submit(queue, "big", gpus=8),
        submit(queue, "cpu", gpus=0),
        submit(queue, "later", not_before="2999-01-01T00:00:00Z"),
        submit(queue, "held", hold=True),
        submit(queue, "unknown-kind", kind="finetune"),
        submit(queue, "eval", kind="eval", pool="cpu", gpus=0),
        submit(queue, "eval-2", kind="eval", pool="cpu", gpus=0, priority=70),
        submit(queue, "gpu-eval", kind="eval", pool="cpu", gpus=1),
    ]
    queue.force_start(jobs[1].id, actor=OP)
    queue.force_start(jobs[2].id, actor=OP)
    listed = {j.id: j for j in queue.list_jobs(limit=200)[0]}
    in_queue = {e["id"]: e for entries in queue.queue().values() for e in entries}
    reasons = set()
    for job in jobs:
        one = queue.get(job.id)
        reasons.add(one.waiting_reason.split(" ")[0].rstrip(":"))
        assert (one.queue_position, one.waiting_reason) == (
            listed[job.id].queue_position,
            listed[job.id].waiting_reason,
        ), job.name
        if job.id in in_queue:
            entry = in_queue[job.id]
            assert (one.queue_position, one.waiting_reason) == (
                entry["position"],
                entry["waiting_reason"],
            ), job.name
    # The queue above does hold every kind of obstacle.
    assert reasons == {"next", "behind", "needs", "not", "held", "no"}
    assert queue.get(jobs[0].id).waiting_reason == f"behind forced job urgent ({jobs[1].id})"


def test_a_job_read_as_json_equals_the_job_read_as_columns(queue, store, worker, engine):
    """GET of one job decodes the row from to_jsonb (Job.from_json); everything else reads
    typed columns (Job.from_row). Over rows with every field set, both must agree."""
    running = start(queue, store, worker, "running", idempotency_key="k-1", gpus=2)
    store.report_progress(
        running.id, running.lease_token,
        Progress(fraction=0.5, step=5, message="half", metrics={"loss": 0.25}),
    )  # fmt: skip
    store.report_checkpoint(running.id, running.lease_token, "/ckpt/5", step=5)
    store.append_logs(running.id, running.lease_token, [("stdout", "héllo"), ("stderr", "x")])
    failed = start(queue, store, worker, "failed", max_attempts=1, config={"a": [1, {"b": None}]})
    store.finish(failed.id, failed.lease_token, Exit(exit_code=3), actor=worker.actor)
    forced = submit(queue, "forced", not_before="2999-01-01T00:00:00+02:00")
    queue.force_start(forced.id, actor=OP)
    later = submit(queue, "later", not_before="2999-01-01T00:00:00.123456Z", priority=0)
    held = submit(queue, "held", hold=True)
    queue.cancel(running.id, actor=OP)  # a request on a running job
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT to_jsonb(j) AS json, j.* FROM jobs j")).mappings().all()
    assert len(rows) == 5
    for row in rows:
        assert Job.from_json(dict(row["json"])) == Job.from_row(row)
    assert {r["id"] for r in rows} == {running.id, failed.id, forced.id, later.id, held.id}
    seen = queue.get(running.id)
    assert seen.lease_token == running.lease_token and seen.requested_action == "cancel"
    assert seen.checkpoint["uri"] == "/ckpt/5" and seen.gpu_ids == running.gpu_ids


# -- listing -------------------------------------------------------------------------------


def test_list_is_newest_first_and_filters(queue, store, worker):
    a = submit(queue, "Alpha_1")
    b = submit(queue, "alpha%2", pool="big")
    c = submit(queue, "alphaX1")
    d = submit(queue, "beta", hold=True)
    queue.cancel(c.id, actor=OP)

    def names(**filters):
        return [j.name for j in queue.list_jobs(**filters)[0]]

    assert names() == ["beta", "alphaX1", "alpha%2", "Alpha_1"]
    assert names(statuses=["queued"]) == ["alpha%2", "Alpha_1"]
    assert names(statuses=["pending", "cancelled"]) == ["beta", "alphaX1"]
    assert names(pool="big") == ["alpha%2"]
    assert names(pool="nowhere") == []
    # Case-insensitive, and % and _ are taken literally.
    assert names(name_contains="ALPHA") == ["alphaX1", "alpha%2", "Alpha_1"]
    assert names(name_contains="a_") == ["Alpha_1"]
    assert names(name_contains="%") == ["alpha%2"]
    assert names(name_contains="a%2") == ["alpha%2"]
    assert names(name_contains="_") == ["Alpha_1"]
    assert names(name_contains="\\") == []
    assert names(statuses=["queued"], pool="default", name_contains="alpha") == ["Alpha_1"]
    # Listed jobs carry positions and waiting reasons too.
    listed = {j.id: j for j in queue.list_jobs()[0]}
    assert listed[a.id].queue_position == 1
    assert listed[b.id].queue_position == 1
    assert listed[d.id].waiting_reason.startswith("held")


def test_cursor_paging_reaches_every_job_exactly_once(queue):
    jobs = [submit(queue, f"j{i}") for i in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = queue.list_jobs(limit=3, cursor=cursor)
        pages += 1
        seen.extend(j.id for j in page)
        if cursor is None:
            break
        # A job submitted while paging is newer: it does not shift later pages.
        if pages == 1:
            submit(queue, "meanwhile")
    assert pages == 3
    assert seen == [j.id for j in reversed(jobs)]


def test_a_full_last_page_has_no_next_cursor(queue):
    for i in range(6):
        submit(queue, f"j{i}")
    page, cursor = queue.list_jobs(limit=3)
    assert len(page) == 3 and cursor is not None
    page, cursor = queue.list_jobs(limit=3, cursor=cursor)
    assert len(page) == 3 and cursor is None


def test_paging_with_a_filter(queue):
    keep = [submit(queue, f"keep{i}", pool="big") for i in range(4)]
    for i in range(3):
        submit(queue, f"other{i}")
    page1, cursor = queue.list_jobs(pool="big", limit=2)
    page2, end = queue.list_jobs(pool="big", limit=2, cursor=cursor)
    assert end is None
    assert [j.id for j in page1 + page2] == [j.id for j in reversed(keep)]


def _b64(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "!!!",
        "é",
        _b64(["yesterday", str(uuid4())]),
        _b64(["2024-01-01T00:00:00", str(uuid4())]),  # naive time
        _b64(["2024-01-01T00:00:00+00:00", "not-a-uuid"]),
        _b64(["2024-01-01T00:00:00+00:00", 123]),
        _b64([20240101, str(uuid4())]),
        _b64(["2024-01-01T00:00:00+00:00"]),
        _b64({"at": "2024-01-01T00:00:00+00:00", "id": str(uuid4())}),
        _b64(None),
        base64.urlsafe_b64encode(b"[" * 100_000).decode(),
    ],
    ids=[
        "garbage",
        "punctuation",
        "non-ascii",
        "bad-time",
        "naive-time",
        "bad-uuid",
        "uuid-not-a-string",
        "time-not-a-string",
        "one-part",
        "object",
        "null",
        "deeply-nested",
    ],
)
def test_a_bad_cursor_is_refused(queue, cursor):
    with pytest.raises(InvalidCursor):
        queue.list_jobs(cursor=cursor)


def test_unknown_jobs_are_not_found(queue):
    missing = uuid4()
    for read in (queue.get, queue.events, queue.logs, queue.metrics):
        with pytest.raises(JobNotFound):
            read(missing)


# -- events ----------------------------------------------------------------------------------


def test_events_are_oldest_first_starting_with_submit(queue, store, worker):
    claimed = start(queue, store, worker)
    queue.pause(claimed.id, actor=OP, reason="maintenance")
    store.finish(
        claimed.id,
        claimed.lease_token,
        Exit(exit_code=0, stopped_for=StopCause.PAUSE),
        actor=worker.actor,
    )
    queue.resume(claimed.id, actor="bob")
    events = queue.events(claimed.id)
    assert [(e.from_status, e.to_status, e.action, e.actor) for e in events] == [
        (None, "queued", "submit", OP),
        ("queued", "running", "claim", worker.actor),
        ("running", "running", "pause", OP),
        ("running", "paused", "stopped", worker.actor),
        ("paused", "queued", "resume", "bob"),
    ]
    assert events[2].reason == "maintenance"
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert set(events[0].public()) == {
        "id",
        "at",
        "from_status",
        "to_status",
        "action",
        "actor",
        "reason",
    }


# -- logs --------------------------------------------------------------------------------------


def test_logs_are_numbered_from_1_and_paged_with_after(queue, store, worker):
    claimed = start(queue, store, worker)
    last = store.append_logs(
        claimed.id, claimed.lease_token, [("stdout", "one"), ("stderr", "two"), ("stdout", "3")]
    )
    assert last == 3
    assert store.append_logs(claimed.id, claimed.lease_token, [("stdout", "four")]) == 4
    lines, nxt = queue.logs(claimed.id)
    assert [(x.n, x.stream, x.text) for x in lines] == [
        (1, "stdout", "one"),
        (2, "stderr", "two"),
        (3, "stdout", "3"),
        (4, "stdout", "four"),
    ]
    assert nxt == 4
    lines, nxt = queue.logs(claimed.id, after=2)
    assert [x.n for x in lines] == [3, 4] and nxt == 4
    lines, nxt = queue.logs(claimed.id, after=0, limit=2)
    assert [x.n for x in lines] == [1, 2] and nxt == 2
    lines, nxt = queue.logs(claimed.id, after=nxt, limit=2)
    assert [x.n for x in lines] == [3, 4] and nxt == 4
    # Nothing new: the same number to ask after.
    assert queue.logs(claimed.id, after=4) == ([], 4)
    assert set(lines[0].public()) == {"n", "stream", "text", "at"}


def test_logs_are_bounded_oldest_dropped_first(queue, settings, engine, worker):
    small = store_with(settings, engine, log_max_lines=20)
    claimed = start(queue, small, worker)
    small.append_logs(claimed.id, claimed.lease_token, [("stdout", f"a{i}") for i in range(15)])
    small.append_logs(claimed.id, claimed.lease_token, [("stdout", f"b{i}") for i in range(10)])
    lines, nxt = queue.logs(claimed.id)
    assert [x.n for x in lines] == list(range(6, 26))
    assert lines[0].text == "a5" and lines[-1].text == "b9"
    assert nxt == 25
    assert count_rows(engine, "job_logs", claimed.id) == 20


def test_log_tail_holds_the_last_lines_after_finish(queue, store, worker):
    claimed = start(queue, store, worker, "short")
    store.append_logs(claimed.id, claimed.lease_token, [("stdout", "only"), ("stderr", "two")])
    store.finish(claimed.id, claimed.lease_token, Exit(exit_code=0), actor=worker.actor)
    assert queue.get(claimed.id).log_tail == ["only", "two"]

    claimed = start(queue, store, worker, "long", max_attempts=1)
    store.append_logs(claimed.id, claimed.lease_token, [("stdout", f"l{i}") for i in range(50)])
    store.finish(claimed.id, claimed.lease_token, Exit(exit_code=1), actor=worker.actor)
    assert queue.get(claimed.id).log_tail == [f"l{i}" for i in range(30, 50)]


def test_a_nul_in_a_log_line_is_kept_readable(queue, store, worker):
    claimed = start(queue, store, worker)
    store.append_logs(claimed.id, claimed.lease_token, [("stdout", "a\x00b")])
    [line], _ = queue.logs(claimed.id)
    assert line.text == "a\ufffdb"


# -- progress, metrics, checkpoint -----------------------------------------------------------


def test_progress_and_checkpoint_show_on_the_job(queue, store, worker):
    claimed = start(queue, store, worker)
    assert queue.get(claimed.id).progress is None
    store.report_progress(
        claimed.id,
        claimed.lease_token,
        Progress(fraction=0.42, step=420, message="epoch 3", metrics={"loss": 1.93}),
    )
    store.report_checkpoint(claimed.id, claimed.lease_token, "/shared/ckpt/step-420", 420)
    job = queue.get(claimed.id)
    assert job.progress["fraction"] == 0.42
    assert job.progress["step"] == 420
    assert job.progress["message"] == "epoch 3"
    assert job.progress["metrics"] == {"loss": 1.93}
    assert job.progress["updated_at"]
    assert job.checkpoint["uri"] == "/shared/ckpt/step-420"
    assert job.checkpoint["step"] == 420
    assert job.checkpoint["at"]
    public = job.public()
    assert public["checkpoint"] == job.checkpoint
    assert public["worker"] == {"name": worker.name, "gpu_ids": [0]}
    # A newer checkpoint replaces it.
    store.report_checkpoint(claimed.id, claimed.lease_token, "/shared/ckpt/step-500", 500)
    assert queue.get(claimed.id).checkpoint["uri"] == "/shared/ckpt/step-500"


def test_metrics_points_come_from_reports_with_metrics(queue, store, worker):
    claimed = start(queue, store, worker)
    store.report_progress(claimed.id, claimed.lease_token, Progress(step=1, metrics={"loss": 3}))
    store.report_progress(claimed.id, claimed.lease_token, Progress(step=2, fraction=0.1))
    store.report_progress(
        claimed.id, claimed.lease_token, Progress(step=3, metrics={"loss": 2, "acc": 0.5})
    )
    points = queue.metrics(claimed.id)
    assert [(p.step, p.metrics) for p in points] == [
        (1, {"loss": 3}),
        (3, {"loss": 2, "acc": 0.5}),
    ]
    assert set(points[0].public()) == {"n", "step", "at", "metrics"}
    assert [p.n for p in points] == [1, 2]
    # A chart that has point 1 asks for what came after it.
    assert [p.step for p in queue.metrics(claimed.id, after=1)] == [3]
    assert queue.metrics(claimed.id, after=2) == []


def test_events_after_an_id_are_the_later_ones(queue):
    job = submit(queue, "evented", hold=True)
    queue.release(job.id, actor=OP)
    queue.pause(job.id, actor=OP)
    events = queue.events(job.id)
    assert [e.action for e in events] == ["submit", "release", "pause"]
    assert [e.id for e in events] == sorted(e.id for e in events)
    later = queue.events(job.id, after=events[0].id)
    assert [e.action for e in later] == ["release", "pause"]
    assert queue.events(job.id, after=events[-1].id) == []


def test_metrics_are_bounded_oldest_dropped_first(queue, settings, engine, worker):
    small = store_with(settings, engine, metrics_max_points=10)
    claimed = start(queue, small, worker)
    for step in range(1, 16):
        small.report_progress(
            claimed.id, claimed.lease_token, Progress(step=step, metrics={"s": step})
        )
    assert [p.step for p in queue.metrics(claimed.id)] == list(range(6, 16))
    assert [p.step for p in queue.metrics(claimed.id, limit=3)] == [13, 14, 15]
    assert count_rows(engine, "job_metrics", claimed.id) == 10


def test_metrics_are_trimmed_only_once_the_jobs_own_chart_is_full(queue, settings, engine, worker):
    # Points of other jobs must not count: many of them exist before this job reports.
    other_store = store_with(settings, engine, metrics_max_points=10)
    other = start(queue, other_store, worker, "busy")
    for step in range(1, 31):
        other_store.report_progress(
            other.id, other.lease_token, Progress(step=step, metrics={"s": step})
        )
    small = store_with(settings, engine, metrics_max_points=10)
    claimed = start(queue, small, worker, "watched")
    deletes: list[str] = []

    def seen(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("DELETE FROM JOB_METRICS"):
            deletes.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        for step in range(1, 11):
            small.report_progress(
                claimed.id, claimed.lease_token, Progress(step=step, metrics={"s": step})
            )
        assert deletes == []  # under the bound: no DELETE at all
        small.report_progress(claimed.id, claimed.lease_token, Progress(step=11, metrics={"s": 1}))
        assert len(deletes) == 1
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert count_rows(engine, "job_metrics", claimed.id) == 10
    assert [p.step for p in queue.metrics(claimed.id)] == list(range(2, 12))


def test_metrics_of_jobs_reporting_together_each_keep_their_bound(queue, settings, engine):
    small = store_with(settings, engine, metrics_max_points=10)
    worker = WorkerIdentity(name="w2", kinds=("train",), gpu_ids=(0, 1))
    small.heartbeat_worker(worker, free_gpus=2)
    first = start(queue, small, worker, "first")
    second = start(queue, small, worker, "second")
    for step in range(1, 16):
        for claimed in (first, second):
            small.report_progress(
                claimed.id, claimed.lease_token, Progress(step=step, metrics={"s": step})
            )
    for claimed in (first, second):
        assert [p.step for p in queue.metrics(claimed.id)] == list(range(6, 16))


# -- pruning ---------------------------------------------------------------------------------


def test_prune_deletes_only_finished_jobs_older_than_the_cut_off(queue, store, worker, engine):
    def finish(name, code):
        claimed = start(queue, store, worker, name, max_attempts=1)
        store.append_logs(claimed.id, claimed.lease_token, [("stdout", "hi")])
        store.report_progress(claimed.id, claimed.lease_token, Progress(step=1, metrics={"x": 1}))
        store.finish(claimed.id, claimed.lease_token, Exit(exit_code=code), actor=worker.actor)
        return claimed.id

    old_done, old_failed, recent = finish("old-done", 0), finish("old-failed", 1), finish("new", 0)
    old_cancelled = submit(queue, "old-cancelled")
    queue.cancel(old_cancelled.id, actor=OP)
    old_queued = submit(queue, "old-queued")
    old_paused = submit(queue, "old-paused")
    queue.pause(old_paused.id, actor=OP)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE jobs SET finished_at = now() - interval '40 days' WHERE id = ANY(:ids)"),
            {"ids": [old_done, old_failed, old_cancelled.id]},
        )
        conn.execute(
            text(
                "UPDATE jobs SET created_at = now() - interval '40 days',"
                " queued_at = now() - interval '40 days', updated_at = now() - interval '40 days'"
                " WHERE id = ANY(:ids)"
            ),
            {"ids": [old_queued.id, old_paused.id]},
        )
        conn.execute(
            text("UPDATE jobs SET finished_at = now() - interval '29 days' WHERE id = :id"),
            {"id": recent},
        )

    assert prune_finished(engine, older_than_seconds=30 * 86400) == 3
    left = {j.id for j in queue.list_jobs()[0]}
    assert left == {recent, old_queued.id, old_paused.id}
    for gone in (old_done, old_failed, old_cancelled.id):
        with pytest.raises(JobNotFound):
            queue.get(gone)
        for table in ("job_events", "job_logs", "job_metrics"):
            assert count_rows(engine, table, gone) == 0
    for table in ("job_events", "job_logs", "job_metrics"):
        assert count_rows(engine, table, recent) > 0
    assert prune_finished(engine, older_than_seconds=30 * 86400) == 0


def test_prune_works_through_more_than_one_batch(queue, engine):
    ids = []
    for i in range(5):
        job = submit(queue, f"j{i}")
        queue.cancel(job.id, actor=OP)
        ids.append(job.id)
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET finished_at = now() - interval '2 days'"))
    assert prune_finished(engine, older_than_seconds=86400, batch=2) == 5
    assert queue.list_jobs()[0] == []


# -- workers ---------------------------------------------------------------------------------


def test_workers_show_whether_they_are_alive_and_what_they_run(queue, store, worker, engine):
    devices = [
        {"id": i, "name": "H100", "utilization": 0, "memory_used": 0, "memory_total": 80}
        for i in range(4)
    ]
    store.heartbeat_worker(worker, free_gpus=4, devices=devices)
    first = start(queue, store, worker, "first")
    second = start(queue, store, worker, "second")
    store.heartbeat_worker(worker, free_gpus=2, devices=devices)
    stopped = WorkerIdentity(name="gpu-b", pools=("big",), kinds=("eval",), gpu_ids=(0,))
    store.heartbeat_worker(stopped, free_gpus=1)
    store.stop_worker(stopped)
    silent = WorkerIdentity(name="gpu-c", kinds=("train",), gpu_ids=())
    store.heartbeat_worker(silent, free_gpus=0)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE workers SET last_heartbeat_at = now() - interval '1 hour'"
                " WHERE name = 'gpu-c'"
            )
        )

    workers = {w.name: w for w in queue.workers()}
    assert list(workers) == ["gpu-a", "gpu-b", "gpu-c"]
    a = workers["gpu-a"]
    assert a.alive is True
    assert a.running_jobs == [first.id, second.id]
    public = a.public()
    assert set(public) == {
        "name",
        "hostname",
        "pools",
        "kinds",
        "gpus",
        "last_heartbeat_at",
        "alive",
        "running_jobs",
        "reservation",
    }
    assert public["reservation"] is None  # no scheduling pass has reserved it
    assert public["gpus"] == {"total": 4, "free": 2, "devices": devices}
    assert (public["pools"], public["kinds"]) == (["default"], ["train"])
    assert public["hostname"] == worker.hostname
    assert workers["gpu-b"].alive is False and workers["gpu-b"].running_jobs == []
    assert workers["gpu-c"].alive is False
    # Once a job ends it is no longer among the worker's running jobs.
    store.finish(first.id, first.lease_token, Exit(exit_code=0), actor=worker.actor)
    [a] = [w for w in queue.workers() if w.name == "gpu-a"]
    assert a.running_jobs == [second.id]
