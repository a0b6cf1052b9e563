"""The client, worker and admin policy, with no sockets.

Two layers.  The rules of :mod:`gearman_proto.policy` (server order, backoff,
handle affinity, outcomes, error choice) and the admin reply shapes are plain
functions and records, tested directly.  Then the one Client / Worker /
AdminClient implementation runs over an in-memory backend wired straight to a
:class:`~gearman_proto.hub.ServerHub` (as h11's ``ConnectionPair`` or
httpcore's mock backend): every byte goes through the real core on both
sides, and nothing touches a socket or the real clock's waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from gearman_proto.adapters import _impl
from gearman_proto.adapters._asyncio_backend import AsyncioBackend
from gearman_proto.adapters._backend import ConnectOptions, Link, OnClose, OnData, Watched

from gearman_proto import admin
from gearman_proto.events import SubmitJob, WorkComplete, WorkException, WorkStatus
from gearman_proto.hub import ServerHub
from gearman_proto.policy import (
    Backoff,
    ConnectionLost,
    JobException,
    JobFailed,
    JobTimeout,
    NoServerAvailable,
    ServerPool,
    exception_text,
    handler_outcome,
    job_outcome,
    unreachable,
)
from gearman_proto.session import Job, JobState, check_report

# -- the rules --------------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(0.5, 4.0)
    assert [b.failed(100.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert not b.ready(103.9) and b.ready(104.0)
    b.succeeded()
    assert b.delay() == 0.0 and b.failed(0.0) == 0.5
    assert Backoff(60, 30).maximum == 60  # a first delay above the cap raises the cap
    with pytest.raises(ValueError):
        Backoff(-1)


def test_round_robin_takes_its_turn_at_once() -> None:
    pool = ServerPool(3)
    # Each call takes the next start, even before the caller got a connection:
    # twenty concurrent submissions never see the same rotation shift under them.
    assert [pool.order(0.0)[0] for _ in range(6)] == [0, 1, 2, 0, 1, 2]


def test_servers_in_backoff_come_last_by_their_retry_time_never_dropped() -> None:
    pool = ServerPool(3, retry_delay=1.0)
    pool.failed(0, now=10.0)                 # retry at 11
    pool.failed(1, now=10.0)
    pool.failed(1, now=10.0)                 # retry at 12
    order = pool.order(10.5)
    assert order == [2, 0, 1]
    assert pool.order(11.5)[:2] in ([0, 2], [2, 0])   # 0's wait is over
    pool.connected(1)
    assert 1 in pool.order(10.5)[:2]


def test_the_submission_plan_gives_the_first_server_a_second_try() -> None:
    assert ServerPool(1).submission_plan(0.0) == [0, 0]
    assert ServerPool(3).submission_plan(0.0) == [0, 1, 2, 0]


def test_handle_affinity_is_bounded_and_preferred() -> None:
    pool = ServerPool(2, remembered=3)
    for i in range(5):
        pool.remember(b"H:%d" % i, i % 2)
    assert len(pool) == 3
    assert pool.server_of(b"H:0") is None and pool.server_of(b"H:4") == 0
    assert pool.order(0.0, prefer=1)[0] == 1


def test_which_error_when_no_server_answers() -> None:
    addresses = [("a", 1), ("::1", 2)]
    assert isinstance(unreachable(addresses, timed_out=True), JobTimeout)
    error = unreachable(addresses, timed_out=False, why="refused")
    assert isinstance(error, NoServerAvailable) and isinstance(error, ConnectionError)
    assert "a:1, [::1]:2 (refused)" in str(error)


def test_what_a_handler_outcome_becomes() -> None:
    assert handler_outcome(b"H", b"x") == WorkComplete(b"H", b"x")
    assert handler_outcome(b"H", "é") == WorkComplete(b"H", "é".encode())
    assert handler_outcome(b"H", None) == WorkComplete(b"H", b"")
    assert handler_outcome(b"H", bytearray(b"ab")) == WorkComplete(b"H", b"ab")
    assert handler_outcome(b"H", exc=ValueError()) == WorkException(b"H", b"ValueError")
    assert handler_outcome(b"H", exc=KeyError("k")) == WorkException(b"H", b"KeyError: 'k'")
    bad = handler_outcome(b"H", 42)
    assert isinstance(bad, WorkException) and bad.data.startswith(b"TypeError")
    assert exception_text(RuntimeError("a\u00e9")) == "RuntimeError: a\u00e9".encode()


def _job(state: JobState, **fields: Any) -> Job[int]:
    job: Job[int] = Job(SubmitJob(b"reverse", b"data", b"u"), 0)
    job.state = state
    for name, value in fields.items():
        setattr(job, name, value)
    return job


def test_what_a_finished_job_gives_its_waiter() -> None:
    assert job_outcome(_job(JobState.COMPLETE, result=b"r")) == b"r"
    assert job_outcome(_job(JobState.COMPLETE)) == b""
    with pytest.raises(JobFailed, match=r"job H:1 \(reverse\) failed"):
        job_outcome(_job(JobState.FAILED, handle=b"H:1"))
    with pytest.raises(JobException, match="raised an exception: KeyError") as info:
        job_outcome(_job(JobState.EXCEPTION, handle=b"H:1", exception=b"KeyError"))
    assert info.value.function == b"reverse"
    with pytest.raises(ConnectionLost, match=r"job server 10\.0\.0\.1:4730 lost before H:1"):
        job_outcome(_job(JobState.LOST, handle=b"H:1"), ("10.0.0.1", 4730))


def test_a_report_the_wire_cannot_carry_is_refused_before_any_connection() -> None:
    check_report(WorkStatus(b"H", 1, 2))
    with pytest.raises(Exception, match="numbers must be >= 0"):
        check_report(WorkStatus(b"H", -1, 2))


def test_each_admin_request_knows_its_result() -> None:
    assert admin.maxqueue_limits(()) is None
    assert admin.maxqueue_limits((5,)) == (5, 5, 5)
    assert admin.maxqueue_limits((1, 2, 3)) == (1, 2, 3)
    with pytest.raises(ValueError):
        admin.maxqueue_limits((1, 2))
    assert admin.result_value(admin.GetPid(), admin.AdminOk(b"42")) == 42
    assert admin.result_value(admin.Version(), admin.AdminOk(b"1.1.20")) == "1.1.20"
    assert admin.result_value(admin.CancelJob(b"H"), admin.AdminOk()) is None
    assert admin.result_value(admin.Status(), []) == []
    with pytest.raises(admin.AdminError):
        admin.result_value(admin.CancelJob(b"H"), admin.AdminError(b"UNKNOWN_JOB", b""))


# -- the one implementation over an in-memory backend --------------------------------------


class _MemoryLink(Link):
    """One connection to the hub, in memory: writes are fed to the hub on the next turn."""

    def __init__(self, net: MemoryNet, on_data: OnData, on_close: OnClose | None) -> None:
        self.net = net
        self.on_data = on_data
        self.on_close = on_close
        self.cid = net.hub.open(b"memory")
        self._closed = False
        self._ended = asyncio.Event()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[bool]]] = []
        net.links[self.cid] = self

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, data: bytes) -> None:
        if not self._closed and data:
            asyncio.get_running_loop().call_soon(self.net.deliver, self.cid, data)

    def receive(self, data: bytes) -> None:
        try:
            self.on_data(data)
        except Exception as exc:
            self.end(exc)
            return
        for ready, fut in list(self._waiters):
            if not fut.done() and ready():
                fut.set_result(True)

    def end(self, exc: BaseException | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self.error = exc
        self.net.hub.closed(self.cid)
        self.net.links.pop(self.cid, None)
        if self.on_close is not None:
            self.on_close(exc)
        self._ended.set()
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_result(False)
        asyncio.get_running_loop().call_soon(self.net.flush)

    def close(self) -> None:
        self.end(None)

    async def run(self) -> None:
        await self._ended.wait()

    async def wait(self, ready: Callable[[], bool], timeout: float | None,
                   watch: Watched | None = None) -> bool:
        if ready():
            return True
        if self._closed:
            return False
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        entry = (ready, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout) or ready()
        except asyncio.TimeoutError:
            return ready()
        finally:
            self._waiters.remove(entry)

    async def drain(self, timeout: float | None) -> None:
        return None


class MemoryNet:
    """A ServerHub and the in-memory links to it; ``down`` refuses connections."""

    def __init__(self) -> None:
        self.hub = ServerHub()
        self.links: dict[int, _MemoryLink] = {}
        self.down = False
        self.connects = 0

    def deliver(self, cid: int, data: bytes) -> None:
        if cid in self.links:
            self.hub.receive(cid, data)
            self.flush()

    def flush(self) -> None:
        out = self.hub.flush()
        for cid, data in out.writes.items():
            link = self.links.get(cid)
            if link is not None:
                link.receive(data)
        for cid in out.close:
            link = self.links.get(cid)
            if link is not None:
                link.end(None)

    def drop_all(self) -> None:
        for link in list(self.links.values()):
            link.end(ConnectionResetError("dropped"))


class MemoryBackend(AsyncioBackend):
    """asyncio's primitives, with connections to an in-memory hub instead of sockets."""

    def __init__(self, nets: dict[tuple[str, int], MemoryNet]) -> None:
        self.nets = nets

    async def connect(self, address: tuple[str, int], options: ConnectOptions,
                      on_data: OnData, on_close: OnClose | None = None) -> Link:
        net = self.nets.get(address)
        if net is None or net.down:
            raise ConnectionRefusedError(f"connection to {address} refused")
        net.connects += 1
        return _MemoryLink(net, on_data, on_close)


def _classes(backend: MemoryBackend) -> tuple[type[Any], type[Any], type[Any]]:
    client = type("Client", (_impl.Client,), {"backend": backend})
    worker = type("Worker", (_impl.Worker,), {"backend": backend})
    admin_client = type("AdminClient", (_impl.AdminClient,), {"backend": backend})
    return client, worker, admin_client


A, B = ("a", 1), ("b", 2)


async def _with_worker(worker: Any, body: Callable[[], Any]) -> Any:
    task = asyncio.ensure_future(worker.work())
    try:
        for _ in range(100):
            await asyncio.sleep(0)
        return await body()
    finally:
        worker.stop(graceful=False)
        await asyncio.wait_for(task, 5)


def test_client_worker_and_admin_through_the_hub_in_memory() -> None:
    async def main() -> None:
        nets = {A: MemoryNet()}
        Client, Worker, AdminClient = _classes(MemoryBackend(nets))
        worker = Worker([A], client_id="mem")
        worker.register("reverse", lambda job: job.data[::-1])

        async def body() -> None:
            async with Client([A]) as client:
                assert await client.do("reverse", "Hello world!") == b"!dlrow olleH"
                job = await client.submit("nobody", "x")
                assert job.state is JobState.QUEUED
                assert (await client.get_status(job.handle)).known
                assert await client.echo(b"ping") == b"ping"
            async with AdminClient(A) as a:
                rows = {r.function: r for r in await a.status()}
                assert rows[b"reverse"].available_workers == 1
                assert [w.client_id for w in await a.workers()].count(b"mem") == 1
        await _with_worker(worker, body)
    asyncio.run(main())


def test_a_submission_lost_before_job_created_goes_to_the_next_server() -> None:
    async def main() -> None:
        nets = {A: MemoryNet(), B: MemoryNet()}
        Client, _, _ = _classes(MemoryBackend(nets))
        client = Client([A, B])
        assert (await client.submit("f", background=True)).server == A
        # A drops every connection as it reads the next submission.
        original = nets[A].deliver
        nets[A].deliver = lambda cid, data: nets[A].drop_all()  # type: ignore[method-assign]
        job = await client.submit("f", background=True)
        assert job.server == B and job.state is JobState.QUEUED
        nets[A].deliver = original  # type: ignore[method-assign]
        await client.close()
    asyncio.run(main())


def test_a_dead_server_is_tried_last_and_never_fails_a_submission() -> None:
    async def main() -> None:
        nets = {A: MemoryNet(), B: MemoryNet()}
        nets[A].down = True
        Client, _, _ = _classes(MemoryBackend(nets))
        client = Client([A, B], retry_delay=60)
        jobs = await asyncio.gather(*(client.submit("f", background=True) for _ in range(40)))
        assert {job.server for job in jobs} == {B}
        # A failed once and waits out its backoff behind B: one connect attempt, not 40.
        assert client.pool.order(client.backend.now())[-1] == 0
        assert nets[A].connects == 0
        # Questions go to the servers in their order, those in backoff last.
        assert await client.echo(b"e") == b"e"
        await client.close()
    asyncio.run(main())


def test_every_server_down_gives_no_server_available_naming_them() -> None:
    async def main() -> None:
        nets: dict[tuple[str, int], MemoryNet] = {}
        Client, _, _ = _classes(MemoryBackend(nets))
        client = Client([A, B])
        with pytest.raises(NoServerAvailable, match="a:1, b:2"):
            await client.submit("f")
    asyncio.run(main())


def test_a_lost_worker_connection_frees_its_slots_and_reconnects_with_backoff() -> None:
    async def main() -> None:
        nets = {A: MemoryNet()}
        Client, Worker, _ = _classes(MemoryBackend(nets))
        worker = Worker([A], max_jobs=2, reconnect_delay=0.01, max_reconnect_delay=0.02)
        worker.register("up", lambda job: job.data.upper())

        async def body() -> None:
            client = Client([A])
            assert await client.do("up", "a") == b"A"
            nets[A].drop_all()
            for _ in range(200):
                await asyncio.sleep(0.005)
                if nets[A].connects >= 3:  # the client's and the worker's again
                    break
            assert await client.do("up", "b", timeout=5) == b"B"
            await client.close()
        await _with_worker(worker, body)
    asyncio.run(main())
