"""The job server at the level of bytes: many connections, one :class:`JobServer`.

A server adapter owns sockets; everything else is here.  It tells the hub that
a connection opened, hands it the bytes it read, tells it when a peer went
away and what time it is, and writes out what :meth:`ServerHub.flush` returns.
Decoding, role checks, protocol-error answers, the broker's decisions and the
group commit of durable jobs all happen in this module, with no I/O, so the
asyncio, trio and anyio servers share one implementation of the rules.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from .broker import CommitTicket, JobServer, Output
from .errors import LocalProtocolError, RemoteProtocolError
from .events import ConnectionClosed
from .packets import DEFAULT_MAX_LINE_LENGTH, DEFAULT_MAX_PACKET_SIZE
from .server import ServerConnection
from .stats import ServerStats
from .store import StoreError

__all__ = ["ServerHub", "Flush", "StoreWriter", "DEFAULT_MAX_CLIENT_JOBS"]

DEFAULT_MAX_CLIENT_JOBS = 10_000
"""Foreground jobs one connection may wait for before the server stops reading from it."""


@dataclass(slots=True)
class Flush:
    """What to do after a batch: bytes to write per connection, and connections to close.

    Close a connection only after writing its bytes: a protocol error's ERROR
    answer is in them.
    """

    writes: dict[int, bytes] = field(default_factory=dict)
    close: list[int] = field(default_factory=list)
    notices: list[tuple[int, str]] = field(default_factory=list)
    """Warnings for the log, per connection (input accepted leniently)."""


class StoreWriter(Protocol):
    """Writes the store's batches off the event loop: one :class:`CommitTicket` at a time.

    An adapter's thread (``gearman_proto.adapters.storethread``) implements it
    and wakes its loop when a write is done, so that the loop calls
    :meth:`ServerHub.flush`, which collects the result.
    """

    @property
    def busy(self) -> bool:
        """True from :meth:`submit` until :meth:`result` has handed the outcome back."""
        ...

    def submit(self, ticket: CommitTicket) -> None:
        """Start writing ``ticket`` (only when not :attr:`busy`)."""
        ...

    def result(self) -> tuple[CommitTicket, StoreError | None] | None:
        """The ticket written and its error, once done; else ``None``."""
        ...

    def close(self) -> tuple[CommitTicket, StoreError | None] | None:
        """Wait for the write in flight, stop, and hand back its outcome (if any)."""
        ...


class ServerHub:
    """Bytes in and bytes out for every connection of one job server.

    Connection ids are small integers chosen by the hub; the admin ``workers``
    command shows them where gearmand shows a file descriptor.

    ``idle_timeout`` (seconds, 0 = never) closes a connection that has sent
    nothing for that long, unless the broker says it is busy: it runs a job,
    waits for a foreground result, or sleeps as a worker
    (:meth:`JobServer.is_busy`); a busy one is looked at again a full timeout
    later.  The time is the one given to :meth:`advance`: call it before
    :meth:`open` too, and when :meth:`next_deadline` comes.  A peer that
    vanished while busy is what TCP keepalive (an adapter option) is for.

    ``max_client_jobs`` (0 = no limit) is where :meth:`may_read` tells the
    adapter to stop reading from a connection: see there.

    A durable store's write blocks for a round trip and an fsync (milliseconds).
    Without a :attr:`writer` :meth:`flush` writes in line; with one it hands
    the batch to the writer and carries on, and the batch's JOB_CREATED go out
    with the first flush after the write is done (the writer wakes the
    adapter for it).  Input meanwhile forms the next batch: group commit.
    """

    def __init__(
        self,
        broker: JobServer | None = None,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        idle_timeout: float = 0.0,
        max_client_jobs: int = DEFAULT_MAX_CLIENT_JOBS,
    ) -> None:
        if idle_timeout < 0:
            raise ValueError("idle_timeout must be >= 0 (0 means never)")
        if max_client_jobs < 0:
            raise ValueError("max_client_jobs must be >= 0 (0 means no limit)")
        self.max_client_jobs = max_client_jobs
        self.broker = broker if broker is not None else JobServer()
        self.max_packet_size = max_packet_size
        self.max_line_length = max_line_length
        self._conns: dict[int, ServerConnection] = {}
        self._out: dict[int, list[bytes]] = {}
        self._close: list[int] = []
        self._notices: list[tuple[int, str]] = []
        self._next_id = 1
        self.protocol_errors = 0
        """How many connections were closed for breaking the protocol."""
        self.internal_errors = 0
        """How many connections were closed because an answer to them could not be
        framed (a bug of the core, contained to that connection)."""
        self.idle_timeout = idle_timeout
        self.idle_closed = 0
        """How many connections the idle timeout closed."""
        self.stats: ServerStats | None = None
        """Set when metrics are served: it counts bytes and times store commits (stats.py);
        without, the hub pays one None check per read and per flush."""
        self._now = self.broker.now
        # With an idle timeout: when each connection was last heard from,
        # least recently heard first (move_to_end on every read keeps the order).
        self._seen: OrderedDict[int, float] = OrderedDict()
        self.writer: StoreWriter | None = None
        self._write_started: float | None = None  # when the batch in the writer went in
        """Where the store's batches are written, if not in line (set by the adapter)."""

    def __len__(self) -> int:
        return len(self._conns)

    def open(self, address: bytes = b"-") -> int:
        """Register a new connection from ``address`` and return its id."""
        cid = self._next_id
        self._next_id += 1
        self._conns[cid] = ServerConnection(max_packet_size=self.max_packet_size,
                                            max_line_length=self.max_line_length)
        self.broker.connect(cid, address)
        if self.idle_timeout:
            self._seen[cid] = self._now
        return cid

    def receive(self, cid: int, data: bytes) -> None:
        """Process bytes read from connection ``cid`` (``b""`` when the peer closed)."""
        conn = self._conns.get(cid)
        if conn is None:
            return
        broker = self.broker
        stats = self.stats
        if stats is not None:
            stats.bytes_in += len(data)
        if self.idle_timeout:
            self._seen[cid] = self._now
            self._seen.move_to_end(cid)
        conn.receive_data(data)
        notices = conn.notices
        try:
            for event in conn.events():
                if type(event) is ConnectionClosed:
                    self._drop(cid)
                    return
                self._route(broker.receive(cid, event))
                if self.internal_errors and cid not in self._conns:
                    return  # _route closed it
        except RemoteProtocolError as exc:
            # Answer the offender (gearmand's ERROR code, or an ERR line for a
            # text command), close it, and requeue whatever it held; every other
            # connection carries on.
            self.protocol_errors += 1
            self._out.setdefault(cid, []).append(conn.error_reply(exc))
            self._close.append(cid)
            self._drop(cid)
        finally:
            if notices:  # rare: input accepted leniently, for the log
                self._notices.extend((cid, text) for text in notices)
                notices.clear()

    def may_read(self, cid: int) -> bool:
        """Whether to read more from ``cid``: False while it waits for ``max_client_jobs``
        foreground jobs or more.

        Each submission costs the server a job and, later, its result, while
        its JOB_CREATED is only a few bytes -- which the peer's kernel takes
        by the megabyte even when the peer never reads.  So output backpressure
        alone lets one connection queue hundreds of thousands of jobs; this
        caps what it can have in flight.  Not reading is all: nothing is
        refused, and reading resumes as its jobs end.
        """
        limit = self.max_client_jobs
        return not limit or self.broker.waiting_on(cid) < limit

    def closed(self, cid: int) -> None:
        """The transport of ``cid`` is gone (reset, timeout, or closed by us)."""
        if cid in self._conns:
            self._drop(cid)

    def advance(self, now: float) -> None:
        """Let time-driven work happen (CAN_DO_TIMEOUT expiry, epoch jobs falling due,
        idle connections closed)."""
        self._now = now
        outputs = self.broker.advance(now)
        if outputs:
            self._route(outputs)
        if self._seen:
            self._close_idle(now)

    def next_deadline(self) -> float | None:
        """When :meth:`advance` must next be called, or ``None``."""
        deadline = self.broker.next_deadline()
        if self._seen:
            idle = next(iter(self._seen.values())) + self.idle_timeout
            if deadline is None or idle < deadline:
                deadline = idle
        return deadline

    def _close_idle(self, now: float) -> None:
        seen = self._seen
        limit = now - self.idle_timeout
        broker = self.broker
        while seen:
            cid, last = next(iter(seen.items()))
            if last > limit:
                break
            if broker.is_busy(cid):
                # Silent for a reason: look again a full timeout from now.
                seen[cid] = now
                seen.move_to_end(cid)
                continue
            self.idle_closed += 1
            self._close.append(cid)
            self._drop(cid)

    def flush(self) -> Flush:
        """Commit durable jobs once for the whole batch, then hand out what to write.

        A store that fails costs only its batch's submissions (ERROR
        QUEUE_ERROR, see :meth:`JobServer.end_commit`); nothing here raises.
        """
        writer = self.writer
        stats = self.stats
        if writer is not None:
            held = self._write_aside(writer)
        elif stats is not None and stats.time_commits:
            held = stats.timed_commit(self.broker)
        else:
            held = self.broker.commit()
        if held:
            self._route(held)
        pending = self._out
        self._out = {}
        # One packet is the usual output of a turn: written as it is, not joined.
        writes = {cid: chunks[0] if len(chunks) == 1 else b"".join(chunks)
                  for cid, chunks in pending.items() if chunks}
        if stats is not None:
            sent = 0
            for data in writes.values():
                sent += len(data)
            stats.bytes_out += sent
        out = Flush(writes, self._close, self._notices)
        self._close = []
        if self._notices:
            self._notices = []
        return out

    def _write_aside(self, writer: StoreWriter) -> list[Output]:
        """Collect the writer's finished batch, and hand it the next one."""
        broker = self.broker
        held: list[Output] = []
        stats = self.stats
        done = writer.result()
        if done is not None:
            if stats is not None and self._write_started is not None:
                # As the server sees it: from handing the batch over to collecting it.
                stats.observe_commit(stats.clock() - self._write_started)
                self._write_started = None
            held = broker.end_commit(*done)
        if not writer.busy:
            ticket = broker.begin_commit()
            if ticket is not None:
                if ticket.batch:
                    writer.submit(ticket)
                    if stats is not None:
                        self._write_started = stats.clock()
                else:  # only output held behind an earlier batch: nothing to write
                    held.extend(broker.end_commit(ticket))
        return held

    def finish(self) -> None:
        """At shutdown: wait for the write in flight, then write what is left in line."""
        writer, self.writer = self.writer, None
        if writer is not None:
            done = writer.close()
            if done is not None:
                self.broker.end_commit(*done)
        self.broker.commit()

    def _drop(self, cid: int) -> None:
        del self._conns[cid]
        self._seen.pop(cid, None)
        self._route(self.broker.disconnect(cid))

    def _route(self, outputs: list[Output]) -> None:
        conns = self._conns
        out = self._out
        for cid, event in outputs:
            conn = conns.get(cid)
            if conn is None:
                continue
            buf = out.get(cid)
            if buf is None:
                buf = out[cid] = []
            try:
                buf.append(conn.send(event))
            except LocalProtocolError:
                # The broker answered with something this connection cannot
                # frame: a bug, but one peer's.  Close that peer, keep serving.
                self.internal_errors += 1
                self._close.append(cid)
                self._drop(cid)
