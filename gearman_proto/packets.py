"""The Gearman wire format: packet types, the argument table, and framing.

Every binary packet is a 12-byte header -- magic (``\\0REQ`` towards the job
server, ``\\0RES`` from it), a big-endian u32 type and a big-endian u32 payload
size -- followed by the payload: the packet's arguments joined by single NUL
bytes.  Only the last argument may contain NUL, since it runs to the end of the
payload; opaque job data is therefore always last (PROTOCOL-NOTES §1).

:data:`SPECS` is the one table from which encoding, decoding, argument
validation and role checks are all driven.  The admin text protocol shares the
job server's port; a message whose first byte is not NUL is a text line
(PROTOCOL-NOTES §3.1), which :class:`Decoder` hands out as :class:`TextLine`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from importlib.machinery import EXTENSION_SUFFIXES
from typing import TYPE_CHECKING, Final, NamedTuple

from .errors import PacketTooLarge, RemoteProtocolError

if TYPE_CHECKING:
    # mypyc's native 64-bit int (see _connection.py); only annotations name it.
    from mypy_extensions import i64

__all__ = [
    "COMPILED",
    "SERVER_VERSION",
    "REQ",
    "RES",
    "HEADER_SIZE",
    "DEFAULT_MAX_PACKET_SIZE",
    "DEFAULT_MAX_LINE_LENGTH",
    "PacketType",
    "Role",
    "PacketSpec",
    "SPECS",
    "SENDABLE",
    "RECEIVABLE",
    "Packet",
    "TextLine",
    "encode_packet",
    "Decoder",
]

COMPILED: Final = __file__.endswith(tuple(EXTENSION_SUFFIXES))
"""Whether this core runs compiled by mypyc (``GEARMAN_PROTO_USE_MYPYC=1 pip install .``)
rather than as Python source."""
SERVER_VERSION: Final = f"gearman-proto 0.1.0 ({'compiled' if COMPILED else 'pure Python'})"
"""What the job server answers the admin ``version`` command with, and starts its log
line with: the version and which build runs."""

REQ = b"\0REQ"
"""Magic of every packet sent to the job server."""
RES = b"\0RES"
"""Magic of every packet sent by the job server."""

HEADER_SIZE: Final = 12
DEFAULT_MAX_PACKET_SIZE = 32 * 1024 * 1024
"""Default limit on one packet's payload: 32 MiB.  Pass 0 for no limit."""
DEFAULT_MAX_LINE_LENGTH = 64 * 1024
"""Default limit on one admin text line, newline included."""

_HEADER: Final = struct.Struct(">4sII")


class PacketType(enum.IntEnum):
    """The 42 packet type numbers of the binary protocol (5 is unused)."""

    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    UNUSED = 5
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    CAN_DO_TIMEOUT = 23
    ALL_YOURS = 24
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34
    SUBMIT_JOB_SCHED = 35
    SUBMIT_JOB_EPOCH = 36
    SUBMIT_REDUCE_JOB = 37
    SUBMIT_REDUCE_JOB_BACKGROUND = 38
    GRAB_JOB_ALL = 39
    JOB_ASSIGN_ALL = 40
    GET_STATUS_UNIQUE = 41
    STATUS_RES_UNIQUE = 42


class Role(enum.Enum):
    """Who is at one end of a connection."""

    CLIENT = "client"
    WORKER = "worker"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class PacketSpec:
    """What one packet type carries and who may send it.

    ``args`` names the arguments in wire order.  ``numeric`` holds the indexes of
    arguments that must be decimal ASCII.  ``senders`` are the roles that may
    send the packet; the job server is the receiver of every packet a client or
    worker sends, and ``receivers`` says which of client/worker may receive
    what the server sends.
    """

    type: PacketType
    args: tuple[str, ...]
    senders: frozenset[Role]
    receivers: frozenset[Role]
    numeric: frozenset[int] = frozenset()

    @property
    def magic(self) -> bytes:
        """``RES`` for packets the server sends, otherwise ``REQ``."""
        return RES if Role.SERVER in self.senders else REQ


_C, _W, _S = Role.CLIENT, Role.WORKER, Role.SERVER
_TO_SERVER = frozenset({_S})
_CW = frozenset({_C, _W})


def _spec(
    t: PacketType,
    args: str,
    senders: frozenset[Role],
    receivers: frozenset[Role],
    numeric: tuple[int, ...] = (),
) -> PacketSpec:
    return PacketSpec(t, tuple(args.split()), senders, receivers, frozenset(numeric))


_submit = "function unique data"
_P = PacketType
# (type, argument names, senders, receivers): the whole wire grammar.  Packets
# that both a worker sends (REQ) and the server forwards to clients (RES) are
# listed with both senders; the connection's role picks the magic.
SPECS: Final[dict[int, PacketSpec]] = {
    s.type: s
    for s in (
        _spec(_P.CAN_DO, "function", frozenset({_W}), _TO_SERVER),
        _spec(_P.CANT_DO, "function", frozenset({_W}), _TO_SERVER),
        _spec(_P.RESET_ABILITIES, "", frozenset({_W}), _TO_SERVER),
        _spec(_P.PRE_SLEEP, "", frozenset({_W}), _TO_SERVER),
        _spec(_P.NOOP, "", frozenset({_S}), frozenset({_W})),
        _spec(_P.SUBMIT_JOB, _submit, frozenset({_C}), _TO_SERVER),
        _spec(_P.JOB_CREATED, "handle", frozenset({_S}), frozenset({_C})),
        _spec(_P.GRAB_JOB, "", frozenset({_W}), _TO_SERVER),
        _spec(_P.NO_JOB, "", frozenset({_S}), frozenset({_W})),
        _spec(_P.JOB_ASSIGN, "handle function data", frozenset({_S}), frozenset({_W})),
        _spec(_P.WORK_STATUS, "handle numerator denominator", frozenset({_W, _S}),
              frozenset({_S, _C}), (1, 2)),
        _spec(_P.WORK_COMPLETE, "handle data", frozenset({_W, _S}), frozenset({_S, _C})),
        _spec(_P.WORK_FAIL, "handle", frozenset({_W, _S}), frozenset({_S, _C})),
        _spec(_P.GET_STATUS, "handle", frozenset({_C}), _TO_SERVER),
        _spec(_P.ECHO_REQ, "data", _CW, _TO_SERVER),
        _spec(_P.ECHO_RES, "data", frozenset({_S}), _CW),
        _spec(_P.SUBMIT_JOB_BG, _submit, frozenset({_C}), _TO_SERVER),
        _spec(_P.ERROR, "code text", frozenset({_S}), _CW),
        _spec(_P.STATUS_RES, "handle known running numerator denominator",
              frozenset({_S}), frozenset({_C}), (1, 2, 3, 4)),
        _spec(_P.SUBMIT_JOB_HIGH, _submit, frozenset({_C}), _TO_SERVER),
        _spec(_P.SET_CLIENT_ID, "client_id", _CW, _TO_SERVER),
        _spec(_P.CAN_DO_TIMEOUT, "function timeout", frozenset({_W}), _TO_SERVER, (1,)),
        _spec(_P.ALL_YOURS, "", frozenset({_W}), _TO_SERVER),
        _spec(_P.WORK_EXCEPTION, "handle data", frozenset({_W, _S}), frozenset({_S, _C})),
        _spec(_P.OPTION_REQ, "name", _CW, _TO_SERVER),
        _spec(_P.OPTION_RES, "name", frozenset({_S}), _CW),
        _spec(_P.WORK_DATA, "handle data", frozenset({_W, _S}), frozenset({_S, _C})),
        _spec(_P.WORK_WARNING, "handle data", frozenset({_W, _S}), frozenset({_S, _C})),
        _spec(_P.GRAB_JOB_UNIQ, "", frozenset({_W}), _TO_SERVER),
        _spec(_P.JOB_ASSIGN_UNIQ, "handle function unique data", frozenset({_S}),
              frozenset({_W})),
        _spec(_P.SUBMIT_JOB_HIGH_BG, _submit, frozenset({_C}), _TO_SERVER),
        _spec(_P.SUBMIT_JOB_LOW, _submit, frozenset({_C}), _TO_SERVER),
        _spec(_P.SUBMIT_JOB_LOW_BG, _submit, frozenset({_C}), _TO_SERVER),
        _spec(_P.SUBMIT_JOB_SCHED, "function unique minute hour day_of_month month "
              "day_of_week data", frozenset({_C}), _TO_SERVER, (2, 3, 4, 5, 6)),
        _spec(_P.SUBMIT_JOB_EPOCH, "function unique epoch data", frozenset({_C}),
              _TO_SERVER, (2,)),
        # gearmand's real layout: four NUL-terminated fields, the fourth an
        # "aggregate" the server ignores (PROTOCOL-NOTES §2).
        _spec(_P.SUBMIT_REDUCE_JOB, "function unique reducer aggregate data",
              frozenset({_C}), _TO_SERVER),
        _spec(_P.SUBMIT_REDUCE_JOB_BACKGROUND, "function unique reducer aggregate data",
              frozenset({_C}), _TO_SERVER),
        _spec(_P.GRAB_JOB_ALL, "", frozenset({_W}), _TO_SERVER),
        _spec(_P.JOB_ASSIGN_ALL, "handle function unique reducer data", frozenset({_S}),
              frozenset({_W})),
        _spec(_P.GET_STATUS_UNIQUE, "unique", frozenset({_C}), _TO_SERVER),
        _spec(_P.STATUS_RES_UNIQUE, "unique known running numerator denominator waiting",
              frozenset({_S}), frozenset({_C}), (1, 2, 3, 4, 5)),
    )
}

# Argument counts and numeric positions as flat tuples indexed by type number:
# the decoder's hot loop reads these instead of attribute lookups.
_NARGS: Final[tuple[int, ...]] = tuple(
    len(SPECS[t].args) if t in SPECS else -1 for t in range(len(PacketType) + 1)
)

# The packet type numbers each role may send and receive, drawn from SPECS.
# Connections check these sets of ints on every packet instead of looking for
# a Role in the spec's frozenset: hashing an Enum member runs Enum.__hash__, a
# Python-level function, which made the two role checks about a tenth of the
# server's time per packet.
SENDABLE: dict[Role, frozenset[int]] = {
    role: frozenset(t for t, s in SPECS.items() if role in s.senders) for role in Role
}
RECEIVABLE: dict[Role, frozenset[int]] = {
    role: frozenset(t for t, s in SPECS.items() if role in s.receivers) for role in Role
}


class Packet(NamedTuple):
    """One decoded binary packet: its magic, type number and raw arguments."""

    magic: bytes
    type: int
    args: tuple[bytes, ...]


class TextLine(NamedTuple):
    """One admin text line, without its ``\\n`` or ``\\r\\n``."""

    line: bytes


def encode_packet(magic: bytes, ptype: int, args: tuple[bytes, ...] | list[bytes]) -> bytes:
    """Frame ``args`` as one packet.

    Only the last argument may contain NUL; the caller (the event layer) has
    already checked that, so this function does no validation of its own.
    """
    payload = b"\0".join(args)
    return _HEADER.pack(magic, ptype, len(payload)) + payload


_MAX_DIGITS: Final = 20
"""Longest number accepted: 2**64 - 1 has 20 digits.  Longer cannot be a Gearman
number, and ``int()`` refuses strings over 4300 digits with ``ValueError``,
which must never escape the decoder."""

# Perl Gearman::Server sends empty numerator/denominator in STATUS_RES and
# STATUS_RES_UNIQUE when no WORK_STATUS was ever reported (PROTOCOL-NOTES §2);
# these (type, argument index) pairs read an empty field as 0.
_EMPTY_IS_ZERO: Final = frozenset({(20, 3), (20, 4), (42, 3), (42, 4)})
# A leniency, as gearmand's: a widely used npm client sends CAN_DO_TIMEOUT's
# timeout as four binary bytes.  gearmand reads the field with strtol(): its
# leading digits, else 0 (no timeout), and carries on.  So do we, for a field
# of at most _MAX_DIGITS bytes (gearmand refuses longer ones too), noting it in
# Decoder.leniencies.
_LENIENT: Final = frozenset({(23, 1)})


def _leading_digits(value: bytes) -> bytes:
    """The decimal digits ``value`` starts with, or ``b"0"``: what strtol() reads."""
    n = 0
    while n < len(value) and 48 <= value[n] <= 57:
        n += 1
    return value[:n] or b"0"


# Per type number, the indexes of its numeric arguments, in order (SPECS'
# numeric sets as tuples, so the decoder's hot path indexes instead of looking up).
_NUMERIC: Final[tuple[tuple[int, ...], ...]] = tuple(
    tuple(sorted(SPECS[t].numeric)) if t in SPECS else () for t in range(len(PacketType) + 1)
)
_unpack_header: Final = _HEADER.unpack_from
# Packet(magic, ptype, args) runs the Python-level __new__ that NamedTuple
# writes; tuple.__new__ builds the very same Packet without that frame.
_new_packet: Final = tuple.__new__


def _is_decimal(value: bytes) -> bool:
    return value.isdigit() and value.isascii() and len(value) <= _MAX_DIGITS


def frame(buf: bytes | bytearray, pos: int, magic: bytes, limit: int) -> tuple[int, int]:
    """Read the header of the binary packet at ``buf[pos]``: its ``(type, end)``.

    ``end`` (where the next message starts) is 0 while the packet is not all
    in ``buf``.  Raises :class:`RemoteProtocolError` on a magic other than
    ``magic`` (checked on as many bytes as there are, so a garbage stream fails
    fast), an unknown type, or a payload over ``limit`` bytes (0 = no limit),
    refused from the header alone.  The one framing function of the package:
    :class:`Decoder` and ``Connection.events()`` both read through it.
    """
    avail = len(buf) - pos
    if avail < HEADER_SIZE:
        if buf[pos:pos + min(avail, 4)] != magic[:min(avail, 4)]:
            _bad_magic(bytes(buf[pos:pos + 4]), magic)
        return 0, 0
    # Typed, so that compiled code unboxes them once and compares natively.
    pmagic: bytes
    ptype: int
    size: int
    pmagic, ptype, size = _unpack_header(buf, pos)
    if pmagic != magic:
        _bad_magic(pmagic, magic)
    if ptype not in SPECS:
        raise RemoteProtocolError(
            f"unknown packet type {ptype}",
            error_code=b"INVALID_COMMAND",
            error_text=b"Invalid command expected",
        )
    if limit and size > limit:
        raise PacketTooLarge(
            f"{PacketType(ptype).name} packet of {size} bytes exceeds the "
            f"maximum packet size of {limit} bytes",
            error_code=b"ARGUMENT_TOO_LARGE",
            error_text=b"Packet too large",
        )
    end = pos + size + 12  # HEADER_SIZE, written out: this runs for every packet
    return ptype, (end if end <= len(buf) else 0)


def frame_plain(buf: bytes, pos: i64, magic: bytes, limit: i64) -> tuple[int, int]:
    """:func:`frame` for a fast path, read byte by byte (no ``struct`` call, which
    compiled code makes as a generic call): the same ``(type, end)`` for a whole
    header with ``magic``, a type below 256 and a size within ``limit``; for
    anything else ``(-1, 0)``, and :func:`frame` says what it is (or raises).
    The type is not checked against :data:`SPECS`: the caller looks it up.
    """
    n: i64 = len(buf)
    if n - pos < 12:  # HEADER_SIZE
        return -1, 0
    if not COMPILED:
        # Interpreted, the one struct call is cheaper than a dozen byte reads.
        pmagic: bytes
        ptype: int
        psize: int
        pmagic, ptype, psize = _unpack_header(buf, pos)
        if pmagic != magic or ptype > 255 or (limit and psize > limit):
            return -1, 0
        pend = pos + psize + 12
        return ptype, (pend if pend <= n else 0)
    # Compiled: in native ints (each byte one load, the arithmetic unboxed and with
    # no overflow checks; with plain ints each shift and add was a call), a type
    # above 255 told by its three high bytes.
    if (buf[pos] != magic[0] or buf[pos + 1] != magic[1] or buf[pos + 2] != magic[2]
            or buf[pos + 3] != magic[3] or buf[pos + 4] or buf[pos + 5] or buf[pos + 6]):
        return -1, 0
    kind: i64 = buf[pos + 7]
    b8: i64 = buf[pos + 8]
    b9: i64 = buf[pos + 9]
    b10: i64 = buf[pos + 10]
    b11: i64 = buf[pos + 11]
    size: i64 = (b8 << 24) | (b9 << 16) | (b10 << 8) | b11
    if limit and size > limit:
        return -1, 0
    end: i64 = pos + size + 12
    return kind, (end if end <= n else 0)


def split_args(ptype: int, buf: bytes | bytearray, pos: int, end: int,
               leniencies: list[str] | None = None) -> tuple[bytes, ...]:
    """The checked arguments of the whole packet of type ``ptype`` at ``buf[pos:end]``.

    Raises :class:`RemoteProtocolError` on a wrong argument count or a numeric
    argument that is not decimal ASCII, except where gearmand is lenient
    (:data:`_LENIENT`): given a ``leniencies`` list, such a field is read as
    gearmand reads it and a note for the log is appended.
    """
    nargs = _NARGS[ptype]
    if nargs == 0:
        if end - pos != HEADER_SIZE:
            raise RemoteProtocolError(
                f"{PacketType(ptype).name} takes no arguments but carried "
                f"{end - pos - HEADER_SIZE} payload bytes",
                error_code=b"INVALID_ARGUMENTS",
            )
        return ()
    payload = buf[pos + HEADER_SIZE:end]
    if type(payload) is not bytes:  # sliced from a bytearray
        payload = bytes(payload)
    args = tuple(payload.split(b"\0", nargs - 1)) if nargs > 1 else (payload,)
    if len(args) != nargs:
        raise _arg_count_error(ptype, len(args))
    for i in _NUMERIC[ptype]:
        if not _is_decimal(args[i]) and (args[i] or (ptype, i) not in _EMPTY_IS_ZERO):
            spec = SPECS[ptype]
            if (leniencies is not None and (ptype, i) in _LENIENT
                    and len(args[i]) <= _MAX_DIGITS):
                value = _leading_digits(args[i])
                leniencies.append(
                    f"{spec.type.name} argument {spec.args[i]!r} is not decimal "
                    f"({args[i]!r}): read as {int(value)}, as gearmand does")
                args = (*args[:i], value, *args[i + 1:])
                continue
            raise RemoteProtocolError(
                f"{spec.type.name} argument {spec.args[i]!r} must be decimal "
                f"ASCII of at most {_MAX_DIGITS} digits, got {args[i][:32]!r}",
                error_code=b"INVALID_ARGUMENTS",
            )
    return args


def _arg_count_error(ptype: int, count: int) -> RemoteProtocolError:
    spec = SPECS[ptype]
    return RemoteProtocolError(
        f"{spec.type.name} needs {len(spec.args)} arguments "
        f"({', '.join(spec.args)}) but carried {count}",
        error_code=b"INVALID_ARGUMENTS",
    )


def _bad_magic(got: bytes, magic: bytes) -> None:
    if got == (RES if magic == REQ else REQ):
        raise RemoteProtocolError(
            f"expected {magic!r} magic, got {got!r}",
            error_code=b"INVALID_MAGIC",
            error_text=(b"Request magic expected" if magic == REQ
                        else b"Response magic expected"),
        )
    raise RemoteProtocolError(
        f"bad packet magic {got!r}",
        error_code=b"INVALID_MAGIC",
        error_text=b"Invalid magic",
    )


_JOIN_LIMIT: Final = 4096
"""Up to this many bytes, a message cut by the end of a read is joined to the next read
as ``bytes``; beyond, gathered in a ``bytearray`` (see :meth:`Decoder.feed`)."""


class Decoder:
    """Incremental decoder of a Gearman byte stream.

    Feed bytes with :meth:`feed` in any split; :meth:`next` returns the next
    complete :class:`Packet` or :class:`TextLine`, or ``None`` when more bytes
    are needed.  Feeding the stream whole or one byte at a time yields the
    same results.

    ``magic`` is the magic every binary packet must carry (``REQ`` on the
    server side, ``RES`` on the client/worker side).  ``allow_text`` lets a
    message whose first byte is not NUL be read as an admin text line; the
    decision is taken per message, as gearmand does.  A payload larger than
    ``max_packet_size`` (0 = unlimited) is refused from its header alone.
    """

    __slots__ = (
        "_buf",
        "_pos",
        "_scan",
        "allow_text",
        "leniencies",
        "magic",
        "max_line_length",
        "max_packet_size",
    )

    def __init__(
        self,
        magic: bytes,
        *,
        allow_text: bool = False,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
    ) -> None:
        if magic not in (REQ, RES):
            raise ValueError(f"magic must be REQ or RES, not {magic!r}")
        if max_packet_size < 0:
            raise ValueError("max_packet_size must be >= 0 (0 means unlimited)")
        # The unread bytes start at _pos.  Usually the bytes object last fed,
        # kept as it is; a bytearray only while a message spans several feeds.
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._scan = 0  # where to resume looking for a newline in a text line
        self.magic = magic
        self.allow_text = allow_text
        self.max_packet_size = max_packet_size
        self.max_line_length = max_line_length
        self.leniencies: list[str] = []
        """What was accepted against the letter of the protocol (see _ANY_IS_ZERO), for
        the adapter to log; it takes them out."""

    def feed(self, data: bytes) -> None:
        """Append received bytes to the buffer."""
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            # Everything before was consumed (the usual case: reads end at a
            # message boundary): decode straight from the bytes given, with no
            # copy into a buffer, and slices of it are already bytes.
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
            self._scan = 0
            return
        self._scan = max(0, self._scan - pos)
        self._pos = 0
        if len(buf) - pos <= _JOIN_LIMIT:
            # A message spans reads, and only a small piece of it was waiting:
            # join it to the new read as bytes.  Decoding goes on from bytes,
            # whose slices are the arguments as they are, with no second copy.
            # (The limit bounds what a peer trickling bytes makes us copy.)
            rest = buf[pos:]
            self._buf = (rest if type(rest) is bytes else bytes(rest)) + data
            return
        # A large message is arriving in pieces: gather in a bytearray, which
        # grows in amortised O(1), so a large packet arriving in many pieces
        # is copied once, where joining bytes would copy it again for every
        # piece.  Consumed bytes are dropped first, so a stream that always
        # ends mid-packet cannot make the buffer grow without bound.
        if isinstance(buf, bytearray):
            if pos:
                del buf[:pos]
        else:
            buf = bytearray(memoryview(buf)[pos:])
        buf += data
        self._buf = buf

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a packet or line."""
        return len(self._buf) - self._pos

    def next(self) -> Packet | TextLine | None:
        """Return the next complete message, or ``None`` if more bytes are needed.

        Raises :class:`RemoteProtocolError` (with gearmand's ERROR code) on bad
        magic, an unknown type, a wrong argument count, a non-numeric numeric
        field, or an oversized packet or line.  After an error the decoder's
        state is undefined; the connection owning it must stop using it.
        """
        buf = self._buf
        pos = self._pos
        if len(buf) <= pos:
            return None
        if buf[pos] != 0:
            return self._next_line(buf, pos)
        ptype, end = frame(buf, pos, self.magic, self.max_packet_size)
        if not end:
            return None
        self._pos = end
        return _new_packet(Packet, (self.magic, ptype,
                                    split_args(ptype, buf, pos, end, self.leniencies)))

    def _next_line(self, buf: bytes | bytearray, pos: int) -> TextLine | None:
        if not self.allow_text:
            raise RemoteProtocolError(
                f"expected a binary packet (first byte NUL), got {bytes(buf[pos:pos + 16])!r}",
                error_code=b"INVALID_MAGIC",
                error_text=b"Invalid magic",
            )
        nl = buf.find(b"\n", max(pos, self._scan))
        if nl < 0:
            if self.max_line_length and len(buf) - pos > self.max_line_length:
                raise PacketTooLarge(
                    f"admin line longer than {self.max_line_length} bytes without a newline",
                    error_code=b"ARGUMENT_TOO_LARGE",
                    error_text=b"Line too long",
                )
            self._scan = len(buf)
            return None
        if self.max_line_length and nl + 1 - pos > self.max_line_length:
            raise PacketTooLarge(
                f"admin line of {nl + 1 - pos} bytes exceeds {self.max_line_length}",
                error_code=b"ARGUMENT_TOO_LARGE",
                error_text=b"Line too long",
            )
        end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
        line = bytes(buf[pos:end])
        self._pos = nl + 1
        self._scan = nl + 1
        return TextLine(line)
