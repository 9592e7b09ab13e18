"""/api/sweeps through the Flask app and a real PostgreSQL: submit (sweep, grid, bulk),
per-item errors, idempotent repeats, the summary and table, bulk actions and team rules."""

from __future__ import annotations

from uuid import uuid4

import pytest

from api import create_app
from tests.helpers import Api, error_of, make_settings

ALICE = "alice-token"  # operator of team nlp
BOB = "bob-token"  # operator of team vision
VIEW = "view-token"
ROOT = "root-token"  # admin
TOKENS = f"nlp/alice:operator:{ALICE},vision/bob:operator:{BOB},viewer:{VIEW},ops/root:admin:{ROOT}"
JOB = {"kind": "train", "gpus": 0, "config": {"epochs": 2}}


@pytest.fixture
def sweeps_api(database_url, engine) -> Api:
    settings = make_settings(database_url, api_tokens=TOKENS)
    return Api(create_app(settings, engine=engine, background=False).test_client())


def submit(api: Api, body: dict, token: str = ALICE, status: int = 201) -> dict:
    response = api.request("POST", "/api/sweeps", json=body, token=token)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def test_a_sweep_submit_creates_every_job_and_answers_its_summary(sweeps_api):
    api = sweeps_api
    body = submit(api, {"name": "lr", "job": JOB, "configs": [{"lr": 0.1}, {"lr": 0.01}],
                        "max_running": 1, "objective": {"metric": "loss"}})  # fmt: skip
    sweep = body["sweep"]
    assert (sweep["name"], sweep["team"], sweep["owner"], sweep["job_count"]) == (
        "lr", "nlp", "alice", 2)  # fmt: skip
    assert sweep["counts"]["queued"] == 2 and sweep["held"] == 1
    assert sweep["objective"] == {"metric": "loss", "mode": "min"} and sweep["best"] is None
    assert [j["index"] for j in body["jobs"]] == [0, 1]
    first = api.request("GET", f"/api/training/{body['jobs'][0]['id']}", token=VIEW).get_json()
    assert (first["sweep_id"], first["sweep_index"], first["config"]) == (
        sweep["id"], 0, {"epochs": 2, "lr": 0.1})  # fmt: skip
    held = api.request("GET", f"/api/training/{body['jobs'][1]['id']}", token=VIEW).get_json()
    assert held["queue_position"] is None and "max_running" in held["waiting_reason"]
    got = api.request("GET", f"/api/sweeps/{sweep['id']}", token=VIEW).get_json()
    assert got["counts"] == sweep["counts"]
    listed = api.request("GET", "/api/sweeps", token=VIEW).get_json()
    assert [s["id"] for s in listed["items"]] == [sweep["id"]]


def test_invalid_items_answer_400_with_each_items_errors_and_write_nothing(sweeps_api):
    api = sweeps_api
    jobs = [{"name": "a", **JOB}, {"name": "b", "kind": "x y"}, {"name": "c", **JOB, "gpus": -1}]
    response = api.request("POST", "/api/sweeps", json={"name": "bulk", "jobs": jobs}, token=ALICE)
    error = error_of(response, 400, "invalid_items")
    assert [item["index"] for item in error["details"]["items"]] == [1, 2]
    assert error["details"]["items"][1]["errors"][0]["field"] == "gpus"
    assert api.count_jobs() == 0
    for bad in ({"name": "x", "job": JOB}, {"name": "x", "job": JOB, "configs": [], "extra": 1},
                {"name": "x", "job": JOB, "grid": {"a": list(range(10_001))}}):  # fmt: skip
        error_of(api.request("POST", "/api/sweeps", json=bad, token=ALICE), 400, "invalid")


def test_a_repeated_key_answers_200_with_the_same_sweep_and_another_body_409(sweeps_api):
    api = sweeps_api
    body = {"name": "s", "job": JOB, "grid": {"lr": [1, 2]}, "idempotency_key": "k1"}
    first = submit(api, body)
    again = submit(api, body, status=200)
    assert again["sweep"]["id"] == first["sweep"]["id"]
    assert [j["id"] for j in again["jobs"]] == [j["id"] for j in first["jobs"]]
    changed = {**body, "grid": {"lr": [1, 2, 3]}}
    response = api.request("POST", "/api/sweeps", json=changed, token=ALICE)
    assert error_of(response, 409, "idempotency_conflict")["details"]["id"] == first["sweep"]["id"]
    assert api.count_jobs() == 2


def test_bulk_submit_keys_each_item(sweeps_api):
    api = sweeps_api
    jobs = [{"name": f"j{i}", **JOB, "idempotency_key": f"item-{i}"} for i in range(3)]
    first = submit(api, {"name": "bulk", "jobs": jobs})
    again = submit(api, {"name": "bulk again", "jobs": [*jobs, {"name": "new", **JOB}]})
    assert [j["created"] for j in again["jobs"]] == [False, False, False, True]
    assert [j["id"] for j in again["jobs"][:3]] == [j["id"] for j in first["jobs"]]
    assert again["sweep"]["job_count"] == 1 and api.count_jobs() == 4


def test_bulk_actions_and_the_table(sweeps_api):
    api = sweeps_api
    sweep = submit(api, {"name": "g", "job": JOB, "grid": {"lr": [1, 2, 3]}})["sweep"]
    base = f"/api/sweeps/{sweep['id']}"
    paused = api.request("POST", f"{base}/pause", token=ALICE).get_json()
    assert (paused["changed"], paused["sweep"]["counts"]["paused"]) == (3, 3)
    resumed = api.request("POST", f"{base}/resume", json={}, token=ALICE).get_json()
    assert resumed["sweep"]["counts"]["queued"] == 3
    patched = api.request("PATCH", base, json={"priority": 80, "max_running": 2}, token=ALICE)
    assert patched.get_json()["sweep"]["held"] == 1
    cancelled = api.request("POST", f"{base}/cancel", json={"reason": "done"}, token=ALICE)
    assert cancelled.get_json()["sweep"]["counts"]["cancelled"] == 3
    retried = api.request("POST", f"{base}/retry", json={"from_checkpoint": False}, token=ALICE)
    assert retried.get_json()["changed"] == 0  # only failed jobs are retried
    table = api.request("GET", f"{base}/jobs", query={"sort": "index", "order": "desc"},
                        token=VIEW).get_json()  # fmt: skip
    assert [r["sweep_index"] for r in table["items"]] == [2, 1, 0]
    assert table["items"][0]["config"] == {"epochs": 2, "lr": 3}
    error_of(api.request("GET", f"{base}/jobs", query={"sort": "metric"}, token=VIEW), 400,
             "invalid")  # fmt: skip
    error_of(api.request("GET", f"{base}/jobs", query={"sort": "x"}, token=VIEW), 400, "invalid")
    error_of(api.request("POST", f"{base}/explode", token=ALICE), 404, "not_found")


def test_team_rules_and_unknown_sweeps(sweeps_api):
    api = sweeps_api
    sweep = submit(api, {"name": "nlp", "job": JOB, "configs": [{}]})["sweep"]
    base = f"/api/sweeps/{sweep['id']}"
    error_of(api.request("POST", f"{base}/cancel", token=BOB), 403, "forbidden")
    error_of(api.request("PATCH", base, json={"priority": 1}, token=BOB), 403, "forbidden")
    error_of(api.request("POST", base + "/pause", token=VIEW), 403, "forbidden")
    assert api.request("POST", f"{base}/pause", token=ROOT).status_code == 200
    body = {"name": "v", "job": JOB, "configs": [{}], "team": "vision"}
    error_of(api.request("POST", "/api/sweeps", json=body, token=ALICE), 403, "forbidden")
    assert submit(api, body, token=ROOT)["sweep"]["team"] == "vision"
    error_of(api.request("GET", f"/api/sweeps/{uuid4()}", token=VIEW), 404, "not_found")
    error_of(api.request("GET", "/api/sweeps/nope", token=VIEW), 400, "bad_id")


def test_a_sweep_of_10000_jobs_is_one_request_over_the_usual_body_limit(sweeps_api):
    """The size limit, not a timing target (benchmarks/sweep_bench.py measures speed):
    10,000 configs in one body over the routes' usual 1 MiB, accepted and all created."""
    api = sweeps_api
    configs = [{"lr": i / 10_000, "seed": i, "tag": "x" * 100} for i in range(10_000)]
    body = submit(api, {"name": "big", "job": JOB, "configs": configs})
    assert len(body["jobs"]) == 10_000 and api.count_jobs() == 10_000
    cancel = api.request("POST", f"/api/sweeps/{body['sweep']['id']}/cancel", token=ALICE)
    assert cancel.get_json()["changed"] == 10_000
