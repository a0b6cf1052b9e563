"""A pytest plugin: a Gearman job server for your tests (installed with the package).

Fixtures (``docs/pytest-plugin.md`` has a complete example):

``gearman_server``
    A job server of ours, in this process, on a free loopback port, for one
    test: a :class:`GearmanServer` with ``.address``, ``.host``, ``.port``,
    ``.servers`` (``"host:port"``), ``.job_server`` (the core's
    :class:`~gearman_proto.broker.JobServer`, to inspect), :meth:`~GearmanServer.call`,
    and waits for workers and for an empty queue, blocking or awaitable.
``gearman_server_session``
    The same, one for the whole test session (give each test its own function names).
``gearmand``
    A real gearmand (Debian ``gearman-job-server``) in a child process on a free
    port, for the session; skipped with the apt-get line when gearmand is not
    installed (``--gearmand-required`` or the ``gearmand_required`` ini option
    turns that skip into a failure, for CI; ``$GEARMAND`` names the binary).
    It has the same address attributes and waits, through its admin port.

The server runs its asyncio loop in a thread of its own, so a test may be
plain or async (asyncio, trio, anyio): the blocking waits suit plain tests, the
``*_async`` ones await without blocking the test's event loop.

A conftest fixture of the same name takes precedence over these (pytest looks
at conftest files before plugins); this project's own ``tests/conftest.py``
has its own ``gearmand`` for that reason, of the same shape.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gearman_proto import admin
from gearman_proto.broker import JobServer

from .asyncio import Server
from .sync import AdminClient

__all__ = ["GearmanServer", "Gearmand", "start_gearman_server"]

T = TypeVar("T")

DEFAULT_WAIT = 10.0
"""Seconds a wait gives up after (it then fails the test with what it waited for)."""

_POLL = 0.01


async def _sleep(seconds: float) -> None:
    """Sleep on whichever event loop runs the caller: asyncio (anyio's too) or trio."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        import trio  # not asyncio: trio (or anyio on trio) is the only other loop we serve

        await trio.sleep(seconds)
    else:
        await asyncio.sleep(seconds)


class _Waits:
    """Waiting on a server's status rows, blocking or awaitable (a mixin)."""

    def status(self) -> list[admin.StatusRow]:
        raise NotImplementedError

    def _workers_ready(self, function: str | bytes, count: int) -> bool:
        name = function.encode() if isinstance(function, str) else function
        return any(r.function == name and r.available_workers >= count for r in self.status())

    def _empty(self, function: str | bytes) -> bool:
        name = function.encode() if isinstance(function, str) else function
        return all(r.total == 0 for r in self.status() if r.function == name)

    def wait_for_workers(self, function: str | bytes, count: int = 1,
                         timeout: float = DEFAULT_WAIT) -> None:
        """Block until ``count`` workers have registered ``function`` (for plain tests)."""
        _block(lambda: self._workers_ready(function, count), timeout,
               f"{count} worker(s) for {function!r}")

    def wait_until_empty(self, function: str | bytes, timeout: float = DEFAULT_WAIT) -> None:
        """Block until ``function`` has no job queued or running."""
        _block(lambda: self._empty(function), timeout, f"an empty queue for {function!r}")

    async def wait_for_workers_async(self, function: str | bytes, count: int = 1,
                                     timeout: float = DEFAULT_WAIT) -> None:
        """Await :meth:`wait_for_workers` without blocking the test's event loop."""
        await _poll(lambda: self._workers_ready(function, count), timeout,
                    f"{count} worker(s) for {function!r}")

    async def wait_until_empty_async(self, function: str | bytes,
                                     timeout: float = DEFAULT_WAIT) -> None:
        """Await :meth:`wait_until_empty` without blocking the test's event loop."""
        await _poll(lambda: self._empty(function), timeout, f"an empty queue for {function!r}")


def _block(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        time.sleep(_POLL)


async def _poll(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        await _sleep(_POLL)


class GearmanServer(_Waits):
    """A job server of ours running in a thread of this process, on ``host:port``."""

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop,
                 thread: threading.Thread) -> None:
        self._server = server
        self._loop = loop
        self._thread = thread
        self.host: str = server.host
        self.port: int = server.port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, as every adapter's ``Client``/``Worker`` takes it."""
        return (self.host, self.port)

    @property
    def servers(self) -> str:
        """``"host:port"``, for clients that take strings (PHP, the ``gearman`` tool)."""
        return f"{self.host}:{self.port}"

    @property
    def job_server(self) -> JobServer:
        """The core's job server.  It lives in the server's thread: read it through
        :meth:`call` when the answer must be consistent."""
        return self._server.broker

    def call(self, fn: Callable[[JobServer], T], timeout: float = DEFAULT_WAIT) -> T:
        """Run ``fn(job_server)`` in the server's thread and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(self._server.broker))
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def status(self) -> list[admin.StatusRow]:
        """The admin ``status`` rows (function, total, running, available workers)."""
        return self.call(JobServer.status_rows)

    def stop(self) -> None:
        """Close every connection and stop the server's thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._server.close)
            self._thread.join(DEFAULT_WAIT)

    def __repr__(self) -> str:
        return f"<GearmanServer {self.servers}>"


def start_gearman_server(host: str = "127.0.0.1", **options: Any) -> GearmanServer:
    """Start a job server of ours on a free port of ``host`` in a new thread.

    ``options`` go to :class:`gearman_proto.adapters.asyncio.Server` (and from
    there to the core's ``JobServer``: ``job_retries``, ``exceptions``, ...).
    Stop it with :meth:`GearmanServer.stop`.
    """
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[Server] = concurrent.futures.Future()

    async def main() -> None:
        server = Server(host, 0, **options)
        try:
            await server.start()
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(server)
        await server.serve_forever()

    def run() -> None:
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="gearman-test-server", daemon=True)
    thread.start()
    return GearmanServer(started.result(DEFAULT_WAIT), loop, thread)


@pytest.fixture
def gearman_server() -> Iterator[GearmanServer]:
    """A job server of ours for this test, on a free loopback port (stopped after it)."""
    server = start_gearman_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gearman_server_session() -> Iterator[GearmanServer]:
    """One job server of ours for the whole session (use distinct function names per test)."""
    server = start_gearman_server()
    yield server
    server.stop()


# -- gearmand ----------------------------------------------------------------------------


class Gearmand(_Waits):
    """gearmand in a child process on ``host:port``, logging to ``log``."""

    def __init__(self, proc: subprocess.Popen[bytes], host: str, port: int, log: Path) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.log = log
        self._admin: AdminClient | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def servers(self) -> str:
        return f"{self.host}:{self.port}"

    def status(self) -> list[admin.StatusRow]:
        """The admin ``status`` rows, asked over gearmand's admin protocol."""
        if self._admin is None:
            self._admin = AdminClient(self.address)
        return self._admin.status()

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(DEFAULT_WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __repr__(self) -> str:
        return f"<Gearmand {self.servers}>"


_INSTALL = "apt-get install gearman-job-server"


def _find_gearmand() -> str | None:
    """libgearman's gearmand: ``$GEARMAND`` if set, else /usr/sbin first, since Perl's
    Gearman::Server (Debian's gearman-server) installs a ``gearmand`` in /usr/bin."""
    chosen = os.environ.get("GEARMAND")
    candidates = [chosen] if chosen else [
        "/usr/sbin/gearmand", "/usr/local/sbin/gearmand", shutil.which("gearmand")]
    for path in candidates:
        if path and os.path.exists(path):
            out = subprocess.run([path, "--version"], capture_output=True, text=True)
            if "gearmand" in out.stdout.lower() and out.returncode == 0:
                return path
    return None


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_gearmand(directory: Path, host: str = "127.0.0.1", extra: tuple[str, ...] = ()
                   ) -> Gearmand | None:
    """Start gearmand on a free port, logging into ``directory``; None if not installed."""
    binary = _find_gearmand()
    if binary is None:
        return None
    log = directory / "gearmand.log"
    port = _free_port(host)
    proc = subprocess.Popen(
        [binary, f"--listen={host}", f"--port={port}", "--threads=1", f"--log-file={log}",
         f"--pid-file={directory / 'gearmand.pid'}", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    server = Gearmand(proc, host, port, log)
    deadline = time.monotonic() + DEFAULT_WAIT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gearmand exited with {proc.returncode}; see {log}")
        with contextlib.suppress(OSError):
            socket.create_connection((host, port), timeout=1).close()
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"gearmand did not listen on {port}; see {log}")
        time.sleep(0.05)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gearman", "Gearman job servers (gearman-proto)")
    group.addoption("--gearmand-required", action="store_true", default=None,
                    help="fail, instead of skip, the tests that need gearmand when it is "
                         "not installed")
    parser.addini("gearmand_required", type="bool", default=False,
                  help="fail, instead of skip, tests needing gearmand when it is missing")


@pytest.fixture(scope="session")
def gearmand(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Gearmand]:
    """A real gearmand for the session, on a free loopback port; skipped if not installed."""
    server = start_gearmand(tmp_path_factory.mktemp("gearmand"))
    if server is None:
        message = f"gearmand is not installed ({_INSTALL})"
        if request.config.getoption("gearmand_required") or request.config.getini(
                "gearmand_required"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield server
    server.stop()
