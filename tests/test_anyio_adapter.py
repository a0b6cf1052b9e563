"""The anyio adapter on both anyio backends, against its own Server and a real gearmand.

Every test runs under asyncio and under trio (the ``anyio_backend`` fixture);
most run against both job servers (the ``target`` fixture).  Each test uses
its own function names, so tests sharing the session's gearmand do not see
each other's jobs.  Timeouts only bound hangs; no test asserts how long
anything took.
"""

from __future__ import annotations

import inspect
import os
import random
import socket
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.abc import SocketAttribute
from gearman_proto.adapters._common import (
    ConnectionLost,
    JobException,
    JobFailed,
    JobTimeout,
    NoServerAvailable,
    ServerError,
)
from gearman_proto.adapters.anyio import AdminClient, Client, Server, Worker, WorkerJob

from gearman_proto.admin import AdminError, JobRow, PriorityStatusRow, StatusRow, WorkerRow
from gearman_proto.events import Priority, WorkData, WorkStatus, WorkWarning
from gearman_proto.packets import REQ, RES, PacketType, encode_packet

if TYPE_CHECKING:
    from conftest import ServerProcess

pytestmark = [pytest.mark.anyio, pytest.mark.interop]

BOUND = 15.0
"""A bound for every wait here: long enough never to matter, short enough to end a hang."""


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Target:
    """A job server to test against: ours (in the test's event loop) or gearmand."""

    kind: str
    address: tuple[str, int]
    pid: int
    server: Server | None = None


@pytest.fixture(params=["ours", "gearmand"])
async def target(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[Target]:
    if request.param == "gearmand":
        g: ServerProcess = request.getfixturevalue("gearmand")
        yield Target("gearmand", g.address, g.pid)
        return
    async with Server("127.0.0.1", 0, keepalive=True) as server:
        yield Target("ours", ("127.0.0.1", server.port), os.getpid(), server)


def name(label: str) -> str:
    """A function name no other test uses."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def reverse(job: WorkerJob) -> bytes:
    return job.data[::-1]


@asynccontextmanager
async def working(worker: Worker) -> AsyncIterator[None]:
    """Run ``worker.work()`` alongside the body; stop it (not gracefully) on the way out."""
    finished = anyio.Event()

    async def run() -> None:
        await worker.work()
        finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        try:
            yield
        finally:
            with anyio.fail_after(BOUND):
                while not finished.is_set():  # stop() before work() started is a no-op
                    worker.stop(graceful=False)
                    with anyio.move_on_after(0.05):
                        await finished.wait()


async def wait_until(predicate: Callable[[], Any], what: str) -> None:
    """Poll ``predicate`` (sync or async) until it is true; fail after BOUND seconds."""
    try:
        with anyio.fail_after(BOUND):
            while True:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return
                await anyio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def running(server: Server, function: str) -> int:
    """How many jobs of ``function`` our server has in a worker's hands."""
    rows = [r for r in server.broker.status_rows() if r.function == function.encode()]
    return rows[0].running if rows else 0


async def status_of(admin: AdminClient, function: str) -> StatusRow | None:
    return next((r for r in await admin.status() if r.function == function.encode()), None)


# -- submitting and results (PROTOCOL.txt: SUBMIT_JOB*, JOB_CREATED, WORK_*) -------


@pytest.mark.parametrize("background", [False, True], ids=["fg", "bg"])
@pytest.mark.parametrize("priority", list(Priority), ids=lambda p: p.name)
@pytest.mark.feature("adapters.every-priority")
async def test_reverse_at_each_priority(target: Target, priority: Priority,
                                        background: bool) -> None:
    fn = name("reverse")
    done: list[bytes] = []
    worker = Worker([target.address])

    @worker.task(fn)
    def handler(job: WorkerJob) -> bytes:  # sync: runs in a thread
        done.append(job.data[::-1])
        return done[-1]

    async with working(worker), Client([target.address], result_timeout=BOUND) as client:
        job = await client.submit(fn, "Hello world!", priority=priority, background=background)
        assert job.handle and job.handle.startswith(b"H:")
        if background:
            assert await job is None  # the submitter of a background job gets only the handle
            await wait_until(lambda: done, "the background job to run")
        else:
            assert await job == b"!dlrow olleH"
            assert job.state == "complete"
    assert done == [b"!dlrow olleH"]


async def test_do_returns_the_result(target: Target) -> None:
    fn = name("reverse")
    worker = Worker([target.address])
    worker.register(fn, reverse)
    async with working(worker), Client([target.address], result_timeout=BOUND) as client:
        assert await client.do(fn, "abc") == b"cba"
        assert await client.do(fn, b"\x00\xff binary") == b"yranib \xff\x00"
        assert await client.do(fn, b"") == b""


async def test_many_jobs_in_flight_are_matched_by_handle(target: Target) -> None:
    fn = name("many")
    worker = Worker([target.address], max_jobs=4)

    @worker.task(fn)
    async def slow_reverse(job: WorkerJob) -> bytes:
        await anyio.sleep(random.random() / 50)  # finish out of order
        return job.data[::-1]

    async with working(worker), Client([target.address], result_timeout=BOUND) as client:
        jobs = [(await client.submit(fn, f"payload-{i}"), f"payload-{i}".encode()[::-1])
                for i in range(60)]
        assert len({job.handle for job, _ in jobs}) == 60
        assert len(client._links) == 1  # all on one connection
        results: dict[bytes | None, bytes | None] = {}

        async def wait_one(job: Any) -> None:  # many tasks wait at once; one reads for all
            results[job.handle] = await job

        async with anyio.create_task_group() as tg:
            for job, _ in jobs:
                tg.start_soon(wait_one, job)
        assert results == {job.handle: expected for job, expected in jobs}


@pytest.mark.feature("adapters.streaming")
async def test_data_warning_and_status_stream_through_updates(target: Target) -> None:
    fn = name("stream")
    worker = Worker([target.address])

    @worker.task(fn)
    def streamer(job: WorkerJob) -> str:  # reports from a thread
        job.send_data(b"part1")
        job.send_warning("careful")
        job.send_status(1, 2)
        job.send_data(b"part2")
        job.send_status(2, 2)
        return "done"

    async with working(worker), Client([target.address], result_timeout=BOUND) as client:
        job = await client.submit(fn)
        h = job.handle
        assert h is not None
        assert [u async for u in job.updates(timeout=BOUND)] == [
            WorkData(h, b"part1"), WorkWarning(h, b"careful"), WorkStatus(h, 1, 2),
            WorkData(h, b"part2"), WorkStatus(h, 2, 2)]
        assert await job == b"done"
        assert job.status == (2, 2)


@pytest.mark.feature("adapters.work-fail")
async def test_work_fail_raises_job_failed(target: Target) -> None:
    fn = name("fail")
    worker = Worker([target.address])

    @worker.task(fn)
    async def failing(job: WorkerJob) -> bytes:
        job.fail()
        return b"ignored"

    async with working(worker), Client([target.address], result_timeout=BOUND) as client:
        job = await client.submit(fn)
        with pytest.raises(JobFailed) as info:
            await job
        assert type(info.value) is JobFailed and info.value.handle == job.handle
        assert job.state == "failed"


@pytest.mark.feature("adapters.work-exception")
async def test_exception_reaches_a_client_with_the_exceptions_option(target: Target) -> None:
    fn = name("boom")
    worker = Worker([target.address])

    @worker.task(fn)
    def boom(job: WorkerJob) -> bytes:
        raise ValueError("it went boom")

    async with working(worker):
        async with Client([target.address], result_timeout=BOUND) as client:
            with pytest.raises(JobException, match="it went boom") as info:
                await client.do(fn)
            assert info.value.data == b"ValueError: it went boom"
        # A client without the option gets WORK_FAIL instead.
        async with Client([target.address], result_timeout=BOUND, exceptions=False) as client:
            with pytest.raises(JobFailed) as failed:
                await client.do(fn)
            assert type(failed.value) is JobFailed


# -- questions: GET_STATUS, GET_STATUS_UNIQUE, ECHO --------------------------------------


@pytest.mark.feature("adapters.get-status")
async def test_get_status_of_a_running_and_a_finished_job(target: Target) -> None:
    fn = name("status")
    release = anyio.Event()
    worker = Worker([target.address])

    @worker.task(fn)
    async def working_job(job: WorkerJob) -> bytes:
        job.send_status(1, 4)
        await release.wait()
        return b"ok"

    async with working(worker), Client([target.address], result_timeout=BOUND) as client:
        unique = f"u-{uuid.uuid4().hex}"
        job = await client.submit(fn, unique=unique)
        assert job.handle is not None
        handle = job.handle

        async def status_known() -> bool:
            return (await client.get_status(handle)).numerator == 1

        await wait_until(status_known, "WORK_STATUS")
        status = await client.get_status(handle)
        assert (status.known, status.running, status.numerator, status.denominator) == (
            True, True, 1, 4)
        by_unique = await client.get_status_unique(unique)
        assert by_unique.unique == unique.encode()
        assert (by_unique.known, by_unique.running, by_unique.numerator,
                by_unique.denominator, by_unique.waiting) == (True, True, 1, 4, 1)
        release.set()
        assert await job == b"ok"
        finished = await client.get_status(handle)
        assert (finished.known, finished.running) == (False, False)
        assert not (await client.get_status_unique(unique)).known


@pytest.mark.feature("adapters.echo")
async def test_echo(target: Target) -> None:
    async with Client([target.address], keepalive=True) as client:
        assert await client.echo(b"ping \x00 pong") == b"ping \x00 pong"
        assert await client.echo("") == b""
        assert await client.echo(b"x" * 100_000) == b"x" * 100_000


# -- the admin protocol ----------------------------------------------------------------------


async def test_every_admin_command(target: Target) -> None:
    fn = name("admin")
    client_id = name("anyio-client")
    async with AdminClient(target.address) as admin, \
            Client([target.address], client_id=client_id) as client:
        await admin.create_function(fn)
        assert await status_of(admin, fn) == StatusRow(fn.encode(), 0, 0, 0)
        unique = name("uniq")
        job = await client.submit(fn, b"x", unique=unique, priority=Priority.LOW,
                                  background=True)
        assert job.handle is not None
        assert await status_of(admin, fn) == StatusRow(fn.encode(), 1, 0, 0)
        rows = {r.function: r for r in await admin.priority_status()}
        assert rows[fn.encode()] == PriorityStatusRow(fn.encode(), 0, 0, 1, 0)
        jobs = {r.handle: r for r in await admin.show_jobs()}
        assert isinstance(jobs[job.handle], JobRow) and jobs[job.handle].retries == 0
        assert unique.encode() in await admin.show_unique_jobs()
        workers = {r.client_id: r for r in await admin.workers()}
        assert isinstance(workers[client_id.encode()], WorkerRow)

        await admin.maxqueue(fn, 1)
        with pytest.raises(ServerError) as refused:  # the queue is full
            await client.submit(fn, b"y", background=True)
        assert refused.value.code == b"QUEUE_ERROR"
        await admin.maxqueue(fn, 5, 5, 5)
        await admin.maxqueue(fn)
        with pytest.raises(ValueError):
            await admin.maxqueue(fn, 1, 2)

        await admin.cancel_job(job.handle)
        with pytest.raises(AdminError) as unknown:
            await admin.cancel_job(b"H:nowhere:1")
        assert unknown.value.code == b"UNKNOWN_JOB"
        await admin.drop_function(fn)
        assert await status_of(admin, fn) is None
        with pytest.raises(AdminError):
            await admin.drop_function(fn)

        assert await admin.getpid() == target.pid
        if target.kind == "gearmand":
            assert (await admin.version()).startswith("1.1")
            assert await admin.verbose() == "INFO"
        else:
            assert (await admin.version()).startswith("gearman-proto")
            assert await admin.verbose() == "ERROR"
        with pytest.raises(AdminError) as shutdown:  # not allowed on either server
            await admin.shutdown()
        assert shutdown.value.code == b"UNKNOWN_COMMAND"
        assert await admin.getpid() == target.pid  # still alive, same connection usable


async def test_admin_shutdown_stops_our_server(anyio_backend: str) -> None:
    server = Server("127.0.0.1", 0, allow_shutdown=True)
    await server.start()
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve_forever)
        async with AdminClient(("127.0.0.1", server.port)) as admin:
            await admin.shutdown(graceful=True)  # the OK still arrives
    with pytest.raises(NoServerAvailable):
        async with Client([("127.0.0.1", server.port)]) as client:
            await client.echo()


# -- the worker's slots and its stop ---------------------------------------------------------


async def test_worker_never_runs_more_than_max_jobs(target: Target) -> None:
    fn = name("slots")
    max_jobs = 3
    running = most = 0
    worker = Worker([target.address], max_jobs=max_jobs)

    @worker.task(fn)
    async def slow(job: WorkerJob) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await anyio.sleep(0.1)
        running -= 1
        return job.data

    server_running: list[int] = []
    async with working(worker), Client([target.address], result_timeout=BOUND) as client, \
            AdminClient(target.address) as admin:
        jobs = [await client.submit(fn, str(i)) for i in range(3 * max_jobs)]
        with anyio.fail_after(BOUND):
            while not all(job.state == "complete" for job in jobs):
                row = await status_of(admin, fn)
                server_running.append(row.running if row else 0)
                await client.echo()  # reads the results for the jobs as they come
        assert [await job for job in jobs] == [str(i).encode() for i in range(3 * max_jobs)]
    assert most == max_jobs
    assert max(server_running) <= max_jobs  # the server never saw more jobs in hand


async def test_graceful_stop_finishes_the_job_in_hand_and_grabs_no_more(target: Target
                                                                        ) -> None:
    fn = name("graceful")
    started, release = threading.Event(), threading.Event()
    worker = Worker([target.address], max_jobs=1)

    @worker.task(fn)
    def long_job(job: WorkerJob) -> bytes:
        started.set()
        release.wait(BOUND)
        return b"finished"

    try:
        async with Client([target.address], result_timeout=BOUND) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.work)
                first = await client.submit(fn, b"1")
                await wait_until(started.is_set, "the first job to start")
                second = await client.submit(fn, b"2")
                worker.stop(graceful=True)
                release.set()
                # work() returns on its own: the task group exits.
            assert await first == b"finished"
            assert second.handle is not None
            status = await client.get_status(second.handle)
            assert (status.known, status.running) == (True, False)  # still queued

            other = Worker([target.address])
            other.register(fn, reverse)
            async with working(other):
                assert await second == b"2"
    finally:
        release.set()


async def test_stop_from_a_handler_thread(target: Target) -> None:
    fn = name("stop-thread")
    worker = Worker([target.address])

    @worker.task(fn)
    def stopper(job: WorkerJob) -> bytes:
        worker.stop()  # from a worker thread: graceful, so this job still completes
        return b"stopped"

    async with Client([target.address], result_timeout=BOUND) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.work)
            assert await client.do(fn) == b"stopped"
    assert worker.jobs_done == 1


# -- several servers, lost servers -----------------------------------------------------------


async def test_one_of_two_servers_closes(anyio_backend: str) -> None:
    """A client fails over, in-flight jobs on the lost server raise ConnectionLost, and
    the worker keeps serving the other server."""
    fn = name("two")
    release = anyio.Event()
    async with Server("127.0.0.1", 0, handle_prefix=b"H:first") as first, \
            Server("127.0.0.1", 0, handle_prefix=b"H:second") as second:
        addresses = [("127.0.0.1", first.port), ("127.0.0.1", second.port)]
        worker = Worker(addresses, max_jobs=2, reconnect_delay=0.05, max_reconnect_delay=0.2)

        @worker.task(fn)
        async def handler(job: WorkerJob) -> bytes:
            if job.data == b"block":
                await release.wait()
            return job.data[::-1]

        async with working(worker), Client(addresses, result_timeout=BOUND) as client:
            quick = await client.submit(fn, b"quick")  # round-robin: the first server...
            blocked = await client.submit(fn, b"block")  # ...then the second
            assert quick.handle and quick.handle.startswith(b"H:first:")
            assert blocked.handle and blocked.handle.startswith(b"H:second:")
            assert await quick == b"kciuq"
            await wait_until(lambda: running(second, fn) == 1, "the blocked job to run")

            second.close()
            with pytest.raises(ConnectionLost):
                await blocked
            assert blocked.state == "lost"
            release.set()

            for i in range(6):
                job = await client.submit(fn, f"after-{i}")
                assert job.handle and job.handle.startswith(b"H:first:")
                assert await job == f"after-{i}".encode()[::-1]


async def test_one_of_two_gearmands_dies(anyio_backend: str, gearmand: ServerProcess,
                                         gearmand_factory: Callable[..., ServerProcess]
                                         ) -> None:
    fn = name("two-gearmand")
    other = gearmand_factory()
    started, release = anyio.Event(), anyio.Event()
    addresses = [gearmand.address, other.address]
    worker = Worker(addresses, max_jobs=2, reconnect_delay=0.05, max_reconnect_delay=0.2)

    @worker.task(fn)
    async def handler(job: WorkerJob) -> bytes:
        if job.data == b"block":
            started.set()
            await release.wait()
        return job.data[::-1]

    async with working(worker), Client(addresses, result_timeout=BOUND) as client:
        quick = await client.submit(fn, b"quick")
        blocked = await client.submit(fn, b"block")
        assert await quick == b"kciuq"
        with anyio.fail_after(BOUND):
            await started.wait()
        other.stop(kill=True)
        with pytest.raises(ConnectionLost):
            await blocked
        release.set()
        for i in range(4):
            assert await client.do(fn, f"after-{i}") == f"after-{i}".encode()[::-1]


async def test_worker_and_client_reconnect_after_a_restart(anyio_backend: str) -> None:
    fn = name("restart")
    server = Server("127.0.0.1", 0)
    await server.start()
    address = ("127.0.0.1", server.port)
    worker = Worker([address], reconnect_delay=0.05, max_reconnect_delay=0.2, client_id=fn)
    worker.register(fn, reverse)
    async with working(worker), Client([address], result_timeout=BOUND,
                                       retry_delay=0.05) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve_forever)
            assert await client.do(fn, b"before") == b"erofeb"
            server.close()
        with pytest.raises((NoServerAvailable, ConnectionLost)):
            await client.do(fn, b"while down")
        async with Server("127.0.0.1", address[1]):  # the same port
            with anyio.fail_after(BOUND):
                while True:
                    try:
                        assert await client.do(fn, b"after") == b"retfa"
                        break
                    except NoServerAvailable:
                        await anyio.sleep(0.05)
            async with AdminClient(address) as admin:  # re-registered, with its id
                assert any(r.client_id == fn.encode() and r.functions == (fn.encode(),)
                           for r in await admin.workers())


# -- our server: protocol errors, back-pressure, timers, TLS ----------------------------------


async def test_a_protocol_error_closes_only_that_connection(anyio_backend: str) -> None:
    fn = name("bystander")
    release = anyio.Event()
    async with Server("127.0.0.1", 0) as server:
        address = ("127.0.0.1", server.port)
        worker = Worker([address])

        @worker.task(fn)
        async def handler(job: WorkerJob) -> bytes:
            await release.wait()
            return b"still here"

        async with working(worker), Client([address], result_timeout=BOUND) as client:
            job = await client.submit(fn)
            await wait_until(lambda: running(server, fn) == 1, "the job to run")
            async with await anyio.connect_tcp(*address) as raw:
                await raw.send(b"\0RES" + b"\xff" * 20)  # a response magic from a peer
                reply = b""
                with anyio.fail_after(BOUND):
                    while True:
                        try:
                            reply += await raw.receive()
                        except anyio.EndOfStream:
                            break  # closed by the server
            assert reply[:4] == RES
            assert int.from_bytes(reply[4:8], "big") == PacketType.ERROR
            assert server.hub.protocol_errors == 1
            release.set()
            assert await job == b"still here"


async def test_connections_past_max_connections_are_refused(anyio_backend: str) -> None:
    async with Server("127.0.0.1", 0, max_connections=1) as server:
        address = ("127.0.0.1", server.port)
        async with Client([address]) as first, Client([address]) as second:
            assert await first.echo(b"1") == b"1"
            with pytest.raises(ConnectionLost):
                await second.echo(b"2")
            assert await first.echo(b"3") == b"3"


async def test_a_connection_that_does_not_read_is_not_read_from(anyio_backend: str) -> None:
    """Back-pressure: past ``output_limit`` unsent bytes the server stops reading a peer."""
    limit = 64 * 1024
    payload = b"e" * 32 * 1024
    count = 512  # 16 MiB of echoes, far past the limit and the socket buffers
    packet = encode_packet(REQ, PacketType.ECHO_REQ, [payload])
    most = 0
    async with Server("127.0.0.1", 0, output_limit=limit) as server, \
            await anyio.connect_tcp("127.0.0.1", server.port) as raw:
        # A fixed receive buffer (no autotuning), so the server's output backs up.
        raw.extra(SocketAttribute.raw_socket).setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                                         64 * 1024)
        async with anyio.create_task_group() as tg:

            async def send_all() -> None:
                for _ in range(count):
                    await raw.send(packet)

            async def watch() -> None:
                nonlocal most
                while True:
                    most = max([most, *(peer.pending for peer in server.peers.values())])
                    await anyio.sleep(0.005)

            tg.start_soon(send_all)
            tg.start_soon(watch)
            await anyio.sleep(0.2)  # let the server fill up (no assertion on time)
            expected = len(encode_packet(RES, PacketType.ECHO_RES, [payload])) * count
            received = 0
            with anyio.fail_after(BOUND):
                while received < expected:
                    received += len(await raw.receive())
            tg.cancel_scope.cancel()
    assert received == expected
    # Each read (of at most 256 KiB) is flushed before the limit is checked again,
    # so the output passes the limit by what one read makes at most.
    assert limit < most <= limit + 256 * 1024 + len(packet)


async def test_can_do_timeout_and_epoch_jobs_run_on_the_servers_clock(anyio_backend: str
                                                                       ) -> None:
    fn, later = name("timeout"), name("epoch")
    ran = anyio.Event()
    async with Server("127.0.0.1", 0) as server:
        address = ("127.0.0.1", server.port)
        stuck = Worker([address])

        @stuck.task(fn, timeout_ms=100)  # CAN_DO_TIMEOUT: the server takes the job back
        async def never_ends(job: WorkerJob) -> None:
            await anyio.sleep_forever()

        quick = Worker([address])
        quick.register(fn, reverse)

        @quick.task(later)
        async def run_later(job: WorkerJob) -> None:
            ran.set()

        async with working(stuck), Client([address], result_timeout=BOUND) as client:
            job = await client.submit(fn, b"abc")
            await wait_until(lambda: running(server, fn) == 1,
                             "the stuck worker to take the job")
            async with working(quick):  # the timer requeues the job for this one
                assert await job == b"cba"
                assert await client.submit(later, background=True,
                                           epoch=int(time.time()) + 1)
                with anyio.fail_after(BOUND):
                    await ran.wait()


async def test_tls_client_worker_and_admin(anyio_backend: str) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    fn = name("tls")
    async with Server("127.0.0.1", 0, ssl=server_context) as server:
        address = ("127.0.0.1", server.port)
        worker = Worker([address], ssl=context)
        worker.register(fn, reverse)
        async with working(worker), Client([address], ssl=context,
                                           result_timeout=BOUND) as client:
            assert await client.do(fn, b"secret" * 10000) == b"secret"[::-1] * 10000
            assert await client.echo(b"e") == b"e"
            async with AdminClient(address, ssl=context) as admin:
                assert await status_of(admin, fn) == StatusRow(fn.encode(), 0, 0, 1)
        async with Client([address], connect_timeout=BOUND) as plain:  # no TLS: refused
            with pytest.raises((ConnectionLost, NoServerAvailable, JobTimeout)):
                await plain.echo()


async def test_graceful_close_of_our_server_finishes_running_jobs(anyio_backend: str
                                                                  ) -> None:
    fn = name("drain")
    release = anyio.Event()
    server = Server("127.0.0.1", 0)
    await server.start()
    address = ("127.0.0.1", server.port)
    worker = Worker([address], reconnect_delay=0.05, max_reconnect_delay=0.2)

    @worker.task(fn)
    async def handler(job: WorkerJob) -> bytes:
        await release.wait()
        return b"drained"

    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve_forever)
        async with working(worker), Client([address], result_timeout=BOUND) as client:
            job = await client.submit(fn)
            await wait_until(lambda: running(server, fn) == 1, "the job to run")
            server.close(graceful=True)
            with pytest.raises(NoServerAvailable):  # no longer accepting
                async with Client([address]) as late:
                    await late.echo()
            release.set()
            assert await job == b"drained"
        # serve_forever() returns once no job is running: the task group exits.


# -- timeouts and unreachable servers --------------------------------------------------------


async def test_a_job_no_worker_takes_times_out(target: Target) -> None:
    fn = name("nobody")
    async with Client([target.address], result_timeout=0.2) as client:
        with pytest.raises(JobTimeout):
            await client.do(fn, b"x")
        job = await client.submit(fn, b"y")
        with pytest.raises(TimeoutError):  # JobTimeout is a TimeoutError
            await job.result(timeout=0.1)
        with pytest.raises(JobTimeout):
            async for _ in job.updates(timeout=0.1):
                pass
        assert job.state == "queued"
        assert await client.echo(b"still usable") == b"still usable"


async def test_created_timeout_when_the_server_never_answers(anyio_backend: str) -> None:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as silent:
        port = silent.extra(SocketAttribute.local_port)
        async with Client([("127.0.0.1", port)], created_timeout=0.2) as client:
            with pytest.raises(JobTimeout):
                await client.submit("f", b"x")
        with pytest.raises(JobTimeout):
            await AdminClient(("127.0.0.1", port), timeout=0.2).version()


async def test_no_server_available(anyio_backend: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = s.getsockname()  # bound, not listening: connections are refused
        async with Client([address, address]) as client:
            with pytest.raises(NoServerAvailable):
                await client.submit("f")
        with pytest.raises(OSError):
            await AdminClient(address).version()
