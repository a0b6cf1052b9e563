"""The seam between the one Client / Worker / AdminClient and an event loop.

:mod:`gearman_proto.adapters._impl` is written once against the two small
interfaces here; :mod:`._asyncio_backend` binds them to asyncio (raw
Protocols, bare futures: the fastest path) and :mod:`._anyio_backend` to anyio
(whose trio backend is the trio flavour).  The blocking flavour runs the
asyncio binding on a thread of its own.  A backend moves bytes, waits and
schedules; it decides nothing a user could observe, except that it maps its
event loop's errors onto ``OSError`` and :class:`~gearman_proto.policy.JobTimeout`
at the boundary, in one place.
"""

from __future__ import annotations

import abc
import ssl as _ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from gearman_proto.policy import PENDING

from ._common import Address, KeepAlive

__all__ = ["thread_caller", "ConnectOptions", "Link", "Backend", "Event", "TaskGroup",
           "ThreadRunner", "Watched"]

OnData = Callable[[bytes], object]
"""Called with each read; raising RemoteProtocolError (or OSError) ends the link with it."""
OnClose = Callable[[BaseException | None], None]
"""Called once when the link ends: the error that ended it, or ``None`` for EOF or close()."""


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How to open a connection to a job server."""

    ssl: _ssl.SSLContext | None = None
    server_hostname: str | None = None
    timeout: float | None = 5.0
    keepalive: bool | KeepAlive = False


class Link(abc.ABC):
    """One open connection.  Writes never wait; every read goes to ``on_data``.

    A link is read in one of two ways: :meth:`run` (a worker: a task of its
    own reads and writes until the connection ends) or :meth:`wait` (a client
    or admin client: whoever waits for an answer makes sure the link is read).
    """

    error: BaseException | None = None
    """What ended the link, once :attr:`closed`."""

    read_buffer: list[bytes] | None = None
    """Where ``on_data`` may append output instead of calling :meth:`write`, if the
    link has one: the link sends it when ``on_data`` returns (``None``: it has not)."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once the connection ended (``on_close`` has run)."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Queue ``data`` for the peer, in order."""

    @abc.abstractmethod
    def close(self) -> None:
        """Send what is queued, then close; ``on_close(None)`` follows."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Read and write until the connection ends."""

    @abc.abstractmethod
    async def wait(self, ready: Callable[[], bool], timeout: float | None,
                   watch: Watched | None = None) -> bool:
        """Wait until ``ready()`` or the link closed or ``timeout`` seconds passed.

        Returns ``ready()``.  The link is read meanwhile, so the answer can arrive.
        ``watch``, a session record whose ``on_change`` is called after every
        change to it, lets a backend wake this waiter alone rather than asking
        every waiter's ``ready()`` after every read.
        """

    @abc.abstractmethod
    async def drain(self, deadline: float | None) -> None:
        """Wait until what was written has been handed to the socket (or the link closed)."""


class Watched(Protocol):
    """A session record (Job, Reply) that calls ``on_change`` after each change."""

    on_change: Callable[[Any], None] | None


class Event(Protocol):
    """A one-shot flag tasks can wait for."""

    def set(self) -> None: ...
    def is_set(self) -> bool: ...
    async def wait(self) -> Any: ...


class TaskGroup(abc.ABC):
    """Tasks that end with the group: :meth:`cancel` stops them, leaving waits for them."""

    @abc.abstractmethod
    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None: ...

    def run_job(self, job: Any, coro: Awaitable[Any],
                done: Callable[[Any, Any, Exception | None], object]) -> Any:
        """Run a job's handler coroutine ``coro`` in the group: at once, up to its first
        real wait, when the event loop allows that.

        Returns its value if it finished at once (and raises what it raised
        then); else returns :data:`~gearman_proto.policy.PENDING`, and
        ``done(job, value, None)`` or ``done(job, None, error)`` is called in the
        group when it ends.  Either way a wait, a cancellation or an error in it
        is what it would be in a task of its own (a cancellation calls no
        ``done``).  For a handler that returns without waiting, running it at
        once saves a task and a turn of the event loop; this default always
        starts a task.
        """
        self.start_soon(_finish, done, job, coro)
        return PENDING

    @abc.abstractmethod
    def cancel(self) -> None: ...

    @abc.abstractmethod
    async def __aenter__(self) -> TaskGroup: ...

    @abc.abstractmethod
    async def __aexit__(self, *exc: object) -> bool | None: ...


async def _finish(done: Callable[[Any, Any, Exception | None], object], job: Any,
                  coro: Awaitable[Any]) -> None:
    try:
        value = await coro
    except Exception as exc:  # the handler's, for done() to report
        done(job, None, exc)
    else:
        done(job, value, None)


class ThreadRunner(abc.ABC):
    """Runs blocking handlers, at most ``size`` at once, in threads of the worker's own."""

    @abc.abstractmethod
    async def run(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Release the threads (a handler still running is abandoned, not interrupted)."""


Lock = AbstractAsyncContextManager[Any]
"""``async with lock:``: one task at a time."""


class Backend(abc.ABC):
    """An event loop's primitives, as the one implementation needs them."""

    @abc.abstractmethod
    def now(self) -> float:
        """The event loop's clock (monotonic seconds), in which deadlines are given."""

    @abc.abstractmethod
    async def sleep(self, seconds: float) -> None: ...

    @abc.abstractmethod
    async def connect(self, address: Address, options: ConnectOptions, on_data: OnData,
                      on_close: OnClose | None = None) -> Link:
        """Open a connection; raises OSError, or JobTimeout after ``options.timeout``."""

    event: Callable[[], Event]
    """A new one-shot flag."""
    lock: Callable[[], Lock]
    """A new lock."""
    task_group: Callable[[], TaskGroup]
    """A new task group (``async with``)."""
    thread_runner: Callable[[int], ThreadRunner]
    """Threads for at most that many blocking handlers at once."""

    @abc.abstractmethod
    def caller(self) -> Callable[..., None]:
        """A function that runs ``fn(*args)`` in this event loop, called from any thread
        (at once when called from the loop's own thread)."""


def thread_caller(post: Callable[..., None]) -> Callable[..., None]:
    """A caller (see :meth:`Backend.caller`) for the loop of this thread.

    ``post(fn, *args)`` hands a call to the loop from another thread; a call
    made on the loop's own thread runs at once, so a report from an async
    handler is written before the handler goes on.
    """
    me = threading.get_ident()

    def call(fn: Callable[..., Any], *args: Any) -> None:
        if threading.get_ident() == me:
            fn(*args)
        else:
            post(fn, *args)
    return call
