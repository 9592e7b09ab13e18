"""The database round trips of one API request, read from libpq's protocol trace, and the
in-process time of a request (Flask's test client, one at a time, no HTTP).

Where a read's time goes is mostly its round trips; each is named by its statement in
:mod:`jobqueue.sql` where it is one of those, so that the table says which.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import TextualSelect

from jobqueue import sql
from jobqueue.db import make_engine
from jobqueue.settings import Settings

_PLACEHOLDER = re.compile(r"(?<![:\w]):\w+|\$\d+|%\(\w+\)s")
_WS = re.compile(r"\s+")


def _normalize(statement: str) -> str:
    return _WS.sub(" ", _PLACEHOLDER.sub("?", statement)).strip()


def _statement_names() -> dict[str, str]:
    names = {}
    for name, value in vars(sql).items():
        if isinstance(value, TextualSelect):  # text(...).columns(...)
            value = value.element
        if isinstance(value, TextClause):
            names[_normalize(value.text)] = name
    return names


def _label(statement: str, names: dict[str, str]) -> str:
    normalized = _normalize(statement)
    if normalized in ("", ";"):
        return "pre-ping"
    if normalized in names:
        return names[normalized]
    upper = normalized.upper()
    if upper in ("BEGIN", "ROLLBACK", "COMMIT"):
        return upper
    if upper.startswith("WITH MOVED AS") or upper.startswith("UPDATE JOBS SET STATUS"):
        return "transition_update"
    if upper.startswith("SELECT JOBS.ID"):
        return "list_jobs"
    return normalized[:40] + "…"


_MESSAGE_START = re.compile(r"^(?=[FB]\t\d+\t)", re.M)
_QUOTED = re.compile(r'"((?:[^"]|"")*)"', re.S)


def _round_trips_in(trace: str, start: int, names: dict[str, str]) -> list[str]:
    """The round trips the client sent from offset ``start`` of a libpq trace, each named
    by its statement: a simple Query is one, and so is each Sync of the extended protocol
    (Parse/Bind/Execute; a Bind of a statement prepared earlier names it)."""
    prepared: dict[str, str] = {}
    current = "?"
    out: list[str] = []
    offset = 0
    for message in _MESSAGE_START.split(trace):
        here, offset = offset, offset + len(message)
        parts = message.split("\t", 3)
        if len(parts) < 3 or parts[0] != "F":
            continue
        kind, rest = parts[2].strip(), parts[3] if len(parts) > 3 else ""
        quoted = [q.replace('""', '"') for q in _QUOTED.findall(rest)]
        if kind == "Query" and quoted:
            if here >= start:
                out.append(_label(quoted[0], names))
        elif kind == "Parse" and len(quoted) >= 2:
            current = _label(quoted[1], names)
            if quoted[0]:
                prepared[quoted[0]] = current
        elif kind == "Bind" and len(quoted) >= 2 and quoted[1]:
            current = prepared.get(quoted[1], "prepared statement")
        elif kind == "Sync" and here >= start:
            out.append(current)
    return out


def round_trips(
    url: str,
    requests: Sequence[tuple[str, str, str]],
    *,
    profile: str | None = None,
) -> tuple[dict[str, list[str]], dict[str, float], str]:
    """For each (label, method, path): the statements one request sends, in order (each one
    a round trip: pings, BEGIN and ROLLBACK included), and the in-process milliseconds per
    request of 200 requests, one at a time, untraced. With ``profile`` (a label), a
    cProfile of 300 of those requests."""
    from psycopg.pq import Trace

    from api.app import create_app  # the API's own imports stay out of the load runs

    settings = Settings(database_url=url, auth="off", heartbeat_seconds=10)
    # As create_app makes it: no pre-ping.
    engine = make_engine(url, pool_size=2, application_name="jobqueue-bench-trace", pre_ping=False)
    trace_file = tempfile.NamedTemporaryFile(prefix="jqbench-trace-", delete=False)  # noqa: SIM115
    connections: list[Any] = []
    tracing = [True]

    @event.listens_for(engine, "connect")
    def _trace(dbapi_conn: Any, record: Any) -> None:
        connections.append(dbapi_conn.pgconn)
        if tracing[0]:
            dbapi_conn.pgconn.trace(trace_file.fileno())
            dbapi_conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)

    names = _statement_names()
    found: dict[str, list[str]] = {}
    timings: dict[str, float] = {}
    profile_text = ""
    try:
        client = create_app(settings, engine=engine, background=False).test_client()
        calls = [(label, _request(client, method, path)) for label, method, path in requests]
        for label, call in calls:
            for _ in range(8):  # warm: pool filled, statements prepared where psycopg does
                response = call()
                if response.status_code >= 300:
                    raise RuntimeError(f"{label}: {response.status_code} {response.data!r}")
            trace_file.flush()
            start = os.lseek(trace_file.fileno(), 0, os.SEEK_END)
            call()
            trace_file.flush()
            with open(trace_file.name, errors="replace") as f:
                found[label] = _round_trips_in(f.read(), start, names)
        tracing[0] = False
        for pgconn in connections:
            pgconn.untrace()
        for label, call in calls:
            for _ in range(20):
                call()
            t0 = time.perf_counter()
            for _ in range(200):
                call()
            timings[label] = (time.perf_counter() - t0) / 200 * 1000
            if label == profile:
                profile_text = _profiled(call, 300)
    finally:
        engine.dispose()
        trace_file.close()
        os.unlink(trace_file.name)
    return found, timings, profile_text


def _request(client: Any, method: str, path: str) -> Callable[[], Any]:
    """One request through Flask's test client: a GET, or a POST of an empty JSON object."""
    if method == "POST":
        return lambda: client.post(path, json={})
    return lambda: client.get(path)


def _profiled(call: Callable[[], Any], times: int) -> str:
    """The 25 functions of most own time over ``times`` calls, as cProfile prints them."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(times):
        call()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()
