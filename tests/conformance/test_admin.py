"""Every AdminClient command on every adapter, against a job server of the test's own.

A server of its own (not the session's) so that the lists are exactly what
this test made, and so that ``shutdown`` may end it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from gearman_proto.adapters._common import GearmanError, JobFailed, ServerError

import gearman_proto
from gearman_proto.admin import AdminError, JobRow, PriorityStatusRow, StatusRow
from gearman_proto.events import Priority

if TYPE_CHECKING:
    from conftest import GM, ServerProcess

Fn = Callable[[str], str]


def test_every_admin_command(gm: GM, our_server_factory: Callable[..., ServerProcess],
                             fn: Fn) -> None:
    server = our_server_factory(extra=("--allow-shutdown",))
    admin = gm.admin(server)
    f, busy, spare = fn("queued"), fn("busy"), fn("spare")

    assert admin.version() == gearman_proto.SERVER_VERSION
    assert admin.verbose() == "INFO"  # the fixture starts the server with --verbose INFO
    assert admin.getpid() == server.pid

    admin.create_function(spare)
    assert StatusRow(spare.encode(), 0, 0, 0) in admin.status()

    # Background jobs queued at each priority (no worker for f).
    client = gm.client(server)
    jobs = {}
    for priority, count in ((Priority.HIGH, 2), (Priority.NORMAL, 1), (Priority.LOW, 3)):
        for i in range(count):
            unique = f"{priority.name}-{i}"
            jobs[unique] = client.submit(f, "x", unique=unique, priority=priority,
                                         background=True)
    assert StatusRow(f.encode(), 6, 0, 0) in admin.status()
    assert PriorityStatusRow(f.encode(), 2, 1, 3, 0) in admin.priority_status()
    assert set(admin.show_unique_jobs()) >= {u.encode() for u in jobs}
    shown = {row.handle: row for row in admin.show_jobs()}
    for job in jobs.values():
        assert shown[job.handle] == JobRow(job.handle, 0, False, True)

    # A worker (with its client id) on another function, holding a job.
    gate = gm.gate()
    started = threading.Event()

    def hold(job: Any) -> bytes:
        started.set()
        gate.wait()
        return b"done"
    worker = gm.worker(server, client_id="admin-test-worker")
    worker.register(busy, hold)
    worker.start()
    running = client.submit(busy, "y")
    assert started.wait(20)
    rows = admin.workers()
    assert any(r.client_id == b"admin-test-worker" and r.functions == (busy.encode(),)
               for r in rows)
    assert StatusRow(busy.encode(), 1, 1, 1) in admin.status()
    assert shown.keys().isdisjoint({running.handle})

    # cancel job: the queued job leaves; an unknown handle is an error.
    admin.cancel_job(jobs["LOW-0"].handle)
    assert jobs["LOW-0"].handle not in {row.handle for row in admin.show_jobs()}
    assert PriorityStatusRow(f.encode(), 2, 1, 2, 0) in admin.priority_status()
    with pytest.raises(AdminError):
        admin.cancel_job(b"H:nowhere:1")
    # A waiting foreground client hears WORK_FAIL when its job is cancelled.
    waiting = client.submit(f, "z", priority=Priority.LOW)
    admin.cancel_job(waiting.handle)
    with pytest.raises(JobFailed):
        waiting.wait()

    # maxqueue: one limit for every priority, three per priority, none to reset.
    admin.maxqueue(f, 5)
    with pytest.raises(ServerError):
        client.submit(f, "over", background=True)  # 5 queued already
    admin.maxqueue(f, 10, 10, 2)
    with pytest.raises(ServerError):
        client.submit(f, "low", priority=Priority.LOW, background=True)  # 2 LOW queued
    client.submit(f, "high", priority=Priority.HIGH, background=True)
    admin.maxqueue(f)
    client.submit(f, "low", priority=Priority.LOW, background=True)
    with pytest.raises(ValueError):
        admin.maxqueue(f, 1, 2)

    # drop function: only one nobody can do and nothing runs for.
    admin.drop_function(spare)
    assert spare.encode() not in {row.function for row in admin.status()}
    with pytest.raises(AdminError):
        admin.drop_function(busy)  # a worker can do it, and a job of it runs

    gate.open()
    assert running.wait() == b"done"

    # shutdown (the server was started with --allow-shutdown): it answers OK, then exits.
    admin.shutdown()
    assert server.proc is not None
    assert server.proc.wait(20) == 0
    with pytest.raises(GearmanError):
        gm.admin(server).status()
