"""The job server at the level of bytes: many connections, one :class:`JobServer`.

A server adapter owns sockets; everything else is here.  It tells the hub that
a connection opened, hands it the bytes it read, tells it when a peer went
away, when a connection's output backs up and what time it is, and carries out
what :meth:`ServerHub.flush` returns: bytes to write, connections to close or
half-close, connections to stop and start reading from, when to call back, and
lines to log.  Decoding, role checks, protocol-error answers, the broker's
decisions, the group commit of durable jobs, connection refusal, backpressure,
fairness between connections and the graceful stop all happen in this module,
with no I/O, so the asyncio, trio and anyio servers share one implementation of
the rules.

The loop an adapter runs::

    if not hub.may_open(): refuse; else cid = hub.open(address, peer)
    hub.advance(now)                    # once per batch of reads
    hub.receive(cid, data)              # each read (b"" at EOF)
    hub.output_blocked(cid, True/False) # its unsent output passed / fell under the limit
    out = hub.flush()                   # once per batch: pause out.pause, resume
                                        # out.resume; write out.writes, then
                                        # out.shut (half-close), out.close; log out.notes;
                                        # with out.rearm, call hub.tick(now) at
                                        # out.deadline; with out.more, flush again soon
    hub.closed(cid)                     # the transport is gone
    hub.stop(graceful)                  # a signal; then stop accepting once
                                        # hub.stopping, end once hub.stopped

An adapter whose loop takes plain callables may instead let the hub run the
usual turn itself, so that the per-read and per-turn work stays in the
(compiled) core: :meth:`ServerHub.drive` gives it the clock and a way to
schedule one call at the end of the turn, :meth:`ServerHub.open` each
connection's ``write``; then :meth:`ServerHub.read` is the whole of a read (or
the connection's :class:`Reader`, a compiled ``data_received``),
:meth:`ServerHub.batch_started` starts a batch for anything else, and the
scheduled call is :meth:`ServerHub.flush_written`, which writes the usual
output itself and hands back a :class:`Flush` only when there is more to do
(or :meth:`ServerHub.end_turn`, which hands that to the adapter's callback).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from ._connection import _OPEN, _native_nul
from .broker import (
    ASSIGN_ALL,
    ASSIGN_PLAIN,
    ASSIGN_UNIQ,
    CommitTicket,
    JobServer,
    Output,
    _Conn,
)
from .codec import _CLASS_OF, assign_packet, packet_of_one
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    _SUBMIT_FLAGS,
    ConnectionClosed,
    Error,
    Event,
    GrabJob,
    GrabJobAll,
    GrabJobUniq,
    NoJob,
    PreSleep,
    Priority,
    SubmitJob,
    SubmitJobEpoch,
    SubmitReduceJob,
    WorkData,
    WorkStatus,
    WorkWarning,
)
from .lifecycle import RUNNING
from .packets import (
    COMPILED,
    DEFAULT_MAX_LINE_LENGTH,
    DEFAULT_MAX_PACKET_SIZE,
    HEADER_SIZE,
    RECEIVABLE,
    RES,
    PacketType,
    Role,
    encode_packet,
    frame_plain,
)
from .server import _RECEIVE, ServerConnection
from .stats import ServerStats
from .store import StoreError

if TYPE_CHECKING:
    # mypyc's native 64-bit int (see _connection.py); only annotations name it.
    from mypy_extensions import i64

__all__ = ["ServerHub", "Flush", "Note", "Reader", "StoreWriter", "DEFAULT_MAX_CLIENT_JOBS",
           "DEFAULT_GRACEFUL_TIMEOUT",
           "TURN_EVENTS", "TURN_BYTES", "LINGER_BYTES", "LINGER_SECONDS", "ACCEPT_RETRY",
           "DEBUG", "INFO", "WARNING"]

DEFAULT_MAX_CLIENT_JOBS = 10_000
"""Foreground jobs one connection may wait for before the server stops reading from it."""
DEFAULT_GRACEFUL_TIMEOUT = 30.0
"""Seconds a graceful stop waits for running jobs before stopping anyway."""
TURN_EVENTS: Final = 4096
"""Messages of one connection handled in one turn; the rest wait for the next."""
TURN_BYTES: Final = 256 * 1024
"""Output one connection's messages may produce in one turn before the rest wait."""
LINGER_BYTES = 64 * 1024 * 1024
"""After a protocol error: bytes still read (and dropped) so the peer gets the ERROR."""
LINGER_SECONDS = 5.0
"""After a protocol error: how long the connection may linger, half-closed."""
ACCEPT_RETRY = 0.1
"""Seconds an adapter waits before accepting again after accept() failed (EMFILE)."""

# The stdlib logging levels, by value (the core does not import logging: it
# brings threading).  Notes below ServerHub.log_level are not made at all.
DEBUG: Final = 10
INFO: Final = 20
WARNING: Final = 30

Note = tuple[int, str, tuple[object, ...]]
"""``(level, message, args)``: a line for ``logging.Logger.log(level, message, *args)``."""

# What a draining server no longer does: hand out work, or take it in.
_GRABS = (GrabJob, GrabJobUniq, GrabJobAll)
_SUBMISSIONS = (SubmitJob, SubmitJobEpoch, SubmitReduceJob)
# What a worker streams to its job's clients before the result: unbounded in number.
_STREAMS: Final = (WorkData, WorkWarning, WorkStatus)
_NO_JOB: Final = NoJob()
# The fast path (ServerHub._fast): what each packet type is to it, 0 for the
# packets it leaves to the general path.  A grab's kind is the form of the
# assignment it asks for.
# Final, as every constant read per packet: compiled code reads them as constants.
_FAST_SUBMIT: Final = 4
_FAST_WORK_COMPLETE: Final = 5
_FAST_PRE_SLEEP: Final = 6
_FAST_GRAB: Final = ASSIGN_PLAIN
_FAST_GRAB_ALL: Final = ASSIGN_ALL
_FAST_SUBMITS: Final[dict[int, tuple[Priority, bool]]] = {
    int(t): flags for t, flags in _SUBMIT_FLAGS.items()}
_FAST_TYPES: dict[int, int] = {
    PacketType.GRAB_JOB: ASSIGN_PLAIN,
    PacketType.GRAB_JOB_UNIQ: ASSIGN_UNIQ,
    PacketType.GRAB_JOB_ALL: ASSIGN_ALL,
    PacketType.WORK_COMPLETE: _FAST_WORK_COMPLETE,
    PacketType.PRE_SLEEP: _FAST_PRE_SLEEP,
    **{t: _FAST_SUBMIT for t in _FAST_SUBMITS},
}
# Only what a server receives, and nothing the connection has a rule for: the
# fast path skips the connection's event, and so its rules.
assert all(t in RECEIVABLE[Role.SERVER] and _CLASS_OF[t] not in _RECEIVE for t in _FAST_TYPES)
# By type byte (packets.frame_plain reads types below 256).
_FAST_KIND: Final[tuple[int, ...]] = tuple(_FAST_TYPES.get(t, 0) for t in range(256))
# What ServerHub._fast says: handled, left for the general path, nothing to read.
_FAST_DONE: Final = 1
_FAST_NO: Final = 0
_FAST_EMPTY: Final = -1
_JOB_CREATED: Final = int(PacketType.JOB_CREATED)
_RES: Final = RES
_NOOP_PACKET: Final = encode_packet(RES, PacketType.NOOP, ())
_NO_JOB_PACKET: Final = encode_packet(RES, PacketType.NO_JOB, ())
_STOPPING_CODE = b"SHUTTING_DOWN"
_STOPPING_TEXT = b"Server is shutting down"


@dataclass(slots=True, init=False)
class Flush:
    """What to do after a batch.

    Stop reading from ``pause`` and read again from ``resume`` first (a write
    may then pause a connection again, see :meth:`ServerHub.output_blocked`).
    Write ``writes`` (bytes per connection).  Then half-close each of
    ``shut`` (shut the write side down after its bytes and keep reading: a
    peer told of a protocol error reads the ERROR instead of a reset; the hub
    closes it later) and close each of ``close``.  Log ``notes``.  If ``rearm``, (re)set the one
    timer to call :meth:`ServerHub.tick` at ``deadline`` (``None``: no timer).
    If ``more``, some connection has work left: flush again soon, after
    serving the others.
    """

    writes: dict[int, bytes]
    close: list[int]
    shut: list[int]
    pause: list[int]
    resume: list[int]
    notes: list[Note]
    rearm: bool
    deadline: float | None
    more: bool

    # Written out (init=False): one is made per flush, and the __init__ that
    # dataclasses generates stays interpreted in the compiled build.
    def __init__(self, writes: dict[int, bytes] | None = None, close: list[int] | None = None,
                 shut: list[int] | None = None, pause: list[int] | None = None,
                 resume: list[int] | None = None, notes: list[Note] | None = None,
                 rearm: bool = False, deadline: float | None = None,
                 more: bool = False) -> None:
        self.writes = {} if writes is None else writes
        self.close = [] if close is None else close
        self.shut = [] if shut is None else shut
        self.pause = [] if pause is None else pause
        self.resume = [] if resume is None else resume
        self.notes = [] if notes is None else notes
        self.rearm = rearm
        self.deadline = deadline
        self.more = more


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

    def hurry(self) -> None:
        """Output waits for the next batch: write the ticket now if a retry pause holds it."""
        ...

    def close(self) -> tuple[CommitTicket, StoreError | None] | None:
        """Wait for the write in flight, stop, and hand back its outcome (if any)."""
        ...


class _Unset:
    pass


class _Link:
    """One connection as the hub holds it, from :meth:`ServerHub.open` until its
    transport is gone: the protocol connection, the broker's record of it,
    and its output of the turn.

    The hub's writes append to ``chunks``; the first write of a turn puts the
    link on the hub's list of those with output, in the order the turn
    produced it, so a write costs one lookup and an append (not a new list
    and a dictionary entry per connection per turn), and a read one lookup
    for the connection and the broker's record both.  ``live`` goes False
    when the hub drops the connection (what it had queued is still handed
    out); ``writer`` is the transport's ``write`` given to
    :meth:`ServerHub.open`, until the transport is gone.
    """

    __slots__ = ("bconn", "chunks", "cid", "conn", "live", "writer")

    def __init__(self, cid: int, conn: ServerConnection, bconn: _Conn,
                 writer: Callable[[bytes], object] | None) -> None:
        self.cid = cid
        self.conn = conn
        self.bconn = bconn
        self.chunks: list[bytes] = []
        self.live = True
        self.writer = writer

    def take(self) -> bytes:
        """The turn's output, emptied: one packet (the usual case) as it is, more joined."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return data


class Reader:
    """A connection's read callback, for a loop that calls its protocol's
    ``data_received(data)``: the protocol's ``data_received`` *is* this object, so
    that a read runs no interpreted code between the loop and the hub.

    Made by :meth:`ServerHub.reader` before the connection is opened (uvloop takes
    the protocol's ``data_received`` when it makes the transport, before
    ``connection_made``), bound to the connection by :meth:`ServerHub.open`; a
    call is :meth:`ServerHub.read` of that connection, with its link at hand.
    Bytes before it is bound are not read (there are none: a transport reads
    only after ``connection_made``).
    """

    __slots__ = ("hub", "link")

    def __init__(self, hub: ServerHub) -> None:
        self.hub = hub
        self.link: _Link | None = None

    def __call__(self, data: bytes) -> None:
        link = self.link
        if link is not None:
            hub = self.hub
            if not hub._batch_open:
                hub.batch_started()
            if link.live:
                hub._receive(link, data)
            else:
                hub.receive(link.cid, data)


_UNSET = _Unset()


class ServerHub:
    """Bytes in and bytes out for every connection of one job server.

    Connection ids are small integers chosen by the hub; the admin ``workers``
    command shows them where gearmand shows a file descriptor.

    ``idle_timeout`` (seconds, 0 = never) closes a connection that has sent no
    whole message for that long -- trickling a packet a byte at a time does
    not count -- unless the broker says it is busy: it runs a job, waits for a
    foreground result, or sleeps as a worker (:meth:`JobServer.is_busy`); a
    busy one is looked at again a full timeout later.  The time is the one
    given to :meth:`advance`: call it before :meth:`open` too, and when
    :meth:`next_deadline` comes.  A peer that vanished while busy is what TCP
    keepalive (an adapter option) is for.

    Reading from a connection stops (see :meth:`may_read`) while its unsent
    output is over the adapter's limit (:meth:`output_blocked`), while it
    waits for ``max_client_jobs`` foreground jobs or more (0 = no limit),
    while it has messages left from an earlier turn, and, for a worker, while
    a client of a job it runs is over its output limit: so WORK_DATA cannot
    pile up at a client that does not read.  ``max_connections`` (0 = no
    limit) is where :meth:`may_open` says no.  ``graceful_timeout`` bounds a
    graceful :meth:`stop`.

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
        max_connections: int = 0,
        graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
        log_level: int = INFO,
    ) -> None:
        if idle_timeout < 0:
            raise ValueError("idle_timeout must be >= 0 (0 means never)")
        if max_client_jobs < 0:
            raise ValueError("max_client_jobs must be >= 0 (0 means no limit)")
        if max_connections < 0:
            raise ValueError("max_connections must be >= 0 (0 means no limit)")
        if graceful_timeout < 0:
            raise ValueError("graceful_timeout must be >= 0")
        self.max_client_jobs = max_client_jobs
        self.max_connections = max_connections
        self.graceful_timeout = graceful_timeout
        self.broker = broker if broker is not None else JobServer()
        self.max_packet_size = max_packet_size
        self.max_line_length = max_line_length
        self.log_level = log_level
        """Notes below this level are not made (the adapter's logger level)."""
        self.fast_path = True
        """Whether the hot packets go the fast way (see :meth:`_fast`).  The two paths
        answer alike; False sends everything the general way, for tests that
        compare them and for profiling."""
        self._conns: dict[int, ServerConnection] = {}
        self._peers: dict[int, str] = {}
        # Driven by the hub itself (drive()): the clock, the end-of-turn call, whether
        # one is scheduled, and each connection's write.
        self._clock: Callable[[], float] | None = None
        self._schedule: Callable[[], object] | None = None
        self._carry_out: Callable[[Flush], object] | None = None
        self._batch_open = False
        # Each connection's link (from open() until the transport is gone),
        # and those with output this turn, in the order they got it.
        self._links: dict[int, _Link] = {}
        self._dirty: list[_Link] = []
        self._close: list[int] = []
        self._shut: list[int] = []
        self._notes: list[Note] = []
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
        self.writer: StoreWriter | None = None
        """Where the store's batches are written, if not in line (set by the adapter)."""
        self._write_started: float | None = None  # when the batch in the writer went in
        self.refused = 0
        """How many connections :meth:`may_open` turned away."""
        self._now = self.broker.now
        # With an idle timeout: when each connection last completed a message,
        # least recently first (move_to_end on every such read keeps the order).
        self._seen: OrderedDict[int, float] = OrderedDict()
        # Backpressure: connections whose output is over the limit, those told
        # to stop reading, and the changes not yet handed out.
        self._blocked: set[int] = set()
        self._paused: set[int] = set()
        self._pause: list[int] = []
        # Workers not read from because they streamed to a client over its limit.
        self._stalled: set[int] = set()
        # Connections with messages left from an earlier turn (TURN_EVENTS/BYTES).
        self._backlog: dict[int, None] = {}
        self._produced = 0  # bytes routed so far: a turn's output is a difference
        # After a protocol error: cid -> [bytes it may still send, when it is closed].
        self._lingering: dict[int, list[float]] = {}
        self._armed: float | _Unset | None = _UNSET
        self._refusing = False
        self._accept_failures = 0
        # A stop: None, "graceful" (draining until _stop_by) or "immediate".
        self._stop: str | None = None
        self._stop_by = 0.0
        self.stopped = False
        """True once the server should end: close every connection and return."""
        if self.broker.job_count:
            self._note(INFO, "%d stored background jobs replayed", self.broker.job_count)

    def __len__(self) -> int:
        return len(self._conns)

    # -- connections ------------------------------------------------------------------

    def may_open(self) -> bool:
        """Whether to take a new connection: no once ``max_connections`` are open.
        A no is counted and logged once per episode.  (A stopping server closes its
        listener instead: a connection already accepted is still served.)"""
        limit = self.max_connections
        if not limit or len(self._conns) < limit:
            if self._refusing:
                self._refusing = False
                self._note(INFO, "accepting connections again (%d open)", len(self._conns))
            return True
        self.refused += 1
        if not self._refusing:
            self._refusing = True
            self._note(WARNING, "refusing connections: %d open (max_connections %d)",
                       len(self._conns), limit)
        return False

    def accept_failed(self, reason: str) -> float:
        """accept() failed (out of file descriptors, say): return how long to wait
        before accepting again.  Logged once per episode; :meth:`open` ends it."""
        self._accept_failures += 1
        if self._accept_failures == 1:
            self._note(WARNING, "accept failed, pausing accepts: %s", reason)
        return ACCEPT_RETRY

    def open(self, address: bytes = b"-", peer: str | None = None,
             writer: Callable[[bytes], object] | None = None,
             reader: Reader | None = None) -> int:
        """Register a new connection from ``address`` (its IP, as ``workers`` shows it)
        and return its id; ``peer`` (``ip:port``) names it in the log.  ``writer``
        (the transport's ``write``) lets :meth:`flush_written` write to it; ``reader``
        (from :meth:`reader`) becomes its read callback."""
        cid = self._next_id
        self._next_id += 1
        conn = self._conns[cid] = ServerConnection(max_packet_size=self.max_packet_size,
                                                   max_line_length=self.max_line_length)
        self.broker.connect(cid, address)
        link = self._links[cid] = _Link(cid, conn, self.broker._conns[cid], writer)
        if reader is not None:
            reader.link = link
        if self.idle_timeout:
            self._seen[cid] = self._now
        if self._accept_failures:
            self._note(WARNING, "accepting again after %d failed accepts",
                       self._accept_failures)
            self._accept_failures = 0
        if self.log_level <= INFO:
            name = peer or address.decode("ascii", "replace")
            self._peers[cid] = name
            self._note(INFO, "accepted connection %d from %s", cid, name)
        return cid

    def receive(self, cid: int, data: bytes) -> None:
        """Process bytes read from connection ``cid`` (``b""`` when the peer closed)."""
        link = self._links.get(cid)
        if link is None or not link.live:  # (not in self._conns)
            linger = self._lingering.get(cid)
            if linger is not None:
                # Read and dropped, so the peer's kernel can take its packet
                # whole and the peer reads our ERROR, not a reset.
                linger[0] -= len(data)
                if not data or linger[0] <= 0:
                    self._end_linger(cid)
            return
        self._receive(link, data)

    def _receive(self, link: _Link, data: bytes) -> None:
        """:meth:`receive` for a live connection's link."""
        cid = link.cid
        stats = self.stats
        if stats is not None:
            stats.bytes_in += len(data)
        conn = link.conn
        conn.receive_data(data)
        try:
            self._process(cid, conn, link.bconn, link)
        finally:
            notices = conn.notices
            if notices:  # rare: input accepted leniently, as gearmand does
                for text in notices:
                    self._note(WARNING, "connection %d from %s: %s", cid,
                               self._peers.get(cid, "-"), text)
                notices.clear()
        if link.chunks and link.bconn.abilities:
            self._answer_worker(link)

    def _answer_worker(self, link: _Link) -> None:
        """Write a worker's output at the end of its own read: the answer to its grab,
        most often (its next job, or NO_JOB).

        A worker waits on that answer to do anything more, where the rest of
        the turn's output can wait for the turn's end: written now, the job is
        on its way (or the worker goes to sleep) while the turn reads the other
        connections.  Only in memory, with nothing the flush decides first: a
        store's commit, a writer thread's batch, the stats' byte count or a
        stop would have to see it.  (A client's JOB_CREATED waits: its
        WORK_COMPLETE often comes in the same turn, and the two then make one
        write.)
        """
        writer = link.writer
        if writer is None or self._flush_sees_output():
            return
        writer(link.take())

    def _flush_sees_output(self) -> bool:
        """True when the turn's bytes must go through :meth:`flush` before they are
        written: a store's commit (the JOB_CREATED it holds), a writer thread's
        batch, the stats' byte count, a stop."""
        return (self.writer is not None or self.stats is not None
                or self._stop is not None or self.broker._store is not None)

    def _process(self, cid: int, conn: ServerConnection, bconn: _Conn | None = None,
                 link: _Link | None = None) -> None:
        """Handle the messages buffered for ``cid``, up to one turn's worth.

        Each message goes the fast way (:meth:`_fast`) if it can, else the
        general way: decoded to an event by the connection, handed to the
        broker, its outputs routed.  What follows each message -- the turn's
        budget, the checks after routing -- is the same for both.  ``bconn`` and
        ``link`` are the broker's record of ``cid`` and its link when the caller
        holds them.
        """
        broker = self.broker
        # The fast path serves an in-memory server that is not stopping: a
        # store's held output and a drain's refusals go the general way.
        if self.fast_path and self._stop is None and broker._store is None:
            if bconn is None:
                bconn = broker._conns.get(cid)
            if link is None:
                link = self._links.get(cid)
        else:
            bconn = None
        budget = TURN_EVENTS
        start = self._produced
        events: Iterator[Event] | None = None
        try:
            while True:
                done = (self._fast(cid, conn, bconn, link)
                        if bconn is not None and link is not None else _FAST_NO)
                if done == _FAST_DONE:
                    if self.internal_errors and cid not in self._conns:
                        return  # _route closed it
                elif done == _FAST_EMPTY:
                    if self._backlog:  # (a method call, compiled: skipped when empty)
                        self._backlog.pop(cid, None)
                    break
                else:
                    if events is None:
                        events = conn.events()
                    event = next(events, None)
                    if event is None:
                        if self._backlog:
                            self._backlog.pop(cid, None)
                        break
                    if type(event) is ConnectionClosed:
                        self._backlog.pop(cid, None)
                        self._note(INFO, "connection %d from %s closed by the peer", cid,
                                   self._peers.get(cid, "-"))
                        self._close.append(cid)
                        self._drop(cid)
                        return
                    if self._stop is None:
                        outputs = broker.receive(cid, event)
                    else:
                        outputs = self._receive_stopping(cid, event)
                    self._route(outputs)
                    if self.internal_errors and cid not in self._conns:
                        return  # _route closed it
                    if self._blocked and type(event) in _STREAMS and any(
                            c in self._blocked for c, _e in outputs):
                        # A worker streaming to a client that does not read: stop
                        # reading it until that client drains, or WORK_DATA piles up.
                        self._stalled.add(cid)
                        self._pause_if_reading(cid)
                        self._backlog[cid] = None  # what it sent meanwhile waits
                        break
                budget -= 1
                if not budget or self._produced - start > TURN_BYTES:
                    # Enough for this turn: the rest waits in the decoder's
                    # buffer, so every other connection is served meanwhile.
                    if cid not in self._backlog:
                        self._backlog[cid] = None
                        self._pause_if_reading(cid)
                    break
                if done == _FAST_DONE:
                    decoder = conn._decoder
                    if len(decoder._buf) <= decoder._pos and conn.state is _OPEN and (
                            not conn._peer_closed):
                        # Every byte read was taken: what _fast's next call would
                        # say (_FAST_EMPTY), told without the call.
                        if self._backlog:
                            self._backlog.pop(cid, None)
                        break
            if budget != TURN_EVENTS and self.idle_timeout:
                # A whole message came: the idle clock starts again (a packet
                # trickled in a byte at a time does not restart it).
                self._seen[cid] = self._now
                self._seen.move_to_end(cid)
        except RemoteProtocolError as exc:
            # Answer the offender (gearmand's ERROR code, or an ERR line for a
            # text command), shut its write side and drop the rest of what it
            # sends, so it reads the answer (closing with its bytes unread
            # would reset the connection, and the reset discards the answer);
            # requeue whatever it held; every other connection carries on.
            self.protocol_errors += 1
            self._note(INFO, "protocol error on connection %d from %s, closing: %s %s",
                       cid, self._peers.get(cid, "-"), exc.error_code.decode("ascii", "replace"),
                       exc)
            self._write(cid, conn.error_reply(exc))
            self._backlog.pop(cid, None)
            if conn._peer_closed:  # it sends nothing more: nothing to wait for
                self._close.append(cid)
            else:
                self._lingering[cid] = [LINGER_BYTES, self._now + LINGER_SECONDS]
                self._shut.append(cid)
            self._drop(cid)
            return
        paused = self._paused
        if not (len(paused) and cid in paused) and self._should_pause(cid, bconn):
            self._pause_if_reading(cid)

    def _receive_stopping(self, cid: int, event: Event) -> list[Output]:
        """The broker's receive while draining: no job handed out, none taken in."""
        kind = type(event)
        if kind in _GRABS:
            return [(cid, _NO_JOB)]
        if kind is PreSleep:
            return []  # no NOOP will come: no job is handed out any more
        if kind in _SUBMISSIONS:
            return [(cid, Error(_STOPPING_CODE, _STOPPING_TEXT, request=event))]
        return self.broker.receive(cid, event)

    def _fast(self, cid: int, conn: ServerConnection, bconn: _Conn, link: _Link) -> int:
        """Handle the message at the head of ``conn``'s buffer the fast way, if it is
        one of the hot packets in the common case (:data:`_FAST_DONE`); else touch
        nothing and say :data:`_FAST_NO`, or :data:`_FAST_EMPTY` when every byte
        read was taken and the connection is open (``Connection.events()``
        would yield nothing).

        Bytes to the broker's own methods to bytes, with no event object and no
        ``(cid, event)`` output: the methods are the ones the general path's
        handlers call (``JobServer._submit``, ``_take``, ``_end_work``,
        ``_pre_sleep``), with the fields as plain arguments, and any output
        but the usual reply (a refusal, a NOOP to a sleeper, a coalesced
        JOB_CREATED, an assignment the fast encoder cannot write) is routed
        as the general path routes it.  Anything unusual -- text, a partial or
        malformed packet, a result for a job the worker does not hold -- is
        left for the general path, which decodes it and answers or raises.
        ``tests/test_hub_fast.py`` holds the two paths to the same bytes,
        state and errors.  ``link`` is ``cid``'s: its own answers are queued
        there with no lookup (:meth:`_put`).
        """
        decoder = conn._decoder
        buf = decoder._buf
        pos = decoder._pos
        if conn.state is not _OPEN:
            return _FAST_NO
        if len(buf) <= pos:
            return _FAST_NO if conn._peer_closed else _FAST_EMPTY
        if type(buf) is not bytes:
            return _FAST_NO
        # Anything but a whole, plain header of a hot packet: the general path
        # frames it with packets.frame() (and raises, and answers, if it is bad).
        ptype, end = frame_plain(buf, pos, decoder.magic, decoder.max_packet_size)
        if ptype < 0 or not end:
            return _FAST_NO
        kind = _FAST_KIND[ptype]
        if not kind:
            return _FAST_NO
        first = pos + HEADER_SIZE
        broker = self.broker
        if kind == _FAST_SUBMIT:
            # Function, unique, data: cut at the first two NULs.  Compiled,
            # bytes.find and bytes.split are generic calls (~1,000 instructions
            # each), so the few bytes are walked (_native_nul); interpreted,
            # the walk would be the slower.  Native ints, and an if rather than
            # a conditional expression, whose branches mypyc joins into a
            # boxed object.
            if COMPILED:
                i: i64 = _native_nul(buf, first, end)
                j: i64 = -1
                if i >= 0:
                    j = _native_nul(buf, i + 1, end)
                if j < 0:
                    return _FAST_NO  # too few arguments
                name, unique, data = buf[first:i], buf[i + 1:j], buf[j + 1:end]
            else:
                args = buf[first:end].split(b"\0", 2)
                if len(args) != 3:
                    return _FAST_NO  # too few arguments
                name, unique, data = args
            decoder._pos = end
            priority, background = _FAST_SUBMITS[ptype]
            outputs: list[Output] = []
            job = broker._submit(bconn, name, unique, data, priority, background, None, None,
                                 None, outputs)
            if job is not None:
                self._put(link, packet_of_one(_RES, _JOB_CREATED, job.handle))
                broker._place(job, outputs)
            if outputs:
                self._route(outputs)
            return _FAST_DONE
        if kind == _FAST_WORK_COMPLETE:
            if COMPILED:
                # Most often the result of the job last assigned: told by
                # comparing the packet's first field with that job's handle in
                # place -- the handle, then a NUL -- with no scan for the NUL
                # and no hash.  Exact, as no handle a worker holds has a NUL:
                # its assignment could not be framed (the worker is closed).
                job = bconn.recent
                if job is not None and job.state == RUNNING and job.worker == cid:
                    handle = job.handle
                    i = first + len(handle)
                    if i >= end or buf[i] != 0 or buf[first:i] != handle:
                        job = None
                else:
                    job = None
                if job is None:
                    i = _native_nul(buf, first, end)
                    if i < 0:
                        return _FAST_NO
                    job = bconn.jobs.get(buf[first:i])
            else:
                i = buf.find(0, first, end)
                if i < 0:
                    return _FAST_NO
                job = bconn.jobs.get(buf[first:i])
            if job is None:
                return _FAST_NO  # JOB_NOT_FOUND, the general way
            decoder._pos = end
            if job.clients:
                # Forwarded as it came, under the server's magic.
                data = _RES + buf[pos + 4:end]
                links = self._links
                for client in job.clients:
                    target = links.get(client)
                    if target is not None:
                        self._put(target, data)  # (one call: _write would make two)
            broker._end_work(job, 1)
            return _FAST_DONE
        if end != first:
            return _FAST_NO  # a packet with no arguments carried some
        decoder._pos = end
        if kind == _FAST_PRE_SLEEP:
            if broker._pre_sleep(bconn):
                self._put(link, _NOOP_PACKET)
            return _FAST_DONE
        # A grab: kind is the JobServer's form of the assignment.
        job = broker._take(bconn)
        if job is None:
            self._put(link, _NO_JOB_PACKET)
            return _FAST_DONE
        packet = None
        if kind != _FAST_GRAB_ALL or not job.reducer:
            packet = assign_packet(_RES, job.handle, job.function.name,
                                   None if kind == _FAST_GRAB else job.unique, job.data)
        if packet is None:  # JOB_ASSIGN_ALL, or what cannot be framed: the general way
            self._route([(cid, broker._assignment(job, kind))])
        else:
            self._put(link, packet)
        return _FAST_DONE

    def _write(self, cid: int, data: bytes) -> None:
        """Queue bytes for ``cid`` as :meth:`_route` does (nothing if it is gone)."""
        out = self._links.get(cid)
        if out is not None:
            self._put(out, data)

    def _put(self, out: _Link, data: bytes) -> None:
        """:meth:`_write` to a link at hand."""
        if not out.live:
            return
        chunks = out.chunks
        if not chunks:
            self._dirty.append(out)
        chunks.append(data)
        self._produced += len(data)

    def _end_linger(self, cid: int) -> None:
        del self._lingering[cid]
        self._close.append(cid)

    def closed(self, cid: int) -> None:
        """The transport of ``cid`` is gone (reset, timeout, or closed by us)."""
        self._lingering.pop(cid, None)
        out = self._links.pop(cid, None)
        if out is not None:
            out.writer = None
        if cid in self._conns:
            self._note(INFO, "connection %d from %s lost", cid, self._peers.get(cid, "-"))
            self._drop(cid)
        self._peers.pop(cid, None)

    # -- backpressure -----------------------------------------------------------------

    def may_read(self, cid: int) -> bool:
        """Whether to read more from ``cid`` (the rule :attr:`Flush.pause` and
        :attr:`Flush.resume` carry out).

        Not while its unsent output is over the limit, nor while it has
        messages left from an earlier turn.  Not while it waits for
        ``max_client_jobs`` foreground jobs or more: each submission costs the
        server a job and, later, its result, while its JOB_CREATED is only a
        few bytes -- which the peer's kernel takes by the megabyte even when
        the peer never reads -- so output backpressure alone would let one
        connection queue hundreds of thousands of jobs.  And not, for a
        worker, while a client of a job it runs is over its output limit:
        what it sends would only pile up there.  Not reading is all: nothing
        is refused, and reading resumes when the reason ends.
        """
        return not self._should_pause(cid)

    def _should_pause(self, cid: int, bconn: _Conn | None = None) -> bool:
        # Asked after every read.  The sets are usually empty and asked only if
        # not: compiled, len() is read in place (a set's truth is a generic
        # call), a membership test boxes the key and hashes it.  ``bconn``, the
        # broker's record of ``cid`` when the caller holds it, saves a lookup.
        blocked, backlog = self._blocked, self._backlog
        if (len(blocked) and cid in blocked) or (backlog and cid in backlog):
            return True
        limit = self.max_client_jobs
        if limit and (len(bconn.attached) if bconn is not None
                      else self.broker.waiting_on(cid)) >= limit:
            return True
        stalled = self._stalled
        return len(stalled) > 0 and cid in stalled and self._still_stalled(cid)

    def _still_stalled(self, cid: int) -> bool:
        """Whether stalled worker ``cid`` still runs a job for a client over its limit."""
        if not self._blocked.isdisjoint(self.broker.clients_of(cid)):
            return True
        self._stalled.discard(cid)
        return False

    def _waits(self, cid: int) -> bool:
        """Whether a connection with work left must wait for another connection to drain."""
        return cid in self._blocked or (cid in self._stalled and self._still_stalled(cid))

    def _pause_if_reading(self, cid: int) -> None:
        if cid not in self._paused:
            self._paused.add(cid)
            self._pause.append(cid)

    def output_blocked(self, cid: int, blocked: bool) -> list[int]:
        """Connection ``cid``'s unsent output went over the adapter's limit (``True``)
        or back under it (``False``).

        Returns the connections to stop reading from now (``cid``).  A worker
        that then streams WORK_DATA, WORK_WARNING or WORK_STATUS to it is not
        read from either until it drains (results are bounded by
        ``max_client_jobs``; a stream is not).  Which to read from again, once
        ``False`` comes, the next :meth:`flush` says.
        """
        if not blocked:
            self._blocked.discard(cid)
            return []
        if cid in self._blocked or cid not in self._conns:
            return []
        self._blocked.add(cid)
        if cid in self._paused:
            return []
        self._paused.add(cid)
        return [cid]

    def _resumable(self) -> list[int]:
        """Paused connections whose reasons all ended (they are read from again)."""
        resume = [cid for cid in self._paused
                  if cid in self._conns and not self._should_pause(cid)]
        for cid in resume:
            self._paused.discard(cid)
        return resume

    # -- time ---------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Let time-driven work happen (CAN_DO_TIMEOUT expiry, epoch jobs falling due,
        idle connections closed, lingering ones ended, a graceful stop's bound)."""
        self._now = now
        outputs = self.broker.advance(now)
        if outputs:
            self._route(outputs)
        if self._seen:
            self._close_idle(now)
        if self._lingering:
            for cid in [c for c, (_left, by) in self._lingering.items() if by <= now]:
                self._end_linger(cid)
        if self._stop == "graceful" and now >= self._stop_by:
            self._note(WARNING, "graceful stop timed out after %g s with %d jobs running",
                       self.graceful_timeout, self.broker.running_count)
            self._stop = "immediate"
            self.stopped = True

    def tick(self, now: float) -> None:
        """The timer set from :attr:`Flush.deadline` fired: :meth:`advance`, and have the
        next flush arm the timer again whatever the deadline."""
        self._armed = _UNSET
        self.advance(now)

    def next_deadline(self) -> float | None:
        """When :meth:`advance` must next be called, or ``None``."""
        deadline = self.broker.next_deadline()
        if self._seen:
            idle = next(iter(self._seen.values())) + self.idle_timeout
            if deadline is None or idle < deadline:
                deadline = idle
        if self._lingering:
            linger = min(by for _left, by in self._lingering.values())
            if deadline is None or linger < deadline:
                deadline = linger
        if self._stop == "graceful" and (deadline is None or self._stop_by < deadline):
            deadline = self._stop_by
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
            self._note(INFO, "closing connection %d from %s: idle for %g s", cid,
                       self._peers.get(cid, "-"), self.idle_timeout)
            self._close.append(cid)
            self._drop(cid)

    # -- stopping -----------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once a stop began: accept no more connections."""
        return self._stop is not None

    def stop(self, graceful: bool = False, why: str = "stop requested") -> None:
        """Stop the server; ``why`` (a signal's name, say) goes to the log.

        At once, or gracefully: from now on no job is handed to a worker (GRAB
        gets NO_JOB) and no submission is taken (ERROR SHUTTING_DOWN); running
        jobs finish and their results are delivered; queued background jobs
        stay in the store for the next start.  :attr:`stopped` becomes true
        when no job runs any more, or ``graceful_timeout`` seconds after this
        call, whichever comes first.  An immediate stop is not weakened by a
        later graceful one.  Call :meth:`advance` first: the bound counts from
        the time given there.
        """
        if self._stop == "immediate" or (self._stop == "graceful" and graceful):
            return
        running = self.broker.running_count
        if graceful:
            self._stop = "graceful"
            self._stop_by = self._now + self.graceful_timeout
            self._note(WARNING, "%s: graceful stop, waiting up to %g s for %d running jobs "
                       "(%d jobs in the server)", why, self.graceful_timeout, running,
                       self.broker.job_count)
        else:
            self._stop = "immediate"
            self.stopped = True
            self._note(WARNING, "%s: stopping now (%d jobs running, %d in the server)",
                       why, running, self.broker.job_count)

    # -- output ---------------------------------------------------------------------------

    def flush(self) -> Flush:
        """Commit durable jobs once for the whole batch, then hand out what to do.

        A store that fails costs only its batch's submissions (ERROR
        QUEUE_ERROR, see :meth:`JobServer.end_commit`); nothing here raises.
        """
        if self._backlog:
            self._work_backlog()
        writer = self.writer
        stats = self.stats
        if writer is not None:
            held = self._write_aside(writer)
        elif stats is not None and stats.time_commits:
            held = stats.timed_commit(self.broker)
        elif self.broker._store is None:
            held = []  # nothing is ever written or held for a commit
        else:
            held = self.broker.commit()
        if held:
            self._route(held)
        dirty = self._dirty
        self._dirty = []
        writes: dict[int, bytes] = {}
        for buf in dirty:
            if buf.chunks:  # (empty: written early, see _answer_worker)
                writes[buf.cid] = buf.take()
        if stats is not None:
            sent = 0
            for data in writes.values():
                sent += len(data)
            stats.bytes_out += sent
        out = Flush(writes, self._close)
        self._close = []
        if self._shut:
            out.shut, self._shut = self._shut, []
        requested = self.broker.shutdown_requested
        if requested is not None and self._stop != "immediate" and (
                self._stop is None or requested == "immediate"):
            self.stop(graceful=requested == "graceful", why="admin shutdown command")
        if self._stop == "graceful" and not self.stopped and not self.broker.running_count:
            self._note(WARNING, "graceful stop: no job running, stopping (%d jobs stay "
                       "queued)", self.broker.job_count)
            self.stopped = True
        if self._pause:
            out.pause, self._pause = self._pause, []
        if self._paused:
            out.resume = self._resumable()
        if self._notes:
            out.notes, self._notes = self._notes, []
        deadline = self.next_deadline()
        if deadline is not self._armed and deadline != self._armed:
            self._armed = deadline
            out.rearm = True
            out.deadline = deadline
        if self._backlog:
            out.more = any(not self._waits(cid) for cid in self._backlog)
        return out

    # -- the turn, run by the hub (drive) ------------------------------------------------

    def drive(self, clock: Callable[[], float], schedule: Callable[[], object],
              carry_out: Callable[[Flush], object] | None = None) -> None:
        """Run the adapter's turn here: ``clock()`` is the time (read once per batch)
        and ``schedule()`` asks the loop to call :meth:`flush_written` once, at the
        end of the current turn (``functools.partial(loop.call_soon, ...)``); or,
        with ``carry_out``, :meth:`end_turn`, which hands ``carry_out`` the
        :class:`Flush` whenever :meth:`flush_written` returns one.

        The calls are plain callables, made from here: compiled, with a
        :meth:`reader` per connection and :meth:`end_turn` scheduled, the usual
        turn costs no interpreted code at all.
        """
        self._clock = clock
        self._schedule = schedule
        self._carry_out = carry_out

    def reader(self) -> Reader:
        """A read callback for a connection about to be opened (see :class:`Reader`):
        pass it to :meth:`open`."""
        return Reader(self)

    def end_turn(self) -> None:
        """The end of a driven hub's turn, as a call with no result: :meth:`flush_written`,
        and its :class:`Flush`, if any, to the ``carry_out`` given to :meth:`drive`."""
        out = self.flush_written()
        if out is not None:
            carry_out = self._carry_out
            if carry_out is None:
                raise RuntimeError("end_turn() needs drive(..., carry_out)")
            carry_out(out)

    def batch_started(self) -> None:
        """Something happened (a read, a close, a timer, a store write done): unless
        a batch is under way, give the hub the time and schedule the flush."""
        if self._batch_open:
            return
        clock = self._clock
        if clock is None:
            raise RuntimeError("batch_started() needs drive() first")
        self._batch_open = True
        self.advance(clock())
        schedule = self._schedule
        if schedule is not None:
            schedule()

    def read(self, cid: int, data: bytes) -> None:
        """The whole of a read of a driven hub: :meth:`batch_started`, then :meth:`receive`."""
        if not self._batch_open:
            self.batch_started()
        self.receive(cid, data)

    def flush_written(self) -> Flush | None:
        """The end of a driven hub's turn: :meth:`flush`, and write its output with the
        writers :meth:`open` was given.

        When the flush holds nothing but bytes for connections with a writer --
        no pause or resume, close or half-close, log line, timer, leftover
        work or stop, the usual turn -- they are written here and ``None`` is
        returned.  Otherwise nothing is written and the :class:`Flush` is
        returned, to be carried out whole as :meth:`flush` describes: so the
        order of pauses, writes and closes is the adapter's, as always.  (A
        write that fills a transport calls back into :meth:`output_blocked`:
        at this point that is as safe as after :meth:`flush` returned.)
        """
        self._batch_open = False
        broker = self.broker
        # The usual turn, told before anything is built: nothing for flush() to
        # commit, route or decide (no backlog, store, writer, stats; nothing to
        # close, pause, resume, log, rearm or stop), so its Flush would hold
        # only the writes.  Then they are written from the buffers, and no Flush,
        # writes dict or lists are made.  Anything else takes the whole flush().
        usual = not (self._backlog or self._close or self._shut or self._pause
                     or self._paused or self._notes or self._flush_sees_output()
                     or broker.shutdown_requested is not None)
        if usual:
            # And no rearm due.  Compiled, != of two optionals is a generic
            # comparison: the usual case, no deadline and none armed, is told
            # by identity.
            deadline = self.next_deadline()
            armed = self._armed
            usual = deadline is armed or deadline == armed
        if usual:
            dirty = self._dirty
            for buf in dirty:
                if buf.writer is None:
                    break
            else:
                # Swapped first, and each buffer emptied before its write: a
                # write that reached back into the hub would queue into the
                # next turn's output, never into this one.
                self._dirty = []
                for buf in dirty:
                    if buf.chunks:  # (empty: written early, see _answer_worker)
                        data = buf.take()
                        writer = buf.writer
                        if writer is not None:
                            writer(data)
                return None
        out = self.flush()
        if (out.close or out.shut or out.pause or out.resume or out.notes or out.rearm
                or out.more or self._stop is not None):
            return out
        outs = self._links
        writes = out.writes
        for cid in writes:
            target = outs.get(cid)
            if target is None or target.writer is None:
                return out
        for cid, data in writes.items():
            writer = outs[cid].writer
            if writer is not None:
                writer(data)
        return None

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
        if writer.busy:
            if broker.held_count:
                writer.hurry()  # a submission waits behind a paused retry of deletes
        else:
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

    def _work_backlog(self) -> None:
        """A turn for each connection with messages left (and room for its output)."""
        conns = self._conns
        for cid in list(self._backlog):
            conn = conns.get(cid)
            if conn is None:
                del self._backlog[cid]
            elif not self._waits(cid):
                self._process(cid, conn)

    def _note(self, level: int, message: str, *args: object) -> None:
        if level >= self.log_level:
            self._notes.append((level, message, args))

    def _drop(self, cid: int) -> None:
        del self._conns[cid]
        buf = self._links.get(cid)
        if buf is not None:
            buf.live = False  # what it has queued still goes out
        self._seen.pop(cid, None)
        self._blocked.discard(cid)
        self._paused.discard(cid)
        self._stalled.discard(cid)
        self._backlog.pop(cid, None)
        self._route(self.broker.disconnect(cid))

    def _route(self, outputs: list[Output]) -> None:
        conns = self._conns
        outs = self._links
        produced = 0
        for cid, event in outputs:
            conn = conns.get(cid)
            if conn is None:
                continue
            try:
                data = conn.send(event)
            except LocalProtocolError:
                # The broker answered with something this connection cannot
                # frame: a bug, but one peer's.  Close that peer, keep serving.
                self.internal_errors += 1
                self._note(WARNING, "closing connection %d: cannot frame %s for it", cid,
                           type(event).__name__)
                self._close.append(cid)
                self._drop(cid)
                continue
            buf = outs[cid]
            chunks = buf.chunks
            if not chunks:
                self._dirty.append(buf)
            chunks.append(data)
            produced += len(data)
        self._produced += produced
