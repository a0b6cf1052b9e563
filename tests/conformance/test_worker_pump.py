"""A worker with fewer slots than servers asks another server once its grab's connection is lost.

A worker never holds more grabs and jobs than ``max_jobs``, so with one slot
and two servers only one server has its grab at a time.  Here that server is
a real job server stopped (SIGSTOP) while it holds the grab, which it never
answers, and the job waits on the other server.  When the stopped server is
killed, the worker must ask the other one at once (``WorkerSession.pump``
after the disconnect): nothing else would, since the dead server never comes
back to be reconnected to.  Against our server and gearmand, on every flavour.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import GM, ServerProcess

Fn = Callable[[str], str]


@pytest.mark.parametrize("server", ["ours", "gearmand"])
def test_a_lost_grab_is_given_to_the_other_server(gm: GM, our_server_factory: Any,
                                                 gearmand_factory: Any, fn: Fn,
                                                 server: str) -> None:
    factory = our_server_factory if server == "ours" else gearmand_factory
    stopped: ServerProcess = factory()
    other: ServerProcess = factory()
    f = fn("pump")
    seen: list[bytes] = []

    def handler(job: Any) -> bytes:
        seen.append(job.data)
        return b"done"

    os.kill(stopped.pid, signal.SIGSTOP)  # it accepts connections (the kernel does), answers none
    try:
        worker = gm.worker([stopped, other], max_jobs=1)
        worker.register(f, handler)
        # Registered on the other server: its grab, if it got the slot first, is
        # answered (NO_JOB) in the same read, and the slot's grab goes to the
        # stopped server, which holds it from then on.
        worker.start(ready_on=[other])
        client = gm.client(other)
        client.submit(f, "x", background=True)
        gm.eventually(lambda: gm.status(other, f)[:2] == (1, 0), "the job queued, not taken")
        assert seen == []
    finally:
        stopped.stop(kill=True)  # a stopped process dies of SIGKILL; its connections close
    gm.eventually(lambda: seen == [b"x"], "the job run from the other server")
    gm.eventually(lambda: gm.status(other, f)[:2] == (0, 0), "the job done")
