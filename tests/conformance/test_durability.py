"""Durable background jobs: SIGKILL the server with jobs queued and one running.

The server keeps background jobs in SQLite (``--queue sqlite:PATH``) and
acknowledges one (JOB_CREATED) only once it is committed.  After a SIGKILL and
a restart on the same file and port, every acknowledged job must run at least
once: none lost, priorities kept.  The adapters under test submit and work;
the server runs on each of its flavours (asyncio, uvloop, trio: the server
matrix of ``conftest.py``), so each is killed once per client flavour.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gearman_proto.events import Priority

if TYPE_CHECKING:
    from conftest import GM, ServerProcess

Fn = Callable[[str], str]


def _rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM gearman_queue").fetchone()[0])
    finally:
        conn.close()
PRIORITIES = [Priority.HIGH, Priority.NORMAL, Priority.LOW]


def test_acknowledged_background_jobs_survive_a_kill(
        gm: GM, our_server_factory: Callable[..., ServerProcess], tmp_path: Path,
        fn: Fn) -> None:
    queue = tmp_path / "queue.sqlite"
    server = our_server_factory(extra=("--queue", f"sqlite:{queue}"))
    f = fn("durable")
    client = gm.client(server)
    acknowledged = []
    for i in range(30):
        priority = PRIORITIES[i % 3]
        data = f"{priority.value}-{i:02}".encode()
        job = client.submit(f, data, priority=priority, background=True)
        assert job.handle  # JOB_CREATED: the server has it on disk
        acknowledged.append(data)

    # One job running (held by its handler), 29 queued; then SIGKILL.
    gate = gm.gate()
    running = threading.Event()

    def hold(job: Any) -> None:
        running.set()
        gate.wait()
    first = gm.worker(server)
    first.register(f, hold)
    first.start()
    assert running.wait(20)
    assert gm.status(server, f)[:2] == (30, 1)
    server.stop(kill=True)
    first.stop(graceful=False)
    gate.open()
    first.join()

    # Restarted on the same file and port: every acknowledged job runs.
    server.start()
    seen: list[bytes] = []
    second = gm.worker(server)  # one slot: jobs run one by one, in the server's order
    second.register(f, lambda job: seen.append(bytes(job.data)))
    second.start()
    gm.eventually(lambda: len(seen) >= 30, "the replayed jobs")
    assert sorted(set(seen)) == sorted(acknowledged)  # none lost (the held one ran again)
    # Priorities kept: every HIGH before any NORMAL before any LOW, oldest first.
    assert seen == sorted(acknowledged)
    gm.eventually(lambda: gm.status(server, f)[0] == 0, "the queue to empty")

    # Done jobs leave the store: after another kill nothing comes back.  The
    # rows go on the store's thread, a moment after the results went out.
    second.stop(graceful=False)
    second.join()
    gm.eventually(lambda: _rows(queue) == 0, "the done jobs' rows to go")
    server.stop(kill=True)
    server.start()
    assert gm.status(server, f) == (0, 0, 0)
