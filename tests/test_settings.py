"""Settings a user meets before anything runs: where state lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobqueue.cli.up import default_data_dir
from jobqueue.settings import SYSTEM_STATE_DIR, Settings, default_state_dir


@pytest.mark.parametrize("euid", [0, 1000])
def test_jobqueue_up_keeps_its_database_beside_the_workers_state(monkeypatch, euid):
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    monkeypatch.delenv("JOBQUEUE_STATE_DIR", raising=False)
    settings = Settings(_env_file=None)
    assert default_data_dir(settings) == settings.state_dir / "pgdata"
    if euid == 0:
        # Root: one system folder for the database, the worker's state and checkpoints.
        assert settings.state_dir == SYSTEM_STATE_DIR == Path("/var/lib/jobqueue")
    else:
        assert settings.state_dir != SYSTEM_STATE_DIR
        assert settings.state_dir == default_state_dir()


def test_the_state_dir_setting_wins(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("JOBQUEUE_STATE_DIR", str(tmp_path))
    settings = Settings(_env_file=None)
    assert settings.state_dir == tmp_path
    assert default_data_dir(settings) == tmp_path / "pgdata"


def test_fractional_prune_days_are_kept(monkeypatch):
    monkeypatch.setenv("JOBQUEUE_PRUNE_AFTER_DAYS", "0.5")
    assert Settings(_env_file=None).prune_after_days == 0.5


def test_pool_time_limits_come_from_json(monkeypatch):
    monkeypatch.setenv("JOBQUEUE_POOL_MAX_RUNTIME_SECONDS", '{"a100": 86400, "cpu": 600}')
    assert Settings(_env_file=None).pool_max_runtime_seconds == {"a100": 86400, "cpu": 600}
    monkeypatch.setenv("JOBQUEUE_POOL_MAX_RUNTIME_SECONDS", '{"a100": 0}')
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Settings(_env_file=None)
