"""The blocking-socket adapter against a real gearmand 1.1.x.

Each test uses its own function names, so tests sharing the session's gearmand
do not see each other's jobs.  Timeouts here only bound hangs; no test
asserts how long anything took.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest
from gearman_proto.adapters._common import (
    ConnectionLost,
    JobException,
    JobFailed,
    JobTimeout,
    NoServerAvailable,
    ServerError,
)
from gearman_proto.adapters.sync import AdminClient, Client, Worker, WorkerJob

from gearman_proto.admin import AdminError, JobRow, StatusRow, WorkerRow
from gearman_proto.events import Priority, WorkData, WorkStatus, WorkWarning
from gearman_proto.session import JobState

if TYPE_CHECKING:
    from conftest import ServerProcess

pytestmark = pytest.mark.interop

BOUND = 15.0
"""A bound for every wait here: long enough never to matter, short enough to end a hang."""


def name(label: str) -> str:
    """A function name no other test uses."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


def reverse(job: WorkerJob) -> bytes:
    return job.data[::-1]


@contextmanager
def serving(worker: Worker, stop_after: int | None = None) -> Iterator[threading.Thread]:
    """Run ``worker.work()`` in a thread; stop it (not gracefully) on the way out."""
    thread = threading.Thread(target=worker.work, args=(stop_after,), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        worker.stop(graceful=False)
        thread.join(BOUND)
        assert not thread.is_alive(), "work() did not return after stop()"


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def status_of(admin: AdminClient, function: str) -> StatusRow | None:
    return next((r for r in admin.status() if r.function == function.encode()), None)


# -- submitting and results (PROTOCOL.txt: SUBMIT_JOB*, JOB_CREATED, WORK_*) -------


@pytest.mark.parametrize("priority", list(Priority))
@pytest.mark.feature("adapters.every-priority", "sync")
def test_foreground_reverse_at_each_priority(gearmand: ServerProcess,
                                             priority: Priority) -> None:
    fn = name("reverse")
    worker = Worker([gearmand.address])
    worker.register(fn, reverse)
    with serving(worker), Client([gearmand.address], result_timeout=BOUND) as client:
        job = client.submit(fn, b"hello", priority=priority)
        assert job.handle.startswith(b"H:")
        assert job.wait() == b"olleh"
        assert job.state is JobState.COMPLETE


@pytest.mark.parametrize("priority", list(Priority))
@pytest.mark.feature("adapters.every-priority", "sync")
def test_background_reverse_at_each_priority(gearmand: ServerProcess,
                                             priority: Priority) -> None:
    fn = name("reverse-bg")
    done: list[bytes] = []
    worker = Worker([gearmand.address])

    @worker.task(fn)
    def handler(job: WorkerJob) -> bytes:
        done.append(job.data[::-1])
        return done[-1]

    with serving(worker), Client([gearmand.address]) as client:
        job = client.submit(fn, "hello", priority=priority, background=True)
        assert job.handle
        assert job.wait() is None  # the submitter of a background job gets only the handle
        wait_until(lambda: not client.get_status(job.handle).known, "the job to finish")
    assert done == [b"olleh"]


@pytest.mark.feature("adapters.priority-order", "sync")
def test_queued_background_jobs_run_in_priority_order(gearmand: ServerProcess) -> None:
    """PROTOCOL.txt: HIGH jobs run before NORMAL, NORMAL before LOW."""
    fn = name("order")
    seen: list[bytes] = []
    with Client([gearmand.address]) as client:
        for priority in (Priority.LOW, Priority.NORMAL, Priority.HIGH):
            client.submit(fn, priority.name, priority=priority, background=True)
    worker = Worker([gearmand.address], max_jobs=1)
    worker.register(fn, lambda job: seen.append(job.data))
    with serving(worker, stop_after=3) as thread:
        thread.join(BOUND)
        assert not thread.is_alive(), "work(stop_after=3) did not return"
    assert seen == [b"HIGH", b"NORMAL", b"LOW"]


def test_do_returns_the_result(gearmand: ServerProcess) -> None:
    fn = name("reverse")
    worker = Worker([gearmand.address])
    worker.register(fn, reverse)
    with serving(worker), Client([gearmand.address], result_timeout=BOUND) as client:
        assert client.do(fn, "abc") == b"cba"
        assert client.do(fn, b"\x00\xff binary") == b"yranib \xff\x00"
        assert client.do(fn, b"") == b""


def test_many_jobs_in_flight_on_one_connection_are_matched_by_handle(
        gearmand: ServerProcess) -> None:
    fn = name("many")
    worker = Worker([gearmand.address], max_jobs=4)

    @worker.task(fn)
    def slow_reverse(job: WorkerJob) -> bytes:
        time.sleep(random.random() / 50)  # finish out of order
        return job.data[::-1]

    with serving(worker), Client([gearmand.address], result_timeout=BOUND) as client:
        jobs = {client.submit(fn, f"payload-{i}"): f"payload-{i}".encode()[::-1]
                for i in range(60)}
        assert len({job.handle for job in jobs}) == 60
        assert len(client._links) == 1  # all on one connection
        results: dict[bytes, bytes | None] = {}

        def wait_some(some: list) -> None:  # several threads wait at once
            for job in some:
                results[job.handle] = job.wait()

        items = list(jobs)
        threads = [threading.Thread(target=wait_some, args=(items[i::3],)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(BOUND)
        assert results == {job.handle: expected for job, expected in jobs.items()}


@pytest.mark.feature("adapters.streaming", "sync")
def test_data_warning_and_status_stream_through_updates(gearmand: ServerProcess) -> None:
    fn = name("stream")
    worker = Worker([gearmand.address])

    @worker.task(fn)
    def streamer(job: WorkerJob) -> str:
        job.send_data(b"part1")
        job.send_warning("careful")
        job.send_status(1, 2)
        job.send_data(b"part2")
        job.send_status(2, 2)
        return "done"

    with serving(worker), Client([gearmand.address], result_timeout=BOUND) as client:
        job = client.submit(fn)
        h = job.handle
        assert list(job.updates()) == [
            WorkData(h, b"part1"), WorkWarning(h, b"careful"), WorkStatus(h, 1, 2),
            WorkData(h, b"part2"), WorkStatus(h, 2, 2)]
        assert job.wait() == b"done"
        assert (job.numerator, job.denominator) == (2, 2)


@pytest.mark.feature("adapters.work-fail", "sync")
def test_work_fail_raises_job_failed(gearmand: ServerProcess) -> None:
    fn = name("fail")
    worker = Worker([gearmand.address])

    @worker.task(fn)
    def failing(job: WorkerJob) -> bytes:
        job.fail()
        return b"ignored"

    with serving(worker), Client([gearmand.address], result_timeout=BOUND) as client:
        job = client.submit(fn)
        with pytest.raises(JobFailed) as info:
            job.wait()
        assert type(info.value) is JobFailed and info.value.handle == job.handle
        assert job.state is JobState.FAILED


@pytest.mark.feature("adapters.work-exception", "sync")
def test_exception_reaches_a_client_with_the_exceptions_option(gearmand: ServerProcess
                                                               ) -> None:
    fn = name("boom")
    worker = Worker([gearmand.address])

    @worker.task(fn)
    def boom(job: WorkerJob) -> bytes:
        raise ValueError("it went boom")

    with serving(worker):
        with Client([gearmand.address], result_timeout=BOUND) as client:
            with pytest.raises(JobException, match="it went boom") as info:
                client.do(fn)
            assert info.value.data == b"ValueError: it went boom"
        # gearmand turns WORK_EXCEPTION into WORK_FAIL for a client without the option.
        with Client([gearmand.address], result_timeout=BOUND, exceptions=False) as client:
            with pytest.raises(JobFailed) as failed:
                client.do(fn)
            assert type(failed.value) is JobFailed


# -- questions: GET_STATUS, GET_STATUS_UNIQUE, ECHO --------------------------------------


@pytest.mark.feature("adapters.get-status", "sync")
def test_get_status_of_a_running_and_a_finished_job(gearmand: ServerProcess) -> None:
    fn = name("status")
    release = threading.Event()
    worker = Worker([gearmand.address])

    @worker.task(fn)
    def working(job: WorkerJob) -> bytes:
        job.send_status(1, 4)
        release.wait(BOUND)
        return b"ok"

    with serving(worker), Client([gearmand.address], result_timeout=BOUND) as client:
        unique = f"u-{uuid.uuid4().hex}"
        job = client.submit(fn, unique=unique)
        wait_until(lambda: client.get_status(job.handle).numerator == 1, "WORK_STATUS")
        status = client.get_status(job.handle)
        assert (status.known, status.running, status.numerator, status.denominator) == (
            True, True, 1, 4)
        by_unique = client.get_status_unique(unique)
        assert by_unique.unique == unique.encode()
        assert (by_unique.known, by_unique.running, by_unique.numerator,
                by_unique.denominator) == (True, True, 1, 4)
        assert by_unique.waiting == 1  # this client
        release.set()
        assert job.wait() == b"ok"
        finished = client.get_status(job.handle)
        assert (finished.known, finished.running) == (False, False)
        assert not client.get_status_unique(unique).known


@pytest.mark.feature("adapters.echo", "sync")
def test_echo(gearmand: ServerProcess) -> None:
    with Client([gearmand.address]) as client:
        assert client.echo(b"ping \x00 pong") == b"ping \x00 pong"
        assert client.echo("") == b""


@pytest.mark.feature("adapters.client-id", "sync")
def test_client_ids_show_in_admin_workers(gearmand: ServerProcess) -> None:
    fn = name("ids")
    client_id, worker_id = name("sync-client"), name("sync-worker")
    worker = Worker([gearmand.address], client_id=worker_id)
    worker.register(fn, reverse, timeout_ms=60_000)  # CAN_DO_TIMEOUT
    with serving(worker), Client([gearmand.address], client_id=client_id,
                                 result_timeout=BOUND) as client, \
            AdminClient(gearmand.address) as admin:
        client.echo(b"x")  # connects, and SET_CLIENT_ID goes first
        wait_until(lambda: any(r.client_id == worker_id.encode() for r in admin.workers()),
                   "the worker's SET_CLIENT_ID")
        rows = {r.client_id: r for r in admin.workers()}
        assert isinstance(rows[client_id.encode()], WorkerRow)
        assert rows[client_id.encode()].functions == ()
        assert rows[worker_id.encode()].functions == (fn.encode(),)
        assert client.do(fn, b"timed") == b"demit"


# -- the admin protocol ----------------------------------------------------------------------


def test_every_admin_command(gearmand: ServerProcess) -> None:
    fn = name("admin")
    with AdminClient(gearmand.address) as admin, Client([gearmand.address]) as client:
        admin.create_function(fn)
        assert status_of(admin, fn) == StatusRow(fn.encode(), 0, 0, 0)
        unique = name("uniq")
        job = client.submit(fn, b"x", unique=unique, priority=Priority.LOW, background=True)
        assert status_of(admin, fn) == StatusRow(fn.encode(), 1, 0, 0)
        rows = {r.function: r for r in admin.priority_status()}
        assert (rows[fn.encode()].high, rows[fn.encode()].normal, rows[fn.encode()].low) == (
            0, 0, 1)
        jobs = {r.handle: r for r in admin.show_jobs()}
        assert isinstance(jobs[job.handle], JobRow) and jobs[job.handle].retries == 0
        assert unique.encode() in admin.show_unique_jobs()
        assert any(isinstance(r, WorkerRow) for r in admin.workers())

        admin.maxqueue(fn, 1)
        with pytest.raises(ServerError) as refused:  # the queue is full
            client.submit(fn, b"y", background=True)
        assert refused.value.code == b"QUEUE_ERROR"
        admin.maxqueue(fn, 5, 5, 5)
        admin.maxqueue(fn)
        with pytest.raises(ValueError):
            admin.maxqueue(fn, 1, 2)

        admin.cancel_job(job.handle)  # flagged "ignore", dropped when next reached
        assert {r.handle: r for r in admin.show_jobs()}[job.handle].ignore
        with pytest.raises(AdminError) as unknown:
            admin.cancel_job(b"H:nowhere:1")
        assert unknown.value.code == b"UNKNOWN_JOB"
        admin.drop_function(fn)
        assert status_of(admin, fn) is None
        with pytest.raises(AdminError):
            admin.drop_function(fn)

        assert admin.getpid() == gearmand.pid
        assert admin.version().startswith("1.1")
        assert admin.verbose() == "INFO"
        with pytest.raises(AdminError) as shutdown:  # removed from gearmand in 1.1.15
            admin.shutdown()
        assert shutdown.value.code == b"UNKNOWN_COMMAND"
        assert admin.getpid() == gearmand.pid  # still alive, same connection usable


# -- the worker's slots and its stop ---------------------------------------------------------


def test_worker_never_runs_more_than_max_jobs(gearmand: ServerProcess) -> None:
    fn = name("slots")
    max_jobs = 3
    lock = threading.Lock()
    running = 0
    most = 0
    worker = Worker([gearmand.address], max_jobs=max_jobs, client_id=fn)

    @worker.task(fn)
    def slow(job: WorkerJob) -> bytes:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.3)
        with lock:
            running -= 1
        return job.data

    server_running: list[int] = []
    with serving(worker), Client([gearmand.address], result_timeout=BOUND) as client, \
            AdminClient(gearmand.address) as admin:
        jobs = [client.submit(fn, str(i)) for i in range(3 * max_jobs)]
        while not all(job.state is JobState.COMPLETE for job in jobs):
            row = status_of(admin, fn)
            server_running.append(row.running if row else 0)
            time.sleep(0.02)
        assert [job.wait() for job in jobs] == [str(i).encode() for i in range(3 * max_jobs)]
    assert most == max_jobs
    assert max(server_running) <= max_jobs  # gearmand never saw more jobs in hand


def test_graceful_stop_finishes_the_job_in_hand_and_grabs_no_more(gearmand: ServerProcess
                                                                  ) -> None:
    fn = name("graceful")
    started, release = threading.Event(), threading.Event()
    worker = Worker([gearmand.address], max_jobs=1)

    @worker.task(fn)
    def long_job(job: WorkerJob) -> bytes:
        started.set()
        release.wait(BOUND)
        return b"finished"

    with Client([gearmand.address], result_timeout=BOUND) as client:
        thread = threading.Thread(target=worker.work, daemon=True)
        thread.start()
        first = client.submit(fn, b"1")
        assert started.wait(BOUND)
        second = client.submit(fn, b"2")
        worker.stop(graceful=True)
        release.set()
        thread.join(BOUND)
        assert not thread.is_alive(), "work() did not return after a graceful stop"
        assert first.wait() == b"finished"
        status = client.get_status(second.handle)
        assert (status.known, status.running) == (True, False)  # still queued

        # Another worker takes it: one job, then work(stop_after=1) returns.
        other = Worker([gearmand.address])
        other.register(fn, reverse)
        other.work(stop_after=1)
        assert second.wait() == b"2"


def test_stop_from_a_signal_handler(gearmand: ServerProcess) -> None:
    fn = name("signal")
    worker = Worker([gearmand.address])
    worker.register(fn, reverse)
    previous = signal.signal(signal.SIGALRM, lambda *_: worker.stop())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        worker.work()  # returns once the handler ran
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- several servers, lost servers, reconnection ---------------------------------------------


def test_one_of_two_servers_dies(gearmand: ServerProcess,
                                 gearmand_factory: Callable[..., ServerProcess]) -> None:
    fn = name("two")
    other = gearmand_factory()
    started, release = threading.Event(), threading.Event()
    worker = Worker([gearmand.address, other.address], max_jobs=2, reconnect_delay=0.05,
                    max_reconnect_delay=0.2)

    @worker.task(fn)
    def handler(job: WorkerJob) -> bytes:
        if job.data == b"block":
            started.set()
            release.wait(BOUND)
        return job.data[::-1]

    try:
        with serving(worker), Client([gearmand.address, other.address],
                                     result_timeout=BOUND) as client:
            quick = client.submit(fn, b"quick")  # round-robin: the first server...
            blocked = client.submit(fn, b"block")  # ...then the second
            assert (quick.server, blocked.server) == (gearmand.address, other.address)
            assert quick.wait() == b"kciuq"
            assert started.wait(BOUND)

            other.stop(kill=True)
            with pytest.raises(ConnectionLost):
                blocked.wait()
            assert blocked.state is JobState.LOST
            release.set()

            # The client fails over and the worker keeps serving the live server.
            for i in range(6):
                job = client.submit(fn, f"after-{i}")
                assert job.server == gearmand.address
                assert job.wait() == f"after-{i}".encode()[::-1]

            # Back on the same port: after its backoff, submissions reach it again.
            other.start()
            deadline = time.monotonic() + BOUND
            while (job := client.submit(fn, b"back")).server != other.address:
                assert job.wait() == b"kcab"
                assert time.monotonic() < deadline, "the restarted server got no job"
                time.sleep(0.05)
            assert job.wait() == b"kcab"  # the worker reconnected to it too
    finally:
        release.set()


def test_worker_and_client_reconnect_after_a_restart(
        gearmand_factory: Callable[..., ServerProcess]) -> None:
    fn = name("restart")
    server = gearmand_factory()
    worker = Worker([server.address], reconnect_delay=0.05, max_reconnect_delay=0.2,
                    client_id=fn)
    worker.register(fn, reverse)
    with serving(worker), Client([server.address], result_timeout=BOUND) as client:
        assert client.do(fn, b"before") == b"erofeb"
        server.stop()
        with pytest.raises(NoServerAvailable):
            client.do(fn, b"while down")
        server.start()  # same port
        assert client.do(fn, b"after") == b"retfa"
        with AdminClient(server.address) as admin:  # re-registered, with its id
            assert any(r.client_id == fn.encode() and r.functions == (fn.encode(),)
                       for r in admin.workers())


# -- timeouts and unreachable servers --------------------------------------------------------


def test_a_job_no_worker_takes_times_out(gearmand: ServerProcess) -> None:
    fn = name("nobody")
    with Client([gearmand.address], result_timeout=0.2) as client:
        with pytest.raises(JobTimeout):
            client.do(fn, b"x")
        job = client.submit(fn, b"y")
        with pytest.raises(TimeoutError):  # JobTimeout is a TimeoutError
            job.wait(timeout=0.1)
        with pytest.raises(JobTimeout):
            next(job.updates(timeout=0.1))
        assert job.state is JobState.QUEUED


def test_created_timeout_when_the_server_never_answers() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with Client([silent.getsockname()], created_timeout=0.2) as client:
            with pytest.raises(JobTimeout):
                client.submit("f", b"x")


def test_no_server_available() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = s.getsockname()  # bound, not listening: connections are refused
        with Client([address, address]) as client, pytest.raises(NoServerAvailable):
            client.submit("f")
        with pytest.raises(NoServerAvailable):
            AdminClient(address).version()


# -- TLS ---------------------------------------------------------------------------------------


@contextmanager
def tls_proxy(upstream: tuple[str, int], context: ssl.SSLContext) -> Iterator[tuple[str, int]]:
    """Terminate TLS on a local port and relay the plain bytes to ``upstream``.

    The Debian gearmand accepts ``--ssl`` but is built without TLS (it reads
    the ClientHello as a bad magic), so TLS is tested through this relay.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    sockets: list[socket.socket] = [listener]

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
                tls = context.wrap_socket(raw, server_side=True)
            except OSError:
                if listener.fileno() < 0:
                    return
                continue
            plain = socket.create_connection(upstream)
            sockets.extend((tls, plain))
            threading.Thread(target=pump, args=(tls, plain), daemon=True).start()
            threading.Thread(target=pump, args=(plain, tls), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()
    finally:
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()


def test_tls_client_worker_and_admin(gearmand: ServerProcess) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    fn = name("tls")
    with tls_proxy(gearmand.address, server_context) as address:
        worker = Worker([address], ssl=context)
        worker.register(fn, reverse)
        with serving(worker), Client([address], ssl=context, result_timeout=BOUND) as client:
            assert client.do(fn, b"secret" * 10000) == b"secret"[::-1] * 10000
            assert client.echo(b"e") == b"e"
            with AdminClient(address, ssl=context) as admin:
                assert status_of(admin, fn) == StatusRow(fn.encode(), 0, 0, 1)
