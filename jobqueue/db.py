"""Connections: one SQLAlchemy engine per process, and raw psycopg for LISTEN."""

from __future__ import annotations

import psycopg
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` URLs and use psycopg 3 for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def libpq_conninfo(url: str) -> str:
    """The same database as a libpq connection string, for psycopg used directly."""
    return (
        make_url(normalize_url(url))
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


def make_engine(
    url: str, *, pool_size: int = 5, application_name: str = "jobqueue", pre_ping: bool = True
) -> Engine:
    """An engine whose connections use the database clock in UTC.

    ``pre_ping`` lets a background loop ride out a database restart: a dead
    pooled connection is replaced instead of failing the next statement. It
    costs a round trip per checkout, so the API turns it off and answers 503
    for the one request that meets a dead connection (the pool is then renewed).
    """
    return create_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args={
            "application_name": application_name,
            "options": "-c timezone=UTC",
            # Fail fast while the database is away, so loops can retry and leases
            # can be judged in time, instead of hanging in connect().
            "connect_timeout": 5,
        },
    )


def connect_raw(url: str, *, autocommit: bool = True, **kwargs) -> psycopg.Connection:
    """A plain psycopg connection (LISTEN needs one that outlives transactions)."""
    return psycopg.connect(libpq_conninfo(url), autocommit=autocommit, **kwargs)
