"""Running ``gearman-proto`` as a user does: subprocesses, servers, workers, a terminal.

``gp(...)`` runs the command to the end; ``serving(...)`` keeps a server up for a
block; ``working(...)`` runs a blocking-adapter worker (a handler the test
controls) in a thread; ``Terminal`` runs the command on a pseudo-terminal and
renders what the user's screen shows (pyte), and can type Ctrl-C at it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
from gearman_proto.adapters.sync import AdminClient, Worker

if TYPE_CHECKING:
    from conftest import ServerProcess

BOUND = 30
CLI = [sys.executable, "-m", "gearman_proto.adapters.cli"]
Factory = Callable[..., "ServerProcess"]


def name(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def gp(*args: str, input: bytes | None = None, timeout: float = BOUND
       ) -> subprocess.CompletedProcess[bytes]:
    """Run ``gearman-proto ARGS`` to the end."""
    return subprocess.run([*CLI, *args], input=input, capture_output=True, timeout=timeout)


def at(server: Any) -> list[str]:
    """``-h HOST -p PORT`` for a server."""
    return ["-h", server.host, "-p", str(server.port)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(*flags: str, port: int | None = None) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``gearman-proto server FLAGS`` until the block ends; waits for its ready line."""
    port = port or free_port()
    args = [*CLI, "server", *flags]
    if "-p" not in flags and "--port" not in flags:
        args += ["--port", str(port)]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_listening(proc, port)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=BOUND)


def wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + BOUND
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {proc.stderr.read()!r}"  # type: ignore[union-attr]
                        if proc.stderr else "server exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"server not listening on {port}")
            time.sleep(0.05)


@contextmanager
def working(servers: Any, function: str, handler: Callable[..., Any], max_jobs: int = 1,
            **kwargs: Any) -> Iterator[Worker]:
    """A blocking-adapter worker in a thread for the block's duration."""
    worker = Worker(servers, max_jobs=max_jobs, reconnect_delay=0.1, **kwargs)
    worker.register(function, handler)
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop(graceful=False)
        thread.join(BOUND)


def status(server: Any, function: str, **kwargs: Any) -> tuple[int, int, int]:
    with AdminClient(getattr(server, "address", server), **kwargs) as admin:
        for row in admin.status():
            if row.function == function.encode():
                return row.total, row.running, row.available_workers
    return 0, 0, 0


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server accepts connections on ``port`` now."""
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def eventually(predicate: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def reverse(job: Any) -> bytes:
    return bytes(job.data[::-1])


def lose_a_worker(address: tuple[str, int], f: str) -> None:
    """A worker takes the job and its connection dies before it answers."""
    taken = threading.Event()
    release = threading.Event()

    def hold(job: Any) -> bytes:
        taken.set()
        release.wait(BOUND)
        return b"too late"
    with working(address, f, hold):
        assert taken.wait(BOUND)
    release.set()


def peer(tool: str) -> str:
    """The path of a Debian peer (gearmand, gearman, gearadmin): skipped when missing,
    failed under CI (.ci/run installs them)."""
    path = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/usr/bin/{tool}") if os.path.exists(p)), None)
    if path is None:
        message = f"{tool} not installed: apt-get install gearman-job-server gearman-tools"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class Terminal:
    """``gearman-proto ARGS`` with a pseudo-terminal as its controlling terminal.

    Standard input, output and error are the terminal (as in a shell), unless
    ``stdin`` is given.  :meth:`screen` renders everything written so far on an
    80x24 VT100 (pyte) and gives its lines, right-stripped and without the
    trailing blank ones.
    """

    def __init__(self, *args: str, stdin: int | None = None) -> None:
        master, slave = pty.openpty()
        self.master = master
        self.output = bytearray()

        def own_terminal() -> None:  # a session of its own, the pty its terminal
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen([*CLI, *args], stdin=slave if stdin is None else stdin,
                                     stdout=slave, stderr=slave, preexec_fn=own_terminal,
                                     close_fds=True)
        os.close(slave)

    def read(self, until: bytes | None = None, timeout: float = BOUND) -> bytes:
        """Read what the command wrote, until ``until`` appears (or it exits)."""
        deadline = time.monotonic() + timeout
        while until is None or until not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{until!r} never shown; the terminal has {bytes(self.output)!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the command exited and closed the terminal
                    chunk = b""
                if not chunk:
                    if until is None:
                        break
                    pytest.fail(f"exited before showing {until!r}: {bytes(self.output)!r}")
                self.output += chunk
            elif until is None and self.proc.poll() is not None:
                break
        return bytes(self.output)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait(self) -> int:
        """Read to the end and give the exit status."""
        code = self.proc.wait(BOUND)
        self.read()
        return code

    def screen(self) -> list[str]:
        import pyte
        screen = pyte.Screen(80, 24)
        stream = pyte.ByteStream(screen)
        # A terminal's line discipline turns \n into \r\n (onlcr); the pty did that already.
        stream.feed(bytes(self.output))
        lines = [line.rstrip() for line in screen.display]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(BOUND)
        os.close(self.master)


@contextmanager
def terminal(*args: str, stdin: int | None = None) -> Iterator[Terminal]:
    term = Terminal(*args, stdin=stdin)
    try:
        yield term
    finally:
        term.close()
