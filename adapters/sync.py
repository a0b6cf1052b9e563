"""Gearman for blocking code: :class:`Client`, :class:`Worker` and :class:`AdminClient`.

These are the asyncio flavour's classes (the one implementation of
:mod:`gearman_proto.adapters._impl`) behind a thread bridge, so the blocking
flavour cannot drift from the others: the same server order and backoff, the
same errors, the same handler rules, the same states.

**Threads.**  Clients and admin clients share one background thread that runs
an asyncio event loop (started on first use, a daemon): each blocking call
hands its coroutine to that loop and waits for the answer, so any number of
threads may submit and wait on any number of jobs.  :meth:`Worker.work` runs
a loop of its own on a thread of its own and waits for it; handlers run in a
pool of ``max_jobs`` threads (async handlers on the worker's loop), and
:meth:`Worker.stop` is safe from any thread and from a signal handler.
Ctrl-C in :meth:`Worker.work` hands the jobs in hand back to their servers
(they requeue them) and re-raises ``KeyboardInterrupt``.

**Timeouts** all raise :class:`JobTimeout`: ``connect_timeout`` per connection
attempt (only when every server timed out; refusals give NoServerAvailable),
``created_timeout`` for JOB_CREATED and for the answers to GET_STATUS and ECHO,
``result_timeout`` (or ``Job.wait(timeout)``) for the result and for each next
update.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from gearman_proto import admin
from gearman_proto.events import (
    Priority,
    StatusRes,
    StatusResUnique,
    WorkData,
    WorkStatus,
    WorkWarning,
)
from gearman_proto.session import JobState

from . import _impl
from . import asyncio as _aio
from ._common import Address, KeepAlive, ServersArg

__all__ = ["Client", "Job", "ClientJob", "Worker", "WorkerJob", "AdminClient", "KeepAlive",
           "JobState"]

T = TypeVar("T")
WorkerJob = _impl.WorkerJob
Handler = _impl.Handler

_STOP_BOUND = 10.0
"""How long Ctrl-C in Worker.work() waits for the worker to hand its jobs back."""


class _Loop:
    """An asyncio event loop on a daemon thread of its own."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it (bounded by the coroutine's own timeouts)."""
        if threading.get_ident() == self.thread.ident:
            raise RuntimeError("a blocking Gearman call was made from its own I/O thread "
                               "(from an async handler?): use the asyncio flavour there")
        future = self.submit(coro)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def close(self) -> None:
        """Stop the loop and its thread, cancelling what still runs on it first.

        A task still there (one that Ctrl-C left, say, handed over but not yet
        started) ends through its own cleanup instead of being destroyed while
        pending; the wait for that is bounded by ``_STOP_BOUND``.
        """
        loop = self.loop

        def stop() -> None:
            tasks = asyncio.all_tasks(loop)
            if not tasks:
                loop.stop()
                return
            for task in tasks:
                task.cancel()
            asyncio.gather(*tasks, return_exceptions=True).add_done_callback(
                lambda _: loop.stop())
            loop.call_later(_STOP_BOUND, loop.stop)

        loop.call_soon_threadsafe(stop)
        self.thread.join()
        loop.close()


_shared: _Loop | None = None
_shared_lock = threading.Lock()


def _io() -> _Loop:
    """The loop every blocking Client and AdminClient runs on (started on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.thread.is_alive():
            _shared = _Loop("gearman-io")
        return _shared


def _make(cls: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Build an adapter object on the I/O loop (its primitives belong to that loop)."""
    async def make() -> T:
        return cls(*args, **kwargs)
    return _io().call(make())


# -- client -------------------------------------------------------------------------------


class Job:
    """A job this client submitted: its handle, its progress, and its result to wait for."""

    __slots__ = ("_job",)

    def __init__(self, job: _impl.ClientJob) -> None:
        self._job = job

    handle = property(lambda self: self._job.handle, doc="The job handle the server gave.")
    function = property(lambda self: self._job.function, doc="The function it was submitted to.")
    background = property(lambda self: self._job.background, doc="True for a background job.")
    state = property(lambda self: self._job.state,
                     doc="Where the job is, as far as this client knows (a JobState).")
    server = property(lambda self: self._job.server, doc="The job server that holds the job.")
    numerator = property(lambda self: self._job.numerator, doc="The last WORK_STATUS numerator.")
    denominator = property(lambda self: self._job.denominator,
                           doc="The last WORK_STATUS denominator.")
    status = property(lambda self: self._job.status,
                      doc="The last WORK_STATUS as (numerator, denominator).")

    def __repr__(self) -> str:
        return repr(self._job).replace("<ClientJob", "<Job", 1)

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for the end of the job and return its result (``None`` for a background job).

        ``timeout`` defaults to the client's ``result_timeout`` (``None``:
        forever).  Raises JobFailed, JobException, ConnectionLost or JobTimeout.
        """
        return _io().call(self._job.wait(timeout))

    result = wait
    """The same as :meth:`wait` (the async flavours' earlier name)."""

    def updates(self, timeout: float | None = None
                ) -> Iterator[WorkData | WorkWarning | WorkStatus]:
        """Yield WORK_DATA, WORK_WARNING and WORK_STATUS as they arrive; stop when the job ends.

        ``timeout`` (default: the client's ``result_timeout``) bounds the wait
        for each next update.  Call :meth:`wait` afterwards for the outcome.
        """
        it = self._job.updates(timeout)

        async def step() -> tuple[bool, Any]:
            try:
                return True, await it.__anext__()
            except StopAsyncIteration:
                return False, None
        loop = _io()
        while True:
            more, update = loop.call(step())
            if not more:
                return
            yield update


ClientJob = Job


class Client:
    """Submits jobs to one or more job servers and waits for their results.

    The asyncio flavour's :class:`~gearman_proto.adapters.asyncio.Client`, with
    the same options and behaviour, called from blocking code.  Close it (or
    use ``with``) to end its connections.
    """

    def __init__(self, servers: ServersArg = None, **options: Any) -> None:
        """``options`` are those of the asyncio :class:`~gearman_proto.adapters.asyncio.Client`
        (``connect_timeout``, ``created_timeout``, ``result_timeout``, ``retry_delay``, ...)."""
        self._client: _aio.Client = _make(_aio.Client, servers, **options)

    def __getattr__(self, name: str) -> Any:
        # Options and state (servers, result_timeout, client_id, pool, ...) are the
        # asyncio client's, so the two read and set alike.
        return getattr(self.__dict__["_client"], name)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection; jobs still in flight raise ConnectionLost."""
        _io().call(self._client.close())

    def submit(self, function: bytes | str, data: Any = b"", *,
               unique: bytes | str | None = None, priority: Priority = Priority.NORMAL,
               background: bool = False, epoch: int | None = None,
               reducer: bytes | str | None = None) -> Job:
        """Submit a job and return it once the server accepted it (JOB_CREATED)."""
        return Job(_io().call(self._client.submit(
            function, data, unique=unique, priority=priority, background=background,
            epoch=epoch, reducer=reducer)))

    def do(self, function: bytes | str, data: Any = b"", *,
           unique: bytes | str | None = None, priority: Priority = Priority.NORMAL,
           reducer: bytes | str | None = None, timeout: float | None = None) -> Any:
        """Run a foreground job and return its result (libgearman's ``gearman_client_do``)."""
        return _io().call(self._client.do(function, data, unique=unique, priority=priority,
                                          reducer=reducer, timeout=timeout))

    def get_status(self, handle: bytes | str) -> StatusRes:
        """GET_STATUS: asked of the server that issued ``handle`` if it is ours, else the first."""
        return _io().call(self._client.get_status(handle))

    def get_status_unique(self, unique: bytes | str) -> StatusResUnique:
        """GET_STATUS_UNIQUE: the job with this unique id, and how many clients wait on it."""
        return _io().call(self._client.get_status_unique(unique))

    def echo(self, data: bytes | str = b"") -> bytes:
        """ECHO_REQ: the first reachable server sends ``data`` back."""
        return _io().call(self._client.echo(data))


# -- worker -------------------------------------------------------------------------------


class Worker(_aio.Worker):
    """Runs registered handlers for jobs from one or more job servers, from blocking code.

    The asyncio flavour's :class:`~gearman_proto.adapters.asyncio.Worker`
    (same options, same rules); :meth:`work` blocks, running that worker's
    loop on a thread of its own.  Handlers are plain functions run in a pool
    of ``max_jobs`` threads (async ones run on the worker's loop).
    """

    def work(self, stop_after: int | None = None) -> None:  # type: ignore[override]
        """Serve jobs from every server until :meth:`stop`, or after ``stop_after`` jobs."""
        if not self.handlers:
            raise ValueError("register at least one function before work()")
        # Ctrl-C may come at any point, even while the loop's thread starts or the
        # work is handed to it (the work may then run with no future here to wait
        # on): so everything from the thread's start on is inside the try.
        loop: _Loop | None = None
        future: concurrent.futures.Future[None] | None = None
        try:
            loop = _Loop("gearman-worker-io")
            future = loop.submit(super().work(stop_after))
            future.result()
        except KeyboardInterrupt:
            # Hand the jobs in hand back (the servers requeue them), within a bound.
            self.stop(graceful=False)
            if future is not None:
                try:
                    future.result(_STOP_BOUND)
                except BaseException:  # whatever it ended with, Ctrl-C wins
                    pass
            # A fresh one: the caller's traceback ends at work(), not in the
            # thread machinery it was waiting in.
            raise KeyboardInterrupt from None
        finally:
            if loop is not None:
                loop.close()


# -- admin ----------------------------------------------------------------------------------


class AdminClient:
    """The job server's text admin protocol, from blocking code, with typed results.

    The asyncio flavour's :class:`~gearman_proto.adapters.asyncio.AdminClient`;
    commands answered ``ERR`` raise :class:`gearman_proto.admin.AdminError`.
    """

    def __init__(self, server: str | Address | None = None, *, ssl: Any = None,
                 server_hostname: str | None = None, timeout: float | None = 10.0) -> None:
        self._admin: _aio.AdminClient = _make(_aio.AdminClient, server, ssl=ssl,
                                              server_hostname=server_hostname,
                                              timeout=timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_admin"], name)

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (the next command opens a new one)."""
        _io().call(self._admin.close())

    def command(self, request: admin.AdminRequest) -> admin.AdminResult:
        """Send one admin command and return its parsed reply (an ERR is returned)."""
        return _io().call(self._admin.command(request))

    def status(self) -> list[admin.StatusRow]:
        """``status``: per function, jobs queued and running, and available workers."""
        return _io().call(self._admin.status())

    def priority_status(self) -> list[admin.PriorityStatusRow]:
        """``prioritystatus``: per function, queued jobs per priority."""
        return _io().call(self._admin.priority_status())

    def workers(self) -> list[admin.WorkerRow]:
        """``workers``: every connection with its client id and functions."""
        return _io().call(self._admin.workers())

    def show_jobs(self) -> list[admin.JobRow]:
        """``show jobs``."""
        return _io().call(self._admin.show_jobs())

    def show_unique_jobs(self) -> list[bytes]:
        """``show unique jobs``."""
        return _io().call(self._admin.show_unique_jobs())

    def cancel_job(self, handle: bytes | str) -> None:
        """``cancel job HANDLE``; raises AdminError (UNKNOWN_JOB) if there is none."""
        _io().call(self._admin.cancel_job(handle))

    def create_function(self, function: bytes | str) -> None:
        """``create function NAME``."""
        _io().call(self._admin.create_function(function))

    def drop_function(self, function: bytes | str) -> None:
        """``drop function NAME``."""
        _io().call(self._admin.drop_function(function))

    def maxqueue(self, function: bytes | str, *limits: int) -> None:
        """``maxqueue FUNC [N | HIGH NORMAL LOW]``: no number resets to unlimited."""
        _io().call(self._admin.maxqueue(function, *limits))

    def getpid(self) -> int:
        """``getpid``."""
        return _io().call(self._admin.getpid())

    def version(self) -> str:
        """``version``."""
        return _io().call(self._admin.version())

    def verbose(self) -> str:
        """``verbose``: the server's log level name."""
        return _io().call(self._admin.verbose())

    def shutdown(self, graceful: bool = False) -> None:
        """``shutdown [graceful]`` (servers that allow it)."""
        _io().call(self._admin.shutdown(graceful))
