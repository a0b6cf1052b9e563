"""Codec: encode and decode rates of gearman-proto beside gear's parser, in one process.

Decoding is measured on a stream of ``--packets`` JOB_ASSIGN_UNIQ packets
(``--payload`` bytes of job data, a 36-byte unique id), fed in ``--chunk``-byte
reads as a socket would give them, at four depths:

* ``header walk``  -- ``struct.unpack_from`` of each header and nothing else: the
  ceiling for any pure-Python decoder;
* ``Decoder``      -- :class:`gearman_proto.packets.Decoder`: framing, checks and
  the arguments split (a ``Packet`` per message);
* ``events``       -- the same plus :func:`packet_to_event`: a ``JobAssign`` per
  message, which is what "decoded events/s" means in the goals;
* ``WorkerConnection`` -- ``receive_data`` + ``events()`` of a worker's
  connection, role checks and job bookkeeping included (also in 4096-byte
  reads: what a worker runs, and the figure the goals name);
* ``gear``         -- ``gear.Connection.readPacket()`` on its own 4096-byte reads
  plus the four ``getArgument`` calls its worker makes for JOB_ASSIGN_UNIQ.

A client's side is measured the same way: ``ClientConnection.events()`` reading a
JOB_CREATED and a WORK_COMPLETE for each of ``--packets`` submissions (counted as
two events each).

The server's side is measured too (SUBMIT_JOB_BG through ``ServerConnection``),
and large payloads (``--large`` bytes of WORK_COMPLETE data) in MB/s.
Encoding: ``ServerConnection.send(JobAssign)`` and ``ClientConnection.send(SubmitJob)``
against ``gear.Packet(...).toBinary()``.  Each figure is the best of ``--repeat``.

    python -m benchmarks.codec            # 100k packets, best of 5
    python -m benchmarks.codec --smoke    # a tiny run: does it still work?
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import gearman_proto
from benchmarks._util import machine, write_json
from gearman_proto.client import ClientConnection
from gearman_proto.codec import packet_to_event
from gearman_proto.events import GrabJobUniq, JobAssign, SubmitJob
from gearman_proto.packets import REQ, RES, Decoder, PacketType, encode_packet
from gearman_proto.server import ServerConnection
from gearman_proto.worker import WorkerConnection

try:
    import gear
except ImportError:  # pragma: no cover - gear is a benchmark-only dependency
    gear = None


def _assign_args(i: int, payload: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    return (b"H:bench-host:%d" % i, b"reverse", b"%036d" % i, payload)


def _chunks(stream: bytes, size: int) -> list[bytes]:
    return [stream[i:i + size] for i in range(0, len(stream), size)]


def _best(fn: Callable[[], int], repeat: int) -> tuple[int, float]:
    """Run ``fn`` ``repeat`` times; return its count and the shortest time."""
    best = float("inf")
    count = 0
    for _ in range(repeat):
        t = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - t)
    return count, best


# -- decoders ------------------------------------------------------------------------------


def header_walk(chunks: list[bytes]) -> int:
    stream = b"".join(chunks)
    unpack = struct.Struct(">4sII").unpack_from
    pos, n, count = 0, len(stream), 0
    while pos < n:
        _magic, _ptype, size = unpack(stream, pos)
        pos += 12 + size
        count += 1
    return count


def ours_decoder(chunks: list[bytes]) -> int:
    decoder = Decoder(RES)
    count = 0
    for chunk in chunks:
        decoder.feed(chunk)
        while decoder.next() is not None:
            count += 1
    return count


def ours_events(chunks: list[bytes]) -> int:
    decoder = Decoder(RES)
    count = 0
    for chunk in chunks:
        decoder.feed(chunk)
        while (packet := decoder.next()) is not None:
            packet_to_event(packet.type, packet.args)
            count += 1
    return count


def _ours_connection(connect: Callable[[], WorkerConnection | ClientConnection],
                     request: GrabJobUniq | SubmitJob, sent: int, chunks: list[bytes],
                     repeat: int) -> Callable[[], int]:
    """A fresh connection per run with ``request`` sent ``sent`` times, set up before
    timing; a run feeds it ``chunks`` and counts the events."""
    def prepare() -> WorkerConnection | ClientConnection:
        conn = connect()
        for _ in range(sent):
            conn.send(request)
        return conn

    conns = [prepare() for _ in range(repeat)]

    def run() -> int:
        conn = conns.pop() if conns else prepare()
        count = 0
        for chunk in chunks:
            conn.receive_data(chunk)
            for _event in conn.events():
                count += 1
        return count
    return run


def ours_worker_connection(chunks: list[bytes], packets: int, repeat: int
                           ) -> Callable[[], int]:
    """A fresh connection per run with ``packets`` grabs outstanding, set up before timing."""
    return _ours_connection(WorkerConnection, GrabJobUniq(), packets, chunks, repeat)


def ours_client_connection(chunks: list[bytes], jobs: int, repeat: int) -> Callable[[], int]:
    """A fresh client connection per run with ``jobs`` submissions sent, set up before
    timing; the stream answers each with JOB_CREATED and then WORK_COMPLETE."""
    return _ours_connection(ClientConnection, SubmitJob(b"reverse", b"x", b""), jobs, chunks,
                            repeat)


def ours_server_connection(chunks: list[bytes]) -> int:
    conn = ServerConnection()
    count = 0
    for chunk in chunks:
        conn.receive_data(chunk)
        for _event in conn.events():
            count += 1
    return count


class _FakeSocket:
    """What gear.Connection reads from: the stream, ``recv(n)`` at a time."""

    def __init__(self, stream: bytes) -> None:
        self.stream = stream
        self.pos = 0

    def recv(self, n: int) -> bytes:
        data = self.stream[self.pos:self.pos + n]
        self.pos += n
        return data


def gear_parser(stream: bytes, split: bool) -> int:
    conn = gear.Connection("127.0.0.1", 0)
    conn.conn = _FakeSocket(stream)
    count = 0
    read = conn.readPacket
    while (packet := read()) is not None:
        if split:
            # What gear's Worker.handleJobAssignUnique takes from the packet.
            packet.getArgument(0)
            packet.getArgument(1)
            packet.getArgument(2)
            packet.getArgument(3, True)
        count += 1
    return count


# -- encoders ------------------------------------------------------------------------------


def ours_encode_assign(events: list[JobAssign]) -> int:
    send = ServerConnection().send
    for event in events:
        send(event)
    return len(events)


def ours_encode_submit(events: list[SubmitJob]) -> int:
    conn = ClientConnection()
    send = conn.send
    for event in events:
        send(event)
    return len(events)


def gear_encode_assign(args: list[tuple[bytes, bytes, bytes, bytes]]) -> int:
    packet = gear.Packet
    for a in args:
        packet(gear.constants.RES, gear.constants.JOB_ASSIGN_UNIQ, b"\0".join(a)).toBinary()
    return len(args)


def gear_encode_submit(args: list[tuple[bytes, bytes, bytes]]) -> int:
    packet = gear.Packet
    for name, unique, data in args:
        packet(gear.constants.REQ, gear.constants.SUBMIT_JOB_BG,
               name + b"\0" + unique + b"\0" + data).toBinary()
    return len(args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packets", type=int, default=100_000)
    p.add_argument("--payload", type=int, default=100)
    p.add_argument("--large", type=int, default=64 * 1024,
                   help="payload of the large-packet run, bytes")
    p.add_argument("--chunk", type=int, default=64 * 1024, help="bytes per read fed to ours")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="2000 packets, once")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    if args.smoke:
        args.packets, args.repeat = 2000, 1
    n = args.packets
    payload = b"x" * args.payload
    assign_args = [_assign_args(i, payload) for i in range(n)]
    stream = b"".join(encode_packet(RES, PacketType.JOB_ASSIGN_UNIQ, a) for a in assign_args)
    chunks = _chunks(stream, args.chunk)
    submit_stream = b"".join(encode_packet(REQ, PacketType.SUBMIT_JOB_BG,
                                           (b"reverse", b"", payload)) for _ in range(n))
    n_large = max(10, n // 100)
    large = b"y" * args.large
    large_stream = b"".join(encode_packet(RES, PacketType.JOB_ASSIGN_UNIQ,
                                          _assign_args(i, large)) for i in range(n_large))

    rows: list[dict[str, Any]] = []

    def record(what: str, impl: str, fn: Callable[[], int], nbytes: int) -> None:
        count, seconds = _best(fn, args.repeat)
        rows.append({"what": what, "impl": impl, "count": count, "seconds": seconds,
                     "per_s": count / seconds, "mb_per_s": nbytes / seconds / 1e6})

    small = f"decode {n} JOB_ASSIGN_UNIQ, {args.payload}-byte data"
    record(small, "header walk (struct only)", lambda: header_walk(chunks), len(stream))
    record(small, "ours: Decoder (args split)", lambda: ours_decoder(chunks), len(stream))
    record(small, "ours: events (Decoder + JobAssign)", lambda: ours_events(chunks),
           len(stream))
    record(small, "ours: WorkerConnection.events()", ours_worker_connection(chunks, n, args.repeat),
           len(stream))
    small_4k = _chunks(stream, 4096)
    record(small, "ours: events, 4096-byte reads", lambda: ours_events(small_4k), len(stream))
    # What a worker runs: the public API, reads of a socket's usual size.
    record(small, "ours: WorkerConnection.events(), 4096-byte reads",
           ours_worker_connection(small_4k, n, args.repeat), len(stream))
    if gear is not None:
        record(small, "gear: readPacket + getArgument x4", lambda: gear_parser(stream, True),
               len(stream))
        record(small, "gear: readPacket only", lambda: gear_parser(stream, False), len(stream))
    results = b"".join(encode_packet(RES, PacketType.JOB_CREATED, (h,)) for h, *_ in assign_args)
    results += b"".join(encode_packet(RES, PacketType.WORK_COMPLETE, (h, payload))
                        for h, *_ in assign_args)
    record(f"decode {n} JOB_CREATED + {n} WORK_COMPLETE, {args.payload}-byte data",
           "ours: ClientConnection.events(), 4096-byte reads",
           ours_client_connection(_chunks(results, 4096), n, args.repeat), len(results))
    server_chunks = _chunks(submit_stream, args.chunk)
    record(f"decode {n} SUBMIT_JOB_BG, {args.payload}-byte data", "ours: ServerConnection",
           lambda: ours_server_connection(server_chunks), len(submit_stream))
    big = f"decode {n_large} JOB_ASSIGN_UNIQ, {args.large}-byte data"
    large_chunks = _chunks(large_stream, 256 * 1024)
    record(big, "ours: events (Decoder + JobAssign)", lambda: ours_events(large_chunks),
           len(large_stream))
    if gear is not None:
        record(big, "gear: readPacket + getArgument x4",
               lambda: gear_parser(large_stream, True), len(large_stream))

    assigns = [JobAssign(h, f, d, u) for h, f, u, d in assign_args]
    submits = [SubmitJob(b"reverse", payload, b"", background=True) for _ in range(n)]
    enc = f"encode {n} JOB_ASSIGN_UNIQ"
    record(enc, "ours: ServerConnection.send", lambda: ours_encode_assign(assigns), len(stream))
    if gear is not None:
        record(enc, "gear: Packet.toBinary", lambda: gear_encode_assign(assign_args),
               len(stream))
    enc = f"encode {n} SUBMIT_JOB_BG"
    record(enc, "ours: ClientConnection.send", lambda: ours_encode_submit(submits),
           len(submit_stream))
    if gear is not None:
        record(enc, "gear: Packet.toBinary",
               lambda: gear_encode_submit([(b"reverse", b"", payload)] * n), len(submit_stream))

    info = machine()
    info["compiled"] = gearman_proto.COMPILED
    print(f"# {info['cpu']}, Python {info['python']}, gear {info['gear']}; "
          f"best of {args.repeat}; ours fed {args.chunk}-byte reads; commit {info['commit']}; "
          f"{gearman_proto.SERVER_VERSION}")
    gear_rate = next((r["per_s"] for r in rows if r["impl"].startswith("gear: readPacket +")),
                     None)
    last = None
    for r in rows:
        if r["what"] != last:
            print(f"\n{r['what']}")
            last = r["what"]
        vs = ""
        if gear_rate and r["what"] == small and not r["impl"].startswith("gear"):
            vs = f"  {r['per_s'] / gear_rate:5.2f}x gear"
        print(f"  {r['impl']:40s} {r['per_s']:12,.0f} /s {r['mb_per_s']:9,.1f} MB/s{vs}")
    write_json(args.json, {"machine": info, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
