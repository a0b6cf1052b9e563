"""Run one case against a live job server and against the model, step by step, and judge.

The model is our own :class:`~gearman_proto.hub.ServerHub` and
:class:`~gearman_proto.broker.JobServer`, fed the very bytes the target is
sent.  After every step each open connection is *synchronised*: it sends an
ECHO_REQ with a fresh token and everything the target sends it until the
ECHO_RES with that token is what the step caused there (a server answers one
connection's packets in order, and the step's connection is synchronised
first, so what it caused on the others is queued before their echoes).  A
connection that closed in the step is read until EOF instead.

Three things are findings:

* ``crash`` -- the target stops accepting connections (it died), or ``hang``
  -- it accepts but a fresh connection's ECHO_REQ goes unanswered;
* ``violation`` -- it sends bytes that do not decode as Gearman (bad magic,
  unknown type, wrong argument count) or a packet the connection's role may
  not receive (JOB_ASSIGN to a client, say);
* ``divergence`` -- what one connection received in a step differs from the
  model's answer, job handles named in order of appearance and admin
  listings compared as sets (a job completed twice, a result sent to the
  wrong client, a job lost while its worker lives all show up this way).
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gearman_proto.broker import JobServer
from gearman_proto.errors import RemoteProtocolError
from gearman_proto.hub import ServerHub
from gearman_proto.packets import (
    RECEIVABLE,
    RES,
    Decoder,
    Packet,
    PacketType,
    Role,
    TextLine,
    encode_packet,
)

from .case import Case, Line, Raw, Step, encode_item, resolver

__all__ = ["Target", "Finding", "Outcome", "run_case"]

_ECHO = struct.Struct(">4sII")
_ROLE = {"client": Role.CLIENT, "worker": Role.WORKER}
# Where each packet the server sends carries a job handle (argument 0).
_HANDLE_AT_0 = frozenset({PacketType.JOB_CREATED, PacketType.JOB_ASSIGN,
                          PacketType.JOB_ASSIGN_UNIQ, PacketType.JOB_ASSIGN_ALL,
                          PacketType.WORK_STATUS, PacketType.WORK_COMPLETE,
                          PacketType.WORK_FAIL, PacketType.WORK_EXCEPTION,
                          PacketType.WORK_DATA, PacketType.WORK_WARNING,
                          PacketType.STATUS_RES})
_LISTINGS = (b"status", b"workers", b"show jobs", b"show unique jobs", b"prioritystatus")


@dataclass
class Finding:
    """What went wrong: ``kind`` (crash, hang, violation, divergence), at which step,
    a one-line ``summary`` and the ``detail`` (expected and observed)."""

    kind: str
    step: int
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def signature(self) -> tuple[str, ...]:
        """Findings with one signature are taken for one bug."""
        return (self.kind, *self.detail.get("signature", ()))


@dataclass
class Outcome:
    """The result of running a case: the finding, if any, and how far it got."""

    finding: Finding | None
    steps_run: int


class _Down(Exception):
    """The target stopped answering a connection; the case cannot go on."""


class Target:
    """The job server under test at ``host:port``: connections with bounded waits,
    a liveness probe, and (given ``restart``) a way to start it again after a crash.

    A process started by ``restart`` is this object's to stop (:meth:`close`).
    """

    def __init__(self, host: str, port: int, *, timeout: float = 2.0,
                 restart: str | None = None, log: Callable[[str], None] = print) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.restart_command = shlex.split(restart) if restart else None
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.log = log
        self._tokens = itertools.count(1)

    def connect(self) -> socket.socket:
        """A new connection (``OSError`` if refused)."""
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def token(self) -> bytes:
        """A fresh ECHO token."""
        return b"fuzz-sync-%d-%d" % (os.getpid(), next(self._tokens))

    def probe(self) -> str | None:
        """``None`` if a fresh connection's ECHO is answered, else what is wrong."""
        try:
            sock = self.connect()
        except OSError as exc:
            return f"connection refused ({exc.strerror or exc})"
        with sock:
            token = self.token()
            try:
                sock.sendall(_ECHO.pack(b"\0REQ", 16, len(token)) + token)
                buf = b""
                deadline = time.monotonic() + self.timeout
                while token not in buf:
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    chunk = sock.recv(65536)
                    if not chunk:
                        return "closed a fresh connection without answering ECHO_REQ"
                    buf += chunk
            except TimeoutError:
                return f"ECHO_REQ on a fresh connection unanswered after {self.timeout:g} s"
            except OSError as exc:
                return f"fresh connection failed: {exc.strerror or exc}"
        return None

    def exit_status(self) -> str:
        """How the process started by ``restart`` ended, if it did."""
        if self.process is None or self.process.poll() is None:
            return ""
        code = self.process.returncode
        return f" (the restarted target exited with {'signal ' + str(-code) if code < 0 else code})"

    def restart(self) -> bool:
        """Start the target again with the restart command; False without one or if it
        does not come up."""
        if not self.restart_command:
            return False
        self.stop_process()
        try:
            self.process = subprocess.Popen(self.restart_command, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
        except OSError as exc:
            self.log(f"gearman-proto fuzz: --restart failed: {exc}")
            return False
        self.restarts += 1
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() not in (None, 0):
                break  # it failed (exit 0 may be a daemon that went to the background)
            if self.probe() is None:
                return True
            time.sleep(0.05)
        self.log("gearman-proto fuzz: the target did not come back after --restart")
        return False

    def stop_process(self) -> None:
        """Stop the process the restart command started, if it runs."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Release what this object started."""
        self.stop_process()


class _Handles:
    """Job handles in order of first appearance, one side (target or model)."""

    def __init__(self, side: str) -> None:
        self.names: dict[bytes, bytes] = {}
        self.order: list[bytes] = []
        self.side = side

    def see(self, handle: bytes) -> bytes:
        name = self.names.get(handle)
        if name is None:
            self.order.append(handle)
            name = self.names[handle] = b"H#%d" % len(self.order)
        return name

    def ref(self, k: int) -> bytes:
        """The real handle the case's ``{Hk}`` means on this side."""
        return self.order[k - 1] if 0 < k <= len(self.order) else b"H:none:%d" % k

    def text(self, data: bytes) -> bytes:
        for real in sorted(self.order, key=len, reverse=True):
            data = data.replace(real, self.names[real])
        return data


def _normal(messages: list[Packet | TextLine], handles: _Handles, command: bytes | None,
            token: bytes) -> list[Any]:
    """What one connection received in a step, in a form both sides can share."""
    out: list[Any] = []
    lines: list[bytes] = []
    for m in messages:
        if isinstance(m, TextLine):
            lines.append(handles.text(m.line))
            continue
        args = list(m.args)
        if m.type in _HANDLE_AT_0 and args:
            args[0] = handles.see(args[0])
        name = PacketType(m.type).name if m.type in PacketType._value2member_map_ else m.type
        out.append((name, tuple(args)))
    if lines:
        cmd = (command or b"").lower().split()
        if cmd[:1] == [b"workers"]:
            # gearmand shows file descriptors where we show connection ids.
            lines = [re.sub(rb"^\d+ ", b"# ", ln) for ln in lines]
        if cmd[:1] in ([b"getpid"], [b"version"], [b"verbose"]) and lines:
            lines = [lines[0].split(b" ", 1)[0] + b" <value>"]
        if b" ".join(cmd[:3]).startswith(_LISTINGS):
            # Listings come in hash order from gearmand: compare them as sets, and
            # only the lines about this case (a long-lived target has others).
            lines = sorted(ln for ln in lines if ln == b"." or token in ln or b"H#" in ln)
        out.append(("text", tuple(lines)))
    return out


class _Side:
    """One side's connections: decoders, handle names, what came in this step."""

    def __init__(self, n: int, name: str) -> None:
        self.decoders = [Decoder(RES, allow_text=True, max_packet_size=0) for _ in range(n)]
        self.handles = _Handles(name)
        self.closed = [False] * n
        self.reset = [False] * n
        self.token = b""
        self.resolve = resolver(b"", self.handles.ref)

    def decode(self, conn: int, data: bytes) -> list[Packet | TextLine]:
        dec = self.decoders[conn]
        dec.feed(data)
        out: list[Packet | TextLine] = []
        while (m := dec.next()) is not None:
            out.append(m)
        return out


def _strip_echo(messages: list[Packet | TextLine], token: bytes) -> list[Packet | TextLine]:
    return [m for m in messages if not (isinstance(m, Packet) and m.type == PacketType.ECHO_RES
                                        and m.args == (token,))]


def run_case(case: Case, target: Target, *, step_hook: Callable[[int], None] | None = None
             ) -> Outcome:
    """Run ``case`` on ``target`` and on a fresh model; return the first finding."""
    n = len(case.roles)
    now = time.time()
    model = ServerHub(JobServer(handle_prefix=b"H:model", now=now), idle_timeout=0.0)
    model.advance(now)
    cids = [model.open(b"127.0.0.1") for _ in range(n)]
    tside, mside = _Side(n, "target"), _Side(n, "model")
    # The case's own function names and unique ids are named after this token.
    tside.token = mside.token = target.token()
    tside.resolve = resolver(tside.token, tside.handles.ref)
    mside.resolve = resolver(mside.token, mside.handles.ref)
    socks: list[socket.socket | None] = []
    try:
        for _ in range(n):
            try:
                socks.append(target.connect())
            except OSError as exc:
                return Outcome(_dead(target, -1, f"connect failed: {exc}"), 0)
        for index, step in enumerate(case.steps):
            if step_hook:
                step_hook(index)
            finding = _run_step(case, index, step, target, socks, model, cids, tside, mside)
            if finding is not None:
                if finding.kind not in ("crash", "hang"):
                    # A server dying of the step looks like a closed connection first.
                    time.sleep(0.05)
                    problem = target.probe()
                    if problem is not None:
                        finding = _dead(target, index, problem)
                return Outcome(finding, index + 1)
        for i, sock in enumerate(socks):
            if sock is not None:
                sock.close()
                socks[i] = None
        # A server may die of what it is sent only when the peer goes away.
        time.sleep(0.02)
        problem = target.probe() or _drain(target, [tside.resolve(b"F", k) for k in (1, 2, 3)])
        if problem is not None:
            return Outcome(_dead(target, len(case.steps), problem, after_close=True),
                           len(case.steps))
        return Outcome(None, len(case.steps))
    finally:
        for sock in socks:
            if sock is not None:
                sock.close()


def _drain(target: Target, functions: list[bytes], limit: int = 200) -> str | None:
    """Run to completion the background jobs a case left queued on the target, so they
    cost it nothing; a problem doing so is returned (as :meth:`Target.probe` does)."""
    try:
        sock = target.connect()
    except OSError as exc:
        return f"connection refused ({exc.strerror or exc})"
    dec = Decoder(RES, max_packet_size=0)
    grab = _ECHO.pack(b"\0REQ", PacketType.GRAB_JOB, 0)
    with sock:
        try:
            sock.sendall(b"".join(encode_packet(b"\0REQ", PacketType.CAN_DO, [f])
                                  for f in functions))
            for _ in range(limit):
                sock.sendall(grab)
                packet = None
                while packet is None:
                    packet = dec.next()
                    if packet is None:
                        chunk = sock.recv(65536)
                        if not chunk:
                            return None  # it closed: nothing more to drain
                        dec.feed(chunk)
                if not isinstance(packet, Packet) or packet.type != PacketType.JOB_ASSIGN:
                    return None
                sock.sendall(encode_packet(b"\0REQ", PacketType.WORK_COMPLETE,
                                           [packet.args[0], b""]))
        except (OSError, RemoteProtocolError):
            return None  # not a liveness question: probe() answers that
    return None


def _dead(target: Target, step: int, problem: str, after_close: bool = False) -> Finding:
    kind = "hang" if "unanswered" in problem else "crash"
    when = "after the last step's connections closed" if after_close else f"at step {step + 1}"
    return Finding(kind, step, f"target {problem} {when}{target.exit_status()}",
                   {"signature": (kind,)})


def _run_step(case: Case, index: int, step: Step, target: Target,
              socks: list[socket.socket | None], model: ServerHub, cids: list[int],
              tside: _Side, mside: _Side) -> Finding | None:
    conn = step.conn
    sock = socks[conn]
    if sock is None:
        return None
    model.advance(time.time())
    tdata = b"".join(encode_item(i, tside.resolve) for i in step.items)
    mdata = b"".join(encode_item(i, mside.resolve) for i in step.items)
    command = next((i.text for i in step.items if isinstance(i, Line)), None)
    token = tside.token
    received_t: dict[int, list[Packet | TextLine]] = {}
    received_m: dict[int, list[Packet | TextLine]] = {}
    # The target.
    try:
        if tdata:
            sock.sendall(tdata)
        if step.close:
            sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the target closed it already; what it sent before is read below
    model.receive(cids[conn], mdata)
    if step.close:
        model.receive(cids[conn], b"")
        mside.closed[conn] = True
    order = [conn] + [j for j in range(len(socks)) if j != conn and socks[j] is not None]
    tokens: dict[int, bytes] = {}
    for j in order:
        s = socks[j]
        assert s is not None
        if j == conn and step.close:
            got = _read_to_eof(s, target.timeout)
            if got is None:
                problem = target.probe()
                if problem:
                    return _dead(target, index, problem)
                return _divergence(index, conn, case, "did not close the connection after "
                                   "its peer did", [], ["no EOF"])
            data, reset = got
            tside.reset[j] = reset
            socks[j] = None
            s.close()
            tside.closed[j] = True
        else:
            token = tokens[j] = target.token()
            echo = _ECHO.pack(b"\0REQ", 16, len(token)) + token
            got2 = _read_to_token(s, echo, token, target.timeout)
            if got2 is None:
                problem = target.probe()
                if problem:
                    return _dead(target, index, problem)
                return _divergence(index, j, case, "stopped answering ECHO_REQ on this "
                                   "connection", [], ["no answer"])
            data, eof = got2
            if eof:
                socks[j] = None
                s.close()
                tside.closed[j] = True
            model.receive(cids[j], echo)
        try:
            received_t[j] = tside.decode(j, data)
        except RemoteProtocolError as exc:
            return Finding("violation", index, f"the target sent connection {j} "
                           f"({case.roles[j]}) bytes that are not Gearman: {exc}",
                           {"signature": ("undecodable", exc.error_code.decode()),
                            "bytes": data[:200].hex()})
    out = model.flush()
    for j in order:
        try:
            received_m[j] = mside.decode(j, out.writes.get(cids[j], b""))
        except RemoteProtocolError as exc:  # a bug of ours, not of the target
            raise AssertionError(f"the model sent bytes it cannot decode: {exc}") from None
        if cids[j] in out.close:
            mside.closed[j] = True
    for j in order:
        token = tokens.get(j, b"")
        got_t = _strip_echo(received_t[j], token)
        got_m = _strip_echo(received_m[j], token)
        role = _ROLE.get(case.roles[j])
        if role is not None and not _sent_raw(case, index, j):
            for m in got_t:
                if isinstance(m, Packet) and m.type not in RECEIVABLE[role]:
                    name = PacketType(m.type).name
                    return Finding("violation", index, f"the target sent {name} to connection "
                                   f"{j}, a {case.roles[j]}, which may not receive it",
                                   {"signature": ("role", name, case.roles[j])})
        nt = _normal(got_t, tside.handles, command if j == conn else None, token)
        nm = _normal(got_m, mside.handles, command if j == conn else None, token)
        # A reset connection may have lost the end of what was sent: a prefix will do.
        if tside.reset[j] and nt == nm[:len(nt)] and mside.closed[j]:
            continue
        if nt != nm or tside.closed[j] != mside.closed[j]:
            if tside.closed[j] != mside.closed[j] and nt == nm:
                what = ("closed the connection" if tside.closed[j] else
                        "kept the connection open")
                return _divergence(index, j, case, f"{what}, the model did not",
                                   nm + [("closed",)] * mside.closed[j],
                                   nt + [("closed",)] * tside.closed[j])
            return _divergence(index, j, case, "answered differently from the model",
                               nm + [("closed",)] * mside.closed[j],
                               nt + [("closed",)] * tside.closed[j])
    return None


def _sent_raw(case: Case, upto: int, conn: int) -> bool:
    return any(isinstance(i, Raw) for s in case.steps[:upto + 1] if s.conn == conn
               for i in s.items)


def _divergence(index: int, conn: int, case: Case, what: str, expected: list[Any],
                observed: list[Any]) -> Finding:
    def show(msgs: list[Any]) -> list[str]:
        return [f"{m[0]}{tuple(a.decode('latin-1') for a in m[1])}"
                if len(m) > 1 and isinstance(m[1], tuple) else str(m[0]) for m in msgs]
    # The first place the two differ names the bug, by what the target did there.
    at = next((i for i, (e, o) in enumerate(zip(expected, observed, strict=False)) if e != o),
              min(len(expected), len(observed)))
    head_o = show(observed[at:at + 1])[0].split("(")[0] if at < len(observed) else "nothing"
    summary = (f"step {index + 1}: the target {what} on connection {conn} "
               f"({case.roles[conn]}): expected {', '.join(show(expected)) or 'nothing'}; "
               f"got {', '.join(show(observed)) or 'nothing'}")
    return Finding("divergence", index, summary[:400],
                   {"expected": show(expected), "observed": show(observed),
                    "signature": (case.roles[conn], head_o)})


def _read_to_token(sock: socket.socket, echo: bytes, token: bytes, timeout: float
                   ) -> tuple[bytes, bool] | None:
    """Send the ECHO_REQ and read up to its ECHO_RES: ``(bytes, eof)``; None on timeout."""
    try:
        sock.sendall(echo)
    except OSError:
        pass  # closed by the target: read what it sent before
    end = _ECHO.pack(RES, 17, len(token)) + token
    return _read(sock, timeout, lambda buf: end in buf, eof=True)


def _read_to_eof(sock: socket.socket, timeout: float) -> tuple[bytes, bool] | None:
    """Read until the target closes: ``(bytes, was it a reset)``; None on timeout."""
    return _read(sock, timeout, lambda buf: False, eof=False)


def _read(sock: socket.socket, timeout: float, done: Callable[[bytearray], bool], *,
          eof: bool) -> tuple[bytes, bool] | None:
    """Read until ``done(bytes so far)`` (then ``(bytes, False)``), the peer's EOF (then
    ``(bytes, eof)``) or a reset (``(bytes, True)``); None when ``timeout`` passes first."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        if done(buf):
            return bytes(buf), False
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return None
        except OSError:
            return bytes(buf), True
        if not chunk:
            return bytes(buf), eof
        buf += chunk

