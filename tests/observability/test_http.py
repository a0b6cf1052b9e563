"""``gearman-proto server --http``: /metrics in Prometheus' format, /api/status, read-only.

The request handler is tested on its own first (no sockets), then one test
body runs against the server on each loop (asyncio, uvloop, trio): the same
numbers must come out of every flavour.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from _observability import BOUND, get, status_doc, wait_until, worker_for
from gearman_proto.adapters.http import HttpApp, parse_address
from gearman_proto.adapters.sync import Client, Worker, WorkerJob
from prometheus_client.parser import text_string_to_metric_families

from gearman_proto.broker import JobServer
from gearman_proto.events import CanDo, SubmitJob
from gearman_proto.hub import ServerHub
from gearman_proto.stats import ServerStats

LOOPS = ["asyncio", "uvloop", "trio"]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, keyed by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def app() -> HttpApp:
    hub = ServerHub(JobServer(version=b"gearman-proto test"))
    hub.stats = ServerStats(hub, clock=lambda: 0.0, now=0.0)
    hub.broker.connect(1)
    hub.broker.connect(2)
    hub.broker.receive(1, SubmitJob(b"resize", b"x", background=True))
    hub.broker.receive(2, CanDo(b"resize"))
    return HttpApp(hub.stats, now=lambda: 10.0)


# -- the request handler, no sockets ---------------------------------------------------


def test_metrics_page_is_prometheus_text_with_the_documented_names() -> None:
    answer = app().handle(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: text/plain; version=" in head
    got = samples(body.decode())
    assert got[("gearman_jobs_queued", (("function", "resize"), ("priority", "normal")))] == 1
    assert got[("gearman_workers", (("function", "resize"),))] == 1
    assert got[("gearman_jobs_submitted_total", (("function", "resize"),))] == 1
    assert got[("gearman_connections", (("role", "worker"),))] == 1
    assert got[("gearman_server_info", (("version", "gearman-proto test"),))] == 1
    names = {name for name, _ in got}
    for name in ("gearman_jobs_running", "gearman_jobs_scheduled", "gearman_functions",
                 "gearman_jobs_completed_total", "gearman_jobs_failed_total",
                 "gearman_jobs_exceptions_total", "gearman_jobs_requeued_total",
                 "gearman_jobs_timed_out_total", "gearman_received_bytes_total",
                 "gearman_sent_bytes_total", "gearman_store_commit_duration_seconds_bucket",
                 "gearman_store_commit_duration_seconds_count",
                 "gearman_event_loop_lag_seconds", "gearman_protocol_errors_total"):
        assert name in names, name


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_get_and_head_are_answered(method: str) -> None:
    answer = app().handle(f"{method} /metrics HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert b"\r\nAllow: GET, HEAD\r\n" in answer


def test_head_has_no_body_and_unknown_paths_are_404() -> None:
    a = app()
    head = a.handle(b"HEAD /api/status HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    assert a.handle(b"GET /../../etc/passwd HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert a.handle(b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")


def test_bad_request_lines_and_long_heads_get_4xx() -> None:
    a = app()
    assert a.handle(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert a.handle(b"GET / SPDY/3\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert a.handle(None).startswith(b"HTTP/1.1 431 ")


def test_the_page_is_served_with_a_policy_that_allows_only_its_own_files() -> None:
    answer = app().handle(b"GET / HTTP/1.1\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: text/html" in head
    assert b"Content-Security-Policy: default-src 'none'; script-src 'self'" in head
    assert b"X-Content-Type-Options: nosniff" in head
    assert b'<script src="app.js"' in body and b"http" not in body.split(b"<footer")[0]
    for path in (b"/app.js", b"/style.css"):
        assert app().handle(b"GET " + path + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 ")


def test_http_address_defaults_to_loopback() -> None:
    assert parse_address("9100") == ("127.0.0.1", 9100)
    assert parse_address(":9100") == ("127.0.0.1", 9100)
    assert parse_address("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_address("[::1]:9100") == ("::1", 9100)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address("localhost:http")


# -- the real servers ------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_every_flavour_serves_the_same_numbers(http_server: Callable[..., Any],
                                               loop: str) -> None:
    server, base = http_server(loop)
    with Client([server.address]) as client:
        for i in range(3):
            client.submit("resize", b"img%d" % i, background=True)
        job = client.submit("fails", b"x")
        with worker_for(server.address, "resize", 1):
            pass
        fail_worker = Worker([server.address])

        def fail(job: WorkerJob) -> bytes:
            raise RuntimeError("no")
        fail_worker.register("fails", fail)
        thread = threading.Thread(target=fail_worker.work, args=(1,), daemon=True)
        thread.start()
        with pytest.raises(Exception):  # noqa: B017 (the job's failure, whatever it is named)
            job.wait(BOUND)
        fail_worker.stop(graceful=False)
        thread.join(BOUND)

    def done() -> bool:
        _code, _headers, body = get(base + "metrics")
        got = samples(body.decode())
        return got.get(("gearman_jobs_completed_total", (("function", "resize"),))) == 1
    wait_until(done, "the completed job to show in /metrics")
    code, headers, body = get(base + "metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=")
    got = samples(body.decode())
    resize = (("function", "resize"),)
    assert got[("gearman_jobs_queued", (*resize, ("priority", "normal")))] == 2
    assert got[("gearman_jobs_submitted_total", resize)] == 3
    assert got[("gearman_jobs_failed_total", (("function", "fails"),))] \
        + got[("gearman_jobs_exceptions_total", (("function", "fails"),))] == 1
    assert got[("gearman_received_bytes_total", ())] > 0
    assert got[("gearman_sent_bytes_total", ())] > 0
    assert got[("gearman_event_loop_lag_seconds", ())] >= 0
    assert ("process_cpu_seconds_total", ()) in got

    doc = status_doc(base)
    row = next(f for f in doc["functions"] if f["name"] == "resize")
    assert row["queued"] == [0, 2, 0] and row["completed"] == 1
    wait_until(lambda: len(status_doc(base)["history"]) >= 2, "the once-a-second samples")


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_the_listener_refuses_to_change_anything(http_server: Callable[..., Any],
                                                 loop: str) -> None:
    _server, base = http_server(loop)
    port = int(base.rsplit(":", 1)[1].strip("/"))
    for request in (b"POST /api/status HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",
                    b"DELETE / HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as s:
            s.sendall(request)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert answer.split(b" ", 2)[1] in (b"405", b"431"), answer[:80]
    assert json.loads(get(base + "api/status")[2])["functions"] == []


def test_http_is_off_unless_asked_and_a_bad_address_is_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "gearman_proto.adapters.cli", "server",
                           "--port", "0", "--http", "localhost:http"],
                          capture_output=True, text=True, timeout=BOUND)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "gearman-proto: --http 'localhost:http': expected HOST:PORT"]


def test_without_http_the_ready_line_names_no_dashboard(our_server_factory: Any) -> None:
    server = our_server_factory()
    wait_until(lambda: "listening on" in server.log.read_text(), "the ready line")
    assert "dashboard" not in server.log.read_text()


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_a_taken_http_port_is_one_line_naming_it(loop: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "gearman_proto.adapters.cli", "server",
                               "--port", "0", "--loop", loop, "--http", f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=BOUND)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("gearman-proto server: --http 127.0.0.1:") and "in use" in line
