"""Our clients and workers against Perl's original job server (Debian gearman-server).

Gearman::Server 1.130 knows neither GRAB_JOB_UNIQ nor SUBMIT_JOB_LOW,
SUBMIT_JOB_HIGH_BG, SUBMIT_JOB_LOW_BG, WORK_DATA and WORK_WARNING: it answers
each with ``ERROR server_error`` and carries on.  Our workers fall back to GRAB_JOB on such a
server (gearman_proto.session.WorkerSession, ``grab_fallback``), and our
clients raise a ServerError naming the refused packet.  Every test runs on
the four adapters (the ``kit`` fixture).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gearman_proto.adapters import JobException, JobFailed, ServerError

from gearman_proto.events import Priority

PERL_GEARMAND = "/usr/bin/gearmand"  # libgearman's is /usr/sbin/gearmand
BOUND = 15.0


class PerlServer:
    """Gearman::Server's gearmand in a child process on 127.0.0.1:``port``."""

    def __init__(self, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.host = "127.0.0.1"
        self.log = log
        self.proc = subprocess.Popen(
            [PERL_GEARMAND, f"--port={self.port}", "--listen=127.0.0.1"],
            stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + BOUND
        while True:
            assert self.proc.poll() is None, f"Perl's gearmand exited: {log.read_text()}"
            with contextlib.suppress(OSError):
                socket.create_connection(self.address, timeout=1).close()
                return
            assert time.monotonic() < deadline, "Perl's gearmand did not listen"
            time.sleep(0.05)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(BOUND)


@pytest.fixture(scope="module")
def perl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PerlServer]:
    version = subprocess.run([PERL_GEARMAND, "--version"], capture_output=True, text=True,
                             ) if os.path.exists(PERL_GEARMAND) else None
    if version is None or "Gearman::Server" not in version.stdout:
        message = "Perl's Gearman::Server not found: apt-get install gearman-server"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = PerlServer(tmp_path_factory.mktemp("perl-gearmand") / "gearmand.log")
    yield server
    server.stop()


def test_our_worker_falls_back_to_grab_job(kit: Any, perl_server: PerlServer,
                                           tap: Callable[..., Any], fresh: Callable[[str], str],
                                           until: Callable[..., None]) -> None:
    fn = fresh("reverse")
    wire = tap(perl_server.address)
    worker = kit.worker(wire.address)
    worker.register(fn, lambda job: job.data[::-1])
    client = kit.client(perl_server.address)
    with worker.serving():
        until(lambda: ("<", "ERROR") in wire.packets(0), "the refusal of GRAB_JOB_UNIQ")
        assert client.do(fn, b"Hello world!") == b"!dlrow olleH"
        assert client.do(fn, b"again") == b"niaga"
    grabs = [p for p in wire.packets(0) if p[1] in (
        "GRAB_JOB_UNIQ", "GRAB_JOB", "ERROR", "JOB_ASSIGN", "JOB_ASSIGN_UNIQ", "WORK_COMPLETE")]
    # One refusal, then plain GRAB_JOB only, on the same connection.
    assert grabs[:2] == [(">", "GRAB_JOB_UNIQ"), ("<", "ERROR")]
    assert ("<", "ERROR") not in grabs[2:] and (">", "GRAB_JOB_UNIQ") not in grabs[2:]
    assert grabs.count(("<", "JOB_ASSIGN")) == 2
    assert grabs.count((">", "WORK_COMPLETE")) == 2


def test_failures_exceptions_and_updates_reach_our_client(
        kit: Any, perl_server: PerlServer, fresh: Callable[[str], str]) -> None:
    fn = fresh("jobs")

    def handler(job: Any) -> bytes:
        if job.data == b"fail":
            job.fail()
            return b""
        if job.data == b"raise":
            raise ValueError("no such thing")
        job.send_status(1, 2)
        job.send_data(b"half")
        return b"done"

    worker = kit.worker(perl_server.address)
    worker.register(fn, handler)
    client = kit.client(perl_server.address)
    with worker.serving():
        job = client.submit(fn, b"go")
        # Gearman::Server has no WORK_DATA (nor WORK_WARNING): it answers
        # ERROR server_error, which our worker logs, and the job goes on.
        assert [(type(u).__name__, u.numerator, u.denominator) for u in job.updates()] == [
            ("WorkStatus", 1, 2)]
        assert job.result() == b"done"
        assert client.do(fn, b"again") == b"done"  # the worker carries on
        with pytest.raises(JobFailed) as failed:
            client.do(fn, b"fail")
        assert not isinstance(failed.value, JobException)
        with pytest.raises(JobException) as raised:  # Gearman::Server knows "exceptions"
            client.do(fn, b"raise")
        assert raised.value.data == b"ValueError: no such thing"


@pytest.mark.parametrize(("priority", "background", "packet"), [
    (Priority.LOW, False, "SUBMIT_JOB_LOW"),
    (Priority.HIGH, True, "SUBMIT_JOB_HIGH_BG"),
    (Priority.LOW, True, "SUBMIT_JOB_LOW_BG"),
])
def test_a_refused_priority_is_a_clear_error(kit: Any, perl_server: PerlServer,
                                             fresh: Callable[[str], str], priority: Priority,
                                             background: bool, packet: str) -> None:
    fn = fresh("prio")
    client = kit.client(perl_server.address)
    with pytest.raises(ServerError) as refused:
        client.submit(fn, b"x", priority=priority, background=background)
    assert refused.value.refused == packet
    assert refused.value.code == b"server_error"
    assert str(refused.value).startswith(f"the job server refused {packet} (server_error: ")
    # The connection carries on: what the server has still works.
    worker = kit.worker(perl_server.address)
    worker.register(fn, lambda job: job.data.upper())
    with worker.serving():
        assert client.do(fn, b"normal") == b"NORMAL"
        assert client.do(fn, b"high", priority=Priority.HIGH) == b"HIGH"
        assert client.submit(fn, b"bg", background=True).handle


def test_python_gearman_compat_client_on_perl_server(perl_server: PerlServer,
                                                     fresh: Callable[[str], str]) -> None:
    from gearman_proto.adapters import compat as gearman

    client = gearman.GearmanClient([f"{perl_server.host}:{perl_server.port}"])
    try:
        with pytest.raises(gearman.ProtocolError, match="refused SUBMIT_JOB_LOW_BG"):
            client.submit_job(fresh("compat"), "x", priority=gearman.PRIORITY_LOW,
                              background=True)
        request = client.submit_job(fresh("compat"), "x", background=True)
        assert request.state == gearman.JOB_CREATED
    finally:
        client.shutdown()


def test_a_worker_that_cannot_grab_says_so_and_raises_from_work(
        kit: Any, perl_server: PerlServer, fresh: Callable[[str], str],
        caplog: pytest.LogCaptureFixture) -> None:
    from gearman_proto.errors import GrabRefused
    worker = kit.worker(perl_server.address, grab_fallback=False)
    worker.register(fresh("never"), lambda job: b"")
    # Without the fallback this server can never hand out a job: work() ends by
    # itself with the refusal, and says so at ERROR, instead of stalling.
    with caplog.at_level("ERROR", logger="gearman_proto.worker"), \
            pytest.raises(GrabRefused, match="GRAB_JOB_UNIQ"):
        kit.call(worker.worker.work)
    assert any("refused to hand out jobs" in r.getMessage() for r in caplog.records)
