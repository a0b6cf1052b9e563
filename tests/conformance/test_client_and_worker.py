"""Clients and workers on every adapter, against our job server (issue 3, Client/Worker).

Each test runs once per adapter (the ``gm`` fixture) against the session's
``gearman-proto server``; function names are the test's own (``fn``), so tests
sharing the server never see each other's jobs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from gearman_proto.adapters._common import JobException, JobFailed, JobTimeout

from gearman_proto.events import Priority, WorkData, WorkStatus, WorkWarning

if TYPE_CHECKING:
    from conftest import GM, ServerProcess

Fn = Callable[[str], str]
PRIORITIES = [Priority.HIGH, Priority.NORMAL, Priority.LOW]


def reverse(job: Any) -> bytes:
    return bytes(job.data[::-1])


def test_foreground_jobs_at_every_priority(gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("reverse")
    worker = gm.worker(our_server)
    worker.register(f, reverse)
    worker.start()
    client = gm.client(our_server)
    for priority in PRIORITIES:
        job = client.submit(f, f"Hello {priority.name}!", priority=priority)
        assert job.handle
        assert job.wait() == f"!{priority.name[::-1]} olleH".encode()


def test_background_jobs_at_every_priority_run_highest_first(gm: GM, our_server: ServerProcess,
                                                             fn: Fn) -> None:
    f = fn("bg")
    client = gm.client(our_server)
    # Queued before any worker exists, so the order they run in is the server's choice.
    for priority in reversed(PRIORITIES):
        for i in range(2):
            job = client.submit(f, f"{priority.name}{i}", priority=priority, background=True)
            assert job.handle
            assert job.wait() is None  # a background job ends when it is accepted
    assert gm.status(our_server, f)[0] == 6
    ran: list[bytes] = []
    worker = gm.worker(our_server)  # one slot: jobs run one at a time, in queue order
    worker.register(f, lambda job: ran.append(job.data))
    worker.start()
    gm.eventually(lambda: len(ran) == 6, "six background jobs")
    assert ran == [b"HIGH0", b"HIGH1", b"NORMAL0", b"NORMAL1", b"LOW0", b"LOW1"]


def test_unique_ids_random_when_not_given_and_coalescing_when_given(
        gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("uniq")
    client = gm.client(our_server)
    # No unique id given: each job gets a random one, so equal jobs never coalesce.
    a, b = client.submit(f, "same"), client.submit(f, "same")
    assert a.handle != b.handle
    # The same unique id given twice while the job is queued: one job, two waiters.
    c, d = client.submit(f, "x", unique="key-1"), client.submit(f, "x", unique="key-1")
    assert c.handle == d.handle
    status = client.get_status_unique("key-1")
    assert (status.known, status.running, status.waiting) == (True, False, 2)
    seen: list[bytes] = []

    def handler(job: Any) -> bytes:
        seen.append(job.unique)
        return bytes(job.data).upper()
    worker = gm.worker(our_server)
    worker.register(f, handler)
    worker.start()
    assert [job.wait() for job in (a, b, c, d)] == [b"SAME", b"SAME", b"X", b"X"]
    assert len(seen) == 3
    assert seen[2] == b"key-1"
    assert seen[0] and seen[1] and seen[0] != seen[1]  # random, one per job


def test_epoch_jobs_run_no_earlier_than_their_time(gm: GM, our_server: ServerProcess,
                                                  fn: Fn) -> None:
    f = fn("epoch")
    ran: dict[bytes, float] = {}
    worker = gm.worker(our_server)

    def handler(job: Any) -> None:
        ran[bytes(job.data)] = time.time()
    worker.register(f, handler)
    worker.start()
    client = gm.client(our_server)
    when = int(time.time()) + 1
    assert client.submit(f, "later", background=True, epoch=when).wait() is None
    assert client.submit(f, "past", background=True, epoch=when - 3600).wait() is None
    gm.eventually(lambda: len(ran) == 2, "both epoch jobs")
    assert ran[b"later"] >= when  # the server held it until its time


def test_do_returns_the_result(gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("reverse")
    worker = gm.worker(our_server)
    worker.register(f, reverse)
    worker.start()
    client = gm.client(our_server)
    assert client.do(f, "Hello world!") == b"!dlrow olleH"
    assert client.do(f, b"\x00\xffbytes", priority=Priority.HIGH) == b"setyb\xff\x00"


def test_many_jobs_in_flight_on_one_connection_each_awaited(gm: GM, our_server: ServerProcess,
                                                            fn: Fn) -> None:
    f = fn("many")
    worker = gm.worker(our_server, max_jobs=4)
    worker.register(f, reverse)
    client = gm.client(our_server)
    jobs = [client.submit(f, f"job {i:03}") for i in range(40)]  # all queued: no worker yet
    assert len({job.handle for job in jobs}) == 40
    worker.start()
    for i, job in reversed(list(enumerate(jobs))):  # awaited in another order than sent
        assert job.wait() == f"job {i:03}".encode()[::-1]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_data_warning_and_status_stream_as_they_arrive(gm: GM, our_server: ServerProcess,
                                                       fn: Fn, kind: str) -> None:
    if kind == "async" and not gm.async_handlers:
        pytest.skip("the blocking adapter's handlers are plain functions")
    f = fn("stream")
    gate = gm.gate()

    def sync_handler(job: Any) -> bytes:
        job.send_data(b"first")
        gate.wait()  # the client sees "first" while the job still runs
        job.send_warning("careful")
        job.send_status(1, 2)
        job.send_data(b"second")
        job.send_status(2, 2)
        return b"done"

    async def async_handler(job: Any) -> bytes:
        job.send_data(b"first")
        await gate.wait_async()
        job.send_warning("careful")
        job.send_status(1, 2)
        job.send_data(b"second")
        job.send_status(2, 2)
        return b"done"
    worker = gm.worker(our_server)
    worker.register(f, sync_handler if kind == "sync" else async_handler)
    worker.start()
    client = gm.client(our_server)
    job = client.submit(f, "x")
    updates = job.updates()
    assert next(updates) == WorkData(job.handle, b"first")
    gate.open()
    assert list(updates) == [WorkWarning(job.handle, b"careful"), WorkStatus(job.handle, 1, 2),
                             WorkData(job.handle, b"second"), WorkStatus(job.handle, 2, 2)]
    assert job.wait() == b"done"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_handler_exception_is_work_exception_with_its_message(gm: GM, our_server: ServerProcess,
                                                              fn: Fn, kind: str) -> None:
    if kind == "async" and not gm.async_handlers:
        pytest.skip("the blocking adapter's handlers are plain functions")
    f = fn("raise")

    def sync_handler(job: Any) -> bytes:
        raise ValueError(f"bad input {job.data.decode()}")

    async def async_handler(job: Any) -> bytes:
        raise ValueError(f"bad input {job.data.decode()}")
    worker = gm.worker(our_server)
    worker.register(f, sync_handler if kind == "sync" else async_handler)
    worker.start()
    # The exceptions option is on by default: WORK_EXCEPTION reaches the client.
    client = gm.client(our_server)
    with pytest.raises(JobException) as info:
        client.do(f, "42")
    # The text names the exception's type, as the worker side logged it.
    assert info.value.data == b"ValueError: bad input 42"
    assert "ValueError: bad input 42" in str(info.value)
    # Off: the server turns WORK_EXCEPTION into WORK_FAIL for this client.
    plain = gm.client(our_server, exceptions=False)
    with pytest.raises(JobFailed) as failed:
        plain.do(f, "43")
    assert not isinstance(failed.value, JobException)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_explicit_fail_is_job_failed(gm: GM, our_server: ServerProcess, fn: Fn,
                                     kind: str) -> None:
    if kind == "async" and not gm.async_handlers:
        pytest.skip("the blocking adapter's handlers are plain functions")
    f = fn("fail")

    def sync_handler(job: Any) -> bytes:
        job.fail()
        return b"ignored"

    async def async_handler(job: Any) -> bytes:
        job.fail()
        return b"ignored"
    worker = gm.worker(our_server)
    worker.register(f, sync_handler if kind == "sync" else async_handler)
    worker.start()
    client = gm.client(our_server)
    job = client.submit(f, "x")
    with pytest.raises(JobFailed) as info:
        job.wait()
    assert not isinstance(info.value, JobException)
    assert info.value.handle == job.handle


def test_get_status_get_status_unique_and_echo(gm: GM, our_server: ServerProcess,
                                               fn: Fn) -> None:
    f = fn("status")
    gate = gm.gate()
    started = threading.Event()

    def handler(job: Any) -> bytes:
        job.send_status(3, 7)
        started.set()
        gate.wait()
        return b"ok"
    client = gm.client(our_server)
    job = client.submit(f, "x", unique="status-unique")
    queued = client.get_status(job.handle)
    assert (queued.known, queued.running) == (True, False)
    worker = gm.worker(our_server)
    worker.register(f, handler)
    worker.start()
    assert started.wait(20)

    def running_at_3_of_7() -> bool:
        s = client.get_status(job.handle)
        return (s.known, s.running, s.numerator, s.denominator) == (True, True, 3, 7)
    gm.eventually(running_at_3_of_7, "STATUS_RES 3/7")
    by_unique = client.get_status_unique("status-unique")
    assert (by_unique.known, by_unique.running, by_unique.numerator, by_unique.denominator,
            by_unique.waiting) == (True, True, 3, 7, 1)
    gate.open()
    assert job.wait() == b"ok"
    assert not client.get_status(job.handle).known
    assert not client.get_status_unique("status-unique").known
    assert client.echo("ping \x00 pong") == b"ping \x00 pong"
    assert client.echo(b"") == b""



@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_result_that_is_not_bytes_is_the_jobs_error_not_the_workers(
        gm: GM, our_server: ServerProcess, fn: Fn, kind: str) -> None:
    if kind == "async" and not gm.async_handlers:
        pytest.skip("the blocking adapter's handlers are plain functions")
    f = fn("badtype")

    results = {b"int": 42, b"float": 4.2, b"dict": {}}

    def sync_handler(job: Any) -> Any:
        return results.get(job.data, job.data)

    async def async_handler(job: Any) -> Any:
        return results.get(job.data, job.data)
    worker = gm.worker(our_server)  # one slot: a job left hanging would block the next
    worker.register(f, sync_handler if kind == "sync" else async_handler)
    worker.start()
    client = gm.client(our_server)
    for bad in results:
        with pytest.raises(JobException):
            client.do(f, bad)
    assert client.do(f, "fine") == b"fine"
    assert client.do(f, bytearray(b"also fine")) == b"also fine"

# -- timeouts ---------------------------------------------------------------------------


@pytest.fixture
def silent_listener() -> Any:
    """A port that accepts connections and never says anything."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()


@pytest.fixture
def full_listener() -> Any:
    """A port whose accept queue is full, so connecting to it hangs (SYNs dropped)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        fillers = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(s.getsockname())
            except BlockingIOError:
                pass
            fillers.append(c)
        yield s.getsockname()
        for c in fillers:
            c.close()


def test_connect_timeout_raises_job_timeout(gm: GM, full_listener: Any, fn: Fn) -> None:
    client = gm.client(full_listener, connect_timeout=0.3)
    with pytest.raises(JobTimeout):
        client.submit(fn("never"), "x")


def test_created_timeout_raises_job_timeout(gm: GM, silent_listener: Any, fn: Fn) -> None:
    client = gm.client(silent_listener, created_timeout=0.3)
    with pytest.raises(JobTimeout):
        client.submit(fn("never"), "x")
    with pytest.raises(JobTimeout):
        client.echo("anyone?")


def test_result_timeout_raises_job_timeout(gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("nobody")  # no worker: the job stays queued
    client = gm.client(our_server, result_timeout=0.3)
    job = client.submit(f, "x")
    with pytest.raises(JobTimeout):
        job.wait()
    with pytest.raises(JobTimeout):
        job.wait(0.1)  # a per-call timeout overrides the client's
    with pytest.raises(JobTimeout):
        client.do(f, "y")
    assert client.get_status(job.handle).known  # the job itself is untouched


# -- the worker's own promises -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_worker_never_runs_more_than_max_jobs(gm: GM, our_server: ServerProcess, fn: Fn,
                                              kind: str) -> None:
    if kind == "async" and not gm.async_handlers:
        pytest.skip("the blocking adapter's handlers are plain functions")
    f = fn("limit")
    gate = gm.gate()
    lock = threading.Lock()
    running = [0]
    most = [0]

    def enter() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])

    def leave() -> None:
        with lock:
            running[0] -= 1

    def sync_handler(job: Any) -> bytes:
        enter()
        gate.wait()
        leave()
        return bytes(job.data)

    async def async_handler(job: Any) -> bytes:
        enter()
        await gate.wait_async()
        leave()
        return bytes(job.data)
    client = gm.client(our_server)
    jobs = [client.submit(f, str(i)) for i in range(12)]
    worker = gm.worker(our_server, max_jobs=3)
    worker.register(f, sync_handler if kind == "sync" else async_handler)
    worker.start()
    gm.eventually(lambda: running[0] == 3, "three jobs running")
    # The server agrees: three assigned (no GRAB beyond the free slots), nine queued.
    assert gm.status(our_server, f)[:2] == (12, 3)
    gate.open()
    assert [job.wait() for job in jobs] == [str(i).encode() for i in range(12)]
    assert most[0] == 3


def test_graceful_stop_finishes_the_jobs_in_hand_and_grabs_no_more(
        gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("drain")
    gate = gm.gate()
    started = threading.Semaphore(0)

    def handler(job: Any) -> bytes:
        started.release()
        gate.wait()
        return bytes(job.data).upper()
    client = gm.client(our_server)
    jobs = [client.submit(f, f"job{i}") for i in range(5)]
    worker = gm.worker(our_server, max_jobs=2)
    worker.register(f, handler)
    worker.start()
    for _ in range(2):
        assert started.acquire(timeout=20)
    worker.stop(graceful=True)
    assert worker.running  # still finishing the two jobs in hand
    gate.open()
    worker.join()
    assert [job.wait() for job in jobs[:2]] == [b"JOB0", b"JOB1"]
    # The rest were never grabbed: still queued, nothing running, no worker left.
    assert gm.status(our_server, f) == (3, 0, 0)


def test_client_ids_show_in_admin_workers(gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("ids")
    worker = gm.worker(our_server, client_id="conformance-worker")
    worker.register(f, reverse)
    worker.start()  # waits until `workers` lists it with its function
    client = gm.client(our_server, client_id="conformance-client")
    assert client.do(f, "ab") == b"ba"
    rows = gm.observe(our_server).workers()
    assert any(r.client_id == b"conformance-worker" and f.encode() in r.functions for r in rows)
    assert any(r.client_id == b"conformance-client" and not r.functions for r in rows)


def test_can_do_timeout_makes_the_server_run_the_job_again(gm: GM, our_server: ServerProcess,
                                                           fn: Fn) -> None:
    f = fn("slow")
    gate = gm.gate()
    calls = [0]

    def handler(job: Any) -> bytes:
        calls[0] += 1
        n = calls[0]
        if n == 1:
            gate.wait()  # overruns the CAN_DO_TIMEOUT: the server takes the job back
        return f"run{n}".encode()
    worker = gm.worker(our_server, max_jobs=2)
    worker.register(f, handler, timeout_ms=200)
    worker.start()
    client = gm.client(our_server)
    job = client.submit(f, "x")
    assert job.wait() == b"run2"  # requeued (no --job-retries limit) and run again
    gate.open()  # the first run's late WORK_COMPLETE is refused, and the worker carries on
    assert client.do(f, "y") == b"run3"
