"""Real job servers to test against, started as child processes on free local ports.

``gearmand`` (session-scoped) is one gearmand for the whole run;
``gearmand_factory`` starts more (a second server, one to stop and restart) and
stops them after the test.  Both give :class:`ServerProcess` objects with
``.host``, ``.port`` and ``.log``.  Another server (ours) fits the same shape:
give :class:`ServerProcess` the command line that starts it.

Without gearmand the tests that need it are skipped, except when the ``CI``
environment variable is set: there a missing server is a failure.  When a test
fails, the end of every server's log is attached to its report.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # only the property tests need it
    pass
else:
    # No test asserts a time: on a loaded machine (CI, two cores) an example
    # that takes longer than hypothesis's 200 ms default is no failure.
    _hypothesis_settings.register_profile("gearman-proto", deadline=None)
    _hypothesis_settings.load_profile("gearman-proto")

_LIVE: list[ServerProcess] = []
"""Servers whose log goes into the report of a failing test."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A job server in a child process, listening on ``host:port``, logging to ``log``.

    ``command(port)`` gives its command line.  :meth:`start` waits until it
    accepts connections; :meth:`stop` ends it by pid; :meth:`start` again
    reuses the same port.
    """

    def __init__(self, name: str, command: Callable[[int], list[str]], log: Path,
                 host: str = "127.0.0.1", port: int | None = None) -> None:
        self.name = name
        self.command = command
        self.log = log
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, as the adapters take it."""
        return (self.host, self.port)

    @property
    def pid(self) -> int:
        """The running server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 10.0) -> ServerProcess:
        """Start the server and wait until it accepts connections."""
        self.proc = subprocess.Popen(self.command(self.port), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.tail()}")
            try:
                socket.create_connection(self.address, timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.name} did not listen on {self.port}:\n"
                                       f"{self.tail()}") from None
                time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        """End the server by pid (SIGTERM, or SIGKILL with ``kill``) and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def tail(self, lines: int = 60) -> str:
        """The end of the server's log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"


def _gearmand_binary() -> str:
    # /usr/sbin first: Perl's Gearman::Server (Debian gearman-server, in the
    # interop suite) installs another `gearmand`, in /usr/bin.
    path = next(
        (p for p in ("/usr/sbin/gearmand", "/usr/local/sbin/gearmand") if os.path.exists(p)),
        None) or shutil.which("gearmand")
    if path is None:
        message = "gearmand not found: apt-get install gearman-job-server"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def make_gearmand(directory: Path, port: int | None = None,
                  extra: tuple[str, ...] = ()) -> ServerProcess:
    """A (not yet started) gearmand on 127.0.0.1 writing its log and pid file to ``directory``."""
    binary = _gearmand_binary()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "gearmand.log"

    def command(p: int) -> list[str]:
        return [binary, "--listen=127.0.0.1", f"--port={p}", "--threads=1", "-l", str(log),
                "--pid-file", str(directory / "gearmand.pid"), "--verbose=INFO", *extra]

    return ServerProcess("gearmand", command, log, port=port)


class _Started:
    """The servers one fixture started: their logs join failing reports; stopped at teardown."""

    def __init__(self) -> None:
        self.servers: list[ServerProcess] = []

    def start(self, server: ServerProcess) -> ServerProcess:
        self.servers.append(server)
        _LIVE.append(server)
        return server.start()

    def stop_all(self) -> None:
        for server in self.servers:
            _LIVE.remove(server)
            server.stop()


@pytest.fixture(scope="session")
def gearmand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One gearmand 1.1.x for the whole test session."""
    started = _Started()
    yield started.start(make_gearmand(tmp_path_factory.mktemp("gearmand")))
    started.stop_all()


@pytest.fixture
def gearmand_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start extra gearmands for one test: ``factory(port=None, extra=())``; stopped after it."""
    started = _Started()

    def factory(port: int | None = None, extra: tuple[str, ...] = ()) -> ServerProcess:
        return started.start(make_gearmand(tmp_path / f"gearmand{len(started.servers)}",
                                           port, extra))

    yield factory
    started.stop_all()


def make_our_server(directory: Path, port: int | None = None, extra: tuple[str, ...] = (),
                    loop: str = "asyncio") -> ServerProcess:
    """A (not yet started) ``gearman-proto server`` on 127.0.0.1, logging to ``directory``.

    It runs the console script's code in a child process, so a test can kill it
    (SIGKILL) and restart it on the same port, as a real deployment would.
    """
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "gearman-proto.log"

    def command(p: int) -> list[str]:
        return [sys.executable, "-m", "gearman_proto.adapters.cli", "server",
                "--listen", "127.0.0.1", "--port", str(p), "--loop", loop,
                "--verbose", "INFO", "--log-file", str(log), *extra]

    return ServerProcess("gearman-proto", command, log, port=port)


@pytest.fixture(scope="session")
def our_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One of our job servers (asyncio, in-memory queue) for the whole test session."""
    started = _Started()
    yield started.start(make_our_server(tmp_path_factory.mktemp("ours")))
    started.stop_all()


@pytest.fixture
def our_server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start more of our servers for one test: ``factory(port=None, extra=(), loop="asyncio")``."""
    started = _Started()

    def factory(port: int | None = None, extra: tuple[str, ...] = (),
                loop: str = "asyncio") -> ServerProcess:
        return started.start(make_our_server(tmp_path / f"ours{len(started.servers)}", port,
                                             extra, loop))

    yield factory
    started.stop_all()


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers shared by the tests of one module: ``factory(kind, extra=())`` with
    ``kind`` ``"gearmand"`` or ``"ours"`` (asyncio); all stopped after the module."""
    started = _Started()

    def factory(kind: str, extra: tuple[str, ...] = ()) -> ServerProcess:
        directory = tmp_path_factory.mktemp(kind)
        return started.start(make_gearmand(directory, extra=extra) if kind == "gearmand"
                             else make_our_server(directory, extra=extra))

    yield factory
    started.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """Attach the end of each live server's log to a failing test's report."""
    report = yield
    if report.failed:
        for server in _LIVE:
            report.sections.append((f"{server.name} on port {server.port}: {server.log}",
                                    server.tail()))
    return report
