"""The store's round trip is off the event loop, on every server flavour.

A store whose write blocks (as a slow fsync or a database round trip does)
must not stop the server: while it blocks, ECHO and foreground jobs are
answered; the background submission's JOB_CREATED comes once the write
returns, and the submissions that came meanwhile share the next write.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from _support import RawClient

from gearman_proto.events import (
    CanDo,
    EchoReq,
    EchoRes,
    GrabJobUniq,
    JobAssign,
    JobCreated,
    SubmitJob,
    WorkComplete,
)
from gearman_proto.store import MemoryStore, StoreBatch
from gearman_proto.worker import WorkerConnection


class RawWorker(RawClient):
    """A worker over a blocking socket, on the core's WorkerConnection."""

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address)
        self.conn = WorkerConnection(max_packet_size=0)  # type: ignore[assignment]


class GatedStore(MemoryStore):
    """A durable memory store whose writes wait for :attr:`gate` (and count who waits)."""

    def __init__(self) -> None:
        super().__init__(durable=True)
        self.gate = threading.Event()
        self.writing = threading.Event()
        self.batches: list[int] = []

    def write(self, batch: StoreBatch) -> None:
        self.writing.set()
        assert self.gate.wait(30), "the test never opened the gate"
        self.batches.append(len(batch.adds))
        super().write(batch)


def finish_a_job_while_the_store_is_down(
        port: int, store: CountingStore) -> tuple[RawClient, RawWorker, int]:
    """Queue one background job and hand it to a worker; then take the store down and
    let the worker finish the job, so that what is left to write is its delete alone.
    Returns the client, the worker and the store's write count before the delete."""
    address = ("127.0.0.1", port)
    client = RawClient(address)
    client.send(SubmitJob(b"bg", b"1", b"u1", background=True))
    assert isinstance(client.poll(10)[0], JobCreated)
    worker = RawWorker(address)
    worker.send(CanDo(b"bg"), GrabJobUniq())
    assigned = worker.poll(10)
    assert len(assigned) == 1 and isinstance(assigned[0], JobAssign)
    store.fail = "down"
    before = store.calls
    worker.send(WorkComplete(assigned[0].handle, b""))
    return client, worker, before


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def run_server(flavour: str, store: GatedStore) -> tuple[int, Callable[[], None]]:
    """Start a server of ``flavour`` on a thread of its own; its port and a stopper."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    def run() -> None:
        if flavour == "asyncio":
            from gearman_proto.adapters.asyncio import Server

            async def main() -> None:
                server = Server("127.0.0.1", 0, store=store, handle_prefix=b"H:t")
                await server.start()
                state["server"], state["loop"] = server, asyncio.get_running_loop()
                ready.set()
                await server.serve_forever()
            asyncio.run(main())
        else:
            import anyio
            from gearman_proto.adapters.anyio import Server as AnyioServer

            async def amain() -> None:
                server = AnyioServer("127.0.0.1", 0, store=store, handle_prefix=b"H:t")
                await server.start()
                state["server"] = server
                state["token"] = anyio.lowlevel.current_token()
                ready.set()
                await server.serve_forever()
            anyio.run(amain, backend=flavour)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(20)
    server = state["server"]

    def stop() -> None:
        store.gate.set()
        if flavour == "asyncio":
            state["loop"].call_soon_threadsafe(server.close)
        else:
            import anyio.from_thread
            anyio.from_thread.run_sync(server.close, token=state["token"])
        thread.join(20)
    return server.port, stop


@pytest.mark.parametrize("flavour", ["asyncio", "trio"])
def test_a_slow_store_write_stops_nothing_else(flavour: str) -> None:
    store = GatedStore()
    port, stop = run_server(flavour, store)
    try:
        address = ("127.0.0.1", port)
        durable = RawClient(address)
        durable.send(SubmitJob(b"bg", b"1", b"u1", background=True))
        wait_for(store.writing.is_set, "the store write to start")
        # The write blocks; the server goes on.
        other = RawClient(address)
        other.send(EchoReq(b"ping"))
        assert other.poll(10) == [EchoRes(b"ping")]
        worker = RawWorker(address)
        worker.send(CanDo(b"fg"))
        other.send(SubmitJob(b"fg", b"data", b"fg1"))
        created = other.poll(10)
        assert len(created) == 1 and isinstance(created[0], JobCreated)
        worker.send(GrabJobUniq())
        assigned = worker.poll(10)
        assert len(assigned) == 1 and isinstance(assigned[0], JobAssign)
        worker.send(WorkComplete(assigned[0].handle, b"done"))
        assert other.poll(10) == [WorkComplete(created[0].handle, b"done")]
        # More durable submissions meanwhile: they wait for the next write.
        durable.send(SubmitJob(b"bg", b"2", b"u2", background=True),
                     SubmitJob(b"bg", b"3", b"u3", background=True))
        assert durable.poll(0.3) == []  # no JOB_CREATED before the write is done
        store.gate.set()
        got: list[Any] = []
        wait_for(lambda: got.extend(durable.poll(0.2)) or len(got) >= 3, "the JOB_CREATEDs")
        assert all(isinstance(e, JobCreated) for e in got)
        assert store.batches == [1, 2]  # the two that came meanwhile: one write
        for client in (durable, other, worker):
            client.close()
    finally:
        stop()


class CountingStore(GatedStore):
    """A durable memory store whose gate is open; it counts every write it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.gate.set()
        self.calls = 0

    def write(self, batch: StoreBatch) -> None:
        self.calls += 1
        super().write(batch)


@pytest.mark.parametrize("flavour", ["asyncio", "trio"])
def test_a_failed_delete_is_retried_by_itself_without_spinning(flavour: str) -> None:
    """The store fails while the only thing to write is a finished job's delete, and no
    input comes: the delete is tried again every ``retry_pause`` (not thousands of times a
    second, as the loop and the thread did, a core's worth of CPU through an outage), and
    once the store works again the row goes without any further input."""
    store = CountingStore()
    port, stop = run_server(flavour, store)
    try:
        client, worker, before = finish_a_job_while_the_store_is_down(port, store)
        wait_for(lambda: store.calls > before, "the delete to be tried")
        time.sleep(1.0)
        assert store.calls - before < 50  # a spin made >5,000 tries in that second
        assert len(store) == 1
        store.fail = None
        wait_for(lambda: len(store) == 0, "the delete to be written once the store works")
        for raw in (client, worker):
            raw.close()
    finally:
        stop()


def test_close_writes_a_paused_retry_at_once() -> None:
    """At shutdown the paused delete-only batch is written now, not after its pause."""
    from gearman_proto.adapters.storethread import ThreadWriter

    from gearman_proto.broker import CommitTicket
    from gearman_proto.store import StoreError

    store = CountingStore()
    written = threading.Event()

    def write(ticket: CommitTicket) -> StoreError | None:
        try:
            store.write(ticket.batch)
        except StoreError as exc:
            return exc
        return None

    writer = ThreadWriter(write, written.set, retry_pause=600)
    store.fail = "down"
    writer.submit(CommitTicket(1, StoreBatch(removes=[1]), []))
    wait_for(written.is_set, "the first write")
    first = writer.result()
    assert first is not None and first[1] is not None
    store.fail = None
    writer.submit(CommitTicket(2, StoreBatch(removes=[1]), []))
    time.sleep(0.2)
    assert store.calls == 1  # paused: the previous write failed and this one adds nothing
    done = writer.close()
    assert done is not None and done[1] is None and store.calls == 2


@pytest.mark.parametrize("flavour", ["asyncio", "trio"])
def test_a_submission_is_not_kept_waiting_by_a_paused_retry(
        flavour: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a failed delete waits out its retry pause (here 10 minutes), a durable
    submission is answered at once: QUEUE_ERROR while the store fails, JOB_CREATED
    once it works (the hub hurries the writer when output waits behind the pause)."""
    from gearman_proto.adapters.storethread import ThreadWriter

    from gearman_proto.events import Error

    monkeypatch.setattr(ThreadWriter, "retry_pause", 600.0)
    store = CountingStore()
    port, stop = run_server(flavour, store)
    try:
        client, worker, before = finish_a_job_while_the_store_is_down(port, store)
        wait_for(lambda: store.calls > before, "the delete to fail (its retry then waits)")
        client.send(SubmitJob(b"bg", b"2", b"u2", background=True))
        got = client.poll(10)
        assert len(got) == 1 and isinstance(got[0], Error) and got[0].code == b"QUEUE_ERROR"
        store.fail = None
        client.send(SubmitJob(b"bg", b"3", b"u3", background=True))
        got = client.poll(10)
        assert len(got) == 1 and isinstance(got[0], JobCreated)
        wait_for(lambda: [row.data for row in store.rows.values()] == [b"3"],
                 "the delete to be written with the new job's row")
        for raw in (client, worker):
            raw.close()
    finally:
        stop()
