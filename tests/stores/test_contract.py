"""Every durable store keeps what the job server gives it, the same way.

The same tests run on SQLite, PostgreSQL and Redis (real servers, see
``conftest.py``), through the :class:`~gearman_proto.store.JobStore`
interface and through a :class:`~gearman_proto.broker.JobServer` replaying it.
"""

from __future__ import annotations

from typing import Any

import pytest
from _dbs import QueueSpec
from gearman_proto.adapters.stores import open_store

from gearman_proto.broker import JobServer
from gearman_proto.events import (
    CanDo,
    GrabJobAll,
    JobAssign,
    JobCreated,
    Priority,
    SubmitJob,
    SubmitJobEpoch,
    WorkComplete,
)
from gearman_proto.store import StoreBatch, StoredJob, StoreError

JOBS = [
    StoredJob(b"f", b"u1", b"\x00binary\xff" * 100, Priority.HIGH),
    StoredJob(b"f", b"", b"", Priority.LOW),
    StoredJob(b"g", b"-", b"x", Priority.NORMAL, epoch=2_000_000_000),
    StoredJob(b"r", b"ru", b"d", Priority.NORMAL, reducer=b"red"),
    StoredJob(b"f", b"u1", b"same unique, another row", Priority.NORMAL),
]


def close(store: Any) -> None:
    store.close()


def test_rows_come_back_as_written(queue_spec: QueueSpec) -> None:
    """Priority, epoch, unique, reducer and binary data survive; removes apply; one commit each."""
    store = open_store(queue_spec.spec, name="a")
    assert store is not None and store.durable
    try:
        assert list(store.load()) == []
        store.write(StoreBatch([(k, job) for k, job in enumerate(JOBS, 1)]))
        # A batch that adds and removes the same key (a job cancelled before its
        # row was written) leaves nothing; removing a missing key is no error.
        store.write(StoreBatch([(9, JOBS[0])], [2, 9, 77]))
        assert list(store.load()) == [(1, JOBS[0]), (3, JOBS[2]), (4, JOBS[3]), (5, JOBS[4])]
    finally:
        close(store)
    reopened = open_store(queue_spec.spec, name="a")
    assert reopened is not None
    try:
        assert [key for key, _ in reopened.load()] == [1, 3, 4, 5]
    finally:
        close(reopened)


def test_a_job_server_replays_the_store_with_its_keys(queue_spec: QueueSpec) -> None:
    """Submissions written through the job server come back on the next, keys counting on."""
    store = open_store(queue_spec.spec, name="a")
    assert store is not None
    try:
        server = JobServer(handle_prefix=b"H:1", store=store, now=100.0)
        server.connect(1)
        server.receive(1, SubmitJob(b"f", b"low", b"", Priority.LOW, background=True))
        server.receive(1, SubmitJob(b"f", b"high", b"", Priority.HIGH, background=True))
        server.receive(1, SubmitJobEpoch(b"f", 150, b"later", b"e"))
        assert [event.handle for _, event in server.commit()] == [  # type: ignore[attr-defined]
            b"H:1:1", b"H:1:2", b"H:1:3"]
    finally:
        close(store)
    store = open_store(queue_spec.spec, name="a")
    assert store is not None
    try:
        again = JobServer(handle_prefix=b"H:2", store=store, now=100.0)
        again.connect(1)
        again.receive(1, SubmitJob(b"f", b"new", b"", background=True))
        again.commit()
        again.connect(2)
        again.receive(2, CanDo(b"f"))
        data = []
        for _ in range(3):
            out = again.receive(2, GrabJobAll())
            assigned = out[0][1]
            assert isinstance(assigned, JobAssign)
            data.append(assigned.data)
        assert data == [b"high", b"new", b"low"]  # priorities kept; the epoch job waits
        assert again.next_deadline() == 150
        rows = dict(store.load())
        assert sorted(rows) == [1, 2, 3, 4]  # the new row's key follows the replayed ones
    finally:
        close(store)


@pytest.mark.parametrize("store_kind", ["postgresql", "redis"])
def test_servers_on_one_database_each_own_their_rows(queue_spec: QueueSpec) -> None:
    """Two names, one database: each sees only its rows; a second live holder of a name
    is refused with one line naming the first; once it closes, the name is free."""
    a = open_store(queue_spec.spec, name="east")
    b = open_store(queue_spec.spec, name="west")
    assert a is not None and b is not None
    try:
        a.write(StoreBatch([(1, JOBS[0])]))
        b.write(StoreBatch([(1, JOBS[1])]))
        assert list(a.load()) == [(1, JOBS[0])]
        assert list(b.load()) == [(1, JOBS[1])]
        with pytest.raises(StoreError) as refused:
            open_store(queue_spec.spec, name="east")
        message = str(refused.value)
        assert "\n" not in message and "'east'" in message and "held by" in message
        assert "pid " in message  # names the holder
    finally:
        close(b)
        close(a)
    replacement = open_store(queue_spec.spec, name="east")
    assert replacement is not None
    try:
        assert list(replacement.load()) == [(1, JOBS[0])]
    finally:
        close(replacement)


@pytest.mark.parametrize("store_kind", ["postgresql", "redis"])
def test_a_finished_jobs_row_stays_gone_through_a_database_crash(queue_spec: QueueSpec) -> None:
    """The database is killed (-9) right after the write that deleted a finished job's row,
    while the job server runs on: after the restart the row is still gone.  A delete the
    database acknowledged but lost would leave the row behind, and the job would run again
    at the next start while this server believes it gone (issue 16, the outage defect:
    PostgreSQL's delete-only batches were committed with synchronous_commit off)."""
    import time

    database = queue_spec.database
    assert database is not None
    store = open_store(queue_spec.spec, name="crash")
    assert store is not None
    try:
        server = JobServer(handle_prefix=b"H:c", store=store)
        server.connect(1)
        server.connect(2)
        for i in range(10):
            server.receive(1, SubmitJob(b"f", b"%d" % i, b"u%d" % i, background=True))
        assert len(server.commit()) == 10
        server.receive(2, CanDo(b"f"))
        for _ in range(10):
            assigned = server.receive(2, GrabJobAll())[0][1]
            assert isinstance(assigned, JobAssign)
            server.receive(2, WorkComplete(assigned.handle, b""))
        assert server.commit() == []  # the deletes only: nothing waits for them
        database.stop(kill=True)
        database.start()
        # The server notices the crash with its next write and reconnects after a backoff.
        created: list[object] = []
        for attempt in range(100):
            server.receive(1, SubmitJob(b"f", b"after", b"a%d" % attempt, background=True))
            created = [e for _, e in server.commit() if isinstance(e, JobCreated)]
            if created:
                break
            time.sleep(0.05)
        assert created, "the store never reconnected"
    finally:
        close(store)
    reopened = open_store(queue_spec.spec, name="crash")
    assert reopened is not None
    try:
        assert [job.data for _, job in reopened.load()] == [b"after"]
    finally:
        close(reopened)


@pytest.mark.parametrize("store_kind", ["redis"])
def test_a_write_redis_refuses_is_one_line_and_the_next_one_works(queue_spec: QueueSpec) -> None:
    """Redis answers the transaction with an error (the hash replaced by a string behind the
    server's back): that write is a one-line StoreError, the connection stays in step, and
    the next write, once the key is a hash again, goes through."""
    import redis

    store = open_store(queue_spec.spec, name="w")
    assert store is not None
    other = redis.Redis.from_url(queue_spec.spec)
    try:
        store.write(StoreBatch([(1, JOBS[0])]))
        other.delete("gearman-proto:w:jobs")
        other.set("gearman-proto:w:jobs", "not a hash")
        with pytest.raises(StoreError) as refused:
            store.write(StoreBatch([(2, JOBS[1])], [1]))
        assert "WRONGTYPE" in str(refused.value) and "\n" not in str(refused.value)
        other.delete("gearman-proto:w:jobs")
        store.write(StoreBatch([(3, JOBS[2])]))
        assert list(store.load()) == [(3, JOBS[2])]
    finally:
        other.close()
        close(store)
