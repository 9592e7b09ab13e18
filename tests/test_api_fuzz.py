"""Property-based fuzz of the published OpenAPI document against the real app.

schemathesis generates valid and invalid requests for every operation of
``/api/openapi.json`` and checks each answer: never a 5xx, a status code the
document lists, the documented content type, and a body that matches the
documented schema. Path ids that are UUIDs are mapped onto real jobs in every
status, so the action endpoints answer 200, 202 and 409 as well as 404.
"""

from __future__ import annotations

import json
from uuid import UUID

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api import create_app
from api.openapi import document
from jobqueue import api_models as schemas
from jobqueue.db import make_engine
from jobqueue.outcomes import Exit
from jobqueue.queue import JobQueue
from jobqueue.specs import JobSpec
from jobqueue.worker_store import WorkerIdentity, WorkerStore
from tests.helpers import ADMIN, OPERATOR, VIEWER, bearer, make_settings

schema = schemathesis.openapi.from_dict(document())
# The API ignores query arguments it does not know (a client may add a cache buster), and the
# token is sent by the test itself: neither is a schema violation to hunt for here.
schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def fuzz_app(databases):
    """One app over one database for the whole module, seeded with a job in every status."""
    url = databases.create()
    engine = make_engine(url, pool_size=4)
    try:
        settings = make_settings(url)
        app = create_app(settings, engine=engine, background=False)
        queue = JobQueue(engine, settings)
        store = WorkerStore(engine, settings)
        worker = WorkerIdentity(name="fuzz", kinds=("train",), gpu_ids=(0, 1, 2, 3))
        store.heartbeat_worker(worker, free_gpus=4)

        def submit(**extra):
            body = {"name": "seed", "kind": "train", "config": {"lr": 0.1}, **extra}
            return queue.submit(JobSpec.model_validate(body), actor="operator")[0].id

        def run():
            job_id = submit()
            claimed = store.claim(worker, free_gpu_ids=[2, 3], slots=1)
            assert [c.id for c in claimed] == [job_id]
            return job_id, claimed[0].lease_token

        running, _ = run()
        completed, token = run()
        store.finish(completed, token, Exit(exit_code=0), actor=worker.actor)
        paused, cancelled, failed = submit(), submit(), submit()
        queue.pause(paused, actor="operator")
        queue.cancel(cancelled, actor="operator")
        queue.mark_failed(failed, actor="operator", reason="seed")
        ids = [running, completed, submit(hold=True), submit(), paused, cancelled, failed]
        app.config["seeded_ids"] = ids
        yield app
    finally:
        engine.dispose()
        databases.drop(url)


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_openapi_fuzz(case, fuzz_app):
    ids: list[UUID] = fuzz_app.config["seeded_ids"]
    raw = case.path_parameters.get("id") if case.path_parameters else None
    if isinstance(raw, str):
        try:
            pick = UUID(raw).int % (len(ids) + 1)
        except ValueError:
            pick = len(ids)  # not a UUID: sent as generated (400)
        if pick < len(ids):  # else an unknown UUID (404)
            case.path_parameters["id"] = str(ids[pick])
    case.call_and_validate(app=fuzz_app, headers=bearer(ADMIN), checks=CHECKS)


# JSON values as Python's parser produces them, including what PostgreSQL cannot store:
# NUL characters, NaN, infinities; nested well past any real config.
_text = st.text(st.characters(codec="utf-8"), max_size=8)
_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _text
)
_json = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=12,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
@given(
    config=st.dictionaries(_text, _json, max_size=4),
    name=_text.filter(bool),
    extra=st.dictionaries(
        st.sampled_from(["gpus", "priority", "hold", "not_before", "idempotency_key"]),
        _json | _text,
        max_size=1,
    ),
    depth=st.sampled_from([0, 0, 0, 1, 5, 70]),
)
def test_submit_of_any_json_is_201_or_a_json_400(fuzz_app, config, name, extra, depth):
    """Whatever JSON a client sends as a submit body, the answer is 201 (or 200 for a
    repeated key) with a job the model accepts, or 400 with the error shape; never 5xx."""
    for _ in range(depth):
        config = {"c": config}
    body = {"name": name, "kind": "train", "config": config, **extra}
    raw = json.dumps(body, allow_nan=True)  # Python's parser takes NaN back
    client = fuzz_app.test_client()
    response = client.post(
        "/api/training", data=raw, content_type="application/json", headers=bearer(OPERATOR)
    )
    assert response.status_code in (200, 201, 400, 409), response.get_data(as_text=True)[:300]
    if response.status_code in (200, 201):
        job = schemas.Job.model_validate(response.get_json())
        again = client.get(f"/api/training/{job.id}", headers=bearer(VIEWER))
        assert again.status_code == 200
        assert again.get_json()["config"] == response.get_json()["config"]
    else:
        schemas.Error.model_validate(response.get_json())
