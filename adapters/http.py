"""The job server's read-only HTTP listener: ``/metrics``, the dashboard and ``/api/status``.

``gearman-proto server --http HOST:PORT`` starts it on the server's own event
loop, beside the Gearman listener: :func:`start_asyncio` for the asyncio (and
uvloop) server, :class:`AnyioHttp` for the anyio (and trio) one.  Both only
read a request head and hand it to one :class:`HttpApp`, which answers every
request the same way whatever the loop; the numbers come from the core's
:class:`~gearman_proto.stats.ServerStats`.

It answers ``GET`` and ``HEAD`` only, closes every connection after one
answer, and changes nothing in the server.  ``/metrics`` is Prometheus' text
format, written by ``prometheus_client`` (``pip install gearman-proto[metrics]``);
without it that path answers 501 and the dashboard still works.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from gearman_proto.hub import ServerHub
from gearman_proto.stats import COMMIT_BUCKETS, COUNTERS, ServerStats

if TYPE_CHECKING:
    import anyio.abc

__all__ = ["HttpApp", "HttpService", "AnyioHttp", "attach_stats", "start_asyncio",
           "parse_address", "address_option", "MAX_HEAD"]

log = logging.getLogger("gearman_proto")

MAX_HEAD = 16 * 1024
"""Longest request head (request line and headers) read; longer gets 431."""
_READ_TIMEOUT = 10.0
_PROBE_INTERVAL = 1.0

_STATIC = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js",
           "/style.css": "style.css"}
_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
          "css": "text/css; charset=utf-8"}
# The page loads only its own files and talks only to this listener; the
# dashboard escapes names anyway, this is the second lock on the door.
_SECURITY = (b"X-Content-Type-Options: nosniff\r\n"
             b"Content-Security-Policy: default-src 'none'; script-src 'self'; "
             b"style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; "
             b"form-action 'none'; frame-ancestors 'none'\r\n"
             b"Referrer-Policy: no-referrer\r\n")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            501: "Not Implemented"}


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` (then on loopback); ValueError if not."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = default_host, text
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--http {text!r}: expected HOST:PORT") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"--http {text!r}: port out of range")
    return host, number


def address_option(text: str) -> tuple[str, int]:
    """:func:`parse_address` for the ``--http`` flag: a bad value exits with one line."""
    try:
        return parse_address(text)
    except ValueError as exc:
        raise SystemExit(f"gearman-proto: {exc}") from None


def attach_stats(hub: ServerHub) -> ServerStats:
    """The hub's :class:`ServerStats`, made and attached (commits timed from now on)."""
    if hub.stats is None:
        hub.stats = ServerStats(hub, clock=time.perf_counter, now=time.time())
    return hub.stats


async def probe(stats: ServerStats, sleep: Callable[[float], Awaitable[Any]],
                interval: float = _PROBE_INTERVAL) -> None:
    """Forever: sleep ``interval``, note how late the loop woke us, sample the counters."""
    while True:
        start = time.monotonic()
        await sleep(interval)
        stats.loop_lag = max(0.0, time.monotonic() - start - interval)
        stats.sample(time.time())


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    extra: bytes = b""

    def encode(self, with_body: bool) -> bytes:
        head = (f"HTTP/1.1 {self.status} {_REASONS[self.status]}\r\n"
                f"Content-Type: {self.content_type}\r\n"
                f"Content-Length: {len(self.body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n").encode()
        return head + _SECURITY + self.extra + b"\r\n" + (self.body if with_body else b"")


class HttpApp:
    """Answers one request head with the bytes to send back, with no I/O of its own.

    ``now`` (a clock function) stamps ``/api/status`` and the metrics.
    """

    def __init__(self, stats: ServerStats, now: Callable[[], float] = time.time) -> None:
        self.stats = stats
        self.now = now
        root = resources.files("gearman_proto.adapters") / "dashboard"
        self._files = {path: (root / name).read_bytes() for path, name in _STATIC.items()}
        self._registry: Any = _registry(stats, now)

    def handle(self, head: bytes | None) -> bytes:
        """The whole answer to a request head (``None``: the head was too long)."""
        if head is None:
            return _Response(431, b"request head too long\n").encode(True)
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _Response(400, b"bad request line\n").encode(True)
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return _Response(405, b"read-only: GET and HEAD only\n",
                             extra=b"Allow: GET, HEAD\r\n").encode(True)
        return self.route(target.split("?", 1)[0]).encode(method == "GET")

    def route(self, path: str) -> _Response:
        if path == "/metrics":
            if self._registry is None:
                return _Response(501, b"prometheus_client is not installed: "
                                      b"pip install 'gearman-proto[metrics]'\n")
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
            return _Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
        if path == "/api/status":
            doc = self.stats.status_document(self.now())
            return _Response(200, json.dumps(doc, separators=(",", ":")).encode(),
                             "application/json")
        body = self._files.get(path)
        if body is None:
            return _Response(404, b"not found\n")
        return _Response(200, body, _TYPES[_STATIC[path].rpartition(".")[2]])


def _registry(stats: ServerStats, now: Callable[[], float]) -> Any:
    """A prometheus_client registry that reads ``stats`` at each scrape, or None without it."""
    try:
        from prometheus_client import CollectorRegistry, ProcessCollector
    except ImportError:
        log.warning("prometheus_client is not installed: /metrics answers 501 "
                    "(pip install 'gearman-proto[metrics]')")
        return None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats, now))
    ProcessCollector(registry=registry)
    return registry


class _Collector:
    """Builds the metric families from one snapshot per scrape (names: docs/observability.md)."""

    def __init__(self, stats: ServerStats, now: Callable[[], float]) -> None:
        self.stats = stats
        self.now = now

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        snap = self.stats.snapshot(self.now())
        info = GaugeMetricFamily("gearman_server_info", "The job server's version.",
                                 labels=["version"])
        info.add_metric([snap.version], 1)
        yield info
        yield GaugeMetricFamily("gearman_start_time_seconds",
                                "When the job server started, as Unix time.",
                                value=self.stats.started)
        fn = ["function"]
        queued = GaugeMetricFamily("gearman_jobs_queued",
                                   "Jobs waiting for a worker, per function and priority.",
                                   labels=["function", "priority"])
        scheduled = GaugeMetricFamily("gearman_jobs_scheduled",
                                      "SUBMIT_JOB_EPOCH jobs not yet due.", labels=fn)
        running = GaugeMetricFamily("gearman_jobs_running", "Jobs a worker is running.",
                                    labels=fn)
        workers = GaugeMetricFamily("gearman_workers",
                                    "Connections that registered the function.", labels=fn)
        helps = {"submitted": "New jobs accepted.",
                 "completed": "Jobs ended by WORK_COMPLETE.",
                 "failed": "Jobs ended by WORK_FAIL (from the worker or the server).",
                 "exceptions": "Jobs ended by WORK_EXCEPTION.",
                 "requeued": "Jobs a worker lost, queued again.",
                 "timed_out": "Jobs whose CAN_DO_TIMEOUT expired."}
        counters = [CounterMetricFamily(f"gearman_jobs_{name}", helps[name], labels=fn)
                    for name in COUNTERS]
        for row in snap.functions:
            for priority, n in zip(("high", "normal", "low"), row.queued, strict=True):
                queued.add_metric([row.name, priority], n)
            scheduled.add_metric([row.name], row.scheduled)
            running.add_metric([row.name], row.running)
            workers.add_metric([row.name], row.workers)
            for family, n in zip(counters, row.counts, strict=True):
                family.add_metric([row.name], n)
        yield from (queued, scheduled, running, workers, *counters)
        yield GaugeMetricFamily("gearman_functions",
                                "Functions the server knows (beyond the label cap too).",
                                value=snap.functions_total)
        conns = GaugeMetricFamily("gearman_connections", "Open connections by role.",
                                  labels=["role"])
        for role, n in snap.connections.items():
            conns.add_metric([role], n)
        yield conns
        yield CounterMetricFamily("gearman_received_bytes", "Bytes read from peers.",
                                  value=snap.bytes_in)
        yield CounterMetricFamily("gearman_sent_bytes", "Bytes handed to peers' sockets.",
                                  value=snap.bytes_out)
        yield CounterMetricFamily("gearman_protocol_errors",
                                  "Connections closed for breaking the protocol.",
                                  value=snap.protocol_errors)
        yield CounterMetricFamily("gearman_idle_closed_connections",
                                  "Connections closed by --idle-timeout.",
                                  value=snap.idle_closed)
        cumulative, buckets = 0, []
        for bound, n in zip((*map(str, COMMIT_BUCKETS), "+Inf"), snap.commit_buckets,
                            strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("gearman_store_commit_duration_seconds",
                                    "Time to commit the durable store, per group commit.",
                                    buckets=buckets, sum_value=snap.commit_seconds)
        yield GaugeMetricFamily("gearman_event_loop_lag_seconds",
                                "How late the event loop ran a 1 s timer, last time.",
                                value=snap.loop_lag)


# -- the asyncio listener -----------------------------------------------------------


class HttpService:
    """A running asyncio HTTP listener; :meth:`close` stops it and its probe."""

    def __init__(self, server: asyncio.base_events.Server, probe_task: asyncio.Task[None],
                 host: str, port: int) -> None:
        self._server = server
        self._probe = probe_task
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        self._server.close()
        self._probe.cancel()


class HttpListenError(OSError):
    """The ``--http`` address cannot be bound (``filename`` is ``host:port``)."""


async def start_asyncio(hub: ServerHub, host: str, port: int) -> HttpService:
    """Listen on ``host:port`` on the running asyncio loop, serving ``hub``'s numbers."""
    stats = attach_stats(hub)
    app = HttpApp(stats)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head: bytes | None = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                                            _READ_TIMEOUT)
            except asyncio.LimitOverrunError:
                head = None
            writer.write(app.handle(head))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            pass  # the peer left or never finished its request: nothing to answer
        finally:
            writer.close()

    try:
        server = await asyncio.start_server(on_connection, host, port, limit=MAX_HEAD,
                                            reuse_address=True)
    except OSError as exc:
        raise HttpListenError(exc.errno, exc.strerror or str(exc), f"{host}:{port}") from None
    bound = server.sockets[0].getsockname()[1]
    task = asyncio.ensure_future(probe(stats, asyncio.sleep))
    log.info("metrics and dashboard on http://%s:%d/", host, bound)
    return HttpService(server, task, host, bound)


# -- the anyio listener -------------------------------------------------------------


class AnyioHttp:
    """An anyio HTTP listener: :meth:`listen` binds, :meth:`serve` runs until cancelled."""

    def __init__(self, hub: ServerHub, host: str, port: int) -> None:
        self.stats = attach_stats(hub)
        self.app = HttpApp(self.stats)
        self.host = host
        self.port = port
        self._listener: anyio.abc.Listener[Any] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def listen(self) -> None:
        """Bind; ``self.port`` is then the real port."""
        import anyio
        from anyio.abc import SocketAttribute
        try:
            listener = await anyio.create_tcp_listener(local_host=self.host,
                                                       local_port=self.port)
        except OSError as exc:
            raise HttpListenError(exc.errno, exc.strerror or str(exc),
                                  f"{self.host}:{self.port}") from None
        self.port = listener.extra(SocketAttribute.local_port)
        self._listener = listener
        log.info("metrics and dashboard on http://%s:%d/", self.host, self.port)

    async def serve(self) -> None:
        """Answer requests and run the probe until cancelled."""
        import anyio
        if self._listener is None:
            await self.listen()
        assert self._listener is not None
        async with self._listener, anyio.create_task_group() as tg:  # closed when cancelled
            tg.start_soon(probe, self.stats, anyio.sleep)
            await self._listener.serve(self._answer, tg)

    async def _answer(self, stream: anyio.abc.ByteStream) -> None:
        import anyio
        async with stream:
            buf = b""
            with anyio.move_on_after(_READ_TIMEOUT):
                try:
                    while b"\r\n\r\n" not in buf and len(buf) <= MAX_HEAD:
                        buf += await stream.receive()
                    end = buf.find(b"\r\n\r\n")
                    head = buf[:end] if 0 <= end <= MAX_HEAD else None
                    await stream.send(self.app.handle(head))
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    pass  # the peer left before its request was whole
