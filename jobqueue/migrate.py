"""Alembic from code: upgrade, and whether a database is at this code's head."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from jobqueue.db import normalize_url
from jobqueue.errors import SchemaNotAtHead


def alembic_config(url: str | None = None) -> Config:
    """An alembic Config for the migrations shipped with this package."""
    script_location = Path(str(resources.files("migrations")))
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.attributes["url"] = normalize_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


@dataclasses.dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str
    known: bool

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    def problem(self) -> str | None:
        """What is wrong, in words that name the fix; None when at head."""
        if self.at_head:
            return None
        if self.current is None:
            return "the database has no jobqueue schema: run `jobqueue migrate`"
        if not self.known:
            return (
                f"the database schema ({self.current}) is newer than this code: "
                "this jobqueue is older than the database; upgrade jobqueue"
            )
        return (
            f"the database schema ({self.current}) is behind this code ({self.head}): "
            "run `jobqueue migrate`"
        )


def schema_status(engine: Engine) -> SchemaStatus:
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    known = current is None or _known(script, current)
    return SchemaStatus(current=current, head=head, known=known)


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:
        return False


def require_head(engine: Engine) -> None:
    """Refuse to run against a schema that is behind or ahead of this code."""
    problem = schema_status(engine).problem()
    if problem:
        raise SchemaNotAtHead(problem)
