"""Durable queues under SIGKILL and outages, on every store, with real processes.

* kill -9: three kill/restart cycles of the job server under load; every
  acknowledged background job runs (issue 16, item 5).
* Outage (PostgreSQL, Redis): the database stops under load; durable
  submissions get ERROR QUEUE_ERROR and nothing else stops; the database comes
  back and the server resumes by itself; no acknowledged job is lost, the one
  running through the outage included (issue 16, item 3).
* A background submission coalescing onto a foreground job makes it durable
  (issue 11, item 4); a replacement server with the same name replays (item 2).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from _dbs import QueueSpec
from _load import Submitter
from _support import RawClient, WorkerProcess, kill_and_restart, read_runs, status_of, wait_for
from gearman_proto.adapters.stores import open_store

from gearman_proto.events import EchoReq, EchoRes, JobCreated, SubmitJob, WorkComplete

if TYPE_CHECKING:
    from conftest import ServerProcess

LOOPS = {"sqlite": "asyncio", "postgresql": "trio", "redis": "asyncio"}


def report(**figures: object) -> None:
    """Print the figures a run measured (shown with ``-s``)."""
    print("FIGURES " + " ".join(f"{k}={v}" for k, v in figures.items()))


def stored_rows(spec: str, name: str = "default") -> int:
    store = open_store(spec, name=name)
    assert store is not None
    try:
        return len(list(store.load()))
    finally:
        store.close()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_sigkilled_server_loses_no_acknowledged_job(
        queue_spec: QueueSpec, our_server_factory: Callable[..., ServerProcess],
        workers: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    """Three kill -9 / restart cycles under load: every acknowledged job runs."""
    rng = random.Random(16)
    server = our_server_factory(extra=("--queue", queue_spec.spec),
                                loop=LOOPS[queue_spec.kind])
    log = tmp_path / "runs.log"
    fn = "durable"
    for _ in range(2):
        workers(server.address, fn, log, "--max-sleep", "0.002")
    submitter = Submitter(server.address, fn.encode())
    submitter.start()
    cycles = 3
    try:
        kill_and_restart(server, rng, cycles, up=(0.5, 1.2))
    finally:
        submitter.stop.set()
        submitter.join(10)
    assert not submitter.errors, submitter.errors
    assert not submitter.refused, submitter.codes
    acked = submitter.acked
    assert len(acked) > 100, "too little load to mean anything"

    def all_ran() -> bool:
        done = {job.encode() for event, job, _ in read_runs(log) if event == "end"}
        return acked <= done
    wait_for(all_ran, timeout=120, what="every acknowledged job to run")
    wait_for(lambda: fn.encode() not in status_of(server.address)
             or status_of(server.address)[fn.encode()].total == 0, what="the queue to drain")
    ended = Counter(job for event, job, _ in read_runs(log) if event == "end")
    lost = acked - {job.encode() for job in ended}
    assert not lost
    server.stop()
    assert stored_rows(queue_spec.spec) == 0  # finished jobs left the store
    report(store=queue_spec.kind, server_kills=cycles, submitted=submitter.sent,
           acknowledged=len(acked), ran_more_than_once=sum(1 for n in ended.values() if n > 1),
           lost=len(lost))


def roundtrip(address: tuple[str, int], *events: object, timeout: float = 10) -> list[object]:
    """Send ``events`` on a fresh connection; the replies, one per event."""
    client = RawClient(address, timeout=timeout)
    try:
        client.send(*events)  # type: ignore[arg-type]
        got: list[object] = []
        deadline = time.monotonic() + timeout
        while len(got) < len(events) and time.monotonic() < deadline:
            got.extend(client.poll(1))
        return got
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.parametrize("store_kind", ["postgresql", "redis"])
def test_database_outage_under_load(
        queue_spec: QueueSpec, our_server_factory: Callable[..., ServerProcess],
        workers: Callable[..., WorkerProcess], tmp_path: Path) -> None:
    """The database stops under load and comes back: QUEUE_ERROR meanwhile, then on by itself."""
    database = queue_spec.database
    assert database is not None
    server = our_server_factory(extra=("--queue", queue_spec.spec),
                                loop=LOOPS[queue_spec.kind])
    log = tmp_path / "runs.log"
    fn = "durable"
    # One long job that runs through the outage (its worker holds it 3 s).
    held = roundtrip(server.address, SubmitJob(b"slow", b"long", b"long", background=True))
    assert isinstance(held[0], JobCreated)
    slow_log = tmp_path / "slow.log"
    workers(server.address, "slow", slow_log, "--hold", "3")
    wait_for(lambda: any(e == "start" for e, _, _ in read_runs(slow_log)),
             what="the long job to start")
    for _ in range(2):
        workers(server.address, fn, log, "--max-sleep", "0.002")
    submitter = Submitter(server.address, fn.encode(), pause=0.01)
    submitter.start()
    try:
        time.sleep(0.8)
        before = len(submitter.acked)
        database.stop(kill=True)
        down_at = time.monotonic()
        wait_for(lambda: submitter.codes.get(b"QUEUE_ERROR", 0) > 5,
                 what="durable submissions to be refused while the database is down")
        # Everything that needs no store goes on: echo, foreground jobs, admin.
        assert roundtrip(server.address, EchoReq(b"ping")) == [EchoRes(b"ping")]
        fg = RawClient(server.address, timeout=10)
        fg.send(SubmitJob(fn.encode(), b"fg-during-outage", b"fg-during-outage"))
        replies: list[object] = []
        wait_for(lambda: replies.extend(fg.poll(0.2)) or any(
            isinstance(e, WorkComplete) for e in replies), what="a foreground job to run")
        fg.close()
        assert status_of(server.address)  # admin answers
        time.sleep(max(0.0, 1.5 - (time.monotonic() - down_at)))
        database.start()
        refused_while_down = len(submitter.refused)
        acked_at_restart = len(submitter.acked)
        wait_for(lambda: len(submitter.acked) > acked_at_restart + 50, timeout=30,
                 what="durable submissions to resume by themselves")
    finally:
        submitter.stop.set()
        submitter.join(10)
    assert not submitter.errors, submitter.errors
    assert set(submitter.codes) == {b"QUEUE_ERROR"}
    assert not (submitter.acked & submitter.refused)
    acked = submitter.acked

    def all_ran() -> bool:
        done = {job.encode() for event, job, _ in read_runs(log) if event == "end"}
        return acked <= done
    wait_for(all_ran, timeout=60, what="every acknowledged job to run")
    wait_for(lambda: any(e == "end" for e, _, _ in read_runs(slow_log)),
             what="the long job to finish")
    # Its row went away once the database was back: after a kill -9 nothing
    # but unfinished work comes back.
    wait_for(lambda: status_of(server.address).get(fn.encode()) is None
             or status_of(server.address)[fn.encode()].total == 0, what="the queue to drain")
    # The deletes are written by the store thread a moment after the results go
    # out; a stop (SIGTERM) writes what is still in line.  None may be lost to
    # the database's crash: a finished job's row left behind would run again
    # at the next start.
    server.stop()
    left = stored_rows(queue_spec.spec)
    report(store=queue_spec.kind, acknowledged_before_outage=before,
           refused_while_down=refused_while_down, acknowledged=len(acked),
           finished_rows_left=left)
    assert left == 0


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql", "redis"])
def test_background_onto_foreground_job_is_kept(
        queue_spec: QueueSpec, our_server_factory: Callable[..., ServerProcess]) -> None:
    """Issue 11.4: A waits for cf/u1 in the foreground, B submits cf/u1 in the background
    (coalesced); A leaves, the server is killed: the job is still there after restart."""
    server = our_server_factory(extra=("--queue", queue_spec.spec),
                                loop=LOOPS[queue_spec.kind])
    a = RawClient(server.address)
    a.send(SubmitJob(b"cf", b"data", b"u1"))
    created = [e for e in a.poll(5) if isinstance(e, JobCreated)]
    assert created
    assert roundtrip(server.address, SubmitJob(b"cf", b"data", b"u1", background=True)) == [
        JobCreated(created[0].handle)]
    a.close()
    wait_for(lambda: status_of(server.address)[b"cf"].total == 1, what="A to leave")
    time.sleep(0.2)
    assert status_of(server.address)[b"cf"].total == 1  # kept without A
    server.stop(kill=True)
    server.start()
    assert status_of(server.address)[b"cf"].total == 1  # and stored


@pytest.mark.parametrize("store_kind", ["postgresql", "redis"])
def test_a_replacement_server_replays_a_dead_servers_jobs(
        queue_spec: QueueSpec, our_server_factory: Callable[..., ServerProcess]) -> None:
    """Server "east" dies with jobs queued; another server process (another port) started
    with the name replays them, while "west" on the same database keeps its own."""
    east = our_server_factory(extra=("--queue", queue_spec.spec, "--queue-name", "east"))
    west = our_server_factory(extra=("--queue", queue_spec.spec, "--queue-name", "west"))
    for i in range(5):
        assert isinstance(roundtrip(east.address, SubmitJob(b"e", b"%d" % i, b"e%d" % i,
                                                            background=True))[0], JobCreated)
    assert isinstance(roundtrip(west.address, SubmitJob(b"w", b"w", b"w", background=True))[0],
                      JobCreated)
    east.stop(kill=True)
    replacement = our_server_factory(extra=("--queue", queue_spec.spec, "--queue-name", "east"))
    assert replacement.port != east.port
    assert status_of(replacement.address)[b"e"].total == 5
    assert b"w" not in status_of(replacement.address)
    assert status_of(west.address)[b"w"].total == 1

