"""What the core refuses before anything reaches PostgreSQL, whoever the caller is:
NUL characters (text and jsonb refuse them), NaN and infinities (jsonb refuses them)
and absurd nesting, in every request model; and the CLI's answer to them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from jobqueue.cli import main
from jobqueue.specs import MAX_DEPTH, JobSpec, MarkFailedBody


def nested(depth: int) -> dict:
    """An object ``depth`` levels deep (the outer object is level 1)."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"name": "a\x00b", "kind": "train"}, id="name"),
        pytest.param({"name": "a", "kind": "train", "config": {"k": "\x00"}}, id="config-value"),
        pytest.param({"name": "a", "kind": "train", "config": {"\x00": 1}}, id="config-key"),
        pytest.param(
            {"name": "a", "kind": "train", "config": {"k": [{"deep": ["x\x00"]}]}}, id="nested"
        ),
        pytest.param({"name": "a", "kind": "train", "idempotency_key": "\x00"}, id="idem-key"),
    ],
)
def test_a_nul_character_is_refused_anywhere_in_a_submit(body):
    with pytest.raises(ValidationError, match="NUL"):
        JobSpec.model_validate(body)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_numbers_jsonb_cannot_store_are_refused(number):
    with pytest.raises(ValidationError, match="finite"):
        JobSpec.model_validate({"name": "a", "kind": "train", "config": {"lr": [number]}})


def test_nesting_is_bounded_but_real_configs_fit():
    # The submit body is level 1 and its config level 2.
    JobSpec.model_validate({"name": "a", "kind": "train", "config": nested(MAX_DEPTH - 1)})
    with pytest.raises(ValidationError, match=f"nested over {MAX_DEPTH} levels"):
        JobSpec.model_validate({"name": "a", "kind": "train", "config": nested(MAX_DEPTH)})


def test_every_request_model_refuses_nul():
    with pytest.raises(ValidationError, match="NUL"):
        MarkFailedBody.model_validate({"reason": "oom\x00"})
    assert MarkFailedBody.model_validate({"reason": "oom"}).reason == "oom"


def test_the_cli_refuses_a_nul_with_a_usage_error_not_a_traceback(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = CliRunner().invoke(
        main, ["submit", "resnet", "--kind", "train", "--config", json.dumps({"k": "a\x00"})]
    )
    assert result.exit_code == 2, result.output
    assert "NUL" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
