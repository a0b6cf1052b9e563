"""Clients and workers of each library, for ``benchmarks.overhead`` (one per child process).

``python -m benchmarks._peers worker LIB PORT``
    serves the function ``bench`` (the result is the job's data) until SIGTERM.
``python -m benchmarks._peers client LIB PORT SCENARIO JOBS INFLIGHT SECONDS``
    runs JOBS foreground jobs -- one at a time (``seq``) or INFLIGHT at once
    (``conc``) -- bounded by SECONDS, and prints one JSON line of results.

LIB is ``raw`` (a minimal blocking-socket implementation, the baseline),
``asyncio`` or ``sync`` (gearman-proto's adapters), or ``gear`` (OpenStack's).
Every library sends the same packets: SUBMIT_JOB with an empty unique id and
a 100-byte payload, answered with WORK_COMPLETE carrying the same bytes.
Only 127.0.0.1 is connected to.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from typing import Any

from benchmarks._util import HOST, percentile, run_loop

FUNCTION = b"bench"
PAYLOAD = (b"0123456789" * 10)[:100]
_HDR = struct.Struct(">4sII")
CAN_DO, PRE_SLEEP, NOOP, SUBMIT_JOB, JOB_CREATED, NO_JOB = 1, 4, 6, 7, 8, 10
WORK_COMPLETE, GRAB_JOB_UNIQ, JOB_ASSIGN_UNIQ = 13, 30, 31


def _packet(ptype: int, *args: bytes) -> bytes:
    payload = b"\0".join(args)
    return _HDR.pack(b"\0REQ", ptype, len(payload)) + payload


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Packets:
    """Complete packets out of a byte stream."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.buf
        buf += data
        out = []
        pos = 0
        while len(buf) - pos >= 12:
            _m, ptype, size = _HDR.unpack_from(buf, pos)
            end = pos + 12 + size
            if end > len(buf):
                break
            out.append((ptype, bytes(buf[pos + 12:end])))
            pos = end
        del buf[:pos]
        return out


# -- workers ----------------------------------------------------------------------------


def raw_worker(port: int) -> None:
    sock = _connect(port)
    grab = _packet(GRAB_JOB_UNIQ)
    sock.sendall(_packet(CAN_DO, FUNCTION) + grab)
    packets = _Packets()
    grabbing = True
    while True:
        data = sock.recv(65536)
        if not data:
            return
        out = []
        for ptype, payload in packets.feed(data):
            if ptype == JOB_ASSIGN_UNIQ:
                handle, _, rest = payload.partition(b"\0")
                rest = rest.partition(b"\0")[2]
                out.append(_packet(WORK_COMPLETE, handle, rest.partition(b"\0")[2]))
                out.append(grab)
            elif ptype == NO_JOB:
                grabbing = False
                out.append(_packet(PRE_SLEEP))
            elif ptype == NOOP and not grabbing:
                grabbing = True
                out.append(grab)
        if out:
            sock.sendall(b"".join(out))


def asyncio_worker(port: int) -> None:
    from gearman_proto.adapters.asyncio import Worker, WorkerJob

    async def main() -> None:
        worker = Worker((HOST, port))

        async def bench(job: WorkerJob) -> bytes:
            return job.data

        worker.register(FUNCTION, bench)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM,
                                                      lambda: worker.stop(graceful=False))
        await worker.work()

    run_loop(main())


def sync_worker(port: int) -> None:
    from gearman_proto.adapters.sync import Worker, WorkerJob

    worker = Worker((HOST, port))

    def bench(job: WorkerJob) -> bytes:
        return job.data

    worker.register(FUNCTION, bench)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop(graceful=False))
    worker.work()


def gear_worker(port: int) -> None:
    import gear

    worker = gear.Worker("bench")
    worker.addServer(HOST, port)
    worker.waitForServer()
    worker.registerFunction(FUNCTION.decode())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        job = worker.getJob()
        job.sendWorkComplete(job.arguments)


# -- clients ----------------------------------------------------------------------------


class _Tally:
    def __init__(self, jobs: int, seconds: float) -> None:
        self.jobs = jobs
        self.deadline = time.monotonic() + seconds
        self.started = 0
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.t0 = self.t_end = 0.0
        self.cpu0 = self.cpu_end = 0.0  # this process's CPU time, over the same span

    def take(self) -> bool:
        """Claim the next job to run; False when the count or the time is used up.

        The clock starts at the first claim, after the library's setup.
        """
        with self.lock:
            if self.started >= self.jobs or time.monotonic() > self.deadline:
                return False
            if not self.started:
                self.t0 = time.perf_counter()
                self.cpu0 = time.process_time()
            self.started += 1
            return True

    def done(self, submitted: float) -> None:
        """A job submitted at ``submitted`` (perf_counter) came back."""
        self.t_end = time.perf_counter()
        self.cpu_end = time.process_time()
        self.latencies.append(self.t_end - submitted)


def raw_client(port: int, window: int, tally: _Tally) -> None:
    sock = _connect(port)
    submit = _packet(SUBMIT_JOB, FUNCTION, b"", PAYLOAD)
    packets = _Packets()
    sent_at: deque[float] = deque()
    created: dict[bytes, float] = {}
    in_flight = 0

    def send(count: int) -> None:
        nonlocal in_flight
        n = 0
        while n < count and tally.take():
            n += 1
        if n:
            now = time.perf_counter()
            sent_at.extend([now] * n)
            in_flight += n
            sock.sendall(submit * n)

    send(window)
    while in_flight:
        sock.settimeout(max(0.01, tally.deadline - time.monotonic() + 5))
        data = sock.recv(65536)
        if not data:
            break
        more = 0
        for ptype, payload in packets.feed(data):
            if ptype == JOB_CREATED:
                created[payload] = sent_at.popleft()
            elif ptype == WORK_COMPLETE:
                handle = payload.partition(b"\0")[0]
                tally.done(created.pop(handle))
                in_flight -= 1
                more += 1
        if more:
            send(more)


def asyncio_client(port: int, window: int, tally: _Tally) -> None:
    from gearman_proto.adapters.asyncio import Client

    async def main() -> None:
        async with Client((HOST, port)) as client:
            async def one_at_a_time() -> None:
                while tally.take():
                    t = time.perf_counter()
                    await client.do(FUNCTION, PAYLOAD, unique=b"")
                    tally.done(t)
            await asyncio.gather(*(one_at_a_time() for _ in range(window)))

    run_loop(main())


def sync_client(port: int, window: int, tally: _Tally) -> None:
    from gearman_proto.adapters.sync import Client

    with Client((HOST, port)) as client:
        def one_at_a_time() -> None:
            while tally.take():
                t = time.perf_counter()
                client.do(FUNCTION, PAYLOAD, unique=b"")
                tally.done(t)
        _threads(one_at_a_time, window)


def gear_client(port: int, window: int, tally: _Tally) -> None:
    import gear

    class Client(gear.Client):  # type: ignore[misc]
        """gear has no wait for a result: signal it from the WORK_COMPLETE handler."""

        def handleWorkComplete(self, packet: Any) -> Any:  # gear's name
            job = super().handleWorkComplete(packet)
            job.done_event.set()
            return job

    client = Client("bench")
    client.addServer(HOST, port)
    client.waitForServer()

    def one_at_a_time() -> None:
        while tally.take():
            t = time.perf_counter()
            job = gear.Job(FUNCTION, PAYLOAD, unique=None)
            job.done_event = threading.Event()
            client.submitJob(job)
            job.done_event.wait(60)
            tally.done(t)

    _threads(one_at_a_time, window)
    client.shutdown()


def _threads(target: Any, n: int) -> None:
    if n == 1:
        target()
        return
    threads = [threading.Thread(target=target) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


WORKERS = {"raw": raw_worker, "asyncio": asyncio_worker, "sync": sync_worker,
           "gear": gear_worker}
CLIENTS = {"raw": raw_client, "asyncio": asyncio_client, "sync": sync_client,
           "gear": gear_client}


def main() -> None:
    role, lib, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if role == "worker":
        WORKERS[lib](port)
        return
    scenario, jobs, inflight, seconds = sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), \
        float(sys.argv[7])
    tally = _Tally(jobs, seconds)
    CLIENTS[lib](port, 1 if scenario == "seq" else inflight, tally)
    elapsed = max(tally.t_end - tally.t0, 1e-9)
    done = len(tally.latencies)
    print(json.dumps({"jobs": done, "seconds": elapsed, "jobs_per_s": done / elapsed,
                      "p50_us": percentile(tally.latencies, 50) * 1e6,
                      "p99_us": percentile(tally.latencies, 99) * 1e6,
                      "timed_out": done < jobs,
                      "client_cpu_us": (tally.cpu_end - tally.cpu0) / max(done, 1) * 1e6}))


if __name__ == "__main__":
    main()
