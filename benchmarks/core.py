"""Core server logic with no I/O: JobServer jobs/s, and bytes per queued background job.

Throughput -- each job is SUBMIT from a client connection, GRAB_JOB_UNIQ from a
worker connection and WORK_COMPLETE from it, straight into
:meth:`JobServer.receive` with events built beforehand:

* ``bg``          background jobs, submit/grab/complete interleaved (short queue);
* ``bg batch``    every job submitted first, then drained (a deep queue);
* ``fg``          foreground jobs (JOB_CREATED and WORK_COMPLETE go to the client);
* ``bg unique``   background jobs with a unique id each (the coalescing index);
* ``hub bg``      as ``bg`` but through :class:`ServerHub` with bytes in and out, one
  packet per read and each read a turn of the loop (advance, receive, flush,
  next_deadline): everything a server does but the socket.

Memory -- ``--queue`` (1M) background jobs with 100-byte payloads left queued:

* in a fresh child process, bytes fed to a ``ServerHub`` (RSS growth / job);
* our server (``gearman-proto server --loop uvloop``) and gearmand --threads=1
  as processes, filled by the load generator's clients with no worker
  connected (RSS growth of the server process / job).

    python -m benchmarks.core              # 200k jobs best of 5; 1M queued
    python -m benchmarks.core --smoke      # a tiny run: does it still work?
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks._util import (
    ROOT,
    Server,
    available,
    machine,
    rss_bytes,
    workdir,
    write_json,
)
from gearman_proto.broker import JobServer
from gearman_proto.events import CanDo, GrabJobUniq, JobAssign, SubmitJob, WorkComplete
from gearman_proto.hub import ServerHub
from gearman_proto.packets import REQ, PacketType, encode_packet

CLIENT, WORKER = 1, 2
FUNCTION = b"reverse"


def _server() -> JobServer:
    server = JobServer()
    server.connect(CLIENT)
    server.connect(WORKER)
    server.receive(WORKER, CanDo(FUNCTION))
    return server


def broker_run(jobs: int, *, background: bool = True, unique: bool = False,
               batch: bool = False) -> Callable[[], int]:
    """A run of ``jobs`` through a fresh JobServer; events are built outside the timing."""
    payload = b"x" * 100
    submits = [SubmitJob(FUNCTION, payload, b"u-%d" % i if unique else b"",
                         background=background) for i in range(jobs)]
    result = b"y" * 100

    def run() -> int:
        server = _server()
        receive = server.receive
        grab = GrabJobUniq()

        def take() -> None:
            (_, assign), = receive(WORKER, grab)
            assert type(assign) is JobAssign
            receive(WORKER, WorkComplete(assign.handle, result))

        if batch:
            for submit in submits:
                receive(CLIENT, submit)
            for _ in range(jobs):
                take()
        else:
            for submit in submits:
                receive(CLIENT, submit)
                take()
        assert server.job_count == 0
        return jobs
    return run


def _packet(ptype: int, *args: bytes) -> bytes:
    return encode_packet(REQ, ptype, args)


def hub_run(jobs: int, setup: Callable[[ServerHub], object] | None = None
            ) -> Callable[[], int]:
    """Background jobs through a ServerHub, bytes in and bytes out, one read per packet.

    Each read is a turn of a server's loop, as the adapters drive it: the
    clock given to ``advance``, the read, ``flush``, then ``next_deadline``.
    ``setup`` is applied to each fresh hub (benchmarks/observability.py attaches stats).
    """
    submit = _packet(PacketType.SUBMIT_JOB_BG, FUNCTION, b"", b"x" * 100)
    grab = _packet(PacketType.GRAB_JOB_UNIQ)
    result = b"y" * 100

    def run() -> int:
        hub = ServerHub()
        if setup is not None:
            setup(hub)
        client = hub.open()
        worker = hub.open()
        hub.receive(worker, _packet(PacketType.CAN_DO, FUNCTION))
        receive, flush, advance = hub.receive, hub.flush, hub.advance
        deadline = hub.next_deadline
        clock = time.time
        for _ in range(jobs):
            advance(clock())
            receive(client, submit)
            flush()
            deadline()
            advance(clock())
            receive(worker, grab)
            out = flush().writes[worker]
            deadline()
            # JOB_ASSIGN_UNIQ: the handle is the first argument.
            handle = out[12:out.index(b"\0", 12)]
            advance(clock())
            receive(worker, _packet(PacketType.WORK_COMPLETE, handle, result))
            flush()
            deadline()
        assert hub.broker.job_count == 0
        return jobs
    return run


def driven_hub_run(jobs: int) -> Callable[[], int]:
    """:func:`hub_run`'s jobs through a *driven* hub, as the asyncio server runs its
    turn: ``drive`` gives the clock, each connection has a writer, a read is
    ``read`` and the turn's end ``flush_written``, which writes through the writers."""
    submit = _packet(PacketType.SUBMIT_JOB_BG, FUNCTION, b"", b"x" * 100)
    grab = _packet(PacketType.GRAB_JOB_UNIQ)
    result = b"y" * 100

    def run() -> int:
        hub = ServerHub()
        got: list[bytes] = []
        hub.drive(time.time, lambda: None)
        client = hub.open(writer=lambda data: None)
        worker = hub.open(writer=got.append)
        hub.read(worker, _packet(PacketType.CAN_DO, FUNCTION))
        hub.flush_written()
        read, flush_written = hub.read, hub.flush_written
        for _ in range(jobs):
            read(client, submit)
            flush_written()
            read(worker, grab)
            flush_written()
            out = got.pop()
            handle = out[12:out.index(b"\0", 12)]
            read(worker, _packet(PacketType.WORK_COMPLETE, handle, result))
            flush_written()
        assert hub.broker.job_count == 0
        return jobs
    return run


def best(fn: Callable[[], int], repeat: int) -> tuple[int, float]:
    times = []
    count = 0
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        count = fn()
        times.append(time.perf_counter() - t)
    return count, min(times)


# -- memory --------------------------------------------------------------------------------


def hub_memory(jobs: int) -> dict[str, float]:
    """RSS growth per queued background job, bytes fed to a ServerHub (run in a fresh process)."""
    hub = ServerHub()
    client = hub.open()
    chunk = 1000
    payload = b"x" * 100
    gc.collect()
    before = rss_bytes(os.getpid())
    for start in range(0, jobs, chunk):
        # Distinct payloads, as from a socket: every job keeps its own bytes.
        data = b"".join(_packet(PacketType.SUBMIT_JOB_BG, FUNCTION, b"", payload)
                        for _ in range(min(chunk, jobs - start)))
        hub.receive(client, data)
        hub.flush()
    gc.collect()
    after = rss_bytes(os.getpid())
    assert hub.broker.job_count == jobs
    return {"jobs": jobs, "bytes_per_job": (after - before) / jobs}


def server_memory(kind: str, jobs: int, seconds: float) -> dict[str, float]:
    """RSS growth per job of a server process filled with ``jobs`` background jobs, no worker."""
    wd = workdir("core")
    with Server(kind, wd) as server:
        client = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._loadgen", "client", "--port", str(server.port),
             "--clients", "4"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, bufsize=1)
        assert client.stdin is not None and client.stdout is not None
        try:
            if client.stdout.readline().strip() != "ready":
                raise RuntimeError("load generator did not start")
            time.sleep(0.2)
            before = rss_bytes(server.pid)
            client.stdin.write(f"run bg {jobs} 1000 {seconds}\n")
            client.stdin.flush()
            res = json.loads(client.stdout.readline())
            time.sleep(0.2)
            after = rss_bytes(server.pid)
        finally:
            client.stdin.close()
            client.wait(10)
    queued = res["done"]
    return {"jobs": queued, "bytes_per_job": (after - before) / max(1, queued),
            "timed_out": res["timed_out"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--queue", type=int, default=1_000_000,
                   help="background jobs left queued for the memory figure")
    p.add_argument("--no-servers", action="store_true",
                   help="skip the memory figures of server processes")
    p.add_argument("--smoke", action="store_true", help="2000 jobs, once; 2000 queued")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_memory:
        print(json.dumps(hub_memory(args.child_memory)))
        return 0
    if args.smoke:
        args.jobs, args.repeat, args.queue = 2000, 1, 2000
    n = args.jobs
    runs: list[tuple[str, Callable[[], int]]] = [
        ("bg", broker_run(n)),
        ("bg batch (deep queue)", broker_run(n, batch=True)),
        ("fg", broker_run(n, background=False)),
        ("bg unique", broker_run(n, unique=True)),
        ("hub bg (bytes in and out)", hub_run(n)),
        ("hub bg, driven turn", driven_hub_run(n)),
    ]
    info = machine()
    print(f"# {info['cpu']}, Python {info['python']}; {n} jobs, best of {args.repeat}; "
          f"commit {info['commit']}")
    rows: list[dict[str, Any]] = []
    for name, fn in runs:
        count, seconds = best(fn, args.repeat)
        rows.append({"what": name, "jobs": count, "seconds": seconds,
                     "jobs_per_s": count / seconds, "us_per_job": seconds / count * 1e6})
        print(f"  {name:28s} {count / seconds:12,.0f} jobs/s  {seconds / count * 1e6:6.2f} µs/job",
              flush=True)

    memory: dict[str, Any] = {}
    out = subprocess.run([sys.executable, "-m", "benchmarks.core", "--child-memory",
                          str(args.queue)], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    memory["ServerHub (in process)"] = json.loads(out.stdout)
    if not args.no_servers:
        for kind in ("gearmand", "uvloop"):
            if available(kind):
                memory[kind] = server_memory(kind, args.queue, 60.0 if args.queue > 10_000
                                             else 10.0)
    print(f"\nmemory, {args.queue} queued background jobs (100-byte payloads):")
    for name, m in memory.items():
        print(f"  {name:28s} {m['bytes_per_job']:8.0f} bytes/job ({m['jobs']} jobs"
              f"{', TIME BOUND' if m.get('timed_out') else ''})")
    write_json(args.json, {"machine": info, "args": vars(args), "rows": rows,
                           "memory": memory})
    return 0


if __name__ == "__main__":
    sys.exit(main())
