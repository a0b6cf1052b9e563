"""Our client, worker and admin client against gearmand 1.1.20, on every adapter (issue 4 §1).

Each test runs on the four adapters (the ``kit`` fixture: sync, asyncio, anyio
on asyncio, trio) against the session's gearmand.  What tests/test_sync_adapter.py
and tests/test_anyio_adapter.py (both anyio backends, so the trio adapter too)
already show against gearmand is not repeated for them: those tests run here
for the asyncio adapter only, which has no suite of its own.  the README's Interoperability section
maps every feature to its test for each adapter.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from gearman_proto.adapters._common import JobException, JobFailed, ServerError

from gearman_proto.admin import AdminError, JobRow, PriorityStatusRow, StatusRow
from gearman_proto.events import Priority, WorkData, WorkStatus, WorkWarning

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Kit, ServerProcess, WireTap

BOUND = 15.0

ONLY_ASYNCIO = pytest.mark.parametrize("kit", ["asyncio"], indirect=True)
"""For what the sync and anyio suites already show against gearmand."""


def reverse(job: Any) -> bytes:
    return bytes(job.data[::-1])


# -- unique ids -------------------------------------------------------------------------------


@pytest.mark.feature("adapters.coalescing")
def test_unique_coalescing_two_clients_one_job(kit: Kit, gearmand: ServerProcess,
                                               fresh: Callable[[str], str]) -> None:
    """Two clients submit the same (function, unique): one job, one run, both get the result."""
    fn, unique = fresh("coalesce"), fresh("u")
    runs: list[bytes] = []
    release = threading.Event()

    def handler(job: Any) -> bytes:
        runs.append(bytes(job.data))
        assert job.unique == unique.encode()
        job.send_status(1, 2)
        release.wait(BOUND)
        return b"shared result"

    first, second = kit.client(gearmand.address), kit.client(gearmand.address)
    one = first.submit(fn, b"first data", unique=unique)
    two = second.submit(fn, b"second data", unique=unique)
    assert one.handle == two.handle  # JOB_CREATED gives the existing job's handle
    worker = kit.worker(gearmand.address)
    worker.register(fn, handler)
    with worker.serving():
        status = None
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            status = first.get_status_unique(unique)
            if status.running:
                break
            time.sleep(0.01)
        assert status is not None
        assert (status.known, status.running, status.waiting) == (True, True, 2)
        release.set()
        assert one.result() == b"shared result"
        assert two.result() == b"shared result"
    assert runs == [b"first data"]  # the first submission's data; the job ran once


@pytest.mark.feature("adapters.dash-unique")
def test_dash_unique_coalesces_on_the_data(kit: Kit, gearmand: ServerProcess,
                                           fresh: Callable[[str], str],
                                           until: Callable[..., None]) -> None:
    """Unique ``-``: gearmand keys the job by its data, so equal data coalesces."""
    fn = fresh("dash")
    client = kit.client(gearmand.address)
    a = client.submit(fn, b"same bytes", unique="-", background=True)
    b = client.submit(fn, b"same bytes", unique="-", background=True)
    c = client.submit(fn, b"other bytes", unique="-", background=True)
    assert a.handle == b.handle != c.handle
    seen: list[tuple[bytes, bytes]] = []

    def handler(job: Any) -> bytes:
        seen.append((bytes(job.unique), bytes(job.data)))
        return b""

    worker = kit.worker(gearmand.address)
    worker.register(fn, handler)
    with worker.serving():
        until(lambda: not any(client.get_status(j.handle).known for j in (a, c)),
              "both jobs to finish")
    # The worker is told the unique as it was sent (JOB_ASSIGN_UNIQ).
    assert sorted(seen) == [(b"-", b"other bytes"), (b"-", b"same bytes")]


# -- timers: CAN_DO_TIMEOUT, SUBMIT_JOB_EPOCH ----------------------------------------------------


@pytest.mark.feature("adapters.can-do-timeout")
def test_can_do_timeout_expiry_requeues_the_job(kit: Kit, gearmand: ServerProcess,
                                                tap: Callable[..., WireTap],
                                                fresh: Callable[[str], str]) -> None:
    """A worker that registered CAN_DO_TIMEOUT and overruns it loses the job: gearmand
    requeues it (no WORK_FAIL), another worker runs it, the client gets that result."""
    fn = fresh("timeout")
    started, release = threading.Event(), threading.Event()

    def stuck(job: Any) -> bytes:
        started.set()
        release.wait(BOUND)
        return b"too late"

    wire = tap(gearmand.address)
    slow = kit.worker(wire.address)
    slow.register(fn, stuck, timeout_ms=200)
    quick = kit.worker(gearmand.address)
    quick.register(fn, reverse)
    client = kit.client(gearmand.address)
    try:
        with slow.serving():
            job = client.submit(fn, b"abc")
            assert started.wait(BOUND)
            with quick.serving():
                assert job.result() == b"cba"
            assert job.updates() == []  # the client was told nothing of the lost run
    finally:
        release.set()
    sent = [p for way, p in wire.full() if way == ">" and p.name == "CAN_DO_TIMEOUT"]
    assert sent and sent[0].args == (fn.encode(), b"200")  # milliseconds, as 1.1.19+ reads


@pytest.mark.feature("adapters.epoch")
@pytest.mark.feature("differences.epoch-timer")
def test_submit_job_epoch_is_held_until_its_time(kit: Kit, gearmand: ServerProcess,
                                                 tap: Callable[..., WireTap],
                                                 fresh: Callable[[str], str],
                                                 until: Callable[..., None]) -> None:
    """SUBMIT_JOB_EPOCH: gearmand holds the background job until its time; a worker
    grabbing after it runs the job.  gearmand 1.1.20 has no timer (its issue #101): a worker
    that went to sleep after the submission is never woken for it.  Our server does wake
    it (a deliberate difference, test_differential.py::test_epoch_job_wakes_a_sleeping_worker)."""
    fn = fresh("epoch")
    epoch = int(time.time()) + 1
    ran: list[str] = []

    def handler_of(who: str) -> Callable[[Any], bytes]:
        def handler(job: Any) -> bytes:
            ran.append(who)
            return b""
        return handler

    client = kit.client(gearmand.address)
    job = client.submit(fn, b"later", background=True, epoch=epoch)
    assert job.handle and job.result() is None
    wire = tap(gearmand.address)
    early = kit.worker(wire.address)
    early.register(fn, handler_of("early"))
    late = kit.worker(gearmand.address)
    late.register(fn, handler_of("late"))
    asleep = [(">", "CAN_DO"), (">", "GRAB_JOB_UNIQ"), ("<", "NO_JOB"), (">", "PRE_SLEEP")]
    with early.serving():
        until(lambda: wire.packets() == asleep, "the early worker to sleep")
        status = client.get_status(job.handle)
        assert (status.known, status.running) == (True, False)
        until(lambda: time.time() >= epoch + 0.1, "the job's time")
        with late.serving():
            until(lambda: not client.get_status(job.handle).known, "the job to finish")
        assert wire.packets() == asleep  # never woken
    assert ran == ["late"]


# -- reduce submissions ---------------------------------------------------------------------


@pytest.mark.parametrize("background", [False, True], ids=["fg", "bg"])
@pytest.mark.feature("adapters.reduce")
def test_reduce_submission_is_accepted(kit: Kit, gearmand: ServerProcess, background: bool,
                                       fresh: Callable[[str], str],
                                       until: Callable[..., None]) -> None:
    """SUBMIT_REDUCE_JOB(_BACKGROUND) in libgearman's 4-field form: gearmand creates the job
    and a worker (GRAB_JOB_UNIQ) runs it like any other."""
    fn, reducer = fresh("map"), fresh("reduce")
    seen: list[bytes] = []

    def handler(job: Any) -> bytes:
        seen.append(bytes(job.data))
        return b"mapped"

    client = kit.client(gearmand.address)
    job = client.submit(fn, b"a b c", reducer=reducer, background=background)
    assert job.handle.startswith(b"H:")
    worker = kit.worker(gearmand.address)
    worker.register(fn, handler)
    with worker.serving():
        if background:
            assert job.result() is None
            until(lambda: not client.get_status(job.handle).known, "the job to finish")
        else:
            assert job.result() == b"mapped"
    assert seen == [b"a b c"]


# -- the worker's sleep ---------------------------------------------------------------------


@pytest.mark.feature("adapters.pre-sleep")
def test_pre_sleep_noop_cycle(kit: Kit, gearmand: ServerProcess, tap: Callable[..., WireTap],
                              fresh: Callable[[str], str],
                              until: Callable[..., None]) -> None:
    """Idle, the worker sleeps (GRAB → NO_JOB → PRE_SLEEP); gearmand's NOOP wakes it for a
    job, and it goes back to sleep after. The exact packets, seen on the wire."""
    fn = fresh("sleep")
    wire = tap(gearmand.address)
    worker = kit.worker(wire.address)
    worker.register(fn, reverse)
    client = kit.client(gearmand.address)
    idle = [(">", "CAN_DO"), (">", "GRAB_JOB_UNIQ"), ("<", "NO_JOB"), (">", "PRE_SLEEP")]
    with worker.serving():
        until(lambda: wire.packets() == idle, "the worker to sleep")
        for i in range(2):
            assert client.do(fn, b"wake %d" % i) == (b"wake %d" % i)[::-1]
            cycle = [("<", "NOOP"), (">", "GRAB_JOB_UNIQ"), ("<", "JOB_ASSIGN_UNIQ"),
                     (">", "WORK_COMPLETE"), (">", "GRAB_JOB_UNIQ"), ("<", "NO_JOB"),
                     (">", "PRE_SLEEP")]
            idle += cycle
            until(lambda: len(wire.packets()) >= len(idle), "the worker to sleep again")  # noqa: B023
            assert wire.packets() == idle


# -- SET_CLIENT_ID ------------------------------------------------------------------------


@pytest.mark.parametrize("kit", ["asyncio", "anyio", "trio"], indirect=True)
@pytest.mark.feature("adapters.client-id")
def test_set_client_id_shows_in_admin_workers(kit: Kit, gearmand: ServerProcess,
                                              tap: Callable[..., WireTap],
                                              fresh: Callable[[str], str],
                                              until: Callable[..., None]) -> None:
    """SET_CLIENT_ID from a client and from a worker: gearmand lists both ids in ``workers``.
    (The sync adapter: tests/test_sync_adapter.py::test_client_ids_show_in_admin_workers.)"""
    fn, client_id, worker_id = fresh("ids"), fresh("client-id"), fresh("worker-id")
    wire = tap(gearmand.address)
    worker = kit.worker(wire.address, client_id=worker_id)
    worker.register(fn, reverse)
    client = kit.client(gearmand.address, client_id=client_id)
    admin = kit.admin(gearmand.address)
    with worker.serving():
        assert client.echo(b"connect") == b"connect"
        until(lambda: any(r.client_id == worker_id.encode() for r in admin.workers()),
              "the worker's SET_CLIENT_ID")
        rows = {r.client_id: r for r in admin.workers()}
        assert rows[client_id.encode()].functions == ()
        assert rows[worker_id.encode()].functions == (fn.encode(),)
        assert rows[worker_id.encode()].address == b"127.0.0.1"
        assert client.do(fn, b"id") == b"di"
    sent = [p.args for way, p in wire.full() if way == ">" and p.name == "SET_CLIENT_ID"]
    assert sent == [(worker_id.encode(),)]


# -- the admin protocol -----------------------------------------------------------------------


@pytest.mark.feature("adapters.admin-replies")
def test_admin_client_parses_every_gearmand_reply(kit: Kit, gearmand: ServerProcess,
                                                  fresh: Callable[[str], str],
                                                  until: Callable[..., None]) -> None:
    """Every admin command gearadmin knows, and every kind of reply gearmand 1.1.20 gives
    (rows, OK, OK value, ERR CODE text, ERR without a code), through our AdminClient."""
    fn, other, worker_id = fresh("admin"), fresh("admin-other"), fresh("admin-worker")
    admin = kit.admin(gearmand.address)
    client = kit.client(gearmand.address)
    admin.create_function(fn)
    assert StatusRow(fn.encode(), 0, 0, 0) in admin.status()
    uniques = {p: fresh(f"u-{p.name}") for p in Priority}
    jobs = {p: client.submit(fn, p.name, unique=uniques[p], priority=p, background=True)
            for p in Priority}
    assert StatusRow(fn.encode(), 3, 0, 0) in admin.status()
    assert PriorityStatusRow(fn.encode(), 1, 1, 1, 0) in admin.priority_status()
    rows = {r.handle: r for r in admin.show_jobs()}
    for job in jobs.values():  # retries 0, not ignored, queued
        assert rows[job.handle] == JobRow(job.handle, 0, False, True)
    assert {u.encode() for u in uniques.values()} <= set(admin.show_unique_jobs())

    started, release = threading.Event(), threading.Event()

    def blocking(job: Any) -> bytes:
        started.set()
        release.wait(BOUND)
        return b""

    worker = kit.worker(gearmand.address, client_id=worker_id)
    worker.register(fn, blocking)
    worker.register(other, reverse)
    try:
        with worker.serving():
            assert started.wait(BOUND)  # the HIGH job runs
            until(lambda: StatusRow(fn.encode(), 3, 1, 1) in admin.status(), "status")
            assert PriorityStatusRow(fn.encode(), 0, 1, 1, 1) in admin.priority_status()
            row = next(r for r in admin.workers() if r.client_id == worker_id.encode())
            assert row.fd > 0 and row.address == b"127.0.0.1"
            assert sorted(row.functions) == sorted([fn.encode(), other.encode()])

            with pytest.raises(AdminError) as busy:  # ERR with no code word
                admin.drop_function(fn)
            assert busy.value == AdminError(
                b"", b"there are still connected workers or executing clients")
            with pytest.raises(AdminError) as missing:
                admin.drop_function(fresh("nowhere"))
            assert missing.value == AdminError(b"", b"function not found")

            admin.maxqueue(fn, 1)  # 3 jobs already: NORMAL is refused
            with pytest.raises(ServerError) as full:
                client.submit(fn, b"x", background=True)
            assert (full.value.code, full.value.text) == (b"QUEUE_ERROR", b"Job queue is full")
            admin.maxqueue(fn, 10, 3, 10)  # (high, normal, low)
            with pytest.raises(ServerError):
                client.submit(fn, b"normal", background=True)
            high = client.submit(fn, b"high", priority=Priority.HIGH, background=True)
            admin.maxqueue(fn)  # back to unlimited
            normal = client.submit(fn, b"normal", background=True)

            for job in (high, normal, jobs[Priority.LOW]):
                admin.cancel_job(job.handle)
            ignored = {r.handle: r.ignore for r in admin.show_jobs()}
            assert ignored[high.handle] and ignored[normal.handle]  # flagged, still listed
            with pytest.raises(AdminError) as unknown:
                admin.cancel_job(b"H:nowhere:1")
            assert unknown.value.code == b"UNKNOWN_JOB"

            assert admin.getpid() == gearmand.pid
            assert admin.version().startswith("1.1.20")
            assert admin.verbose() == "INFO"
            with pytest.raises(AdminError) as shutdown:  # an unknown command since 1.1.15
                admin.shutdown()
            assert shutdown.value.code == b"UNKNOWN_COMMAND"
            assert shutdown.value.text == b"Unknown+server+commandshutdown"
            assert admin.getpid() == gearmand.pid  # the connection is still usable
            release.set()
    finally:
        release.set()


# -- what the sync and anyio suites already show, for the asyncio adapter ------------------------


@ONLY_ASYNCIO
@pytest.mark.parametrize("background", [False, True], ids=["fg", "bg"])
@pytest.mark.parametrize("priority", list(Priority), ids=lambda p: p.name)
@pytest.mark.feature("adapters.every-priority")
def test_jobs_at_every_priority(kit: Kit, gearmand: ServerProcess, priority: Priority,
                                background: bool, fresh: Callable[[str], str],
                                until: Callable[..., None]) -> None:
    fn = fresh("prio")
    ran: list[bytes] = []
    worker = kit.worker(gearmand.address)
    worker.register(fn, lambda job: ran.append(bytes(job.data)) or job.data[::-1])
    client = kit.client(gearmand.address)
    with worker.serving():
        job = client.submit(fn, b"Hello", priority=priority, background=background)
        assert job.handle.startswith(b"H:")
        if background:
            assert job.result() is None
            until(lambda: not client.get_status(job.handle).known, "the job to finish")
        else:
            assert job.result() == b"olleH"
    assert ran == [b"Hello"]


@pytest.mark.parametrize("kit", ["asyncio", "anyio", "trio"], indirect=True)
@pytest.mark.feature("adapters.priority-order")
def test_queued_jobs_run_in_priority_order(kit: Kit, gearmand: ServerProcess,
                                           fresh: Callable[[str], str],
                                           until: Callable[..., None]) -> None:
    """Within one function: HIGH, then NORMAL, then LOW (FIFO within each).  The sync
    adapter: tests/test_sync_adapter.py::test_queued_background_jobs_run_in_priority_order."""
    fn = fresh("order")
    client = kit.client(gearmand.address)
    order = [Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.LOW, Priority.HIGH]
    jobs = [client.submit(fn, b"%s-%d" % (p.name.encode(), i), priority=p, background=True)
            for i, p in enumerate(order)]
    seen: list[bytes] = []
    worker = kit.worker(gearmand.address, max_jobs=1)
    worker.register(fn, lambda job: seen.append(bytes(job.data)))
    with worker.serving():
        until(lambda: not any(client.get_status(j.handle).known for j in jobs), "the jobs")
    assert seen == [b"HIGH-2", b"HIGH-4", b"NORMAL-1", b"LOW-0", b"LOW-3"]


@ONLY_ASYNCIO
@pytest.mark.feature("adapters.streaming")
def test_data_warning_and_status_stream(kit: Kit, gearmand: ServerProcess,
                                        fresh: Callable[[str], str]) -> None:
    fn = fresh("stream")

    def streamer(job: Any) -> bytes:
        job.send_data(b"part1")
        job.send_warning(b"careful")
        job.send_status(1, 2)
        job.send_data(b"part2\0binary")
        job.send_status(2, 2)
        return b"done"

    worker = kit.worker(gearmand.address)
    worker.register(fn, streamer)
    client = kit.client(gearmand.address)
    with worker.serving():
        job = client.submit(fn)
        h = job.handle
        assert job.updates() == [WorkData(h, b"part1"), WorkWarning(h, b"careful"),
                                 WorkStatus(h, 1, 2), WorkData(h, b"part2\0binary"),
                                 WorkStatus(h, 2, 2)]
        assert job.result() == b"done"


@ONLY_ASYNCIO
@pytest.mark.feature("adapters.work-fail")
def test_work_fail(kit: Kit, gearmand: ServerProcess, fresh: Callable[[str], str]) -> None:
    fn = fresh("fail")

    def failing(job: Any) -> bytes:
        job.fail()
        return b"ignored"

    worker = kit.worker(gearmand.address)
    worker.register(fn, failing)
    client = kit.client(gearmand.address)
    with worker.serving():
        job = client.submit(fn)
        with pytest.raises(JobFailed) as info:
            job.result()
        assert type(info.value) is JobFailed and info.value.handle == job.handle
        assert job.state == "failed"


@ONLY_ASYNCIO
@pytest.mark.feature("adapters.work-exception")
def test_work_exception_with_and_without_the_option(kit: Kit, gearmand: ServerProcess,
                                                     fresh: Callable[[str], str]) -> None:
    fn = fresh("boom")

    def boom(job: Any) -> bytes:
        raise ValueError("it went boom")

    worker = kit.worker(gearmand.address)
    worker.register(fn, boom)
    with worker.serving():
        with pytest.raises(JobException) as info:
            kit.client(gearmand.address).do(fn)
        assert info.value.data == b"ValueError: it went boom"
        # gearmand turns WORK_EXCEPTION into WORK_FAIL for a client without the option.
        with pytest.raises(JobFailed) as failed:
            kit.client(gearmand.address, exceptions=False).do(fn)
        assert type(failed.value) is JobFailed


@ONLY_ASYNCIO
@pytest.mark.feature("adapters.get-status")
def test_get_status_and_get_status_unique(kit: Kit, gearmand: ServerProcess,
                                          fresh: Callable[[str], str],
                                          until: Callable[..., None]) -> None:
    """Queued, running (with WORK_STATUS), finished; by handle and by unique id."""
    fn, unique = fresh("status"), fresh("u")
    release = threading.Event()

    def working(job: Any) -> bytes:
        job.send_status(1, 4)
        release.wait(BOUND)
        return b"ok"

    client = kit.client(gearmand.address)
    job = client.submit(fn, unique=unique)
    queued = client.get_status(job.handle)
    assert (queued.handle, queued.known, queued.running, queued.numerator,
            queued.denominator) == (job.handle, True, False, 0, 0)
    by_unique = client.get_status_unique(unique)
    assert (by_unique.unique, by_unique.known, by_unique.running, by_unique.waiting) == (
        unique.encode(), True, False, 1)
    worker = kit.worker(gearmand.address)
    worker.register(fn, working)
    with worker.serving():
        until(lambda: client.get_status(job.handle).numerator == 1, "WORK_STATUS")
        running = client.get_status(job.handle)
        assert (running.known, running.running, running.numerator, running.denominator) == (
            True, True, 1, 4)
        by_unique = client.get_status_unique(unique)
        assert (by_unique.known, by_unique.running, by_unique.numerator,
                by_unique.denominator, by_unique.waiting) == (True, True, 1, 4, 1)
        release.set()
        assert job.result() == b"ok"
    finished = client.get_status(job.handle)
    assert (finished.known, finished.running, finished.numerator) == (False, False, 0)
    gone = client.get_status_unique(unique)
    assert (gone.known, gone.running, gone.waiting) == (False, False, 0)


@ONLY_ASYNCIO
@pytest.mark.feature("adapters.echo")
def test_echo(kit: Kit, gearmand: ServerProcess) -> None:
    client = kit.client(gearmand.address)
    assert client.echo(b"ping \0 pong") == b"ping \0 pong"
    assert client.echo(b"") == b""
    assert client.echo(b"x" * 100_000) == b"x" * 100_000
