"""Limits and pressure: memory bounded by the configured limits, 5,000 idle connections, a soak.

Measured on the server process from outside (``/proc/PID/status`` and
``/proc/PID/fd``), with the server started by the command line, as deployed.

The memory bound is computed from the configured limits, not observed and
then asserted: the server stops reading from a peer that waits for
``--max-client-jobs`` foreground jobs, or has ``--output-limit`` bytes waiting
for it, so a peer that never reads can only have submitted that many jobs plus
the rest of one read; every such job costs its bookkeeping and its result.
The soak's long version is the ``soak`` marker, run with
``GEARMAN_SOAK_SECONDS`` (see the README's Reliability section).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _support import (
    Raw,
    RawClient,
    ServerProcess,
    WorkerProcess,
    admin_rows,
    open_fds,
    packet,
    raise_nofile,
    rss_bytes,
    status_of,
    wait_for,
)

from gearman_proto import admin
from gearman_proto.events import SubmitJob, WorkComplete
from gearman_proto.packets import PacketType

T = PacketType
MiB = 1024 * 1024
READ_SIZE = 256 * 1024
"""Bytes one read takes from a socket: asyncio's selector transports and our anyio server."""


def peak_rss(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def run_jobs(address: tuple[str, int], fn: bytes, n: int, timeout: float = 30) -> None:
    """Submit ``n`` foreground jobs and wait for all their results."""
    client = RawClient(address)
    client.send(*(SubmitJob(fn, b"w%d" % i, b"") for i in range(n)))
    done = 0
    deadline = time.monotonic() + timeout
    while done < n:
        assert time.monotonic() < deadline, f"{done} of {n} jobs done"
        done += sum(isinstance(e, WorkComplete) for e in client.poll(0.5))
    client.close()


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.feature("reliability.never-reads")
def test_a_client_that_submits_and_never_reads_cannot_grow_server_memory_without_bound(
        our_server_factory: Callable[..., ServerProcess],
        workers: Callable[..., WorkerProcess], tmp_path: Path, loop: str) -> None:
    limit = 64 * 1024
    client_jobs = 1000
    result_size = 1024
    server = our_server_factory(loop=loop, extra=(
        "--output-limit", str(limit), "--max-client-jobs", str(client_jobs),
        "--max-packet", str(64 * 1024)))
    workers(server.address, "flood", tmp_path / "runs.log", "--max-jobs", "4",
            "--result-size", str(result_size))
    wait_for(lambda: b"flood" in status_of(server.address), what="the worker")
    run_jobs(server.address, b"flood", 500)  # warm up: allocate what serving jobs needs
    baseline = rss_bytes(server.pid)

    submission = packet(T.SUBMIT_JOB, b"flood", b"", b"x" * 32)
    # What the server can have accepted from a peer it has stopped reading:
    # --max-client-jobs, plus the rest of the read that crossed it.  (Not
    # reading once the output passes --output-limit is not enough alone: the
    # peer's kernel takes megabytes of 30-byte JOB_CREATED packets first.)
    max_jobs = client_jobs + READ_SIZE // len(submission) + 1
    per_job = 2048 + result_size + len(submission)  # bookkeeping allowance + result + request
    bound = max_jobs * per_job + limit + READ_SIZE

    flood = socket.create_connection(server.address)
    flood.setblocking(False)
    chunk = memoryview(submission * 2000)
    offset = 0  # into chunk: a partial send must be continued, not restarted
    sent = 0
    blocked_since = None
    start = time.monotonic()
    while sent < 400 * MiB:
        try:
            n = flood.send(chunk[offset:])
            sent += n
            offset = (offset + n) % len(chunk)
            blocked_since = None
        except BlockingIOError:
            blocked_since = blocked_since or time.monotonic()
            if time.monotonic() - blocked_since > 2.0:
                break  # the server has stopped reading us: TCP holds the rest
            time.sleep(0.01)
        assert time.monotonic() - start < 60
    # Let the accepted jobs run: their results pile up for the client that never reads.
    wait_for(lambda: status_of(server.address)[b"flood"].total == 0, what="the worker")
    growth = peak_rss(server.pid) - baseline
    assert sent < 400 * MiB, "the server kept reading from a peer that does not read"
    assert growth <= bound, (growth, bound)
    # The server still serves everybody else.
    run_jobs(server.address, b"flood", 100)
    flood.close()
    print(f"FIGURES loop={loop} output_limit={limit} max_client_jobs={client_jobs} "
          f"flood_sent_bytes={sent} max_jobs_accepted_bound={max_jobs} rss_growth={growth} "
          f"bound={bound}")


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.feature("reliability.idle-5000")
def test_5000_idle_connections_are_held_while_jobs_are_served(
        our_server_factory: Callable[..., ServerProcess],
        workers: Callable[..., WorkerProcess], tmp_path: Path, loop: str) -> None:
    n = 5000
    if raise_nofile(2 * n + 200) < n + 200:
        pytest.skip("the open-files limit cannot be raised high enough here")
    server = our_server_factory(loop=loop)  # inherits the raised limit
    workers(server.address, "busy", tmp_path / "runs.log")
    wait_for(lambda: b"busy" in status_of(server.address), what="the worker")
    time.sleep(0.3)  # the admin connection that asked is closed
    fds_before = open_fds(server.pid)
    idle: list[socket.socket] = []
    try:
        for _ in range(n):
            idle.append(socket.create_connection(server.address, timeout=10))
        wait_for(lambda: open_fds(server.pid) >= fds_before + n, timeout=30,
                 what=f"the server to accept {n} connections")
        rows = admin_rows_count(server.address)
        assert rows >= n + 1  # every idle connection, the worker, the admin asking
        start = time.monotonic()
        run_jobs(server.address, b"busy", 200)
        elapsed = time.monotonic() - start
        # A sample of the idle ones is still alive, and answers.
        for sock in random.sample(idle, 20):
            sock.sendall(packet(T.ECHO_REQ, b"alive"))
            assert sock.recv(64).endswith(b"alive")
        held = open_fds(server.pid) - fds_before
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: open_fds(server.pid) <= fds_before, timeout=30,
             what="the server to close the idle connections")
    print(f"FIGURES loop={loop} idle_connections_held={held} jobs_run_meanwhile=200 "
          f"seconds_for_200_jobs={elapsed:.2f}")


def admin_rows_count(address: tuple[str, int]) -> int:
    rows = admin_rows(address, admin.Workers())
    assert isinstance(rows, list)
    return len(rows)


# -- soak -------------------------------------------------------------------------------------


def _churn(address: tuple[str, int], stop: threading.Event, counts: dict[str, int],
           rng: random.Random) -> None:
    """Connections coming and going, each doing one thing (some of them rudely)."""
    while not stop.is_set():
        what = rng.choice(["echo", "job", "background", "admin", "reset", "half-packet",
                           "garbage"])
        try:
            raw = Raw(address, timeout=10)
            if what == "echo":
                assert raw.echo_works()
            elif what == "job":
                raw.send(packet(T.SUBMIT_JOB, b"soak", b"", b"churn"))
                while (item := raw.read(timeout=10)) is not None and item.type != T.WORK_COMPLETE:
                    pass
            elif what == "background":
                raw.send(packet(T.SUBMIT_JOB_BG, b"soak", b"", b"bg"))
                raw.read(timeout=10)
            elif what == "admin":
                raw.admin(b"status")
            elif what == "reset":  # vanish with a foreground job queued or running
                raw.send(packet(T.SUBMIT_JOB, b"soak", b"", b"orphan"))
                raw.read(timeout=10)
                raw.close(reset=True)
                counts[what] += 1
                continue
            elif what == "half-packet":
                raw.send(packet(T.ECHO_REQ, b"cut short")[:9])
            else:
                raw.send(b"\0REQ" + os.urandom(20))
                raw.read_all_until_close(timeout=10)
            raw.close()
            counts[what] += 1
        except OSError:
            counts["errors"] += 1


def soak(server: ServerProcess, workers: Callable[..., WorkerProcess], tmp_path: Path,
         seconds: float, rng: random.Random) -> dict[str, float]:
    """Steady load plus churn for ``seconds``; returns the measurements."""
    for _ in range(2):
        workers(server.address, "soak", tmp_path / "runs.log", "--max-jobs", "2")
    wait_for(lambda: b"soak" in status_of(server.address), what="the workers")
    counts: dict[str, int] = dict.fromkeys(
        ["echo", "job", "background", "admin", "reset", "half-packet", "garbage", "errors",
         "steady_jobs"], 0)
    stop = threading.Event()

    def steady() -> None:
        client = RawClient(server.address)
        in_flight = 0
        n = 0
        while not stop.is_set() or in_flight:
            if not stop.is_set() and in_flight < 20:
                client.send(*(SubmitJob(b"soak", b"s%d" % (n + i), b"") for i in range(10)))
                n += 10
                in_flight += 10
            for event in client.poll(0.2):
                if isinstance(event, WorkComplete):
                    in_flight -= 1
                    counts["steady_jobs"] += 1
        client.close()

    def phase(duration: float) -> None:
        stop.clear()
        threads = [threading.Thread(target=steady, daemon=True)] + [
            threading.Thread(target=_churn, args=(server.address, stop, counts,
                                                  random.Random(rng.random())), daemon=True)
            for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(duration)
        stop.set()
        for t in threads:
            t.join(30)
        wait_for(lambda: status_of(server.address)[b"soak"].total == 0, what="the queue")
        wait_for(lambda: len(admin_rows_list(server.address)) == 3, timeout=10,
                 what="only the two workers (and the admin asking) connected")

    phase(min(5.0, seconds / 4))  # warm-up: the allocator and caches settle
    time.sleep(0.5)  # the admin connection that asked is closed
    rss0, fds0 = rss_bytes(server.pid), open_fds(server.pid)
    start = time.monotonic()
    phase(seconds)
    elapsed = time.monotonic() - start
    # Back to the baseline once the last connections' closes are processed.
    wait_for(lambda: open_fds(server.pid) <= fds0, timeout=10, what="descriptors to return")
    rss1, fds1 = rss_bytes(server.pid), open_fds(server.pid)
    return {"seconds": elapsed, "rss_before": rss0, "rss_after": rss1,
            "fds_before": fds0, "fds_after": fds1, **counts}


def admin_rows_list(address: tuple[str, int]) -> list[object]:
    rows = admin_rows(address, admin.Workers())
    assert isinstance(rows, list)
    return rows


def _check_soak(m: dict[str, float]) -> None:
    assert m["fds_after"] == m["fds_before"], m
    # Memory comes back to its baseline: no growth with the number of connections
    # served (thousands), only the allocator's slack.
    assert m["rss_after"] <= m["rss_before"] * 1.10 + 4 * MiB, m
    assert m["steady_jobs"] > 0 and m["job"] > 0 and m["reset"] > 0, m
    print("FIGURES soak " + " ".join(f"{k}={int(v)}" for k, v in m.items()))


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.feature("reliability.short-soak")
def test_short_soak_returns_to_its_baseline(
        our_server_factory: Callable[..., ServerProcess],
        workers: Callable[..., WorkerProcess], tmp_path: Path, rng: random.Random,
        loop: str) -> None:
    server = our_server_factory(loop=loop)
    _check_soak(soak(server, workers, tmp_path, 15.0, rng))


@pytest.mark.soak
@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.feature("reliability.long-soak")
def test_long_soak_returns_to_its_baseline(
        our_server_factory: Callable[..., ServerProcess],
        workers: Callable[..., WorkerProcess], tmp_path: Path, rng: random.Random,
        loop: str) -> None:
    if not os.environ.get("GEARMAN_SOAK_SECONDS"):
        pytest.skip("long soak: run with GEARMAN_SOAK_SECONDS=300")
    seconds = float(os.environ["GEARMAN_SOAK_SECONDS"])
    server = our_server_factory(loop=loop)
    _check_soak(soak(server, workers, tmp_path, seconds, rng))
