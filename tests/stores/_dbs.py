"""Real PostgreSQL and Redis servers for the store tests, started on free loopback ports.

The fixtures that start them are in ``conftest.py``.

Each runs from the Debian packages (``postgresql``, ``redis-server``) in a
temporary directory of its own, as a child process of the test run: no system
service is used.  PostgreSQL refuses to run as root, so as root it runs as the
``postgres`` user the package creates.  :meth:`DatabaseServer.stop` (``kill``
for SIGKILL) and :meth:`DatabaseServer.start` again on the same port and
directory give the outages the tests need.

Without the servers (or psycopg / redis-py) the tests that need them are
skipped, except under ``CI``, where that is a failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PG_PASSWORD = "gearman-secret"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing(what: str) -> None:
    message = f"{what} not found"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class DatabaseServer:
    """A database server process in ``directory`` on ``127.0.0.1:port``."""

    name = "database"

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.log = directory / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def popen_options(self) -> dict[str, object]:
        return {}

    def start(self, timeout: float = 30.0) -> DatabaseServer:
        """Start it and wait until it accepts connections and is ready."""
        log = self.log.open("ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, **self.popen_options())  # type: ignore[call-overload]
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.tail()}")
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise RuntimeError(f"{self.name} did not start: {self.tail()}")
            time.sleep(0.05)
        return self

    def ready(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        """SIGKILL (``kill``) or a fast shutdown, by pid; waits for the process."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else self.stop_signal)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stop_signal = signal.SIGTERM

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"


class PostgreSQL(DatabaseServer):
    """``postgres`` on a fresh cluster; password (scram) auth over TCP for user ``postgres``."""

    name = "postgresql"
    stop_signal = signal.SIGINT  # fast shutdown: no waiting for clients

    def __init__(self, directory: Path, port: int, bindir: str) -> None:
        super().__init__(directory, port)
        self.bindir = bindir
        self.data = directory / "data"
        as_root = os.geteuid() == 0
        self.user = pwd.getpwnam("postgres") if as_root else None
        pwfile = directory / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self.user is not None:
            for path in (directory, pwfile):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        subprocess.run([f"{bindir}/initdb", "-D", str(self.data), "-U", "postgres",
                        "--auth-local=trust", "--auth-host=scram-sha-256",
                        f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, **self.popen_options())  # type: ignore[call-overload]
        self.log.touch()
        if self.user is not None:
            os.chown(self.log, self.user.pw_uid, self.user.pw_gid)

    def popen_options(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid,
                "extra_groups": [], "env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}}

    def command(self) -> list[str]:
        return [f"{self.bindir}/postgres", "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={self.directory}",
                "-c", "fsync=on", "-c", "max_connections=40", "-c", "shared_buffers=16MB"]

    def start(self, timeout: float = 30.0) -> DatabaseServer:
        """Start it; after a kill -9, once the old server's backends have let go.

        A SIGKILLed postmaster leaves its backends running until each notices,
        holding the shared memory; a postmaster started meanwhile refuses
        ("pre-existing shared memory block ... is still in use").
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return super().start(max(1.0, deadline - time.monotonic()))
            except RuntimeError as exc:
                if "is still in use" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def ready(self) -> bool:
        result = subprocess.run([f"{self.bindir}/pg_isready", "-h", "127.0.0.1", "-p",
                                 str(self.port), "-q"], check=False)
        return result.returncode == 0

    def url(self, user: str = "postgres", password: str = PG_PASSWORD,
            database: str = "postgres") -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run SQL with psql (as the superuser, over TCP); its output."""
        result = subprocess.run(
            [f"{self.bindir}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", database, "-Atq", "-v", "ON_ERROR_STOP=1", "-c", statement],
            env={**os.environ, "PGPASSWORD": PG_PASSWORD}, capture_output=True, text=True,
            check=True)
        return result.stdout.strip()


class Redis(DatabaseServer):
    """``redis-server`` with an append-only file fsynced on every write."""

    name = "redis"

    def __init__(self, directory: Path, port: int, binary: str, password: str | None = None
                 ) -> None:
        super().__init__(directory, port)
        self.binary = binary
        self.password = password

    def command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--appendonly", "yes",
                "--appendfsync", "always", "--save", "", "--daemonize", "no",
                "--protected-mode", "no",
                *(["--requirepass", self.password] if self.password else [])]

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"


def pg_bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        missing("PostgreSQL (apt-get install postgresql)")
    return os.path.dirname(found[-1])


def tempdir(prefix: str) -> Path:
    # Not under pytest's tmp_path: as root that is closed to the postgres user.
    return Path(tempfile.mkdtemp(prefix=prefix))



class QueueSpec:
    """A ``--queue`` value for one store kind, and how to stop/start its database."""

    def __init__(self, kind: str, spec: str, database: DatabaseServer | None) -> None:
        self.kind = kind
        self.spec = spec
        self.database = database
