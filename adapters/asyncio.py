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
import errno
import functools
import logging
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from gearman_proto.hub import Flush, Reader

from . import _impl
from ._asyncio_backend import BACKEND
from ._common import (
    KeepAlive,
    apply_keepalive,
)
from ._server import ServerBase
from ._server import server_log as _server_log

__all__ = ["Client", "ClientJob", "Worker", "WorkerJob", "AdminClient", "Server", "serve",
           "KeepAlive"]

log = logging.getLogger("gearman_proto")


# -- client, worker, admin: the one implementation, on asyncio ----------------------


class Client(_impl.Client):
    backend = BACKEND


class Worker(_impl.Worker):
    backend = BACKEND


class AdminClient(_impl.AdminClient):
    backend = BACKEND


ClientJob = _impl.ClientJob
WorkerJob = _impl.WorkerJob
Handler = _impl.Handler


# -- server ---------------------------------------------------------------------------


"""Connections, protocol errors, refusals, replays, signals and stops (docs/server.md)."""


# accept() errors that say "out of resources": retried after a pause, not at once.
_EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
_ACCEPT_BATCH = 64
"""Connections accepted per readiness of a listening socket (then the others' turn)."""


def _listen(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for ``host`` (every address it resolves to), all on one port."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, str(address[0])) in seen:
                continue
            seen.add((family, str(address[0])))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address "
                                         f"{address!r}: {exc.strerror}") from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _peer_name(transport: asyncio.BaseTransport) -> tuple[bytes, str]:
    """The peer's IP (as ``workers`` shows it) and ``ip:port`` for the log."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple):
        return str(peer[0]).encode(), f"{peer[0]}:{peer[1]}"
    return b"-", "-"


class _Peer(asyncio.Protocol):
    """One accepted connection: bytes go to the hub, and what the hub decides is done."""

    __slots__ = ("cid", "data_received", "server", "transport")

    data_received: Reader
    """The whole of a read: the hub's compiled :class:`~gearman_proto.hub.Reader` for
    this connection (the hub is driven: Server.start), in place of a method, so
    that the loop calls into the core with no interpreted frame between."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.cid = 0
        self.transport: asyncio.Transport | None = None
        # Before the transport exists: uvloop takes data_received when it makes it.
        self.data_received = server.hub.reader()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance(transport, asyncio.Transport): uvloop's transports
        # implement the interface without subclassing it.
        transport = cast(asyncio.Transport, transport)
        server = self.server
        server.batch_started()  # the idle clock starts now; the flush logs and re-arms
        hub = server.hub
        if not hub.may_open():
            transport.abort()
            return
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and server.keepalive:
            apply_keepalive(sock, server.keepalive)
        address, name = _peer_name(transport)
        self.cid = hub.open(address, name, transport.write, self.data_received)
        server.peers[self.cid] = self
        # Past this many unsent bytes pause_writing() tells the hub, which
        # stops reading from this peer (and from the workers feeding it).
        transport.set_write_buffer_limits(high=server.output_limit)

    def eof_received(self) -> bool | None:
        server = self.server
        server.batch_started()
        server.hub.receive(self.cid, b"")
        if self.transport is None or self.transport.get_extra_info("sslcontext") is not None:
            return None  # TLS has no half-close: asyncio closes it now
        # Keep the transport: the hub closes it in the flush, after what is
        # due to the peer (the ERROR for a message its EOF cut short).
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self.transport is None:
            return
        server.peers.pop(self.cid, None)
        server.batch_started()
        server.hub.closed(self.cid)

    def pause_writing(self) -> None:
        server = self.server
        server.batch_started()
        for cid in server.hub.output_blocked(self.cid, True):
            peer = server.peers.get(cid)
            if peer is not None and peer.transport is not None \
                    and not peer.transport.is_closing():
                peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.server.batch_started()
        self.server.hub.output_blocked(self.cid, False)


class Server(ServerBase):
    """A Gearman job server on asyncio, driving the core's JobServer through a ServerHub.

    Every read in one turn of the event loop is processed, then one flush
    commits durable jobs once (group commit), writes each connection's output
    in one call and carries out what the hub decided (close, pause, resume,
    the next timer).  A connection with more than ``output_limit`` bytes unsent
    is not read from until they drain, nor one waiting for ``max_client_jobs``
    foreground jobs until some end, nor a worker whose job's client is over
    its limit.  ``idle_timeout`` (seconds, 0 = never) closes connections
    silent for that long without a reason (see :class:`~gearman_proto.hub.ServerHub`);
    ``keepalive`` is ``True`` or a :class:`KeepAlive` with timings;
    ``graceful_timeout`` bounds a graceful stop.  The admin ``shutdown``
    command (with ``allow_shutdown=True``) stops the server like :meth:`close`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 4730, **options: Any) -> None:
        super().__init__(host, port, **options)
        self.peers: dict[int, _Peer] = {}
        self._sockets: list[socket.socket] = []
        self._adopting: set[asyncio.Task[None]] = set()
        self._listening = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # The hub runs the turn (ServerHub.drive): the clock read once per batch,
        # the flush called at the end of it (once the loop runs, see start()).
        self.hub.drive(time.time, self._no_loop)
        self._timer: asyncio.TimerHandle | None = None
        self._closed = asyncio.Event()

    async def start(self) -> None:
        """Bind and start accepting; ``self.port`` is the real port (useful with port 0)."""
        self._loop = loop = asyncio.get_running_loop()
        # The turn's end is the hub's own (compiled) end_turn; only a Flush that
        # asks for more than writes comes back here, to _carry_out.
        self.hub.drive(time.time, functools.partial(loop.call_soon, self.hub.end_turn),
                       self._carry_out)
        self.hub.log_level = _server_log.getEffectiveLevel()
        if self.broker.durable and self.hub.writer is None:
            # Durable writes on the store's thread (storethread.py): it wakes the loop.
            from .storethread import ThreadWriter
            self.hub.writer = ThreadWriter(
                self.broker.write, lambda: loop.call_soon_threadsafe(self.batch_started))
        # Our own accept loop, not loop.create_server(): at the file-descriptor
        # limit asyncio's retries every pending connection at once, logging a
        # traceback for each (a spin); here the hub says how long to pause.
        self._sockets = _listen(self.host, self.port, self.backlog)
        for sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)
        self._listening = True
        self.port = self._sockets[0].getsockname()[1]
        _server_log.info("gearman-proto job server listening on %s:%d", self.host, self.port)
        if self.http_address is not None:
            from .http import start_asyncio
            self.http = await start_asyncio(self.hub, *self.http_address)
        self.batch_started()

    def _accept(self, sock: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _EXHAUSTED:
                    continue  # that peer gave up already (ECONNABORTED, ...)
                loop.remove_reader(sock.fileno())
                delay = self.hub.accept_failed(str(exc))
                self.batch_started()  # the flush logs it (once per episode)
                loop.call_later(delay, self._accept_again, sock)
                return
            conn.setblocking(False)
            task = loop.create_task(self._adopt(conn))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    def _accept_again(self, sock: socket.socket) -> None:
        if self._listening and self._loop is not None:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    async def _adopt(self, conn: socket.socket) -> None:
        """Give an accepted socket its transport (after the TLS handshake, with ``ssl``)."""
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(lambda: _Peer(self), conn, ssl=self.ssl)
        except (OSError, asyncio.TimeoutError) as exc:  # ssl.SSLError is an OSError
            _server_log.info("TLS handshake failed: %r", exc)
            conn.close()

    def _stop_listening(self) -> None:
        if not self._listening:
            return
        self._listening = False
        for sock in self._sockets:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()

    def batch_started(self) -> None:
        """Something happened: the hub gets the time now and a flush at the end of the turn."""
        self.hub.batch_started()

    @staticmethod
    def _no_loop() -> None:
        """Before start(): no loop to flush from (start() flushes)."""

    def _flush(self) -> None:
        # The usual turn's output is written by the hub itself; anything more
        # (pauses, closes, log lines, timers, a stop) comes back to do here.
        out = self.hub.flush_written()
        if out is not None:
            self._carry_out(out)

    def _carry_out(self, out: Flush) -> None:
        hub = self.hub
        peers = self.peers
        # Pause and resume first: a write below may pause again (pause_writing).
        for cid in out.pause:
            peer = peers.get(cid)
            if peer is not None and peer.transport is not None \
                    and not peer.transport.is_closing():
                peer.transport.pause_reading()
        for cid in out.resume:
            peer = peers.get(cid)
            if peer is not None and peer.transport is not None \
                    and not peer.transport.is_closing():
                peer.transport.resume_reading()
        for cid, data in out.writes.items():
            peer = peers.get(cid)
            if peer is not None and peer.transport is not None:
                peer.transport.write(data)
        for cid in out.shut:
            peer = peers.get(cid)
            if peer is not None and peer.transport is not None:
                if peer.transport.can_write_eof():
                    peer.transport.write_eof()
                else:
                    peer.transport.close()
        for cid in out.close:
            peer = peers.get(cid)
            if peer is not None and peer.transport is not None:
                peer.transport.close()
        for level, message, args in out.notes:
            _server_log.log(level, message, *args)
        if out.rearm:
            self._arm(out.deadline)
        if out.more:
            self.batch_started()  # after the other connections' reads of this turn
        if hub.stopping:
            self._stop_listening()
        if hub.stopped:
            self._closed.set()

    def _arm(self, deadline: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_later(max(0.0, deadline - time.time()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.hub.tick(time.time())
        self._flush()

    def close(self, graceful: bool = False, why: str = "stop requested") -> None:
        """Stop.  Graceful: hand out no more jobs, take no submissions, let the running
        jobs finish (bounded by ``graceful_timeout``), then stop; see
        :meth:`ServerHub.stop <gearman_proto.hub.ServerHub.stop>`."""
        if self._loop is None:
            self.hub.stop(graceful, why)
            self._closed.set()
            return
        self.batch_started()
        self.hub.stop(graceful, why)
        self._stop_listening()  # now, not at the flush

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` (or SIGTERM/SIGINT, SIGUSR1 for graceful, if installed)."""
        if not self._sockets:
            await self.start()
        await self._closed.wait()
        self._stop_listening()
        for peer in list(self.peers.values()):
            if peer.transport is not None:
                peer.transport.close()  # after what is buffered for it
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.http is not None:
            self.http.close()
        self.hub.finish()
        for level, message, args in self.hub.flush().notes:
            _server_log.log(level, message, *args)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop at once; SIGUSR1 stops gracefully (as gearmand)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.close, False, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.close, False, "SIGINT")
        loop.add_signal_handler(signal.SIGUSR1, self.close, True, "SIGUSR1")

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
