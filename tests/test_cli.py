"""The ``jobqueue`` command line as a user meets it: every subcommand's ``--help``."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from jobqueue.cli import main
from worker.__main__ import main as worker_main

SUBCOMMANDS = sorted(main.commands)


def _option_names(command: click.Command) -> list[str]:
    names = []
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            names.append(max(param.opts, key=len))
    return names


def _help_of(name: str) -> str:
    """``jobqueue NAME --help`` as a real process (the worker command execs another)."""
    result = subprocess.run(
        [sys.executable, "-m", "jobqueue.cli", name, "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_subcommand_is_tested():
    assert {"api", "worker", "up", "migrate", "prune", "submit", "cancel"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("name", [n for n in SUBCOMMANDS if n != "worker"])
def test_each_subcommand_help_lists_its_options(name):
    command = main.commands[name]
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    for option in _option_names(command):
        assert option in result.output, f"jobqueue {name} --help does not show {option}"


def test_worker_help_lists_the_worker_options():
    text = _help_of("worker")
    options = _option_names(worker_main)
    assert {"--gpus", "--kinds", "--virtual-gpus", "--pool"} <= set(options)
    for option in options:
        assert option in text, f"jobqueue worker --help does not show {option}:\n{text}"
    assert "jobqueue worker --help" not in text  # the help is the worker's, not a pointer


@pytest.fixture
def cli_env(monkeypatch, database_url):
    from jobqueue.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_teams_from_the_command_line(cli_env):
    runner = CliRunner()
    made = runner.invoke(main, ["set-team", "nlp", "--share", "2", "--quota", "a100=16"])
    assert made.exit_code == 0, made.output
    assert '"share": 2.0' in made.output
    listed = runner.invoke(main, ["teams"])
    assert listed.output.split() == [
        "nlp", "share", "2", "(0%)", "usage", "0%", "(0.0", "GPU-h)", "running", "a100=0/16",
        "queued", "0",
    ]  # fmt: skip
    bad = runner.invoke(main, ["set-team", "no spaces"])
    assert bad.exit_code == 2 and "not a team name" in bad.output

    submitted = runner.invoke(main, ["submit", "bert", "--kind", "train", "--team", "nlp"])
    assert submitted.exit_code == 0, submitted.output
    assert '"team": "nlp"' in submitted.output and '"owner": "cli:' in submitted.output
    runner.invoke(main, ["submit", "resnet", "--kind", "train"])
    only_nlp = runner.invoke(main, ["ls", "--team", "nlp"])
    assert len(only_nlp.output.splitlines()) == 1 and "nlp" in only_nlp.output
    assert "bert" in only_nlp.output and "resnet" not in only_nlp.output


def test_sweeps_from_the_command_line(cli_env, tmp_path):
    runner = CliRunner()
    body = {"name": "lr", "max_running": 1, "job": {"kind": "train", "gpus": 0},
            "grid": {"lr": [0.1, 0.01, 0.001]}}  # fmt: skip
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(body))
    made = runner.invoke(main, ["sweep", "submit", str(path)])
    assert made.exit_code == 0, made.output
    sweep_id = made.output.split()[0]
    assert "3 jobs created" in made.output
    table = runner.invoke(main, ["sweep", "jobs", sweep_id, "--desc"])
    assert [line.split()[0] for line in table.output.splitlines()] == ["2", "1", "0"]
    assert '"lr": 0.001' in table.output.splitlines()[0]
    raised = runner.invoke(main, ["sweep", "set", sweep_id, "--max-running", "none"])
    assert raised.exit_code == 0 and '"held": 0' in raised.output
    paused = runner.invoke(main, ["sweep", "pause", sweep_id])
    assert paused.exit_code == 0 and "3 changed" in paused.output
    shown = runner.invoke(main, ["sweep", "show", sweep_id])
    assert json.loads(shown.output)["counts"]["paused"] == 3
    assert sweep_id in runner.invoke(main, ["sweep", "ls"]).output
    path.write_text(json.dumps({**body, "grid": None, "configs": [{}, "no"]}))
    bad = runner.invoke(main, ["sweep", "submit", str(path)])
    assert bad.exit_code == 1 and "item 1: config" in bad.output
