from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import Engine, text

from api import create_app
from jobqueue.db import make_engine
from jobqueue.queue import JobQueue
from jobqueue.settings import Settings
from jobqueue.testing import DatabaseFactory, postgres_server
from jobqueue.worker_store import WorkerIdentity, WorkerStore
from tests.helpers import Api, make_settings


@pytest.fixture(scope="session")
def databases() -> Iterator[DatabaseFactory]:
    with postgres_server() as server_url:
        factory = DatabaseFactory(server_url)
        try:
            yield factory
        finally:
            factory.close()


@pytest.fixture
def database_url(databases: DatabaseFactory) -> Iterator[str]:
    """A fresh, migrated database for this test alone."""
    url = databases.create()
    try:
        yield url
    finally:
        databases.drop(url)


@pytest.fixture(scope="module")
def module_database(databases: DatabaseFactory) -> Iterator[str]:
    url = databases.create()
    try:
        yield url
    finally:
        databases.drop(url)


@pytest.fixture
def emptied_module_database(module_database: str) -> str:
    """The module's migrated database, emptied before each test.

    For modules with many small tests: cloning a fresh database costs a checkpoint
    (~0.4 s), emptying one a few milliseconds, and each test still starts from an
    empty queue. A module opts in by defining ``database_url`` as this fixture.
    """
    engine = make_engine(module_database, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM jobs"))  # events, logs and metrics cascade
            conn.execute(text("DELETE FROM workers"))
    finally:
        engine.dispose()
    return module_database


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        lease_seconds=30,
        heartbeat_seconds=1,
        retry_backoff_seconds=30,
        state_dir="/nonexistent",
    )


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=10)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def queue(engine: Engine, settings: Settings) -> JobQueue:
    return JobQueue(engine, settings)


@pytest.fixture
def store(engine: Engine, settings: Settings) -> WorkerStore:
    return WorkerStore(engine, settings)


@pytest.fixture
def worker(store: WorkerStore) -> WorkerIdentity:
    """A live worker with 4 GPUs that knows kind ``train`` in pool ``default``."""
    identity = WorkerIdentity(
        name="gpu-a", pools=("default",), kinds=("train",), gpu_ids=(0, 1, 2, 3)
    )
    store.heartbeat_worker(identity, free_gpus=4)
    return identity


# -- the API over a test's database --------------------------------------------------------


@pytest.fixture
def api_settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def app(api_settings: Settings, engine: Engine) -> Flask:
    """The API over this test's own fresh database."""
    return create_app(api_settings, engine=engine, background=False)


@pytest.fixture
def api(app: Flask) -> Api:
    return Api(app.test_client())


@pytest.fixture(scope="module")
def shared_api(databases: DatabaseFactory) -> Iterator[Api]:
    """One API over one database for a whole module: for checks that leave nothing behind
    (refused input, auth, unknown ids), where a fresh database per test costs more than
    the test."""
    url = databases.create()
    engine = make_engine(url, pool_size=2)
    try:
        yield Api(create_app(make_settings(url), engine=engine, background=False).test_client())
    finally:
        engine.dispose()
        databases.drop(url)
