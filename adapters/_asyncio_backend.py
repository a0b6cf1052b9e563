"""The seam bound to asyncio (uvloop too): raw Protocols and bare futures.

A StreamReader would buffer what the core buffers anyway and wake a reader
task for every read: one more turn of the event loop per packet, a good part
of what a job cost the client and the worker.  Here ``data_received`` hands
the bytes straight to the core, and each waiter is a bare future woken when
its condition holds, rather than an ``asyncio.Event`` under ``wait_for()``
(which runs a Task of its own per wait).
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
import types
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, cast

from gearman_proto.errors import RemoteProtocolError
from gearman_proto.policy import PENDING, JobTimeout, describe

from ._backend import (
    Backend,
    ConnectOptions,
    Link,
    OnClose,
    OnData,
    TaskGroup,
    Watched,
    _finish,
    thread_caller,
)
from ._backend import ThreadRunner as _ThreadRunner
from ._common import Address, apply_keepalive

__all__ = ["AsyncioBackend", "BACKEND"]

# Read once per job by _Tasks.run_job: names, not module attribute lookups.  Python
# 3.11's asyncio.current_task() is a Python function (a frame per job) over a dict of
# the C module, whose get(loop) is the same answer.
_current_tasks = getattr(asyncio.tasks, "_current_tasks", None)
_current_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None] = (
    _current_tasks.get if isinstance(_current_tasks, dict)
    and not isinstance(asyncio.current_task, types.BuiltinFunctionType)
    else asyncio.current_task)
_copy_context = contextvars.copy_context
_Coroutine = types.CoroutineType
Done = Callable[[Any, Any, "Exception | None"], object]


class _Link(asyncio.Protocol, Link):
    def __init__(self, on_data: OnData, on_close: OnClose | None) -> None:
        self.transport: asyncio.Transport | None = None
        self.on_data = on_data
        self.on_close = on_close
        self.error: BaseException | None = None
        self._closed = False
        # Kept: asyncio.get_running_loop() makes a getpid() system call (3.11's
        # fork check), and a client would pay it on every wait.
        self._loop = loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[None] = loop.create_future()
        # What was written in this turn of the loop, handed to the transport once:
        # at the end of the read that wrote it, else by a callback (tasks woken by
        # one read, each submitting, then cost one system call, not one each).
        self._out: list[bytes] = []
        self.read_buffer = self._out  # sent at the end of data_received, as write()'s is
        self._reading = False
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[bool]]] = []
        self._drained: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._reading = True
        try:
            self.on_data(data)
        except (OSError, RemoteProtocolError) as exc:
            self._reading = False
            self._flush()
            self._end(exc)
            self.close()
            return
        self._reading = False
        out = self._out
        if out:  # _flush(), written out: once per read
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]
            out.clear()
        if self._waiters:
            self._wake()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._out.clear()
        self._end(exc)

    def pause_writing(self) -> None:
        self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    # Link

    @property
    def closed(self) -> bool:
        return self._closed

    def _end(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        self.error = exc
        if self.on_close is not None:
            self.on_close(exc)
        if not self._ended.done():
            self._ended.set_result(None)
        self.resume_writing()
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(False)
        self._waiters.clear()

    def _wake(self) -> None:
        keep = []
        for ready, waiter in self._waiters:
            if waiter.done():
                continue
            if ready():
                waiter.set_result(True)
            else:
                keep.append((ready, waiter))
        self._waiters = keep

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed and data:
            out = self._out
            out.append(data)
            if len(out) == 1 and not self._reading:
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        out = self._out
        if out and self.transport is not None:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self._flush()
            self.transport.close()

    async def run(self) -> None:
        await asyncio.shield(self._ended)

    async def wait(self, ready: Callable[[], bool], timeout: float | None,
                   watch: Watched | None = None) -> bool:
        if ready():
            return True
        if self._closed:
            return False
        loop = self._loop
        waiter: asyncio.Future[bool] = loop.create_future()

        def expire() -> None:
            if not waiter.done():
                waiter.set_result(False)
        timer = None if timeout is None else loop.call_later(timeout, expire)
        if watch is not None and watch.on_change is None:
            # Woken by its own record's change: no scan of every waiter per read.
            # A lost connection changes the record too (its jobs end as lost).
            # A second waiter on the same record joins the scanned ones instead.
            def changed(_: object) -> None:
                if not waiter.done() and ready():
                    waiter.set_result(True)
            watch.on_change = changed
            try:
                done = await waiter
            finally:
                watch.on_change = None
                if timer is not None:
                    timer.cancel()
            return done or ready()
        entry = (ready, waiter)
        self._waiters.append(entry)
        try:
            done = await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if entry in self._waiters:
                self._waiters.remove(entry)
        return done or ready()

    async def drain(self, deadline: float | None) -> None:
        self._flush()
        drained = self._drained
        if drained is None or self._closed:
            return
        loop = asyncio.get_running_loop()
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            await asyncio.wait_for(asyncio.shield(drained), timeout)
        except asyncio.TimeoutError:
            pass


class _Tasks(TaskGroup):
    """Tasks cancelled and awaited when the group ends (asyncio.TaskGroup is 3.11+)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Runner] = []  # for run_job

    async def __aenter__(self) -> _Tasks:
        self._loop = asyncio.get_running_loop()
        return self

    def start_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        assert self._loop is not None
        task: asyncio.Task[Any] = self._loop.create_task(fn(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def run_job(self, job: Any, coro: Awaitable[Any],
                done: Callable[[Any, Any, Exception | None], object]) -> Any:
        # The handler's first step runs here and now, with an idle runner task as
        # the current task (asyncio.current_task(), timeouts, anyio and sniffio
        # need one).  If it then waits, that runner goes on with it from the
        # wait, so everything after the first step happens in the task that was
        # current during it, as in a task of its own.  Most handlers finish
        # without waiting: no task, no future, no turn of the loop.
        loop = self._loop
        assert loop is not None
        idle = self._idle
        if not idle or _current_task(loop) is not None:
            if not idle:
                self._add_runner()
            self.start_soon(_finish, done, job, coro)
            return PENDING
        if type(coro) is not _Coroutine:  # another awaitable: sent through a coroutine
            coro = _awaited(coro)
        runner = idle[-1]
        context = _copy_context()
        _enter_task(loop, runner.task)
        try:
            waiting = context.run(coro.send, None)
        except StopIteration as stop:
            return stop.value
        finally:
            _leave_task(loop, runner.task)
        idle.pop()
        runner.take(context, coro, waiting, done, job)
        return PENDING

    def _add_runner(self) -> None:
        assert self._loop is not None
        runner = _Runner(self._idle)
        task = runner.task = self._loop.create_task(runner.serve())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def __aexit__(self, *exc: object) -> bool | None:
        if exc[0] is not None:
            self.cancel()
        for runner in self._idle:  # waiting for work that will not come
            runner.task.cancel()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return None


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class _Runner:
    """A task that goes on with coroutines whose first step ran in :meth:`_Tasks.run_job`.

    While idle it waits for one and is in the group's idle list; a coroutine's
    first step runs with this task as the current one, so the rest of it must
    run here too.
    """

    __slots__ = ("_idle", "_next", "task")

    def __init__(self, idle: list[_Runner]) -> None:
        self._idle = idle
        self._next: asyncio.Future[tuple[contextvars.Context, Coroutine[Any, Any, Any],
                                         Any, Done, Any]] | None = None
        self.task: asyncio.Task[None]

    def take(self, context: contextvars.Context, coro: Coroutine[Any, Any, Any],
             waiting: Any, done: Done, job: Any) -> None:
        """Go on with ``coro``, whose first step (in ``context``) yielded ``waiting``;
        ``done(job, value, error)`` is called when it returns or raises."""
        assert self._next is not None
        self._next.set_result((context, coro, waiting, done, job))

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._next = loop.create_future()
            self._idle.append(self)
            try:
                context, coro, waiting, done, job = await self._next
            except BaseException:
                if self in self._idle:
                    self._idle.remove(self)
                raise
            try:
                value = await _resume(context, coro, waiting)
            except Exception as exc:  # the handler's, for done() to report
                error: Exception | None = exc
                value = None
            else:
                error = None
            try:
                done(job, value, error)
            except Exception:  # ends the job as it would end a task of the group's,
                pass           # whose error __aexit__ gathers and drops


@types.coroutine
def _resume(context: contextvars.Context, coro: Coroutine[Any, Any, Any],
            waiting: Any) -> Generator[Any, Any, Any]:
    """Go on with ``coro`` (in ``context``), whose last step yielded ``waiting`` to the loop."""
    while True:
        try:
            sent = yield waiting
        except BaseException as exc:  # a cancellation thrown into the task: pass it on
            try:
                waiting = context.run(coro.throw, exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            waiting = context.run(coro.send, sent)
        except StopIteration as stop:
            return stop.value


class _Threads(_ThreadRunner):
    """A pool of daemon threads, started as needed up to ``size``.

    Not concurrent.futures' pool: its threads are joined when the interpreter
    exits, so a handler still running at Ctrl-C would keep the program alive
    until it returned, though its job was already handed back to the server.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._threads: list[threading.Thread] = []
        self._calls = 0
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...],
                                             asyncio.Future[Any]] | None] = queue.SimpleQueue()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # One thread per call in progress, up to size (counted here, on the loop's
        # thread, so a thread about to take an earlier call is never counted free).
        self._calls += 1
        if len(self._threads) < min(self._calls, self._size):
            thread = threading.Thread(target=self._work, name="gearman-worker", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._queue.put((fn, args, future))
        try:
            return await future
        finally:
            self._calls -= 1

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, future = item
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the awaiting task
                result, error = None, exc
            loop = future.get_loop()
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody awaits the result
                pass

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        self._threads.clear()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled (a hard stop)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class AsyncioBackend(Backend):
    """asyncio's primitives (and uvloop's, which are the same API)."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def connect(self, address: Address, options: ConnectOptions, on_data: OnData,
                      on_close: OnClose | None = None) -> Link:
        host, port = address
        loop = asyncio.get_running_loop()
        try:
            _, link = await asyncio.wait_for(loop.create_connection(
                lambda: _Link(on_data, on_close), host, port, ssl=options.ssl,
                server_hostname=(options.server_hostname or host) if options.ssl else None),
                options.timeout)
        except asyncio.TimeoutError:
            raise JobTimeout(f"connecting to {describe(address)} timed out") from None
        assert link.transport is not None
        sock = link.transport.get_extra_info("socket")
        if sock is not None and options.keepalive:
            apply_keepalive(sock, options.keepalive)
        return link

    event = staticmethod(asyncio.Event)
    lock = staticmethod(asyncio.Lock)
    task_group = staticmethod(_Tasks)
    thread_runner = staticmethod(_Threads)

    def caller(self) -> Callable[..., None]:
        loop = asyncio.get_running_loop()

        def post(fn: Callable[..., Any], *args: Any) -> None:
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop closed meanwhile: nothing to report to
                pass
        return thread_caller(post)


BACKEND = AsyncioBackend()
