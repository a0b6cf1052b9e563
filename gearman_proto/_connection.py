"""What every binary-protocol connection shares: the three verbs and role checks.

A connection owns a :class:`~gearman_proto.packets.Decoder` and nothing else
that touches bytes.  ``receive_data`` buffers, ``next_event`` decodes one event
and lets the role's subclass update its state, ``send`` lets the subclass check
and record an outgoing event and returns the bytes to write.  The subclass
hooks ``_on_receive`` and ``_on_send`` are where each role's rules live.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    _DECODERS,
    AdminCommand,
    ConnectionClosed,
    Event,
    WireEncoder,
    event_to_packet,
    wire_encoders,
)
from .packets import (
    _NARGS,
    _NUMERIC,
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
    _unpack_header,
    encode_packet,
)

__all__ = ["NEED_DATA", "NeedData", "ConnectionState", "Connection"]


_FastEntry = tuple[int, Callable[[Sequence[bytes]], Event]]
_FAST: dict[Role, tuple[_FastEntry | None, ...]] = {
    # Per role, by packet type: (argument count, event builder) for the types
    # Connection.events() may decode in its own loop -- those the role
    # receives that have no numeric argument to check.
    role: tuple(
        (_NARGS[t], _DECODERS[t])
        if t in RECEIVABLE[role] and not _NUMERIC[t] and t in _DECODERS else None
        for t in range(len(_NARGS))
    )
    for role in Role
}
_WIRE: dict[Role, dict[type, WireEncoder]] = {
    role: wire_encoders(RES if role is Role.SERVER else REQ, SENDABLE[role]) for role in Role
}


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
_OPEN, _CLOSED, _ERROR = ConnectionState.OPEN, ConnectionState.CLOSED, ConnectionState.ERROR


class Connection:
    """Base of :class:`ClientConnection`, :class:`WorkerConnection` and :class:`ServerConnection`.

    Subclasses set ``role`` and override ``_on_receive`` / ``_on_send``.
    """

    role: Role

    def __init__(self, *, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
                 allow_text: bool = False) -> None:
        self._magic_out = RES if self.role is Role.SERVER else REQ
        self._sendable = SENDABLE[self.role]
        self._receivable = RECEIVABLE[self.role]
        self._fast = _FAST[self.role]
        self._wire = _WIRE[self.role]
        self._decoder = Decoder(RES if self.role is not Role.SERVER else REQ,
                                allow_text=allow_text, max_packet_size=max_packet_size)
        self._peer_closed = False
        self.state = _OPEN

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
                    raise RemoteProtocolError(
                        f"a {self.role.value} may not receive {PacketType(ptype).name}",
                        error_code=b"INVALID_COMMAND",
                        error_text=b"Command not expected",
                    )
                # packet_to_event's table, looked up here: one call less per packet.
                event = _DECODERS[ptype](item.args)
            # A subclass may return a replacement: a reply rebuilt with the
            # ``request`` it answers (events are frozen, so it cannot be set).
            replaced = self._on_receive(event)
            return event if replaced is None else replaced
        except RemoteProtocolError as exc:
            self.state = _ERROR
            self._on_receive_error(exc, start)
            raise

    def events(self) -> Iterator[Event]:
        """Yield every event that the buffered bytes hold, then stop."""
        decoder = self._decoder
        fast = self._fast
        nfast = len(fast)
        magic = decoder.magic
        on_receive = self._on_receive
        while True:
            buf = decoder._buf
            pos = decoder._pos
            avail = len(buf) - pos
            if avail <= 0 and not self._peer_closed and self.state is _OPEN:
                # Every byte read and the peer still open: next_event() could
                # only say NEED_DATA, so stop without asking.
                return
            # A whole, well-formed binary packet of a type this role receives
            # and with no numeric argument is decoded here, in one frame: it is
            # most of the traffic.  Anything else -- text, a partial packet,
            # any doubt at all -- goes through next_event(), where every rule
            # and every error lives, and which decodes it from the same place.
            if avail >= HEADER_SIZE and buf[pos] == 0 and self.state is _OPEN:
                pmagic, ptype, size = _unpack_header(buf, pos)
                end = pos + HEADER_SIZE + size
                entry = fast[ptype] if ptype < nfast else None
                limit = decoder.max_packet_size
                if (entry is not None and pmagic == magic and end <= len(buf)
                        and (not limit or size <= limit)):
                    nargs, build = entry
                    if nargs == 0:
                        args: Sequence[bytes] | None = () if size == 0 else None
                    else:
                        payload = buf[pos + HEADER_SIZE:end]
                        if type(payload) is not bytes:  # sliced from a bytearray
                            payload = bytes(payload)
                        args = payload.split(b"\0", nargs - 1) if nargs > 1 else (payload,)
                        if len(args) != nargs:
                            args = None
                    if args is not None:
                        decoder._pos = end
                        event = build(args)
                        try:
                            replaced = on_receive(event)
                        except RemoteProtocolError as exc:
                            self.state = _ERROR
                            self._on_receive_error(exc, pos)
                            raise
                        yield event if replaced is None else replaced
                        continue
            event = self.next_event()
            if type(event) is NeedData:
                return
            yield event  # type: ignore[misc]
            if type(event) is ConnectionClosed:
                return

    # -- bytes out ----------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Return the bytes that put ``event`` on the wire.

        Raises :class:`LocalProtocolError` if this role may not send it now; the
        connection then moves to the ``ERROR`` state.
        """
        if self.state is _ERROR:
            raise LocalProtocolError("connection is in the error state after a protocol error")
        try:
            data = self._encode(event)
            self._on_send(event)
        except LocalProtocolError:
            self.state = _ERROR
            raise
        return data

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
        """Check and record an event from the peer; raise RemoteProtocolError to refuse it.

        Return ``None`` to hand ``event`` to the caller as it is, or an event to
        hand out instead (a reply rebuilt with the ``request`` it answers).
        """
        return None

    def _on_send(self, event: Event) -> None:
        """Check and record an event about to be sent; raise LocalProtocolError to refuse it."""

    def _on_receive_error(self, exc: RemoteProtocolError, start: int) -> None:
        """``next_event`` raised ``exc`` on the message starting at decoder offset ``start``."""

