"""The trio adapter, driven the trio way: ``trio.run`` and nurseries, no anyio in sight.

:mod:`gearman_proto.adapters.trio` is the anyio adapter (its module docstring
says why), whose full suite also runs on the trio backend; these tests are the
smoke test a trio user would write: the documented example, ``serve()`` with
its signals, and cancellation by trio's own scopes.
"""

from __future__ import annotations

import inspect
import os
import signal
import textwrap
import uuid
from typing import TYPE_CHECKING

import gearman_proto.adapters.anyio as anyio_adapter
import gearman_proto.adapters.trio as trio_adapter
import pytest
import trio
from gearman_proto.adapters._common import JobTimeout, NoServerAvailable
from gearman_proto.adapters.trio import AdminClient, Client, Server, Worker, WorkerJob, serve

if TYPE_CHECKING:
    from conftest import ServerProcess

BOUND = 15.0
"""A bound for every wait here: long enough never to matter, short enough to end a hang."""


def name(label: str) -> str:
    """A function name no other test uses."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


def test_the_trio_adapter_is_the_anyio_adapter() -> None:
    for public in trio_adapter.__all__:
        assert getattr(trio_adapter, public) is getattr(anyio_adapter, public)
    assert set(trio_adapter.__all__) == set(anyio_adapter.__all__)


@pytest.mark.interop
def test_the_documented_example_runs(gearmand: ServerProcess,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    doc = trio_adapter.__doc__ or ""
    example = textwrap.dedent(doc.split("::\n", 1)[1])
    example = example.replace("127.0.0.1:4730", f"{gearmand.host}:{gearmand.port}")
    example = example.replace('"reverse"', repr(name("reverse")))
    exec(compile(example, "gearman_proto/adapters/trio.py", "exec"), {})
    assert capsys.readouterr().out == "b'!dlrow olleH'\n"


@pytest.mark.interop
def test_serve_client_worker_and_admin_in_one_nursery(gearmand: ServerProcess) -> None:
    """Our server (through serve()) and gearmand, side by side in trio."""
    fn = name("reverse")

    async def main() -> None:
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                servers: list[Server] = []
                await nursery.start(_serve_started, servers)
                ours = ("127.0.0.1", servers[0].port)
                addresses = [ours, gearmand.address]
                worker = Worker(addresses, max_jobs=2)

                @worker.task(fn)
                def reverse(job: WorkerJob) -> bytes:  # a trio worker thread
                    job.send_status(1, 1)
                    return job.data[::-1]

                nursery.start_soon(worker.work)
                async with Client(addresses, result_timeout=BOUND) as client:
                    for _ in addresses:  # round-robin: once on each server
                        job = await client.submit(fn, "Hello world!")
                        updates = [u async for u in job.updates()]
                        assert [(u.numerator, u.denominator) for u in updates] == [(1, 1)]
                        assert await job == b"!dlrow olleH"
                for address in addresses:
                    async with AdminClient(address) as admin:
                        rows = {r.function: r for r in await admin.status()}
                        assert rows[fn.encode()].available_workers == 1
                # trio's own cancellation ends the worker and the server.
                nursery.cancel_scope.cancel()

    trio.run(main)


async def _serve_started(servers: list[Server],
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                         ) -> None:
    await serve("127.0.0.1", 0, signals=False,
                ready=lambda server: (servers.append(server), task_status.started()))


def test_cancelling_a_waiter_leaves_the_job_and_the_client_usable() -> None:
    """A trio deadline around ``await job`` cancels only that wait (the waiter that
    was reading hands the connection on); the job's result still arrives."""
    fn = name("slow")

    async def main() -> None:
        with trio.fail_after(BOUND):
            async with Server("127.0.0.1", 0) as server, trio.open_nursery() as nursery:
                address = ("127.0.0.1", server.port)
                release = trio.Event()
                worker = Worker([address])

                @worker.task(fn)
                async def slow(job: WorkerJob) -> bytes:
                    await release.wait()
                    return b"late"

                nursery.start_soon(worker.work)
                async with Client([address]) as client:
                    job = await client.submit(fn)
                    with trio.move_on_after(0.1) as scope:
                        await job
                    assert scope.cancelled_caught
                    with pytest.raises(JobTimeout):
                        await job.result(timeout=0.05)
                    assert await client.echo(b"alive") == b"alive"
                    release.set()
                    assert await job == b"late"
                worker.stop()

    trio.run(main)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
def test_serve_stops_on_sigusr1_after_the_running_job_and_on_sigterm_at_once() -> None:
    fn = name("signals")

    async def main() -> None:
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                servers: list[Server] = []

                async def run_server(task_status: trio.TaskStatus[None]) -> None:
                    await serve("127.0.0.1", 0, signals=True,
                                ready=lambda s: (servers.append(s), task_status.started()))

                await nursery.start(run_server)
                address = ("127.0.0.1", servers[0].port)
                started, release = trio.Event(), trio.Event()
                worker = Worker([address], reconnect_delay=0.05, max_reconnect_delay=0.1)

                @worker.task(fn)
                async def job_in_hand(job: WorkerJob) -> bytes:
                    started.set()
                    await release.wait()
                    return b"finished"

                nursery.start_soon(worker.work)
                async with Client([address]) as client:
                    job = await client.submit(fn)
                    await started.wait()
                    os.kill(os.getpid(), signal.SIGUSR1)  # graceful: the job may finish
                    while True:  # until the server stops accepting
                        try:
                            async with Client([address]) as late:
                                await late.echo()
                        except NoServerAvailable:
                            break
                        await trio.sleep(0.01)
                    release.set()
                    assert await job == b"finished"
                worker.stop(graceful=False)
            # serve() returned by itself once nothing ran: the nursery is done.

            async with trio.open_nursery() as nursery:
                servers = []

                async def run_again(task_status: trio.TaskStatus[None]) -> None:
                    await serve("127.0.0.1", 0,
                                ready=lambda s: (servers.append(s), task_status.started()))

                await nursery.start(run_again)
                os.kill(os.getpid(), signal.SIGTERM)  # immediate

    trio.run(main)


def test_signature_parity_with_the_asyncio_adapter() -> None:
    """Same names, same arguments: code moves between asyncio and trio unchanged."""
    import gearman_proto.adapters.asyncio as asyncio_adapter

    for public in asyncio_adapter.__all__:
        ours, theirs = getattr(trio_adapter, public), getattr(asyncio_adapter, public)
        if inspect.isclass(theirs):
            # Signal handlers are serve(signals=True) here: anyio installs them in a task.
            names = ({n for n in vars(theirs) if not n.startswith("_")}
                     - {"install_signal_handlers", "batch_started"})
            for attr in names:
                assert hasattr(ours, attr), f"{public}.{attr} is missing"
                if inspect.isfunction(getattr(theirs, attr)):
                    assert (inspect.signature(getattr(ours, attr)).parameters.keys()
                            == inspect.signature(getattr(theirs, attr)).parameters.keys())
        if public not in ("ClientJob", "WorkerJob"):  # made by the library, not by users
            assert (inspect.signature(ours).parameters.keys()
                    == inspect.signature(theirs).parameters.keys()), public
