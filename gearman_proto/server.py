"""One peer seen from the job server: binary packets and admin text lines.

Deliberately thin.  A :class:`ServerConnection` turns bytes into events and
events into bytes, and checks that the peer only sends what a client or worker
may send; deciding what to do with a job is the job server's business
(:mod:`gearman_proto.broker`), which owns all state shared between connections.

The admin text protocol shares the port: a message whose first byte is not NUL
is a text line and arrives as :class:`~gearman_proto.events.AdminCommand`
(PROTOCOL-NOTES §3.1); the answer is sent as
:class:`~gearman_proto.events.AdminReply`, whose text goes out unframed.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, Final

from ._connection import _WIRE, Connection, Receiver
from .codec import WireEncoder
from .errors import ProtocolError, RemoteProtocolError
from .events import (
    AdminReply,
    CanDo,
    CantDo,
    Event,
    GetStatus,
    GetStatusUnique,
)
from .packets import (
    DEFAULT_MAX_LINE_LENGTH,
    DEFAULT_MAX_PACKET_SIZE,
    RES,
    PacketType,
    Role,
    encode_packet,
)

__all__ = ["ServerConnection"]

# A packet's last argument may hold NUL.  Three such arguments must not:
# CAN_DO's and CANT_DO's function name (every packet that submits to a function
# splits at the first NUL, so no job could ever run for it, and the name would
# only reach the admin replies), and the handle of GET_STATUS and unique of
# GET_STATUS_UNIQUE, which the answer echoes as its *first* field, where NUL
# cannot be framed.  gearmand 1.1.20 cuts such values at the NUL; we refuse the
# packet.


def _refuse_nul(field: Callable[[Any], bytes]) -> Receiver:
    def refuse(conn: ServerConnection, event: Event) -> None:
        if 0 in field(event):  # an int needle: memchr
            raise RemoteProtocolError(
                f"{type(event).__name__} argument holds a NUL byte",
                error_code=b"INVALID_ARGUMENTS",
                error_text=b"Argument holds a NUL byte",
            )
    return refuse


_RECEIVE: Final[dict[type, Receiver]] = {
    CanDo: _refuse_nul(attrgetter("function")),
    CantDo: _refuse_nul(attrgetter("function")),
    GetStatus: _refuse_nul(attrgetter("handle")),
    GetStatusUnique: _refuse_nul(attrgetter("unique")),
}


# The server also writes admin text replies: as they are.
_SERVER_WIRE: dict[type, WireEncoder] = {**_WIRE[Role.SERVER], AdminReply: attrgetter("text")}


class ServerConnection(Connection):
    """A connection seen from the job server, accepting binary packets and admin lines.

    ``max_packet_size`` bounds one packet's payload (refused from its header,
    before the payload is buffered; 0 = unlimited) and ``max_line_length`` one
    admin text line.  After a :class:`ProtocolError`, write
    :meth:`error_reply` and close.
    """

    role = Role.SERVER

    def __init__(
        self,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
    ) -> None:
        super().__init__(max_packet_size=max_packet_size, allow_text=True)
        self._wire = _SERVER_WIRE
        self._receive = _RECEIVE
        self._decoder.max_line_length = max_line_length
        self.notices = self._decoder.leniencies
        """Lines for the server's log: input accepted leniently (a CAN_DO_TIMEOUT with a
        binary timeout).  Whoever logs them clears the list."""
        # The error raised while reading an admin text line, if any: it is
        # answered with an ERR line rather than an ERROR packet.
        self._text_error: RemoteProtocolError | None = None

    def _on_receive_error(self, exc: RemoteProtocolError, start: int) -> None:
        # Once a message fails the decoder may already have moved past it;
        # its first byte, at `start`, says whether it was text or binary.
        buf = self._decoder._buf
        if self._text_error is None and start < len(buf) and buf[start] != 0:
            self._text_error = exc

    def error_reply(self, exc: ProtocolError) -> bytes:
        """The bytes to write before closing the connection after ``exc``.

        An ERROR packet with ``exc.error_code`` and ``exc.error_text``, or, if
        ``exc`` was raised while reading an admin text line, an
        ``ERR CODE text\\r\\n`` line with spaces written as ``+``, as gearmand
        writes them (PROTOCOL-NOTES §3.2).  Works in the ERROR state too, since
        it does not go through :meth:`send`.

        (gearmand itself keeps the connection open after ERROR INVALID_MAGIC or
        INVALID_COMMAND and closes it without a word on an unknown type or bad
        magic bytes; we answer and close in every case, so the peer learns why.)
        """
        # A NUL in the code would shift the packet's fields; a newline in
        # either would end the ERR line early.
        code = exc.error_code.replace(b"\0", b"")
        if exc is self._text_error:
            code = code.replace(b" ", b"+").replace(b"\r", b"").replace(b"\n", b"")
            text = exc.error_text.replace(b" ", b"+").replace(b"\r", b"+").replace(b"\n", b"+")
            return b"ERR " + code + b" " + text + b"\r\n"
        return encode_packet(RES, PacketType.ERROR, (code, exc.error_text))
