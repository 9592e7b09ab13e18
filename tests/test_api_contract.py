"""Every response shape of SPEC §3, checked against the published OpenAPI document.

The shapes below are SPEC §3 written as data: each field a frontend may read.
Every one must be a property of the documented schema *and* required, so that
no field can be left out of a response without this test failing (the tests of
the endpoints validate real answers against the same models).
"""

from __future__ import annotations

from typing import Any

import pytest

from api.openapi import document

FIELD = None  # a leaf: present and required, any type

PROGRESS = {"fraction": FIELD, "step": FIELD, "message": FIELD, "metrics": FIELD,
            "updated_at": FIELD}  # fmt: skip
JOB = {
    **dict.fromkeys([
        "id", "name", "kind", "config", "status", "pool", "team", "owner", "gpus", "priority",
        "forced",
        "queue_position", "queue_position_estimate", "waiting_reason", "not_before", "attempt",
        "max_attempts",
        "interruptions", "max_interruptions", "max_runtime_seconds", "requested_action",
        "termination_reason",
        "exit_code", "signal", "error_message", "log_tail", "idempotency_key", "created_at",
        "queued_at", "started_at", "finished_at", "updated_at", "allowed_actions",
    ]),
    "progress": PROGRESS,
    "checkpoint": {"uri": FIELD, "step": FIELD, "at": FIELD},
    "worker": {"name": FIELD, "gpu_ids": FIELD},
}  # fmt: skip
EVENT = dict.fromkeys(["id", "at", "from_status", "to_status", "action", "actor", "reason"])
QUEUE_ENTRY = dict.fromkeys(
    ["id", "name", "position", "gpus", "priority", "forced", "waiting_reason"]
)
DEVICE = dict.fromkeys(["id", "name", "utilization", "memory_used", "memory_total"])
WORKER = {
    **dict.fromkeys(["name", "hostname", "pools", "kinds", "last_heartbeat_at", "alive",
                     "running_jobs"]),
    "gpus": {"total": FIELD, "free": FIELD, "devices": [DEVICE]},
}  # fmt: skip
ERROR = {"error": {"code": FIELD, "message": FIELD, "details": FIELD}}
TEAM = dict.fromkeys(["name", "share", "quota_gpus", "created_at", "updated_at"])
ANY_KEY = "*"  # an object's values, whatever their keys (pools by name)

_ID = "/api/training/{id}"
SHAPES: list[tuple[str, str, str, Any]] = [
    ("post", "/api/training", "201", JOB),
    ("post", "/api/training", "200", JOB),
    ("get", "/api/training", "200", {"items": [JOB], "next_cursor": FIELD}),
    ("get", _ID, "200", JOB),
    ("patch", _ID, "200", JOB),
    ("get", _ID + "/events", "200", {"items": [EVENT]}),
    ("get", _ID + "/logs", "200",
     {"lines": [{"n": FIELD, "stream": FIELD, "text": FIELD, "at": FIELD}], "next": FIELD}),
    ("get", _ID + "/metrics", "200",
     {"points": [{"n": FIELD, "step": FIELD, "at": FIELD, "metrics": FIELD}]}),
    *[("post", f"{_ID}/{action}", "200", JOB)
      for action in ("release", "force-start", "pause", "resume", "cancel", "mark-failed",
                     "retry")],
    *[("post", f"{_ID}/{action}", "202", JOB) for action in ("pause", "cancel", "mark-failed")],
    ("get", "/api/queue", "200", {"pools": {ANY_KEY: [QUEUE_ENTRY]}}),
    ("get", "/api/workers", "200", {"items": [WORKER]}),
    ("get", "/api/teams", "200", {"items": [TEAM]}),
    ("put", "/api/teams/{team}", "200", TEAM),
    ("get", _ID, "404", ERROR),
    ("post", f"{_ID}/pause", "409", ERROR),
]  # fmt: skip


def _resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` and step through ``X | null`` to the one non-null schema."""
    while True:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = doc["components"]["schemas"][name]
            continue
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            real = [b for b in branches if b.get("type") != "null"]
            if len(real) == 1:
                schema = real[0]
                continue
        return schema


def _missing(shape: Any, schema: dict[str, Any], doc: dict[str, Any], where: str) -> list[str]:
    """Where the documented schema lacks a field of the shape, or does not require it."""
    if shape is FIELD:
        return []
    schema = _resolve(schema, doc)
    if isinstance(shape, list):
        if schema.get("type") != "array":
            return [f"{where}: not an array"]
        return _missing(shape[0], schema.get("items", {}), doc, where + "[]")
    if set(shape) == {ANY_KEY}:
        values = schema.get("additionalProperties")
        if not isinstance(values, dict):
            return [f"{where}: no schema for its values"]
        return _missing(shape[ANY_KEY], values, doc, where + ".*")
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    problems = []
    for name, inner in shape.items():
        if name not in properties:
            problems.append(f"{where}.{name}: not documented")
        elif name not in required:
            problems.append(f"{where}.{name}: documented but not required")
        else:
            problems += _missing(inner, properties[name], doc, f"{where}.{name}")
    return problems


@pytest.mark.parametrize(("method", "path", "status", "shape"), SHAPES,
                         ids=[f"{m} {p} {s}" for m, p, s, _ in SHAPES])  # fmt: skip
def test_each_spec_response_field_is_documented_and_required(method, path, status, shape):
    doc = document()
    responses = doc["paths"][path][method]["responses"]
    assert status in responses, f"{method} {path} documents no {status}"
    schema = responses[status]["content"]["application/json"]["schema"]
    assert _missing(shape, schema, doc, "body") == []


def test_the_check_finds_a_field_left_out():
    # The checker itself: a shape asking for a field the document lacks is reported.
    doc = document()
    response = doc["paths"]["/api/workers"]["get"]["responses"]["200"]
    schema = response["content"]["application/json"]["schema"]
    shape = {"items": [{**WORKER, "gpus": {"devices": [{**DEVICE, "temperature": FIELD}]}}]}
    assert _missing(shape, schema, doc, "body") == [
        "body.items[].gpus.devices[].temperature: not documented"
    ]
