"""The asyncio adapter: Client, Worker, AdminClient and a job server.

``Client``, ``Worker`` and ``AdminClient`` are the one implementation of
:mod:`gearman_proto.adapters._impl` bound to asyncio (raw Protocols, bare
futures); their decisions come from the core (:mod:`gearman_proto.session`,
:mod:`gearman_proto.policy`).  The server is a loop of raw Protocols around
:class:`~gearman_proto.hub.ServerHub`.  uvloop is
used when installed and asked for (``serve(..., loop="uvloop")`` or
``gearman-proto server --loop uvloop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl as _ssl
import time
from collections.abc import Callable
from typing import Any, cast

from gearman_proto.broker import JobServer
from gearman_proto.hub import DEFAULT_MAX_CLIENT_JOBS, ServerHub
from gearman_proto.packets import DEFAULT_MAX_PACKET_SIZE

from . import _impl
from ._asyncio_backend import BACKEND
from ._common import KeepAlive, apply_keepalive

__all__ = ["Client", "ClientJob", "Worker", "WorkerJob", "AdminClient", "Server", "serve",
           "KeepAlive"]

log = logging.getLogger("gearman_proto")


# -- client, worker, admin: the one implementation, on asyncio ----------------------


class Client(_impl.Client):
    __doc__ = _impl.Client.__doc__
    backend = BACKEND


class Worker(_impl.Worker):
    __doc__ = _impl.Worker.__doc__
    backend = BACKEND


class AdminClient(_impl.AdminClient):
    __doc__ = _impl.AdminClient.__doc__
    backend = BACKEND


ClientJob = _impl.ClientJob
WorkerJob = _impl.WorkerJob
Handler = _impl.Handler


# -- server ---------------------------------------------------------------------------


class _Peer(asyncio.Protocol):
    """One accepted connection: bytes go to the hub, the hub's answers come back."""

    __slots__ = ("cid", "paused_jobs", "paused_output", "server", "transport")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.cid = 0
        self.transport: asyncio.Transport | None = None
        # Why reading is paused: its output is not drained, or it waits for
        # too many jobs (ServerHub.may_read).  Resumed when neither holds.
        self.paused_output = False
        self.paused_jobs = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance(transport, asyncio.Transport): uvloop's transports
        # implement the interface without subclassing it.
        transport = cast(asyncio.Transport, transport)
        server = self.server
        if server.max_connections and len(server.hub) >= server.max_connections:
            log.warning("refusing connection: %d connections open", len(server.hub))
            transport.abort()
            return
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and server.keepalive:
            apply_keepalive(sock, server.keepalive)
        peer = transport.get_extra_info("peername")
        address = peer[0].encode() if isinstance(peer, tuple) else b"-"
        if server.hub.idle_timeout:
            # The idle clock starts now, and the flush re-arms the timer for it.
            server.batch_started()
        self.cid = server.hub.open(address)
        server.peers[self.cid] = self
        # Outputs are written with no flow control of their own; this bound is
        # where pause_writing() stops us reading from a peer that doesn't read.
        transport.set_write_buffer_limits(high=server.output_limit)

    def data_received(self, data: bytes) -> None:
        server = self.server
        server.batch_started()
        hub = server.hub
        hub.receive(self.cid, data)
        if not hub.may_read(self.cid) and not self.paused_jobs and self.transport is not None:
            self.paused_jobs = True
            self.transport.pause_reading()
            server.job_paused.append(self)

    def eof_received(self) -> bool | None:
        server = self.server
        server.batch_started()
        server.hub.receive(self.cid, b"")
        if self.transport is None or self.transport.get_extra_info("sslcontext") is not None:
            return None  # TLS has no half-close: asyncio closes it now
        # Keep the transport until the flush, so what is due to the peer (the
        # ERROR for a message its EOF cut short) is written before closing.
        server.finished.append(self)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self.transport is None:
            return
        server.peers.pop(self.cid, None)
        server.batch_started()
        server.hub.closed(self.cid)

    def pause_writing(self) -> None:
        self.paused_output = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused_output = False
        self.resume()

    def resume(self) -> None:
        """Read again, unless the other reason to pause still holds."""
        if (self.transport is not None and not self.transport.is_closing()
                and not self.paused_output and not self.paused_jobs):
            self.transport.resume_reading()


class Server:
    """A Gearman job server on asyncio, driving the core's JobServer through a ServerHub.

    Every read in one turn of the event loop is processed, then one flush
    commits durable jobs once (group commit) and writes each connection's
    output in one call.  A connection with more than ``output_limit`` bytes
    unsent is not read from until they drain, nor one waiting for
    ``max_client_jobs`` foreground jobs until some end.  ``idle_timeout`` (seconds, 0 =
    never) closes connections silent for that long without a reason (see
    :class:`~gearman_proto.hub.ServerHub`); ``keepalive`` is ``True`` or a
    :class:`KeepAlive` with timings.  The admin ``shutdown`` command (with
    ``allow_shutdown=True``) closes the server like :meth:`close`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 4730, *,
                 broker: JobServer | None = None, ssl: _ssl.SSLContext | None = None,
                 max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
                 max_connections: int = 0, output_limit: int = 4 * 1024 * 1024,
                 keepalive: bool | KeepAlive = False, backlog: int = 1024,
                 idle_timeout: float = 0.0, max_client_jobs: int = DEFAULT_MAX_CLIENT_JOBS,
                 http: tuple[str, int] | None = None, **broker_options: Any) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl
        self.backlog = backlog
        if broker is None:
            broker_options.setdefault("pid", os.getpid())
            broker = JobServer(now=time.time(), **broker_options)
        self.hub = ServerHub(broker, max_packet_size=max_packet_size, idle_timeout=idle_timeout,
                             max_client_jobs=max_client_jobs)
        self.max_connections = max_connections
        self.output_limit = output_limit
        self.keepalive = keepalive
        self.http_address = http  # (host, port) of /metrics and the dashboard (adapters/http.py)
        self.http: Any = None
        self.peers: dict[int, _Peer] = {}
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        """The deadline ``_timer`` was set for."""
        self._closed = asyncio.Event()
        self.finished: list[_Peer] = []
        """Peers that sent EOF: closed by the next flush, after their last bytes."""
        self.job_paused: list[_Peer] = []
        """Peers not read from while they wait for max_client_jobs jobs or more."""

    @property
    def broker(self) -> JobServer:
        """The core's job server (its state is what the admin commands report)."""
        return self.hub.broker

    async def start(self) -> None:
        """Bind and start accepting; ``self.port`` is the real port (useful with port 0)."""
        self._loop = asyncio.get_running_loop()
        if self.broker.durable and self.hub.writer is None:
            # Durable writes on the store's thread (storethread.py): it wakes the loop.
            from .storethread import ThreadWriter
            loop = self._loop
            self.hub.writer = ThreadWriter(
                self.broker.write, lambda: loop.call_soon_threadsafe(self.batch_started))
        self._server = await self._loop.create_server(
            lambda: _Peer(self), self.host, self.port, ssl=self.ssl, backlog=self.backlog,
            reuse_address=True)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("gearman-proto job server listening on %s:%d", self.host, self.port)
        if self.http_address is not None:
            from .http import start_asyncio
            self.http = await start_asyncio(self.hub, *self.http_address)
        self._schedule_timer()

    def batch_started(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            # The clock is read once per batch: epoch jobs and timeouts need it.
            self.hub.advance(time.time())
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        out = self.hub.flush()
        for cid, text in out.notices:  # input accepted leniently (rare)
            log.warning("connection %d: %s", cid, text)
        peers = self.peers
        for cid, data in out.writes.items():
            peer = peers.get(cid)
            if peer is not None and peer.transport is not None:
                peer.transport.write(data)
        for cid in out.close:
            peer = peers.get(cid)
            if peer is not None and peer.transport is not None:
                peer.transport.close()
        if self.finished:
            for peer in self.finished:
                if peer.transport is not None:
                    peer.transport.close()
            self.finished.clear()
        if self.job_paused:
            hub = self.hub
            still = []
            for peer in self.job_paused:
                if hub.may_read(peer.cid):
                    peer.paused_jobs = False
                    peer.resume()
                else:
                    still.append(peer)
            self.job_paused = still
        self._schedule_timer()
        requested = self.broker.shutdown_requested
        if requested is not None and not self._closed.is_set():
            # The admin `shutdown [graceful]` (allow_shutdown): its OK is written above.
            self.close(graceful=requested == "graceful")
        if self._draining and not self._has_running_jobs():
            self._closed.set()

    def _schedule_timer(self) -> None:
        deadline = self.hub.next_deadline()
        if deadline == self._timer_at:
            return  # asked after every turn; the timer set for it stands
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is None or self._loop is None:
            return
        delay = max(0.0, deadline - time.time())
        self._timer = self._loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._timer_at = None
        self.hub.advance(time.time())
        self._flush()

    _draining = False

    def _has_running_jobs(self) -> bool:
        return any(row.running for row in self.broker.status_rows())

    def close(self, graceful: bool = False) -> None:
        """Stop accepting.  Graceful: keep serving until no job is running, then stop."""
        if self._server is not None:
            self._server.close()
        if graceful:
            self._draining = True
            if not self._has_running_jobs():
                self._closed.set()
        else:
            self._closed.set()

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` (or SIGTERM/SIGINT, SIGUSR1 for graceful, if installed)."""
        if self._server is None:
            await self.start()
        await self._closed.wait()
        if self.http is not None:
            self.http.close()
        if self._server is not None:
            self._server.close()
        for peer in list(self.peers.values()):
            if peer.transport is not None:
                peer.transport.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        self.hub.finish()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop at once; SIGUSR1 stops gracefully (as gearmand)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.close)
        loop.add_signal_handler(signal.SIGINT, self.close)
        loop.add_signal_handler(signal.SIGUSR1, lambda: self.close(graceful=True))

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        with contextlib.suppress(Exception):
            await self.serve_forever()


async def serve(host: str = "127.0.0.1", port: int = 4730, *, signals: bool = True,
                ready: Callable[[Server], None] | None = None, **options: Any) -> None:
    """Run a job server until stopped (SIGTERM/SIGINT; SIGUSR1 graceful)."""
    server = Server(host, port, **options)
    await server.start()
    if signals:
        server.install_signal_handlers()
    if ready is not None:
        ready(server)
    await server.serve_forever()
