"""Perl's Gearman::Client and Gearman::Worker against our server (issue 4 §3).

tests/interop/gearman_peer.pl drives the Perl classes and prints one line per
event it sees.  Each test runs against our server and against gearmand 1.1.20
(the ``server`` fixture) and expects the same lines from both, job handles
aside: the Perl side's handles (``HOST:PORT//H:...``) are normalized.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import pytest
from gearman_proto.adapters._common import JobFailed
from gearman_proto.adapters.sync import AdminClient, Client, Worker

from gearman_proto.events import WorkStatus

if TYPE_CHECKING:
    from conftest import ServerProcess

BOUND = 15.0


class Perl:
    """The Perl peer as a child process: send it lines, read its lines (bounded)."""

    def __init__(self, command: list[str], server: ServerProcess, *args: str) -> None:
        self.server = server
        self.proc = subprocess.Popen([*command, f"{server.host}:{server.port}", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0)
        self.lines: list[str] = []
        self._err: list[bytes] = []
        threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()

    def _drain(self, stream: IO[bytes]) -> None:
        self._err.extend(stream)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    def read(self) -> str:
        """The next line the Perl side printed, handles normalized to ``<handle>``."""
        assert self.proc.stdout is not None
        box: list[bytes] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(BOUND)
        if not box or not box[0]:
            pytest.fail(f"no line from the Perl peer; stderr: {b''.join(self._err)!r}")
        line = box[0].decode().rstrip("\n")
        self.lines.append(line)
        return re.sub(r"\S+//H:\S+", "<handle>", line)

    def read_until(self, last: str) -> list[str]:
        out = [self.read()]
        while out[-1] != last:
            out.append(self.read())
        return out

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(BOUND)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def perl(perl_gearman: list[str]) -> Iterator[Callable[..., Perl]]:
    started: list[Perl] = []

    def start(server: ServerProcess, *args: str) -> Perl:
        started.append(Perl(perl_gearman, server, *args))
        return started[-1]

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
        p.proc.wait()


@contextmanager
def our_worker(server: ServerProcess, fn: str, handler: Callable[[Any], Any]) -> Iterator[None]:
    worker = Worker([server.address])
    worker.register(fn, handler)
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        worker.stop(graceful=False)
        thread.join(BOUND)


@pytest.mark.feature("tools.foreground", "perl-client")
@pytest.mark.feature("tools.status", "perl-client")
def test_perl_client_foreground_with_status_data_and_warning(
        server: ServerProcess, perl: Callable[..., Perl], fresh: Callable[[str], str]) -> None:
    fn = fresh("perl-fg")

    def handler(job: Any) -> bytes:
        job.send_status(1, 3)
        job.send_data(b"chunk")
        job.send_warning(b"careful")
        job.send_status(3, 3)
        return job.data[::-1]

    client = perl(server, "client")
    with our_worker(server, fn, handler):
        client.send(f"fg {fn} hello")
        assert client.read_until("done") == [
            "status 1 3", "data chunk", "warning careful", "status 3 3", "complete olleh",
            "done"]
    assert client.close() == 0


@pytest.mark.feature("tools.fail", "perl-client")
def test_perl_client_sees_work_fail(server: ServerProcess, perl: Callable[..., Perl],
                                    fresh: Callable[[str], str]) -> None:
    fn = fresh("perl-fail")
    client = perl(server, "client")
    with our_worker(server, fn, lambda job: job.fail()):
        client.send(f"fg {fn} x")
        assert client.read_until("done") == ["fail", "done"]
    assert client.close() == 0


@pytest.mark.feature("tools.background", "perl-client")
@pytest.mark.feature("tools.status", "perl-client")
def test_perl_client_background_and_get_status(server: ServerProcess,
                                               perl: Callable[..., Perl],
                                               fresh: Callable[[str], str],
                                               until: Callable[..., None]) -> None:
    """dispatch_background, then get_status while queued, running (with WORK_STATUS) and
    after the end."""
    fn, unique = fresh("perl-bg"), fresh("u")
    started, release = threading.Event(), threading.Event()

    def handler(job: Any) -> bytes:
        job.send_status(1, 2)
        started.set()
        release.wait(BOUND)
        return b""

    client = perl(server, "client")
    client.send(f"bg {fn} {unique} payload")
    assert client.read() == "handle <handle>"
    handle = client.lines[-1].split(" ", 1)[1]
    assert handle.startswith(f"{server.host}:{server.port}//H:")
    client.send(f"status {handle}")
    assert client.read() == "status 1 0 0 0"
    try:
        with our_worker(server, fn, handler), Client([server.address]) as ours:
            assert started.wait(BOUND)
            shandle = handle.split("//", 1)[1]
            until(lambda: ours.get_status(shandle).numerator == 1, "WORK_STATUS")
            client.send(f"status {handle}")
            assert client.read() == "status 1 1 1 2"
            release.set()
            until(lambda: not ours.get_status(shandle).known, "the job to finish")
    finally:
        release.set()
    client.send(f"status {handle}")
    assert client.read() == "status 0 0 0 0"
    assert client.close() == 0


def wait_for_worker(server: ServerProcess, fn: str, until: Callable[..., None]) -> None:
    with AdminClient(server.address) as admin:
        until(lambda: any(r.function == fn.encode() and r.available_workers
                          for r in admin.status()), "the Perl worker to register")


@pytest.mark.feature("tools.foreground", "perl-worker")
@pytest.mark.feature("tools.status", "perl-worker")
@pytest.mark.feature("tools.fail", "perl-worker")
def test_perl_worker_serves_our_client(server: ServerProcess, perl: Callable[..., Perl],
                                       fresh: Callable[[str], str],
                                       until: Callable[..., None]) -> None:
    """Gearman::Worker (GRAB_JOB, PRE_SLEEP on connect) runs our jobs: a result, status
    updates, and a failure (its handler returning undef)."""
    fn = fresh("perl-worker")
    worker = perl(server, "worker", fn, "3")
    assert worker.read() == "ready"
    wait_for_worker(server, fn, until)
    with Client([server.address], result_timeout=BOUND) as client:
        assert client.do(fn, b"hello") == b"olleh"
        job = client.submit(fn, b"status:abc")
        assert list(job.updates()) == [WorkStatus(job.handle, 1, 2),
                                       WorkStatus(job.handle, 2, 2)]
        assert job.wait() == b"cba"
        with pytest.raises(JobFailed):
            client.do(fn, b"fail")
    assert worker.read_until("fail <handle>") == [
        "job hello", "complete <handle>", "job status:abc", "complete <handle>", "job fail",
        "fail <handle>"]
    assert worker.close() == 0  # stop_if: three jobs done


@pytest.mark.feature("tools.perl-both", "perl-client", "perl-worker")
def test_perl_client_and_perl_worker(server: ServerProcess, perl: Callable[..., Perl],
                                     fresh: Callable[[str], str],
                                     until: Callable[..., None]) -> None:
    """Both Perl classes, talking through the server only."""
    fn = fresh("perl-both")
    worker = perl(server, "worker", fn, "2")
    assert worker.read() == "ready"
    wait_for_worker(server, fn, until)
    client = perl(server, "client")
    client.send(f"fg {fn} status:perl")
    assert client.read_until("done") == ["status 1 2", "status 2 2", "complete lrep", "done"]
    client.send(f"fg {fn} fail")
    assert client.read_until("done") == ["fail", "done"]
    assert client.close() == 0
    assert worker.read_until("fail <handle>")[-1] == "fail <handle>"
    assert worker.close() == 0
