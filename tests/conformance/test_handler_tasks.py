"""An async handler runs as one task from its first line to its last, on every flavour.

The asyncio flavour runs a handler's first step at once, in the read that
brought the job, and only lends it a task if it then waits
(``_Tasks.run_job``).  What a handler can observe must not change: it has a
current task from the start, the same one after every wait, its context
variables carry across waits, and a timeout around a wait cancels the handler,
not the worker.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio import get_current_task

if TYPE_CHECKING:
    from conftest import GM, ServerProcess

Fn = Callable[[str], str]
_seen: contextvars.ContextVar[bytes] = contextvars.ContextVar("_seen")


def test_an_async_handler_keeps_one_task_its_context_and_its_timeouts(
        gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    if not gm.async_handlers:
        pytest.skip("the blocking adapter's handlers are plain functions")
    f, quick = fn("one-task"), fn("quick")

    async def handler(job: Any) -> bytes:
        first = get_current_task().id
        _seen.set(job.data)
        await anyio.sleep(0.001)
        after_sleep = get_current_task().id
        with anyio.move_on_after(0.01) as scope:
            await anyio.sleep(30)  # cancelled by the scope: the job goes on
        with anyio.fail_after(30):
            await anyio.sleep(0)
        same = first == after_sleep == get_current_task().id
        return b"%s %d %d" % (_seen.get(), same, scope.cancelled_caught)

    async def quick_handler(job: Any) -> bytes:
        # Returns without waiting: the case that runs in the read, with no task.
        return b"%s %d" % (job.data, get_current_task() is not None)

    worker = gm.worker(our_server, max_jobs=2)
    worker.register(f, handler)
    worker.register(quick, quick_handler)
    worker.start()
    client = gm.client(our_server)
    assert client.do(f, "a") == b"a 1 1"
    assert [client.do(quick, str(i)) for i in range(3)] == [b"0 1", b"1 1", b"2 1"]
    assert client.do(f, "b") == b"b 1 1"
