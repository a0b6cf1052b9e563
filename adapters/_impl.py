"""Client, Worker and AdminClient, written once over the backend seam.

Every decision comes from the core: :class:`~gearman_proto.session.ClientSession`
and :class:`~gearman_proto.session.WorkerSession` follow the conversations,
:mod:`gearman_proto.policy` picks servers, backs off, shapes outcomes and
errors, :mod:`gearman_proto.admin` shapes admin replies.  This module wires
them to a :class:`~._backend.Backend`: it connects, feeds bytes in, writes
what the core returns, and wakes waiters.  The asyncio, anyio and trio
flavours are this code bound to a backend; the blocking flavour runs the
asyncio binding on a thread of its own.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any, ClassVar, TypeVar, cast

from gearman_proto import admin
from gearman_proto.codecs import BYTES, Codec
from gearman_proto.errors import GrabRefused
from gearman_proto.events import (
    EchoReq,
    EchoRes,
    Error,
    GetStatus,
    GetStatusUnique,
    GrabJob,
    GrabJobUniq,
    OptionReq,
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
from gearman_proto.packets import DEFAULT_MAX_PACKET_SIZE
from gearman_proto.policy import (
    Backoff,
    ConnectionLost,
    HandlerDriver,
    JobEnded,
    JobInHand,
    JobTimeout,
    NoServerAvailable,
    ServerError,
    ServerPool,
    describe,
    job_outcome,
    second_try,
    unreachable,
)
from gearman_proto.session import (
    ClientSession,
    Job,
    JobState,
    Reply,
    WorkerSession,
    check_report,
)

from ._backend import Backend, ConnectOptions, Event, Link, TaskGroup, ThreadRunner
from ._common import (
    Address,
    KeepAlive,
    ServersArg,
    is_async_handler,
    make_submission,
    parse_servers,
    to_bytes,
)

__all__ = ["Client", "ClientJob", "Worker", "WorkerJob", "AdminClient", "Handler"]

log = logging.getLogger("gearman_proto.client")
worker_log = logging.getLogger("gearman_proto.worker")

_LINGER = 5.0
"""How long a graceful stop waits for the last results to be written."""

_FINAL = (WorkComplete, WorkFail, WorkException)


# -- client ---------------------------------------------------------------------------


class ClientJob:
    """A submitted job: its handle and progress, and its result to wait for.

    ``await job.wait(timeout)`` (or ``await job``) gives the result (``None``
    for a background job) or raises JobFailed, JobException, JobTimeout (after
    ``timeout``, by default the client's ``result_timeout``) or ConnectionLost.
    ``async for update in job.updates()`` streams WORK_DATA, WORK_WARNING and
    WORK_STATUS as they arrive, each wait bounded by the same timeout.
    """

    __slots__ = ("_client", "_job")

    def __init__(self, client: Client, job: Job[int]) -> None:
        self._client = client
        self._job = job

    @property
    def handle(self) -> bytes:
        """The job handle the server gave (JOB_CREATED)."""
        return self._job.handle or b""

    @property
    def function(self) -> bytes:
        """The function the job was submitted to."""
        return self._job.request.function

    @property
    def background(self) -> bool:
        """True for a background job (its submitter gets nothing after JOB_CREATED)."""
        return self._job.background

    @property
    def state(self) -> JobState:
        """Where the job is, as far as this client knows (a str too: ``"queued"``, ...)."""
        return self._job.state

    @property
    def server(self) -> Address:
        """The job server that holds the job."""
        return self._client.servers[self._job.server]

    @property
    def numerator(self) -> int:
        """The last WORK_STATUS numerator received (0 until then)."""
        return self._job.numerator

    @property
    def denominator(self) -> int:
        """The last WORK_STATUS denominator received (0 until then)."""
        return self._job.denominator

    @property
    def status(self) -> tuple[int, int]:
        """The last WORK_STATUS as ``(numerator, denominator)``."""
        return self._job.numerator, self._job.denominator

    def __repr__(self) -> str:
        return (f"<ClientJob {self.function.decode('utf-8', 'replace')} "
                f"{self.handle.decode('utf-8', 'replace')} {self.state.value} "
                f"on {describe(self.server)}>")

    def _timeout(self, timeout: float | None) -> float | None:
        return self._client.result_timeout if timeout is None else timeout

    async def wait(self, timeout: float | None = None) -> Any:
        """Wait for the end of the job and return its result (``None`` for a background job).

        The result is bytes, or what the client's codec decodes it to.
        """
        job = self._job
        t = self._timeout(timeout)
        if not await self._client._wait(job, lambda: job.done, t):
            raise JobTimeout(f"no result for job {self._name()} from "
                             f"{describe(self.server)} in {t}s")
        result = job_outcome(job, self.server)  # type: ignore[arg-type]
        codec = self._client.codec
        if result is None or codec is BYTES:
            return result
        return codec.decode(result)

    result = wait
    """The same as :meth:`wait` (the asyncio and anyio adapters' earlier name)."""

    def __await__(self) -> Generator[Any, None, Any]:
        return self.wait().__await__()

    async def updates(self, timeout: float | None = None
                      ) -> AsyncIterator[WorkData | WorkWarning | WorkStatus]:
        """Yield WORK_DATA, WORK_WARNING and WORK_STATUS as they arrive; stop when the job ends.

        ``timeout`` (default: the client's ``result_timeout``) bounds the wait
        for each next update.  Call :meth:`wait` afterwards for the outcome.
        """
        job = self._job
        q = job.updates
        t = self._timeout(timeout)
        while True:
            while q:
                yield q.popleft()
            if job.done:
                return
            if not await self._client._wait(job, lambda: bool(q) or job.done, t):
                raise JobTimeout(f"no update for job {self._name()} from "
                                 f"{describe(self.server)} in {t}s")

    def _name(self) -> str:
        return (f"{self.handle.decode('utf-8', 'replace')} "
                f"({self.function.decode('utf-8', 'replace')})")


class Client:
    """Submits jobs to one or more job servers and waits for their results.

    Submissions go round-robin over ``servers``; one that cannot be reached is
    tried last until it answers again (backoff from ``retry_delay`` doubling
    to ``max_retry_delay``), and a submission whose connection drops before
    JOB_CREATED goes to the next server, so callers only notice a lost server
    through the jobs that were in flight on it (ConnectionLost).  Many jobs may
    be in flight at once.
    """

    backend: ClassVar[Backend]

    def __init__(self, servers: ServersArg = None, *, ssl: Any = None,
                 server_hostname: str | None = None, exceptions: bool = True,
                 connect_timeout: float | None = 5.0, created_timeout: float | None = 30.0,
                 result_timeout: float | None = None, client_id: bytes | str | None = None,
                 keepalive: bool | KeepAlive = False, retry_delay: float = 0.5,
                 max_retry_delay: float = 30.0,
                 max_packet_size: int = DEFAULT_MAX_PACKET_SIZE, codec: Codec = BYTES) -> None:
        self.servers = parse_servers(servers)
        self.codec = codec
        """How submitted values become payloads and results become values (bytes by default)."""
        self.options = ConnectOptions(ssl, server_hostname, connect_timeout, keepalive)
        self.created_timeout = created_timeout
        self.result_timeout = result_timeout
        self.client_id = None if client_id is None else to_bytes(client_id)
        self.pool = ServerPool(len(self.servers), retry_delay, max_retry_delay)
        self._session: ClientSession[int] = ClientSession(exceptions=exceptions,
                                                          max_packet_size=max_packet_size)
        self._links: dict[int, Link] = {}
        self._connecting: dict[int, Any] = {}
        self._closed = False

    @property
    def connect_timeout(self) -> float | None:
        return self.options.timeout

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection; jobs still in flight end as lost."""
        self._closed = True
        for link in list(self._links.values()):
            link.close()
            await link.wait(lambda: False, 1.0)

    # -- connections --------------------------------------------------------------

    def _lost(self, idx: int, link: Link, exc: BaseException | None) -> None:
        if self._links.get(idx) is not link:
            return
        del self._links[idx]
        self._session.disconnect(idx)
        if exc is not None and not self._closed:
            log.warning("connection to job server %s lost: %s", describe(self.servers[idx]),
                        exc)
        if not self._closed:
            self.pool.failed(idx, self.backend.now())

    async def _link(self, idx: int) -> Link:
        """The open connection to server ``idx``, connecting now if there is none.

        Raises OSError or JobTimeout when the server cannot be reached.
        """
        link = self._links.get(idx)
        if link is not None and not link.closed:
            return link
        lock = self._connecting.get(idx)
        if lock is None:
            lock = self._connecting[idx] = self.backend.lock()
        async with lock:  # one connection attempt at a time per server
            link = self._links.get(idx)
            if link is not None and not link.closed:
                return link
            if self._closed:
                raise ConnectionLost("the client is closed")
            try:
                link = await self.backend.connect(
                    self.servers[idx], self.options,
                    lambda data: self._session.receive_data(idx, data),
                    lambda exc: self._lost(idx, link, exc))  # type: ignore[arg-type]
            except (OSError, JobTimeout) as exc:
                log.warning("job server %s unavailable: %s", describe(self.servers[idx]), exc)
                self.pool.failed(idx, self.backend.now(), timed_out=isinstance(exc, JobTimeout))
                raise
            self.pool.connected(idx)
            self._links[idx] = link
            out = self._session.connect(idx)
            if self.client_id is not None:
                out += self._session.set_client_id(idx, self.client_id)
            link.write(out)
            return link

    async def _wait(self, item: Job[int] | Reply[int], ready: Callable[[], bool],
                    timeout: float | None) -> bool:
        """Wait until ``ready()`` (reading the item's connection meanwhile); False on timeout."""
        link = self._links.get(item.server)
        if link is None:  # lost: the record says how it ended
            return ready()
        return await link.wait(ready, timeout, item)

    async def _connected(self, order: list[int]) -> tuple[int, Link]:
        """The first server of ``order`` that is connected or connects."""
        errors: list[BaseException] = []
        for idx in order:
            try:
                return idx, await self._link(idx)
            except (OSError, JobTimeout) as exc:
                errors.append(exc)
        raise unreachable([self.servers[i] for i in order],
                          bool(errors) and all(isinstance(e, JobTimeout) for e in errors),
                          str(errors[-1]) if errors else None)

    # -- public API ------------------------------------------------------------------

    async def submit(self, function: bytes | str, data: Any = b"", *,
                     unique: bytes | str | None = None, priority: Priority = Priority.NORMAL,
                     background: bool = False, epoch: int | None = None,
                     reducer: bytes | str | None = None) -> ClientJob:
        """Submit a job and return it once the server accepted it (JOB_CREATED).

        ``unique=None`` picks a random unique id (pass ``"-"`` or your own key to
        coalesce); ``epoch`` (Unix seconds) makes a background job that runs no
        earlier; ``reducer`` makes a reduce job.  Raises ServerError (refused),
        JobTimeout (``connect_timeout``, ``created_timeout``), NoServerAvailable
        or ConnectionLost.
        """
        if self.codec is not BYTES:
            data = self.codec.encode(data)
        request = make_submission(function, data, unique=unique, priority=priority,
                                  background=background, epoch=epoch, reducer=reducer)
        plan = self.pool.submission_plan(self.backend.now())
        job: Job[int] | None = None
        while plan:
            idx = plan[0]
            link = self._links.get(idx)  # connected: no coroutine to run
            if link is None or link.closed:
                idx, link = await self._connected(plan)
            plan = plan[plan.index(idx) + 1:]
            job, out = self._session.submit(idx, request)
            link.write(out)
            if not await self._wait(job, lambda: job.state is not JobState.PENDING,  # noqa: B023
                                    self.created_timeout):
                raise JobTimeout(f"no JOB_CREATED from {describe(self.servers[idx])} in "
                                 f"{self.created_timeout}s")
            if job.handle is not None:
                self.pool.remember(job.handle, idx)
                return ClientJob(self, job)
            if job.state is not JobState.LOST or not plan:
                job_outcome(job, self.servers[idx])  # type: ignore[arg-type]  # raises
            # Lost before it was accepted: the server may never have seen it, and
            # the next server gets it.
        raise ConnectionLost("every job server dropped the connection")  # pragma: no cover

    async def do(self, function: bytes | str, data: Any = b"", *,
                 unique: bytes | str | None = None, priority: Priority = Priority.NORMAL,
                 reducer: bytes | str | None = None, timeout: float | None = None) -> Any:
        """Run a foreground job and return its result (libgearman's ``gearman_client_do``).

        The result is bytes, or what the client's codec decodes it to.
        ``timeout`` bounds the wait for the result (default: ``result_timeout``).
        """
        job = await self.submit(function, data, unique=unique, priority=priority,
                                reducer=reducer)
        return await job.wait(timeout)

    async def _ask(self, request: GetStatus | GetStatusUnique | EchoReq | OptionReq,
                   order: list[int]) -> object:
        # Questions change nothing on the server, so one whose connection drops
        # before the answer is asked again, of the next server, as a
        # submission lost before JOB_CREATED is.
        plan = second_try(order)
        while True:
            idx, link = await self._connected(plan)
            plan = plan[plan.index(idx) + 1:]
            reply, out = self._session.ask(idx, request)
            link.write(out)
            if not await self._wait(reply, lambda: reply.done,  # noqa: B023 (used at once)
                                    self.created_timeout):
                raise JobTimeout(f"no answer to {type(request).__name__} from "
                                 f"{describe(self.servers[idx])} in {self.created_timeout}s")
            if not reply.lost:
                break
            if not plan:
                raise ConnectionLost(f"connection to job server {describe(self.servers[idx])} "
                                     f"lost before it answered {type(request).__name__}")
        if isinstance(reply.answer, Error):
            raise ServerError(reply.answer.code, reply.answer.text)
        return reply.answer

    async def get_status(self, handle: bytes | str) -> StatusRes:
        """GET_STATUS: asked of the server that issued ``handle`` if it is ours, else the first."""
        h = to_bytes(handle)
        server = self.pool.server_of(h)
        order = self.pool.first(self.backend.now()) if server is None else [server]
        return cast(StatusRes, await self._ask(GetStatus(h), order))

    async def get_status_unique(self, unique: bytes | str) -> StatusResUnique:
        """GET_STATUS_UNIQUE: the job with this unique id, and how many clients wait on it."""
        return cast(StatusResUnique, await self._ask(GetStatusUnique(to_bytes(unique)),
                                                     self.pool.first(self.backend.now())))

    async def echo(self, data: bytes | str = b"") -> bytes:
        """ECHO_REQ: the first reachable server sends ``data`` back (a liveness check)."""
        answer = await self._ask(EchoReq(to_bytes(data)), self.pool.first(self.backend.now()))
        return cast(EchoRes, answer).data


# -- worker ---------------------------------------------------------------------------


class WorkerJob(JobInHand):
    """The job a handler runs: its data, and the means to report on it.

    Its fields (``handle``, ``function``, ``unique``, ``reducer``, ``data``,
    ``failed``, ``ended``) are the core's :class:`~gearman_proto.policy.JobInHand`'s.
    The reporting methods may be called from a sync handler running in a
    thread as well as from an async handler.  A report the protocol cannot
    carry (a negative WORK_STATUS number) raises LocalProtocolError in the
    handler and changes nothing; a report after the job's end raises
    :class:`~gearman_proto.policy.JobEnded`.
    """

    __slots__ = ()

    @property
    def value(self) -> Any:
        """The job's data decoded by the worker's codec (the bytes themselves by default)."""
        return self._worker.codec.decode(self.data)

    def __repr__(self) -> str:
        return (f"<WorkerJob {self.function.decode('utf-8', 'replace')} "
                f"{self.handle.decode('utf-8', 'replace')}"
                f"{' ended' if self.ended else ' running'}>")

    def _report(self, event: WorkUpdate) -> None:
        if self.ended:
            raise JobEnded(f"job {self.handle.decode('utf-8', 'replace')} has already ended")
        check_report(event)
        if isinstance(event, _FINAL):
            self.ended = True
        self._worker._post(self._key, event)

    def send_data(self, data: bytes | str) -> None:
        """WORK_DATA: stream a piece of the result to the clients."""
        self._report(WorkData(self.handle, to_bytes(data)))

    def send_warning(self, data: bytes | str) -> None:
        """WORK_WARNING: send the clients a warning."""
        self._report(WorkWarning(self.handle, to_bytes(data)))

    def send_status(self, numerator: int, denominator: int) -> None:
        """WORK_STATUS: progress as numerator / denominator."""
        self._report(WorkStatus(self.handle, int(numerator), int(denominator)))

    def fail(self) -> None:
        """End the job with WORK_FAIL; the handler's return value is then ignored."""
        self.failed = True
        self._report(WorkFail(self.handle))

    def send_exception(self, data: bytes | str) -> None:
        """End the job with WORK_EXCEPTION carrying ``data`` (what raising an exception
        does, with a text of your own); the handler's return value is then ignored."""
        self.failed = True
        self._report(WorkException(self.handle, to_bytes(data)))


Handler = Callable[[WorkerJob], "bytes | str | Awaitable[bytes | str | None] | None"]
H = TypeVar("H", bound=Handler)


class Worker:
    """Runs registered functions for jobs from one or more job servers.

    Handlers may be sync (run in threads of the worker's own) or async.  At
    most ``max_jobs`` run at once: the worker never grabs beyond its free
    slots, and a job whose connection dropped keeps its slot until its handler
    returns.  A handler's return value completes the job; an exception ends it
    with WORK_EXCEPTION (``Type: message``).  A lost server is reconnected to
    with backoff from ``reconnect_delay`` doubling to ``max_reconnect_delay``.
    ``stop()`` drains: no more grabs, the jobs in hand finish, then ``work()``
    returns.
    """

    backend: ClassVar[Backend]

    def __init__(self, servers: ServersArg = None, *, ssl: Any = None,
                 server_hostname: str | None = None, client_id: bytes | str | None = None,
                 max_jobs: int = 1, reconnect_delay: float = 0.5,
                 max_reconnect_delay: float = 30.0, keepalive: bool | KeepAlive = False,
                 connect_timeout: float | None = 5.0,
                 max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
                 grab: type[GrabJob] | type[GrabJobUniq] = GrabJobUniq,
                 grab_fallback: bool = True, codec: Codec = BYTES) -> None:
        if max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        Backoff(reconnect_delay, max_reconnect_delay)  # checks the pair
        self.servers = parse_servers(servers)
        self.options = ConnectOptions(ssl, server_hostname, connect_timeout, keepalive)
        self.client_id = None if client_id is None else to_bytes(client_id)
        self.max_jobs = max_jobs
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.max_packet_size = max_packet_size
        self.grab = grab
        """GRAB_JOB_UNIQ (the default: handlers see the unique id) or GRAB_JOB."""
        self.grab_fallback = grab_fallback
        self.codec = codec
        """How job data becomes ``job.value`` and handlers' results become payloads."""
        """Grab with GRAB_JOB from a server that refuses GRAB_JOB_UNIQ (Perl's Gearman::Server)."""
        self.handlers: dict[bytes, Handler] = {}
        self.timeouts: dict[bytes, int | None] = {}
        self._done_before = 0  # jobs_done of the earlier work() calls
        self._session: WorkerSession[int] | None = None
        self._driver: HandlerDriver | None = None
        self._links: dict[int, Link] = {}
        self._writers: dict[int, Callable[[bytes], object]] = {}
        self._buffers: dict[int, list[bytes]] = {}
        self._tg: TaskGroup | None = None
        self._threads: ThreadRunner | None = None
        self._call: Callable[..., None] | None = None
        self._stopping: Event | None = None
        self._graceful = True

    @property
    def jobs_done(self) -> int:
        """Jobs whose final report was made, over every :meth:`work`."""
        driver = self._driver
        return self._done_before + (0 if driver is None else driver.ended)

    def register(self, function: bytes | str, handler: Handler,
                 timeout_ms: int | None = None) -> None:
        """Run ``handler(job)`` for ``function``; ``timeout_ms`` registers CAN_DO_TIMEOUT."""
        name = to_bytes(function)
        self.handlers[name] = handler
        self.timeouts[name] = timeout_ms

    def task(self, function: bytes | str, timeout_ms: int | None = None) -> Callable[[H], H]:
        """Decorator form of :meth:`register`: ``@worker.task("reverse")``."""
        def deco(handler: H) -> H:
            self.register(function, handler, timeout_ms)
            return handler
        return deco

    def stop(self, graceful: bool = True) -> None:
        """Stop grabbing; ``work()`` returns once the jobs in hand are done.

        With ``graceful=False`` it returns at once and the server requeues the
        jobs in hand.  Safe to call from a signal handler or another thread.
        """
        if self._call is not None:
            self._call(self._stop, graceful)

    def _stop(self, graceful: bool) -> None:
        session, stopping = self._session, self._stopping
        if session is None or stopping is None:
            return
        session.drain()
        if not graceful:
            self._graceful = False
        if not graceful or session.idle:
            stopping.set()

    async def work(self, stop_after: int | None = None) -> None:
        """Serve jobs from every server until :meth:`stop`, or after ``stop_after`` jobs.

        ``stop_after`` stops grabbing once that many jobs were handed out, then
        returns when they are done.
        """
        if not self.handlers:
            raise ValueError("register at least one function before work()")
        backend = self.backend
        self._done_before = self.jobs_done
        session: WorkerSession[int] = WorkerSession(
            dict(self.timeouts), max_jobs=self.max_jobs, client_id=self.client_id,
            grab=self.grab, grab_fallback=self.grab_fallback,
            max_packet_size=self.max_packet_size)
        self._session = session
        self._driver = driver = HandlerDriver(
            session, self, self.handlers, WorkerJob, _not_started, self._run_sync,
            is_async_handler, self._failed, None if self.codec is BYTES else self.codec.encode,
            self._writers, self._server_error, self._refused, self._idle, stop_after,
            self._buffers)
        self._stopping = stopping = backend.event()
        self._graceful = True
        self._fatal: BaseException | None = None
        self._threads = backend.thread_runner(self.max_jobs)
        self._call = backend.caller()
        if stop_after is not None and stop_after <= 0:
            return
        try:
            async with backend.task_group() as tg:
                self._tg = tg
                # A job runs at once where the loop allows it: a handler that returns
                # without waiting then costs no task, and its result goes out in the
                # read that brought the job.
                driver.run = tg.run_job
                for key in range(len(self.servers)):
                    tg.start_soon(self._serve, key)
                await stopping.wait()
                if self._graceful:  # the last results are still on their way out
                    deadline = backend.now() + _LINGER
                    for link in list(self._links.values()):
                        await link.drain(deadline)
                tg.cancel()
        finally:
            self._call = None
            self._tg = None
            self._threads.close()
            for link in self._links.values():
                link.close()
            self._links.clear()
            self._writers.clear()
            self._buffers.clear()
        if self._fatal is not None:
            raise self._fatal

    def _post(self, key: int, event: WorkUpdate) -> None:
        """From a handler (any thread): hand a report to the event loop."""
        call, driver = self._call, self._driver
        if call is not None and driver is not None:
            call(driver.report, key, event)

    def _server_error(self, key: int, err: Error) -> None:
        worker_log.warning("job server %s: ERROR %s %s", describe(self.servers[key]),
                           err.code.decode(errors="replace"), err.text.decode(errors="replace"))

    def _refused(self, key: int, event: WorkUpdate, exc: Exception) -> None:
        worker_log.warning("cannot report on job %r: %s", event.handle, exc)

    def _idle(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def _run_sync(self, handler: Handler, job: WorkerJob) -> Any:
        """A sync handler's run, in one of the worker's threads."""
        assert self._threads is not None
        result = await self._threads.run(handler, job)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _failed(self, job: JobInHand, exc: Exception) -> None:
        worker_log.warning("job %s (%s) raised %s", job.handle.decode(errors="replace"),
                           job.function.decode(errors="replace"),
                           type(exc).__name__, exc_info=exc)

    async def _serve(self, key: int) -> None:
        """Keep a connection to server ``key``, reconnecting with backoff."""
        session, driver = self._session, self._driver
        assert session is not None and driver is not None
        backend = self.backend
        address = self.servers[key]
        backoff = Backoff(self.reconnect_delay, self.max_reconnect_delay)
        while True:
            if session.draining:
                return
            try:
                link = await backend.connect(address, self.options,
                                             functools.partial(driver.receive, key))
            except (OSError, JobTimeout) as exc:
                wait = backoff.failed(backend.now())
                worker_log.warning("job server %s unavailable (%s); retrying in %.1fs",
                                   describe(address), exc, wait)
                await backend.sleep(wait)
                continue
            backoff.succeeded()
            self._links[key] = link
            self._writers[key] = link.write
            if link.read_buffer is not None:
                self._buffers[key] = link.read_buffer
            try:
                driver.write(session.connect(key).writes)
                await link.run()
            finally:
                if self._links.get(key) is link:
                    del self._links[key]
                    del self._writers[key]
                    self._buffers.pop(key, None)
                session.disconnect(key, keep_slots=True)
                link.close()
                # The lost connection's grab freed a slot: another server may use it.
                driver.write(session.pump().writes)
            if isinstance(link.error, GrabRefused):
                # This server will never hand us a job: say so, and stop working
                # rather than reconnect to be refused again.
                worker_log.error("job server %s refused to hand out jobs: %s; the worker "
                                 "stops", describe(address), link.error)
                self._fatal = link.error
                self._stop(graceful=False)
                return
            wait = backoff.failed(backend.now())
            if link.error is not None:
                worker_log.warning("connection to job server %s failed: %s; reconnecting "
                                   "in %.1fs", describe(address), link.error, wait)
            else:
                worker_log.info("job server %s closed the connection; reconnecting in %.1fs",
                                describe(address), wait)
            await backend.sleep(wait)


# -- admin ----------------------------------------------------------------------------


def _not_started(job: JobInHand, coro: Any, done: Any) -> Any:
    raise RuntimeError("a job arrived before the worker's task group started")


class AdminClient:
    """The admin text protocol: what ``gearadmin`` asks, with typed answers.

    One connection, opened on the first command.  Replies carry no tag, so
    after a timeout or a broken reply the connection is opened afresh for the
    next command.  Commands answered ``ERR`` raise
    :class:`~gearman_proto.admin.AdminError`.
    """

    backend: ClassVar[Backend]

    def __init__(self, server: str | Address | None = None, *, ssl: Any = None,
                 server_hostname: str | None = None, timeout: float | None = 10.0) -> None:
        self.address = parse_servers(server)[0]
        self.options = ConnectOptions(ssl, server_hostname, timeout, False)
        self.timeout = timeout
        self._conn = admin.AdminClientConnection()
        self._results: deque[admin.AdminResult] = deque()
        self._link: Link | None = None
        self._lock: Any = None

    @property
    def server(self) -> Address:
        """The job server's address (the blocking adapter's earlier name for it)."""
        return self.address

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (the next command opens a new one)."""
        link, self._link = self._link, None
        if link is not None:
            link.close()
            await link.wait(lambda: False, 1.0)

    def _received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        self._results.extend(self._conn.events())

    async def command(self, request: admin.AdminRequest) -> admin.AdminResult:
        """Send one admin command and return its parsed reply (an ERR is returned, not raised)."""
        if self._lock is None:
            self._lock = self.backend.lock()
        async with self._lock:
            backend = self.backend
            link = self._link
            if link is None or link.closed:
                self._conn = admin.AdminClientConnection()
                self._results.clear()
                try:
                    link = self._link = await backend.connect(self.address, self.options,
                                                              self._received)
                except (OSError, JobTimeout) as exc:
                    raise NoServerAvailable(f"cannot connect to {describe(self.address)}: "
                                            f"{exc}") from exc
            link.write(self._conn.send(request))
            results = self._results
            if not await link.wait(lambda: bool(results), self.timeout):
                lost = link.closed
                # Start afresh: the late reply would answer the next command.
                await self.close()
                if lost:
                    raise ConnectionLost(f"admin connection to {describe(self.address)} "
                                         f"lost: {link.error or 'closed by the server'}")
                raise JobTimeout(f"admin command {type(request).__name__} to "
                                 f"{describe(self.address)} timed out after {self.timeout}s")
            return results.popleft()

    async def _value(self, request: admin.AdminRequest) -> Any:
        return admin.result_value(request, await self.command(request))

    async def status(self) -> list[admin.StatusRow]:
        """``status``: per function, jobs queued and running, and available workers."""
        return await self._value(admin.Status())  # type: ignore[no-any-return]

    async def priority_status(self) -> list[admin.PriorityStatusRow]:
        """``prioritystatus``: per function, queued jobs per priority."""
        return await self._value(admin.PriorityStatus())  # type: ignore[no-any-return]

    async def workers(self) -> list[admin.WorkerRow]:
        """``workers``: every connection with its client id and functions."""
        return await self._value(admin.Workers())  # type: ignore[no-any-return]

    async def show_jobs(self) -> list[admin.JobRow]:
        """``show jobs``."""
        return await self._value(admin.ShowJobs())  # type: ignore[no-any-return]

    async def show_unique_jobs(self) -> list[bytes]:
        """``show unique jobs``."""
        return await self._value(admin.ShowUniqueJobs())  # type: ignore[no-any-return]

    async def cancel_job(self, handle: bytes | str) -> None:
        """``cancel job HANDLE``; raises AdminError (UNKNOWN_JOB) if there is none."""
        await self._value(admin.CancelJob(to_bytes(handle)))

    async def create_function(self, function: bytes | str) -> None:
        """``create function NAME``."""
        await self._value(admin.CreateFunction(to_bytes(function)))

    async def drop_function(self, function: bytes | str) -> None:
        """``drop function NAME``."""
        await self._value(admin.DropFunction(to_bytes(function)))

    async def maxqueue(self, function: bytes | str, *limits: int) -> None:
        """``maxqueue FUNC [N | HIGH NORMAL LOW]``: no number resets to unlimited."""
        await self._value(admin.MaxQueue(to_bytes(function), admin.maxqueue_limits(limits)))

    async def getpid(self) -> int:
        """``getpid``."""
        return await self._value(admin.GetPid())  # type: ignore[no-any-return]

    async def version(self) -> str:
        """``version``."""
        return await self._value(admin.Version())  # type: ignore[no-any-return]

    async def verbose(self) -> str:
        """``verbose``: the server's log level name."""
        return await self._value(admin.Verbose())  # type: ignore[no-any-return]

    async def shutdown(self, graceful: bool = False) -> None:
        """``shutdown [graceful]`` (servers that allow it; gearmand >= 1.1.15 does not)."""
        await self._value(admin.Shutdown(graceful))
