"""How a handler ends is what the client sees, whether it ended at once or after waits.

The asyncio flavour runs an async handler's first step in the read that
brought its job (the core's ``WorkerDriver`` sends the report of a handler
that ended there); the other flavours run every job in a task, and the
blocking flavour's plain handlers in threads.  Every way of ending must give
the same outcome on every flavour: returned at once, raised at once, failed
at once, reported and returned at once, and each of those after a wait, mixed
on one worker with jobs in flight; and ``work(stop_after)`` must stop at its
count when the jobs end at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from gearman_proto.adapters import JobException, JobFailed

from gearman_proto.events import WorkData

if TYPE_CHECKING:
    from conftest import GM, ServerProcess

Fn = Callable[[str], str]

ENDS = ["return", "raise", "fail", "report", "bad-result"]


def _handler(gm: GM, end: str, wait: bool) -> Callable[[Any], Any]:
    """A handler that ends as ``end`` says, after a wait if ``wait``."""

    def finish(job: Any) -> Any:
        if end == "raise":
            raise ValueError(f"bad {job.data.decode()}")
        if end == "fail":
            job.fail()
            return b"ignored"
        if end == "report":
            job.send_data(b"part")
        if end == "bad-result":
            return 42
        return job.data.upper()

    if not gm.async_handlers:  # the blocking flavour: a plain handler, in a thread
        def plain(job: Any) -> Any:
            if wait:
                time.sleep(0.01)
            return finish(job)
        return plain

    async def handler(job: Any) -> Any:
        if wait:
            await anyio.sleep(0.01)
        return finish(job)
    return handler


def _check(client: Any, f: str, end: str, data: str) -> None:
    job = client.submit(f, data)
    if end == "raise":
        with pytest.raises(JobException) as info:
            job.wait()
        assert info.value.data == f"ValueError: bad {data}".encode()
    elif end == "fail":
        with pytest.raises(JobFailed) as failed:
            job.wait()
        assert not isinstance(failed.value, JobException)
    elif end == "bad-result":
        with pytest.raises(JobException, match="TypeError: a handler returns bytes, str or "
                                               "None, not int"):
            job.wait()
    else:
        assert job.wait() == data.upper().encode()
        if end == "report":
            assert list(job.updates()) == [WorkData(job.handle, b"part")]


@pytest.mark.parametrize("wait", [False, True], ids=["at-once", "after-a-wait"])
@pytest.mark.parametrize("end", ENDS)
def test_every_way_a_handler_ends_reaches_the_client(gm: GM, our_server: ServerProcess,
                                                     fn: Fn, end: str, wait: bool) -> None:
    f = fn(f"{end}-{wait}")
    worker = gm.worker(our_server, max_jobs=2)
    worker.register(f, _handler(gm, end, wait))
    worker.start()
    client = gm.client(our_server)
    for i in range(3):
        _check(client, f, end, f"job{i}")
    assert worker.obj.jobs_done == 3


def test_handlers_ending_at_once_and_after_waits_mixed_with_jobs_in_flight(
        gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    names = {(end, wait): fn(f"mix-{end}-{wait}") for end in ENDS for wait in (False, True)}
    worker = gm.worker(our_server, max_jobs=3)
    for (end, wait), f in names.items():
        worker.register(f, _handler(gm, end, wait))
    worker.start()
    client = gm.client(our_server)
    jobs = [(end, client.submit(f, f"d{i}"), f"d{i}")
            for i, ((end, _), f) in enumerate(list(names.items()) * 2)]
    for end, job, data in jobs:
        if end == "raise":
            with pytest.raises(JobException, match=f"ValueError: bad {data}"):
                job.wait()
        elif end in ("fail", "bad-result"):
            with pytest.raises(JobFailed):
                job.wait()
        else:
            assert job.wait() == data.upper().encode()
    assert worker.obj.jobs_done == len(jobs)


def test_stop_after_counts_jobs_that_end_at_once(gm: GM, our_server: ServerProcess,
                                                 fn: Fn) -> None:
    f = fn("count-at-once")
    worker = gm.worker(our_server)
    worker.register(f, _handler(gm, "return", False))
    client = gm.client(our_server)
    for i in range(4):
        client.submit(f, str(i), background=True)
    future = gm.runner.spawn(worker.obj.work, 3)
    future.result(20)  # returns by itself after three jobs, the last grabbing no more
    assert worker.obj.jobs_done == 3
    assert gm.status(our_server, f)[0] == 1  # the fourth is still queued


def test_jobs_ending_at_once_on_two_servers_each_answer_their_own(
        gm: GM, our_server_factory: Any, fn: Fn) -> None:
    # A report made in the read that brought its job goes out with that read's
    # output; the grab a finished job frees may go to the other server's
    # connection, written as usual.  Every result must reach its own server.
    first, second = our_server_factory(), our_server_factory()
    f, slow = fn("two-at-once"), fn("two-after-wait")
    worker = gm.worker([first, second], max_jobs=2)
    worker.register(f, _handler(gm, "return", False))
    worker.register(slow, _handler(gm, "return", True))
    worker.start(ready_on=[first, second])
    clients = [gm.client(first), gm.client(second)]
    jobs = [(c.submit(name, f"{c is clients[1]}-{i}"), f"{c is clients[1]}-{i}")
            for i in range(6) for c in clients for name in (f, slow)]
    for job, data in jobs:
        assert job.wait() == data.upper().encode()
    assert worker.obj.jobs_done == len(jobs)
