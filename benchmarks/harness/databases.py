"""The PostgreSQL server a benchmark runs against, and the databases it makes there.

The server comes from ``--database-url`` or ``JOBQUEUE_BENCH_DATABASE_URL`` (a maintenance
database where ``CREATE DATABASE`` may run), else an embedded PostgreSQL under the
temporary folder. Every database of a run (``jqbench_<random>_*``) is dropped at its end,
after Ctrl-C or SIGTERM too, so that a shared server keeps nothing of it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator

from sqlalchemy import Engine

from benchmarks.harness.report import log
from jobqueue.db import connect_raw, make_engine
from jobqueue.testing import DatabaseFactory, throwaway_server

#: The variable that names the benchmarks' server when ``--database-url`` does not.
BENCH_DATABASE_URL_VARIABLE = "JOBQUEUE_BENCH_DATABASE_URL"


def add_server_argument(parser: argparse.ArgumentParser) -> None:
    """``--database-url``, which every benchmark takes and :func:`postgres_server` reads."""
    parser.add_argument(
        "--database-url",
        help="a maintenance database where CREATE DATABASE may run "
        f"(default: ${BENCH_DATABASE_URL_VARIABLE}, else an embedded PostgreSQL)",
    )


@contextlib.contextmanager
def postgres_server(url: str | None) -> Iterator[str]:
    """Yields the URL of a maintenance database where CREATE DATABASE may run.

    Unlike :func:`jobqueue.testing.postgres_server` it never starts a container: a
    benchmark names its server or gets an embedded one, the same on every machine.
    """
    url = url or os.environ.get(BENCH_DATABASE_URL_VARIABLE)
    if url:
        yield url
        return
    log("starting an embedded PostgreSQL under the temporary folder")
    with throwaway_server("jobqueue-bench-pg-") as server:
        yield server.get_uri()


class Databases:
    """The run's databases on one server: jobqueue's cloned from one template migrated with
    alembic (:class:`~jobqueue.testing.DatabaseFactory`), the baselines' empty."""

    def __init__(self, server_url: str):
        with connect_raw(server_url) as conn:
            self.server_version = conn.info.server_version
        self._factory = DatabaseFactory(server_url, prefix="jqbench")

    def jobqueue(self) -> str:
        """A fresh database migrated to head."""
        return self._factory.create()

    def plain(self) -> str:
        """A fresh empty database."""
        return self._factory.create(migrated=False)

    def close(self) -> None:
        """Drop every database made, and the template."""
        self._factory.close()


@contextlib.contextmanager
def benchmark_databases(url: str | None) -> Iterator[Databases]:
    """The server of :func:`postgres_server` and the run's :class:`Databases`, all dropped on
    the way out; a SIGTERM unwinds like Ctrl-C, so that happens either way."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with postgres_server(url) as server_url:
        dbs = Databases(server_url)
        try:
            yield dbs
        finally:
            dbs.close()


def engine_for(url: str, connections: int) -> Engine:
    """An engine of ``connections`` pooled connections, named ``jobqueue-bench`` on the server."""
    return make_engine(url, pool_size=connections, application_name="jobqueue-bench")
