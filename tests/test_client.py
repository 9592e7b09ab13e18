"""The Python client against a real API server: the Flask app served over HTTP on a
loopback port (auth on, real tokens) and a real PostgreSQL; a test thread plays the
worker through the core's store, so that waits and followed logs see real changes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from api import create_app
from jobqueue import api_models
from jobqueue.cli import main
from jobqueue.client import ApiError, Client, known_fields
from jobqueue.db import make_engine
from jobqueue.outcomes import Exit
from jobqueue.queue import JobQueue
from jobqueue.worker_store import WorkerIdentity, WorkerStore
from tests.helpers import make_settings

OPERATOR = "op-token"
TOKENS = f"nlp/alice:operator:{OPERATOR},ci:viewer:view-token"
JOB = {"name": "resnet", "kind": "train", "gpus": 0, "config": {"lr": 0.1}}


class Served:
    def __init__(self, url: str, queue: JobQueue, store: WorkerStore):
        self.url = url
        self.queue = queue
        self.store = store
        self.worker = WorkerIdentity(name="w1", kinds=("train",), gpu_ids=())
        store.heartbeat_worker(self.worker, free_gpus=0)

    def run_one(self, lines: list[str], exit_code: int = 0, pause: float = 0.3) -> threading.Thread:
        """In a thread: claim the next job, log ``lines`` slowly, then finish it."""

        def work() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                claimed = self.store.claim(self.worker, free_gpu_ids=[], slots=1)
                if claimed:
                    job = claimed[0].job
                    for line in lines:
                        time.sleep(pause)
                        self.store.append_logs(job.id, job.lease_token, [("stdout", line)])
                    self.store.finish(job.id, job.lease_token, Exit(exit_code=exit_code),
                                      actor=self.worker.actor)  # fmt: skip
                    return
                time.sleep(0.05)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def served(database_url) -> Iterator[Served]:
    settings = make_settings(database_url, api_tokens=TOKENS)
    engine = make_engine(database_url, pool_size=10)
    app = create_app(settings, engine=engine, background=False)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="client-api", daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_port}", JobQueue(engine, settings),
                     WorkerStore(engine, settings))  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        engine.dispose()


@pytest.fixture
def client(served) -> Iterator[Client]:
    with Client(served.url, token=OPERATOR, timeout=10) as c:
        yield c


def test_submit_get_list_and_every_action(client):
    job = client.submit(JOB)
    assert isinstance(job, api_models.Job) and job.status == "queued"
    assert (job.team, job.owner) == ("nlp", "alice")
    assert client.get(job.id).queue_position == 1
    held = client.submit({**JOB, "name": "later", "hold": True})
    assert [j.name for j in client.jobs(page_size=1)] == ["later", "resnet"]
    assert [j.name for j in client.jobs(status="pending")] == ["later"]
    assert client.force_start(held.id).forced
    assert client.patch(job.id, priority=90).priority == 90
    assert client.pause(job.id).status == "paused"
    assert client.resume(job.id).status == "queued"
    assert client.cancel(job.id).status == "cancelled"
    assert client.retry(job.id, from_checkpoint=False).status == "queued"
    assert client.mark_failed(job.id, "bad data").error_message == "bad data"
    assert client.release(client.submit({**JOB, "hold": True}).id).status == "queued"
    assert [e.action for e in client.events(job.id)] == [
        "submit", "patch", "pause", "resume", "cancel", "retry", "mark-failed"]  # fmt: skip
    assert {w.name for w in client.workers()} == {"w1"}
    assert "default" in client.queue().pools
    assert [t.name for t in client.teams()] == ["nlp"]


def test_errors_come_back_as_api_errors_with_code_and_details(client, served):
    job = client.submit(JOB)
    client.cancel(job.id)
    with pytest.raises(ApiError) as caught:
        client.pause(job.id)
    assert (caught.value.status, caught.value.code) == (409, "invalid_transition")
    assert caught.value.details["status"] == "cancelled"
    with pytest.raises(ApiError) as caught:
        Client(served.url, token="wrong").get(job.id)
    assert caught.value.status == 401
    with pytest.raises(ApiError) as caught:
        Client(served.url, token="view-token").submit(JOB)
    assert caught.value.code == "forbidden"
    # A body the models refuse never leaves the client.
    with pytest.raises(ValueError):
        client.submit({**JOB, "gpus": 65})


def test_wait_and_follow_logs_see_the_job_run_to_its_end(client, served):
    job = client.submit(JOB)
    worker = served.run_one(["epoch 1", "epoch 2", "epoch 3"])
    lines = [line.text for line in client.follow_logs(job.id, poll_seconds=0.1, timeout=20)]
    assert lines == ["epoch 1", "epoch 2", "epoch 3"]
    assert client.wait(job.id, timeout=10, poll_seconds=0.1).status == "completed"
    worker.join(10)
    other = client.submit({**JOB, "name": "slow"})
    with pytest.raises(TimeoutError):
        client.wait(other.id, timeout=0.3, poll_seconds=0.1)
    served.run_one([], pause=0).join(10)
    [done] = client.wait_all([other.id], timeout=10, poll_seconds=0.1)
    assert done.status == "completed"


def test_sweeps_through_the_client(client, served):
    done = client.submit_sweep({"name": "lr", "max_running": 1, "job": {**JOB, "config": {}},
                                "grid": {"lr": [0.1, 0.01]}})  # fmt: skip
    assert done.sweep.held == 1 and [j.index for j in done.jobs] == [0, 1]
    with pytest.raises(ApiError) as caught:
        client.submit_sweep({"name": "bad", "jobs": [JOB, {"name": "x", "kind": "no way"}]})
    assert caught.value.code == "invalid_items"
    assert [item["index"] for item in caught.value.details["items"]] == [1]
    assert client.patch_sweep(done.sweep.id, max_running=None).sweep.held == 0
    assert [s.id for s in client.sweeps()] == [done.sweep.id]
    table = client.sweep_jobs(done.sweep.id, descending=True)
    assert [row.config for row in table] == [{"lr": 0.01}, {"lr": 0.1}]
    for _ in range(2):
        served.run_one([], pause=0).join(10)
    assert client.wait_sweep(done.sweep.id, timeout=10, poll_seconds=0.1).counts["completed"] == 2
    outcome = client.act_on_sweep(done.sweep.id, "cancel")
    assert (outcome.changed, outcome.unchanged) == (0, 2)


def test_fields_a_newer_server_adds_are_ignored():
    answer: dict[str, Any] = {
        "items": [{"id": 1, "at": "2026-12-04T10:00:00+00:00", "from_status": None,
                   "to_status": "queued", "action": "submit", "actor": "a", "reason": None,
                   "new_field": 1}],
        "also_new": True,
    }  # fmt: skip
    events = api_models.EventList.model_validate(known_fields(api_models.EventList, answer))
    assert events.items[0].action == "submit"


def test_the_cli_job_commands_work_through_the_api_without_database_access(
    served, monkeypatch, tmp_path
):
    from jobqueue.settings import get_settings

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("JOBQUEUE_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    monkeypatch.setenv("JOBQUEUE_API_URL", served.url)
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(main, ["--token", OPERATOR, *args])
        assert result.exit_code == 0, result.output
        return result.output

    submitted = json.loads(cli("submit", "bert", "--kind", "train", "--gpus", "0"))
    assert (submitted["team"], submitted["owner"]) == ("nlp", "alice")
    job_id = submitted["id"]
    assert cli("ls").split()[:3] == [job_id, "queued", "#1"]
    assert json.loads(cli("show", job_id))["name"] == "bert"
    assert cli("pause", job_id).split() == [job_id, "paused"]
    assert cli("resume", job_id).split() == [job_id, "queued"]
    served.run_one(["hello", "world"], pause=0).join(10)
    assert cli("logs", job_id).splitlines() == ["hello", "world"]
    body = tmp_path / "sweep.json"
    body.write_text(json.dumps({"name": "s", "job": {"kind": "train", "gpus": 0},
                                "grid": {"lr": [1, 2]}}))  # fmt: skip
    sweep_id = cli("sweep", "submit", str(body)).split()[0]
    assert json.loads(cli("sweep", "show", sweep_id))["counts"]["queued"] == 2
    assert cli("teams").split()[0] == "nlp"  # a team with queued jobs
    assert [line.split()[0] for line in cli("sweep", "jobs", sweep_id).splitlines()] == ["0", "1"]
    assert "2 changed" in cli("sweep", "cancel", sweep_id)
    refused = runner.invoke(main, ["--token", OPERATOR, "cancel", job_id])
    assert refused.exit_code == 1 and "invalid_transition" in refused.output
