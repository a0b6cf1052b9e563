"""The asyncio adapter: Client, Worker, AdminClient and a job server.

Every decision comes from the core: :class:`~gearman_proto.session.ClientSession`
and :class:`~gearman_proto.session.WorkerSession` for the client and worker,
:class:`~gearman_proto.hub.ServerHub` for the server.  This module reads,
feeds bytes in, wakes waiters, and writes what the core returns.  uvloop is
used when installed and asked for (``serve(..., loop="uvloop")`` or
``gearman-proto server --loop uvloop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import inspect
import logging
import os
import signal
import socket
import ssl as _ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any, cast

from gearman_proto import NeedData, admin
from gearman_proto.broker import JobServer
from gearman_proto.errors import LocalProtocolError, RemoteProtocolError
from gearman_proto.events import (
    EchoReq,
    Error,
    GetStatus,
    GetStatusUnique,
    JobAssign,
    Priority,
    StatusRes,
    StatusResUnique,
    WorkComplete,
    WorkData,
    WorkException,
    WorkFail,
    WorkStatus,
    WorkUpdate,
    WorkWarning,
)
from gearman_proto.hub import DEFAULT_GRACEFUL_TIMEOUT, DEFAULT_MAX_CLIENT_JOBS, ServerHub
from gearman_proto.packets import DEFAULT_MAX_PACKET_SIZE
from gearman_proto.session import ClientSession, Job, JobState, Reply, WorkerSession, WorkerStep

from ._common import (
    Address,
    ConnectionLost,
    JobTimeout,
    KeepAlive,
    NoServerAvailable,
    ServerError,
    ServersArg,
    apply_keepalive,
    is_async_handler,
    job_outcome,
    make_submission,
    parse_servers,
    to_bytes,
)

__all__ = ["Client", "ClientJob", "Worker", "WorkerJob", "AdminClient", "Server", "serve",
           "KeepAlive"]

log = logging.getLogger("gearman_proto")
_READ = 256 * 1024


async def _open(addr: Address, ssl: _ssl.SSLContext | None, server_hostname: str | None,
                timeout: float | None, keepalive: bool | KeepAlive
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = addr
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl,
                                    server_hostname=(server_hostname or host) if ssl else None,
                                    limit=_READ),
            timeout)
    except asyncio.TimeoutError:
        raise JobTimeout(f"connecting to {host}:{port} timed out") from None
    sock = writer.get_extra_info("socket")
    if sock is not None and keepalive:
        apply_keepalive(sock, keepalive)
    return reader, writer


class _Link(asyncio.Protocol):
    """One connection of a Client or Worker: each read goes straight to the core.

    A StreamReader would buffer what the core buffers anyway and wake a reader
    task for every read: one more turn of the event loop per packet received,
    and a good part of what a job cost the client and the worker.  Here
    ``data_received`` hands the bytes to ``on_data`` (those that arrive before
    :meth:`start` wait for it).  ``closed`` resolves when the connection ends,
    with the error that ended it, if any: a RemoteProtocolError from
    ``on_data``, an OSError, or ``None`` for a clean EOF or :meth:`close`.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_data: Callable[[bytes], object] | None = None
        self.early: list[bytes] = []
        self.closed: asyncio.Future[Exception | None] = (
            asyncio.get_running_loop().create_future())

    def start(self, on_data: Callable[[bytes], object]) -> None:
        """Hand every read to ``on_data`` from now on (those already read first)."""
        self.on_data = on_data
        early, self.early = self.early, []
        for data in early:
            self.data_received(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self.on_data is None:
            self.early.append(data)
            return
        try:
            self.on_data(data)
        except (OSError, RemoteProtocolError) as exc:
            self._end(exc)
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)

    def _end(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the peer (it is written at once if the socket takes it)."""
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        """Close the connection; ``closed`` resolves once it is gone."""
        if self.transport is not None:
            self.transport.close()


async def _open_link(addr: Address, ssl: _ssl.SSLContext | None, server_hostname: str | None,
                     timeout: float | None, keepalive: bool | KeepAlive) -> _Link:
    """Connect as :func:`_open` does, with a :class:`_Link` as the protocol."""
    host, port = addr
    loop = asyncio.get_running_loop()
    try:
        _transport, link = await asyncio.wait_for(
            loop.create_connection(_Link, host, port, ssl=ssl,
                                   server_hostname=(server_hostname or host) if ssl else None),
            timeout)
    except asyncio.TimeoutError:
        raise JobTimeout(f"connecting to {host}:{port} timed out") from None
    assert link.transport is not None
    sock = link.transport.get_extra_info("socket")
    if sock is not None and keepalive:
        apply_keepalive(sock, keepalive)
    return link


# -- client ---------------------------------------------------------------------------


class ClientJob:
    """A submitted job: ``await job`` gives its result (``None`` for a background job).

    ``async for update in job.updates()`` streams WORK_DATA, WORK_WARNING and
    WORK_STATUS as they arrive.  Awaiting raises JobFailed, JobException,
    JobTimeout (after ``result_timeout``) or ConnectionLost.
    """

    def __init__(self, job: Job[int], timeout: float | None) -> None:
        self._job = job
        self._timeout = timeout
        self._changed = asyncio.Event()
        job.on_change = lambda _: self._changed.set()

    @property
    def handle(self) -> bytes | None:
        """The job handle the server gave."""
        return self._job.handle

    @property
    def state(self) -> str:
        """pending, queued, complete, failed, exception, refused or lost."""
        return self._job.state.value

    @property
    def status(self) -> tuple[int, int]:
        """The last WORK_STATUS (numerator, denominator)."""
        return self._job.numerator, self._job.denominator

    async def _wait_change(self, deadline: float | None) -> None:
        self._changed.clear()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            raise JobTimeout(f"no result for job {self.handle!r} in time") from None

    async def result(self, timeout: float | None = None) -> bytes | None:
        """Wait for the job to end; ``timeout`` overrides the client's ``result_timeout``."""
        t = timeout if timeout is not None else self._timeout
        deadline = None if t is None else time.monotonic() + t
        while not self._job.done:
            await self._wait_change(deadline)
        return job_outcome(self._job)  # type: ignore[arg-type]

    def __await__(self) -> Generator[Any, None, bytes | None]:
        return self.result().__await__()

    async def updates(self, timeout: float | None = None
                      ) -> AsyncIterator[WorkData | WorkWarning | WorkStatus]:
        """Yield progress updates as they arrive, until the job ends."""
        deadline = None if timeout is None else time.monotonic() + timeout
        q = self._job.updates
        while True:
            while q:
                yield q.popleft()
            if self._job.done:
                return
            await self._wait_change(deadline)


class Client:
    """Submits jobs to one or more job servers and waits for their results.

    Submissions are spread over the servers in turn; a server that cannot be
    reached is skipped (and retried later), so callers only notice a lost
    server through the jobs that were in flight on it (ConnectionLost).
    """

    def __init__(self, servers: ServersArg = None, *, ssl: _ssl.SSLContext | None = None,
                 server_hostname: str | None = None, exceptions: bool = True,
                 connect_timeout: float | None = 5.0, created_timeout: float | None = 30.0,
                 result_timeout: float | None = None, client_id: bytes | str | None = None,
                 keepalive: bool | KeepAlive = False, retry_delay: float = 1.0,
                 max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        self.servers = parse_servers(servers)
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.connect_timeout = connect_timeout
        self.created_timeout = created_timeout
        self.result_timeout = result_timeout
        self.client_id = None if client_id is None else to_bytes(client_id)
        self.keepalive = keepalive
        self.retry_delay = retry_delay
        self._session: ClientSession[int] = ClientSession(exceptions=exceptions,
                                                          max_packet_size=max_packet_size)
        self._writers: dict[int, _Link] = {}
        self._connecting: dict[int, asyncio.Future[None]] = {}
        self._down_until: dict[int, float] = {}
        self._timed_out: set[int] = set()  # servers whose last connect attempt timed out
        self._handles: dict[bytes, int] = {}
        self._next = 0

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection; jobs still in flight end as lost."""
        for link in list(self._writers.values()):
            self._lost(link)
            link.close()

    async def _connect(self, idx: int) -> None:
        link = await _open_link(self.servers[idx], self.ssl, self.server_hostname,
                                self.connect_timeout, self.keepalive)
        data = self._session.connect(idx)
        if self.client_id is not None:
            data += self._session.set_client_id(idx, self.client_id)
        if data:
            link.write(data)
        self._writers[idx] = link
        link.start(lambda data: self._session.receive_data(idx, data))
        link.closed.add_done_callback(lambda done: self._lost(link, done.result()))

    def _lost(self, link: _Link, exc: Exception | None = None) -> None:
        """The connection ``link`` ended (or is being closed): its jobs are lost."""
        idx = next((i for i, other in self._writers.items() if other is link), None)
        if idx is None:  # already handled (close(), then the transport's own end)
            return
        if exc is not None:
            log.warning("connection to %s:%d failed: %s", *self.servers[idx], exc)
        del self._writers[idx]
        link.close()
        self._session.disconnect(idx)
        self._down_until[idx] = time.monotonic() + self.retry_delay

    async def _ensure(self, idx: int) -> bool:
        if idx in self._writers:
            return True
        if self._down_until.get(idx, 0.0) > time.monotonic():
            return False
        pending = self._connecting.get(idx)
        if pending is None:
            pending = self._connecting[idx] = asyncio.ensure_future(self._connect(idx))
        try:
            await asyncio.shield(pending)
        except (OSError, JobTimeout) as exc:
            log.warning("job server %s:%d unavailable: %s", *self.servers[idx], exc)
            self._down_until[idx] = time.monotonic() + self.retry_delay
            if isinstance(exc, JobTimeout):
                self._timed_out.add(idx)
            else:
                self._timed_out.discard(idx)
            return False
        finally:
            self._connecting.pop(idx, None)
        # The reader may already have seen the server close it (a TLS server
        # refusing our certificate after the handshake, say).
        return idx in self._writers

    async def _pick(self, idx: int | None = None) -> int:
        if idx is not None and await self._ensure(idx):
            return idx
        n = len(self.servers)
        for _ in range(n):
            i = self._next % n
            self._next += 1
            if i in self._writers or await self._ensure(i):  # connected: no coroutine
                return i
        if len(self._timed_out) == n:  # every server timed out: that is the connect timeout
            raise JobTimeout("timed out connecting to " +
                             ", ".join(f"{h}:{p}" for h, p in self.servers))
        raise NoServerAvailable(
            "no job server reachable: " + ", ".join(f"{h}:{p}" for h, p in self.servers))

    async def _wait(self, item: Job[int] | Reply[int], timeout: float | None, what: str) -> None:
        # A job is answered by JOB_CREATED (or refused, or lost); waiting for
        # `done` would hold a foreground submit() until the job itself ended.
        def answered() -> bool:
            return item.state is not JobState.PENDING if isinstance(item, Job) else item.done
        if answered():
            return
        # A bare future and a timer, rather than asyncio.Event and wait_for():
        # wait_for() runs the Event's wait() in a Task of its own, a good part
        # of what a submit() cost.  The first change answers (JOB_CREATED, a
        # refusal or the loss of the connection), as the Event's first set did.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def changed(_: object) -> None:
            if answered() and not waiter.done():
                waiter.set_result(None)

        def expired() -> None:
            if not waiter.done():
                waiter.set_exception(JobTimeout(f"no {what} from the job server in time"))

        item.on_change = changed
        timer = None if timeout is None else loop.call_later(timeout, expired)
        try:
            await waiter
        finally:
            item.on_change = None
            if timer is not None:
                timer.cancel()

    async def submit(self, function: bytes | str, data: bytes | str = b"", *,
                     unique: bytes | str | None = None, priority: Priority = Priority.NORMAL,
                     background: bool = False, epoch: int | None = None,
                     reducer: bytes | str | None = None) -> ClientJob:
        """Submit a job and return once the server accepted it (JOB_CREATED).

        ``unique=None`` picks a random unique id; ``epoch`` (Unix seconds) makes a
        background job that runs no earlier; ``reducer`` makes a reduce job.  A
        server that drops the connection before answering is skipped and the next
        one tried.
        """
        request = make_submission(function, data, unique=unique, priority=priority,
                                  background=background, epoch=epoch, reducer=reducer)
        n = len(self.servers)
        for attempt in range(n + 1):
            idx = await self._pick()
            job, out = self._session.submit(idx, request)
            self._writers[idx].write(out)
            # Answered: JOB_CREATED came, or the submission was refused or lost.
            await self._wait(job, self.created_timeout, "JOB_CREATED")
            if job.handle is not None:
                break
            if job.state is not JobState.LOST or attempt == n:
                job_outcome(job)  # type: ignore[arg-type]  # raises: refused or lost
            # Lost before it was accepted: the server may never have seen it, and
            # the next server gets it (the lost one waits out retry_delay).
        assert job.handle is not None
        self._handles[job.handle] = idx
        return ClientJob(job, self.result_timeout)

    async def do(self, function: bytes | str, data: bytes | str = b"", *,
                 unique: bytes | str | None = None, priority: Priority = Priority.NORMAL,
                 timeout: float | None = None) -> bytes:
        """Run a foreground job and return its result (libgearman's ``gearman_client_do``)."""
        job = await self.submit(function, data, unique=unique, priority=priority)
        result = await job.result(timeout)
        assert result is not None
        return result

    async def _ask(self, request: GetStatus | GetStatusUnique | EchoReq,
                   idx: int | None = None) -> object:
        idx = await self._pick(idx)
        reply, out = self._session.ask(idx, request)
        self._writers[idx].write(out)
        await self._wait(reply, self.created_timeout, "reply")
        if reply.lost:
            raise ConnectionLost("connection lost before the server answered")
        if isinstance(reply.answer, Error):
            raise ServerError(reply.answer.code, reply.answer.text)
        return reply.answer

    async def get_status(self, handle: bytes | str) -> StatusRes:
        """GET_STATUS, asked of the server that issued ``handle``."""
        h = to_bytes(handle)
        return await self._ask(GetStatus(h), self._handles.get(h))  # type: ignore[return-value]

    async def get_status_unique(self, unique: bytes | str) -> StatusResUnique:
        """GET_STATUS_UNIQUE: the job with this unique id, and how many clients wait on it."""
        return await self._ask(GetStatusUnique(to_bytes(unique)))  # type: ignore[return-value]

    async def echo(self, data: bytes | str = b"") -> bytes:
        """ECHO_REQ: the server sends ``data`` back (a liveness check)."""
        answer = await self._ask(EchoReq(to_bytes(data)))
        return answer.data  # type: ignore[attr-defined, no-any-return]


# -- worker ---------------------------------------------------------------------------


class WorkerJob:
    """The job a handler runs: its data, and the means to report on it.

    The reporting methods are plain functions, safe to call from a sync handler
    running in a thread as well as from an async handler.
    """

    def __init__(self, worker: Worker, key: int, assign: JobAssign) -> None:
        self._worker = worker
        self._key = key
        self.handle = assign.handle
        self.function = assign.function
        self.unique = assign.unique
        self.reducer = assign.reducer
        self.data = assign.data
        self.failed = False

    def _report(self, event: WorkUpdate) -> None:
        self._worker._send_threadsafe(self._key, event)

    def send_data(self, data: bytes | str) -> None:
        """WORK_DATA: a piece of output before the result."""
        self._report(WorkData(self.handle, to_bytes(data)))

    def send_warning(self, data: bytes | str) -> None:
        """WORK_WARNING: a warning for the clients."""
        self._report(WorkWarning(self.handle, to_bytes(data)))

    def send_status(self, numerator: int, denominator: int) -> None:
        """WORK_STATUS: progress as numerator / denominator."""
        self._report(WorkStatus(self.handle, numerator, denominator))

    def fail(self) -> None:
        """End the job with WORK_FAIL; the handler's return value is then ignored."""
        if not self.failed:
            self.failed = True
            self._report(WorkFail(self.handle))


Handler = Callable[[WorkerJob], "bytes | str | Awaitable[bytes | str | None] | None"]


_AsyncHandler = Callable[[WorkerJob], Awaitable["bytes | str | None"]]


class Worker:
    """Runs registered functions for jobs from one or more job servers.

    Handlers may be sync (run in a thread) or async.  At most ``max_jobs`` run
    at once: the worker never grabs beyond its free slots.  ``stop()`` drains:
    no more grabs, the jobs in hand finish, then ``work()`` returns.
    """

    def __init__(self, servers: ServersArg = None, *, ssl: _ssl.SSLContext | None = None,
                 server_hostname: str | None = None, client_id: bytes | str | None = None,
                 max_jobs: int = 1, reconnect_delay: float = 0.5,
                 max_reconnect_delay: float = 30.0, keepalive: bool | KeepAlive = False,
                 connect_timeout: float | None = 5.0,
                 max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        self.servers = parse_servers(servers)
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.client_id = None if client_id is None else to_bytes(client_id)
        self.max_jobs = max_jobs
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.max_packet_size = max_packet_size
        self.handlers: dict[bytes, Handler] = {}
        self.timeouts: dict[bytes, int | None] = {}
        self._session: WorkerSession[int] | None = None
        self._writers: dict[int, _Link] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = 0
        self.jobs_done = 0

    def register(self, function: bytes | str, handler: Handler,
                 timeout_ms: int | None = None) -> None:
        """Serve ``function`` with ``handler``; ``timeout_ms`` sends CAN_DO_TIMEOUT."""
        name = to_bytes(function)
        self.handlers[name] = handler
        self.timeouts[name] = timeout_ms

    def task(self, function: bytes | str, timeout_ms: int | None = None
             ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""
        def deco(handler: Handler) -> Handler:
            self.register(function, handler, timeout_ms)
            return handler
        return deco

    def stop(self, graceful: bool = True) -> None:
        """Stop grabbing; ``work()`` returns once the jobs in hand are done.

        With ``graceful=False`` it returns at once and the server requeues the
        jobs in hand.  Safe to call from a signal handler or another thread.
        """
        loop, stopping = self._loop, self._stopping
        if loop is None or stopping is None:
            return

        def _stop() -> None:
            if self._session is not None:
                self._session.drain()
            if not graceful or self._session is None or self._session.idle:
                stopping.set()
        if threading.get_ident() == self._thread:
            _stop()
        else:
            loop.call_soon_threadsafe(_stop)

    async def work(self) -> None:
        """Serve jobs until :meth:`stop`."""
        if not self.handlers:
            raise ValueError("register at least one function before work()")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._stopping = asyncio.Event()
        self._session = WorkerSession(dict(self.timeouts), max_jobs=self.max_jobs,
                                      client_id=self.client_id,
                                      max_packet_size=self.max_packet_size)
        conns = [asyncio.ensure_future(self._serve(i)) for i in range(len(self.servers))]
        try:
            await self._stopping.wait()
        finally:
            for t in conns:
                t.cancel()
            for w in self._writers.values():
                w.close()
            await asyncio.gather(*conns, return_exceptions=True)
            for t in list(self._tasks):
                t.cancel()
            self._writers.clear()

    def _apply(self, step: WorkerStep[int]) -> None:
        for key, data in step.writes.items():
            writer = self._writers.get(key)
            if writer is not None and data:
                writer.write(data)
        for key, err in step.errors:
            log.warning("job server %s:%d: %s %s", *self.servers[key],
                        err.code.decode(errors="replace"), err.text.decode(errors="replace"))
        for key, assign in step.jobs:
            assert self._loop is not None
            # loop.create_task, not ensure_future: one per job, and the argument
            # is known to be a coroutine.
            task = self._loop.create_task(self._run(key, assign))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _send_threadsafe(self, key: int, event: WorkUpdate) -> None:
        loop = self._loop
        assert loop is not None
        if threading.get_ident() == self._thread:
            self._send(key, event)
        else:
            loop.call_soon_threadsafe(self._send, key, event)

    def _send(self, key: int, event: WorkUpdate) -> None:
        session = self._session
        if session is None:
            return
        # A report for a job whose connection closed writes nothing; its final
        # report frees the slot it kept (disconnect(keep_slots=True)).
        try:
            step = session.send(key, event)
        except LocalProtocolError as exc:
            # A report the protocol cannot carry (a negative WORK_STATUS number,
            # say): the handler's to lose, not the worker's.
            log.warning("cannot report on job %r: %s", event.handle, exc)
            return
        self._apply(step)
        if type(event) in (WorkComplete, WorkFail, WorkException):
            self.jobs_done += 1
            if session.draining and session.idle and self._stopping is not None:
                self._stopping.set()

    async def _run(self, key: int, assign: JobAssign) -> None:
        job = WorkerJob(self, key, assign)
        handler = self.handlers.get(assign.function)
        result: Any
        try:
            if handler is None:
                raise LookupError(f"no handler for {assign.function!r}")
            if is_async_handler(handler):
                result = await cast(_AsyncHandler, handler)(job)
            else:
                result = await asyncio.to_thread(handler, job)
                if inspect.isawaitable(result):
                    result = await result
            data = b"" if result is None else to_bytes(result)  # a bad type is the job's error
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the handler's failure is the job's, not the worker's
            log.info("job %r raised %r", assign.handle, exc)
            if not job.failed:
                self._send(key, WorkException(assign.handle, str(exc).encode("utf-8")))
            return
        if not job.failed:
            self._send(key, WorkComplete(assign.handle, data))

    def _received(self, key: int, data: bytes) -> None:
        assert self._session is not None
        self._apply(self._session.receive_data(key, data))

    async def _serve(self, key: int) -> None:
        delay = self.reconnect_delay
        assert self._session is not None
        while True:
            try:
                link = await _open_link(self.servers[key], self.ssl, self.server_hostname,
                                        self.connect_timeout, self.keepalive)
            except (OSError, JobTimeout) as exc:
                log.warning("job server %s:%d unavailable (%s); retrying in %.1fs",
                            *self.servers[key], exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_reconnect_delay)
                continue
            delay = self.reconnect_delay
            self._writers[key] = link
            session = self._session
            try:
                self._apply(session.connect(key))
                # Each read is handled as it arrives (see _Link), not by this task.
                link.start(functools.partial(self._received, key))
                failure = await link.closed
                if failure is not None:
                    log.warning("connection to %s:%d failed: %s", *self.servers[key], failure)
            finally:
                self._writers.pop(key, None)
                session.disconnect(key, keep_slots=True)
                link.close()
            await asyncio.sleep(delay)


# -- admin ----------------------------------------------------------------------------


class AdminClient:
    """The admin text protocol: what ``gearadmin`` asks, with typed answers."""

    def __init__(self, server: str | Address | None = None, *,
                 ssl: _ssl.SSLContext | None = None, server_hostname: str | None = None,
                 timeout: float | None = 10.0) -> None:
        self.address = parse_servers(server)[0]
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.timeout = timeout
        self._conn = admin.AdminClientConnection()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def command(self, request: admin.AdminRequest) -> admin.AdminResult:
        """Send one admin command and return its parsed reply."""
        async with self._lock:
            if self._writer is None:
                try:
                    self._reader, self._writer = await _open(self.address, self.ssl,
                                                             self.server_hostname, self.timeout,
                                                             False)
                except OSError as exc:
                    host, port = self.address
                    raise NoServerAvailable(f"cannot connect to {host}:{port}: {exc}") from exc
                self._conn = admin.AdminClientConnection()
            assert self._reader is not None
            try:
                self._writer.write(self._conn.send(request))
                return await asyncio.wait_for(self._next(self._reader), self.timeout)
            except BaseException as exc:
                # Replies carry no tag: after a timeout or an error the next reply
                # could answer the wrong command, so start afresh.
                await self.close()
                if isinstance(exc, asyncio.TimeoutError):
                    raise JobTimeout("admin command timed out") from None
                if isinstance(exc, OSError):
                    raise ConnectionLost(f"admin connection lost: {exc}") from exc
                raise

    async def _next(self, reader: asyncio.StreamReader) -> admin.AdminResult:
        while True:
            result = self._conn.next_event()
            if not isinstance(result, NeedData):
                return result
            data = await reader.read(_READ)
            self._conn.receive_data(data)
            if not data:
                raise ConnectionLost("job server closed the admin connection")

    async def _ok(self, request: admin.AdminRequest) -> admin.AdminOk:
        result = await self.command(request)
        if isinstance(result, admin.AdminError):
            raise result
        return result  # type: ignore[return-value]

    async def _rows(self, request: admin.AdminRequest) -> Any:
        result = await self.command(request)
        if isinstance(result, admin.AdminError):
            raise result
        return result

    async def status(self) -> list[admin.StatusRow]:
        """``status``."""
        return await self._rows(admin.Status())  # type: ignore[no-any-return]

    async def priority_status(self) -> list[admin.PriorityStatusRow]:
        """``prioritystatus``."""
        return await self._rows(admin.PriorityStatus())  # type: ignore[no-any-return]

    async def workers(self) -> list[admin.WorkerRow]:
        """``workers``."""
        return await self._rows(admin.Workers())  # type: ignore[no-any-return]

    async def show_jobs(self) -> list[admin.JobRow]:
        """``show jobs``."""
        return await self._rows(admin.ShowJobs())  # type: ignore[no-any-return]

    async def show_unique_jobs(self) -> list[bytes]:
        """``show unique jobs``."""
        return await self._rows(admin.ShowUniqueJobs())  # type: ignore[no-any-return]

    async def cancel_job(self, handle: bytes | str) -> None:
        """``cancel job HANDLE``; raises AdminError (UNKNOWN_JOB) if there is none."""
        await self._ok(admin.CancelJob(to_bytes(handle)))

    async def create_function(self, function: bytes | str) -> None:
        """``create function NAME``."""
        await self._ok(admin.CreateFunction(to_bytes(function)))

    async def drop_function(self, function: bytes | str) -> None:
        """``drop function NAME``."""
        await self._ok(admin.DropFunction(to_bytes(function)))

    async def maxqueue(self, function: bytes | str, *limits: int) -> None:
        """``maxqueue FUNC [N | HIGH NORMAL LOW]``: no number resets to unlimited."""
        await self._ok(admin.MaxQueue(to_bytes(function), _limits(limits)))

    async def getpid(self) -> int:
        """``getpid``."""
        return int((await self._ok(admin.GetPid())).value or b"0")

    async def version(self) -> str:
        """``version``."""
        return ((await self._ok(admin.Version())).value or b"").decode()

    async def verbose(self) -> str:
        """``verbose``: the server's log level name."""
        return ((await self._ok(admin.Verbose())).value or b"").decode()

    async def shutdown(self, graceful: bool = False) -> None:
        """``shutdown [graceful]`` (servers that allow it; gearmand ≥ 1.1.15 does not)."""
        await self._ok(admin.Shutdown(graceful))


def _limits(limits: tuple[int, ...]) -> tuple[int, int, int] | None:
    if not limits:
        return None
    if len(limits) == 1:
        return (limits[0],) * 3
    if len(limits) == 3:
        return (limits[0], limits[1], limits[2])
    raise ValueError("maxqueue takes no limit, one limit, or three (high, normal, low)")


# -- server ---------------------------------------------------------------------------

_server_log = logging.getLogger("gearman_proto.server")
"""Connections, protocol errors, refusals, replays, signals and stops (docs/server.md)."""


# accept() errors that say "out of resources": retried after a pause, not at once.
_EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
_ACCEPT_BATCH = 64
"""Connections accepted per readiness of a listening socket (then the others' turn)."""


def _listen(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for ``host`` (every address it resolves to), all on one port."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, str(address[0])) in seen:
                continue
            seen.add((family, str(address[0])))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address "
                                         f"{address!r}: {exc.strerror}") from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _peer_name(transport: asyncio.BaseTransport) -> tuple[bytes, str]:
    """The peer's IP (as ``workers`` shows it) and ``ip:port`` for the log."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple):
        return str(peer[0]).encode(), f"{peer[0]}:{peer[1]}"
    return b"-", "-"


class _Peer(asyncio.Protocol):
    """One accepted connection: bytes go to the hub, and what the hub decides is done."""

    __slots__ = ("cid", "server", "transport")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.cid = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance(transport, asyncio.Transport): uvloop's transports
        # implement the interface without subclassing it.
        transport = cast(asyncio.Transport, transport)
        server = self.server
        server.batch_started()  # the idle clock starts now; the flush logs and re-arms
        hub = server.hub
        if not hub.may_open():
            transport.abort()
            return
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and server.keepalive:
            apply_keepalive(sock, server.keepalive)
        address, name = _peer_name(transport)
        self.cid = hub.open(address, name)
        server.peers[self.cid] = self
        # Past this many unsent bytes pause_writing() tells the hub, which
        # stops reading from this peer (and from the workers feeding it).
        transport.set_write_buffer_limits(high=server.output_limit)

    def data_received(self, data: bytes) -> None:
        self.server.batch_started()
        self.server.hub.receive(self.cid, data)

    def eof_received(self) -> bool | None:
        server = self.server
        server.batch_started()
        server.hub.receive(self.cid, b"")
        if self.transport is None or self.transport.get_extra_info("sslcontext") is not None:
            return None  # TLS has no half-close: asyncio closes it now
        # Keep the transport: the hub closes it in the flush, after what is
        # due to the peer (the ERROR for a message its EOF cut short).
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self.transport is None:
            return
        server.peers.pop(self.cid, None)
        server.batch_started()
        server.hub.closed(self.cid)

    def pause_writing(self) -> None:
        server = self.server
        server.batch_started()
        for cid in server.hub.output_blocked(self.cid, True):
            peer = server.peers.get(cid)
            if peer is not None and peer.transport is not None \
                    and not peer.transport.is_closing():
                peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.server.batch_started()
        self.server.hub.output_blocked(self.cid, False)


class Server:
    """A Gearman job server on asyncio, driving the core's JobServer through a ServerHub.

    Every read in one turn of the event loop is processed, then one flush
    commits durable jobs once (group commit), writes each connection's output
    in one call and carries out what the hub decided (close, pause, resume,
    the next timer).  A connection with more than ``output_limit`` bytes unsent
    is not read from until they drain, nor one waiting for ``max_client_jobs``
    foreground jobs until some end, nor a worker whose job's client is over
    its limit.  ``idle_timeout`` (seconds, 0 = never) closes connections
    silent for that long without a reason (see :class:`~gearman_proto.hub.ServerHub`);
    ``keepalive`` is ``True`` or a :class:`KeepAlive` with timings;
    ``graceful_timeout`` bounds a graceful stop.  The admin ``shutdown``
    command (with ``allow_shutdown=True``) stops the server like :meth:`close`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 4730, *,
                 broker: JobServer | None = None, ssl: _ssl.SSLContext | None = None,
                 max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
                 max_connections: int = 0, output_limit: int = 4 * 1024 * 1024,
                 keepalive: bool | KeepAlive = False, backlog: int = 1024,
                 idle_timeout: float = 0.0, max_client_jobs: int = DEFAULT_MAX_CLIENT_JOBS,
                 graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
                 **broker_options: Any) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl
        self.backlog = backlog
        if broker is None:
            broker_options.setdefault("pid", os.getpid())
            broker = JobServer(now=time.time(), **broker_options)
        self.hub = ServerHub(broker, max_packet_size=max_packet_size, idle_timeout=idle_timeout,
                             max_client_jobs=max_client_jobs, max_connections=max_connections,
                             graceful_timeout=graceful_timeout,
                             log_level=_server_log.getEffectiveLevel())
        self.max_connections = max_connections
        self.output_limit = output_limit
        self.keepalive = keepalive
        self.peers: dict[int, _Peer] = {}
        self._sockets: list[socket.socket] = []
        self._adopting: set[asyncio.Task[None]] = set()
        self._listening = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed = asyncio.Event()

    @property
    def broker(self) -> JobServer:
        """The core's job server (its state is what the admin commands report)."""
        return self.hub.broker

    async def start(self) -> None:
        """Bind and start accepting; ``self.port`` is the real port (useful with port 0)."""
        self._loop = loop = asyncio.get_running_loop()
        self.hub.log_level = _server_log.getEffectiveLevel()
        # Our own accept loop, not loop.create_server(): at the file-descriptor
        # limit asyncio's retries every pending connection at once, logging a
        # traceback for each (a spin); here the hub says how long to pause.
        self._sockets = _listen(self.host, self.port, self.backlog)
        for sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)
        self._listening = True
        self.port = self._sockets[0].getsockname()[1]
        _server_log.info("gearman-proto job server listening on %s:%d", self.host, self.port)
        self.batch_started()

    def _accept(self, sock: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _EXHAUSTED:
                    continue  # that peer gave up already (ECONNABORTED, ...)
                loop.remove_reader(sock.fileno())
                delay = self.hub.accept_failed(str(exc))
                self.batch_started()  # the flush logs it (once per episode)
                loop.call_later(delay, self._accept_again, sock)
                return
            conn.setblocking(False)
            task = loop.create_task(self._adopt(conn))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    def _accept_again(self, sock: socket.socket) -> None:
        if self._listening and self._loop is not None:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    async def _adopt(self, conn: socket.socket) -> None:
        """Give an accepted socket its transport (after the TLS handshake, with ``ssl``)."""
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(lambda: _Peer(self), conn, ssl=self.ssl)
        except (OSError, asyncio.TimeoutError) as exc:  # ssl.SSLError is an OSError
            _server_log.info("TLS handshake failed: %r", exc)
            conn.close()

    def _stop_listening(self) -> None:
        if not self._listening:
            return
        self._listening = False
        for sock in self._sockets:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()

    def batch_started(self) -> None:
        """Something happened: the hub gets the time now and a flush at the end of the turn."""
        if not self._flush_pending:
            self._flush_pending = True
            # The clock is read once per batch: epoch jobs and timeouts need it.
            self.hub.advance(time.time())
            if self._loop is not None:
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        hub = self.hub
        out = hub.flush()
        peers = self.peers
        # Pause and resume first: a write below may pause again (pause_writing).
        for cid in out.pause:
            peer = peers.get(cid)
            if peer is not None and peer.transport is not None \
                    and not peer.transport.is_closing():
                peer.transport.pause_reading()
        for cid in out.resume:
            peer = peers.get(cid)
            if peer is not None and peer.transport is not None \
                    and not peer.transport.is_closing():
                peer.transport.resume_reading()
        for cid, data in out.writes.items():
            peer = peers.get(cid)
            if peer is not None and peer.transport is not None:
                peer.transport.write(data)
        for cid in out.shut:
            peer = peers.get(cid)
            if peer is not None and peer.transport is not None:
                if peer.transport.can_write_eof():
                    peer.transport.write_eof()
                else:
                    peer.transport.close()
        for cid in out.close:
            peer = peers.get(cid)
            if peer is not None and peer.transport is not None:
                peer.transport.close()
        for level, message, args in out.notes:
            _server_log.log(level, message, *args)
        if out.rearm:
            self._arm(out.deadline)
        if out.more:
            self.batch_started()  # after the other connections' reads of this turn
        if hub.stopping:
            self._stop_listening()
        if hub.stopped:
            self._closed.set()

    def _arm(self, deadline: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_later(max(0.0, deadline - time.time()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.hub.tick(time.time())
        self._flush()

    def close(self, graceful: bool = False, why: str = "stop requested") -> None:
        """Stop.  Graceful: hand out no more jobs, take no submissions, let the running
        jobs finish (bounded by ``graceful_timeout``), then stop; see
        :meth:`ServerHub.stop <gearman_proto.hub.ServerHub.stop>`."""
        if self._loop is None:
            self.hub.stop(graceful, why)
            self._closed.set()
            return
        self.batch_started()
        self.hub.stop(graceful, why)
        self._stop_listening()  # now, not at the flush

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` (or SIGTERM/SIGINT, SIGUSR1 for graceful, if installed)."""
        if not self._sockets:
            await self.start()
        await self._closed.wait()
        self._stop_listening()
        for peer in list(self.peers.values()):
            if peer.transport is not None:
                peer.transport.close()  # after what is buffered for it
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.broker.commit()
        for level, message, args in self.hub.flush().notes:
            _server_log.log(level, message, *args)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop at once; SIGUSR1 stops gracefully (as gearmand)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.close, False, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.close, False, "SIGINT")
        loop.add_signal_handler(signal.SIGUSR1, self.close, True, "SIGUSR1")

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        with contextlib.suppress(Exception):
            await self.serve_forever()


async def serve(host: str = "127.0.0.1", port: int = 4730, *, signals: bool = True,
                ready: Callable[[Server], None] | None = None, **options: Any) -> None:
    """Run a job server until stopped (SIGTERM/SIGINT; SIGUSR1 graceful)."""
    server = Server(host, port, **options)
    await server.start()
    if signals:
        server.install_signal_handlers()
    if ready is not None:
        ready(server)
    await server.serve_forever()
