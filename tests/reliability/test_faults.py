"""Faults with real processes on loopback: workers and servers SIGKILLed, clients vanishing.

Every process here is a real one: our server (``gearman-proto server``), worker
processes from ``_worker.py`` killed with SIGKILL at random moments, clients on
raw sockets that count every packet they receive.  The guarantee checked is
the one the README's Reliability section states: a job may *run* more than once (a
worker killed mid-job gives its job back, and it runs again elsewhere), but
the clients see it completed exactly once, and no acknowledged job is lost.

``GEARMAN_SEED`` replays a run's random choices (the seed is printed).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from _support import (
    RawClient,
    RunLogTail,
    ServerProcess,
    WorkerProcess,
    admin_rows,
    kill_and_restart,
    read_runs,
    status_of,
    wait_for,
)

from gearman_proto import admin
from gearman_proto.events import JobCreated, SubmitJob, WorkComplete, WorkException, WorkFail

JOBS = int(os.environ.get("GEARMAN_KILL_JOBS", "2000"))


def report(**figures: object) -> None:
    """Print the figures a run measured (shown with ``-s``; the README quotes them)."""
    print("FIGURES " + " ".join(f"{k}={v}" for k, v in figures.items()))


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.feature("reliability.sigkill")
@pytest.mark.feature("reliability.sigkill-long")
def test_workers_sigkilled_mid_job_lose_nothing_and_complete_nothing_twice(
        our_server_factory: Callable[..., ServerProcess],
        workers: Callable[..., WorkerProcess], tmp_path: Path, rng: random.Random,
        loop: str) -> None:
    """PROTOCOL-NOTES §4.8: a job whose worker is lost is requeued, and runs again.

    JOBS foreground jobs of 0-20 ms; six worker processes, and every 50-300 ms
    one that is running jobs is SIGKILLed and replaced.  The client counts
    every WORK_* packet per handle.
    """
    server = our_server_factory(loop=loop)
    log = tmp_path / "runs.log"
    fn = "killme"
    args = ("--max-sleep", "0.02")
    pool = [workers(server.address, fn, log, *args) for _ in range(6)]
    wait_for(lambda: fn.encode() in status_of(server.address)
             and status_of(server.address)[fn.encode()].available_workers == 6, what="workers")
    tail = RunLogTail(log)

    client = RawClient(server.address)
    ids = [b"j%d" % i for i in range(JOBS)]
    client.send(*(SubmitJob(fn.encode(), i, i) for i in ids))

    handle_of: dict[bytes, bytes] = {}
    completions: Counter[bytes] = Counter()
    results: dict[bytes, bytes] = {}
    failures: list[object] = []
    kills = 0
    next_kill = time.monotonic() + rng.uniform(0.05, 0.3)
    deadline = time.monotonic() + 120
    while sum(completions.values()) < JOBS or len(handle_of) < JOBS:
        assert time.monotonic() < deadline, (
            f"{sum(completions.values())} of {JOBS} jobs completed in 120 s")
        for event in client.poll(timeout=0.01):
            if isinstance(event, JobCreated):
                assert event.request is not None
                handle_of[event.handle] = event.request.data
            elif isinstance(event, WorkComplete):
                completions[event.handle] += 1
                results[event.handle] = event.data
            elif isinstance(event, (WorkFail, WorkException)):
                failures.append(event)
        if time.monotonic() >= next_kill:
            working = tail.update()
            victims = [w for w in pool if w.pid in working]
            if victims:
                victim = rng.choice(victims)
                victim.kill()
                kills += 1
                pool[pool.index(victim)] = workers(server.address, fn, log, *args)
            next_kill = time.monotonic() + rng.uniform(0.05, 0.3)
    # A last moment for a stray duplicate to arrive, had the server sent one.
    for event in client.events(timeout=0.3):
        if isinstance(event, WorkComplete):
            completions[event.handle] += 1
    client.close()

    assert not failures
    assert set(handle_of.values()) == set(ids)  # every job acknowledged once
    twice = {h: n for h, n in completions.items() if n != 1}
    assert not twice, f"completed more than once in the client's view: {twice}"
    assert set(completions) == set(handle_of)  # zero lost
    for handle, data in results.items():
        assert data == b"done:" + handle_of[handle]

    runs = read_runs(log)
    started = Counter(job for event, job, _pid in runs if event == "start")
    ended = Counter(job for event, job, _pid in runs if event == "end")
    interrupted = sum(started.values()) - sum(ended.values())
    ran_twice = sum(1 for n in started.values() if n > 1)
    assert kills >= 5 and interrupted >= 1, (kills, interrupted)
    assert all(status_of(server.address)[fn.encode()].total == 0 for _ in [0])
    assert admin_rows(server.address, admin.ShowJobs()) == []
    report(loop=loop, jobs=JOBS, kills=kills, killed_mid_job=interrupted,
           runs=sum(started.values()), ran_more_than_once=ran_twice,
           completed_twice=len(twice), lost=JOBS - len(completions))


# -- the server killed, durable mode ----------------------------------------------------------


class Submitter(threading.Thread):
    """Submits background jobs without pause, reconnecting when the server dies.

    ``acked`` holds every job id whose JOB_CREATED arrived: the jobs the server
    promised to keep.  Up to ``window`` submissions are in flight at once.
    """

    def __init__(self, server: ServerProcess, fn: bytes, window: int = 32) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.fn = fn
        self.window = window
        self.acked: set[bytes] = set()
        self.sent = 0
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                client = RawClient(self.server.address, timeout=2)
            except OSError:
                time.sleep(0.02)
                continue
            try:
                outstanding = 0
                while not self.stop.is_set():
                    batch = []
                    while outstanding + len(batch) < self.window:
                        batch.append(SubmitJob(self.fn, b"b%d" % n, b"b%d" % n,
                                               background=True))
                        n += 1
                    if batch:
                        client.send(*batch)
                        self.sent += len(batch)
                        outstanding += len(batch)
                    got = False
                    for event in client.events(timeout=0.5):
                        got = True
                        if isinstance(event, JobCreated):
                            assert event.request is not None
                            self.acked.add(event.request.unique)
                            outstanding -= 1
                        break
                    if not got:
                        break  # a silent or dead server: reconnect
                    if not client.conn.state.value == "open":
                        break
            except OSError:
                pass
            except Exception as exc:  # anything else is a test failure
                if not self.stop.is_set():
                    self.errors.append(exc)
            finally:
                client.close()


@pytest.mark.feature("reliability.durable")
def test_server_sigkilled_in_durable_mode_loses_no_acknowledged_job(
        our_server_factory: Callable[..., ServerProcess],
        workers: Callable[..., WorkerProcess], tmp_path: Path, rng: random.Random) -> None:
    """A background job is acknowledged only once stored; SIGKILL can't take it back.

    Five kill/restart cycles on the same SQLite file under load: a client
    submitting background jobs without pause, two workers running them.
    """
    db = tmp_path / "queue.sqlite"
    server = our_server_factory(extra=("--queue", f"sqlite:{db}"))
    log = tmp_path / "runs.log"
    fn = "durable"
    for _ in range(2):
        workers(server.address, fn, log, "--max-sleep", "0.002")
    submitter = Submitter(server, fn.encode())
    submitter.start()
    cycles = 5
    try:
        kill_and_restart(server, rng, cycles, up=(0.4, 1.2))
    finally:
        submitter.stop.set()
        submitter.join(10)
    assert not submitter.errors, submitter.errors
    acked = submitter.acked
    assert len(acked) > 100, "too little load to mean anything"

    def all_ran() -> bool:
        done = {job.encode() for event, job, _ in read_runs(log) if event == "end"}
        return acked <= done
    wait_for(all_ran, what="every acknowledged job to run")
    wait_for(lambda: status_of(server.address).get(fn.encode(), admin.StatusRow(b"", 0, 0, 0))
             .total == 0, what="the queue to drain")
    runs = read_runs(log)
    ended = Counter(job for event, job, _ in runs if event == "end")
    lost = acked - {job.encode() for job in ended}
    assert not lost
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM gearman_queue").fetchone()[0] == 0
    report(server_kills=cycles, submitted=submitter.sent, acknowledged=len(acked),
           ran=len(ended), ran_more_than_once=sum(1 for n in ended.values() if n > 1),
           lost=len(lost))


# -- a client vanishing -------------------------------------------------------------------------


_VANISHING_CLIENT = """
import socket, sys, time
from gearman_proto.client import ClientConnection
from gearman_proto.events import SubmitJob, JobCreated
conn = ClientConnection()
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
if sys.argv[2] == "RST":  # closed with SO_LINGER 0: the kernel resets the connection
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\1\\0\\0\\0\\0\\0\\0\\0")
jobs = [SubmitJob(b"slow", b"s%d" % i, b"") for i in range(3)]
jobs += [SubmitJob(b"nobody", b"n%d" % i, b"") for i in range(5)]
sock.sendall(b"".join(conn.send(j) for j in jobs))
created = 0
while created < len(jobs):
    conn.receive_data(sock.recv(65536))
    created += sum(isinstance(e, JobCreated) for e in conn.events())
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.parametrize("how", ["SIGKILL", "RST"])
@pytest.mark.feature("reliability.vanishing")
def test_client_vanishing_frees_its_foreground_jobs(
        our_server_factory: Callable[..., ServerProcess],
        workers: Callable[..., WorkerProcess], tmp_path: Path, loop: str, how: str) -> None:
    """PROTOCOL-NOTES §4.8: a queued foreground job nobody waits for leaves at once;
    a running one finishes into the void.  ``status`` and ``show jobs`` go back to 0."""
    server = our_server_factory(loop=loop)
    workers(server.address, "slow", tmp_path / "runs.log", "--max-sleep", "0.6")
    wait_for(lambda: b"slow" in status_of(server.address), what="the worker")
    proc = subprocess.Popen([sys.executable, "-c", _VANISHING_CLIENT, str(server.port), how],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        rows = status_of(server.address)
        assert rows[b"slow"].total == 3 and rows[b"nobody"].total == 5
        assert len(admin_rows(server.address, admin.ShowJobs())) == 8  # type: ignore[arg-type]
        os.kill(proc.pid, signal.SIGKILL)  # its kernel closes the socket: FIN, or RST
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def freed() -> bool:
        rows = status_of(server.address)
        return (rows[b"nobody"].total == 0 and rows[b"slow"].total == 0
                and admin_rows(server.address, admin.ShowJobs()) == [])
    wait_for(freed, timeout=10, what="status and show jobs to return to zero")
    # Only the worker (and the admin connection asking) remain.
    rows = admin_rows(server.address, admin.Workers())
    assert isinstance(rows, list) and len(rows) == 2
    started = [job for event, job, _ in read_runs(tmp_path / "runs.log") if event == "start"]
    assert len(started) <= 3
