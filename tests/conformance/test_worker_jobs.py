"""What a handler is given and what becomes of a handler that cannot even start.

The job object is built by the core (``policy.JobInHand``, compiled in the
compiled build) under the adapters' ``WorkerJob``; every flavour must hand its
handlers a ``WorkerJob`` with the job's fields and no room for stray
attributes, and a handler that fails before its first step (a call that raises
at once, a function whose handler was taken away) must end its job with
WORK_EXCEPTION while the worker goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from gearman_proto.adapters import JobException

from gearman_proto.policy import JobInHand

if TYPE_CHECKING:
    from conftest import GM, ServerProcess

Fn = Callable[[str], str]


def _ok(gm: GM) -> Callable[[Any], Any]:
    if not gm.async_handlers:
        return lambda job: job.data.upper()

    async def ok(job: Any) -> Any:
        return job.data.upper()
    return ok


def test_a_handler_is_given_a_worker_job_with_the_jobs_fields(
        gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("fields")
    seen: list[tuple[Any, ...]] = []

    def look(job: Any) -> bytes:
        try:
            job.stray = 1
            stray = True
        except AttributeError:
            stray = False
        seen.append((isinstance(job, gm.module.WorkerJob), isinstance(job, JobInHand),
                     job.function, job.unique, job.reducer, job.data, job.value,
                     job.failed, job.ended, stray, repr(job)))
        return b"ok"

    if gm.async_handlers:
        async def handler(job: Any) -> bytes:
            return look(job)
    else:
        handler = look  # type: ignore[assignment]
    worker = gm.worker(our_server)
    worker.register(f, handler)
    worker.start()
    client = gm.client(our_server)
    assert client.submit(f, "payload", unique="u-1").wait() == b"ok"
    [(is_worker_job, is_in_hand, function, unique, reducer, data, value, failed, ended,
      stray, text)] = seen
    assert is_worker_job and is_in_hand
    assert (function, unique, reducer, data, value) == (f.encode(), b"u-1", None,
                                                         b"payload", b"payload")
    assert (failed, ended, stray) == (False, False, False)
    assert text.startswith(f"<WorkerJob {f} ") and text.endswith(" running>")


def test_a_handler_whose_call_raises_ends_its_job_and_the_worker_goes_on(
        gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    bad, good = fn("no-arguments"), fn("good")
    if gm.async_handlers:
        async def takes_nothing() -> bytes:  # called with the job: TypeError at once
            return b"never"
    else:
        def takes_nothing() -> bytes:  # type: ignore[misc]
            return b"never"
    worker = gm.worker(our_server, max_jobs=2)
    worker.register(bad, takes_nothing)  # type: ignore[arg-type]
    worker.register(good, _ok(gm))
    worker.start()
    client = gm.client(our_server)
    for i in range(3):
        with pytest.raises(JobException, match=r"TypeError: .*takes 0 positional arguments"):
            client.submit(bad, f"x{i}").wait()
        assert client.submit(good, f"y{i}").wait() == f"Y{i}".encode()
    assert worker.obj.jobs_done == 6


def test_a_job_whose_handler_was_taken_away_ends_with_an_exception(
        gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    gone, good = fn("gone"), fn("still-here")
    worker = gm.worker(our_server)
    worker.register(gone, _ok(gm))
    worker.register(good, _ok(gm))
    worker.start()
    client = gm.client(our_server)
    assert client.submit(gone, "a").wait() == b"A"
    del worker.obj.handlers[gone.encode()]  # still registered with the server
    with pytest.raises(JobException, match="LookupError: no handler for"):
        client.submit(gone, "b").wait()
    assert client.submit(good, "c").wait() == b"C"
