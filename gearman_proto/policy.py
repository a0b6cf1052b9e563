"""The decisions a client, worker or admin client program makes, written once.

:mod:`gearman_proto.session` follows one conversation per connection and the
jobs on it.  Around that, a program decides things its user can observe:
which server gets the next submission, how long a server that failed is left
alone, what a submission lost before JOB_CREATED becomes, which error to raise
when no server answers, what a handler's return value or exception becomes on
the wire, what a finished job gives its waiter.  Every adapter (blocking,
asyncio, anyio, trio) asks this module, so the four behave alike; nothing
here does I/O or reads a clock (``now`` is passed in).

The errors an application sees are defined here too, since choosing which one
to raise is part of the policy; :mod:`gearman_proto.adapters` re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .events import (
    JobAssign,
    WorkComplete,
    WorkException,
    WorkFail,
    WorkUpdate,
)
from .session import Job, JobState, WorkerDriver, WorkerSession

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # a pure-Python install without mypy: the option is mypyc's alone
    def mypyc_attr(*attrs: str, **kwattrs: object) -> Any:  # type: ignore[misc]
        """mypyc's class options (read by mypyc at build time): nothing at run time."""
        return lambda cls: cls

__all__ = [
    "GearmanError",
    "ConnectionLost",
    "NoServerAvailable",
    "ServerError",
    "JobFailed",
    "JobException",
    "JobTimeout",
    "JobEnded",
    "Backoff",
    "ServerPool",
    "REMEMBERED_HANDLES",
    "job_outcome",
    "handler_outcome",
    "exception_text",
    "unreachable",
    "second_try",
    "describe",
    "JobInHand",
    "HandlerDriver",
    "PENDING",
]

Address = tuple[str, int]


# -- the errors an application sees ---------------------------------------------------
# Python classes in the compiled build too (native_class=False): mypyc makes no native
# class with two builtin bases, and users subclass these (adapters/compat.py does).


@mypyc_attr(native_class=False)
class GearmanError(Exception):
    """Base of every error the clients, workers and admin clients raise."""


@mypyc_attr(native_class=False)
class ConnectionLost(GearmanError, ConnectionError):
    """The connection to the job server closed while a job or question was in flight.

    The job may still run on that server; its result cannot reach us.
    """


@mypyc_attr(native_class=False)
class NoServerAvailable(GearmanError, ConnectionError):
    """None of the configured job servers accepted a connection.

    Also a :class:`ConnectionError`, so code that catches ``OSError`` around a
    connect keeps working.
    """


@mypyc_attr(native_class=False)
class ServerError(GearmanError):
    """The job server answered ERROR (``code`` is gearmand's name, e.g. ``QUEUE_ERROR``).

    ``refused`` names the packet the server refused, when known: a server
    without some SUBMIT_JOB variant (Perl's Gearman::Server has no
    SUBMIT_JOB_LOW, _HIGH_BG, _LOW_BG) refuses that priority.
    """

    def __init__(self, code: bytes, text: bytes, refused: str | None = None) -> None:
        reason = f"{code.decode('ascii', 'replace')}: {text.decode('utf-8', 'replace').strip()}"
        super().__init__(reason if refused is None
                         else f"the job server refused {refused} ({reason})")
        self.code = code
        self.text = text
        self.refused = refused


@mypyc_attr(native_class=False)
class JobFailed(GearmanError):
    """The job ended with WORK_FAIL (or was failed by the server)."""

    def __init__(self, handle: bytes | None, message: str = "job failed",
                 function: bytes | None = None) -> None:
        super().__init__(message)
        self.handle = handle
        self.function = function


@mypyc_attr(native_class=False)
class JobException(JobFailed):
    """The job ended with WORK_EXCEPTION; ``data`` is the worker's message."""

    def __init__(self, handle: bytes | None, data: bytes, function: bytes | None = None) -> None:
        super().__init__(handle, f"job {_name(handle, function)} raised an exception: "
                                 f"{data.decode('utf-8', 'replace')}", function)
        self.data = data


@mypyc_attr(native_class=False)
class JobTimeout(GearmanError, TimeoutError):
    """A timeout expired: connecting, waiting for JOB_CREATED, or waiting for the result."""


@mypyc_attr(native_class=False)
class JobEnded(GearmanError, RuntimeError):
    """A worker reported on a job after its final report (complete, fail, exception)."""


def _name(handle: bytes | None, function: bytes | None) -> str:
    h = (handle or b"?").decode("utf-8", "replace")
    if function is None:
        return h
    return f"{h} ({function.decode('utf-8', 'replace')})"


def describe(address: Address) -> str:
    """``host:port`` as a person types it (``[v6]:port`` for IPv6)."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- which server ---------------------------------------------------------------------


@dataclass(slots=True)
class Backoff:
    """How long a server that failed is left alone: ``initial`` doubling up to ``maximum``.

    The same rule serves a client's submissions (a server in backoff is tried
    last, not skipped) and a worker's reconnects (it waits :meth:`delay`).
    """

    initial: float = 0.5
    maximum: float = 30.0
    failures: int = 0
    retry_at: float = 0.0

    def __post_init__(self) -> None:
        if self.initial < 0:
            raise ValueError(f"a retry delay cannot be negative, got {self.initial}")
        # A first delay above the cap (retry_delay=60 with the default cap of 30)
        # means "wait that long": the cap rises to it.
        self.maximum = max(self.maximum, self.initial)

    def delay(self) -> float:
        """The wait after the failures so far (0 before the first)."""
        if not self.failures:
            return 0.0
        return min(self.initial * 2.0 ** (self.failures - 1), self.maximum)

    def failed(self, now: float) -> float:
        """Count a failure at ``now``; returns how long to wait before the next try."""
        self.failures += 1
        wait = self.delay()
        self.retry_at = now + wait
        return wait

    def succeeded(self) -> None:
        """The server answered: the next failure starts from ``initial`` again."""
        self.failures = 0
        self.retry_at = 0.0

    def ready(self, now: float) -> bool:
        """True once the wait after the last failure is over."""
        return now >= self.retry_at


REMEMBERED_HANDLES = 10_000
"""How many recent job handles a client remembers the server of (for ``get_status``)."""


@dataclass(slots=True)
class ServerPool:
    """A client's servers: the order to try them in, their backoff, and handle affinity.

    Submissions go round-robin.  Each call of :meth:`order` takes the next
    starting point at once, so concurrent submissions that wait for a connect
    never shift each other's turn.  A server that failed stays in the order,
    after the ones that did not: while every server is in backoff, the one
    whose wait is nearest over is still tried rather than failing at once.
    """

    count: int
    retry_delay: float = 0.5
    max_retry_delay: float = 30.0
    remembered: int = REMEMBERED_HANDLES
    _backoff: list[Backoff] = field(default_factory=list)
    _next: int = 0
    _handles: dict[bytes, int] = field(default_factory=dict)
    _timed_out: set[int] = field(default_factory=set)
    _failing: set[int] = field(default_factory=set)
    """Servers whose last attempt failed (so :meth:`order` must look at their backoff)."""

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("no job server given")
        self._backoff = [Backoff(self.retry_delay, self.max_retry_delay)
                         for _ in range(self.count)]

    def order(self, now: float, prefer: int | None = None) -> list[int]:
        """The servers to try for the next request, best first.

        ``prefer`` (the server that issued a handle) comes first; then, from
        this call's turn on, the servers not in backoff, then those in backoff
        by the time their wait ends.
        """
        start = self._next
        count = self.count
        self._next = (start + 1) % count
        if not self._failing and prefer is None:  # the usual case, asked per submission
            return [0] if count == 1 else [(start + i) % count for i in range(count)]
        turn = [(start + i) % count for i in range(count)]
        ready = [i for i in turn if self._backoff[i].ready(now)]
        waiting = sorted((i for i in turn if not self._backoff[i].ready(now)),
                         key=lambda i: self._backoff[i].retry_at)
        out = ready + waiting
        if prefer is not None and 0 <= prefer < self.count:
            out.remove(prefer)
            out.insert(0, prefer)
        return out

    def submission_plan(self, now: float) -> list[int]:
        """The servers a submission may go to, in turn: each once, then the first again.

        A submission whose connection drops before JOB_CREATED goes to the next
        one; the first comes again at the end because a connection that was
        closed while idle (a restarted server) fails the first try only.
        """
        return second_try(self.order(now))

    def first(self, now: float) -> list[int]:
        """The servers in their configured order, those in backoff last (for questions)."""
        ready = [i for i in range(self.count) if self._backoff[i].ready(now)]
        return ready + [i for i in range(self.count) if i not in ready]

    def connected(self, server: int) -> None:
        """A connection to ``server`` opened."""
        self._backoff[server].succeeded()
        self._timed_out.discard(server)
        self._failing.discard(server)

    def failed(self, server: int, now: float, *, timed_out: bool = False) -> float:
        """Connecting to ``server`` failed, or its connection broke; returns its backoff."""
        if timed_out:
            self._timed_out.add(server)
        else:
            self._timed_out.discard(server)
        self._failing.add(server)
        return self._backoff[server].failed(now)

    def all_timed_out(self, servers: Sequence[int]) -> bool:
        """True if the last connect attempt to each of ``servers`` timed out."""
        return bool(servers) and all(s in self._timed_out for s in servers)

    def remember(self, handle: bytes, server: int) -> None:
        """``server`` issued ``handle``: ask it about the job later (bounded memory)."""
        handles = self._handles
        handles[handle] = server
        while len(handles) > self.remembered:
            del handles[next(iter(handles))]

    def server_of(self, handle: bytes) -> int | None:
        """The server that issued ``handle``, if it is still remembered."""
        return self._handles.get(handle)

    def __len__(self) -> int:
        return len(self._handles)


def second_try(order: list[int]) -> list[int]:
    """``order`` with its first server once more at the end: what a request lost with
    its connection before the answer may be sent to (a connection closed while idle,
    by a restarted server, fails the first try only)."""
    return order + order[:1]


def unreachable(addresses: Sequence[Address], timed_out: bool, why: str | None = None
                ) -> GearmanError:
    """The error for "no server answered": :class:`JobTimeout` if every attempt timed out."""
    names = ", ".join(describe(a) for a in addresses)
    if timed_out:
        return JobTimeout(f"timed out connecting to {names}")
    return NoServerAvailable(f"no job server reachable: {names}" + (f" ({why})" if why else ""))


# -- what a job gives its waiter ------------------------------------------------------


def job_outcome(job: Job[object], address: Address | None = None) -> bytes | None:
    """The value a finished job gives its waiter, or the exception it raises.

    A completed foreground job gives its result (``b""`` for none); an accepted
    background job gives ``None``.
    """
    state = job.state
    function = job.request.function
    if state is JobState.COMPLETE:
        return job.result if job.result is not None else b""
    if state is JobState.QUEUED and job.background:
        return None
    if state is JobState.FAILED:
        raise JobFailed(job.handle, f"job {_name(job.handle, function)} failed", function)
    if state is JobState.EXCEPTION:
        raise JobException(job.handle, job.exception or b"", function)
    if state is JobState.REFUSED:
        assert job.error is not None
        raise ServerError(job.error.code, job.error.text, job.request.packet_type.name)
    if state is JobState.LOST:
        where = describe(address) if address is not None else repr(job.server)
        what = _name(job.handle, function) if job.handle else \
            f"submission of {function.decode('utf-8', 'replace')}"
        raise ConnectionLost(f"connection to job server {where} lost before {what} finished")
    raise RuntimeError(f"job is not finished (state {state.value})")


# -- what a handler's end becomes -----------------------------------------------------


def exception_text(exc: BaseException) -> bytes:
    """WORK_EXCEPTION's text for a handler's exception: ``Type: message``, or ``Type``."""
    message = str(exc)
    name = type(exc).__name__
    return (f"{name}: {message}" if message else name).encode("utf-8", "replace")


def handler_outcome(handle: bytes, result: object = None, exc: BaseException | None = None
                    ) -> WorkComplete | WorkException | WorkFail:
    """The final report for a handler that returned ``result`` or raised ``exc``.

    A return of bytes or str completes the job with it (str as UTF-8), ``None``
    with no data; any other return value is the handler's error, reported as
    an exception (``bytes(42)`` would be 42 NUL bytes, not a result).
    """
    if exc is not None:
        return WorkException(handle, exception_text(exc))
    if type(result) is bytes:  # the usual case first: once per job
        return WorkComplete(handle, result)
    if result is None:
        return WorkComplete(handle, b"")
    if isinstance(result, str):
        return WorkComplete(handle, result.encode("utf-8"))
    if isinstance(result, (bytes, bytearray, memoryview)):
        return WorkComplete(handle, bytes(memoryview(result)))
    return WorkException(handle, exception_text(TypeError(
        f"a handler returns bytes, str or None, not {type(result).__name__}")))



# -- a worker's jobs, started and ended -----------------------------------------------


@mypyc_attr(allow_interpreted_subclasses=True)
class JobInHand:
    """The fields of a job a worker's handler runs, and whether it ended.

    The adapters' ``WorkerJob`` derives from it and adds the reporting methods:
    the fields are set by compiled code in the compiled build, once per job.
    """

    __slots__ = ("_key", "_worker", "data", "ended", "failed", "function", "handle",
                 "reducer", "unique")

    def __init__(self, worker: Any, key: int, assign: JobAssign) -> None:
        self._worker = worker
        self._key = key
        self.handle: bytes = assign.handle
        self.function: bytes = assign.function
        unique = assign.unique
        self.unique: bytes = b"" if unique is None else unique
        self.reducer: bytes | None = assign.reducer
        self.data: bytes = assign.data
        self.failed = False
        """True once :meth:`fail` was called."""
        self.ended = False
        """True once the job's final report was made."""


class _Pending:
    __slots__ = ()

    def __repr__(self) -> str:
        return "PENDING"


PENDING: Final = _Pending()
"""What a task group's ``run_job`` returns for a handler that goes on after its first step."""


class HandlerDriver(WorkerDriver[int]):
    """A worker's per-job path with its handlers: each job's handler started, its end reported.

    For every job the session gives, this builds the job object
    (``job_type(worker, key, assign)``), finds the handler for its function and
    hands the handler's coroutine (``handler(job)`` for an async handler,
    ``run_sync(handler, job)`` for a sync one) to ``run(job, coroutine, done)``:
    the adapter's task group, which runs it up to its first wait where it can
    and returns its value, or :data:`PENDING` when it goes on (then
    :meth:`done` is called with its value or error when it ends).  A handler
    that raised is told to ``on_failure(job, exc)`` (a log line); the final
    report is :func:`handler_outcome`'s, unless the handler made one itself.
    ``encode`` (if given) turns a handler's return value into the payload
    first; a value it cannot carry is the job's error.  ``is_async(handler)``
    says whether a handler is a coroutine function (remembered per handler).
    """

    __slots__ = ("_async", "_done", "encode", "handlers", "is_async", "job_type", "on_failure",
                 "run", "run_sync", "worker")

    def __init__(self, session: WorkerSession[int], worker: Any,
                 handlers: dict[bytes, Any], job_type: Callable[..., JobInHand],
                 run: Callable[[JobInHand, Any, Callable[[JobInHand, Any, Exception | None],
                                                          None]], Any],
                 run_sync: Callable[[Any, Any], Any],
                 is_async: Callable[[Any], bool],
                 on_failure: Callable[[JobInHand, Exception], object],
                 encode: Callable[[Any], bytes] | None,
                 writers: dict[int, Callable[[bytes], object]],
                 on_error: Callable[[int, Any], object],
                 on_refused: Callable[[int, WorkUpdate, Exception], object],
                 on_idle: Callable[[], object], stop_after: int | None = None,
                 buffers: dict[int, list[bytes]] | None = None) -> None:
        super().__init__(session, _not_started, writers, on_error, on_refused, on_idle,
                         stop_after, buffers)
        self.worker = worker
        self.handlers = handlers
        self.job_type = job_type
        self.run = run
        self.run_sync = run_sync
        self.is_async = is_async
        self.on_failure = on_failure
        self.encode = encode
        self._async: dict[Any, bool] = {}
        self._done = self.done  # one bound method for every job

    def start_job(self, key: int, assign: JobAssign) -> tuple[int, WorkUpdate] | None:
        job = self.job_type(self.worker, key, assign)
        handler = self.handlers.get(assign.function)
        try:
            if handler is None:
                raise LookupError(f"no handler for {assign.function!r}")
            try:
                is_async = self._async[handler]
            except KeyError:
                is_async = self._async[handler] = self.is_async(handler)
            except TypeError:  # an unhashable callable object
                is_async = self.is_async(handler)
            coro = handler(job) if is_async else self.run_sync(handler, job)
            value = self.run(job, coro, self._done)
        except Exception as exc:  # the handler's failure is the job's, not the worker's
            self.on_failure(job, exc)
            return self._outcome(job, None, exc)
        if value is PENDING:
            return None
        return self._outcome(job, value, None)

    def done(self, job: JobInHand, value: Any, error: Exception | None) -> None:
        """A handler that went on after its first step returned ``value`` or raised ``error``."""
        if error is not None:
            self.on_failure(job, error)
        self.finish(self._outcome(job, value, error))

    def _outcome(self, job: JobInHand, result: Any, error: Exception | None
                 ) -> tuple[int, WorkUpdate] | None:
        encode = self.encode
        if error is None and encode is not None and not job.ended:
            try:
                result = encode(result)
            except Exception as exc:  # a value the codec cannot carry: the job's error
                error = exc
        if job.ended:
            return None
        job.ended = True
        return job._key, handler_outcome(job.handle, result, error)


def _not_started(key: int, assign: JobAssign) -> None:
    raise RuntimeError("HandlerDriver starts its jobs itself")
