"""The anyio adapter: Client, Worker, AdminClient and a job server, on asyncio or trio.

The API is that of :mod:`gearman_proto.adapters.asyncio`, built on anyio's
streams, task groups and cancel scopes, so it runs unchanged on either anyio
backend (:mod:`gearman_proto.adapters.trio` is this module, for trio users).
Every decision comes from the core: :class:`~gearman_proto.session.ClientSession`
and :class:`~gearman_proto.session.WorkerSession` for the client and worker,
:class:`~gearman_proto.hub.ServerHub` for the server.  This module reads,
feeds bytes in, wakes waiters, and writes what the core returns.

Structured concurrency shapes two choices.  A :class:`Client` starts no
background task, since none may outlive its caller's task group: whichever
caller is waiting for something reads the connection for everybody and wakes
the others.  :meth:`Worker.work` and :meth:`Server.serve_forever` own task
groups, and each of their connections has a writer task fed through a buffer,
so handing out the core's bytes never waits on a socket and one slow peer
never holds up another.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import (
    ByteStream,
    SocketAttribute,
    SocketListener,
    SocketStream,
    TaskGroup,
    TaskStatus,
)
from anyio.streams.tls import TLSStream

from gearman_proto.errors import RemoteProtocolError

from . import _impl
from ._anyio_backend import BACKEND
from ._common import KeepAlive, apply_keepalive
from ._server import ServerBase
from ._server import server_log as _server_log

__all__ = ["Client", "ClientJob", "Worker", "WorkerJob", "AdminClient", "Server", "serve",
           "KeepAlive"]

log = logging.getLogger("gearman_proto")
_READ = 256 * 1024
_BROKEN = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)
"""What a dead or closed connection raises (EOF is ``b""``, see :func:`_recv`)."""
_LINGER = 5.0
"""How long a stopping worker or server may spend writing out the bytes already due."""
_HANDSHAKE_TIMEOUT = 30.0


async def _recv(stream: ByteStream) -> bytes:
    """The next bytes from ``stream``, or ``b""`` once the peer closed."""
    try:
        return await stream.receive(_READ)
    except anyio.EndOfStream:
        return b""


def _why(exc: object) -> str:
    """A reason to log, also for anyio's message-less errors (whose cause says more)."""
    return str(exc) or repr(getattr(exc, "__cause__", None) or exc)


class _Link:
    """A connection whose output is written by a task of its own.

    :meth:`write` never waits, so the core's bytes can be handed out from
    anywhere (a flush for every connection at once, a worker's report).
    :meth:`run` reads until the peer closes or :meth:`close` was called and
    the output is written.
    """

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.pending = 0
        """Bytes written here and not yet sent."""
        self.error: BaseException | None = None
        self._chunks: list[bytes] = []
        self._closing = False
        self._more = anyio.Event()
        self._sent = anyio.Event()

    def write(self, data: bytes) -> None:
        """Queue ``data`` to be sent (dropped once the link is closing)."""
        if data and not self._closing:
            self._chunks.append(data)
            self.pending += len(data)
            self._more.set()

    def close(self) -> None:
        """Send what is queued, then close."""
        self._closing = True
        self._more.set()

    async def flushed(self, limit: int = 0) -> None:
        """Wait until no more than ``limit`` bytes are left to send."""
        while self.pending > limit:
            await self._sent.wait()

    async def run(self, received: Callable[[bytes], Awaitable[None]],
                  limit: int | None = None) -> None:
        """Pass each read to ``received`` (``b""`` at the end), not reading while more
        than ``limit`` bytes wait to be sent; the stream is closed on return."""
        async with self.stream, anyio.create_task_group() as tg:
            tg.start_soon(self._write, tg.cancel_scope)
            try:
                while not self._closing:
                    if limit is not None and self.pending > limit:
                        await self.flushed(limit)
                    data = await _recv(self.stream)
                    await received(data)
                    if not data:
                        return  # the writer ends once the output is written
            except (*_BROKEN, RemoteProtocolError) as exc:
                self.error = exc
                tg.cancel_scope.cancel()

    async def _write(self, scope: anyio.CancelScope) -> None:
        try:
            while True:
                if self._chunks:
                    data = b"".join(self._chunks)
                    self._chunks.clear()
                    await self.stream.send(data)
                    self.pending -= len(data)
                    self._sent.set()
                    self._sent = anyio.Event()
                elif self._closing:
                    break
                else:
                    await self._more.wait()
                    self._more = anyio.Event()
        except _BROKEN as exc:
            self.error = exc
        finally:
            # Nothing more will be sent: release whoever waits for it, and the reader.
            self._closing = True
            self._chunks.clear()
            self.pending = 0
            self._sent.set()
            scope.cancel()


# -- client, worker, admin: the one implementation, on anyio ------------------------


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


class _Peer:
    """One accepted connection: its reader is the connection's task; its writer task is
    started by the first output and ends with the connection.

    :meth:`write` never waits, so the hub's bytes are handed out from the
    flush for every connection at once.  Unsent output past the server's
    ``output_limit`` is reported to the hub, which says when to stop and start
    reading (:meth:`pause`, :meth:`resume`).
    """

    __slots__ = ("_chunks", "_more", "_readable", "_sent", "blocked", "cid", "closing",
                 "pending", "reading", "scope", "server", "shutting", "stream", "writing")

    def __init__(self, server: Server, stream: ByteStream, cid: int) -> None:
        self.server = server
        self.stream = stream
        self.cid = cid
        self.pending = 0
        """Bytes written here and not yet sent."""
        self.blocked = False
        self.reading = True
        self.closing = False
        self.shutting = False
        self.writing = False
        self.scope = anyio.CancelScope()
        self._chunks: list[bytes] = []
        self._more = anyio.Event()
        self._readable = anyio.Event()
        self._sent = anyio.Event()

    def _wake_writer(self) -> None:
        if self.writing:
            self._more.set()
        else:
            self.writing = True
            assert self.server._task_group_running is not None
            self.server._task_group_running.start_soon(self._write)

    def write(self, data: bytes) -> None:
        """Queue ``data`` to be sent (dropped once the connection is closing)."""
        if self.closing or not data:
            return
        self._chunks.append(data)
        self.pending += len(data)
        server = self.server
        if not self.blocked and self.pending > server.output_limit:
            self.blocked = True
            for cid in server.hub.output_blocked(self.cid, True):
                peer = server.peers.get(cid)
                if peer is not None:
                    peer.pause()
        self._wake_writer()

    def close(self) -> None:
        """Send what is queued, then close."""
        self.closing = True
        if self.writing:
            self._more.set()
        else:
            self.scope.cancel()

    def shut(self) -> None:
        """Send what is queued, then shut the write side down and keep reading."""
        self.shutting = True
        self._wake_writer()

    def pause(self) -> None:
        self.reading = False
        self._readable = anyio.Event()

    def resume(self) -> None:
        self.reading = True
        self._readable.set()

    async def drained(self) -> None:
        """Wait until nothing is left to send."""
        while self.pending and self.writing:
            await self._sent.wait()

    async def read(self) -> None:
        """Hand every read to the hub until the peer or the hub ends it."""
        server, hub, cid, stream = self.server, self.server.hub, self.cid, self.stream
        with self.scope:
            try:
                while True:
                    if not self.reading:
                        await self._readable.wait()
                    data = await _recv(stream)
                    server._batch()
                    hub.receive(cid, data)
                    if server._dirty.is_set():
                        # No second read before this one's output is written
                        # here: that is what the output limit looks at.
                        await server._flushed.wait()
                    if not data:
                        return  # what is due was handed over above; the hub closes it
            except _BROKEN:
                self.closing = True
                self._chunks.clear()

    async def _write(self) -> None:
        stream = self.stream
        limit = self.server.output_limit
        try:
            while True:
                if self._chunks:
                    data = b"".join(self._chunks)
                    self._chunks.clear()
                    await stream.send(data)
                    self.pending -= len(data)
                    self._sent.set()
                    self._sent = anyio.Event()
                    if self.blocked and self.pending <= limit // 4:
                        self.blocked = False
                        self.server.hub.output_blocked(self.cid, False)
                        self.server._batch()
                    continue
                if self.shutting:
                    self.shutting = False
                    try:
                        await stream.send_eof()
                    except NotImplementedError:  # TLS has no half-close
                        self.closing = True
                if self.closing:
                    break
                self._more = anyio.Event()
                await self._more.wait()
        except _BROKEN:
            self.closing = True
            self._chunks.clear()
        finally:
            self.pending = 0
            self.writing = False
            self._sent.set()
            if self.closing:
                self.scope.cancel()

    def end(self) -> None:
        """The connection is over: the writer, if any, stops."""
        self.closing = True
        self._chunks.clear()
        self._more.set()


class Server(ServerBase):
    """A Gearman job server on anyio, driving the core's JobServer through one ServerHub.

    Each read goes to the hub at once; a flusher task then commits durable
    jobs once for every read that came in meanwhile (group commit), hands each
    connection its bytes and carries out what the hub decided (close, pause,
    resume, the next timer).  A connection with more than ``output_limit``
    bytes unsent is not read from until they drain, nor one waiting for
    ``max_client_jobs`` foreground jobs until some end, nor a worker whose
    job's client is over its limit.  ``idle_timeout`` (seconds, 0 = never)
    closes connections silent for that long without a reason (see
    :class:`~gearman_proto.hub.ServerHub`); ``keepalive`` is ``True`` or a
    :class:`KeepAlive` with timings; ``graceful_timeout`` bounds a graceful
    stop.  The admin ``shutdown`` command (with ``allow_shutdown=True``) stops
    the server like :meth:`close`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 4730, **options: Any) -> None:
        super().__init__(host, port, **options)
        self.peers: dict[int, _Peer] = {}
        self._listeners: list[SocketListener] = []
        self._accepting: anyio.CancelScope | None = None
        self._dirty = anyio.Event()  # set: a flush is due
        self._flushed = anyio.Event()  # set by the flush of the batch in progress
        self._rearm = anyio.Event()  # set: the timer's deadline moved
        self._deadline: float | None = None
        self._done = anyio.Event()
        self._task_group: TaskGroup | None = None
        self._task_group_running: TaskGroup | None = None

    async def start(self) -> None:
        """Bind; ``self.port`` is then the real port (useful with port 0)."""
        self.hub.log_level = _server_log.getEffectiveLevel()
        if self.broker.durable and self.hub.writer is None:
            # Durable writes on the store's thread (storethread.py): it wakes the flusher.
            from .storethread import ThreadWriter
            token = anyio.lowlevel.current_token()
            self.hub.writer = ThreadWriter(
                self.broker.write,
                lambda: anyio.from_thread.run_sync(self._batch, token=token))
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port,
                                                   backlog=self.backlog)
        self._listeners = list(listener.listeners)  # type: ignore[arg-type]
        self._accepting = anyio.CancelScope()
        self.port = listener.extra(SocketAttribute.local_port)
        _server_log.info("gearman-proto job server listening on %s:%d", self.host, self.port)
        if self.http_address is not None:
            from .http import AnyioHttp
            self.http = AnyioHttp(self.hub, *self.http_address)
            await self.http.listen()

    def close(self, graceful: bool = False, why: str = "stop requested") -> None:
        """Stop.  Graceful: hand out no more jobs, take no submissions, let the running
        jobs finish (bounded by ``graceful_timeout``), then stop; see
        :meth:`ServerHub.stop <gearman_proto.hub.ServerHub.stop>`."""
        self._batch()
        self.hub.stop(graceful, why)
        self._apply_stop()  # stop accepting now, not at the flush
        if self._task_group_running is None:  # not serving: nothing to drain
            self._done.set()

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` (or the admin ``shutdown``, if allowed)."""
        if self._accepting is None:
            await self.start()
        async with anyio.create_task_group() as tg:
            self._task_group_running = tg
            tg.start_soon(self._flusher)
            tg.start_soon(self._timer)
            tg.start_soon(self._accept_all, tg)
            if self.http is not None:
                tg.start_soon(self.http.serve)
            self._batch()
            await self._done.wait()
            # What is due still goes out (the OK to a shutdown command, say).
            with anyio.move_on_after(_LINGER):
                for peer in list(self.peers.values()):
                    peer.close()
                for peer in list(self.peers.values()):
                    await peer.drained()
            tg.cancel_scope.cancel()
        self._task_group_running = None
        self.hub.finish()
        for level, message, args in self.hub.flush().notes:
            _server_log.log(level, message, *args)

    async def __aenter__(self) -> Server:
        await self.start()
        self._task_group = anyio.create_task_group()
        tg = await self._task_group.__aenter__()
        tg.start_soon(self.serve_forever)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        if self._task_group is not None:
            # Not handed the body's exception: it propagates as it is, not in a group.
            tg, self._task_group = self._task_group, None
            await tg.__aexit__(None, None, None)

    async def _accept_all(self, tg: TaskGroup) -> None:
        assert self._accepting is not None
        with self._accepting:
            async with anyio.create_task_group() as accepting:
                for listener in self._listeners:
                    accepting.start_soon(self._accept, listener, tg)

    async def _accept(self, listener: SocketListener, tg: TaskGroup) -> None:
        async with listener:  # closed once we stop accepting
            while True:
                try:
                    stream = await listener.accept()
                except (OSError, anyio.BrokenResourceError) as exc:
                    # Out of file descriptors, say (anyio raises BrokenResourceError
                    # from the OSError on trio): wait as the hub says, then again.
                    delay = self.hub.accept_failed(_why(exc))
                    self._batch()
                    await anyio.sleep(delay)
                    continue
                tg.start_soon(self._handle, stream)

    async def _handle(self, sock: SocketStream) -> None:
        """Serve one accepted connection until either side closes it."""
        hub = self.hub
        self._batch()  # the idle clock starts now; the flush logs and re-arms
        if not hub.may_open():
            await anyio.aclose_forcefully(sock)
            return
        if self.keepalive:
            apply_keepalive(sock.extra(SocketAttribute.raw_socket), self.keepalive)
        peer_address = sock.extra(SocketAttribute.remote_address, None)
        if isinstance(peer_address, tuple):
            address, name = str(peer_address[0]).encode(), f"{peer_address[0]}:{peer_address[1]}"
        else:
            address, name = b"-", "-"
        stream: ByteStream = sock
        if self.ssl is not None:
            try:
                with anyio.fail_after(_HANDSHAKE_TIMEOUT):
                    stream = await TLSStream.wrap(sock, server_side=True, ssl_context=self.ssl,
                                                  standard_compatible=False)
            except (*_BROKEN, anyio.EndOfStream, TimeoutError) as exc:
                # EndOfStream: the peer closed before the handshake (a plain TCP
                # probe, a port scanner); it used to escape and stop the server.
                _server_log.info("TLS handshake with %s failed: %r", name, exc)
                await anyio.aclose_forcefully(sock)
                return
        cid = hub.open(address, name)
        peer = self.peers[cid] = _Peer(self, stream, cid)
        try:
            await peer.read()
            with anyio.move_on_after(_LINGER):
                await peer.drained()
        except Exception:
            # A bug met on this connection's input costs this connection, not
            # the server (the asyncio server behaves so too).
            _server_log.exception("closing connection %d after an internal error", cid)
        finally:
            del self.peers[cid]
            peer.end()
            await anyio.aclose_forcefully(stream)
            self._batch()
            hub.closed(cid)

    def _batch(self) -> None:
        """Note that a flush is due; the clock is read once per batch."""
        if not self._dirty.is_set():
            self.hub.advance(time.time())
            self._dirty.set()

    async def _flusher(self) -> None:
        while True:
            await self._dirty.wait()
            if self._flush():
                await anyio.lowlevel.checkpoint()  # the other connections' reads first

    def _flush(self) -> bool:
        """Carry out one flush of the hub; True if it has more to do at once."""
        self._dirty = anyio.Event()
        flushed, self._flushed = self._flushed, anyio.Event()
        flushed.set()
        hub = self.hub
        out = hub.flush()
        peers = self.peers
        # Pause and resume first: a write below may pause again (output_blocked).
        for cid in out.pause:
            peer = peers.get(cid)
            if peer is not None:
                peer.pause()
        for cid in out.resume:
            peer = peers.get(cid)
            if peer is not None:
                peer.resume()
        for cid, data in out.writes.items():
            peer = peers.get(cid)
            if peer is not None:
                peer.write(data)
        for cid in out.shut:
            peer = peers.get(cid)
            if peer is not None:
                peer.shut()
        for cid in out.close:  # after its bytes: a protocol error's ERROR is in them
            peer = peers.get(cid)
            if peer is not None:
                peer.close()
        for level, message, args in out.notes:
            _server_log.log(level, message, *args)
        if out.rearm:
            self._deadline = out.deadline
            self._rearm.set()
        self._apply_stop()
        if out.more:
            self._dirty.set()
        return out.more

    def _apply_stop(self) -> None:
        if self.hub.stopping and self._accepting is not None:
            self._accepting.cancel()
        if self.hub.stopped:
            self._done.set()

    async def _timer(self) -> None:
        """Tick the hub at the deadline the last flush gave; re-armed when it moves."""
        while True:
            self._rearm = anyio.Event()
            deadline = self._deadline
            with anyio.move_on_after(math.inf if deadline is None else deadline - time.time()):
                await self._rearm.wait()
                continue
            self._deadline = None  # the flush after the tick arms the next one
            self.hub.tick(time.time())
            self._dirty.set()


async def _on_signals(server: Server, *,
                      task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    stops = [signal.SIGTERM, signal.SIGINT]
    graceful = getattr(signal, "SIGUSR1", None)
    with anyio.open_signal_receiver(*stops, *([graceful] if graceful else [])) as received:
        task_status.started()
        async for signum in received:
            server.close(graceful=signum == graceful, why=signal.Signals(signum).name)


async def serve(host: str = "127.0.0.1", port: int = 4730, *, signals: bool = True,
                ready: Callable[[Server], None] | None = None, **options: Any) -> None:
    """Run a job server until stopped (with ``signals``: SIGTERM/SIGINT; SIGUSR1 graceful)."""
    server = Server(host, port, **options)
    await server.start()
    async with anyio.create_task_group() as tg:
        if signals:
            await tg.start(_on_signals, server)
        if ready is not None:
            ready(server)
        await server.serve_forever()
        tg.cancel_scope.cancel()
