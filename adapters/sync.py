"""Gearman over blocking sockets: :class:`Client`, :class:`Worker` and :class:`AdminClient`.

Only the standard library is used (``socket``, ``ssl``, ``selectors``,
``threading``); every protocol decision comes from :mod:`gearman_proto.session`.

**Threads.**  A :class:`Client` has one background I/O thread, the only one
that reads or writes its sockets (an ``ssl`` socket must not be read and
written from two threads at once).  Callers change the
:class:`~gearman_proto.session.ClientSession` under the client's lock, append
the bytes it returns to the connection's output buffer and wake the thread;
everyone who waits (``submit``, ``Job.wait``, ``Job.updates``, ``get_status``)
sleeps on one condition over that lock, which the thread notifies after each
read.  So any number of threads may wait on any number of jobs and nobody has to
drive a loop.  Connecting is done by the calling thread (blocking, bounded by
``connect_timeout``); the socket is then handed over to the I/O thread.

A :class:`Worker`'s loop runs in the thread that calls :meth:`Worker.work`: it
owns the sockets and the :class:`~gearman_proto.session.WorkerSession`.
Handlers run in a pool of ``max_jobs`` threads and post their reports back to
the loop through a queue and a wake-up socket, so :meth:`Worker.stop` is safe
from any thread and from a signal handler.  The loop connects in blocking mode
too: a server that swallows SYNs stalls the others for ``connect_timeout``.

**Timeouts** all raise :class:`JobTimeout`: ``connect_timeout`` per connection
attempt (only when every server timed out; refusals give NoServerAvailable),
``created_timeout`` for JOB_CREATED and for the answers to GET_STATUS and ECHO,
``result_timeout`` (or ``Job.wait(timeout)``) for the result.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl as _ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from gearman_proto import ConnectionState, NeedData, admin
from gearman_proto.errors import LocalProtocolError, RemoteProtocolError
from gearman_proto.events import (
    EchoReq,
    EchoRes,
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
from gearman_proto.session import ClientSession, JobState, WorkerSession, WorkerStep
from gearman_proto.session import Job as _SessionJob

from ._common import (
    Address,
    ConnectionLost,
    GearmanError,
    JobTimeout,
    KeepAlive,
    NoServerAvailable,
    ServerError,
    ServersArg,
    apply_keepalive,
    job_outcome,
    make_submission,
    parse_servers,
    to_bytes,
)

__all__ = ["Client", "Job", "Worker", "WorkerJob", "AdminClient", "KeepAlive"]

log = logging.getLogger(__name__)

_BACKOFF_MIN, _BACKOFF_MAX = 0.5, 30.0
"""How long a client leaves a lost server alone: doubling from the first to the second."""
_REMEMBERED_HANDLES = 10_000
"""How many recent job handles a client remembers the server of (for ``get_status``)."""
_FINAL = (WorkComplete, WorkFail, WorkException)
_WANT_IO = (BlockingIOError, InterruptedError, _ssl.SSLWantReadError, _ssl.SSLWantWriteError)


def _open(address: Address, context: _ssl.SSLContext | None, server_hostname: str | None,
          timeout: float, keepalive: bool | KeepAlive) -> socket.socket:
    """Connect to ``address`` (and do the TLS handshake) in blocking mode, within ``timeout``."""
    sock = socket.create_connection(address, timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if keepalive:
            apply_keepalive(sock, keepalive)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=server_hostname or address[0])
    except BaseException:
        sock.close()
        raise
    return sock


def _unreachable(what: str, errors: list[OSError]) -> GearmanError:
    """The error for "no server answered": JobTimeout if they all timed out."""
    if errors and all(isinstance(e, TimeoutError) for e in errors):
        return JobTimeout(f"timed out connecting to {what}")
    return NoServerAvailable(f"cannot connect to {what}: {errors[-1] if errors else 'none left'}")


class _Conn:
    """One open socket (non-blocking from now on), its server's index and its output buffer."""

    __slots__ = ("closed", "out", "server", "sock")

    def __init__(self, sock: socket.socket, server: int) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.server = server
        self.out = bytearray()
        self.closed = False

    def read(self) -> tuple[bytes, bool]:
        """Everything readable now, and whether the peer closed (or the socket broke)."""
        chunks: list[bytes] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except _WANT_IO:
                return b"".join(chunks), False
            except OSError:
                return b"".join(chunks), True
            if not data:
                return b"".join(chunks), True
            chunks.append(data)

    def flush(self) -> bool:
        """Write as much of the output buffer as the socket takes; False if it broke."""
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except _WANT_IO:
                return True
            except OSError:
                return False
            del self.out[:sent]
        return True

    def close(self) -> None:
        """Close the socket (the loop must have forgotten it first)."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()


class _Poller:
    """A selector over a loop's connections, plus a socket pair to wake it from other threads."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)

    def wake(self) -> None:
        """Make the current or next :meth:`poll` return at once (safe in a signal handler)."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def forget(self, conn: _Conn) -> None:
        """Stop watching ``conn``; call before closing it, so its fd can be reused."""
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)

    def poll(self, conns: list[_Conn], timeout: float | None,
             lock: contextlib.AbstractContextManager[Any]) -> list[tuple[_Conn, bytes, bool]]:
        """Write what is buffered, wait up to ``timeout``, read what came.

        Returns ``(conn, data, closed)`` for every connection that gave bytes
        or broke.  ``lock`` guards the output buffers against other threads.
        """
        results: list[tuple[_Conn, bytes, bool]] = []
        wanted: dict[socket.socket, int] = {}
        with lock:
            for conn in conns:
                if conn.flush():
                    wanted[conn.sock] = selectors.EVENT_READ | (
                        selectors.EVENT_WRITE if conn.out else 0)
                else:
                    results.append((conn, b"", True))
        if results:
            return results
        selector = self.selector
        for key in list(selector.get_map().values()):
            if key.fileobj is not self._wake_r and key.fileobj not in wanted:
                selector.unregister(key.fileobj)
        by_sock = {c.sock: c for c in conns}
        for sock, events in wanted.items():
            try:
                if selector.get_key(sock).events != events:
                    selector.modify(sock, events, by_sock[sock])
            except KeyError:
                selector.register(sock, events, by_sock[sock])
        for key, mask in selector.select(timeout):
            if key.data is None:
                with contextlib.suppress(OSError):
                    while self._wake_r.recv(4096):
                        pass
                continue
            conn = key.data
            if mask & selectors.EVENT_WRITE:
                with lock:
                    ok = conn.flush()
                if not ok:
                    results.append((conn, b"", True))
                    continue
            if mask & selectors.EVENT_READ:
                data, closed = conn.read()
                if data or closed:
                    results.append((conn, data, closed))
        return results

    def close(self) -> None:
        """Release the selector and the wake-up sockets."""
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()


# -- client -----------------------------------------------------------------------------


class Job:
    """A job this client submitted: its handle, its progress, and its result to wait for."""

    __slots__ = ("_client", "_job")

    def __init__(self, client: Client, job: _SessionJob[_Conn]) -> None:
        self._client = client
        self._job = job

    @property
    def handle(self) -> bytes:
        """The job handle the server gave (JOB_CREATED)."""
        return self._job.handle or b""

    @property
    def state(self) -> JobState:
        """Where the job is, as far as this client knows."""
        return self._job.state

    @property
    def server(self) -> Address:
        """The job server that holds the job."""
        return self._client.servers[self._job.server.server]

    @property
    def numerator(self) -> int:
        """The last WORK_STATUS numerator received (0 until then)."""
        return self._job.numerator

    @property
    def denominator(self) -> int:
        """The last WORK_STATUS denominator received (0 until then)."""
        return self._job.denominator

    def wait(self, timeout: float | None = None) -> bytes | None:
        """Wait for the end of the job and return its result (``None`` for a background job).

        ``timeout`` defaults to the client's ``result_timeout`` (``None``:
        forever).  Raises JobFailed, JobException, ConnectionLost or JobTimeout.
        """
        client = self._client
        with client._cond:
            if not client._cond.wait_for(lambda: self._job.done,
                                         client._timeout(timeout)):
                raise JobTimeout(f"no result for job {self.handle!r} in time")
        return job_outcome(self._job)  # type: ignore[arg-type]

    def updates(self, timeout: float | None = None
                ) -> Iterator[WorkData | WorkWarning | WorkStatus]:
        """Yield WORK_DATA, WORK_WARNING and WORK_STATUS as they arrive; stop when the job ends.

        ``timeout`` (default: the client's ``result_timeout``) bounds the wait
        for each next update.  Call :meth:`wait` afterwards for the outcome.
        """
        client, job = self._client, self._job
        limit = client._timeout(timeout)
        while True:
            with client._cond:
                if not client._cond.wait_for(lambda: job.updates or job.done, limit):
                    raise JobTimeout(f"no update for job {self.handle!r} in time")
                if not job.updates:
                    return
                event = job.updates.popleft()
            yield event


class Client:
    """Submits jobs to one or more job servers and waits for their results.

    Submissions go round-robin over ``servers``; one that refuses the
    connection or drops is skipped and retried after a backoff.  Many jobs may
    be in flight at once, from any number of threads.  Close it (or use
    ``with``): its I/O thread runs until then.
    """

    def __init__(self, servers: ServersArg = None, *, ssl: _ssl.SSLContext | None = None,
                 server_hostname: str | None = None, exceptions: bool = True,
                 connect_timeout: float = 5.0, created_timeout: float | None = 30.0,
                 result_timeout: float | None = None, client_id: bytes | str | None = None,
                 keepalive: bool | KeepAlive = False) -> None:
        self.servers = parse_servers(servers)
        self._open_args = (ssl, server_hostname, connect_timeout, keepalive)
        self.created_timeout = created_timeout
        self.result_timeout = result_timeout
        self.client_id = None if client_id is None else to_bytes(client_id)
        self._session: ClientSession[_Conn] = ClientSession(exceptions=exceptions)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._conns: dict[int, _Conn] = {}
        n = len(self.servers)
        self._connecting = [threading.Lock() for _ in range(n)]
        self._retry_at = [0.0] * n
        self._failures = [0] * n
        self._next = 0
        self._handles: dict[bytes, int] = {}
        self._closed = False
        self._poller = _Poller()
        self._thread = threading.Thread(target=self._run, name="gearman-client-io", daemon=True)
        self._thread.start()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection; jobs still in flight raise ConnectionLost."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._poller.wake()
        self._thread.join()
        self._poller.close()

    # -- public API --------------------------------------------------------------

    def submit(self, function: bytes | str, data: bytes | str = b"", *,
               unique: bytes | str | None = None, priority: Priority = Priority.NORMAL,
               background: bool = False, epoch: int | None = None,
               reducer: bytes | str | None = None) -> Job:
        """Submit a job and return it once the server accepted it (JOB_CREATED).

        A server that drops the connection before answering is skipped and the
        next one tried.  Raises ServerError, JobTimeout (``created_timeout``),
        NoServerAvailable or ConnectionLost.
        """
        request = make_submission(function, data, unique=unique, priority=priority,
                                  background=background, epoch=epoch, reducer=reducer)
        n = len(self.servers)
        for attempt in range(n + 1):
            with self._lock:
                start, self._next = self._next, (self._next + 1) % n
            conn = self._pick([(start + i) % n for i in range(n)])  # round-robin
            with self._cond:
                if conn.closed:
                    continue
                job, out = self._session.submit(conn, request)
                conn.out += out
            self._poller.wake()
            with self._cond:
                if not self._cond.wait_for(lambda: job.state is not JobState.PENDING,  # noqa: B023
                                           self.created_timeout):  # (used at once)
                    raise JobTimeout(f"no JOB_CREATED from {self.servers[conn.server]} in time")
                if job.handle is None:  # refused, or lost before it was accepted
                    if job.state is JobState.LOST and attempt < n:
                        continue  # try the next server
                    job_outcome(job)  # type: ignore[arg-type]  # ServerError, ConnectionLost
                handles = self._handles
                handles[job.handle or b""] = conn.server
                if len(handles) > _REMEMBERED_HANDLES:
                    del handles[next(iter(handles))]
            return Job(self, job)
        raise ConnectionLost("every job server dropped the connection")

    def do(self, function: bytes | str, data: bytes | str = b"", *,
           unique: bytes | str | None = None, priority: Priority = Priority.NORMAL,
           reducer: bytes | str | None = None) -> bytes:
        """Run a foreground job and return its result (libgearman's ``gearman_client_do``)."""
        job = self.submit(function, data, unique=unique, priority=priority, reducer=reducer)
        return job.wait() or b""

    def get_status(self, handle: bytes | str) -> StatusRes:
        """Ask for a job's status: from the server that created it, if ours, else the first."""
        handle = to_bytes(handle)
        with self._lock:
            server = self._handles.get(handle)
        order = list(range(len(self.servers))) if server is None else [server]
        return cast(StatusRes, self._ask(self._pick(order), GetStatus(handle)))

    def get_status_unique(self, unique: bytes | str) -> StatusResUnique:
        """Ask the first reachable server about the job with this unique id."""
        conn = self._pick(list(range(len(self.servers))))
        return cast(StatusResUnique, self._ask(conn, GetStatusUnique(to_bytes(unique))))

    def echo(self, data: bytes | str = b"") -> bytes:
        """Send ECHO_REQ to the first reachable server and return what it echoed."""
        conn = self._pick(list(range(len(self.servers))))
        return cast(EchoRes, self._ask(conn, EchoReq(to_bytes(data)))).data

    # -- internals -----------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float | None:
        return self.result_timeout if timeout is None else timeout

    def _pick(self, order: list[int]) -> _Conn:
        """The first server of ``order`` that is connected or connects; those in backoff last."""
        now = time.monotonic()
        with self._lock:
            if self._closed:
                raise GearmanError("client is closed")
            ready = [s for s in order if s in self._conns or self._retry_at[s] <= now]
        errors: list[OSError] = []
        for server in ready + [s for s in order if s not in ready]:
            try:
                return self._connect(server)
            except OSError as exc:
                errors.append(exc)
        raise _unreachable(", ".join(f"{h}:{p}" for h, p in
                                     (self.servers[s] for s in order)) or "any server", errors)

    def _connect(self, server: int) -> _Conn:
        """The open connection to ``server``, connecting now if there is none (OSError if not)."""
        with self._connecting[server]:
            with self._lock:
                conn = self._conns.get(server)
                if conn is not None:
                    return conn
            try:
                sock = _open(self.servers[server], *self._open_args)
            except OSError:
                with self._lock:
                    self._backoff(server)
                raise
            conn = _Conn(sock, server)
            with self._lock:
                if self._closed:
                    conn.close()
                    raise GearmanError("client is closed")
                self._failures[server] = 0
                conn.out += self._session.connect(conn)
                if self.client_id is not None:
                    conn.out += self._session.set_client_id(conn, self.client_id)
                self._conns[server] = conn
        self._poller.wake()
        return conn

    def _backoff(self, server: int) -> None:
        """Leave ``server`` alone for a while after a failure (lock held)."""
        self._failures[server] += 1
        delay = min(_BACKOFF_MIN * 2 ** (self._failures[server] - 1), _BACKOFF_MAX)
        self._retry_at[server] = time.monotonic() + delay

    def _ask(self, conn: _Conn, request: GetStatus | GetStatusUnique | EchoReq) -> object:
        """Send a question and wait (``created_timeout``) for its answer."""
        with self._cond:
            if conn.closed:
                raise ConnectionLost(f"connection to {self.servers[conn.server]} lost")
            reply, out = self._session.ask(conn, request)
            conn.out += out
        self._poller.wake()
        with self._cond:
            if not self._cond.wait_for(lambda: reply.done, self.created_timeout):
                raise JobTimeout(f"no answer to {type(request).__name__} in time")
        if reply.lost:
            raise ConnectionLost(f"connection to {self.servers[conn.server]} lost")
        if isinstance(reply.answer, Error):
            raise ServerError(reply.answer.code, reply.answer.text)
        return reply.answer

    def _lose(self, conn: _Conn) -> None:
        """A connection closed or broke: its jobs are lost, its server backs off (lock held)."""
        self._session.disconnect(conn)
        if self._conns.get(conn.server) is conn:
            del self._conns[conn.server]
            self._backoff(conn.server)
        self._poller.forget(conn)
        conn.close()

    def _run(self) -> None:
        """The I/O thread: write what callers buffered, feed what the servers sent."""
        try:
            while not self._closed:
                with self._lock:
                    conns = list(self._conns.values())
                for conn, data, closed in self._poller.poll(conns, None, self._lock):
                    with self._cond:
                        if conn.closed:
                            continue
                        try:
                            if data:
                                self._session.receive_data(conn, data)
                        except RemoteProtocolError as exc:
                            log.warning("job server %s broke the protocol: %s",
                                        self.servers[conn.server], exc)
                            closed = True
                        if closed:
                            self._lose(conn)
                        self._cond.notify_all()
        finally:
            with self._cond:
                self._closed = True
                for conn in list(self._conns.values()):
                    self._lose(conn)
                self._cond.notify_all()


# -- worker -------------------------------------------------------------------------------


class WorkerJob:
    """A job handed to a handler: what to run, and how to report on it while it runs."""

    __slots__ = ("_conn", "_ended", "_worker", "data", "function", "handle", "unique")

    def __init__(self, worker: Worker, conn: _Conn, assign: JobAssign) -> None:
        self._worker = worker
        self._conn = conn
        self._ended = False
        self.handle = assign.handle
        self.function = assign.function
        self.unique = assign.unique or b""
        self.data = assign.data

    def send_data(self, data: bytes | str) -> None:
        """Stream a piece of the result to the clients (WORK_DATA)."""
        self._report(WorkData(self.handle, to_bytes(data)))

    def send_warning(self, data: bytes | str) -> None:
        """Send the clients a warning (WORK_WARNING)."""
        self._report(WorkWarning(self.handle, to_bytes(data)))

    def send_status(self, numerator: int, denominator: int) -> None:
        """Report progress as numerator / denominator (WORK_STATUS)."""
        self._report(WorkStatus(self.handle, int(numerator), int(denominator)))

    def fail(self) -> None:
        """End the job with WORK_FAIL; the handler's return value is then ignored."""
        self._report(WorkFail(self.handle))

    def _report(self, event: WorkUpdate) -> None:
        if self._ended:
            raise RuntimeError(f"job {self.handle!r} has already ended")
        if isinstance(event, _FINAL):
            self._ended = True
        self._worker._post(self._conn, event)


Handler = Callable[[WorkerJob], "bytes | str | None"]
H = TypeVar("H", bound=Handler)


class Worker:
    """Runs registered handlers for jobs from one or more job servers.

    Never holds more than ``max_jobs`` jobs at a time (each runs in its own
    pool thread); reconnects to a lost server with exponential backoff.
    """

    def __init__(self, servers: ServersArg = None, *, ssl: _ssl.SSLContext | None = None,
                 server_hostname: str | None = None, client_id: bytes | str | None = None,
                 max_jobs: int = 1, reconnect_delay: float = 0.5,
                 max_reconnect_delay: float = 30.0, keepalive: bool | KeepAlive = False,
                 connect_timeout: float = 5.0) -> None:
        if max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        self.servers = parse_servers(servers)
        self._open_args = (ssl, server_hostname, connect_timeout, keepalive)
        self.client_id = None if client_id is None else to_bytes(client_id)
        self.max_jobs = max_jobs
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self._handlers: dict[bytes, tuple[Handler, int | None]] = {}
        self._inbox: deque[tuple[_Conn, WorkUpdate]] = deque()
        self._poller = _Poller()
        self._stop: str | None = None

    def register(self, function: bytes | str, handler: Handler,
                 timeout_ms: int | None = None) -> None:
        """Run ``handler(job)`` for ``function``; with ``timeout_ms``, register CAN_DO_TIMEOUT.

        The return value (bytes, str or None) completes the job; an exception
        sends WORK_EXCEPTION with its message.  Register before :meth:`work`.
        """
        self._handlers[to_bytes(function)] = (handler, timeout_ms)

    def task(self, function: bytes | str, timeout_ms: int | None = None) -> Callable[[H], H]:
        """Decorator form of :meth:`register`: ``@worker.task("reverse")``."""
        def decorate(handler: H) -> H:
            self.register(function, handler, timeout_ms)
            return handler
        return decorate

    def stop(self, graceful: bool = True) -> None:
        """Make :meth:`work` return; graceful: stop grabbing and finish the jobs in hand first.

        Takes no lock, so it may be called from a signal handler.
        """
        self._stop = "now" if not graceful or self._stop == "now" else "graceful"
        self._poller.wake()

    def work(self, stop_after: int | None = None) -> None:
        """Serve jobs from every server until :meth:`stop`, or after ``stop_after`` jobs.

        ``stop_after`` stops grabbing once that many jobs were handed out, then
        returns when they are done.
        """
        if not self._handlers:
            raise ValueError("no function registered")
        session: WorkerSession[_Conn] = WorkerSession(
            {f: t for f, (_, t) in self._handlers.items()}, max_jobs=self.max_jobs,
            client_id=self.client_id)
        n = len(self.servers)
        conns: dict[int, _Conn] = {}
        retry_at: list[float | None] = [0.0] * n
        delay = [self.reconnect_delay] * n
        started = 0
        pool = ThreadPoolExecutor(self.max_jobs, thread_name_prefix="gearman-worker")

        def apply(step: WorkerStep[_Conn]) -> None:
            nonlocal started
            for conn, out in step.writes.items():
                conn.out += out
            for conn, assign in step.jobs:
                started += 1
                pool.submit(self._run, conn, assign)
            for conn, error in step.errors:
                log.warning("job server %s: ERROR %s %s", self.servers[conn.server],
                            error.code.decode(errors="replace"),
                            error.text.decode(errors="replace"))

        def drop(conn: _Conn) -> None:
            session.disconnect(conn, keep_slots=True)  # its handlers run on
            del conns[conn.server]
            self._poller.forget(conn)
            conn.close()
            retry_at[conn.server] = time.monotonic() + delay[conn.server]

        def deliver() -> None:
            while self._inbox:
                conn, event = self._inbox.popleft()
                try:
                    apply(session.send(conn, event))
                except LocalProtocolError as exc:
                    # A report on a handle never given is refused by the session
                    # and leaves the connection as it was; anything the connection
                    # itself refused left it unusable, so it is opened anew.
                    live = session.connections.get(conn)
                    if live is None or live.state is not ConnectionState.ERROR:
                        log.warning("cannot report on job: %s", exc)
                    else:
                        log.warning("cannot report on job: %s; reconnecting", exc)
                        if conns.get(conn.server) is conn:
                            drop(conn)

        try:
            while self._stop != "now":
                if self._stop == "graceful" or (stop_after is not None and started >= stop_after):
                    session.drain()
                deliver()
                if session.draining and session.idle:
                    break
                now = time.monotonic()
                for server, at in enumerate(retry_at):
                    if at is None or at > now or session.draining:
                        continue
                    try:
                        sock = _open(self.servers[server], *self._open_args)
                    except OSError as exc:
                        log.info("cannot connect to %s: %s", self.servers[server], exc)
                        retry_at[server] = time.monotonic() + delay[server]
                        delay[server] = min(delay[server] * 2, self.max_reconnect_delay)
                        continue
                    conn = conns[server] = _Conn(sock, server)
                    retry_at[server] = None
                    apply(session.connect(conn))
                waits = [at for at in retry_at if at is not None]
                timeout = None if not waits or session.draining else max(
                    0.0, min(waits) - time.monotonic())
                for conn, data, closed in self._poller.poll(list(conns.values()), timeout,
                                                            contextlib.nullcontext()):
                    if data:
                        delay[conn.server] = self.reconnect_delay
                        try:
                            apply(session.receive_data(conn, data))
                        except (RemoteProtocolError, LocalProtocolError) as exc:
                            log.warning("job server %s: %s", self.servers[conn.server], exc)
                            closed = True
                    if closed:
                        drop(conn)
        finally:
            session.drain()
            deliver()  # send the reports already made, even when stopping at once
            for conn in list(conns.values()):
                with contextlib.suppress(OSError):  # the last reports, in blocking mode
                    conn.sock.settimeout(self._open_args[2])
                    conn.sock.sendall(conn.out)
                drop(conn)
            pool.shutdown(wait=self._stop != "now", cancel_futures=True)
            self._inbox.clear()
            self._stop = None

    def _post(self, conn: _Conn, event: WorkUpdate) -> None:
        """From a handler thread: hand a report to the loop."""
        self._inbox.append((conn, event))
        self._poller.wake()

    def _run(self, conn: _Conn, assign: JobAssign) -> None:
        """In a pool thread: run the handler and report how the job ended."""
        job = WorkerJob(self, conn, assign)
        try:
            entry = self._handlers.get(assign.function)
            if entry is None:
                raise LookupError(f"no handler for {assign.function!r}")
            result = entry[0](job)
            data = b"" if result is None else to_bytes(result)  # a bad type is the job's error
        except Exception as exc:
            log.debug("job %r raised", assign.handle, exc_info=True)
            if not job._ended:
                job._report(WorkException(assign.handle, to_bytes(str(exc) or type(exc).__name__)))
        else:
            if not job._ended:
                job._report(WorkComplete(assign.handle, data))


# -- admin ----------------------------------------------------------------------------------


class AdminClient:
    """The job server's text admin protocol: one blocking connection, typed results.

    Commands that answer ``OK`` raise :class:`gearman_proto.admin.AdminError`
    for an ``ERR`` reply; list commands return their rows.
    """

    def __init__(self, server: str | Address | None = None, *,
                 ssl: _ssl.SSLContext | None = None, server_hostname: str | None = None,
                 timeout: float = 10.0) -> None:
        self.server = parse_servers(server)[0]
        self._open_args = (ssl, server_hostname, timeout, False)
        self._sock: socket.socket | None = None
        self._conn = admin.AdminClientConnection()
        self._lock = threading.Lock()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (the next command opens a new one)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _command(self, request: admin.AdminRequest) -> Any:
        """Send one command and return its reply; raise AdminError for ``ERR``."""
        with self._lock:
            if self._sock is None:
                try:
                    self._sock = _open(self.server, *self._open_args)
                except OSError as exc:
                    raise _unreachable(f"{self.server[0]}:{self.server[1]}", [exc]) from exc
                self._conn = admin.AdminClientConnection()
            sock, conn = self._sock, self._conn
            try:
                sock.sendall(conn.send(request))
                while True:
                    result = conn.next_event()
                    if not isinstance(result, NeedData):
                        break
                    conn.receive_data(sock.recv(65536))
            except TimeoutError as exc:
                self.close()
                raise JobTimeout(f"no admin reply from {self.server} in time") from exc
            except (OSError, RemoteProtocolError) as exc:
                self.close()
                raise ConnectionLost(f"admin connection to {self.server} lost: {exc}") from exc
        if isinstance(result, admin.AdminError):
            raise result
        return result

    def status(self) -> list[admin.StatusRow]:
        """Per function: jobs queued plus running, running, and available workers."""
        return cast("list[admin.StatusRow]", self._command(admin.Status()))

    def priority_status(self) -> list[admin.PriorityStatusRow]:
        """Per function: waiting jobs per priority, and available workers."""
        return cast("list[admin.PriorityStatusRow]", self._command(admin.PriorityStatus()))

    def workers(self) -> list[admin.WorkerRow]:
        """Every connection with its address, client id and functions."""
        return cast("list[admin.WorkerRow]", self._command(admin.Workers()))

    def show_jobs(self) -> list[admin.JobRow]:
        """Every job the server holds."""
        return cast("list[admin.JobRow]", self._command(admin.ShowJobs()))

    def show_unique_jobs(self) -> list[bytes]:
        """The unique id of every job the server holds."""
        return cast("list[bytes]", self._command(admin.ShowUniqueJobs()))

    def cancel_job(self, handle: bytes | str) -> None:
        """Cancel a job (its clients get WORK_FAIL)."""
        self._command(admin.CancelJob(to_bytes(handle)))

    def create_function(self, name: bytes | str) -> None:
        """Make a function known to the server."""
        self._command(admin.CreateFunction(to_bytes(name)))

    def drop_function(self, name: bytes | str) -> None:
        """Forget a function with no workers and no running jobs."""
        self._command(admin.DropFunction(to_bytes(name)))

    def maxqueue(self, function: bytes | str, *limits: int) -> None:
        """Cap a function's queue: no limit given resets it, one applies to every
        priority, three are (high, normal, low); 0 means unlimited."""
        if len(limits) not in (0, 1, 3):
            raise ValueError("maxqueue takes 0, 1 or 3 limits")
        values = None if not limits else (
            (limits[0],) * 3 if len(limits) == 1 else (limits[0], limits[1], limits[2]))
        self._command(admin.MaxQueue(to_bytes(function), values))

    def getpid(self) -> int:
        """The server's process id."""
        return int(cast(admin.AdminOk, self._command(admin.GetPid())).value or 0)

    def version(self) -> str:
        """The server's version string."""
        return (cast(admin.AdminOk, self._command(admin.Version())).value or b"").decode()

    def verbose(self) -> str:
        """The server's log level name."""
        return (cast(admin.AdminOk, self._command(admin.Verbose())).value or b"").decode()

    def shutdown(self, graceful: bool = False) -> None:
        """Ask the server to shut down (gearmand 1.1.15 and later refuse: AdminError)."""
        self._command(admin.Shutdown(graceful))
