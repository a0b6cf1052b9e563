"""Helpers of the reliability suite: raw peers, worker processes, process measurements.

The tests here run real processes on loopback: our server (``our_server_factory``
from ``tests/conftest.py``), worker processes started from ``_worker.py`` and
killed with SIGKILL, and raw sockets that speak the protocol through the core's
own connection classes, so what a test counts is exactly what went over the wire.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gearman_proto import NeedData, admin
from gearman_proto.client import ClientConnection
from gearman_proto.events import Event
from gearman_proto.packets import REQ, RES, Decoder, Packet, PacketType, TextLine, encode_packet

HERE = Path(__file__).parent
WORKER_SCRIPT = HERE / "_worker.py"
BOUND = 60.0
"""Seconds after which a wait that should have ended is a failure (not a measurement)."""

Address = tuple[str, int]
ServerProcess = Any
"""``tests/conftest.py``'s ServerProcess (``.address``, ``.port``, ``.pid``, ``.start()``,
``.stop(kill=)``), which a test module cannot import by name."""


def packet(ptype: PacketType, *args: bytes) -> bytes:
    """One request packet, as a client or worker sends it."""
    return encode_packet(REQ, ptype, args)


class Raw:
    """A blocking socket to a job server that sends raw bytes and reads what comes back.

    Replies are decoded by the core's :class:`Decoder` (binary packets and text
    lines alike); :meth:`read` returns ``None`` once the server closed.
    """

    def __init__(self, address: Address, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.decoder = Decoder(RES, allow_text=True, max_packet_size=0, max_line_length=0)
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float = 10.0) -> Packet | TextLine | None:
        """The next packet or line; ``None`` if the server closed the connection."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.decoder.next()
            if item is not None:
                return item
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from the server")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                if self.decoder.buffered:
                    raise AssertionError(f"{self.decoder.buffered} bytes of a partial reply")
            else:
                self.decoder.feed(data)

    def read_all_until_close(self, timeout: float = 10.0) -> list[Packet | TextLine]:
        """Everything the server still sends, up to its close."""
        items = []
        while (item := self.read(timeout)) is not None:
            items.append(item)
        return items

    def is_closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection within ``timeout`` (sending nothing)."""
        try:
            return self.read(timeout) is None
        except TimeoutError:
            return False

    def echo_works(self, payload: bytes = b"ping") -> bool:
        self.send(packet(PacketType.ECHO_REQ, payload))
        reply = self.read()
        return reply == Packet(RES, PacketType.ECHO_RES, (payload,))

    def admin(self, line: bytes) -> list[bytes]:
        """Send an admin command; the reply's lines (up to ``.`` for list replies)."""
        self.send(line + b"\r\n")
        lines = []
        while True:
            item = self.read()
            assert isinstance(item, TextLine), item
            lines.append(item.line)
            if item.line == b"." or item.line.startswith((b"OK", b"ERR")) or (
                    not line.startswith((b"status", b"workers", b"show", b"priority"))):
                return lines

    def close(self, reset: bool = False) -> None:
        """Close; with ``reset``, abruptly (RST, as a crashed peer's kernel may send)."""
        if reset:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        self.sock.close()


class RawClient:
    """A pipelining client on the core's :class:`ClientConnection` over a blocking socket.

    Counts what the clients' view of the server is: every event received, in order.
    """

    def __init__(self, address: Address, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.conn = ClientConnection(max_packet_size=0)
        # poll(), not select(): a test holding thousands of sockets has fds past 1024.
        self._poll = select.poll()
        self._poll.register(self.sock, select.POLLIN)

    def _readable(self, timeout: float) -> bool:
        return bool(self._poll.poll(timeout * 1000))

    def send(self, *events: Event) -> None:
        self.sock.sendall(b"".join(self.conn.send(e) for e in events))

    def events(self, timeout: float) -> Iterator[Event]:
        """Yield events as they arrive, until ``timeout`` passes with none (then stop)."""
        while True:
            if not self._readable(timeout):
                return
            data = self.sock.recv(262144)
            self.conn.receive_data(data)
            yield from self.conn.events()
            if not data:
                return

    def poll(self, timeout: float) -> list[Event]:
        """The events of one read (waiting up to ``timeout`` for it); ``[]`` if none came."""
        if not self._readable(timeout):
            return []
        data = self.sock.recv(262144)
        self.conn.receive_data(data)
        return list(self.conn.events())

    def close(self) -> None:
        self.sock.close()


def admin_rows(address: Address, request: admin.AdminRequest) -> admin.AdminResult:
    """Run one admin command on a fresh connection and parse its reply."""
    with socket.create_connection(address, timeout=10) as sock:
        conn = admin.AdminClientConnection()
        sock.sendall(conn.send(request))
        while True:
            data = sock.recv(65536)
            conn.receive_data(data)
            result = conn.next_event()
            if not isinstance(result, NeedData):
                return result
            if not data:
                raise AssertionError("server closed during an admin command")


def status_of(address: Address) -> dict[bytes, admin.StatusRow]:
    rows = admin_rows(address, admin.Status())
    assert isinstance(rows, list)
    return {row.function: row for row in rows}  # type: ignore[union-attr]


def wait_for(condition: Callable[[], bool], timeout: float = BOUND, what: str = "",
             interval: float = 0.05) -> None:
    """Poll until ``condition()`` holds; fail (naming ``what``) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or condition}")
        time.sleep(interval)


# -- processes ------------------------------------------------------------------------------


class WorkerProcess:
    """A worker process (``_worker.py``) that logs ``start``/``end`` lines per job to ``log``."""

    def __init__(self, address: Address, function: str, log: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), address[0], str(address[1]), function,
             str(log), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, by pid, and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


def read_runs(log: Path) -> list[tuple[str, str, int]]:
    """``(event, job id, pid)`` lines written by worker processes (``start``/``end``)."""
    runs = []
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:  # a line cut short by SIGKILL is not a run record
                runs.append((parts[0], parts[1], int(parts[2])))
    return runs


class RunLogTail:
    """Follows a worker log as it grows: which worker pids have started a job so far."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = 0
        self.working: set[int] = set()

    def update(self) -> set[int]:
        if self.log.exists():
            with self.log.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
            end = data.rfind(b"\n") + 1
            self.offset += end
            for line in data[:end].splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == b"start":
                    self.working.add(int(parts[2]))
        return self.working


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    """Open file descriptors of process ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-files limit towards ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port_for(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def workers() -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes: ``workers(address, function, log, *args)``; all killed after."""
    started: list[WorkerProcess] = []

    def start(address: Address, function: str, log: Path, *args: str) -> WorkerProcess:
        w = WorkerProcess(address, function, log, *args)
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()


def kill_and_restart(server: ServerProcess, rng: random.Random, cycles: int,
                     up: tuple[float, float]) -> None:
    """Kill ``server`` with SIGKILL and start it again ``cycles`` times, after a random
    time up (seconds, in the range ``up``) and a random time down; then let it settle."""
    for _ in range(cycles):
        time.sleep(rng.uniform(*up))
        server.stop(kill=True)
        time.sleep(rng.uniform(0.0, 0.3))
        server.start()
    time.sleep(0.5)


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``) mounted on the new directory ``mount``,
    lazily unmounted at the end.  Mounting needs root: CI runs as root, so there a
    missing right fails the test; elsewhere it is skipped."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: mount a tmpfs")
        pytest.skip("mounting a tmpfs needs root")
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
