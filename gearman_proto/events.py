"""One frozen dataclass per Gearman protocol message.

Events are direction-neutral: ``WorkComplete(handle, data)`` is the same object
whether a worker sends it to the job server (``\\0REQ``) or the server forwards
it to a client (``\\0RES``).  The connection that sends an event knows its role
and so the magic; it also refuses events its role may not send.

Where several packet types differ only in a flag, one event stands for them:
:class:`SubmitJob` covers the six SUBMIT_JOB{,_BG,_HIGH,_HIGH_BG,_LOW,_LOW_BG}
packets through ``priority`` and ``background``; :class:`JobAssign` covers
JOB_ASSIGN, JOB_ASSIGN_UNIQ and JOB_ASSIGN_ALL through whether ``unique`` and
``reducer`` are set.  :func:`event_to_packet` and :func:`packet_to_event`
convert both ways, driven by :data:`gearman_proto.packets.SPECS`.

Replies that answer a request (JOB_CREATED, STATUS_RES, STATUS_RES_UNIQUE,
ECHO_RES, OPTION_RES and ERROR) carry a ``request`` field that the client or
worker connection fills in with the request they answer.  It is not part of
the wire format and takes no part in equality.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, ClassVar

from .errors import LocalProtocolError
from .packets import _HEADER, PacketType, encode_packet

__all__ = [
    "Priority",
    "Event",
    "CanDo",
    "CantDo",
    "ResetAbilities",
    "PreSleep",
    "Noop",
    "SubmitJob",
    "SubmitJobSched",
    "SubmitJobEpoch",
    "SubmitReduceJob",
    "JobCreated",
    "GrabJob",
    "GrabJobUniq",
    "GrabJobAll",
    "NoJob",
    "JobAssign",
    "WorkStatus",
    "WorkComplete",
    "WorkFail",
    "WorkException",
    "WorkData",
    "WorkWarning",
    "GetStatus",
    "GetStatusUnique",
    "StatusRes",
    "StatusResUnique",
    "EchoReq",
    "EchoRes",
    "Error",
    "SetClientId",
    "CanDoTimeout",
    "AllYours",
    "OptionReq",
    "OptionRes",
    "AdminCommand",
    "AdminReply",
    "ConnectionClosed",
    "Submission",
    "WorkUpdate",
    "event_to_packet",
    "packet_to_event",
]


class Priority(enum.IntEnum):
    """Job priority.  Lower value runs first, as gearmand indexes them."""

    HIGH = 0
    NORMAL = 1
    LOW = 2


class Event:
    """Base class of every protocol event."""

    __slots__ = ()
    packet_type: ClassVar[PacketType]


# -- worker → server: abilities and the sleep/wake cycle ---------------------


@dataclass(frozen=True, slots=True)
class CanDo(Event):
    """CAN_DO: the worker can run ``function``."""

    function: bytes
    packet_type: ClassVar[PacketType] = PacketType.CAN_DO


@dataclass(frozen=True, slots=True)
class CantDo(Event):
    """CANT_DO: the worker no longer runs ``function``."""

    function: bytes
    packet_type: ClassVar[PacketType] = PacketType.CANT_DO


@dataclass(frozen=True, slots=True)
class ResetAbilities(Event):
    """RESET_ABILITIES: forget every function this worker registered."""

    packet_type: ClassVar[PacketType] = PacketType.RESET_ABILITIES


@dataclass(frozen=True, slots=True)
class PreSleep(Event):
    """PRE_SLEEP: the worker is about to sleep; wake it with NOOP when work arrives."""

    packet_type: ClassVar[PacketType] = PacketType.PRE_SLEEP


@dataclass(frozen=True, slots=True)
class Noop(Event):
    """NOOP: wake up, there may be work (it carries no job: GRAB again)."""

    packet_type: ClassVar[PacketType] = PacketType.NOOP


@dataclass(frozen=True, slots=True)
class CanDoTimeout(Event):
    """CAN_DO_TIMEOUT: like CAN_DO, and a job running longer than ``timeout`` ms is requeued."""

    function: bytes
    timeout: int
    packet_type: ClassVar[PacketType] = PacketType.CAN_DO_TIMEOUT


@dataclass(frozen=True, slots=True)
class SetClientId(Event):
    """SET_CLIENT_ID: a name for this connection, shown by the admin ``workers`` command."""

    client_id: bytes
    packet_type: ClassVar[PacketType] = PacketType.SET_CLIENT_ID


@dataclass(frozen=True, slots=True)
class AllYours(Event):
    """ALL_YOURS: reserved by the protocol, never implemented by gearmand."""

    packet_type: ClassVar[PacketType] = PacketType.ALL_YOURS


# -- submissions --------------------------------------------------------------

_SUBMIT_TYPES: dict[tuple[Priority, bool], PacketType] = {
    (Priority.NORMAL, False): PacketType.SUBMIT_JOB,
    (Priority.NORMAL, True): PacketType.SUBMIT_JOB_BG,
    (Priority.HIGH, False): PacketType.SUBMIT_JOB_HIGH,
    (Priority.HIGH, True): PacketType.SUBMIT_JOB_HIGH_BG,
    (Priority.LOW, False): PacketType.SUBMIT_JOB_LOW,
    (Priority.LOW, True): PacketType.SUBMIT_JOB_LOW_BG,
}
_SUBMIT_FLAGS = {t: k for k, t in _SUBMIT_TYPES.items()}


@dataclass(frozen=True, slots=True)
class SubmitJob(Event):
    """SUBMIT_JOB and its _BG/_HIGH/_HIGH_BG/_LOW/_LOW_BG variants.

    ``unique`` empty means never coalesced; ``b"-"`` means "use the data as the
    unique key" (PROTOCOL-NOTES §4.3).  A background job's submitter only gets
    the handle; a foreground submitter receives the job's updates and result.
    """

    function: bytes
    data: bytes = b""
    unique: bytes = b""
    priority: Priority = Priority.NORMAL
    background: bool = False

    @property
    def packet_type(self) -> PacketType:  # type: ignore[override]
        return _SUBMIT_TYPES[(self.priority, self.background)]


@dataclass(frozen=True, slots=True)
class SubmitJobEpoch(Event):
    """SUBMIT_JOB_EPOCH: a background job that may not run before ``epoch`` (Unix seconds)."""

    function: bytes
    epoch: int
    data: bytes = b""
    unique: bytes = b""
    packet_type: ClassVar[PacketType] = PacketType.SUBMIT_JOB_EPOCH

    priority: ClassVar[Priority] = Priority.NORMAL
    background: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class SubmitJobSched(Event):
    """SUBMIT_JOB_SCHED: a cron-like background job; gearmand refuses it and so do we."""

    function: bytes
    unique: bytes
    minute: int
    hour: int
    day_of_month: int
    month: int
    day_of_week: int
    data: bytes = b""
    packet_type: ClassVar[PacketType] = PacketType.SUBMIT_JOB_SCHED

    priority: ClassVar[Priority] = Priority.NORMAL
    background: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class SubmitReduceJob(Event):
    """SUBMIT_REDUCE_JOB(_BACKGROUND): a map/reduce job, always NORMAL priority.

    Sent in gearmand's four-field layout; ``aggregate`` is the fourth field,
    empty from libgearman and ignored by gearmand.
    """

    function: bytes
    reducer: bytes
    data: bytes = b""
    unique: bytes = b""
    background: bool = False
    aggregate: bytes = b""

    priority: ClassVar[Priority] = Priority.NORMAL

    @property
    def packet_type(self) -> PacketType:  # type: ignore[override]
        return (PacketType.SUBMIT_REDUCE_JOB_BACKGROUND if self.background
                else PacketType.SUBMIT_REDUCE_JOB)


Submission = SubmitJob | SubmitJobEpoch | SubmitJobSched | SubmitReduceJob
"""Any event that asks the job server to create a job."""


@dataclass(frozen=True, slots=True)
class JobCreated(Event):
    """JOB_CREATED: the server accepted a submission and named it ``handle``."""

    handle: bytes
    request: Submission | None = field(default=None, compare=False, repr=False)
    packet_type: ClassVar[PacketType] = PacketType.JOB_CREATED


# -- grabbing jobs -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrabJob(Event):
    """GRAB_JOB: give me a job; answered by JOB_ASSIGN or NO_JOB."""

    packet_type: ClassVar[PacketType] = PacketType.GRAB_JOB


@dataclass(frozen=True, slots=True)
class GrabJobUniq(Event):
    """GRAB_JOB_UNIQ: as GRAB_JOB, answered by JOB_ASSIGN_UNIQ (with the unique id)."""

    packet_type: ClassVar[PacketType] = PacketType.GRAB_JOB_UNIQ


@dataclass(frozen=True, slots=True)
class GrabJobAll(Event):
    """GRAB_JOB_ALL: answered by JOB_ASSIGN_ALL for reduce jobs, JOB_ASSIGN_UNIQ otherwise."""

    packet_type: ClassVar[PacketType] = PacketType.GRAB_JOB_ALL


@dataclass(frozen=True, slots=True)
class NoJob(Event):
    """NO_JOB: nothing to do for this worker right now."""

    packet_type: ClassVar[PacketType] = PacketType.NO_JOB


@dataclass(frozen=True, slots=True)
class JobAssign(Event):
    """JOB_ASSIGN / JOB_ASSIGN_UNIQ / JOB_ASSIGN_ALL: a job for the worker to run.

    ``unique`` is ``None`` for plain JOB_ASSIGN; ``reducer`` is ``None`` unless
    the packet was JOB_ASSIGN_ALL.
    """

    handle: bytes
    function: bytes
    data: bytes = b""
    unique: bytes | None = None
    reducer: bytes | None = None

    @property
    def packet_type(self) -> PacketType:  # type: ignore[override]
        if self.reducer is not None:
            return PacketType.JOB_ASSIGN_ALL
        if self.unique is not None:
            return PacketType.JOB_ASSIGN_UNIQ
        return PacketType.JOB_ASSIGN


# -- work updates and results (worker → server → clients) ----------------------


@dataclass(frozen=True, slots=True)
class WorkStatus(Event):
    """WORK_STATUS: the job is ``numerator``/``denominator`` done."""

    handle: bytes
    numerator: int
    denominator: int
    packet_type: ClassVar[PacketType] = PacketType.WORK_STATUS


@dataclass(frozen=True, slots=True)
class WorkData(Event):
    """WORK_DATA: a piece of the job's output, sent before it completes."""

    handle: bytes
    data: bytes
    packet_type: ClassVar[PacketType] = PacketType.WORK_DATA


@dataclass(frozen=True, slots=True)
class WorkWarning(Event):
    """WORK_WARNING: like WORK_DATA, but a warning."""

    handle: bytes
    data: bytes
    packet_type: ClassVar[PacketType] = PacketType.WORK_WARNING


@dataclass(frozen=True, slots=True)
class WorkComplete(Event):
    """WORK_COMPLETE: the job finished; ``data`` is its result."""

    handle: bytes
    data: bytes = b""
    packet_type: ClassVar[PacketType] = PacketType.WORK_COMPLETE


@dataclass(frozen=True, slots=True)
class WorkFail(Event):
    """WORK_FAIL: the job failed (final: gearmand never re-runs a reported failure)."""

    handle: bytes
    packet_type: ClassVar[PacketType] = PacketType.WORK_FAIL


@dataclass(frozen=True, slots=True)
class WorkException(Event):
    """WORK_EXCEPTION: the job failed with an exception message in ``data``.

    Only clients that enabled the ``exceptions`` option receive it; the job
    server sends the others WORK_FAIL instead.
    """

    handle: bytes
    data: bytes = b""
    packet_type: ClassVar[PacketType] = PacketType.WORK_EXCEPTION


WorkUpdate = WorkStatus | WorkData | WorkWarning | WorkComplete | WorkFail | WorkException
"""Any WORK_* event: what a worker reports and the server forwards."""


# -- status, echo, options, errors ---------------------------------------------


@dataclass(frozen=True, slots=True)
class GetStatus(Event):
    """GET_STATUS: how is the job ``handle`` doing?"""

    handle: bytes
    packet_type: ClassVar[PacketType] = PacketType.GET_STATUS


@dataclass(frozen=True, slots=True)
class GetStatusUnique(Event):
    """GET_STATUS_UNIQUE: how is the job with this unique id doing?"""

    unique: bytes
    packet_type: ClassVar[PacketType] = PacketType.GET_STATUS_UNIQUE


@dataclass(frozen=True, slots=True)
class StatusRes(Event):
    """STATUS_RES: the answer to GET_STATUS.  An unknown job is ``known=False``."""

    handle: bytes
    known: bool
    running: bool
    numerator: int = 0
    denominator: int = 0
    request: GetStatus | None = field(default=None, compare=False, repr=False)
    packet_type: ClassVar[PacketType] = PacketType.STATUS_RES


@dataclass(frozen=True, slots=True)
class StatusResUnique(Event):
    """STATUS_RES_UNIQUE: the answer to GET_STATUS_UNIQUE.

    ``waiting`` is the number of foreground clients attached to the job.
    gearmand echoes the unique id asked about as the first field.
    """

    unique: bytes
    known: bool
    running: bool
    numerator: int = 0
    denominator: int = 0
    waiting: int = 0
    request: GetStatusUnique | None = field(default=None, compare=False, repr=False)
    packet_type: ClassVar[PacketType] = PacketType.STATUS_RES_UNIQUE


@dataclass(frozen=True, slots=True)
class EchoReq(Event):
    """ECHO_REQ: send ``data`` back to me."""

    data: bytes = b""
    packet_type: ClassVar[PacketType] = PacketType.ECHO_REQ


@dataclass(frozen=True, slots=True)
class EchoRes(Event):
    """ECHO_RES: the bytes of an ECHO_REQ, unchanged."""

    data: bytes = b""
    request: EchoReq | None = field(default=None, compare=False, repr=False)
    packet_type: ClassVar[PacketType] = PacketType.ECHO_RES


@dataclass(frozen=True, slots=True)
class OptionReq(Event):
    """OPTION_REQ: turn on a connection option; gearmand knows only ``exceptions``."""

    name: bytes
    packet_type: ClassVar[PacketType] = PacketType.OPTION_REQ


@dataclass(frozen=True, slots=True)
class OptionRes(Event):
    """OPTION_RES: the option ``name`` is now on."""

    name: bytes
    request: OptionReq | None = field(default=None, compare=False, repr=False)
    packet_type: ClassVar[PacketType] = PacketType.OPTION_RES


@dataclass(frozen=True, slots=True)
class Error(Event):
    """ERROR: the server refused something; ``code`` is gearmand's name for it.

    When it answers a client's request (a full queue, say), ``request`` names
    that request.
    """

    code: bytes
    text: bytes = b""
    request: Event | None = field(default=None, compare=False, repr=False)
    packet_type: ClassVar[PacketType] = PacketType.ERROR


# -- the admin text protocol and connection life ---------------------------------


@dataclass(frozen=True, slots=True)
class AdminCommand(Event):
    """One admin text command line (``status``, ``workers``, ...), without its newline."""

    line: bytes

    @property
    def args(self) -> list[bytes]:
        """The words of the line; runs of spaces count as one, as gearmand splits."""
        return self.line.split()


@dataclass(frozen=True, slots=True)
class AdminReply(Event):
    """The raw text a job server writes in answer to one admin command."""

    text: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer closed the connection (``receive_data(b"")``)."""


# -- construction ------------------------------------------------------------------


def _fast_init(cls: type) -> None:
    """Give a frozen, slotted event class a faster ``__init__`` with the same signature.

    The ``__init__`` that dataclasses writes for a frozen class stores every
    field with ``object.__setattr__(self, name, value)``: a generic attribute
    lookup by name per field.  Events are built for every packet in and out, so
    here each field is stored through its slot's own descriptor instead
    (``Cls.field.__set__``, bound once), which does the same store without the
    lookup: about twice as fast for a four-field JobAssign (1.2 -> 0.55 µs).
    Parameters, defaults, equality, hashing, ``repr`` and immutability are
    untouched; a class with no fields keeps ``object.__init__``.
    """
    fields = dataclasses.fields(cls)
    if not fields:
        del cls.__init__  # type: ignore[misc]  # object.__init__: no Python frame at all
        return
    namespace: dict[str, Any] = {}
    params = []
    for f in fields:
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"\n    _set_{f.name}(self, {f.name})" for f in fields)
    # The same technique dataclasses itself uses to write __init__.
    exec(f"def __init__(self, {', '.join(params)}):{body}", namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[misc]


# By name, not Event.__subclasses__(): that also lists the classes that
# @dataclass(slots=True) replaced with slotted copies.
for _name in __all__:
    _obj = globals().get(_name)  # the conversion functions come below
    if isinstance(_obj, type) and issubclass(_obj, Event) and _obj is not Event:
        _fast_init(_obj)


# -- conversion ------------------------------------------------------------------

_B = bytes


def _num(value: int) -> bytes:
    return b"%d" % value


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


def _check_nonneg(event: Event, *values: int) -> None:
    for v in values:
        if v < 0:
            raise LocalProtocolError(f"{type(event).__name__}: numbers must be >= 0, got {v}")


def _enc_submit(e: SubmitJob) -> tuple[int, tuple[bytes, ...]]:
    return _SUBMIT_TYPES[(e.priority, e.background)], (e.function, e.unique, e.data)


def _enc_epoch(e: SubmitJobEpoch) -> tuple[int, tuple[bytes, ...]]:
    _check_nonneg(e, e.epoch)
    return PacketType.SUBMIT_JOB_EPOCH, (e.function, e.unique, _num(e.epoch), e.data)


def _enc_sched(e: SubmitJobSched) -> tuple[int, tuple[bytes, ...]]:
    _check_nonneg(e, e.minute, e.hour, e.day_of_month, e.month, e.day_of_week)
    return PacketType.SUBMIT_JOB_SCHED, (
        e.function, e.unique, _num(e.minute), _num(e.hour), _num(e.day_of_month),
        _num(e.month), _num(e.day_of_week), e.data)


def _enc_reduce(e: SubmitReduceJob) -> tuple[int, tuple[bytes, ...]]:
    return e.packet_type, (e.function, e.unique, e.reducer, e.aggregate, e.data)


# Module constants: looking a member up on an Enum class costs ~0.1 µs.
_JOB_ASSIGN, _JOB_ASSIGN_UNIQ, _JOB_ASSIGN_ALL = (
    PacketType.JOB_ASSIGN, PacketType.JOB_ASSIGN_UNIQ, PacketType.JOB_ASSIGN_ALL)


def _enc_assign(e: JobAssign) -> tuple[int, tuple[bytes, ...]]:
    if e.reducer is not None:
        return _JOB_ASSIGN_ALL, (e.handle, e.function, e.unique or b"", e.reducer, e.data)
    if e.unique is not None:
        return _JOB_ASSIGN_UNIQ, (e.handle, e.function, e.unique, e.data)
    return _JOB_ASSIGN, (e.handle, e.function, e.data)


def _enc_status(e: WorkStatus) -> tuple[int, tuple[bytes, ...]]:
    _check_nonneg(e, e.numerator, e.denominator)
    return PacketType.WORK_STATUS, (e.handle, _num(e.numerator), _num(e.denominator))


def _enc_status_res(e: StatusRes) -> tuple[int, tuple[bytes, ...]]:
    _check_nonneg(e, e.numerator, e.denominator)
    return PacketType.STATUS_RES, (e.handle, b"1" if e.known else b"0",
                                   b"1" if e.running else b"0",
                                   _num(e.numerator), _num(e.denominator))


def _enc_status_res_unique(e: StatusResUnique) -> tuple[int, tuple[bytes, ...]]:
    _check_nonneg(e, e.numerator, e.denominator, e.waiting)
    return PacketType.STATUS_RES_UNIQUE, (e.unique, b"1" if e.known else b"0",
                                          b"1" if e.running else b"0", _num(e.numerator),
                                          _num(e.denominator), _num(e.waiting))


def _enc_timeout(e: CanDoTimeout) -> tuple[int, tuple[bytes, ...]]:
    _check_nonneg(e, e.timeout)
    return PacketType.CAN_DO_TIMEOUT, (e.function, _num(e.timeout))


def _field_encoder(ptype: PacketType, *names: str
                   ) -> Callable[[Event], tuple[int, tuple[bytes, ...]]]:
    """The encoder of an event whose arguments are its fields ``names``, in order."""
    if not names:
        packet: tuple[int, tuple[bytes, ...]] = (ptype, ())
        return lambda e: packet
    # attrgetter reads the fields in C: one name gives the value, several a tuple.
    if len(names) == 1:
        get_one: Callable[[Event], bytes] = attrgetter(names[0])
        return lambda e: (ptype, (get_one(e),))
    get: Callable[[Event], tuple[bytes, ...]] = attrgetter(*names)
    return lambda e: (ptype, get(e))


_FIELDS: dict[Any, tuple[str, ...]] = {}
"""Events whose packet arguments are their fields, by name, in order."""
_ENCODERS: dict[type, Callable[[Event], tuple[int, tuple[bytes, ...]]]] = {
    SubmitJob: _enc_submit,  # type: ignore[dict-item]
    SubmitJobEpoch: _enc_epoch,  # type: ignore[dict-item]
    SubmitJobSched: _enc_sched,  # type: ignore[dict-item]
    SubmitReduceJob: _enc_reduce,  # type: ignore[dict-item]
    JobAssign: _enc_assign,  # type: ignore[dict-item]
    WorkStatus: _enc_status,  # type: ignore[dict-item]
    StatusRes: _enc_status_res,  # type: ignore[dict-item]
    StatusResUnique: _enc_status_res_unique,  # type: ignore[dict-item]
    CanDoTimeout: _enc_timeout,  # type: ignore[dict-item]
}
for _cls, _names in (
    (CanDo, ("function",)), (CantDo, ("function",)), (ResetAbilities, ()), (PreSleep, ()),
    (Noop, ()), (JobCreated, ("handle",)), (GrabJob, ()), (GrabJobUniq, ()),
    (GrabJobAll, ()), (NoJob, ()), (WorkData, ("handle", "data")),
    (WorkWarning, ("handle", "data")), (WorkComplete, ("handle", "data")),
    (WorkFail, ("handle",)), (WorkException, ("handle", "data")),
    (GetStatus, ("handle",)), (GetStatusUnique, ("unique",)), (EchoReq, ("data",)),
    (EchoRes, ("data",)), (OptionReq, ("name",)), (OptionRes, ("name",)),
    (Error, ("code", "text")), (SetClientId, ("client_id",)), (AllYours, ()),
):
    _FIELDS[_cls] = _names
    _ENCODERS[_cls] = _field_encoder(_cls.packet_type, *_names)


# -- straight to bytes ------------------------------------------------------------------

WireEncoder = Callable[[Any], "bytes | None"]
"""Bytes of one event, or ``None`` to send it the long way (which raises what is wrong)."""

_NUL = b"\0"
_pack_header = _HEADER.pack
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
            a = get_one(e)
            return _pack_header(magic, ptype, len(a)) + a
        return one
    get: Callable[[Any], tuple[bytes, ...]] = attrgetter(*names)

    def many(e: Any) -> bytes | None:
        args = get(e)
        if 0 in b"".join(args[:-1]):
            return None
        return encode_packet(magic, ptype, args)
    return many


def _wire_assign(magic: bytes) -> WireEncoder:
    def assign(e: JobAssign) -> bytes | None:
        if e.reducer is not None:
            return None
        h, f, u, d = e.handle, e.function, e.unique, e.data
        if u is None:
            if 0 in h or 0 in f:
                return None
            return b"".join((_pack_header(magic, _JOB_ASSIGN, len(h) + len(f) + len(d) + 2),
                             h, _NUL, f, _NUL, d))
        if 0 in h or 0 in f or 0 in u:
            return None
        return b"".join((
            _pack_header(magic, _JOB_ASSIGN_UNIQ, len(h) + len(f) + len(u) + len(d) + 3),
            h, _NUL, f, _NUL, u, _NUL, d))
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
    framing take several.  Messages with numeric arguments are left out (the
    long way checks the numbers), and an encoder returns ``None`` whenever an
    argument would need a refusal, so that every error is still raised in
    one place.
    """
    table: dict[type, WireEncoder] = {
        cls: _wire_fields(ptype, names, magic)
        for cls, names in _FIELDS.items() if (ptype := cls.packet_type) in sendable
    }
    if PacketType.JOB_ASSIGN_UNIQ in sendable:
        table[JobAssign] = _wire_assign(magic)
    if PacketType.SUBMIT_JOB in sendable:
        table[SubmitJob] = _wire_submit(magic)
    return table


# Decoding: packet type -> constructor from the already-split, already-validated
# argument tuple.  Numeric fields were checked to be decimal by the Decoder.
_DECODERS: dict[int, Callable[[Sequence[bytes]], Event]] = {
    PacketType.CAN_DO: lambda a: CanDo(a[0]),
    PacketType.CANT_DO: lambda a: CantDo(a[0]),
    PacketType.RESET_ABILITIES: lambda a: ResetAbilities(),
    PacketType.PRE_SLEEP: lambda a: PreSleep(),
    PacketType.NOOP: lambda a: Noop(),
    PacketType.JOB_CREATED: lambda a: JobCreated(a[0]),
    PacketType.GRAB_JOB: lambda a: GrabJob(),
    PacketType.NO_JOB: lambda a: NoJob(),
    PacketType.JOB_ASSIGN: lambda a: JobAssign(a[0], a[1], a[2]),
    PacketType.WORK_STATUS: lambda a: WorkStatus(a[0], int(a[1]), int(a[2])),
    PacketType.WORK_COMPLETE: lambda a: WorkComplete(a[0], a[1]),
    # gearmand 1.1.20 turns WORK_EXCEPTION into WORK_FAIL for a client without
    # the exceptions option by forwarding the handle argument with its NUL
    # terminator ("H:host:2\0"); a handle never holds NUL, so drop it.
    PacketType.WORK_FAIL: lambda a: WorkFail(a[0][:-1] if a[0][-1:] == b"\0" else a[0]),
    PacketType.GET_STATUS: lambda a: GetStatus(a[0]),
    PacketType.ECHO_REQ: lambda a: EchoReq(a[0]),
    PacketType.ECHO_RES: lambda a: EchoRes(a[0]),
    PacketType.ERROR: lambda a: Error(a[0], a[1]),
    # `or 0`: an empty numerator/denominator (Perl Gearman::Server) means 0.
    PacketType.STATUS_RES: lambda a: StatusRes(a[0], a[1] != b"0", a[2] != b"0",
                                               int(a[3] or 0), int(a[4] or 0)),
    PacketType.SET_CLIENT_ID: lambda a: SetClientId(a[0]),
    PacketType.CAN_DO_TIMEOUT: lambda a: CanDoTimeout(a[0], int(a[1])),
    PacketType.ALL_YOURS: lambda a: AllYours(),
    PacketType.WORK_EXCEPTION: lambda a: WorkException(a[0], a[1]),
    PacketType.OPTION_REQ: lambda a: OptionReq(a[0]),
    PacketType.OPTION_RES: lambda a: OptionRes(a[0]),
    PacketType.WORK_DATA: lambda a: WorkData(a[0], a[1]),
    PacketType.WORK_WARNING: lambda a: WorkWarning(a[0], a[1]),
    PacketType.GRAB_JOB_UNIQ: lambda a: GrabJobUniq(),
    PacketType.JOB_ASSIGN_UNIQ: lambda a: JobAssign(a[0], a[1], a[3], a[2]),
    PacketType.SUBMIT_JOB_SCHED: lambda a: SubmitJobSched(
        a[0], a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]), int(a[6]), a[7]),
    PacketType.SUBMIT_JOB_EPOCH: lambda a: SubmitJobEpoch(a[0], int(a[2]), a[3], a[1]),
    PacketType.SUBMIT_REDUCE_JOB: lambda a: SubmitReduceJob(a[0], a[2], a[4], a[1], False,
                                                            a[3]),
    PacketType.SUBMIT_REDUCE_JOB_BACKGROUND: lambda a: SubmitReduceJob(
        a[0], a[2], a[4], a[1], True, a[3]),
    PacketType.GRAB_JOB_ALL: lambda a: GrabJobAll(),
    PacketType.JOB_ASSIGN_ALL: lambda a: JobAssign(a[0], a[1], a[4], a[2], a[3]),
    PacketType.GET_STATUS_UNIQUE: lambda a: GetStatusUnique(a[0]),
    PacketType.STATUS_RES_UNIQUE: lambda a: StatusResUnique(
        a[0], a[1] != b"0", a[2] != b"0", int(a[3] or 0), int(a[4] or 0), int(a[5])),
}


def _submit_decoder(ptype: PacketType) -> Callable[[Sequence[bytes]], Event]:
    priority, background = _SUBMIT_FLAGS[ptype]
    return lambda a: SubmitJob(a[0], a[2], a[1], priority, background)


for _ptype in _SUBMIT_FLAGS:
    _DECODERS[_ptype] = _submit_decoder(_ptype)


def packet_to_event(ptype: int, args: tuple[bytes, ...]) -> Event:
    """Build the event for a decoded packet (type and argument count already checked)."""
    return _DECODERS[ptype](args)
