"""One frozen dataclass per Gearman protocol message.

Events are direction-neutral: ``WorkComplete(handle, data)`` is the same object
whether a worker sends it to the job server (``\\0REQ``) or the server forwards
it to a client (``\\0RES``).  The connection that sends an event knows its role
and so the magic; it also refuses events its role may not send.

Where several packet types differ only in a flag, one event stands for them:
:class:`SubmitJob` covers the six SUBMIT_JOB{,_BG,_HIGH,_HIGH_BG,_LOW,_LOW_BG}
packets through ``priority`` and ``background``; :class:`JobAssign` covers
JOB_ASSIGN, JOB_ASSIGN_UNIQ and JOB_ASSIGN_ALL through whether ``unique`` and
``reducer`` are set.  :mod:`gearman_proto.codec` converts both ways, driven by
:data:`gearman_proto.packets.SPECS`.

Replies that answer a request (JOB_CREATED, STATUS_RES, STATUS_RES_UNIQUE,
ECHO_RES, OPTION_RES and ERROR) carry a ``request`` field that the client or
worker connection fills in with the request they answer.  It is not part of
the wire format and takes no part in equality.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .packets import COMPILED, PacketType

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # a pure-Python install without mypy: the options are mypyc's alone
    def mypyc_attr(*attrs: str, **kwattrs: object) -> Any:  # type: ignore[misc]
        """mypyc's class options (read by mypyc at build time): nothing at run time."""
        return lambda cls: cls

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
]


class Priority(enum.IntEnum):
    """Job priority.  Lower value runs first, as gearmand indexes them."""

    HIGH = 0
    NORMAL = 1
    LOW = 2


# Every event class is acyclic to mypyc: compiled, events carry no GC header and the
# cyclic collector never walks them (a worker holding many jobs in hand otherwise pays
# a walk over each, per older-generation collection).  Events are values -- bytes,
# ints, enums and the request a reply answers, itself an event built before it -- so
# none can be part of a reference cycle.  A subclass without the decorator would be
# tracked again, so each carries it (mypyc checks only the other way: an acyclic
# class's bases must be acyclic).
@mypyc_attr(acyclic=True)
class Event:
    """Base class of every protocol event."""

    __slots__ = ()
    packet_type: ClassVar[PacketType]


# -- worker → server: abilities and the sleep/wake cycle ---------------------


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class CanDo(Event):
    """CAN_DO: the worker can run ``function``."""

    function: bytes


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class CantDo(Event):
    """CANT_DO: the worker no longer runs ``function``."""

    function: bytes


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class ResetAbilities(Event):
    """RESET_ABILITIES: forget every function this worker registered."""


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class PreSleep(Event):
    """PRE_SLEEP: the worker is about to sleep; wake it with NOOP when work arrives."""


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class Noop(Event):
    """NOOP: wake up, there may be work (it carries no job: GRAB again)."""


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class CanDoTimeout(Event):
    """CAN_DO_TIMEOUT: like CAN_DO, and a job running longer than ``timeout`` ms is requeued."""

    function: bytes
    timeout: int


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class SetClientId(Event):
    """SET_CLIENT_ID: a name for this connection, shown by the admin ``workers`` command."""

    client_id: bytes


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class AllYours(Event):
    """ALL_YOURS: reserved by the protocol, never implemented by gearmand."""



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


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True, init=False)
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

    def __init__(self, function: bytes, data: bytes = b"", unique: bytes = b"",
                 priority: Priority = Priority.NORMAL, background: bool = False) -> None:
        object.__setattr__(self, "function", function)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "unique", unique)
        object.__setattr__(self, "priority", priority)
        object.__setattr__(self, "background", background)

    @property
    def packet_type(self) -> PacketType:  # type: ignore[override]
        return _SUBMIT_TYPES[(self.priority, self.background)]


@mypyc_attr(acyclic=True)
class _FixedSubmission(Event):
    """A submission whose priority and background flag its packet type fixes."""

    __slots__ = ()
    priority: ClassVar[Priority]
    background: ClassVar[bool]


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class SubmitJobEpoch(_FixedSubmission):
    """SUBMIT_JOB_EPOCH: a background job that may not run before ``epoch`` (Unix seconds)."""

    function: bytes
    epoch: int
    data: bytes = b""
    unique: bytes = b""


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class SubmitJobSched(_FixedSubmission):
    """SUBMIT_JOB_SCHED: a cron-like background job; gearmand refuses it and so do we."""

    function: bytes
    unique: bytes
    minute: int
    hour: int
    day_of_month: int
    month: int
    day_of_week: int
    data: bytes = b""


@mypyc_attr(acyclic=True)
class _NormalSubmission(Event):
    """A submission that is always of NORMAL priority."""

    __slots__ = ()
    priority: ClassVar[Priority]


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class SubmitReduceJob(_NormalSubmission):
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

    @property
    def packet_type(self) -> PacketType:  # type: ignore[override]
        return (PacketType.SUBMIT_REDUCE_JOB_BACKGROUND if self.background
                else PacketType.SUBMIT_REDUCE_JOB)


Submission = SubmitJob | SubmitJobEpoch | SubmitJobSched | SubmitReduceJob
"""Any event that asks the job server to create a job."""


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True, init=False)
class JobCreated(Event):
    """JOB_CREATED: the server accepted a submission and named it ``handle``."""

    handle: bytes
    request: Submission | None = field(default=None, compare=False, repr=False)

    def __init__(self, handle: bytes, request: Submission | None = None) -> None:
        object.__setattr__(self, "handle", handle)
        object.__setattr__(self, "request", request)


# -- grabbing jobs -------------------------------------------------------------


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class GrabJob(Event):
    """GRAB_JOB: give me a job; answered by JOB_ASSIGN or NO_JOB."""


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class GrabJobUniq(Event):
    """GRAB_JOB_UNIQ: as GRAB_JOB, answered by JOB_ASSIGN_UNIQ (with the unique id)."""


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class GrabJobAll(Event):
    """GRAB_JOB_ALL: answered by JOB_ASSIGN_ALL for reduce jobs, JOB_ASSIGN_UNIQ otherwise."""


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class NoJob(Event):
    """NO_JOB: nothing to do for this worker right now."""


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True, init=False)
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

    def __init__(self, handle: bytes, function: bytes, data: bytes = b"",
                 unique: bytes | None = None, reducer: bytes | None = None) -> None:
        object.__setattr__(self, "handle", handle)
        object.__setattr__(self, "function", function)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "unique", unique)
        object.__setattr__(self, "reducer", reducer)

    @property
    def packet_type(self) -> PacketType:  # type: ignore[override]
        if self.reducer is not None:
            return PacketType.JOB_ASSIGN_ALL
        if self.unique is not None:
            return PacketType.JOB_ASSIGN_UNIQ
        return PacketType.JOB_ASSIGN


# -- work updates and results (worker → server → clients) ----------------------


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True, init=False)
class WorkStatus(Event):
    """WORK_STATUS: the job is ``numerator``/``denominator`` done."""

    handle: bytes
    numerator: int
    denominator: int

    def __init__(self, handle: bytes, numerator: int, denominator: int) -> None:
        object.__setattr__(self, "handle", handle)
        object.__setattr__(self, "numerator", numerator)
        object.__setattr__(self, "denominator", denominator)


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True, init=False)
class WorkData(Event):
    """WORK_DATA: a piece of the job's output, sent before it completes."""

    handle: bytes
    data: bytes

    def __init__(self, handle: bytes, data: bytes) -> None:
        object.__setattr__(self, "handle", handle)
        object.__setattr__(self, "data", data)


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class WorkWarning(Event):
    """WORK_WARNING: like WORK_DATA, but a warning."""

    handle: bytes
    data: bytes


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True, init=False)
class WorkComplete(Event):
    """WORK_COMPLETE: the job finished; ``data`` is its result."""

    handle: bytes
    data: bytes = b""

    def __init__(self, handle: bytes, data: bytes = b"") -> None:
        object.__setattr__(self, "handle", handle)
        object.__setattr__(self, "data", data)


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True, init=False)
class WorkFail(Event):
    """WORK_FAIL: the job failed (final: gearmand never re-runs a reported failure)."""

    handle: bytes

    def __init__(self, handle: bytes) -> None:
        object.__setattr__(self, "handle", handle)


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class WorkException(Event):
    """WORK_EXCEPTION: the job failed with an exception message in ``data``.

    Only clients that enabled the ``exceptions`` option receive it; the job
    server sends the others WORK_FAIL instead.
    """

    handle: bytes
    data: bytes = b""


WorkUpdate = WorkStatus | WorkData | WorkWarning | WorkComplete | WorkFail | WorkException
"""Any WORK_* event: what a worker reports and the server forwards."""


# -- status, echo, options, errors ---------------------------------------------


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class GetStatus(Event):
    """GET_STATUS: how is the job ``handle`` doing?"""

    handle: bytes


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class GetStatusUnique(Event):
    """GET_STATUS_UNIQUE: how is the job with this unique id doing?"""

    unique: bytes


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class StatusRes(Event):
    """STATUS_RES: the answer to GET_STATUS.  An unknown job is ``known=False``."""

    handle: bytes
    known: bool
    running: bool
    numerator: int = 0
    denominator: int = 0
    request: GetStatus | None = field(default=None, compare=False, repr=False)


@mypyc_attr(acyclic=True)
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


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class EchoReq(Event):
    """ECHO_REQ: send ``data`` back to me."""

    data: bytes = b""


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class EchoRes(Event):
    """ECHO_RES: the bytes of an ECHO_REQ, unchanged."""

    data: bytes = b""
    request: EchoReq | None = field(default=None, compare=False, repr=False)


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class OptionReq(Event):
    """OPTION_REQ: turn on a connection option; gearmand knows only ``exceptions``."""

    name: bytes


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class OptionRes(Event):
    """OPTION_RES: the option ``name`` is now on."""

    name: bytes
    request: OptionReq | None = field(default=None, compare=False, repr=False)


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class Error(Event):
    """ERROR: the server refused something; ``code`` is gearmand's name for it.

    When it answers a client's request (a full queue, say), ``request`` names
    that request.
    """

    code: bytes
    text: bytes = b""
    request: Event | None = field(default=None, compare=False, repr=False)


# -- the admin text protocol and connection life ---------------------------------


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class AdminCommand(Event):
    """One admin text command line (``status``, ``workers``, ...), without its newline."""

    line: bytes

    @property
    def args(self) -> list[bytes]:
        """The words of the line; runs of spaces count as one, as gearmand splits."""
        return self.line.split()


@mypyc_attr(acyclic=True)
@dataclass(frozen=True, slots=True)
class AdminReply(Event):
    """The raw text a job server writes in answer to one admin command."""

    text: bytes


@mypyc_attr(acyclic=True)
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
    if COMPILED:
        # mypyc made the explicit __init__s of the hot classes native code, where
        # they are faster than this; the others keep the dataclass one.
        return
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


# The packet type of each event class with one.  Set after the classes rather
# than as a ClassVar in their bodies: mypyc's dataclasses take a ClassVar with a
# value there for a field.
_PACKET_TYPES: dict[type[Event], PacketType] = {
    CanDo: PacketType.CAN_DO,
    CantDo: PacketType.CANT_DO,
    ResetAbilities: PacketType.RESET_ABILITIES,
    PreSleep: PacketType.PRE_SLEEP,
    Noop: PacketType.NOOP,
    CanDoTimeout: PacketType.CAN_DO_TIMEOUT,
    SetClientId: PacketType.SET_CLIENT_ID,
    AllYours: PacketType.ALL_YOURS,
    SubmitJobEpoch: PacketType.SUBMIT_JOB_EPOCH,
    SubmitJobSched: PacketType.SUBMIT_JOB_SCHED,
    JobCreated: PacketType.JOB_CREATED,
    GrabJob: PacketType.GRAB_JOB,
    GrabJobUniq: PacketType.GRAB_JOB_UNIQ,
    GrabJobAll: PacketType.GRAB_JOB_ALL,
    NoJob: PacketType.NO_JOB,
    WorkStatus: PacketType.WORK_STATUS,
    WorkData: PacketType.WORK_DATA,
    WorkWarning: PacketType.WORK_WARNING,
    WorkComplete: PacketType.WORK_COMPLETE,
    WorkFail: PacketType.WORK_FAIL,
    WorkException: PacketType.WORK_EXCEPTION,
    GetStatus: PacketType.GET_STATUS,
    GetStatusUnique: PacketType.GET_STATUS_UNIQUE,
    StatusRes: PacketType.STATUS_RES,
    StatusResUnique: PacketType.STATUS_RES_UNIQUE,
    EchoReq: PacketType.ECHO_REQ,
    EchoRes: PacketType.ECHO_RES,
    OptionReq: PacketType.OPTION_REQ,
    OptionRes: PacketType.OPTION_RES,
    Error: PacketType.ERROR,
}
for _cls, _ptype in _PACKET_TYPES.items():
    _cls.packet_type = _ptype
SubmitJobEpoch.priority = SubmitJobSched.priority = Priority.NORMAL
SubmitJobEpoch.background = SubmitJobSched.background = True
SubmitReduceJob.priority = Priority.NORMAL

# By name, not Event.__subclasses__(): that also lists the classes that
# @dataclass(slots=True) replaced with slotted copies.
for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type) and issubclass(_obj, Event) and _obj is not Event:
        _fast_init(_obj)
