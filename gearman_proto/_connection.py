"""What every binary-protocol connection shares: the three verbs and role checks.

A connection owns a :class:`~gearman_proto.packets.Decoder` and nothing else
that touches bytes.  ``receive_data`` buffers, ``next_event`` decodes one event
and lets the role's subclass update its state, ``send`` lets the subclass check
and record an outgoing event and returns the bytes to write.  The subclass
hooks ``_receive`` (a handler per received event class) and ``_on_send`` are
where each role's rules live.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from .codec import DECODERS, HOT_DECODERS, WireEncoder, event_to_packet, wire_encoders
from .errors import LocalProtocolError, RemoteProtocolError
from .events import AdminCommand, ConnectionClosed, Event
from .packets import (
    _HEADER,
    _NARGS,
    DEFAULT_MAX_PACKET_SIZE,
    HEADER_SIZE,
    RECEIVABLE,
    REQ,
    RES,
    SENDABLE,
    Decoder,
    PacketType,
    Role,
    TextLine,
    encode_packet,
    frame,
    split_args,
)

if TYPE_CHECKING:
    # mypyc's native 64-bit int: unboxed, with no overflow-to-bignum checks.  Only
    # annotations name it, and the pure-Python build never evaluates those.
    from mypy_extensions import i64

__all__ = ["NEED_DATA", "NeedData", "ConnectionState", "Connection"]

Receiver = Callable[[Any, Event], "Event | None"]
"""A role's rule for one received event class: see ``Connection._receive``."""


_HOT: Final[dict[Role, tuple[Callable[[bytes], Event] | None, ...]]] = {
    # Per role, by packet type: the hand-written decoder of each common packet
    # the role may receive (codec.HOT_DECODERS), None for the others.
    role: tuple(
        HOT_DECODERS.get(t) if t in RECEIVABLE[role] else None for t in range(len(_NARGS))
    )
    for role in Role
}
_COMPILED: Final = not __file__.endswith(".py")
_unpack_header: Final = _HEADER.unpack_from
# Bound once: compiled, ``payload.split(...)`` and ``fifo.popleft()`` are generic
# method calls, looked up by name per packet, where these are direct calls.
_split: Final = bytes.split
_popleft: Final = deque.popleft
_WINDOW: Final = 4096
"""Bytes of the receive buffer that :meth:`Connection._text_at` decodes at a time."""
_WIRE: Final[dict[Role, dict[type, WireEncoder]]] = {
    role: wire_encoders(RES if role is Role.SERVER else REQ, SENDABLE[role]) for role in Role
}


def whole_res_packet(buf: bytes, pos: i64, limit: i64) -> i64:
    """Where the packet at ``buf[pos]`` ends, if it is a whole ``\\0RES`` packet of a
    type below 256 and at most ``limit`` bytes of payload (0 = no limit); else 0.

    The framing of the client's and worker's fast paths; whatever it refuses,
    :func:`~gearman_proto.packets.frame` reads.
    """
    if not _COMPILED:
        # Interpreted, one struct call beats a dozen bytecodes per byte.
        n = len(buf)
        if pos + 12 > n:
            return 0
        pmagic: bytes
        ptype: int
        size: int
        pmagic, ptype, size = _unpack_header(buf, pos)
        if pmagic != RES or ptype > 255:
            return 0
        end = pos + 12 + size
        if end > n or (limit and size > limit):
            return 0
        return end
    # Compiled: byte by byte, in native ints, each one load, with no tuple, no
    # bytes object for the magic and no boxed int.
    m: i64 = len(buf)
    if pos + 12 > m:
        return 0
    if (buf[pos] or buf[pos + 1] != 82 or buf[pos + 2] != 69 or buf[pos + 3] != 83
            or buf[pos + 4] or buf[pos + 5] or buf[pos + 6]):
        return 0
    b8: i64 = buf[pos + 8]
    b9: i64 = buf[pos + 9]
    b10: i64 = buf[pos + 10]
    b11: i64 = buf[pos + 11]
    psize: i64 = (b8 << 24) | (b9 << 16) | (b10 << 8) | b11
    pend: i64 = pos + 12 + psize
    if pend > m or (limit and psize > limit):
        return 0
    return pend


def _native_nul(buf: bytes, i: i64, end: i64) -> i64:
    # Compiled only: where the first NUL of buf[i:end] is, or -1 -- what
    # ``buf.find(0, i, end)`` says, which compiled is a generic call that parses
    # a tuple of its arguments (bytes.find takes METH_VARARGS) and boxes the
    # positions, ~1,400 instructions, where this loop takes ~15 a byte: the
    # better for one short field (the client's handle, the server's function
    # name and unique); for more, see Connection._text_at.
    while i < end:
        if buf[i] == 0:
            return i
        i += 1
    return -1


class NeedData:
    """Type of :data:`NEED_DATA`: ``next_event()`` has nothing until more bytes arrive."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


class ConnectionState(enum.Enum):
    """Where a connection is in its life."""

    OPEN = "open"
    CLOSED = "closed"
    """The peer closed cleanly (at a message boundary)."""
    ERROR = "error"
    """A protocol error happened; the connection can no longer be used."""


def _name(event: Event) -> str:
    try:
        ptype = event.packet_type
    except AttributeError:
        return type(event).__name__
    return f"{type(event).__name__} ({PacketType(ptype).name})"


# Looking a member up on an Enum class costs ~0.1 µs (EnumType.__getattr__);
# these are read for every packet.
_OPEN: Final = ConnectionState.OPEN
_CLOSED: Final = ConnectionState.CLOSED
_ERROR: Final = ConnectionState.ERROR


class Connection:
    """Base of :class:`ClientConnection`, :class:`WorkerConnection` and :class:`ServerConnection`.

    Subclasses set ``role``, fill ``_receive`` and override ``_on_send``.
    """

    role: Role

    def __init__(self, *, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
                 allow_text: bool = False) -> None:
        self._magic_out = RES if self.role is Role.SERVER else REQ
        self._sendable = SENDABLE[self.role]
        self._receivable = RECEIVABLE[self.role]
        self._hot = _HOT[self.role]
        self._wire = _WIRE[self.role]
        self._decoder = Decoder(RES if self.role is not Role.SERVER else REQ,
                                allow_text=allow_text, max_packet_size=max_packet_size)
        self._peer_closed = False
        self._text = ""
        self._text_of: object = None
        self._text_base: i64 = 0
        self.state = _OPEN
        self.fast_path = False
        """Whether :meth:`events` tries the role's fast path (:meth:`_take_fast`) first;
        the roles that have one turn it on.  The events, state and errors are the
        same either way (``tests/test_fast_path.py`` holds them to it)."""
        self._receive: dict[type, Receiver] = {}
        """The role's rules for what it receives: per event class, a handler that
        checks and records the event, raises RemoteProtocolError to refuse it,
        and returns None to hand it out as it is or an event to hand out instead
        (a reply rebuilt with the ``request`` it answers).  One dict lookup by
        exact class: events come from the codec, which builds exactly these."""

    # -- bytes in ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the peer; ``b""`` means the peer closed its side."""
        if data:
            if self._peer_closed:
                raise LocalProtocolError("receive_data() called after the peer closed")
            self._decoder.feed(data)
        else:
            self._peer_closed = True

    def next_event(self) -> Event | NeedData:
        """Return the next event from the peer, or :data:`NEED_DATA`.

        Raises :class:`RemoteProtocolError` when the peer broke the protocol;
        the connection is then in the ``ERROR`` state and every later call
        raises again.
        """
        decoder = self._decoder
        # Where the message about to be read starts, for _on_receive_error.
        start = decoder._pos
        if self.state is _ERROR:
            exc = RemoteProtocolError("connection is in the error state after a protocol error")
            self._on_receive_error(exc, start)
            raise exc
        try:
            item = decoder.next()
            if item is None:
                if not self._peer_closed:
                    return NEED_DATA
                if self._decoder.buffered:
                    raise RemoteProtocolError(
                        f"peer closed the connection in the middle of a message "
                        f"({self._decoder.buffered} bytes pending)"
                    )
                self.state = _CLOSED
                event: Event = ConnectionClosed()
                self._on_receive(event)
                return event
            if isinstance(item, TextLine):
                event = AdminCommand(item.line)
            else:
                ptype = item.type
                if ptype not in self._receivable:
                    raise self._not_receivable(ptype)
                event = DECODERS[ptype](item.args)
            # A subclass may return a replacement: a reply rebuilt with the
            # ``request`` it answers (events are frozen, so it cannot be set).
            replaced = self._on_receive(event)
            return event if replaced is None else replaced
        except RemoteProtocolError as exc:
            self.state = _ERROR
            self._on_receive_error(exc, start)
            raise

    def events(self) -> Iterator[Event]:
        """Yield every event that the buffered bytes hold, then stop.

        The same events, state and errors as calling :meth:`next_event` until it
        says :data:`NEED_DATA`, with less work per packet: a whole binary packet
        is framed by the decoder's own function and, if it is one of the common
        ones (``codec.HOT_DECODERS``), built straight from its payload, with
        no ``Packet`` or argument tuple.  Text, a partial packet at the end of
        the stream, and the error state go through :meth:`next_event`.
        """
        decoder = self._decoder
        hot = self._hot
        magic = decoder.magic
        limit = decoder.max_packet_size
        receivable = self._receivable
        receive = self._receive
        fast = self.fast_path
        while True:
            buf = decoder._buf
            pos = decoder._pos
            if fast and isinstance(buf, bytes) and self.state is _OPEN:
                # The role's fast path first, on bytes only; it checks every
                # byte of the header it needs (whole_res_packet), so the first
                # byte is not read here (compiled, ``buf[pos]`` of a ``bytes |
                # bytearray`` is a generic call).
                try:
                    taken = self._take_fast(buf, pos, limit)
                except RemoteProtocolError as exc:
                    self.state = _ERROR
                    self._on_receive_error(exc, pos)
                    raise
                if taken is not None:
                    yield taken
                    continue
            if len(buf) <= pos:
                if not self._peer_closed and self.state is _OPEN:
                    return  # every byte read: next_event() could only say NEED_DATA
            elif buf[pos] == 0 and self.state is _OPEN:
                try:
                    ptype, end = frame(buf, pos, magic, limit)
                    if not end:
                        if not self._peer_closed:
                            return
                    else:
                        decoder._pos = end
                        event: Event | None = None
                        build = hot[ptype]  # frame() let only known types through
                        if build is not None:
                            payload = buf[pos + HEADER_SIZE:end]
                            try:
                                event = build(payload if type(payload) is bytes
                                              else bytes(payload))
                            except ValueError:  # a wrong argument count
                                event = None
                        if event is None:
                            # In next_event()'s order: the arguments, then the role.
                            args = split_args(ptype, buf, pos, end, decoder.leniencies)
                            if ptype not in receivable:
                                raise self._not_receivable(ptype)
                            event = DECODERS[ptype](args)
                        handler = receive.get(type(event))
                        replaced = None if handler is None else handler(self, event)
                except RemoteProtocolError as exc:
                    self.state = _ERROR
                    self._on_receive_error(exc, pos)
                    raise
                if end:
                    yield event if replaced is None else replaced  # type: ignore[misc]
                    continue
            item = self.next_event()
            if type(item) is NeedData:
                return
            yield item  # type: ignore[misc]
            if type(item) is ConnectionClosed:
                return

    def _take_fast(self, buf: bytes, pos: i64, limit: i64) -> Event | None:
        """The role's fast path for the packet at ``buf[pos]`` (state OPEN; maybe no packet).

        For the few packets that are most of a role's traffic: if the packet is
        one of them, whole in ``buf`` and well formed, build its event straight
        from the bytes, consume it (``_decoder._pos``) and hand it to the same
        rule as the general path (``_receive``), returning what that hands out.
        Anything else returns ``None`` having changed nothing, and the general
        path reads the packet, raising what is wrong.  So the fast path skips
        building intermediate objects and never decides anything.
        """
        return None

    def _text_at(self, buf: bytes, pos: i64) -> tuple[str, i64]:
        """Compiled only: ``buf`` from ``pos`` on (up to :data:`_WINDOW` bytes, or all of
        a buffer no longer than that) decoded as Latin-1, and the offset in ``buf`` of
        its first character, kept until the buffer changes or ``pos`` leaves it.

        For finding NULs: compiled code has no fast search in bytes (``bytes.find``
        is a generic call that parses a tuple of its arguments, ~1,400 instructions;
        a loop over the bytes ~15 a byte), where ``str.find`` is mypyc's own
        primitive and finds one character at ``memchr``'s speed.  Latin-1 maps each
        byte to the character of the same number, so positions are the same.
        """
        text = self._text
        base = self._text_base
        if buf is not self._text_of or pos < base or pos >= base + len(text):
            if len(buf) <= _WINDOW:
                text = buf.decode("latin-1")
                base = 0
            else:
                start: int = pos  # a slice's int bounds are native, i64 ones boxed
                text = buf[start:start + _WINDOW].decode("latin-1")
                base = pos
            self._text = text
            self._text_of = buf
            self._text_base = base
        return text, base

    def _not_receivable(self, ptype: int) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"a {self.role.value} may not receive {PacketType(ptype).name}",
            error_code=b"INVALID_COMMAND",
            error_text=b"Command not expected",
        )

    # -- bytes out ----------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Return the bytes that put ``event`` on the wire.

        Raises :class:`LocalProtocolError` if this role may not send it now; the
        connection then moves to the ``ERROR`` state.
        """
        self._check_sendable()
        try:
            data = self._encode(event)
            self._on_send(event)
        except LocalProtocolError:
            self.state = _ERROR
            raise
        return data

    def _check_sendable(self) -> None:
        """Raise LocalProtocolError if nothing may be sent: the connection is in ERROR."""
        if self.state is _ERROR:
            raise LocalProtocolError("connection is in the error state after a protocol error")

    def _encode(self, event: Event) -> bytes:
        wire = self._wire.get(type(event))
        if wire is not None:
            data = wire(event)
            if data is not None:
                return data
        ptype, args = event_to_packet(event)
        if ptype not in self._sendable:
            raise LocalProtocolError(
                f"a {self.role.value} may not send {_name(event)}"
            )
        return encode_packet(self._magic_out, ptype, args)

    # -- role hooks ------------------------------------------------------------------

    def _on_receive(self, event: Event) -> Event | None:
        """Run the role's rule (``_receive``) for an event from the peer."""
        handler = self._receive.get(type(event))
        return None if handler is None else handler(self, event)

    def _on_send(self, event: Event) -> None:
        """Check and record an event about to be sent; raise LocalProtocolError to refuse it."""

    def _on_receive_error(self, exc: RemoteProtocolError, start: int) -> None:
        """``next_event`` raised ``exc`` on the message starting at decoder offset ``start``."""

