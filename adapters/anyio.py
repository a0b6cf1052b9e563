"""The anyio adapter: Client, Worker, AdminClient and a job server, on asyncio or trio.

The API is that of :mod:`gearman_proto.adapters.asyncio`, built on anyio's
streams, task groups and cancel scopes, so it runs unchanged on either anyio
backend (:mod:`gearman_proto.adapters.trio` is this module, for trio users).
Every decision comes from the core: :class:`~gearman_proto.session.ClientSession`
and :class:`~gearman_proto.session.WorkerSession` for the client and worker,
:class:`~gearman_proto.hub.ServerHub` for the server.  This module reads,
feeds bytes in, wakes waiters, and writes what the core returns.

Structured concurrency shapes two choices.  A :class:`Client` starts no
background task, since none may outlive its caller's task group: whichever
caller is waiting for something reads the connection for everybody and wakes
the others.  :meth:`Worker.work` and :meth:`Server.serve_forever` own task
groups, and each of their connections has a writer task fed through a buffer,
so handing out the core's bytes never waits on a socket and one slow peer
never holds up another.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import signal
import ssl as _ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import (
    ByteStream,
    SocketAttribute,
    SocketListener,
    SocketStream,
    TaskGroup,
    TaskStatus,
)
from anyio.streams.tls import TLSStream

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

from . import asyncio as _asyncio
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

# A WorkerJob only needs its worker's _send_threadsafe(): the asyncio adapter's serves.
WorkerJob = _asyncio.WorkerJob
Handler = _asyncio.Handler
_AsyncHandler = _asyncio._AsyncHandler

__all__ = ["Client", "ClientJob", "Worker", "WorkerJob", "AdminClient", "Server", "serve",
           "KeepAlive"]

log = logging.getLogger("gearman_proto")
_READ = 256 * 1024
_BROKEN = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)
"""What a dead or closed connection raises (EOF is ``b""``, see :func:`_recv`)."""
_LINGER = 5.0
"""How long a stopping worker or server may spend writing out the bytes already due."""
_HANDSHAKE_TIMEOUT = 30.0


async def _open(addr: Address, ssl: _ssl.SSLContext | None, server_hostname: str | None,
                timeout: float | None, keepalive: bool | KeepAlive) -> ByteStream:
    """Connect to a job server (over TLS if ``ssl``); JobTimeout after ``timeout`` seconds."""
    host, port = addr
    try:
        with anyio.fail_after(timeout):
            if ssl is None:
                stream: ByteStream = await anyio.connect_tcp(host, port)
            else:
                # Not "standard compatible": job servers close without TLS
                # close_notify, and that is an ordinary end of stream here.
                stream = await anyio.connect_tcp(host, port, ssl_context=ssl,
                                                 tls_hostname=server_hostname or host,
                                                 tls_standard_compatible=False)
    except TimeoutError:
        raise JobTimeout(f"connecting to {host}:{port} timed out") from None
    apply_keepalive(stream.extra(SocketAttribute.raw_socket), keepalive)
    return stream


async def _recv(stream: ByteStream) -> bytes:
    """The next bytes from ``stream``, or ``b""`` once the peer closed."""
    try:
        return await stream.receive(_READ)
    except anyio.EndOfStream:
        return b""


def _why(exc: object) -> str:
    """A reason to log, also for anyio's message-less errors (whose cause says more)."""
    return str(exc) or repr(getattr(exc, "__cause__", None) or exc)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else anyio.current_time() + timeout


class _Link:
    """A connection whose output is written by a task of its own.

    :meth:`write` never waits, so the core's bytes can be handed out from
    anywhere (a flush for every connection at once, a worker's report).
    :meth:`run` reads until the peer closes or :meth:`close` was called and
    the output is written.
    """

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.pending = 0
        """Bytes written here and not yet sent."""
        self.error: BaseException | None = None
        self._chunks: list[bytes] = []
        self._closing = False
        self._more = anyio.Event()
        self._sent = anyio.Event()

    def write(self, data: bytes) -> None:
        """Queue ``data`` to be sent (dropped once the link is closing)."""
        if data and not self._closing:
            self._chunks.append(data)
            self.pending += len(data)
            self._more.set()

    def close(self) -> None:
        """Send what is queued, then close."""
        self._closing = True
        self._more.set()

    async def flushed(self, limit: int = 0) -> None:
        """Wait until no more than ``limit`` bytes are left to send."""
        while self.pending > limit:
            await self._sent.wait()

    async def run(self, received: Callable[[bytes], Awaitable[None]],
                  limit: int | None = None) -> None:
        """Pass each read to ``received`` (``b""`` at the end), not reading while more
        than ``limit`` bytes wait to be sent; the stream is closed on return."""
        async with self.stream, anyio.create_task_group() as tg:
            tg.start_soon(self._write, tg.cancel_scope)
            try:
                while not self._closing:
                    if limit is not None and self.pending > limit:
                        await self.flushed(limit)
                    data = await _recv(self.stream)
                    await received(data)
                    if not data:
                        return  # the writer ends once the output is written
            except (*_BROKEN, RemoteProtocolError) as exc:
                self.error = exc
                tg.cancel_scope.cancel()

    async def _write(self, scope: anyio.CancelScope) -> None:
        try:
            while True:
                if self._chunks:
                    data = b"".join(self._chunks)
                    self._chunks.clear()
                    await self.stream.send(data)
                    self.pending -= len(data)
                    self._sent.set()
                    self._sent = anyio.Event()
                elif self._closing:
                    break
                else:
                    await self._more.wait()
                    self._more = anyio.Event()
        except _BROKEN as exc:
            self.error = exc
        finally:
            # Nothing more will be sent: release whoever waits for it, and the reader.
            self._closing = True
            self._chunks.clear()
            self.pending = 0
            self._sent.set()
            scope.cancel()


# -- client ---------------------------------------------------------------------------


class _Conn:
    """A client's connection: the bytes to send, in the session's order, and who reads it."""

    __slots__ = ("_changed", "out", "reading", "send_lock", "stream")

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.out: list[bytes] = []
        self.reading = False
        self.send_lock = anyio.Lock()
        self._changed = anyio.Event()

    def wake(self) -> None:
        """Tell every waiter that something came in (or that the reader left)."""
        self._changed.set()
        self._changed = anyio.Event()


class ClientJob:
    """A submitted job: ``await job`` gives its result (``None`` for a background job).

    ``async for update in job.updates()`` streams WORK_DATA, WORK_WARNING and
    WORK_STATUS as they arrive.  Awaiting raises JobFailed, JobException,
    JobTimeout (after ``result_timeout``) or ConnectionLost.
    """

    def __init__(self, client: Client, job: Job[int], timeout: float | None) -> None:
        self._client = client
        self._job = job
        self._timeout = timeout

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

    async def result(self, timeout: float | None = None) -> bytes | None:
        """Wait for the job to end; ``timeout`` overrides the client's ``result_timeout``."""
        job = self._job
        await self._client._wait(job, _deadline(timeout if timeout is not None
                                                else self._timeout),
                                 f"result for job {self.handle!r}", lambda: job.done)
        return job_outcome(job)  # type: ignore[arg-type]

    def __await__(self) -> Generator[Any, None, bytes | None]:
        return self.result().__await__()

    async def updates(self, timeout: float | None = None
                      ) -> AsyncIterator[WorkData | WorkWarning | WorkStatus]:
        """Yield progress updates as they arrive, until the job ends."""
        deadline = _deadline(timeout)
        job = self._job
        q = job.updates
        while True:
            while q:
                yield q.popleft()
            if job.done:
                return
            await self._client._wait(job, deadline, "update", lambda: bool(q) or job.done)


class Client:
    """Submits jobs to one or more job servers and waits for their results.

    Submissions are spread over the servers in turn; a server that cannot be
    reached, or that closed the connection before accepting a submission, is
    skipped (and retried later), so callers only notice a lost server through
    the jobs that were in flight on it (ConnectionLost).
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
        self._conns: dict[int, _Conn] = {}
        self._connecting = {idx: anyio.Lock() for idx in range(len(self.servers))}
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
        for idx, conn in list(self._conns.items()):
            await self._drop(idx, conn)

    async def _drop(self, idx: int, conn: _Conn, reason: object = None) -> None:
        """Forget a connection: its jobs and questions are lost; with a ``reason``,
        the server is left alone for ``retry_delay``."""
        if self._conns.get(idx) is not conn:
            return
        del self._conns[idx]
        if reason is not None:
            log.warning("connection to %s:%d lost: %s", *self.servers[idx], _why(reason))
            self._down_until[idx] = time.monotonic() + self.retry_delay
        self._session.disconnect(idx)
        conn.wake()
        await anyio.aclose_forcefully(conn.stream)

    async def _ensure(self, idx: int) -> bool:
        if idx in self._conns:
            return True
        async with self._connecting[idx]:  # one connection attempt at a time per server
            if idx in self._conns:
                return True
            if self._down_until.get(idx, 0.0) > time.monotonic():
                return False
            try:
                stream = await _open(self.servers[idx], self.ssl, self.server_hostname,
                                     self.connect_timeout, self.keepalive)
            except (*_BROKEN, JobTimeout) as exc:
                log.warning("job server %s:%d unavailable: %s", *self.servers[idx], exc)
                self._down_until[idx] = time.monotonic() + self.retry_delay
                if isinstance(exc, JobTimeout):
                    self._timed_out.add(idx)
                else:
                    self._timed_out.discard(idx)
                return False
            conn = self._conns[idx] = _Conn(stream)
            conn.out.append(self._session.connect(idx))
            if self.client_id is not None:
                conn.out.append(self._session.set_client_id(idx, self.client_id))
        await self._flush(idx, conn)
        return idx in self._conns

    async def _pick(self, idx: int | None = None) -> int:
        if idx is not None and await self._ensure(idx):
            return idx
        n = len(self.servers)
        for _ in range(n):
            i = self._next % n
            self._next += 1
            if await self._ensure(i):
                return i
        if len(self._timed_out) == n:  # every server timed out: that is the connect timeout
            raise JobTimeout("timed out connecting to " +
                             ", ".join(f"{h}:{p}" for h, p in self.servers))
        raise NoServerAvailable(
            "no job server reachable: " + ", ".join(f"{h}:{p}" for h, p in self.servers))

    async def _flush(self, idx: int, conn: _Conn) -> None:
        """Send what is queued on ``conn``, in order; a failed send loses the connection."""
        try:
            # Shielded: once the session made bytes the server must get them
            # whole, or the stream is cut mid-packet and JOB_CREATED, matched
            # in order, would go to the wrong job.
            with anyio.CancelScope(shield=True):
                async with conn.send_lock:
                    while conn.out:
                        data = b"".join(conn.out)
                        conn.out.clear()
                        if data:
                            await conn.stream.send(data)
        except _BROKEN as exc:
            await self._drop(idx, conn, exc)

    async def _read(self, idx: int, conn: _Conn) -> None:
        """Read ``conn`` once on behalf of everybody waiting on it, then wake them."""
        conn.reading = True
        try:
            data = await _recv(conn.stream)
            if data:
                self._session.receive_data(idx, data)
            else:
                await self._drop(idx, conn, "closed by the server")
        except (*_BROKEN, RemoteProtocolError) as exc:
            await self._drop(idx, conn, exc)
        finally:
            conn.reading = False
            conn.wake()

    async def _wait(self, item: Job[int] | Reply[int], deadline: float | None, what: str,
                    ready: Callable[[], bool]) -> None:
        """Wait until ``ready()``: read the item's connection, or let another waiter read it."""
        with anyio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
            while not ready():
                conn = self._conns.get(item.server)
                if conn is None:
                    return  # gone: the session marked the item lost
                if conn.reading:
                    await conn._changed.wait()
                else:
                    await self._read(item.server, conn)
        if scope.cancelled_caught and not ready():
            raise JobTimeout(f"no {what} from the job server in time")

    async def _put(self, idx: int, data: bytes) -> None:
        conn = self._conns[idx]
        conn.out.append(data)
        await self._flush(idx, conn)

    async def submit(self, function: bytes | str, data: bytes | str = b"", *,
                     unique: bytes | str | None = None, priority: Priority = Priority.NORMAL,
                     background: bool = False, epoch: int | None = None,
                     reducer: bytes | str | None = None) -> ClientJob:
        """Submit a job and return once the server accepted it (JOB_CREATED).

        ``unique=None`` picks a random unique id; ``epoch`` (Unix seconds) makes a
        background job that runs no earlier; ``reducer`` makes a reduce job.
        """
        request = make_submission(function, data, unique=unique, priority=priority,
                                  background=background, epoch=epoch, reducer=reducer)
        for attempt in range(len(self.servers) + 1):
            idx = await self._pick()
            job, out = self._session.submit(idx, request)
            await self._put(idx, out)
            # Answered: JOB_CREATED came, or the submission was refused or lost.
            await self._wait(job, _deadline(self.created_timeout), "JOB_CREATED",
                             lambda: job.state is not JobState.PENDING)  # noqa: B023 (used at once)
            if job.handle is not None:
                break
            if job.state is not JobState.LOST or attempt == len(self.servers):
                job_outcome(job)  # type: ignore[arg-type]  # raises: refused or lost
            # Lost before it was accepted (a connection closed while idle, say):
            # the next server gets it.
        assert job.handle is not None
        self._handles[job.handle] = idx
        return ClientJob(self, job, self.result_timeout)

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
        await self._put(idx, out)
        await self._wait(reply, _deadline(self.created_timeout), "reply", lambda: reply.done)
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


class Worker:
    """Runs registered functions for jobs from one or more job servers.

    Handlers may be sync (run in a thread through ``anyio.to_thread``) or
    async.  At most ``max_jobs`` run at once: the worker never grabs beyond its
    free slots, and a job whose connection dropped keeps its slot until its
    handler returns.  ``stop()`` drains: no more grabs, the jobs in hand
    finish, then ``work()`` returns.
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
        self.jobs_done = 0
        self._session: WorkerSession[int] | None = None
        self._links: dict[int, _Link] = {}
        self._tg: TaskGroup | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._thread = 0
        self._stopping = anyio.Event()
        self._graceful = True

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

    def _send_threadsafe(self, key: int, event: WorkUpdate) -> None:
        self._call(self._send, key, event)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` in the worker's event loop, from that loop or from any thread."""
        token = self._token
        if token is None:
            return  # not working (any more): nothing to report to
        if threading.get_ident() == self._thread:
            fn(*args)
        else:
            try:
                anyio.from_thread.run_sync(fn, *args, token=token)
            except RuntimeError:  # the loop ended meanwhile (RunFinishedError, or closed)
                pass

    def stop(self, graceful: bool = True) -> None:
        """Stop grabbing; ``work()`` returns once the jobs in hand are done.

        With ``graceful=False`` it returns at once and the server requeues the
        jobs in hand.  Safe to call from a signal handler or another thread.
        """
        def _stop() -> None:
            session = self._session
            if session is not None:
                session.drain()
            if not graceful:
                self._graceful = False
            if not graceful or session is None or session.idle:
                self._stopping.set()
        self._call(_stop)

    async def work(self) -> None:
        """Serve jobs until :meth:`stop`."""
        if not self.handlers:
            raise ValueError("register at least one function before work()")
        self._session = WorkerSession(dict(self.timeouts), max_jobs=self.max_jobs,
                                      client_id=self.client_id,
                                      max_packet_size=self.max_packet_size)
        self._stopping = anyio.Event()
        self._graceful = True
        # Threads of our own, so sync handlers never queue behind other users of
        # anyio's default thread limiter.
        self._limiter = anyio.CapacityLimiter(self.max_jobs)
        self._thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for key in range(len(self.servers)):
                    tg.start_soon(self._serve, key)
                await self._stopping.wait()
                if self._graceful:  # the last results are still on their way out
                    with anyio.move_on_after(_LINGER):
                        for link in list(self._links.values()):
                            await link.flushed()
                tg.cancel_scope.cancel()
        finally:
            self._token = self._tg = None
            self._links.clear()

    def _apply(self, step: WorkerStep[int]) -> None:
        for key, data in step.writes.items():
            link = self._links.get(key)
            if link is not None:
                link.write(data)
        for key, err in step.errors:
            log.warning("job server %s:%d: %s %s", *self.servers[key],
                        err.code.decode(errors="replace"), err.text.decode(errors="replace"))
        for key, assign in step.jobs:
            assert self._tg is not None
            self._tg.start_soon(self._run, key, assign)

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
            if session.draining and session.idle:
                self._stopping.set()

    async def _run(self, key: int, assign: JobAssign) -> None:
        job = WorkerJob(self, key, assign)  # type: ignore[arg-type]
        handler = self.handlers.get(assign.function)
        result: Any
        try:
            if handler is None:
                raise LookupError(f"no handler for {assign.function!r}")
            if is_async_handler(handler):
                result = await cast(_AsyncHandler, handler)(job)
            else:
                # Abandoned on a hard stop, as a thread cannot be interrupted.
                result = await anyio.to_thread.run_sync(handler, job, abandon_on_cancel=True,
                                                        limiter=self._limiter)
                if inspect.isawaitable(result):
                    result = await result
            data = b"" if result is None else to_bytes(result)
        except Exception as exc:  # the handler's failure is the job's, not the worker's
            log.info("job %r raised %r", assign.handle, exc)
            if not job.failed:
                self._send(key, WorkException(assign.handle, str(exc).encode("utf-8")))
            return
        if not job.failed:
            self._send(key, WorkComplete(assign.handle, data))

    async def _serve(self, key: int) -> None:
        """Keep a connection to server ``key``, reconnecting with backoff."""
        session = self._session
        assert session is not None
        delay = self.reconnect_delay
        while True:
            try:
                stream = await _open(self.servers[key], self.ssl, self.server_hostname,
                                     self.connect_timeout, self.keepalive)
            except (*_BROKEN, JobTimeout) as exc:
                log.warning("job server %s:%d unavailable (%s); retrying in %.1fs",
                            *self.servers[key], exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, self.max_reconnect_delay)
                continue
            delay = self.reconnect_delay
            link = self._links[key] = _Link(stream)

            async def received(data: bytes, link: _Link = link) -> None:
                if data:
                    self._apply(session.receive_data(key, data))
                else:
                    link.close()
            try:
                self._apply(session.connect(key))
                await link.run(received)
            finally:
                self._links.pop(key, None)
                session.disconnect(key, keep_slots=True)
            if link.error is not None:
                log.warning("connection to %s:%d failed: %s", *self.servers[key],
                            _why(link.error))
            await anyio.sleep(delay)


# -- admin ----------------------------------------------------------------------------


class AdminClient(_asyncio.AdminClient):
    """The admin text protocol: what ``gearadmin`` asks, with typed answers.

    The command methods (status, workers, maxqueue, ...) are the asyncio
    adapter's, which only call :meth:`command`; here it runs on anyio.
    """

    def __init__(self, server: str | Address | None = None, *,
                 ssl: _ssl.SSLContext | None = None, server_hostname: str | None = None,
                 timeout: float | None = 10.0) -> None:
        super().__init__(server, ssl=ssl, server_hostname=server_hostname, timeout=timeout)
        self._stream: ByteStream | None = None
        self._busy = anyio.Lock()

    async def __aenter__(self) -> AdminClient:
        return self

    async def close(self) -> None:
        """Close the connection (the next command opens a new one)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            await anyio.aclose_forcefully(stream)

    async def command(self, request: admin.AdminRequest) -> admin.AdminResult:
        """Send one admin command and return its parsed reply."""
        async with self._busy:
            try:
                with anyio.fail_after(self.timeout):
                    if self._stream is None:
                        try:
                            self._stream = await _open(self.address, self.ssl,
                                                       self.server_hostname, None, False)
                        except _BROKEN as exc:
                            host, port = self.address
                            raise NoServerAvailable(
                                f"cannot connect to {host}:{port}: {_why(exc)}") from exc
                        self._conn = admin.AdminClientConnection()
                    await self._stream.send(self._conn.send(request))
                    while isinstance(result := self._conn.next_event(), NeedData):
                        data = await _recv(self._stream)
                        self._conn.receive_data(data)
                        if not data:
                            raise ConnectionLost("job server closed the admin connection")
                    return result
            except BaseException as exc:
                # Replies carry no tag: after a timeout or an error the next reply
                # could answer the wrong command, so start afresh.
                await self.close()
                if isinstance(exc, TimeoutError):
                    raise JobTimeout("admin command timed out") from None
                if isinstance(exc, _BROKEN):
                    raise ConnectionLost(f"admin connection lost: {_why(exc)}") from exc
                raise


# -- server ---------------------------------------------------------------------------

_server_log = logging.getLogger("gearman_proto.server")
"""Connections, protocol errors, refusals, replays, signals and stops (docs/server.md)."""


class _Peer:
    """One accepted connection: its reader is the connection's task; its writer task is
    started by the first output and ends with the connection.

    :meth:`write` never waits, so the hub's bytes are handed out from the
    flush for every connection at once.  Unsent output past the server's
    ``output_limit`` is reported to the hub, which says when to stop and start
    reading (:meth:`pause`, :meth:`resume`).
    """

    __slots__ = ("_chunks", "_more", "_readable", "_sent", "blocked", "cid", "closing",
                 "pending", "reading", "scope", "server", "shutting", "stream", "writing")

    def __init__(self, server: Server, stream: ByteStream, cid: int) -> None:
        self.server = server
        self.stream = stream
        self.cid = cid
        self.pending = 0
        """Bytes written here and not yet sent."""
        self.blocked = False
        self.reading = True
        self.closing = False
        self.shutting = False
        self.writing = False
        self.scope = anyio.CancelScope()
        self._chunks: list[bytes] = []
        self._more = anyio.Event()
        self._readable = anyio.Event()
        self._sent = anyio.Event()

    def _wake_writer(self) -> None:
        if self.writing:
            self._more.set()
        else:
            self.writing = True
            assert self.server._task_group_running is not None
            self.server._task_group_running.start_soon(self._write)

    def write(self, data: bytes) -> None:
        """Queue ``data`` to be sent (dropped once the connection is closing)."""
        if self.closing or not data:
            return
        self._chunks.append(data)
        self.pending += len(data)
        server = self.server
        if not self.blocked and self.pending > server.output_limit:
            self.blocked = True
            for cid in server.hub.output_blocked(self.cid, True):
                peer = server.peers.get(cid)
                if peer is not None:
                    peer.pause()
        self._wake_writer()

    def close(self) -> None:
        """Send what is queued, then close."""
        self.closing = True
        if self.writing:
            self._more.set()
        else:
            self.scope.cancel()

    def shut(self) -> None:
        """Send what is queued, then shut the write side down and keep reading."""
        self.shutting = True
        self._wake_writer()

    def pause(self) -> None:
        self.reading = False
        self._readable = anyio.Event()

    def resume(self) -> None:
        self.reading = True
        self._readable.set()

    async def drained(self) -> None:
        """Wait until nothing is left to send."""
        while self.pending and self.writing:
            await self._sent.wait()

    async def read(self) -> None:
        """Hand every read to the hub until the peer or the hub ends it."""
        server, hub, cid, stream = self.server, self.server.hub, self.cid, self.stream
        with self.scope:
            try:
                while True:
                    if not self.reading:
                        await self._readable.wait()
                    data = await _recv(stream)
                    server._batch()
                    hub.receive(cid, data)
                    if server._dirty.is_set():
                        # No second read before this one's output is written
                        # here: that is what the output limit looks at.
                        await server._flushed.wait()
                    if not data:
                        return  # what is due was handed over above; the hub closes it
            except _BROKEN:
                self.closing = True
                self._chunks.clear()

    async def _write(self) -> None:
        stream = self.stream
        limit = self.server.output_limit
        try:
            while True:
                if self._chunks:
                    data = b"".join(self._chunks)
                    self._chunks.clear()
                    await stream.send(data)
                    self.pending -= len(data)
                    self._sent.set()
                    self._sent = anyio.Event()
                    if self.blocked and self.pending <= limit // 4:
                        self.blocked = False
                        self.server.hub.output_blocked(self.cid, False)
                        self.server._batch()
                    continue
                if self.shutting:
                    self.shutting = False
                    try:
                        await stream.send_eof()
                    except NotImplementedError:  # TLS has no half-close
                        self.closing = True
                if self.closing:
                    break
                self._more = anyio.Event()
                await self._more.wait()
        except _BROKEN:
            self.closing = True
            self._chunks.clear()
        finally:
            self.pending = 0
            self.writing = False
            self._sent.set()
            if self.closing:
                self.scope.cancel()

    def end(self) -> None:
        """The connection is over: the writer, if any, stops."""
        self.closing = True
        self._chunks.clear()
        self._more.set()


class Server:
    """A Gearman job server on anyio, driving the core's JobServer through one ServerHub.

    Each read goes to the hub at once; a flusher task then commits durable
    jobs once for every read that came in meanwhile (group commit), hands each
    connection its bytes and carries out what the hub decided (close, pause,
    resume, the next timer).  A connection with more than ``output_limit``
    bytes unsent is not read from until they drain, nor one waiting for
    ``max_client_jobs`` foreground jobs until some end, nor a worker whose
    job's client is over its limit.  ``idle_timeout`` (seconds, 0 = never)
    closes connections silent for that long without a reason (see
    :class:`~gearman_proto.hub.ServerHub`); ``keepalive`` is ``True`` or a
    :class:`KeepAlive` with timings; ``graceful_timeout`` bounds a graceful
    stop.  The admin ``shutdown`` command (with ``allow_shutdown=True``) stops
    the server like :meth:`close`.
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
        self._listeners: list[SocketListener] = []
        self._accepting: anyio.CancelScope | None = None
        self._dirty = anyio.Event()  # set: a flush is due
        self._flushed = anyio.Event()  # set by the flush of the batch in progress
        self._rearm = anyio.Event()  # set: the timer's deadline moved
        self._deadline: float | None = None
        self._done = anyio.Event()
        self._task_group: TaskGroup | None = None
        self._task_group_running: TaskGroup | None = None

    @property
    def broker(self) -> JobServer:
        """The core's job server (its state is what the admin commands report)."""
        return self.hub.broker

    async def start(self) -> None:
        """Bind; ``self.port`` is then the real port (useful with port 0)."""
        self.hub.log_level = _server_log.getEffectiveLevel()
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port,
                                                   backlog=self.backlog)
        self._listeners = list(listener.listeners)  # type: ignore[arg-type]
        self._accepting = anyio.CancelScope()
        self.port = listener.extra(SocketAttribute.local_port)
        _server_log.info("gearman-proto job server listening on %s:%d", self.host, self.port)

    def close(self, graceful: bool = False, why: str = "stop requested") -> None:
        """Stop.  Graceful: hand out no more jobs, take no submissions, let the running
        jobs finish (bounded by ``graceful_timeout``), then stop; see
        :meth:`ServerHub.stop <gearman_proto.hub.ServerHub.stop>`."""
        self._batch()
        self.hub.stop(graceful, why)
        self._apply_stop()  # stop accepting now, not at the flush
        if self._task_group_running is None:  # not serving: nothing to drain
            self._done.set()

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` (or the admin ``shutdown``, if allowed)."""
        if self._accepting is None:
            await self.start()
        async with anyio.create_task_group() as tg:
            self._task_group_running = tg
            tg.start_soon(self._flusher)
            tg.start_soon(self._timer)
            tg.start_soon(self._accept_all, tg)
            self._batch()
            await self._done.wait()
            # What is due still goes out (the OK to a shutdown command, say).
            with anyio.move_on_after(_LINGER):
                for peer in list(self.peers.values()):
                    peer.close()
                for peer in list(self.peers.values()):
                    await peer.drained()
            tg.cancel_scope.cancel()
        self._task_group_running = None
        self.broker.commit()
        for level, message, args in self.hub.flush().notes:
            _server_log.log(level, message, *args)

    async def __aenter__(self) -> Server:
        await self.start()
        self._task_group = anyio.create_task_group()
        tg = await self._task_group.__aenter__()
        tg.start_soon(self.serve_forever)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        if self._task_group is not None:
            # Not handed the body's exception: it propagates as it is, not in a group.
            tg, self._task_group = self._task_group, None
            await tg.__aexit__(None, None, None)

    async def _accept_all(self, tg: TaskGroup) -> None:
        assert self._accepting is not None
        with self._accepting:
            async with anyio.create_task_group() as accepting:
                for listener in self._listeners:
                    accepting.start_soon(self._accept, listener, tg)

    async def _accept(self, listener: SocketListener, tg: TaskGroup) -> None:
        async with listener:  # closed once we stop accepting
            while True:
                try:
                    stream = await listener.accept()
                except (OSError, anyio.BrokenResourceError) as exc:
                    # Out of file descriptors, say (anyio raises BrokenResourceError
                    # from the OSError on trio): wait as the hub says, then again.
                    delay = self.hub.accept_failed(_why(exc))
                    self._batch()
                    await anyio.sleep(delay)
                    continue
                tg.start_soon(self._handle, stream)

    async def _handle(self, sock: SocketStream) -> None:
        """Serve one accepted connection until either side closes it."""
        hub = self.hub
        self._batch()  # the idle clock starts now; the flush logs and re-arms
        if not hub.may_open():
            await anyio.aclose_forcefully(sock)
            return
        if self.keepalive:
            apply_keepalive(sock.extra(SocketAttribute.raw_socket), self.keepalive)
        peer_address = sock.extra(SocketAttribute.remote_address, None)
        if isinstance(peer_address, tuple):
            address, name = str(peer_address[0]).encode(), f"{peer_address[0]}:{peer_address[1]}"
        else:
            address, name = b"-", "-"
        stream: ByteStream = sock
        if self.ssl is not None:
            try:
                with anyio.fail_after(_HANDSHAKE_TIMEOUT):
                    stream = await TLSStream.wrap(sock, server_side=True, ssl_context=self.ssl,
                                                  standard_compatible=False)
            except (*_BROKEN, anyio.EndOfStream, TimeoutError) as exc:
                # EndOfStream: the peer closed before the handshake (a plain TCP
                # probe, a port scanner); it used to escape and stop the server.
                _server_log.info("TLS handshake with %s failed: %r", name, exc)
                await anyio.aclose_forcefully(sock)
                return
        cid = hub.open(address, name)
        peer = self.peers[cid] = _Peer(self, stream, cid)
        try:
            await peer.read()
            with anyio.move_on_after(_LINGER):
                await peer.drained()
        except Exception:
            # A bug met on this connection's input costs this connection, not
            # the server (the asyncio server behaves so too).
            _server_log.exception("closing connection %d after an internal error", cid)
        finally:
            del self.peers[cid]
            peer.end()
            await anyio.aclose_forcefully(stream)
            self._batch()
            hub.closed(cid)

    def _batch(self) -> None:
        """Note that a flush is due; the clock is read once per batch."""
        if not self._dirty.is_set():
            self.hub.advance(time.time())
            self._dirty.set()

    async def _flusher(self) -> None:
        while True:
            await self._dirty.wait()
            if self._flush():
                await anyio.lowlevel.checkpoint()  # the other connections' reads first

    def _flush(self) -> bool:
        """Carry out one flush of the hub; True if it has more to do at once."""
        self._dirty = anyio.Event()
        flushed, self._flushed = self._flushed, anyio.Event()
        flushed.set()
        hub = self.hub
        out = hub.flush()
        peers = self.peers
        # Pause and resume first: a write below may pause again (output_blocked).
        for cid in out.pause:
            peer = peers.get(cid)
            if peer is not None:
                peer.pause()
        for cid in out.resume:
            peer = peers.get(cid)
            if peer is not None:
                peer.resume()
        for cid, data in out.writes.items():
            peer = peers.get(cid)
            if peer is not None:
                peer.write(data)
        for cid in out.shut:
            peer = peers.get(cid)
            if peer is not None:
                peer.shut()
        for cid in out.close:  # after its bytes: a protocol error's ERROR is in them
            peer = peers.get(cid)
            if peer is not None:
                peer.close()
        for level, message, args in out.notes:
            _server_log.log(level, message, *args)
        if out.rearm:
            self._deadline = out.deadline
            self._rearm.set()
        self._apply_stop()
        if out.more:
            self._dirty.set()
        return out.more

    def _apply_stop(self) -> None:
        if self.hub.stopping and self._accepting is not None:
            self._accepting.cancel()
        if self.hub.stopped:
            self._done.set()

    async def _timer(self) -> None:
        """Tick the hub at the deadline the last flush gave; re-armed when it moves."""
        while True:
            self._rearm = anyio.Event()
            deadline = self._deadline
            with anyio.move_on_after(math.inf if deadline is None else deadline - time.time()):
                await self._rearm.wait()
                continue
            self._deadline = None  # the flush after the tick arms the next one
            self.hub.tick(time.time())
            self._dirty.set()


async def _on_signals(server: Server, *,
                      task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    stops = [signal.SIGTERM, signal.SIGINT]
    graceful = getattr(signal, "SIGUSR1", None)
    with anyio.open_signal_receiver(*stops, *([graceful] if graceful else [])) as received:
        task_status.started()
        async for signum in received:
            server.close(graceful=signum == graceful, why=signal.Signals(signum).name)


async def serve(host: str = "127.0.0.1", port: int = 4730, *, signals: bool = True,
                ready: Callable[[Server], None] | None = None, **options: Any) -> None:
    """Run a job server until stopped (with ``signals``: SIGTERM/SIGINT; SIGUSR1 graceful)."""
    server = Server(host, port, **options)
    await server.start()
    async with anyio.create_task_group() as tg:
        if signals:
            await tg.start(_on_signals, server)
        if ready is not None:
            ready(server)
        await server.serve_forever()
        tg.cancel_scope.cancel()
