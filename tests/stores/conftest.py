"""Fixtures of the store tests: real PostgreSQL and Redis servers (see ``_dbs.py``)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the test modules import _dbs
sys.path.insert(0, str(Path(__file__).parent.parent / "reliability"))  # _support, _worker

from _dbs import PostgreSQL, QueueSpec, Redis, free_port, missing, pg_bindir, tempdir
from _support import workers  # noqa: F401  (the fixture, shared with the store tests)


@pytest.fixture(scope="session")
def postgresql() -> Iterator[PostgreSQL]:
    """One PostgreSQL for the session; a test that stops it starts it again."""
    pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")
    bindir = pg_bindir()
    directory = tempdir("gp-pg-")
    server = PostgreSQL(directory, free_port(), bindir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pg_database(postgresql: PostgreSQL, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database for one test: its URL."""
    if postgresql.proc is None:
        postgresql.start()
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50].lower()
    postgresql.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    postgresql.sql(f"CREATE DATABASE {name}")
    return postgresql.url(database=name)


def _redis_binary() -> str:
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server"
                                               if os.path.exists("/usr/bin/redis-server")
                                               else None)
    if binary is None:
        missing("redis-server (apt-get install redis-server)")
    assert binary is not None
    return binary


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., Redis]]:
    """Start Redis servers for one test: ``factory(password=None)``; stopped after it."""
    pytest.importorskip("redis") if not os.environ.get("CI") else __import__("redis")
    binary = _redis_binary()
    started: list[tuple[Redis, Path]] = []

    def factory(password: str | None = None) -> Redis:
        directory = tempdir("gp-redis-")
        server = Redis(directory, free_port(), binary, password)
        started.append((server, directory))
        return server.start()  # type: ignore[return-value]

    yield factory
    for server, directory in started:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis_server(redis_factory: Callable[..., Redis]) -> Redis:
    """A fresh Redis for one test."""
    return redis_factory()


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def queue_spec(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> QueueSpec:
    """A fresh durable queue of each kind: SQLite file, PostgreSQL database, Redis server."""
    if store_kind == "sqlite":
        return QueueSpec("sqlite", f"sqlite:{tmp_path / 'queue.db'}", None)
    if store_kind == "postgresql":
        pg: PostgreSQL = request.getfixturevalue("postgresql")
        return QueueSpec("postgresql", request.getfixturevalue("pg_database"), pg)
    redis_server: Redis = request.getfixturevalue("redis_server")
    return QueueSpec("redis", redis_server.url(), redis_server)
