"""Losing job servers: restarts, and several servers with one killed mid-run.

Servers are the test's own (``our_server_factory``), killed with SIGKILL and
restarted on the same port.  Where two run, one is on asyncio and one on trio,
so both of our server's event loops take part.  Job handles carry each
server's ``--job-handle-prefix``, which tells where a job ran.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from gearman_proto.adapters._common import ConnectionLost, GearmanError

if TYPE_CHECKING:
    from conftest import GM, ServerProcess

Fn = Callable[[str], str]
Factory = Callable[..., "ServerProcess"]


def try_do(client: Any, function: str, data: str) -> bytes | None:
    """The result, or None if the client cannot get a job done right now."""
    try:
        return client.do(function, data)  # type: ignore[no-any-return]
    except GearmanError:
        return None


def test_worker_and_client_reconnect_after_the_server_restarts(
        gm: GM, our_server_factory: Factory, fn: Fn) -> None:
    server = our_server_factory()
    f = fn("restart")
    worker = gm.worker(server)
    worker.register(f, lambda job: bytes(job.data).upper())
    worker.start()
    client = gm.client(server, retry_delay=0.1)
    assert client.do(f, "before") == b"BEFORE"

    server.stop(kill=True)
    with pytest.raises(GearmanError):  # nowhere to fail over to
        client.do(f, "while down")
    server.start()  # same port, empty queue
    # The worker comes back by itself (backoff from reconnect_delay), so does the client.
    gm.eventually(lambda: gm.status(server, f)[2] == 1, "the worker to reconnect")
    assert gm.eventually(lambda: try_do(client, f, "after"), "the client to reconnect") \
        == b"AFTER"


def test_several_servers_one_killed_mid_run(gm: GM, our_server_factory: Factory,
                                            fn: Fn) -> None:
    a = our_server_factory(extra=("--job-handle-prefix", "H:a"))
    b = our_server_factory(extra=("--job-handle-prefix", "H:b"), loop="trio")
    f = fn("multi")
    gate = gm.gate()
    holding = threading.Semaphore(0)

    def handler(job: Any) -> bytes:
        if job.data == b"hold":
            holding.release()
            gate.wait()
        return bytes(job.handle)  # where it ran
    worker = gm.worker([a, b], max_jobs=4)
    worker.register(f, handler)
    worker.start()  # registered on both
    client = gm.client([a, b], retry_delay=0.1)

    # Submissions take turns over the servers, and the worker serves both.
    ran_on = [client.do(f, str(i)) for i in range(6)]
    assert {h[:4] for h in ran_on} == {b"H:a:", b"H:b:"}

    # One job running on each server, then a dies.
    held = [client.submit(f, "hold") for _ in range(2)]
    assert sorted(job.handle[:4] for job in held) == [b"H:a:", b"H:b:"]
    for _ in held:
        assert holding.acquire(timeout=20)
    on_a, on_b = sorted(held, key=lambda job: job.handle)
    a.stop(kill=True)
    with pytest.raises(ConnectionLost):
        on_a.wait()  # in flight on the lost server: a clear error

    # Everything submitted now goes to b, and the caller never notices a is gone.
    for i in range(6):
        assert client.do(f, f"after {i}").startswith(b"H:b:")
    gate.open()
    assert on_b.wait() == on_b.handle

    # a comes back on the same port: the worker re-registers there, the client uses it again.
    a.start()
    gm.eventually(lambda: gm.status(a, f)[2] == 1, "the worker to return to a")
    gm.eventually(lambda: (try_do(client, f, "again") or b"").startswith(b"H:a:"),
                  "the client to use a again")


class _DropsSubmissions:
    """A job server that takes connections and answers OPTION_REQ, then closes a
    connection without a word when a job is submitted on it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()[:2]
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            conn.settimeout(20.0)
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while len(buf) >= 12:
                    ptype, size = struct.unpack(">II", buf[4:12])
                    if len(buf) < 12 + size:
                        break
                    arg, buf = buf[12:12 + size], buf[12 + size:]
                    if ptype == 26:  # OPTION_REQ: say yes, as a server would
                        conn.sendall(b"\0RES" + struct.pack(">II", 27, len(arg)) + arg)
                    elif ptype != 22:  # not SET_CLIENT_ID: a submission; drop it
                        self.dropped += 1
                        return

    def close(self) -> None:
        self.sock.close()


def test_a_submission_lost_before_job_created_goes_to_the_next_server(
        gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    """The connection closes after the submission, before JOB_CREATED: the server may
    never have seen it, so the client submits it to the next server (as libgearman
    does) and the caller sees only the result."""
    f = fn("unanswered")
    hole = _DropsSubmissions()
    try:
        worker = gm.worker(our_server)
        worker.register(f, lambda job: bytes(job.data)[::-1])
        worker.start()
        client = gm.client([hole.address, our_server], retry_delay=5.0)
        assert client.do(f, "ab") == b"ba"
        assert hole.dropped == 1  # it was tried first, and lost there
    finally:
        hole.close()
