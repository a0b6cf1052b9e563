"""Helpers for the interoperability suite (issue 4): peers, raw packets, a wire tap, adapters.

Everything here is handed to the tests as fixtures (the suite runs with
``--import-mode=importlib``, so test modules cannot import this file):

* ``gearman_tool``, ``gearadmin_tool``, ``perl_gearman``: paths of the peers
  nobody here wrote.  Missing ones skip the test with the apt-get line that
  installs them, or fail it when ``CI`` is set (``.ci/run`` installs them).
* ``server`` (parametrized ``gearmand`` / ``ours``): the session's gearmand
  1.1.20 or the session's ``gearman-proto server`` (tests/conftest.py).
* ``raw``: a factory of :class:`RawPeer`, a client/worker that speaks the
  binary protocol with its own 20-line framing (not our codec), so that a
  differential scenario compares what each server puts on the wire.
* ``tap``: a factory of :class:`WireTap`, a TCP relay that records the packets
  between an adapter and a server (how the PRE_SLEEP / NOOP cycle is seen).
* ``kit`` (parametrized over the four adapters): :class:`Kit`, one synchronous
  face over ``adapters/sync.py``, ``asyncio.py``, ``anyio.py`` (asyncio backend)
  and ``trio.py`` (trio backend), the async ones driven through an anyio
  blocking portal, so one test body runs on every adapter.

Waits are bounded by :data:`BOUND` to end hangs; nothing asserts a duration.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BOUND = 15.0
"""A bound for every wait: long enough never to matter, short enough to end a hang."""

HERE = Path(__file__).parent

_INSTALL = "apt-get install gearman-job-server gearman-tools libgearman-client-perl"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder needs a peer: mark it ``interop``."""
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.interop)


def _missing(what: str) -> None:
    message = f"{what} not found: {_INSTALL}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def gearman_tool() -> str:
    """The ``gearman`` client/worker tool of gearman-tools (libgearman)."""
    path = shutil.which("gearman")
    if path is None:
        _missing("gearman (gearman-tools)")
    return str(path)


@pytest.fixture(scope="session")
def gearadmin_tool() -> str:
    """``gearadmin`` of gearman-tools."""
    path = shutil.which("gearadmin")
    if path is None:
        _missing("gearadmin (gearman-tools)")
    return str(path)


@pytest.fixture(scope="session")
def perl_gearman() -> list[str]:
    """The command that runs tests/interop/gearman_peer.pl (Perl's Gearman::Client/Worker)."""
    perl = shutil.which("perl")
    if perl is None or subprocess.run(
            [perl, "-MGearman::Client", "-MGearman::Worker", "-e1"],
            capture_output=True).returncode != 0:
        _missing("Perl Gearman::Client (libgearman-client-perl)")
    return [str(perl), str(HERE / "gearman_peer.pl")]


@pytest.fixture(params=["gearmand", "ours"])
def server(request: pytest.FixtureRequest) -> Any:
    """The session's gearmand 1.1.20, or the session's ``gearman-proto server``."""
    return request.getfixturevalue("gearmand" if request.param == "gearmand" else "our_server")


def name(label: str) -> str:
    """A function name (or unique id) no other test uses."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def lib() -> Any:
    """This module, for fixtures and helpers in test modules (``lib.RawPeer``, ``lib.Handles``)."""
    import sys

    return sys.modules[__name__]


@pytest.fixture
def fresh() -> Callable[[str], str]:
    """``fresh(label)``: a name no other test uses (tests share the session's servers)."""
    return name


def wait_until(predicate: Callable[[], object], what: str, bound: float = BOUND) -> None:
    """Poll ``predicate`` until true; fail after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def until() -> Callable[..., None]:
    """``until(predicate, what)``: poll until true, fail after a bound."""
    return wait_until


# -- raw binary protocol ------------------------------------------------------------------
#
# Deliberately not gearman_proto's codec: the header is ">4sII" (magic, type,
# size) and the arguments are split on NUL, the last one running to the end.

PACKET_TYPES = {
    "CAN_DO": 1, "CANT_DO": 2, "RESET_ABILITIES": 3, "PRE_SLEEP": 4, "NOOP": 6,
    "SUBMIT_JOB": 7, "JOB_CREATED": 8, "GRAB_JOB": 9, "NO_JOB": 10, "JOB_ASSIGN": 11,
    "WORK_STATUS": 12, "WORK_COMPLETE": 13, "WORK_FAIL": 14, "GET_STATUS": 15,
    "ECHO_REQ": 16, "ECHO_RES": 17, "SUBMIT_JOB_BG": 18, "ERROR": 19, "STATUS_RES": 20,
    "SUBMIT_JOB_HIGH": 21, "SET_CLIENT_ID": 22, "CAN_DO_TIMEOUT": 23, "ALL_YOURS": 24,
    "WORK_EXCEPTION": 25, "OPTION_REQ": 26, "OPTION_RES": 27, "WORK_DATA": 28,
    "WORK_WARNING": 29, "GRAB_JOB_UNIQ": 30, "JOB_ASSIGN_UNIQ": 31, "SUBMIT_JOB_HIGH_BG": 32,
    "SUBMIT_JOB_LOW": 33, "SUBMIT_JOB_LOW_BG": 34, "SUBMIT_JOB_SCHED": 35,
    "SUBMIT_JOB_EPOCH": 36, "SUBMIT_REDUCE_JOB": 37, "SUBMIT_REDUCE_JOB_BACKGROUND": 38,
    "GRAB_JOB_ALL": 39, "JOB_ASSIGN_ALL": 40, "GET_STATUS_UNIQUE": 41,
    "STATUS_RES_UNIQUE": 42,
}
PACKET_NAMES = {v: k for k, v in PACKET_TYPES.items()}
ARG_COUNTS = {
    "CAN_DO": 1, "CANT_DO": 1, "RESET_ABILITIES": 0, "PRE_SLEEP": 0, "NOOP": 0,
    "SUBMIT_JOB": 3, "JOB_CREATED": 1, "GRAB_JOB": 0, "NO_JOB": 0, "JOB_ASSIGN": 3,
    "WORK_STATUS": 3, "WORK_COMPLETE": 2, "WORK_FAIL": 1, "GET_STATUS": 1, "ECHO_REQ": 1,
    "ECHO_RES": 1, "SUBMIT_JOB_BG": 3, "ERROR": 2, "STATUS_RES": 5, "SUBMIT_JOB_HIGH": 3,
    "SET_CLIENT_ID": 1, "CAN_DO_TIMEOUT": 2, "ALL_YOURS": 0, "WORK_EXCEPTION": 2,
    "OPTION_REQ": 1, "OPTION_RES": 1, "WORK_DATA": 2, "WORK_WARNING": 2, "GRAB_JOB_UNIQ": 0,
    "JOB_ASSIGN_UNIQ": 4, "SUBMIT_JOB_HIGH_BG": 3, "SUBMIT_JOB_LOW": 3, "SUBMIT_JOB_LOW_BG": 3,
    "SUBMIT_JOB_SCHED": 8, "SUBMIT_JOB_EPOCH": 4, "SUBMIT_REDUCE_JOB": 5,
    "SUBMIT_REDUCE_JOB_BACKGROUND": 5, "GRAB_JOB_ALL": 0, "JOB_ASSIGN_ALL": 5,
    "GET_STATUS_UNIQUE": 1, "STATUS_RES_UNIQUE": 6,
}
_HEADER = struct.Struct(">4sII")


def frame(magic: bytes, ptype: str, *args: bytes) -> bytes:
    """One binary packet."""
    body = b"\0".join(args)
    return _HEADER.pack(magic, PACKET_TYPES[ptype], len(body)) + body


@dataclass(frozen=True)
class Packet:
    """A decoded packet: its type name and arguments (``magic`` as it came)."""

    name: str
    args: tuple[bytes, ...]
    magic: bytes = b"\0RES"

    def __repr__(self) -> str:
        return f"{self.name}{self.args!r}"


def unframe(buf: bytearray) -> Packet | None:
    """Take one packet off the front of ``buf``, or return None if it is incomplete."""
    if len(buf) < 12:
        return None
    magic, ptype, size = _HEADER.unpack_from(buf)
    if len(buf) < 12 + size:
        return None
    body = bytes(buf[12:12 + size])
    del buf[:12 + size]
    pname = PACKET_NAMES.get(ptype, str(ptype))
    n = ARG_COUNTS.get(pname, 1)
    args = tuple(body.split(b"\0", n - 1)) if n else ()
    return Packet(pname, args, magic)


class Handles:
    """Names job handles ``<1>``, ``<2>``... in order of first appearance.

    gearmand and our server both number handles ``H:<host>:<n>``, but ``n``
    depends on what ran before on that server; a scenario's transcripts are
    compared with every handle replaced by its name.
    """

    _SHAPE = re.compile(rb"^H:[^\t\n ]*:\d+$")

    def __init__(self) -> None:
        self.names: dict[bytes, bytes] = {}

    def learn(self, handle: bytes) -> bytes:
        if handle not in self.names:
            self.names[handle] = b"<%d>" % (len(self.names) + 1)
        return self.names[handle]

    def arg(self, value: bytes) -> bytes:
        return self.learn(value) if self._SHAPE.match(value) else value

    def packet(self, packet: Packet) -> tuple[str, tuple[bytes, ...]]:
        return packet.name, tuple(self.arg(a) for a in packet.args)

    def text(self, text: bytes) -> bytes:
        """Replace every handle already learned (longest first) in an admin reply."""
        for handle in sorted(self.names, key=len, reverse=True):
            text = text.replace(handle, self.names[handle])
        return text


class RawPeer:
    """One connection that sends raw REQ packets and records every RES packet it gets."""

    def __init__(self, address: tuple[str, int], label: str, handles: Handles) -> None:
        self.label = label
        self.handles = handles
        self.sock = socket.create_connection(address, timeout=BOUND)
        self.buf = bytearray()
        self.log: list[tuple[str, tuple[bytes, ...]]] = []
        """Everything received, handles named, in order."""
        self._echo = 0

    def send(self, ptype: str, *args: bytes) -> None:
        self.sock.sendall(frame(b"\0REQ", ptype, *args))

    def recv(self) -> Packet:
        """The next packet from the server (recorded in :attr:`log`)."""
        while True:
            packet = unframe(self.buf)
            if packet is not None:
                if packet.name in ("JOB_CREATED", "JOB_ASSIGN", "JOB_ASSIGN_UNIQ",
                                   "JOB_ASSIGN_ALL"):
                    self.handles.learn(packet.args[0])
                self.log.append(self.handles.packet(packet))
                return packet
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"{self.label}: the server closed the connection")
            self.buf += data

    def expect(self, ptype: str) -> tuple[bytes, ...]:
        """Receive the next packet, which must be ``ptype``; return its arguments."""
        packet = self.recv()
        assert packet.name == ptype, f"{self.label}: expected {ptype}, got {packet}"
        return packet.args

    def sync(self) -> list[tuple[str, tuple[bytes, ...]]]:
        """Receive everything the server sent before an ECHO round trip; return it (named)."""
        self._echo += 1
        token = b"sync-%d" % self._echo
        start = len(self.log)
        self.send("ECHO_REQ", token)
        while True:
            packet = self.recv()
            if packet.name == "ECHO_RES" and packet.args == (token,):
                self.log.pop()  # the barrier itself is not part of the transcript
                return self.log[start:]

    def admin(self, line: str) -> bytes:
        """Send an admin text command; return its whole reply."""
        self.sock.sendall(line.encode() + b"\r\n")
        words = line.lower().split()
        listing = bool(words) and words[0] in ("status", "prioritystatus", "workers", "show")
        while True:
            text = bytes(self.buf)
            done = (text.endswith(b"\n.\n") or text == b".\n" or text.startswith(b"ERR")
                    ) if listing else b"\n" in text
            if done and text.endswith(b"\n"):
                self.buf.clear()
                return text
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"{self.label}: the server closed the connection")
            self.buf += data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@pytest.fixture
def raw() -> Iterator[Callable[..., RawPeer]]:
    """``raw(address, label, handles)``: a :class:`RawPeer`, closed after the test."""
    peers: list[RawPeer] = []

    def make(address: tuple[str, int], label: str, handles: Handles) -> RawPeer:
        peer = RawPeer(address, label, handles)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()


@pytest.fixture
def handles() -> Handles:
    """Handle naming shared by one scenario's peers."""
    return Handles()


# -- a recording relay ----------------------------------------------------------------------


class WireTap:
    """A TCP relay to ``upstream`` that decodes and records the binary packets both ways.

    ``packets(n)`` is connection ``n``'s conversation in order, each entry
    ``(">" or "<", packet)``: ``>`` towards the server, ``<`` from it.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.lock = threading.Lock()
        self.conversations: list[list[tuple[str, Packet]]] = []
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            with self.lock:
                log: list[tuple[str, Packet]] = []
                self.conversations.append(log)
                self._sockets += [down, up]
            threading.Thread(target=self._pump, args=(down, up, ">", log), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, "<", log), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, way: str,
              log: list[tuple[str, Packet]]) -> None:
        buf = bytearray()
        try:
            while data := src.recv(65536):
                buf += data
                # Record before relaying, so that the log never lags what a peer saw.
                with self.lock:
                    while buf[:1] == b"\0" and (packet := unframe(buf)) is not None:
                        log.append((way, packet))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def packets(self, n: int = 0) -> list[tuple[str, str]]:
        """Connection ``n``'s packets so far, as ``(direction, type name)``."""
        with self.lock:
            if n >= len(self.conversations):
                return []
            return [(way, p.name) for way, p in self.conversations[n]]

    def full(self, n: int = 0) -> list[tuple[str, Packet]]:
        with self.lock:
            return list(self.conversations[n]) if n < len(self.conversations) else []

    def close(self) -> None:
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def tap() -> Iterator[Callable[[tuple[str, int]], WireTap]]:
    """``tap(upstream)``: a :class:`WireTap` in front of a server, closed after the test."""
    taps: list[WireTap] = []

    def make(upstream: tuple[str, int]) -> WireTap:
        taps.append(WireTap(upstream))
        return taps[-1]

    yield make
    for t in taps:
        t.close()


# -- the four adapters behind one synchronous face -------------------------------------------


ADAPTERS = ["sync", "asyncio", "anyio", "trio"]


class KitJob:
    """A submitted job, whichever adapter submitted it."""

    def __init__(self, kit: Kit, job: Any) -> None:
        self.kit = kit
        self.job = job

    @property
    def handle(self) -> bytes:
        return bytes(self.job.handle or b"")

    @property
    def state(self) -> str:
        state = self.job.state
        return str(getattr(state, "value", state))

    def result(self, timeout: float = BOUND) -> bytes | None:
        """The job's result (None for a background job); raises what the adapter raises."""
        if self.kit.portal is None:
            return self.job.wait(timeout)  # type: ignore[no-any-return]
        return self.kit.portal.call(functools.partial(self.job.result, timeout))  # type: ignore[no-any-return]

    def updates(self, timeout: float = BOUND) -> list[Any]:
        """Every WORK_DATA / WORK_WARNING / WORK_STATUS until the job ends."""
        if self.kit.portal is None:
            return list(self.job.updates(timeout))

        async def collect() -> list[Any]:
            return [u async for u in self.job.updates(timeout)]
        return self.kit.portal.call(collect)


class KitClient:
    """A client of any adapter, with blocking methods."""

    def __init__(self, kit: Kit, client: Any) -> None:
        self.kit = kit
        self.client = client

    def submit(self, function: str | bytes, data: str | bytes = b"", **kw: Any) -> KitJob:
        return KitJob(self.kit, self.kit.call(self.client.submit, function, data, **kw))

    def do(self, function: str | bytes, data: str | bytes = b"", **kw: Any) -> bytes | None:
        return self.submit(function, data, **kw).result()

    def __getattr__(self, attr: str) -> Any:  # get_status, get_status_unique, echo
        return functools.partial(self.kit.call, getattr(self.client, attr))


class KitWorker:
    """A worker of any adapter: :meth:`serving` runs ``work()`` in the background."""

    def __init__(self, kit: Kit, worker: Any) -> None:
        self.kit = kit
        self.worker = worker

    def register(self, function: str | bytes, handler: Callable[[Any], Any],
                 timeout_ms: int | None = None) -> None:
        self.worker.register(function, handler, timeout_ms)

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Run ``work()`` alongside the body; stop it (not gracefully) on the way out."""
        if self.kit.portal is None:
            done: Future[None] = Future()

            def run() -> None:
                try:
                    self.worker.work()
                    done.set_result(None)
                except BaseException as exc:  # reported below
                    done.set_exception(exc)

            threading.Thread(target=run, daemon=True).start()
        else:
            done = self.kit.portal.start_task_soon(self.worker.work)
        try:
            yield
        finally:
            deadline = time.monotonic() + BOUND
            while not done.done():  # stop() before work() started is a no-op: repeat
                assert time.monotonic() < deadline, "work() did not return after stop()"
                if self.kit.portal is None:
                    self.worker.stop(graceful=False)
                else:
                    self.kit.portal.call(self.worker.stop, False)
                with contextlib.suppress(TimeoutError):
                    done.result(0.05)
            done.result()


class KitAdmin:
    """An AdminClient of any adapter, with blocking methods."""

    def __init__(self, kit: Kit, admin: Any) -> None:
        self.kit = kit
        self.admin = admin

    def __getattr__(self, attr: str) -> Any:
        return functools.partial(self.kit.call, getattr(self.admin, attr))


class Kit:
    """One adapter (``sync``, ``asyncio``, ``anyio`` or ``trio``) behind blocking calls.

    The async adapters run in an anyio blocking portal: asyncio's and anyio's
    on the asyncio backend, trio's on the trio backend.
    """

    def __init__(self, kind: str, portal: Any) -> None:
        self.kind = kind
        self.portal = portal
        self.module: Any = __import__(f"gearman_proto.adapters.{kind}", fromlist=["Client"])
        self._closers: list[Callable[[], None]] = []

    def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        if self.portal is None:
            return fn(*args, **kw)
        return self.portal.call(functools.partial(fn, *args, **kw))

    def client(self, address: tuple[str, int], **kw: Any) -> KitClient:
        """A client (closed after the test)."""
        kw.setdefault("result_timeout", BOUND)
        client = self.module.Client([address], **kw)
        self._closers.append(lambda: self.call(client.close))
        return KitClient(self, client)

    def worker(self, address: tuple[str, int], **kw: Any) -> KitWorker:
        return KitWorker(self, self.module.Worker([address], **kw))

    def admin(self, address: tuple[str, int]) -> KitAdmin:
        """An AdminClient (closed after the test)."""
        admin = self.module.AdminClient(address)
        self._closers.append(lambda: self.call(admin.close))
        return KitAdmin(self, admin)

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()


@pytest.fixture(params=ADAPTERS)
def kit(request: pytest.FixtureRequest) -> Iterator[Kit]:
    """Each adapter in turn, behind :class:`Kit` (parametrize indirectly to pick some)."""
    kind = request.param
    if kind == "sync":
        k = Kit(kind, None)
        yield k
        k.close()
        return
    import anyio.from_thread

    backend = "trio" if kind == "trio" else "asyncio"
    with anyio.from_thread.start_blocking_portal(backend) as portal:
        k = Kit(kind, portal)
        yield k
        k.close()


@dataclass
class Tool:
    """What a command-line peer printed."""

    returncode: int
    stdout: bytes
    stderr: bytes
    args: list[str] = field(default_factory=list)


def run_tool(args: list[str], stdin: bytes = b"", timeout: float = BOUND) -> Tool:
    """Run a peer's command to its end (bounded) and return what it printed."""
    proc = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout)
    return Tool(proc.returncode, proc.stdout, proc.stderr, args)


@pytest.fixture
def run() -> Callable[..., Tool]:
    """``run(args, stdin=b"")``: run a peer's command to its end; stdout, stderr, returncode."""
    return run_tool
