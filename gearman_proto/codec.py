"""Packets to events and events to packets, generated from one table.

:data:`~gearman_proto.packets.SPECS` names every packet's arguments in wire
order; an event's fields carry the same names.  So most packets need nothing
more: the event class whose ``packet_type`` is the packet's type, its fields
read from (or written to) the arguments of the same name.  The few packets that
are not like that are in :data:`_IRREGULAR`: several packet types that build one
class (SUBMIT_JOB's six, JOB_ASSIGN's three, SUBMIT_REDUCE_JOB's two), with the
fields their type fixes, and the one argument gearmand sends malformed.

How a field is carried follows from its type: ``int`` as decimal ASCII (never
negative), ``bool`` as ``1``/``0``, ``bytes | None`` as bytes with ``None``
sent empty.  From that the converters below are written out as Python source
once, at import, the way :mod:`dataclasses` writes ``__init__``: each is one
expression with no loop or lookup by name left in it.

Connections read the common packets through the hand-written decoders of
:data:`HOT_DECODERS` instead (one call and no argument tuple per packet); the
property test in ``tests/test_codec.py`` holds them to the generated ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from operator import attrgetter
from typing import Any, Final

from .errors import LocalProtocolError
from .events import (
    _PACKET_TYPES,
    _SUBMIT_TYPES,
    Event,
    JobAssign,
    JobCreated,
    SubmitJob,
    SubmitReduceJob,
    WorkComplete,
    WorkData,
    WorkFail,
)
from .packets import _HEADER, COMPILED, SPECS, PacketType, encode_packet

__all__ = ["event_to_packet", "packet_to_event", "wire_encoders", "WireEncoder", "assign_packet",
           "packet_of_one", "packet_of_two"]

_P = PacketType


def _strip_nul(handle: bytes) -> bytes:
    # gearmand 1.1.20 turns WORK_EXCEPTION into WORK_FAIL for a client without
    # the exceptions option by forwarding the handle argument with its NUL
    # terminator ("H:host:2\0"); a handle never holds NUL, so drop it.
    return handle[:-1] if handle[-1:] == b"\0" else handle


# The irregular packets: type -> (event class, the fields the type fixes,
# per argument a function through which it is read).  Every other type builds
# the class whose packet_type it is, every argument into the field of its name.
_IRREGULAR: dict[int, tuple[type[Event], dict[str, Any], dict[str, Callable[[bytes], Any]]]] = {
    **{t: (SubmitJob, {"priority": p, "background": bg}, {})
       for (p, bg), t in _SUBMIT_TYPES.items()},
    _P.SUBMIT_REDUCE_JOB: (SubmitReduceJob, {"background": False}, {}),
    _P.SUBMIT_REDUCE_JOB_BACKGROUND: (SubmitReduceJob, {"background": True}, {}),
    _P.JOB_ASSIGN: (JobAssign, {}, {}),
    _P.JOB_ASSIGN_UNIQ: (JobAssign, {}, {}),
    _P.JOB_ASSIGN_ALL: (JobAssign, {}, {}),
    _P.WORK_FAIL: (WorkFail, {}, {"handle": _strip_nul}),
}

_CLASS_OF: dict[int, type[Event]] = {
    **{int(t): cls for cls, t in _PACKET_TYPES.items()},
    **{t: entry[0] for t, entry in _IRREGULAR.items()},
}
"""The event class each packet type decodes to."""


def _fields(cls: type[Event]) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(cls)  # type: ignore[arg-type]  # every event is a dataclass


def _kind(f: dataclasses.Field[Any]) -> str:
    """How a field travels: ``"int"``, ``"bool"``, ``"optional"`` or ``"bytes"``."""
    name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if "None" in name:
        return "optional"
    if name in ("int", "bool"):
        return name
    return "bytes"


def _compile(source: str, namespace: dict[str, Any]) -> Any:
    exec(f"_f = {source}", namespace)
    return namespace["_f"]


# -- decoding ---------------------------------------------------------------------


def _decoder_source(ptype: int) -> tuple[str, dict[str, Any]]:
    cls = _CLASS_OF[ptype]
    fixed, readers = ({}, {}) if ptype not in _IRREGULAR else _IRREGULAR[ptype][1:]
    names = SPECS[ptype].args
    ns: dict[str, Any] = {"_cls": cls}
    values = []
    for f in _fields(cls):
        if f.name in names:
            arg = f"a[{names.index(f.name)}]"
            if f.name in readers:
                ns[f"_read_{f.name}"] = readers[f.name]
                arg = f"_read_{f.name}({arg})"
            kind = _kind(f)
            if kind == "int":
                # The decoder let an empty number through only where it means 0.
                arg = f"int({arg} or 0)"
            elif kind == "bool":
                arg = f'{arg} != b"0"'
            values.append((f.name, arg))
        elif f.name in fixed:
            ns[f"_fixed_{f.name}"] = fixed[f.name]
            values.append((f.name, f"_fixed_{f.name}"))
        else:
            values.append((f.name, ""))  # left to its default
    # Positional up to the first field left out, by keyword after it.
    call, by_name = [], False
    for name, value in values:
        by_name = by_name or not value
        if value:
            call.append(f"{name}={value}" if by_name else value)
    return f"lambda a: _cls({', '.join(call)})", ns


def _decoder(ptype: int) -> Callable[[Sequence[bytes]], Event]:
    source, ns = _decoder_source(ptype)
    return _compile(source, ns)  # type: ignore[no-any-return]


DECODERS: Final[dict[int, Callable[[Sequence[bytes]], Event]]] = {
    t: _decoder(t) for t in SPECS
}
"""Packet type -> the event, from its already split and checked arguments."""


def packet_to_event(ptype: int, args: tuple[bytes, ...]) -> Event:
    """Build the event for a decoded packet (type and argument count already checked)."""
    return DECODERS[ptype](args)


# The common packets, by hand: each takes the whole payload and splits it
# itself, and raises ValueError when the argument count is wrong, for the
# caller to read the packet the long way, which raises what is wrong.


def _hot_job_assign_uniq(payload: bytes) -> Event:
    handle, function, unique, data = payload.split(b"\0", 3)
    return JobAssign(handle, function, data, unique)


def _hot_job_assign(payload: bytes) -> Event:
    handle, function, data = payload.split(b"\0", 2)
    return JobAssign(handle, function, data)


def _hot_work_complete(payload: bytes) -> Event:
    handle, data = payload.split(b"\0", 1)
    return WorkComplete(handle, data)


def _hot_work_data(payload: bytes) -> Event:
    handle, data = payload.split(b"\0", 1)
    return WorkData(handle, data)


def _hot_job_created(payload: bytes) -> Event:
    return JobCreated(payload)


def _hot_submit(priority: Any, background: bool) -> Callable[[bytes], Event]:
    def submit(payload: bytes) -> Event:
        function, unique, data = payload.split(b"\0", 2)
        return SubmitJob(function, data, unique, priority, background)
    return submit


def _hot_empty(cls: type[Event]) -> Callable[[bytes], Event]:
    def empty(payload: bytes) -> Event:
        if payload:
            raise ValueError("a packet with no arguments carried a payload")
        return cls()
    return empty


HOT_DECODERS: Final[dict[int, Callable[[bytes], Event]]] = {
    # The packets with no arguments: grabs, sleep and wake-up, NO_JOB.
    **{int(t): _hot_empty(cls) for cls, t in _PACKET_TYPES.items() if not SPECS[t].args},
    _P.JOB_ASSIGN_UNIQ: _hot_job_assign_uniq,
    _P.JOB_ASSIGN: _hot_job_assign,
    _P.WORK_COMPLETE: _hot_work_complete,
    _P.WORK_DATA: _hot_work_data,
    _P.JOB_CREATED: _hot_job_created,
    **{t: _hot_submit(p, bg) for (p, bg), t in _SUBMIT_TYPES.items()},
}
"""Packet type -> the event from the whole payload, for the packets that are most of
the traffic, with no number among their arguments.  They are what
:data:`DECODERS` builds, faster; ``tests/test_codec.py`` checks that on
arbitrary payloads."""


# -- encoding ---------------------------------------------------------------------


def _num(event: Event, value: int) -> bytes:
    if value < 0:
        raise LocalProtocolError(f"{type(event).__name__}: numbers must be >= 0, got {value}")
    return b"%d" % value


def _args_source(ptype: int) -> str:
    """An expression of ``e``: the arguments of packet ``ptype`` from event ``e``."""
    kinds = {f.name: _kind(f) for f in _fields(_CLASS_OF[ptype])}
    out = []
    for name in SPECS[ptype].args:
        kind = kinds[name]
        if kind == "int":
            out.append(f"_num(e, e.{name})")
        elif kind == "bool":
            out.append(f'(b"1" if e.{name} else b"0")')
        elif kind == "optional":
            out.append(f'(e.{name} or b"")')
        else:
            out.append(f"e.{name}")
    return f"({''.join(a + ', ' for a in out)})"


_ARGS: dict[int, Callable[[Event], tuple[bytes, ...]]] = {
    t: _compile(f"lambda e: {_args_source(t)}", {"_num": _num}) for t in SPECS
}
"""Packet type -> its arguments from an event of its class."""


def _encoder(cls: type[Event]) -> Callable[[Event], tuple[int, tuple[bytes, ...]]]:
    fixed = [int(t) for t, c in _CLASS_OF.items() if c is cls]
    if len(fixed) == 1:
        ptype = fixed[0]
        args = _ARGS[ptype]
        return lambda e: (ptype, args(e))
    # Several types build this class: the event's packet_type says which.
    table = _ARGS
    return lambda e: (e.packet_type, table[e.packet_type](e))


_ENCODERS: dict[type, Callable[[Event], tuple[int, tuple[bytes, ...]]]] = {
    cls: _encoder(cls) for cls in set(_CLASS_OF.values())
}


def event_to_packet(event: Event) -> tuple[int, tuple[bytes, ...]]:
    """Return ``(packet type, arguments)`` for a wire event.

    Raises :class:`LocalProtocolError` if an argument other than the last
    contains NUL, or a number is negative, since either would change what the
    receiver reads.
    """
    try:
        enc = _ENCODERS[type(event)]
    except KeyError:
        raise LocalProtocolError(
            f"{type(event).__name__} is not a binary protocol message"
        ) from None
    ptype, args = enc(event)
    # One C-level search over the leading arguments joined, rather than a
    # Python loop over them: this runs for every packet sent.
    if len(args) > 1 and 0 in b"".join(args[:-1]):
        arg = next(a for a in args[:-1] if 0 in a)
        raise LocalProtocolError(
            f"{type(event).__name__}: only the last argument may contain NUL, "
            f"got {arg[:32]!r}"
        )
    return ptype, args


# -- straight to bytes ------------------------------------------------------------------

WireEncoder = Callable[[Any], "bytes | None"]
"""Bytes of one event, or ``None`` to send it the long way (which raises what is wrong)."""

_NUL: Final = b"\0"
_pack_header: Final = _HEADER.pack
# NUL is looked for as ``0 in arg``: an int needle is a memchr, where ``b"\0" in arg``
# goes through the buffer protocol and a substring search (~0.35 µs against ~0.02).


def _wire_fields(ptype: int, names: tuple[str, ...], magic: bytes) -> WireEncoder:
    """The wire encoder of an event whose arguments are its fields ``names``."""
    if not names:
        packet = _pack_header(magic, ptype, 0)
        return lambda e: packet
    if len(names) == 1:
        get_one: Callable[[Any], bytes] = attrgetter(names[0])

        def one(e: Any) -> bytes:
            return packet_of_one(magic, ptype, get_one(e))
        return one
    if len(names) == 2:
        # WORK_COMPLETE, WORK_DATA, WORK_WARNING, WORK_EXCEPTION: a worker's
        # reports, the result once per job.
        first, second = names

        def two(e: Any) -> bytes | None:
            return packet_of_two(magic, ptype, getattr(e, first), getattr(e, second))
        return two
    get: Callable[[Any], tuple[bytes, ...]] = attrgetter(*names)

    def many(e: Any) -> bytes | None:
        args = get(e)
        if 0 in b"".join(args[:-1]):
            return None
        return encode_packet(magic, ptype, args)
    return many


_JOB_ASSIGN: Final = int(_P.JOB_ASSIGN)
_JOB_ASSIGN_UNIQ: Final = int(_P.JOB_ASSIGN_UNIQ)
# Compiled, the packets below are built by ``bytes % tuple`` of ``%b`` only, which
# mypyc makes one allocation of the parts (``CPyBytes_Build``), and the header's
# numbers by :func:`_word`: ``struct.pack`` and ``b"".join`` are generic calls
# there.  Interpreted, ``struct`` and ``join`` are the cheaper, so the pure build
# keeps them.  ``tests/test_codec.py`` holds the two forms to each other.

_WORDS: Final = 1024
# The four big-endian bytes of every number below _WORDS, made once (~50 KiB):
# compiled, ``int.to_bytes(4, "big")`` is ~250 instructions (a generic
# conversion and a new bytes object) and an index into this tuple ~15; the
# header's type and the sizes of the server's usual packets are all below it.
_WORD: Final[tuple[bytes, ...]] = tuple(n.to_bytes(4, "big") for n in range(_WORDS))


def _word(n: int) -> bytes:
    """``n.to_bytes(4, "big")``, from :data:`_WORD` when it is there."""
    if 0 <= n < _WORDS:
        return _WORD[n]
    return n.to_bytes(4, "big")


def packet_of_one(magic: bytes, ptype: int, arg: bytes) -> bytes:
    """The bytes of a packet with one argument (which may hold NUL: it is the last)."""
    if COMPILED:
        return b"%b%b%b%b" % (magic, _word(ptype), _word(len(arg)), arg)
    return _pack_header(magic, ptype, len(arg)) + arg


def packet_of_two(magic: bytes, ptype: int, a: bytes, b: bytes) -> bytes | None:
    """The bytes of a packet with two arguments; ``None`` if ``a`` holds NUL (the long
    way says why)."""
    if 0 in a:
        return None
    if COMPILED:
        return b"%b%b%b%b\0%b" % (magic, _word(ptype), _word(len(a) + len(b) + 1), a, b)
    return b"".join((_pack_header(magic, ptype, len(a) + len(b) + 1), a, _NUL, b))


def assign_packet(magic: bytes, h: bytes, f: bytes, u: bytes | None, d: bytes) -> bytes | None:
    """JOB_ASSIGN (``u`` None) or JOB_ASSIGN_UNIQ of handle, function, unique and data;
    ``None`` if an argument but the last holds NUL (the long way says why).

    What the JobAssign wire encoder writes, and the server's fast path too.
    """
    if u is None:
        if 0 in h or 0 in f:
            return None
        size = len(h) + len(f) + len(d) + 2
        if COMPILED:  # JOB_ASSIGN is type 11
            return b"%b\0\0\0\x0b%b%b\0%b\0%b" % (magic, _word(size), h, f, d)
        return b"".join((_pack_header(magic, _JOB_ASSIGN, size), h, _NUL, f, _NUL, d))
    # An empty unique (the usual one) needs no search: compiled, each `in` is a
    # generic call (~110 instructions).
    if 0 in h or 0 in f or (u and 0 in u):
        return None
    size = len(h) + len(f) + len(u) + len(d) + 3
    if COMPILED:  # JOB_ASSIGN_UNIQ is type 31
        return b"%b\0\0\0\x1f%b%b\0%b\0%b\0%b" % (magic, _word(size), h, f, u, d)
    return b"".join((_pack_header(magic, _JOB_ASSIGN_UNIQ, size), h, _NUL, f, _NUL, u, _NUL, d))


def _wire_assign(magic: bytes) -> WireEncoder:
    def assign(e: JobAssign) -> bytes | None:
        if e.reducer is not None:
            return None
        return assign_packet(magic, e.handle, e.function, e.unique, e.data)
    return assign


def _wire_submit(magic: bytes) -> WireEncoder:
    types = _SUBMIT_TYPES

    def submit(e: SubmitJob) -> bytes | None:
        f, u, d = e.function, e.unique, e.data
        ptype = types.get((e.priority, e.background))
        if ptype is None or 0 in f or 0 in u:
            return None
        return b"".join((_pack_header(magic, ptype, len(f) + len(u) + len(d) + 2),
                         f, _NUL, u, _NUL, d))
    return submit


def wire_encoders(magic: bytes, sendable: Collection[int]) -> dict[type, WireEncoder]:
    """Per event class, a function from event to packet bytes with ``magic``, for the
    common messages whose type is in ``sendable``.

    Connections try these first: one call where :func:`event_to_packet` and
    framing take several.  Messages with numbers or flags among their
    arguments are left out (the long way converts and checks them), and an
    encoder returns ``None`` whenever an argument would need a refusal, so
    that every error is still raised in one place.
    """
    table: dict[type, WireEncoder] = {}
    for cls, ptype in _PACKET_TYPES.items():
        kinds = {_kind(f) for f in _fields(cls) if f.name in SPECS[ptype].args}
        if ptype in sendable and kinds <= {"bytes"}:
            table[cls] = _wire_fields(ptype, SPECS[ptype].args, magic)
    if _P.JOB_ASSIGN_UNIQ in sendable:
        table[JobAssign] = _wire_assign(magic)
    if _P.SUBMIT_JOB in sendable:
        table[SubmitJob] = _wire_submit(magic)
    return table
