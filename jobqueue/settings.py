"""Settings from the environment (SPEC §5)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Where root's state goes: a system folder, never root's home (the embedded
#: PostgreSQL runs as its own user and needs read access on the parent folders).
SYSTEM_STATE_DIR = Path("/var/lib/jobqueue")


def default_state_dir() -> Path:
    """The folder of the worker's state and checkpoints and ``jobqueue up``'s database:
    per user, or :data:`SYSTEM_STATE_DIR` for root, so that all of them lie together."""
    if os.geteuid() == 0:
        return SYSTEM_STATE_DIR
    import platformdirs

    return Path(platformdirs.user_data_dir("jobqueue"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOBQUEUE_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "JOBQUEUE_DATABASE_URL")
    )
    api_tokens: str = ""
    auth: Literal["on", "off"] = "on"
    lease_seconds: float = Field(default=60, gt=0)
    heartbeat_seconds: float = Field(default=10, gt=0)
    sweep_seconds: float = Field(default=5, gt=0)
    grace_seconds: float = Field(default=30, ge=0)
    retry_backoff_seconds: float = Field(default=30, ge=0)
    checkpoint_root: Path | None = None
    state_dir: Path = Field(default_factory=default_state_dir)
    #: Finished jobs older than this (fractions allowed) are pruned with their events,
    #: logs and metrics: by the API processes every ``prune_interval_seconds``, or by hand.
    prune_after_days: float = Field(default=30, gt=0)
    prune_interval_seconds: float = Field(default=3600, gt=0)
    #: A job's time limit when its submit gives none, per pool (JSON: {"a100": 86400}).
    pool_max_runtime_seconds: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    #: Half-life of the GPU usage that fair share compares with the teams' shares.
    fair_share_half_life_hours: float = Field(default=168, gt=0)
    #: How far fair share moves a job ahead of older ones: a team's jobs queue as if
    #: submitted (its factor × this) earlier, so a job waits behind younger jobs of
    #: lighter teams by at most this much (0: the claim order is time queued alone).
    fair_share_max_lead_hours: float = Field(default=48, ge=0)
    #: How often the scheduling pass (fair-share standings, reservations, expected
    #: starts) runs; any worker runs it, one at a time.
    plan_interval_seconds: float = Field(default=5, gt=0)
    #: Queued jobs per pool the pass plans (reservations, expected starts); the rest
    #: have no expected start yet.
    plan_depth: int = Field(default=100, ge=1, le=10_000)
    #: A queued job's position is exact among the first this many of its pool (counted
    #: on every read); further back it is estimated from the scheduling pass's queue
    #: marks, so that reading a job costs the same however deep the queue.
    exact_positions: int = Field(default=500, ge=1, le=100_000)
    #: A job never preempted before it has run this long (against thrashing).
    preempt_min_runtime_seconds: float = Field(default=600, ge=0)
    #: A job of a team below its fair share that has waited this long may preempt.
    preempt_wait_seconds: float = Field(default=3600, gt=0)
    #: Log lines kept per job; older lines are dropped first.
    log_max_lines: int = Field(default=10_000, ge=20)
    #: Metric points kept per job; older points are dropped first.
    metrics_max_points: int = Field(default=5_000, ge=10)

    @property
    def worker_alive_seconds(self) -> float:
        """How long after its last heartbeat a worker still counts as alive."""
        return max(3 * self.heartbeat_seconds, 15.0)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SystemExit(
                "DATABASE_URL is not set: point it at the jobqueue PostgreSQL database."
            )
        return self.database_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
