"""The seam bound to anyio: streams, task groups, cancel scopes; trio through anyio.

Structured concurrency shapes the link.  A client starts no background task
(none may outlive its caller's task group), so whoever waits for an answer
sends what is queued and, if nobody else is reading, reads the connection for
everybody, waking the others after each read.  A worker's link is run by a
task of the worker's own group: a reader, and a writer fed through a buffer so
that handing out the core's bytes never waits on a socket.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import ByteStream, SocketAttribute

from gearman_proto.errors import RemoteProtocolError
from gearman_proto.policy import JobTimeout, describe

from ._backend import (
    Backend,
    ConnectOptions,
    Link,
    OnClose,
    OnData,
    TaskGroup,
    Watched,
    thread_caller,
)
from ._backend import ThreadRunner as _ThreadRunner
from ._common import Address, apply_keepalive

__all__ = ["AnyioBackend", "BACKEND", "BROKEN", "why"]

_READ = 256 * 1024
BROKEN = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream)
"""What a stream raises when the connection is gone."""


def why(exc: object) -> str:
    """A reason to log, also for anyio's message-less errors (whose cause says more)."""
    return str(exc) or repr(getattr(exc, "__cause__", None) or exc)


class _Link(Link):
    def __init__(self, stream: ByteStream, on_data: OnData, on_close: OnClose | None) -> None:
        self.stream = stream
        self.on_data = on_data
        self.on_close = on_close
        self.error: BaseException | None = None
        self._closed = False
        self._closing = False
        self._out: list[bytes] = []
        self._reading = False
        self._sending = anyio.Lock()
        self._changed = anyio.Event()
        self._more = anyio.Event()  # output queued (for run()'s writer)

    @property
    def closed(self) -> bool:
        return self._closed

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _end(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        self.error = exc
        self._out.clear()
        if self.on_close is not None:
            self.on_close(exc)
        self._more.set()
        self._wake()

    def write(self, data: bytes) -> None:
        if data and not self._closing and not self._closed:
            self._out.append(data)
            self._more.set()

    def close(self) -> None:
        self._closing = True
        self._more.set()
        self._wake()

    async def _flush(self) -> None:
        """Send what is queued, in order; shielded, since a packet cut in half
        would make the server read the next one wrong."""
        if not self._out or self._closed:
            return
        try:
            with anyio.CancelScope(shield=True):
                async with self._sending:
                    while self._out:
                        data = b"".join(self._out)
                        self._out.clear()
                        await self.stream.send(data)
        except BROKEN as exc:
            self._end(exc)
            await anyio.aclose_forcefully(self.stream)

    async def _read_once(self) -> None:
        self._reading = True
        try:
            try:
                data = await self.stream.receive(_READ)
            except anyio.EndOfStream:
                data = b""
            if data:
                self.on_data(data)
            else:
                self._end(None)
        except (*BROKEN, RemoteProtocolError) as exc:
            self._end(exc)
        finally:
            self._reading = False
            self._wake()
        if self._closed:
            await anyio.aclose_forcefully(self.stream)

    async def wait(self, ready: Callable[[], bool], timeout: float | None,
                   watch: Watched | None = None) -> bool:
        # Every read wakes every waiter here (one of them did the read), so the
        # record to watch adds nothing.
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            while not ready() and not self._closed:
                await self._flush()
                if self._closing and not self._out:
                    self._end(None)
                    await anyio.aclose_forcefully(self.stream)
                elif ready() or self._closed:
                    break
                elif not self._reading:
                    await self._read_once()
                else:
                    await self._changed.wait()
        return ready()

    async def drain(self, deadline: float | None) -> None:
        timeout = math.inf if deadline is None else max(0.0, deadline - anyio.current_time())
        with anyio.move_on_after(timeout):
            while self._out and not self._closed:
                await self._changed.wait()

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write, tg.cancel_scope)
                while not self._closed and not self._closing:
                    await self._read_once()
        finally:
            self._end(self.error)
            await anyio.aclose_forcefully(self.stream)

    async def _write(self, scope: anyio.CancelScope) -> None:
        try:
            while not self._closed:
                if self._out:
                    data = b"".join(self._out)
                    self._out.clear()
                    await self.stream.send(data)
                    self._wake()
                elif self._closing:
                    break
                else:
                    await self._more.wait()
                    self._more = anyio.Event()
        except BROKEN as exc:
            self._end(exc)
        finally:
            if self._closing:
                self._end(None)
            scope.cancel()


class _Group(TaskGroup):
    def __init__(self) -> None:
        self._cm = anyio.create_task_group()
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> _Group:
        self._tg = await self._cm.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._cm.__aexit__(*exc)

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        assert self._tg is not None
        self._tg.start_soon(fn, *args)

    def cancel(self) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()


class _Threads(_ThreadRunner):
    def __init__(self, size: int) -> None:
        # Threads of our own, so sync handlers never queue behind other users of
        # anyio's default thread limiter.
        self._limiter = anyio.CapacityLimiter(size)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        # Abandoned on a hard stop, as a thread cannot be interrupted.
        return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True,
                                              limiter=self._limiter)

    def close(self) -> None:
        pass  # anyio's worker threads are its own to keep or end


class AnyioBackend(Backend):
    """anyio's primitives: the same code on its asyncio and trio backends."""

    def now(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    async def connect(self, address: Address, options: ConnectOptions, on_data: OnData,
                      on_close: OnClose | None = None) -> Link:
        host, port = address
        timeout = math.inf if options.timeout is None else options.timeout
        try:
            with anyio.fail_after(timeout):
                if options.ssl is None:
                    stream: ByteStream = await anyio.connect_tcp(host, port)
                else:
                    # Not "standard compatible": job servers close without TLS
                    # close_notify, and that is an ordinary end of stream here.
                    stream = await anyio.connect_tcp(
                        host, port, ssl_context=options.ssl,
                        tls_hostname=options.server_hostname or host,
                        tls_standard_compatible=False)
        except TimeoutError:
            raise JobTimeout(f"connecting to {describe(address)} timed out") from None
        except BROKEN as exc:
            if isinstance(exc, OSError):
                raise
            raise OSError(why(exc)) from exc
        apply_keepalive(stream.extra(SocketAttribute.raw_socket), options.keepalive)
        return _Link(stream, on_data, on_close)

    event = staticmethod(anyio.Event)
    lock = staticmethod(anyio.Lock)
    task_group = staticmethod(_Group)
    thread_runner = staticmethod(_Threads)

    def caller(self) -> Callable[..., None]:
        token = anyio.lowlevel.current_token()

        def post(fn: Callable[..., Any], *args: Any) -> None:
            try:
                anyio.from_thread.run_sync(fn, *args, token=token)
            except RuntimeError:  # the loop ended meanwhile (RunFinishedError, or closed)
                pass
        return thread_caller(post)


BACKEND = AnyioBackend()
