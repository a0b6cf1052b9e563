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
  next_deadline): everything a server does but the socket;
* ``hub fg1``, ``hub fgp``: foreground jobs through a driven hub from the load
  generator's peers, simulated (:func:`loadgen_turns`), and replayed.

Memory -- ``--queue`` (1M) background jobs with 100-byte payloads left queued:

* in a fresh child process, bytes fed to a ``ServerHub`` (RSS growth / job);
* our server (``gearman-proto server --loop uvloop``) and gearmand --threads=1
  as processes, filled by the load generator's clients with no worker
  connected (RSS growth of the server process / job).

    python -m benchmarks.core              # 200k jobs best of 5; 1M queued
    python -m benchmarks.core --smoke      # a tiny run: does it still work?
    python -m benchmarks.core --instructions           # per job, by cachegrind: bg, fg1, fgp
    python -m benchmarks.core --instructions fg1 --jobs 3000

``--instructions`` counts, in process and deterministically, what the asyncio
server's turn costs per job: the driven hub (``ServerHub.drive``/``read``/
``flush_written``) fed one bg packet per read (:func:`driven_hub_run`), or the
load generator's fg1 and fgp peers, simulated (:func:`loadgen_turns`) and the
reads recorded, then replayed to a fresh hub (:func:`replay_run`), so that only
the replay is counted.  The harness's own calls (its loop, the writers) are part
of the count.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Final

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
from gearman_proto.hub import WARNING, ServerHub
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


def driven_hub_run(jobs: int, clock: Callable[[], float] | None = None
                   ) -> Callable[[], int]:
    """:func:`hub_run`'s jobs through a *driven* hub, as the asyncio server runs its
    turn: ``drive`` gives the clock, each connection has a writer, a read is
    ``read`` and the turn's end ``flush_written``, which writes through the writers.
    ``clock`` is the hub's (default ``time.time``)."""
    submit = _packet(PacketType.SUBMIT_JOB_BG, FUNCTION, b"", b"x" * 100)
    grab = _packet(PacketType.GRAB_JOB_UNIQ)
    result = b"y" * 100

    def run() -> int:
        hub = ServerHub()
        got: list[bytes] = []
        hub.drive(clock or time.time, _nothing)
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


# The load generator's peers, simulated by loadgen_turns: when each answers
# what the server wrote, in ticks of a simulated clock after the server's turn
# ended (cycled through, so the schedule is the same in every run), and how long
# a turn of the server takes (TURN_TICKS + READ_TICKS per read).  Chosen so that
# fg1's mix per job matches what strace counts in the real server under
# benchmarks.e2e's fg1 load (1.31 wakes, 2.38 reads, 3.38 writes per job):
# the trace gives 1.30, 2.40 and 3.40 (loadgen_turns's ``counts``).
CLIENT_TICKS: Final = (2, 3, 7)
WORKER_TICKS: Final = (3,)
TURN_TICKS: Final = 2
READ_TICKS: Final = 1


Turn = list[tuple[int, bytes]]
"""One turn of the server's loop: the reads it makes, ``(connection id, bytes)``."""


def loadgen_turns(jobs: int, scenario: str = "fg1", *, clients: int = 4, workers: int = 2,
                  inflight: int = 16, clock: Callable[[], float] | None = None,
                  counts: dict[str, int] | None = None) -> list[Turn]:
    """The reads of a server serving ``jobs`` foreground jobs to simulated peers that
    send what ``benchmarks._loadgen`` sends in the ``fg1`` (one job at a time per
    client) or ``fgp`` (``inflight`` per client) scenario, turn by turn.

    Each client sends SUBMIT_JOB and, on its WORK_COMPLETE, the next one; each
    worker sends CAN_DO and GRAB_JOB_UNIQ, answers JOB_ASSIGN_UNIQ with
    WORK_COMPLETE and the next GRAB_JOB_UNIQ in one write, NO_JOB with PRE_SLEEP,
    and a NOOP while not grabbing with GRAB_JOB_UNIQ (``_loadgen._WorkerConn``).
    A peer's answer arrives a few ticks of a simulated clock after the server's
    turn ended (:data:`CLIENT_TICKS`, :data:`WORKER_TICKS`); a turn of the server
    reads every connection with bytes arrived by then (one read each, as one
    wake of the loop does), then ``flush_written``, and takes
    :data:`TURN_TICKS` + :data:`READ_TICKS` per read.  So the turns carry few
    packets, as the real fg1 server's do, and a worker now and then finds no job
    and sleeps.  The server is a driven hub (as :func:`driven_hub_run`) on
    ``clock`` (default ``time.time``); ``counts`` (if given) gets its turns,
    reads, writes and bytes written.  :func:`replay_run` feeds the same reads to
    a fresh hub with no peers to simulate.
    """
    payload = (b"0123456789" * 11)[:100]  # the load generator's
    submit = _packet(PacketType.SUBMIT_JOB, FUNCTION, b"", payload)
    grab = _packet(PacketType.GRAB_JOB_UNIQ)
    pre_sleep = _packet(PacketType.PRE_SLEEP)
    window = 1 if scenario == "fg1" else inflight
    assign_t, no_job_t = int(PacketType.JOB_ASSIGN_UNIQ), int(PacketType.NO_JOB)
    noop_t, complete_t = int(PacketType.NOOP), int(PacketType.WORK_COMPLETE)

    hub = ServerHub(log_level=WARNING)
    hub.drive(clock or time.time, _nothing)
    wrote: list[tuple[int, bytes]] = []
    arrivals: list[tuple[int, int, int, bytes]] = []  # (tick, order, cid, bytes)
    order = 0

    def writer(cid: int) -> Callable[[bytes], None]:
        return lambda data: wrote.append((cid, data))

    peers = clients + workers
    assert [hub.open(b"127.0.0.1", writer=writer(cid)) for cid in range(1, peers + 1)] == \
        list(range(1, peers + 1))
    client_ids, worker_ids = range(1, clients + 1), range(clients + 1, peers + 1)
    is_worker = dict.fromkeys(worker_ids, True) | dict.fromkeys(client_ids, False)
    grabbing = dict.fromkeys(worker_ids, True)
    left = {cid: jobs // clients + (i < jobs % clients) for i, cid in enumerate(client_ids)}
    for cid in worker_ids:
        order += 1
        arrivals.append((0, order, cid, _packet(PacketType.CAN_DO, FUNCTION) + grab))
    for cid in client_ids:
        n = min(window, left[cid])
        left[cid] -= n
        if n:
            order += 1
            arrivals.append((0, order, cid, submit * n))
    heapq.heapify(arrivals)
    turns: list[Turn] = []
    done = writes = sent = answers = 0
    now = 0
    while arrivals:
        tick = max(now, arrivals[0][0])
        batch: dict[int, bytes] = {}
        while arrivals and arrivals[0][0] <= tick:
            _t, _o, cid, data = heapq.heappop(arrivals)
            batch[cid] = batch[cid] + data if cid in batch else data
        for cid, data in batch.items():
            hub.read(cid, data)
        out = hub.flush_written()
        if out is not None:  # the first turn's timer; nothing else comes back here
            assert not (out.close or out.shut or out.pause or out.notes), out
            wrote.extend(out.writes.items())
        turns.append(list(batch.items()))
        writes += len(wrote)
        now = tick + TURN_TICKS + READ_TICKS * len(batch)
        for cid, data in wrote:
            sent += len(data)
            pos, size, reply = 0, len(data), []
            worker = is_worker[cid]
            while pos < size:
                ptype = data[pos + 7]
                end = pos + 12 + int.from_bytes(data[pos + 8:pos + 12], "big")
                if not worker:
                    if ptype == complete_t:
                        done += 1
                        if left[cid]:
                            left[cid] -= 1
                            reply.append(submit)
                elif ptype == assign_t:
                    handle, _f, _u, job_data = data[pos + 12:end].split(b"\0", 3)
                    reply.append(_packet(PacketType.WORK_COMPLETE, handle, job_data))
                    reply.append(grab)
                elif ptype == no_job_t:
                    grabbing[cid] = False
                    reply.append(pre_sleep)
                elif ptype == noop_t and not grabbing[cid]:
                    grabbing[cid] = True
                    reply.append(grab)
                pos = end
            if reply:
                ticks = WORKER_TICKS if worker else CLIENT_TICKS
                answers += 1
                order += 1
                heapq.heappush(arrivals, (now + ticks[answers % len(ticks)], order, cid,
                                          b"".join(reply)))
        wrote.clear()
    assert done == jobs and hub.broker.job_count == 0, (done, hub.broker.job_count)
    if counts is not None:
        counts.update(turns=len(turns), reads=sum(len(t) for t in turns), writes=writes,
                      sent=sent, connections=peers)
    return turns


def replay_run(turns: list[Turn], connections: int, sent: int,
               clock: Callable[[], float] | None = None) -> Callable[[], int]:
    """The reads of :func:`loadgen_turns`, turn by turn, to a fresh driven hub whose
    writers only keep what they are given: the server's work with next to none of
    the harness's (each turn's reads, then ``flush_written``).  ``sent`` is the
    bytes the recording's server wrote; the replay must write the same."""
    def run() -> int:
        hub = ServerHub(log_level=WARNING)
        hub.drive(clock or time.time, _nothing)
        got: list[bytes] = []
        for _ in range(connections):
            hub.open(b"127.0.0.1", writer=got.append)
        read, flush_written = hub.read, hub.flush_written
        for turn in turns:
            for cid, data in turn:
                read(cid, data)
            out = flush_written()
            if out is not None:
                got.extend(out.writes.values())
        assert hub.broker.job_count == 0 and sum(map(len, got)) == sent
        return len(turns)
    return run


def loadgen_hub_run(jobs: int, scenario: str = "fg1") -> Callable[[], int]:
    """:func:`loadgen_turns` recorded, and replayed by each call (for the timing rows)."""
    counts: dict[str, int] = {}
    turns = loadgen_turns(jobs, scenario, counts=counts)
    replay = replay_run(turns, counts["connections"], counts["sent"])

    def run() -> int:
        replay()
        return jobs
    return run


# The driven hub's end-of-turn call (the harness calls flush_written itself) and
# the fixed clock of the instruction counts: C callables, as a server's are
# (time.time, loop.call_soon), so that no interpreted call per turn is counted.
_nothing: Final[Callable[[], object]] = itertools.repeat(None).__next__
_fixed: Final[Callable[[], float]] = itertools.repeat(1000.0).__next__


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


# -- instructions per job (cachegrind) ------------------------------------------------------

TRACES: Final = ("bg", "fg1", "fgp")
"""The driven-hub traces ``--instructions`` counts: :func:`driven_hub_run` (bg, one
packet per read) and :func:`loadgen_turns`'s two foreground scenarios, replayed."""


def _count(name: str, jobs: int, run: bool) -> None:
    """Under cachegrind: trace ``name`` of ``jobs`` jobs, on a fixed clock.  bg: run
    :func:`driven_hub_run` (``jobs`` 0 is the run of none).  fg1 and fgp: record the
    turns and, if ``run``, replay them (recorded in both runs, so the recording cancels)."""
    if name == "bg":
        if jobs:
            driven_hub_run(jobs, clock=_fixed)()
        return
    counts: dict[str, int] = {}
    turns = loadgen_turns(jobs, name, clock=_fixed, counts=counts)
    if run:
        replay_run(turns, counts["connections"], counts["sent"], clock=_fixed)()


def instructions(name: str, jobs: int) -> dict[str, Any]:
    """Instructions per job of trace ``name``, in process, by cachegrind, each run a
    fresh ``python -m benchmarks.core --count`` under ``PYTHONHASHSEED=0`` (one more
    run first writes the ``.pyc`` files).  bg: (a run of ``jobs`` - a run of none) /
    ``jobs``; fg1, fgp: (record and replay - record only) / ``jobs``.  Start-up,
    imports and the hub's set-up cancel."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}

    def total(n: int, run: bool) -> int:
        out = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no",
             "--cachegrind-out-file=/dev/null", sys.executable, "-m", "benchmarks.core",
             "--count", name, str(n), str(int(run))],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        match = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
        if match is None:
            raise RuntimeError(f"no instruction count in valgrind's output:\n{out.stderr}")
        return int(match.group(1).replace(",", ""))

    if name == "bg":
        total(0, False)
        none, some = total(0, False), total(jobs, True)
    else:
        total(jobs, False)
        none, some = total(jobs, False), total(jobs, True)
    row: dict[str, Any] = {"trace": name, "jobs": jobs, "totals": [none, some],
                           "per_job": (some - none) / jobs}
    if name != "bg":
        counts: dict[str, int] = {}
        loadgen_turns(jobs, name, clock=_fixed, counts=counts)
        row.update({k: counts[k] / jobs for k in ("turns", "reads", "writes")})
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, help="jobs per run (default 200,000; 5,000 with "
                   "--instructions)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--queue", type=int, default=1_000_000,
                   help="background jobs left queued for the memory figure")
    p.add_argument("--no-servers", action="store_true",
                   help="skip the memory figures of server processes")
    p.add_argument("--smoke", action="store_true", help="2000 jobs, once; 2000 queued")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--instructions", metavar="TRACES", nargs="?", const=",".join(TRACES),
                   help="instructions per job of the driven-hub traces (comma-separated, "
                   f"of {', '.join(TRACES)}; default all) by cachegrind, with "
                   "--jobs (default here 5000) jobs; nothing else is run")
    p.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    p.add_argument("--count", nargs=3, metavar=("TRACE", "JOBS", "RUN"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_memory:
        print(json.dumps(hub_memory(args.child_memory)))
        return 0
    if args.count:
        _count(args.count[0], int(args.count[1]), args.count[2] == "1")
        return 0
    if args.instructions:
        import gearman_proto
        n = args.jobs or 5000
        build = "compiled" if gearman_proto.COMPILED else "pure"
        counted = []
        for name in args.instructions.split(","):
            if name not in TRACES:
                p.error(f"--instructions: no trace {name!r} (of {', '.join(TRACES)})")
            row = instructions(name, n)
            counted.append(row)
            mix = (f"; per job {row['turns']:.2f} turns, {row['reads']:.2f} reads, "
                   f"{row['writes']:.2f} writes" if "turns" in row else "")
            print(f"  {name:4s} {build:8s} {row['per_job']:10,.0f} instructions per job "
                  f"({n} jobs{mix})", flush=True)
        write_json(args.json, {"machine": machine(), "build": build, "rows": counted})
        return 0
    if args.smoke:
        args.jobs, args.repeat, args.queue = 2000, 1, 2000
    n = args.jobs or 200_000
    runs: list[tuple[str, Callable[[], int]]] = [
        ("bg", broker_run(n)),
        ("bg batch (deep queue)", broker_run(n, batch=True)),
        ("fg", broker_run(n, background=False)),
        ("bg unique", broker_run(n, unique=True)),
        ("hub bg (bytes in and out)", hub_run(n)),
        ("hub bg, driven turn", driven_hub_run(n)),
        ("hub fg1, driven turn", loadgen_hub_run(n, "fg1")),
        ("hub fgp, driven turn", loadgen_hub_run(n, "fgp")),
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
