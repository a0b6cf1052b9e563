"""The end-to-end load generator: raw Gearman packets over uvloop, one process per role.

It does not use gearman-proto (nor gear): every server under test is driven by
exactly the same few lines of hand-framed packets, so a change to the library
cannot change the load.  Two roles, each a child process of ``benchmarks.e2e``
that talks to it by lines on stdin/stdout:

``worker``  opens ``--workers`` connections; each sends CAN_DO and GRAB_JOB_UNIQ,
    answers every JOB_ASSIGN_UNIQ with WORK_COMPLETE (the job's data) and the next
    GRAB_JOB_UNIQ in one write, sleeps (PRE_SLEEP) on NO_JOB and grabs again on
    NOOP.  Commands: ``wait TARGET SECONDS`` answers once TARGET jobs are
    complete (or the time is up) with the count and the time of the last one.

``client``  opens ``--clients`` connections.  Command ``run SCENARIO N WINDOW
    SECONDS`` spreads N jobs over them and answers with the start and end times
    and latency percentiles:

    * ``bg``   SUBMIT_JOB_BG, up to WINDOW unanswered per connection; done at the
      last JOB_CREATED (the workers say when the last job was done);
    * ``fg1``  SUBMIT_JOB, one at a time per connection: the next one goes when
      WORK_COMPLETE came back (latency = submit to WORK_COMPLETE);
    * ``fgp``  SUBMIT_JOB, WINDOW foreground jobs in flight per connection.

Every run is bounded by its job count and by SECONDS.  Times are
``time.monotonic()``, one clock for every process on the machine.  Only
127.0.0.1 is ever connected to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from collections import deque

from benchmarks._util import HOST, percentile, run_loop

_HDR = struct.Struct(">4sII")
_REQ = b"\0REQ"
CAN_DO, PRE_SLEEP, NOOP, SUBMIT_JOB, JOB_CREATED, NO_JOB = 1, 4, 6, 7, 8, 10
WORK_COMPLETE, WORK_FAIL, SUBMIT_JOB_BG, ERROR = 13, 14, 18, 19
GRAB_JOB_UNIQ, JOB_ASSIGN_UNIQ = 30, 31
FUNCTION = b"bench"


def packet(ptype: int, *args: bytes) -> bytes:
    """One REQ packet."""
    payload = b"\0".join(args)
    return _HDR.pack(_REQ, ptype, len(payload)) + payload


_GRAB = packet(GRAB_JOB_UNIQ)
_PRE_SLEEP = packet(PRE_SLEEP)


def _packets(buf: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The complete packets at the start of ``buf`` and how many bytes they took."""
    out = []
    pos = 0
    n = len(buf)
    unpack = _HDR.unpack_from
    while n - pos >= 12:
        _magic, ptype, size = unpack(buf, pos)
        end = pos + 12 + size
        if end > n:
            break
        out.append((ptype, buf[pos + 12:end]))
        pos = end
    return out, pos


class _Buffer:
    """Bytes received and not yet parsed: usually none, so a read is parsed where it lies."""

    __slots__ = ("rest",)

    def __init__(self) -> None:
        self.rest = b""

    def packets(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.rest + data if self.rest else data
        packets, used = _packets(buf)
        self.rest = buf[used:] if used < len(buf) else b""
        return packets


async def _lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _say(obj: object) -> None:
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
    sys.stdout.flush()


# -- worker ----------------------------------------------------------------------------


class _WorkerStats:
    def __init__(self) -> None:
        self.done = 0
        self.t_last = 0.0
        self.errors = 0
        self.registered = 0
        self.changed = asyncio.Event()


class _WorkerConn(asyncio.Protocol):
    def __init__(self, stats: _WorkerStats) -> None:
        self.stats = stats
        self.buf = _Buffer()
        self.grabbing = False
        self.registered = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.write(packet(CAN_DO, FUNCTION) + _GRAB)
        self.grabbing = True

    def data_received(self, data: bytes) -> None:
        out = []
        stats = self.stats
        for ptype, payload in self.buf.packets(data):
            if ptype == JOB_ASSIGN_UNIQ:
                # handle, function, unique, data: the result is the data.
                handle, _function, _unique, data_ = payload.split(b"\0", 3)
                out.append(packet(WORK_COMPLETE, handle, data_))
                out.append(_GRAB)
                stats.done += 1
            elif ptype == NO_JOB:
                self.grabbing = False
                out.append(_PRE_SLEEP)
                if not self.registered:
                    self.registered = True
                    stats.registered += 1
            elif ptype == NOOP:
                if not self.grabbing:
                    self.grabbing = True
                    out.append(_GRAB)
            elif ptype == ERROR:
                stats.errors += 1
        if out:
            assert self.transport is not None
            self.transport.write(b"".join(out))
        stats.t_last = time.monotonic()
        stats.changed.set()


async def worker_main(port: int, workers: int) -> None:
    loop = asyncio.get_running_loop()
    stats = _WorkerStats()
    conns = []
    for _ in range(workers):
        _t, proto = await loop.create_connection(lambda: _WorkerConn(stats), HOST, port)
        conns.append(proto)
    deadline = time.monotonic() + 10
    while stats.registered < workers and time.monotonic() < deadline:
        stats.changed.clear()
        await asyncio.wait([asyncio.ensure_future(stats.changed.wait())], timeout=0.5)
    _say("ready")
    lines = await _lines()
    while True:
        line = (await lines.readline()).decode().split()
        if not line or line[0] == "quit":
            return
        if line[0] == "wait":
            target, seconds = int(line[1]), float(line[2])
            end = time.monotonic() + seconds
            while stats.done < target and time.monotonic() < end:
                stats.changed.clear()
                await asyncio.wait([asyncio.ensure_future(stats.changed.wait())],
                                   timeout=max(0.0, end - time.monotonic()))
            _say({"done": stats.done, "t_last": stats.t_last, "errors": stats.errors})


# -- client ----------------------------------------------------------------------------


class _ClientConn(asyncio.Protocol):
    unique = False
    """``--unique``: every submission carries its own unique id (gearmand's queue plugins
    key rows by (unique, function): with empty uniques its PostgreSQL one refuses all
    but the first)."""
    _next = 0

    def __init__(self) -> None:
        self.buf = _Buffer()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.reset(0, 1, "bg", b"")

    def reset(self, quota: int, window: int, scenario: str, payload: bytes) -> None:
        self.quota = quota
        self.window = window
        self.background = scenario == "bg"
        self.ptype = SUBMIT_JOB_BG if self.background else SUBMIT_JOB
        self.payload = payload
        self.submit = packet(self.ptype, FUNCTION, b"", payload)
        self.sent = 0
        self.done = 0
        self.errors = 0
        self.t_end = 0.0
        self.stopped = False
        self.sent_at: deque[float] = deque()
        self.created_at: dict[bytes, float] = {}
        self.latencies: list[float] = []
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if quota == 0:
            self.finished.set_result(None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.finished.done():
            self.finished.set_result(None)

    def start(self) -> None:
        self._send(min(self.window, self.quota))

    def _send(self, count: int) -> None:
        count = min(count, self.quota - self.sent)
        if count <= 0 or self.stopped or self.lost:
            return
        now = time.monotonic()
        self.sent += count
        self.sent_at.extend([now] * count)
        assert self.transport is not None
        if not self.unique:
            self.transport.write(self.submit * count)
            return
        first = _ClientConn._next
        _ClientConn._next = first + count
        self.transport.write(b"".join(packet(self.ptype, FUNCTION, b"u%d" % i, self.payload)
                                      for i in range(first, first + count)))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        more = 0
        lat = self.latencies
        for ptype, payload in self.buf.packets(data):
            if ptype == JOB_CREATED:
                t = self.sent_at.popleft()
                if self.background:
                    lat.append(now - t)
                    self.done += 1
                    more += 1
                else:
                    self.created_at[payload] = t
            elif ptype == WORK_COMPLETE or ptype == WORK_FAIL:
                handle = payload.partition(b"\0")[0]
                t = self.created_at.pop(handle, now)
                lat.append(now - t)
                self.done += 1
                more += 1
                if ptype == WORK_FAIL:
                    self.errors += 1
            elif ptype == ERROR:
                self.errors += 1
                self.sent_at.popleft()
                more += 1
        if more:
            self.t_end = now
            self._send(more)
            if self.done + self.errors >= self.quota and not self.finished.done():
                self.finished.set_result(None)


async def client_main(port: int, clients: int, payload_size: int) -> None:
    loop = asyncio.get_running_loop()
    conns: list[_ClientConn] = []
    for _ in range(clients):
        _t, proto = await loop.create_connection(_ClientConn, HOST, port)
        conns.append(proto)
    payload = (b"0123456789" * (payload_size // 10 + 1))[:payload_size]
    _say("ready")
    lines = await _lines()
    while True:
        line = (await lines.readline()).decode().split()
        if not line or line[0] == "quit":
            return
        if line[0] == "run":
            scenario, n, window, seconds = line[1], int(line[2]), int(line[3]), float(line[4])
            for i, conn in enumerate(conns):
                conn.reset(n // clients + (1 if i < n % clients else 0),
                           1 if scenario == "fg1" else window, scenario, payload)
            t0 = time.monotonic()
            for conn in conns:
                conn.start()
            _done, pending = await asyncio.wait([c.finished for c in conns], timeout=seconds)
            for conn in conns:
                conn.stopped = True
            latencies = [x for c in conns for x in c.latencies]
            _say({
                "t0": t0,
                "t_end": max([c.t_end for c in conns] + [t0]),
                "done": sum(c.done for c in conns),
                "errors": sum(c.errors for c in conns),
                "timed_out": bool(pending),
                "lost": any(c.lost for c in conns),
                "p50_us": percentile(latencies, 50) * 1e6,
                "p99_us": percentile(latencies, 99) * 1e6,
            })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["worker", "client"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--payload", type=int, default=100)
    parser.add_argument("--unique", action="store_true",
                        help="a unique id per submission (default: none)")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="uvloop (if installed, else asyncio) or asyncio")
    args = parser.parse_args()
    _ClientConn.unique = args.unique
    coro = (worker_main(args.port, args.workers) if args.role == "worker"
            else client_main(args.port, args.clients, args.payload))
    if args.loop == "uvloop":
        run_loop(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
