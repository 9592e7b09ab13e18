"""docker-compose.yml, checked by Compose itself (``config``) where Compose is installed.

No Docker engine is needed: ``docker-compose config`` only reads, validates and
interpolates the file. The commands it gives the containers are checked
against the real command-line parsers of ``jobqueue`` and the worker.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
TOKENS = "operator:compose-test-token"


def compose_command() -> list[str]:
    found = shutil.which("docker-compose")
    if found:
        return [found]
    docker = shutil.which("docker")
    if docker:
        try:
            done = subprocess.run(
                [docker, "compose", "version"], capture_output=True, timeout=20, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0:
            return [docker, "compose"]
    pytest.skip("neither docker-compose nor `docker compose` is installed")


def compose(*args: str, tokens: str | None) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("JOBQUEUE_API_TOKENS", "WORKER_NAME") and not key.startswith("COMPOSE_")
    }
    if tokens is not None:
        env["JOBQUEUE_API_TOKENS"] = tokens
    return subprocess.run(
        [*compose_command(), "-f", str(COMPOSE_FILE), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def rendered() -> str:
    done = compose("config", tokens=TOKENS)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def config(rendered: str) -> dict[str, Any] | None:
    try:
        import yaml
    except ImportError:
        return None
    return yaml.safe_load(rendered)


def need(config: dict[str, Any] | None) -> dict[str, Any]:
    if config is None:
        pytest.skip("PyYAML is not installed: only the string checks ran")
    return config


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of a service's volumes, short ("a:b:rw") or long syntax."""
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target = entry.split(":")[:2]
        else:
            source, target = entry.get("source", ""), entry["target"]
        mounts.append((source, target))
    return mounts


def command(service: dict[str, Any]) -> list[str]:
    value = service["command"]
    return value.split() if isinstance(value, str) else [str(v) for v in value]


def test_config_is_valid_with_tokens():
    done = compose("config", "-q", tokens=TOKENS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_config_refuses_without_api_tokens_and_says_what_to_set():
    done = compose("config", "-q", tokens=None)
    assert done.returncode != 0
    assert "set JOBQUEUE_API_TOKENS" in done.stderr + done.stdout


def test_rendered_config_names_the_four_services(rendered):
    # The checks that need no YAML parser.
    for name in ("postgres:", "migrate:", "api:", "worker:"):
        assert re.search(rf"^  {name}", rendered, re.MULTILINE), name
    assert "pg_isready" in rendered
    assert "capabilities" in rendered and "gpu" in rendered
    assert TOKENS in rendered


def test_postgres_is_healthchecked_and_keeps_its_data_in_a_volume(config):
    config = need(config)
    postgres = config["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    assert ("pgdata", "/var/lib/postgresql/data") in volume_mounts(postgres)
    assert "pgdata" in config["volumes"]


def test_migrate_runs_alembic_once_after_postgres_is_healthy(config):
    config = need(config)
    migrate = config["services"]["migrate"]
    assert command(migrate) == ["alembic", "upgrade", "head"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(migrate.get("restart", "no")) in ("no", "False")
    assert migrate["environment"]["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in migrate["environment"]["DATABASE_URL"]


def test_api_runs_gunicorn_through_jobqueue_api_after_the_migration(config):
    from jobqueue.cli import main

    config = need(config)
    api = config["services"]["api"]
    argv = command(api)
    assert argv[:2] == ["jobqueue", "api"]
    # The options are ones `jobqueue api` (which execs gunicorn) really takes.
    context = main.commands["api"].make_context("jobqueue api", argv[2:])
    assert context.params["host"] == "0.0.0.0"
    port = context.params["port"]
    published = {
        str(p["target"]) if isinstance(p, dict) else str(p).split(":")[-1] for p in api["ports"]
    }
    assert str(port) in published
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert api["environment"]["JOBQUEUE_API_TOKENS"] == TOKENS
    assert "readyz" in " ".join(api["healthcheck"]["test"])


def test_worker_reserves_the_gpus_and_runs_the_example_kinds(config):
    from worker.__main__ import main as worker_main

    config = need(config)
    worker = config["services"]["worker"]
    argv = command(worker)
    assert argv[:2] == ["jobqueue", "worker"]
    context = worker_main.make_context("jobqueue worker", argv[2:])
    assert context.params["gpus"] == "auto"
    assert context.params["name"]
    # /app is the image's WORKDIR, where the Dockerfile copies examples/.
    kinds = Path(context.params["kinds_file"])
    assert kinds.parts[:2] == ("/", "app")
    assert (REPO / kinds.relative_to("/app")).is_file()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^WORKDIR /app$", dockerfile, re.MULTILINE)
    assert re.search(r"^COPY examples \./examples$", dockerfile, re.MULTILINE)

    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices), devices
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    root = worker["environment"]["JOBQUEUE_CHECKPOINT_ROOT"]
    assert ("checkpoints", root) in volume_mounts(worker)
    assert "checkpoints" in config["volumes"]


def test_the_checkpoint_volume_is_writable_by_the_image_user(config):
    # A fresh named volume takes the owner of the image's folder at its mount point; a
    # folder the image lacks is created for root. The worker runs as USER jobqueue.
    config = need(config)
    root = config["services"]["worker"]["environment"]["JOBQUEUE_CHECKPOINT_ROOT"]
    dockerfile = (REPO / "Dockerfile").read_text()
    user = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)[-1]
    chowns = re.findall(rf"chown (?:-R )?{user} ([^&\n]+)", dockerfile)
    owned = {path for line in chowns for path in line.split()}
    assert root in owned, f"the image makes {sorted(owned)} {user}'s, not {root}"
