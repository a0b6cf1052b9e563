"""A store that fails on demand, under the core alone (no sockets, no database).

What must hold for every store when writes fail: a failed batch's deletes and
the deletes of the rows it tried to add are written with the next good batch,
however many batches fail in between; a write that committed but raised (its
answer lost with the connection) leaves no row; the hub retries the deletes by
itself; at shutdown what a failed write left is written in line.  The real
databases' side of it is in ``test_contract.py`` and ``test_durability.py``.
"""

from __future__ import annotations

from gearman_proto.broker import CommitTicket, JobServer
from gearman_proto.events import (
    CanDo,
    Error,
    GrabJobAll,
    JobAssign,
    JobCreated,
    SubmitJob,
    WorkComplete,
)
from gearman_proto.hub import ServerHub
from gearman_proto.packets import REQ, PacketType, encode_packet
from gearman_proto.store import MemoryStore, StoreBatch, StoreError

C, W = 1, 2


class LostAnswerStore(MemoryStore):
    """Applies a batch, then (``lose`` times) raises as a connection lost before the answer."""

    def __init__(self) -> None:
        super().__init__(durable=True)
        self.lose = 0

    def write(self, batch: StoreBatch) -> None:
        super().write(batch)
        if self.lose:
            self.lose -= 1
            raise StoreError("connection lost")


def server_with(store: MemoryStore) -> JobServer:
    server = JobServer(handle_prefix=b"H:t", store=store)
    server.connect(C)
    server.connect(W)
    server.receive(W, CanDo(b"f"))
    return server


def run_one(server: JobServer) -> None:
    assigned = server.receive(W, GrabJobAll())[0][1]
    assert isinstance(assigned, JobAssign)
    server.receive(W, WorkComplete(assigned.handle, b""))


def test_a_write_whose_answer_was_lost_leaves_no_row() -> None:
    store = LostAnswerStore()
    server = server_with(store)
    store.lose = 1
    server.receive(C, SubmitJob(b"f", b"d", b"u", background=True))
    assert server.commit() == [(C, Error(b"QUEUE_ERROR", b"connection lost"))]
    assert len(store) == 1 and server.job_count == 0  # committed after all; refused
    server.receive(C, SubmitJob(b"f", b"d2", b"u2", background=True))
    assert server.commit() == [(C, JobCreated(b"H:t:2"))]
    assert [row.data for row in store.rows.values()] == [b"d2"]


def test_deletes_wait_through_any_number_of_failed_batches() -> None:
    store = MemoryStore(durable=True)
    server = server_with(store)
    for i in range(3):
        server.receive(C, SubmitJob(b"f", b"%d" % i, b"u%d" % i, background=True))
    assert len(server.commit()) == 3
    run_one(server)
    store.fail = "down"
    assert server.commit() == []  # the delete failed: kept for later
    run_one(server)  # another job ends while the store is down
    for i in range(3):
        server.receive(C, SubmitJob(b"f", b"x", b"x%d" % i, background=True))
        assert [type(e) for _, e in server.commit()] == [Error]
        assert server.commit() == []  # nothing but the deletes: still failing
    store.fail = None
    assert server.commit() == []
    assert [row.data for row in store.rows.values()] == [b"2"]


class StepWriter:
    """A StoreWriter that writes when the test says (:meth:`step`), on the test's thread."""

    def __init__(self, server: JobServer) -> None:
        self.server = server
        self.ticket: CommitTicket | None = None
        self.done: tuple[CommitTicket, StoreError | None] | None = None
        self.hurried = 0

    @property
    def busy(self) -> bool:
        return self.ticket is not None

    def submit(self, ticket: CommitTicket) -> None:
        assert self.ticket is None
        self.ticket = ticket

    def step(self) -> None:
        assert self.ticket is not None and self.done is None
        self.done = (self.ticket, self.server.write(self.ticket))

    def result(self) -> tuple[CommitTicket, StoreError | None] | None:
        done, self.done = self.done, None
        if done is not None:
            self.ticket = None
        return done

    def hurry(self) -> None:
        self.hurried += 1

    def close(self) -> tuple[CommitTicket, StoreError | None] | None:
        if self.ticket is not None and self.done is None:
            self.step()
        return self.result()


def hub_with(store: MemoryStore) -> tuple[ServerHub, StepWriter, int, int]:
    server = JobServer(handle_prefix=b"H:t", store=store)
    hub = ServerHub(server)
    writer = StepWriter(server)
    hub.writer = writer
    client, worker = hub.open(), hub.open()
    hub.receive(worker, encode_packet(REQ, PacketType.CAN_DO, (b"f",)))
    hub.receive(client, encode_packet(REQ, PacketType.SUBMIT_JOB_BG, (b"f", b"u", b"d")))
    hub.flush()
    writer.step()
    hub.flush()  # JOB_CREATED
    hub.receive(worker, encode_packet(REQ, PacketType.GRAB_JOB_ALL, ()))
    hub.flush()
    return hub, writer, client, worker


def complete(hub: ServerHub, worker: int) -> None:
    handle = hub.broker.jobs()[0].handle
    hub.receive(worker, encode_packet(REQ, PacketType.WORK_COMPLETE, (handle, b"")))


def test_the_hub_takes_the_failed_deletes_again_without_input() -> None:
    store = MemoryStore(durable=True)
    hub, writer, _client, worker = hub_with(store)
    complete(hub, worker)
    store.fail = "down"
    hub.flush()
    for _ in range(3):  # each flush after a failed write hands the deletes over again
        writer.step()
        hub.flush()
        assert writer.busy and len(store) == 1
    store.fail = None
    writer.step()
    hub.flush()
    assert len(store) == 0 and not writer.busy


def test_finish_writes_what_a_failed_write_left() -> None:
    store = MemoryStore(durable=True)
    hub, writer, _client, worker = hub_with(store)
    complete(hub, worker)
    store.fail = "down"
    hub.flush()
    writer.step()  # failed; its result not yet collected when the stop comes
    store.fail = None
    hub.finish()
    assert len(store) == 0
