"""A store that cannot serve refuses the server's start with one line, never a traceback.

Each case runs ``gearman-proto server --queue ...`` as a user would and reads
what it prints: exit status 1 and one line naming the store and the cause.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _dbs import PostgreSQL, Redis, free_port
from _support import tmpfs


def refused(*args: str, timeout: float = 60, status: int = 1) -> str:
    """Run the server with ``args``; assert it refused to start with one line; the line.

    ``status`` 1 is a start-up failure; 2 a usage error (the value itself is wrong).
    """
    result = subprocess.run(
        [sys.executable, "-m", "gearman_proto.adapters.cli", "server", "--port", "0", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    lines = result.stderr.splitlines()
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gearman-proto server: ")
    return lines[0]


# -- SQLite (issue 11.10 and 11.5) -------------------------------------------------------------


def test_sqlite_missing_directory(tmp_path: Path) -> None:
    line = refused("--queue", f"sqlite:{tmp_path}/nowhere/q.db")
    assert f"{tmp_path}/nowhere" in line and "does not exist" in line


def test_sqlite_corrupt_file(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    db.write_bytes(b"this is not an sqlite file, whatever its name says" * 40)
    line = refused("--queue", f"sqlite:{db}")
    assert str(db) in line and "not a database" in line


def test_sqlite_foreign_table(tmp_path: Path) -> None:
    """gearmand's own libsqlite3 table, say: another shape, refused, left untouched."""
    db = tmp_path / "q.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE gearman_queue (unique_key TEXT, function_name TEXT, "
                     "priority INTEGER, data BLOB, when_to_run INTEGER)")
    line = refused("--queue", f"sqlite:{db}")
    assert str(db) in line and "gearman_queue has columns (unique_key" in line


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only file system with a queue file on it (a tmpfs, remounted read-only)."""
    with tmpfs(tmp_path / "ro", "1m") as mount:
        conn = sqlite3.connect(mount / "q.db")
        conn.execute("CREATE TABLE x (a)")
        conn.close()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount


def test_sqlite_read_only_file(readonly_dir: Path) -> None:
    line = refused("--queue", f"sqlite:{readonly_dir}/q.db")
    assert f"{readonly_dir}/q.db" in line and "Read-only file system" in line


def test_two_servers_on_one_sqlite_file(tmp_path: Path) -> None:
    """Issue 11.5: the second refuses to start, naming the file and the first (its pid)."""
    db = tmp_path / "q.db"
    port = free_port()
    first = subprocess.Popen(
        [sys.executable, "-m", "gearman_proto.adapters.cli", "server", "--port", str(port),
         "--queue", f"sqlite:{db}"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert first.stderr is not None
        assert b"listening" in first.stderr.readline()
        line = refused("--queue", f"sqlite:{db}")
        assert str(db) in line and f"pid {first.pid}" in line and "another job server" in line
    finally:
        first.terminate()
        first.wait(10)
    # Once it is gone, the file serves again.
    again = subprocess.Popen(
        [sys.executable, "-m", "gearman_proto.adapters.cli", "server", "--port", str(port),
         "--queue", f"sqlite:{db}"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert again.stderr is not None
        assert b"listening" in again.stderr.readline()
    finally:
        again.terminate()
        again.wait(10)


# -- the --queue value itself -----------------------------------------------------------------


@pytest.mark.parametrize("spec", ["sqlite:", "mysql://localhost/db", "postgres", "redis:6379",
                                  "postgresql:/x"])
def test_unknown_queue(spec: str) -> None:
    # A value of no known form is a usage error; a known form with a bad rest (an
    # empty path) fails the start.
    known = spec.startswith(("sqlite:", "postgresql://", "redis://"))
    line = refused("--queue", spec, status=1 if known else 2)
    assert repr(spec) in line and "postgresql://" in line


def test_bad_queue_name() -> None:
    line = refused("--queue", "redis://127.0.0.1:1/0", "--queue-name", "has space")
    assert "--queue-name 'has space'" in line


# -- PostgreSQL ------------------------------------------------------------------------------


def test_postgresql_bad_url(postgresql: PostgreSQL) -> None:
    line = refused("--queue", f"postgresql://postgres@127.0.0.1:{postgresql.port}/x?bogus=1")
    assert "postgresql" in line and "bogus" in line


def test_postgresql_refused_connection() -> None:
    port = free_port()
    line = refused("--queue", f"postgresql://postgres@127.0.0.1:{port}/postgres")
    assert f"127.0.0.1:{port}" in line and "refused" in line.lower()


def test_postgresql_bad_credentials(postgresql: PostgreSQL) -> None:
    url = postgresql.url(password="wrong")
    line = refused("--queue", url)
    assert "password authentication failed" in line
    assert "wrong" not in line  # the password is not echoed


def test_postgresql_missing_database(postgresql: PostgreSQL) -> None:
    line = refused("--queue", postgresql.url(database="no_such_db"))
    assert 'database "no_such_db" does not exist' in line


def test_postgresql_table_of_another_schema(postgresql: PostgreSQL, pg_database: str) -> None:
    """gearmand's libpq table under our name: refused, not written to."""
    name = pg_database.rsplit("/", 1)[1]
    postgresql.sql("CREATE TABLE gearman_queue (unique_key TEXT, function_name TEXT, "
                   "priority INTEGER, data BYTEA, when_to_run INTEGER)", database=name)
    line = refused("--queue", pg_database)
    assert "table gearman_queue has columns (unique_key" in line


# -- Redis -----------------------------------------------------------------------------------


def test_redis_refused_connection() -> None:
    port = free_port()
    line = refused("--queue", f"redis://127.0.0.1:{port}/0")
    assert f"127.0.0.1:{port}" in line and "refused" in line.lower()


def test_redis_bad_credentials(redis_factory: object) -> None:
    server: Redis = redis_factory(password="sesame")  # type: ignore[operator]
    line = refused("--queue", f"redis://:wrong@127.0.0.1:{server.port}/0")
    assert "redis" in line and ("invalid" in line.lower() or "auth" in line.lower())
    assert "wrong" not in line


def test_redis_missing_database(redis_server: Redis) -> None:
    line = refused("--queue", redis_server.url(db=99))
    assert "DB index is out of range" in line


def test_redis_keys_of_another_kind(redis_server: Redis) -> None:
    import redis

    redis.Redis(port=redis_server.port).set("gearman-proto:default:jobs", "something else")
    line = refused("--queue", redis_server.url())
    assert "gearman-proto:default:jobs holds a string" in line


def test_two_live_servers_with_one_name_are_refused(redis_server: Redis,
                                                   postgresql: PostgreSQL,
                                                   pg_database: str) -> None:
    for spec in (redis_server.url(), pg_database):
        port = free_port()
        first = subprocess.Popen(
            [sys.executable, "-m", "gearman_proto.adapters.cli", "server", "--port", str(port),
             "--queue", spec, "--queue-name", "shared"],
            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert first.stderr is not None
            assert b"listening" in first.stderr.readline()
            line = refused("--queue", spec, "--queue-name", "shared")
            assert "'shared' is held by another live job server" in line
            assert f"pid {first.pid}" in line
        finally:
            first.terminate()
            first.wait(10)
        time.sleep(0.1)
