"""The REST API contract of SPEC §3, through the Flask test client, on a real database.

Every response goes through :class:`tests.apiclient.Api`, which fails the test on
any 5xx, on a non-JSON answer under ``/api`` and on an error body that is not
``{"error": {"code", "message", "details"}}``. Job objects are validated against
the published response models (``api.schemas``).
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text

from api import create_app
from jobqueue import api_models as schemas
from jobqueue.db import make_engine
from jobqueue.errors import SchemaNotAtHead
from jobqueue.outcomes import Exit
from jobqueue.records import PUBLIC_FIELDS
from jobqueue.worker_store import Progress
from tests.helpers import (
    ADMIN,
    OPERATOR,
    VIEWER,
    Api,
    bearer,
    error_of,
    job_of,
    make_settings,
    run_job,
)

MISSING_ID = "00000000-0000-4000-8000-000000000000"
STATUSES = ("pending", "queued", "running", "paused", "completed", "failed", "cancelled")


def aware(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value} has no time zone"
    return parsed


def make_job(api: Api, store, worker, status: str, **overrides) -> dict:
    """A job in ``status``, made the way a user and a worker would."""
    if status == "pending":
        return api.submit(hold=True, **overrides)
    if status == "queued":
        return api.submit(**overrides)
    if status in ("running", "completed"):
        job, token = run_job(api, store, worker, **overrides)
        if status == "completed":
            store.finish(UUID(job["id"]), token, Exit(exit_code=0), actor=worker.actor)
            job = api.job(job["id"])
        assert job["status"] == status
        return job
    job = api.submit(**overrides)
    action, body = {
        "paused": ("pause", {}),
        "failed": ("mark-failed", {"reason": "bad data"}),
        "cancelled": ("cancel", {}),
    }[status]
    done = job_of(api.act(job["id"], action, body), 200)
    assert done["status"] == status
    return done


# -- submit and read ---------------------------------------------------------------------------


def test_submit_answers_201_with_the_full_job_object_and_defaults(api, worker):
    response = api.post(
        "/api/training", json={"name": "resnet-50", "kind": "train", "config": {"lr": 0.1}}
    )
    job = job_of(response, 201)
    assert list(job) == list(PUBLIC_FIELDS)
    UUID(job["id"])
    assert job["name"] == "resnet-50" and job["kind"] == "train"
    assert job["config"] == {"lr": 0.1}
    assert job["status"] == "queued"
    assert (job["pool"], job["gpus"], job["priority"]) == ("default", 1, 50)
    assert (job["max_attempts"], job["max_interruptions"]) == (3, 10)
    assert (job["attempt"], job["interruptions"]) == (1, 0)
    assert job["forced"] is False and job["queue_position"] == 1
    assert job["waiting_reason"]
    assert job["requested_action"] is None and job["worker"] is None
    for field in ("created_at", "queued_at", "updated_at"):
        aware(job[field])
    assert job["started_at"] is None and job["finished_at"] is None
    assert api.job(job["id"]) == job


def test_submit_takes_every_documented_field(api):
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    body = {
        "name": "bert",
        "kind": "fine-tune.v2",
        "config": {"layers": [1, 2], "opt": {"name": "adam"}},
        "gpus": 0,
        "pool": "big-gpus",
        "priority": 100,
        "max_attempts": 100,
        "max_interruptions": 0,
        "max_runtime_seconds": 7200,
        "team": "default",
        "not_before": later,
        "idempotency_key": "k" * 200,
    }
    job = job_of(api.post("/api/training", json=body), 201)
    for field, value in body.items():
        if field != "not_before":
            assert job[field] == value, field
    assert aware(job["not_before"]) == datetime.fromisoformat(later)
    assert job["queue_position"] is None  # not claimable before not_before
    assert "not before" in job["waiting_reason"]


def test_a_job_without_a_time_limit_takes_its_pools_default(database_url, engine):
    settings = make_settings(database_url, pool_max_runtime_seconds={"a100": 86400})
    api = Api(create_app(settings, engine=engine, background=False).test_client())
    assert api.submit(pool="a100")["max_runtime_seconds"] == 86400
    assert api.submit(pool="a100", max_runtime_seconds=60)["max_runtime_seconds"] == 60
    assert api.submit(pool="other")["max_runtime_seconds"] is None


def test_config_comes_back_exactly_as_submitted_whatever_its_numbers_and_text(api):
    # Integers beyond 64 bits are more than the fast encoder takes; they must still come
    # back exact (not as floats, not as a 500), in the submit answer, a GET and a list.
    config = {
        "seed": 2**70,
        "offset": -(2**65),
        "lr": 1e-300,
        "label": "modèle ✓ 模型",
        "nested": [{"n": 2**64 - 1}, None, True],
    }
    response = api.post("/api/training", json={"name": "exact", "kind": "t", "config": config})
    created = job_of(response, 201)
    got = api.get(f"/api/training/{created['id']}")
    listed = api.get("/api/training").get_json()["items"]
    for job in (created, json.loads(got.get_data()), listed[0]):
        assert job["config"] == config
        assert isinstance(job["config"]["seed"], int)
    assert got.headers["Content-Type"] == "application/json"


def test_held_job_is_pending_outside_the_queue(api):
    job = api.submit(hold=True)
    assert job["status"] == "pending"
    assert job["queue_position"] is None
    assert "held" in job["waiting_reason"]
    queue = api.get("/api/queue").get_json()
    assert queue == {"pools": {}}


def test_repeated_idempotency_key_answers_200_with_the_same_job(api):
    body = {"name": "a", "kind": "train", "config": {"x": 1}, "idempotency_key": "run-7"}
    first = job_of(api.post("/api/training", json=body), 201)
    again = job_of(api.post("/api/training", json=body), 200)
    assert again["id"] == first["id"]
    items = api.get("/api/training").get_json()["items"]
    assert [j["id"] for j in items] == [first["id"]]
    events = api.get(f"/api/training/{first['id']}/events").get_json()["items"]
    assert [e["action"] for e in events] == ["submit"]


def test_idempotency_key_with_another_body_is_409_idempotency_conflict(api):
    body = {"name": "a", "kind": "train", "config": {"x": 1}, "idempotency_key": "run-7"}
    first = job_of(api.post("/api/training", json=body), 201)
    changed = {**body, "config": {"x": 2}}
    error = error_of(api.post("/api/training", json=changed), 409, "idempotency_conflict")
    assert error["details"]["id"] == first["id"]
    assert len(api.get("/api/training").get_json()["items"]) == 1


LATER = "2999-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"name": "a", "kind": "train", "colour": "red"}, id="unknown-field"),
        pytest.param({"kind": "train"}, id="missing-name"),
        pytest.param({"name": "a"}, id="missing-kind"),
        pytest.param({"name": 5, "kind": "train"}, id="name-not-a-string"),
        pytest.param({"name": "a", "kind": "train", "gpus": "2"}, id="gpus-as-string"),
        pytest.param({"name": "a", "kind": "train", "gpus": 1.5}, id="gpus-as-float"),
        pytest.param({"name": "a", "kind": "train", "hold": "yes"}, id="hold-not-bool"),
        pytest.param({"name": "a", "kind": "train", "config": [1]}, id="config-not-object"),
        pytest.param({"name": "a", "kind": "train", "config": "{}"}, id="config-as-string"),
        pytest.param({"name": "", "kind": "train"}, id="empty-name"),
        pytest.param({"name": "n" * 201, "kind": "train"}, id="name-too-long"),
        pytest.param({"name": "a", "kind": "rm -rf"}, id="kind-bad-characters"),
        pytest.param({"name": "a", "kind": "k" * 101}, id="kind-too-long"),
        pytest.param({"name": "a", "kind": "train", "pool": "a b"}, id="pool-bad-characters"),
        pytest.param({"name": "a", "kind": "train", "gpus": -1}, id="gpus-below-0"),
        pytest.param({"name": "a", "kind": "train", "gpus": 65}, id="gpus-over-64"),
        pytest.param({"name": "a", "kind": "train", "priority": 101}, id="priority-over-100"),
        pytest.param({"name": "a", "kind": "train", "max_attempts": 0}, id="max-attempts-0"),
        pytest.param({"name": "a", "kind": "train", "max_attempts": 101}, id="max-attempts-101"),
        pytest.param(
            {"name": "a", "kind": "train", "max_interruptions": 1001}, id="max-interruptions"
        ),
        pytest.param({"name": "a", "kind": "train", "max_runtime_seconds": 0}, id="runtime-zero"),
        pytest.param(
            {"name": "a", "kind": "train", "max_runtime_seconds": "1h"}, id="runtime-text"
        ),
        pytest.param(
            {"name": "a", "kind": "train", "idempotency_key": "k" * 201}, id="idempotency-key-long"
        ),
        pytest.param(
            {"name": "a", "kind": "train", "not_before": "2030-01-01T00:00:00"}, id="naive-datetime"
        ),
        pytest.param({"name": "a", "kind": "train", "not_before": "tomorrow"}, id="not-a-date"),
        pytest.param(
            {"name": "a", "kind": "train", "not_before": 1900000000}, id="not-before-as-number"
        ),
        pytest.param(
            {"name": "a", "kind": "train", "not_before": "1900000000"}, id="not-before-unix-text"
        ),
        pytest.param(
            {"name": "a", "kind": "train", "not_before": "0001-01-01T00:00:00+14:00"},
            id="not-before-before-year-1",
        ),
        pytest.param(
            {"name": "a", "kind": "train", "not_before": "9999-12-31T23:00:00-05:00"},
            id="not-before-after-year-9999",
        ),
        pytest.param({"name": "a\x00b", "kind": "train"}, id="nul-in-name"),
        pytest.param({"name": "a", "kind": "train", "config": {"k": "\x00"}}, id="nul-in-config"),
        pytest.param({"name": "a", "kind": "train", "config": {"\x00": 1}}, id="nul-in-config-key"),
        pytest.param(
            {"name": "a", "kind": "train", "idempotency_key": "\x00"}, id="nul-in-idempotency-key"
        ),
    ],
)
def test_submit_refuses_bad_input_with_400(shared_api, body):
    api = shared_api
    before = api.count_jobs()
    error = error_of(api.post("/api/training", json=body), 400)
    assert error["code"] in ("invalid", "bad_json")
    assert api.count_jobs() == before


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"name": "a", "kind": ', id="truncated"),
        pytest.param(b"{'name': 'a'}", id="single-quotes"),
        pytest.param(b"\xff\xfe{", id="not-utf8"),
        pytest.param(b'{"name": "a", "kind": "train", "config": {"x": NaN}}', id="nan"),
        pytest.param(b'{"name": "a", "kind": "train", "config": {"x": -Infinity}}', id="inf"),
        pytest.param(b'{"name": "a", "kind": "train", "config": {"x": 1e400}}', id="overflow"),
    ],
)
def test_malformed_json_is_400_bad_json(shared_api, raw):
    api = shared_api
    before = api.count_jobs()
    response = api.post("/api/training", data=raw, content_type="application/json")
    error_of(response, 400, "bad_json")
    assert api.count_jobs() == before


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[]", id="array"),
        pytest.param(b'"job"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-100000-deep"),
        pytest.param(
            b'{"name": "a", "kind": "train", "config": '
            + b'{"a": ' * 200
            + b"1"
            + b"}" * 200
            + b"}",
            id="config-200-deep",
        ),
    ],
)
def test_a_body_that_is_not_a_usable_object_is_400(shared_api, raw):
    api = shared_api
    before = api.count_jobs()
    response = api.post("/api/training", data=raw, content_type="application/json")
    error_of(response, 400)
    assert api.count_jobs() == before


def test_config_over_256_kib_is_400_config_too_large(shared_api):
    api = shared_api
    big = {"blob": "x" * (256 * 1024)}
    error = error_of(api.post("/api/training", json={"name": "a", "kind": "t", "config": big}), 400)
    assert error["code"] == "config_too_large"
    just_fits = {"blob": "x" * (256 * 1024 - 20)}
    job = api.submit(config=just_fits)
    assert api.job(job["id"])["config"] == just_fits


def test_body_over_1_mib_is_413(shared_api):
    api = shared_api
    before = api.count_jobs()
    body = json.dumps({"name": "a", "kind": "train", "config": {"x": "y" * (1024 * 1024)}})
    response = api.post("/api/training", data=body, content_type="application/json")
    error_of(response, 413)
    assert api.count_jobs() == before


def test_body_that_is_not_json_is_415(shared_api):
    api = shared_api
    before = api.count_jobs()
    response = api.post(
        "/api/training", data='{"name": "a", "kind": "train"}', content_type="text/plain"
    )
    error = error_of(response, 415, "unsupported_media_type")
    assert api.count_jobs() == before
    assert "application/json" in error["message"]
    job = api.submit()
    response = api.post(
        f"/api/training/{job['id']}/pause", data="please", content_type="text/plain"
    )
    error_of(response, 415)
    assert api.job(job["id"])["status"] == "queued"


# -- auth --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/training"),
        ("GET", f"/api/training/{MISSING_ID}"),
        ("POST", "/api/training"),
        ("POST", f"/api/training/{MISSING_ID}/force-start"),
        ("GET", "/api/queue"),
        ("GET", "/api/workers"),
        ("GET", "/api/openapi.json"),
        ("POST", "/api/admin/prune"),
    ],
)
def test_no_token_or_a_wrong_token_is_401(shared_api, method, path):
    api = shared_api
    for headers in ({}, bearer("not-a-token"), {"Authorization": f"Basic {OPERATOR}"}, bearer("")):
        response = api.request(method, path, token=None, headers=headers, json={})
        error = error_of(response, 401, "unauthorized")
        assert OPERATOR not in json.dumps(error) and "not-a-token" not in json.dumps(error)


def test_viewer_reads_but_cannot_change_anything(shared_api):
    api = shared_api
    job = api.submit()
    before = api.count_jobs()
    assert api.get("/api/training", token=VIEWER).status_code == 200
    assert api.get(f"/api/training/{job['id']}/events", token=VIEWER).status_code == 200
    for path in (
        "/api/training",
        f"/api/training/{job['id']}/force-start",
        f"/api/training/{job['id']}/cancel",
    ):
        body = {"name": "b", "kind": "train"} if path == "/api/training" else {}
        error = error_of(api.post(path, token=VIEWER, json=body), 403, "forbidden")
        assert VIEWER not in json.dumps(error)
    error_of(api.patch(f"/api/training/{job['id']}", token=VIEWER, json={"priority": 1}), 403)
    after = api.job(job["id"])
    assert (after["status"], after["forced"], after["priority"]) == ("queued", False, 50)
    assert api.count_jobs() == before


def test_prune_is_for_admins_only(api, worker, store):
    done = make_job(api, store, worker, "completed")
    error_of(api.post("/api/admin/prune", token=OPERATOR), 403, "forbidden")
    error_of(api.post("/api/admin/prune", token=VIEWER), 403, "forbidden")
    response = api.post("/api/admin/prune", token=ADMIN, query={"older_than_days": 0})
    assert response.status_code == 200
    assert schemas.Pruned.model_validate(response.get_json()).deleted == 1
    error_of(api.get(f"/api/training/{done['id']}"), 404, "not_found")
    error_of(api.post("/api/admin/prune", token=ADMIN, query={"older_than_days": -1}), 400)


def test_admin_may_do_what_an_operator_does(shared_api):
    api = shared_api
    job = api.submit()
    assert job_of(api.act(job["id"], "force-start", token=ADMIN), 200)["forced"] is True


def test_probes_need_no_token(shared_api):
    api = shared_api
    for path in ("/healthz", "/readyz", "/metrics"):
        assert api.get(path, token=None).status_code == 200, path


def test_auth_off_needs_no_token(database_url, engine):
    settings = make_settings(database_url, auth="off", api_tokens="")
    app = create_app(settings, engine=engine, background=False)
    api = Api(app.test_client())
    job = job_of(api.post("/api/training", token=None, json={"name": "a", "kind": "t"}), 201)
    assert job_of(api.post(f"/api/training/{job['id']}/force-start", token=None), 200)["forced"]
    assert api.get("/api/training", token=None).status_code == 200
    assert api.post("/api/admin/prune", token=None).status_code == 200


def test_auth_on_without_tokens_refuses_to_start(database_url, engine):
    with pytest.raises(ValueError, match="JOBQUEUE_API_TOKENS"):
        create_app(make_settings(database_url, api_tokens=""), engine=engine, background=False)


def test_events_record_the_token_name_or_else_its_role(database_url, engine):
    tokens = "operator:op-token,ci:operator:ci-token,admin:admin-token"
    settings = make_settings(database_url, api_tokens=tokens)
    app = create_app(settings, engine=engine, background=False)
    api = Api(app.test_client())
    job = job_of(api.post("/api/training", token="ci-token", json={"name": "a", "kind": "t"}))
    api.act(job["id"], "force-start", token="op-token")
    api.act(job["id"], "pause", {"reason": "maintenance"}, token="admin-token")
    events = api.get(f"/api/training/{job['id']}/events", token="ci-token").get_json()["items"]
    assert [(e["action"], e["actor"]) for e in events] == [
        ("submit", "ci"),
        ("force-start", "operator"),
        ("pause", "admin"),
    ]
    assert events[-1]["reason"] == "maintenance"


# -- 404, 405, bad ids ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"priority": 1}),
        ("GET", "/events", None),
        ("GET", "/logs", None),
        ("GET", "/metrics", None),
        ("POST", "/release", None),
        ("POST", "/force-start", None),
        ("POST", "/pause", None),
        ("POST", "/resume", None),
        ("POST", "/cancel", {"force": True}),
        ("POST", "/mark-failed", {"reason": "x"}),
        ("POST", "/retry", None),
    ],
)
def test_unknown_job_is_404_and_malformed_id_is_400(shared_api, method, suffix, body):
    api = shared_api
    kwargs = {} if body is None else {"json": body}
    error = error_of(api.request(method, f"/api/training/{MISSING_ID}{suffix}", **kwargs), 404)
    assert error["code"] == "not_found" and error["details"]["id"] == MISSING_ID
    for bad in ("12345", "not-a-uuid", "%00"):
        error_of(api.request(method, f"/api/training/{bad}{suffix}", **kwargs), 400, "bad_id")


def test_unknown_route_under_api_is_json_404_never_html(shared_api):
    api = shared_api
    for path in ("/api/nope", "/api/training/x/y/z", "/api"):
        response = api.get(path, headers={"Accept": "text/html"})
        error = error_of(response, 404, "not_found")
        assert "<" not in error["message"]


def test_wrong_method_is_json_405(shared_api):
    api = shared_api
    job = api.submit()
    error = error_of(api.request("DELETE", f"/api/training/{job['id']}"), 405)
    assert error["code"] == "method_not_allowed"
    assert "GET" in error["details"]["allowed"] and "PATCH" in error["details"]["allowed"]
    error_of(api.request("PUT", "/api/training", json={}), 405, "method_not_allowed")
    error_of(api.request("GET", f"/api/training/{job['id']}/cancel"), 405)
    assert api.job(job["id"])["status"] == "queued"


# -- force-start -------------------------------------------------------------------------------


def positions(api: Api, pool: str = "default") -> list[tuple[str, int, bool]]:
    entries = api.get("/api/queue").get_json()["pools"].get(pool, [])
    return [(e["name"], e["position"], e["forced"]) for e in entries]


def test_force_start_of_a_pending_job_queues_it_forced_ahead_of_everyone(api):
    api.submit(name="urgent-old", priority=100)
    api.submit(name="normal")
    held = api.submit(name="held", hold=True, priority=0)
    job = job_of(api.act(held["id"], "force-start"), 200)
    assert job["status"] == "queued" and job["forced"] is True
    assert job["queue_position"] == 1
    assert aware(job["queued_at"]) > aware(held["queued_at"])  # joins the queue now
    assert positions(api) == [("held", 1, True), ("urgent-old", 2, False), ("normal", 3, False)]


def test_force_start_of_a_queued_job_moves_it_ahead_of_every_non_forced_job(api):
    first = api.submit(name="first", priority=100)
    second = api.submit(name="second", priority=90)
    last = api.submit(name="last", priority=0)
    assert last["queue_position"] == 3
    job = job_of(api.act(last["id"], "force-start", {}), 200)
    assert (job["status"], job["forced"], job["queue_position"]) == ("queued", True, 1)
    assert job["queued_at"] == last["queued_at"]
    assert api.job(first["id"])["queue_position"] == 2
    assert api.job(second["id"])["queue_position"] == 3
    events = api.get(f"/api/training/{last['id']}/events").get_json()["items"]
    assert events[-1] | {"at": None, "id": None} == {
        "id": None,
        "at": None,
        "from_status": "queued",
        "to_status": "queued",
        "action": "force-start",
        "actor": "operator",
        "reason": None,
    }


def test_a_later_forced_job_waits_behind_the_earlier_forced_one(api):
    api.submit(name="a", priority=100)
    b = api.submit(name="b")
    c = api.submit(name="c", priority=0)
    assert job_of(api.act(b["id"], "force-start"))["queue_position"] == 1
    later = job_of(api.act(c["id"], "force-start"), 200)
    assert (later["forced"], later["queue_position"]) == (True, 2)
    assert positions(api) == [("b", 1, True), ("c", 2, True), ("a", 3, False)]
    # Repeating force-start changes nothing: neither job overtakes the other.
    assert job_of(api.act(c["id"], "force-start"), 200)["queue_position"] == 2
    assert job_of(api.act(b["id"], "force-start"), 200)["queue_position"] == 1
    assert positions(api) == [("b", 1, True), ("c", 2, True), ("a", 3, False)]


def test_force_start_clears_not_before(api):
    job = api.submit(not_before=LATER)
    assert job["queue_position"] is None
    forced = job_of(api.act(job["id"], "force-start"), 200)
    assert forced["not_before"] is None and forced["queue_position"] == 1


@pytest.mark.parametrize("status", ["running", "paused", "completed", "failed", "cancelled"])
def test_force_start_is_409_for_a_job_that_is_not_waiting(api, store, worker, status):
    job = make_job(api, store, worker, status)
    error = error_of(api.act(job["id"], "force-start"), 409, "invalid_transition")
    assert error["details"]["status"] == status
    assert error["details"]["action"] == "force-start"
    assert error["details"]["id"] == job["id"]
    after = api.job(job["id"])
    assert after["status"] == status and after["forced"] is False


def test_force_start_of_unknown_or_malformed_id(shared_api):
    api = shared_api
    error_of(api.act(MISSING_ID, "force-start"), 404, "not_found")
    error_of(api.act("job-1", "force-start"), 400, "bad_id")


# -- actions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "body", "requested"),
    [
        ("pause", None, "pause"),
        ("pause", {"reason": "need the GPUs"}, "pause"),
        ("cancel", {}, "cancel"),
        ("cancel", {"force": True}, "cancel"),
        ("mark-failed", {"reason": "diverged"}, "fail"),
    ],
)
def test_action_on_a_running_job_is_202_and_a_request(api, store, worker, action, body, requested):
    job, _ = run_job(api, store, worker)
    kwargs = {} if body is None else {"body": body}
    answered = job_of(api.act(job["id"], action, **kwargs), 202)
    assert answered["status"] == "running"
    assert answered["requested_action"] == requested
    assert api.job(job["id"])["requested_action"] == requested
    event = api.get(f"/api/training/{job['id']}/events").get_json()["items"][-1]
    assert (event["from_status"], event["to_status"], event["action"]) == (
        "running",
        "running",
        action,
    )
    assert event["actor"] == "operator"


def test_second_cancel_of_a_running_job_is_still_202(api, store, worker):
    job, _ = run_job(api, store, worker)
    job_of(api.act(job["id"], "cancel"), 202)
    again = job_of(api.act(job["id"], "cancel"), 202)
    assert again["requested_action"] == "cancel" and again["status"] == "running"
    error = error_of(api.act(job["id"], "pause"), 409, "invalid_transition")
    assert error["details"] == {"status": "running", "action": "pause", "id": job["id"]}


def test_pause_and_resume_of_a_queued_job_keep_its_place(api):
    first = api.submit(name="first")
    api.submit(name="second")
    paused = job_of(api.act(first["id"], "pause"), 200)
    assert paused["status"] == "paused" and paused["queue_position"] is None
    assert positions(api) == [("second", 1, False)]
    resumed = job_of(api.act(first["id"], "resume", {}), 200)
    assert resumed["status"] == "queued"
    assert resumed["queued_at"] == first["queued_at"]
    assert resumed["queue_position"] == 1
    error = error_of(api.act(first["id"], "resume"), 409, "invalid_transition")
    assert error["details"]["status"] == "queued" and error["details"]["action"] == "resume"


def test_release_queues_a_held_job_and_is_409_otherwise(api):
    held = api.submit(hold=True)
    released = job_of(api.act(held["id"], "release"), 200)
    assert released["status"] == "queued" and released["forced"] is False
    assert released["queue_position"] == 1
    error = error_of(api.act(held["id"], "release"), 409, "invalid_transition")
    assert error["details"]["status"] == "queued" and error["details"]["action"] == "release"


def test_cancel_and_mark_failed_of_waiting_jobs_end_them_at_once(api):
    a, b = api.submit(name="a"), api.submit(name="b", hold=True)
    cancelled = job_of(api.act(a["id"], "cancel", {"reason": "wrong data"}), 200)
    assert cancelled["status"] == "cancelled"
    assert cancelled["termination_reason"] == "cancelled"
    aware(cancelled["finished_at"])
    failed = job_of(api.act(b["id"], "mark-failed", {"reason": "bad config"}), 200)
    assert failed["status"] == "failed"
    assert failed["termination_reason"] == "marked_failed"
    assert failed["error_message"] == "bad config"
    error = error_of(api.act(a["id"], "cancel"), 409, "invalid_transition")
    assert error["details"]["status"] == "cancelled" and error["details"]["action"] == "cancel"


@pytest.mark.parametrize(
    "body",
    [None, {}, {"reason": ""}, {"reason": "r" * 501}, {"reason": 5}, {"reason": "x", "y": 1}],
)
def test_mark_failed_needs_a_reason_of_1_to_500_chars(shared_api, body):
    api = shared_api
    job = api.submit()
    kwargs = {} if body is None else {"body": body}
    error_of(api.act(job["id"], "mark-failed", **kwargs), 400)
    assert api.job(job["id"])["status"] == "queued"


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("cancel", {"force": "yes"}),
        ("cancel", {"kill": True}),
        ("pause", {"reason": 1}),
        ("force-start", {"priority": 1}),
        ("retry", {"from_checkpoint": "no"}),
        ("release", []),
    ],
)
def test_action_bodies_are_validated(shared_api, action, body):
    api = shared_api
    job = api.submit()
    error_of(api.act(job["id"], action, body), 400)
    after = api.job(job["id"])
    assert (after["status"], after["forced"]) == ("queued", False)


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_retry_queues_a_fresh_attempt(api, store, worker, status):
    job = make_job(api, store, worker, status)
    retried = job_of(api.act(job["id"], "retry", {"from_checkpoint": False}), 200)
    assert retried["status"] == "queued" and retried["attempt"] == 1
    assert retried["termination_reason"] is None and retried["finished_at"] is None
    assert retried["queue_position"] == 1


@pytest.mark.parametrize("status", ["queued", "running", "completed"])
def test_retry_is_409_unless_failed_or_cancelled(api, store, worker, status):
    job = make_job(api, store, worker, status)
    error = error_of(api.act(job["id"], "retry"), 409, "invalid_transition")
    assert error["details"]["status"] == status and error["details"]["action"] == "retry"


def test_retry_from_checkpoint_keeps_the_checkpoint(api, store, worker):
    job, token = run_job(api, store, worker)
    store.report_checkpoint(UUID(job["id"]), token, "/ckpt/step-10", 10)
    store.finish(UUID(job["id"]), token, Exit(exit_code=1), actor=worker.actor)
    api.act(job["id"], "mark-failed", {"reason": "stop retrying"})
    retried = job_of(api.act(job["id"], "retry"), 200)
    assert retried["checkpoint"]["uri"] == "/ckpt/step-10"
    assert retried["checkpoint"]["step"] == 10


# -- PATCH -------------------------------------------------------------------------------------


def test_patch_changes_priority_and_pool_and_keeps_queued_at(api):
    a = api.submit(name="a")
    b = api.submit(name="b")
    patched = job_of(api.patch(f"/api/training/{b['id']}", json={"priority": 99}), 200)
    assert patched["priority"] == 99 and patched["queue_position"] == 1
    assert patched["queued_at"] == b["queued_at"]
    moved = job_of(api.patch(f"/api/training/{a['id']}", json={"pool": "other"}), 200)
    assert moved["pool"] == "other" and moved["queued_at"] == a["queued_at"]
    assert positions(api, "other") == [("a", 1, False)]
    held = api.submit(hold=True)
    assert job_of(api.patch(f"/api/training/{held['id']}", json={"priority": 0}))["priority"] == 0


@pytest.mark.parametrize("status", ["running", "paused", "completed"])
def test_patch_of_a_job_that_is_not_waiting_is_409(api, store, worker, status):
    job = make_job(api, store, worker, status)
    error = error_of(api.patch(f"/api/training/{job['id']}", json={"priority": 1}), 409)
    assert error["code"] == "invalid_transition"
    assert error["details"]["status"] == status and error["details"]["action"] == "patch"


@pytest.mark.parametrize(
    "body", [{"priority": 101}, {"priority": "1"}, {"gpus": 2}, {"pool": ""}, None]
)
def test_patch_bodies_are_validated(shared_api, body):
    api = shared_api
    job = api.submit()
    kwargs = {} if body is None else {"json": body}
    error_of(api.patch(f"/api/training/{job['id']}", **kwargs), 400)
    assert api.job(job["id"])["priority"] == 50


# -- list --------------------------------------------------------------------------------------


def test_list_is_newest_first_with_filters(api, store, worker):
    running, _ = run_job(api, store, worker, name="Run-Big")
    old = api.submit(name="resnet-small")
    held = api.submit(name="ResNet-large", hold=True)
    other = api.submit(name="bert", pool="other")
    paused = make_job(api, store, worker, "paused", name="gpt_100%")

    def ids(**query):
        response = api.get("/api/training", query=query)
        assert response.status_code == 200
        page = schemas.JobList.model_validate(response.get_json())
        return [str(j.id) for j in page.items]

    assert ids() == [paused["id"], other["id"], held["id"], old["id"], running["id"]]
    assert ids(status="pending") == [held["id"]]
    assert ids(status=["pending", "paused", "running"]) == [
        paused["id"],
        held["id"],
        running["id"],
    ]
    assert ids(pool="other") == [other["id"]]
    assert ids(pool="default", status="queued") == [old["id"]]
    assert ids(q="RESNET") == [held["id"], old["id"]]
    assert ids(q="100%") == [paused["id"]]
    assert ids(q="_") == [paused["id"]]
    assert ids(q="nothing") == []
    assert ids(status="completed") == []


def test_list_pages_with_limit_and_cursor(api):
    made = [api.submit(name=f"job-{i}")["id"] for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
        body = api.get("/api/training", query=query).get_json()
        schemas.JobList.model_validate(body)
        assert len(body["items"]) <= 2
        seen += [j["id"] for j in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(made))
    assert len(api.get("/api/training").get_json()["items"]) == 5  # default limit 50
    assert api.get("/api/training", query={"limit": 200}).status_code == 200


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"limit": 0}, "invalid"),
        ({"limit": 201}, "invalid"),
        ({"limit": "ten"}, "invalid"),
        ({"limit": -1}, "invalid"),
        ({"cursor": "garbage!"}, "bad_cursor"),
        ({"cursor": "W10"}, "bad_cursor"),  # base64 of "[]"
        ({"cursor": base64.urlsafe_b64encode(b"[" * 3000).decode()}, "bad_cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'[1, "x"]').decode()}, "bad_cursor"),
        ({"status": "done"}, "invalid"),
        ({"q": "a\x00b"}, "invalid"),
        ({"pool": "\x00"}, "invalid"),
    ],
)
def test_list_refuses_bad_query_arguments(shared_api, query, code):
    api = shared_api
    error_of(api.get("/api/training", query=query), 400, code)


# -- events, logs, metrics ---------------------------------------------------------------------


def test_events_tell_the_story_oldest_first(api, store, worker):
    job, token = run_job(api, store, worker)
    store.finish(UUID(job["id"]), token, Exit(exit_code=0), actor=worker.actor)
    response = api.get(f"/api/training/{job['id']}/events")
    events = schemas.EventList.model_validate(response.get_json()).items
    assert [(e.from_status, e.to_status, e.action, e.actor) for e in events] == [
        (None, "queued", "submit", "operator"),
        ("queued", "running", "claim", "worker:gpu-a"),
        ("running", "completed", "exit", "worker:gpu-a"),
    ]
    assert all(e.at.tzinfo is not None for e in events)
    assert [e.at for e in events] == sorted(e.at for e in events)
    done = api.job(job["id"])
    assert done["termination_reason"] == "completed" and done["exit_code"] == 0


def test_logs_are_numbered_and_read_after_n(api, store, worker):
    job, token = run_job(api, store, worker)
    empty = api.get(f"/api/training/{job['id']}/logs").get_json()
    assert empty == {"lines": [], "next": 0}
    store.append_logs(
        UUID(job["id"]), token, [("stdout", "epoch 1"), ("stderr", "warn"), ("stdout", "epoch 2")]
    )
    body = api.get(f"/api/training/{job['id']}/logs").get_json()
    logs = schemas.Logs.model_validate(body)
    assert [(line.n, line.stream, line.text) for line in logs.lines] == [
        (1, "stdout", "epoch 1"),
        (2, "stderr", "warn"),
        (3, "stdout", "epoch 2"),
    ]
    assert logs.next == 3
    page = api.get(f"/api/training/{job['id']}/logs", query={"after": 1, "limit": 1}).get_json()
    assert [line["n"] for line in page["lines"]] == [2] and page["next"] == 2
    tail = api.get(f"/api/training/{job['id']}/logs", query={"after": page["next"]}).get_json()
    assert [line["text"] for line in tail["lines"]] == ["epoch 2"] and tail["next"] == 3
    beyond = api.get(f"/api/training/{job['id']}/logs", query={"after": 3}).get_json()
    assert beyond == {"lines": [], "next": 3}
    for query in ({"after": -1}, {"limit": 0}, {"limit": 10_001}, {"after": "x"}):
        error_of(api.get(f"/api/training/{job['id']}/logs", query=query), 400, "invalid")


def test_metrics_points_progress_and_checkpoint(api, store, worker):
    job, token = run_job(api, store, worker)
    job_id = UUID(job["id"])
    assert api.get(f"/api/training/{job['id']}/metrics").get_json() == {"points": []}
    store.report_progress(job_id, token, Progress(fraction=0.1, step=10, metrics={"loss": 2.5}))
    store.report_progress(job_id, token, Progress(fraction=0.2, step=20, message="no metrics"))
    store.report_progress(job_id, token, Progress(fraction=0.3, step=30, metrics={"loss": 1.5}))
    store.report_checkpoint(job_id, token, "/ckpt/step-30", 30)
    body = api.get(f"/api/training/{job['id']}/metrics").get_json()
    points = schemas.Metrics.model_validate(body).points
    assert [(p.step, p.metrics) for p in points] == [(10, {"loss": 2.5}), (30, {"loss": 1.5})]
    assert all(p.at.tzinfo is not None for p in points)
    limited = api.get(f"/api/training/{job['id']}/metrics", query={"limit": 1}).get_json()
    assert len(limited["points"]) == 1
    error_of(api.get(f"/api/training/{job['id']}/metrics", query={"limit": 0}), 400)
    now = api.job(job["id"])
    assert now["progress"]["fraction"] == 0.3 and now["progress"]["step"] == 30
    assert now["progress"]["metrics"] == {"loss": 1.5}
    aware(now["progress"]["updated_at"])
    assert now["checkpoint"]["uri"] == "/ckpt/step-30" and now["checkpoint"]["step"] == 30
    assert now["worker"]["name"] == "gpu-a" and len(now["worker"]["gpu_ids"]) == 1
    aware(now["started_at"])


# -- queue and workers -------------------------------------------------------------------------


def test_queue_lists_claimable_jobs_per_pool_in_claim_order(api, store, worker):
    running, _ = run_job(api, store, worker, name="running")
    low = api.submit(name="low", priority=10, gpus=2)
    high = api.submit(name="high", priority=90)
    api.submit(name="later", not_before=LATER)
    api.submit(name="held", hold=True)
    other = api.submit(name="elsewhere", pool="cpu", gpus=0)
    api.act(low["id"], "force-start")
    body = api.get("/api/queue").get_json()
    queue = schemas.Queue.model_validate(body)
    assert set(queue.pools) == {"default", "cpu"}
    default = body["pools"]["default"]
    assert [e["id"] for e in default] == [low["id"], high["id"]]
    assert default[0] == {
        "id": low["id"],
        "name": "low",
        "position": 1,
        "gpus": 2,
        "expected_start_at": None,
        "priority": 10,
        "forced": True,
        "waiting_reason": default[0]["waiting_reason"],
    }
    assert default[0]["waiting_reason"]
    assert default[1]["position"] == 2 and default[1]["forced"] is False
    assert [e["id"] for e in body["pools"]["cpu"]] == [other["id"]]
    assert "cpu" in body["pools"]["cpu"][0]["waiting_reason"]  # no worker serves pool cpu
    assert running["id"] not in json.dumps(body)


def test_devices_without_stats_still_have_every_field_as_null(api, store, worker):
    # What a worker with virtual GPUs (or unreadable stats) reports.
    store.heartbeat_worker(
        worker, free_gpus=4, devices=[{"id": 0, "name": "virtual GPU 0"}, {"id": 1}]
    )
    body = api.get("/api/workers").get_json()
    schemas.WorkerList.model_validate(body)
    first, second = body["items"][0]["gpus"]["devices"]
    assert first == {"id": 0, "name": "virtual GPU 0", "utilization": None,
                     "memory_used": None, "memory_total": None}  # fmt: skip
    assert second == {"id": 1, "name": None, "utilization": None,
                      "memory_used": None, "memory_total": None}  # fmt: skip


def test_workers_show_gpus_liveness_and_running_jobs(api, store, worker):
    assert api.get("/api/workers").get_json()["items"][0]["running_jobs"] == []
    job, _ = run_job(api, store, worker, gpus=2)
    store.heartbeat_worker(
        worker,
        free_gpus=2,
        devices=[
            {"id": i, "name": "H100", "utilization": 0.5, "memory_used": 1, "memory_total": 80}
            for i in worker.gpu_ids
        ],
    )
    body = api.get("/api/workers").get_json()
    schemas.WorkerList.model_validate(body)
    [item] = body["items"]
    assert item["name"] == "gpu-a"
    assert item["pools"] == ["default"] and item["kinds"] == ["train"]
    assert item["gpus"]["total"] == 4 and item["gpus"]["free"] == 2
    assert [d["id"] for d in item["gpus"]["devices"]] == [0, 1, 2, 3]
    assert set(item["gpus"]["devices"][0]) == {
        "id",
        "name",
        "utilization",
        "memory_used",
        "memory_total",
    }
    assert item["alive"] is True
    assert item["running_jobs"] == [job["id"]]
    aware(item["last_heartbeat_at"])
    assert item["hostname"]


# -- health, readiness, metrics, openapi --------------------------------------------------------


def test_healthz_and_readyz(shared_api):
    api = shared_api
    assert api.get("/healthz", token=None).get_json() == {"status": "ok"}
    assert api.get("/readyz", token=None).get_json() == {"status": "ready"}


def test_readyz_is_503_when_the_schema_is_not_at_head(api, engine):
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    error = error_of(api.get("/readyz", token=None), 503, "not_ready")
    assert "older than the database" in error["message"]
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    error = error_of(api.get("/readyz", token=None), 503, "not_ready")
    assert "jobqueue migrate" in error["message"]
    assert api.get("/healthz", token=None).status_code == 200  # liveness does not care


def test_readyz_is_503_when_the_database_is_gone(databases):
    url = databases.create()
    engine = make_engine(url, pool_size=1)
    try:
        app = create_app(make_settings(url), engine=engine, background=False)
        api = Api(app.test_client())
        assert api.get("/readyz", token=None).status_code == 200
        databases.drop(url)
        error = error_of(api.get("/readyz", token=None), 503, "not_ready")
        assert "unreachable" in error["message"]
    finally:
        engine.dispose()
        databases.drop(url)


def test_create_app_refuses_an_unmigrated_database(databases):
    url = databases.create(migrated=False)
    engine = make_engine(url, pool_size=1)
    try:
        with pytest.raises(SchemaNotAtHead, match="jobqueue migrate"):
            create_app(make_settings(url), engine=engine, background=False)
    finally:
        engine.dispose()
        databases.drop(url)


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text as {(name, sorted labels): value}."""
    out = {}
    for line in exposition.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        assert match, f"not Prometheus text: {line!r}"
        name, labels, value = match.groups()
        pairs = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or "")))
        out[(name, pairs)] = float(value)
    return out


def test_metrics_is_prometheus_text(api):
    job = api.submit(pool="default")
    api.act(job["id"], "force-start")
    api.submit(name="held", hold=True)
    response = api.get("/metrics", token=None)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    found = samples(response.get_data(as_text=True))
    assert found[("jobqueue_jobs", (("pool", "default"), ("status", "queued")))] == 1
    assert found[("jobqueue_jobs", (("pool", "default"), ("status", "pending")))] == 1
    assert found[("jobqueue_oldest_queued_seconds", (("pool", "default"),))] >= 0
    assert found[("jobqueue_actions_total", (("action", "submit"),))] == 2
    assert found[("jobqueue_actions_total", (("action", "force-start"),))] == 1
    created = (("endpoint", "/api/training"), ("method", "POST"), ("status", "201"))
    assert found[("jobqueue_request_seconds_count", created)] == 2
    assert any(name == "jobqueue_request_seconds_bucket" for name, _ in found)


def test_latency_of_an_invented_method_is_counted_as_other(api):
    # A client may send any method token; the metrics must not grow a series for each.
    for method in ("BREW", "PROPFIND", "BREW"):
        error_of(api.request(method, "/api/training"), 405, "method_not_allowed")
    found = samples(api.get("/metrics", token=None).get_data(as_text=True))
    methods = {dict(labels).get("method") for name, labels in found if "request_seconds" in name}
    assert "other" in methods
    assert not methods & {"BREW", "PROPFIND"}
    other = (("endpoint", "unmatched"), ("method", "other"), ("status", "405"))
    assert found[("jobqueue_request_seconds_count", other)] == 3


def test_static_files_have_one_url_rule_and_are_served(app):
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/static")]
    assert [r.rule for r in rules] == ["/static/<path:filename>"]
    with app.test_client().get("/static/monitor.js") as response:
        assert response.status_code == 200
        assert "javascript" in response.headers["Content-Type"]


def test_openapi_document_lists_every_endpoint(shared_api):
    api = shared_api
    error_of(api.get("/api/openapi.json", token=None), 401)
    doc = api.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    expected = {
        "/api/training": {"get", "post"},
        "/api/training/{id}": {"get", "patch"},
        "/api/training/{id}/events": {"get"},
        "/api/training/{id}/logs": {"get"},
        "/api/training/{id}/metrics": {"get"},
        "/api/queue": {"get"},
        "/api/workers": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/metrics": {"get"},
    }
    for action in ("release", "force-start", "pause", "resume", "cancel", "mark-failed", "retry"):
        expected[f"/api/training/{{id}}/{action}"] = {"post"}
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path
    assert {"202", "409"} <= set(paths["/api/training/{id}/pause"]["post"]["responses"])
    assert "Job" in doc["components"]["schemas"]


def test_every_status_reads_back_as_a_valid_job(api, store, worker):
    """Each of the seven statuses renders as a job object the published model accepts."""
    made = {}
    for status in ("running", "completed", "pending", "queued", "paused", "failed", "cancelled"):
        made[status] = make_job(api, store, worker, status)
    for status, job in made.items():
        assert api.job(job["id"])["status"] == status
    page = api.get("/api/training", query={"status": list(STATUSES)}).get_json()
    assert {j["status"] for j in page["items"]} == set(STATUSES)
    bogus = str(uuid4())
    error_of(api.get(f"/api/training/{bogus}"), 404)
