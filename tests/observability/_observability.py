"""Helpers of the observability tests (imported by them; conftest puts this folder on sys.path)."""


from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

BOUND = 20.0
"""A bound for every wait here: long enough never to matter, short enough to end a hang."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` different free loopback ports: held bound all at once while chosen, since
    ports chosen one after another can come out the same (the job server's and the
    listener's did, and the server then could not listen on its --http port)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``: status, headers, body (error statuses too)."""
    try:
        with urllib.request.urlopen(url, timeout=BOUND) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def status_doc(base: str) -> dict[str, Any]:
    code, _, body = get(base + "api/status")
    assert code == 200
    return json.loads(body)  # type: ignore[no-any-return]


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_http(base: str) -> None:
    def up() -> bool:
        try:
            return get(base + "api/status")[0] == 200
        except OSError:
            return False
    wait_until(up, f"{base} to answer")


@contextmanager
def worker_for(address: tuple[str, int], function: str, jobs: int) -> Iterator[None]:
    """A sync worker that completes ``jobs`` jobs of ``function``, then returns."""
    from gearman_proto.adapters.sync import Worker
    worker = Worker([address])
    worker.register(function, lambda job: job.data.upper())
    thread = threading.Thread(target=worker.work, args=(jobs,), daemon=True)
    thread.start()
    try:
        yield
        thread.join(BOUND)
        assert not thread.is_alive(), "the worker did not finish its jobs"
    finally:
        worker.stop(graceful=False)
        thread.join(BOUND)
