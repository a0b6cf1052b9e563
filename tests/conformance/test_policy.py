"""The client, worker and admin policy behaves alike on every flavour.

Each test pins down one behaviour that the four flavours once decided each on
their own, and that had drifted apart (issue 10): a refused report wedging an
async worker, ``updates()`` ignoring ``result_timeout``, empty exception texts,
an unbounded handle map, fixed backoff that skipped a server, a round-robin
cursor shared across an ``await``, and API names that differed.  They run on
``sync``, ``asyncio``, ``anyio`` and ``trio`` (the ``gm`` fixture).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from gearman_proto.adapters import (
    JobEnded,
    JobException,
    JobTimeout,
    NoServerAvailable,
)

from gearman_proto import LocalProtocolError
from gearman_proto.session import JobState

if TYPE_CHECKING:
    from conftest import GM, ServerProcess

Fn = Callable[[str], str]
Factory = Callable[..., "ServerProcess"]


def _refused_address() -> tuple[str, int]:
    """An address where connections are refused (bound, never listening)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    address = s.getsockname()
    s.close()
    return address  # type: ignore[no-any-return]


def test_a_refused_report_raises_in_the_handler_and_never_wedges_the_worker(
        gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("badstatus")
    seen: list[str] = []

    def handler(job: Any) -> bytes:
        try:
            job.send_status(-1, 2)  # the wire cannot carry a negative number
        except LocalProtocolError as exc:
            seen.append(type(exc).__name__)
        if job.data == b"uncaught":
            job.send_status(-1, 2)
        return b"ok"
    worker = gm.worker(our_server, max_jobs=1)
    worker.register(f, handler)
    worker.start()
    client = gm.client(our_server, result_timeout=10)
    assert client.do(f, "first") == b"ok"
    # Not caught: the job ends with the error as its exception, the slot is freed.
    with pytest.raises(JobException) as info:
        client.do(f, "uncaught")
    assert info.value.data.startswith(b"LocalProtocolError: WorkStatus")
    assert client.do(f, "after") == b"ok"  # the same connection, still usable
    assert seen == ["LocalProtocolError"] * 3


def test_updates_and_wait_honour_result_timeout(gm: GM, our_server: ServerProcess,
                                                fn: Fn) -> None:
    client = gm.client(our_server, result_timeout=0.3)
    job = client.submit(fn("nobody"), "data")  # no worker: nothing ever comes
    with pytest.raises(JobTimeout, match="no update"):
        list(job.updates(None))
    with pytest.raises(JobTimeout, match="no result"):
        job.wait()
    with pytest.raises(JobTimeout):
        client.do(fn("nobody"), "data", timeout=0.2)


def test_an_exception_without_a_message_is_named_by_its_type(
        gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("empty")

    def handler(job: Any) -> bytes:
        raise ValueError()

    async def async_handler(job: Any) -> bytes:
        raise KeyError("missing")
    worker = gm.worker(our_server)
    worker.register(f, handler)
    worker.register(f + "-async", async_handler)
    worker.start()
    client = gm.client(our_server)
    with pytest.raises(JobException) as info:
        client.do(f, "x")
    assert info.value.data == b"ValueError"
    assert f in str(info.value)  # the message names the function
    with pytest.raises(JobException) as info:
        client.do(f + "-async", "x")
    assert info.value.data == b"KeyError: 'missing'"


def test_the_handle_map_for_get_status_is_bounded(gm: GM, our_server: ServerProcess,
                                                  fn: Fn) -> None:
    client = gm.client(our_server)
    client.pool.remembered = 5
    jobs = [client.submit(fn("bg"), str(i), background=True) for i in range(8)]
    assert len(client.pool) == 5
    # The newest are remembered; an older one is asked of the first server.
    assert client.get_status(jobs[-1].handle).known
    assert client.get_status(jobs[0].handle).known


def test_a_dead_server_never_fails_concurrent_submissions(
        gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    client = gm.client([_refused_address(), our_server], retry_delay=0.05)
    for _ in range(5):
        futures = [gm.runner.spawn(client.obj.submit, fn("bg"), "x", background=True)
                   for _ in range(20)]
        for future in futures:
            assert future.result(20).state is JobState.QUEUED


def test_a_server_in_backoff_is_tried_last_not_skipped(gm: GM, our_server_factory: Factory,
                                                       fn: Fn) -> None:
    port = _refused_address()[1]
    client = gm.client(("127.0.0.1", port), retry_delay=60, connect_timeout=2)
    with pytest.raises(NoServerAvailable, match=f"127.0.0.1:{port}"):
        client.echo(b"x")
    our_server_factory(port=port)  # now it is up, well inside the 60 s backoff
    assert client.echo(b"hello") == b"hello"


def test_one_api_on_every_flavour(gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("api")
    seen: dict[str, Any] = {}

    def handler(job: Any) -> bytes:
        seen["unique"] = job.unique
        seen["repr"] = repr(job)
        job.send_status(1, 1)
        return job.data[::-1]
    # The worker starts only after the client has seen JOB_CREATED: a worker
    # already running may finish the job before the submitter's thread looks.
    worker = gm.worker(our_server)
    worker.register(f, handler)
    client = gm.client(our_server)
    job = client.submit(f, "abc", unique="")
    assert job.state is JobState.QUEUED and job.state == "queued"
    assert f in repr(job.obj) and "queued" in repr(job.obj)
    worker.start()
    assert job.wait(10) == b"cba"
    assert job.state is JobState.COMPLETE
    assert job.server == our_server.address
    assert seen["unique"] == b""
    assert f in seen["repr"]
    assert client.do(f, "xyz", timeout=10) == b"zyx"


def test_a_report_after_the_end_raises_on_every_flavour(
        gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("late")
    errors: list[BaseException] = []

    def handler(job: Any) -> bytes:
        job.fail()
        try:
            job.send_data(b"too late")
        except JobEnded as exc:
            errors.append(exc)
        return b"ignored"
    worker = gm.worker(our_server)
    worker.register(f, handler)
    worker.start()
    client = gm.client(our_server)
    with pytest.raises(Exception, match="failed"):
        client.do(f, "x")
    # The client may see the WORK_FAIL before the handler's next line ran.
    gm.eventually(lambda: errors, "the late report's JobEnded")
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


def test_work_stop_after_and_jobs_done(gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("count")
    worker = gm.worker(our_server)
    worker.register(f, lambda job: b"done")
    client = gm.client(our_server)
    jobs = [client.submit(f, str(i), background=True) for i in range(3)]
    assert len(jobs) == 3
    future = gm.runner.spawn(worker.obj.work, 2)
    future.result(20)  # returns by itself after two jobs
    assert worker.obj.jobs_done == 2
    assert gm.status(our_server, f)[0] == 1  # the third is still queued
