"""The worker's side of a connection to a job server.

A worker registers what it can do (CAN_DO, CAN_DO_TIMEOUT, CANT_DO,
RESET_ABILITIES), then loops (PROTOCOL-NOTES §4.5, §4.6)::

    GRAB_JOB*  ──▶  JOB_ASSIGN*  run it, WORK_* ..., WORK_COMPLETE/FAIL/EXCEPTION
               └─▶  NO_JOB       PRE_SLEEP, wait for NOOP, GRAB again

The job server answers grabs in the order they were sent, so outstanding grabs
are a FIFO and each JOB_ASSIGN / NO_JOB answers the oldest; the kind of
JOB_ASSIGN must fit the kind of grab.  NOOP carries no job and may arrive at
any time; it only ends the sleep.  Jobs in hand are kept by handle, several at
once if the worker grabs again before finishing, and only they may be reported
on.

**PRE_SLEEP with a grab outstanding is allowed.**  gearmand handles one
connection's packets in order, so a pipelined ``GRAB_JOB, PRE_SLEEP`` has the
grab answered first, and PRE_SLEEP then NOOPs at once if more work is queued,
or marks the worker asleep until work arrives (checked by hand against gearmand
1.1.20: GRAB_JOB_ALL + PRE_SLEEP with two jobs queued gave JOB_ASSIGN_UNIQ then
NOOP; with one job, JOB_ASSIGN_UNIQ, and a NOOP as soon as another job was
submitted).  Nothing is lost either way, and it saves a round trip.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ._connection import _COMPILED, Connection, _split, whole_res_packet
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    CanDo,
    CanDoTimeout,
    CantDo,
    EchoReq,
    EchoRes,
    Error,
    Event,
    GrabJob,
    GrabJobAll,
    GrabJobUniq,
    JobAssign,
    NoJob,
    Noop,
    OptionReq,
    OptionRes,
    PreSleep,
    ResetAbilities,
    WorkComplete,
    WorkData,
    WorkException,
    WorkFail,
    WorkStatus,
    WorkWarning,
)
from .packets import DEFAULT_MAX_PACKET_SIZE, REQ, Role, encode_packet

if TYPE_CHECKING:
    from mypy_extensions import i64

__all__ = ["WorkerConnection"]

_Grab = type[GrabJob] | type[GrabJobUniq] | type[GrabJobAll]

# What each grab may be answered with, for the error message.
_EXPECTED = {
    GrabJob: "JOB_ASSIGN",
    GrabJobUniq: "JOB_ASSIGN_UNIQ",
    GrabJobAll: "JOB_ASSIGN_UNIQ or JOB_ASSIGN_ALL",
}


class _Grabs:
    """The grabs sent and not yet answered, oldest first, compiled: ``append``,
    ``popleft``, ``len`` and truth as a deque has them.

    Compiled, a deque's methods are generic calls (~100 instructions a grab
    answered); this native class's are direct.  Interpreted, a deque is faster,
    and is what :meth:`WorkerConnection.__init__` uses.
    """

    def __init__(self) -> None:
        self._items: list[_Grab] = []
        self._head: i64 = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __bool__(self) -> bool:
        return self._head < len(self._items)

    def append(self, grab: _Grab) -> None:
        self._items.append(grab)

    def popleft(self) -> _Grab:
        items = self._items
        head = self._head
        n: i64 = len(items)
        if head >= n:
            raise IndexError("pop from an empty deque")
        grab = items[head]
        head += 1
        if head == n:
            items.clear()
            head = 0
        elif head >= 64 and 2 * head >= n:
            del items[:head]  # answered grabs, dropped in amortised O(1)
            head = 0
        self._head = head
        return grab


class WorkerConnection(Connection):
    """A connection seen from a worker: abilities, the grab/sleep cycle and jobs in hand.

    ``abilities`` maps each registered function to its CAN_DO_TIMEOUT in
    milliseconds (``None`` for plain CAN_DO); it changes as CAN_DO,
    CAN_DO_TIMEOUT, CANT_DO and RESET_ABILITIES are sent.  ``jobs`` maps the
    handle of every job in hand to its :class:`JobAssign`; WORK_* may only be
    sent for those, and the final WORK_COMPLETE / WORK_FAIL / WORK_EXCEPTION
    takes the job out of hand.

    ERROR packets never break the connection: UNKNOWN_OPTION answers the oldest
    OPTION_REQ, and every other ERROR (say JOB_NOT_FOUND after a WORK_* for a
    job the server dropped or requeued) is handed out with ``request=None`` for
    the worker to log and carry on.
    """

    role = Role.WORKER

    def __init__(self, *, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        super().__init__(max_packet_size=max_packet_size)
        self.abilities: dict[bytes, int | None] = {}
        self.jobs: dict[bytes, JobAssign] = {}
        self.options: set[bytes] = set()
        self._grabs: _Grabs = _Grabs() if _COMPILED else deque()  # type: ignore[assignment]
        self._requests: deque[EchoReq | OptionReq] = deque()
        self._sleeping = False
        self._function = b""
        """The function name of the last JOB_ASSIGN_UNIQ the fast path read (see
        ``_assign_uniq``)."""
        self._receive = _RECEIVE
        self.fast_path = True

    @property
    def sleeping(self) -> bool:
        """True from sending PRE_SLEEP until a NOOP arrives or a grab is sent.

        This is also what the server believes: any GRAB_JOB* ends the sleep
        there too, and only a sleeping worker is sent NOOP.
        """
        return self._sleeping

    @property
    def outstanding_grabs(self) -> int:
        """Grabs sent and not yet answered by JOB_ASSIGN* or NO_JOB."""
        return len(self._grabs)

    @property
    def outstanding(self) -> int:
        """How many replies the server still owes: grabs plus ECHO_REQ / OPTION_REQ."""
        return len(self._grabs) + len(self._requests)

    # -- bytes out ------------------------------------------------------------

    def _on_send(self, event: Event) -> None:
        kind = type(event)
        if kind is WorkComplete:
            # A job's usual end, once per job: compiled, a direct call, where the
            # table's entry is a generic one (~500 instructions).
            self._finish(event)  # type: ignore[arg-type]
            return
        handler = _SEND.get(kind)
        if handler is not None:
            handler(self, event)

    def _in_hand(self, event: WorkStatus | WorkData | WorkWarning) -> None:
        if event.handle not in self.jobs:
            raise LocalProtocolError(
                f"cannot send {event.packet_type.name} for job handle {event.handle!r}: "
                f"no such job in hand"
            )

    def _finish(self, event: WorkComplete | WorkFail | WorkException) -> None:
        if self.jobs.pop(event.handle, None) is None:
            raise LocalProtocolError(
                f"cannot send {event.packet_type.name} for job handle {event.handle!r}: "
                f"no such job in hand"
            )

    def grab(self, kind: _Grab) -> bytes:
        """The bytes of a grab of ``kind`` (``GrabJob``, ``GrabJobUniq`` or ``GrabJobAll``):
        what ``send(kind())`` returns and records, without an event to build.

        A worker sends one for each free slot, so once per job: the bytes never
        change, and are made once.
        """
        self._check_sendable()
        packet = _GRAB_PACKETS[kind]
        self._grabbed(kind)
        return packet

    def _grab(self, event: GrabJob | GrabJobUniq | GrabJobAll) -> None:
        self._grabbed(type(event))

    def _grabbed(self, kind: _Grab) -> None:
        self._grabs.append(kind)
        self._sleeping = False

    def _pre_sleep(self, event: PreSleep) -> None:
        self._sleeping = True

    def _can_do(self, event: CanDo) -> None:
        self.abilities[event.function] = None

    def _can_do_timeout(self, event: CanDoTimeout) -> None:
        self.abilities[event.function] = event.timeout

    def _cant_do(self, event: CantDo) -> None:
        self.abilities.pop(event.function, None)
        # The server requeues any job this worker runs for a removed function
        # (PROTOCOL-NOTES §4.7; checked with gearmand 1.1.20: GET_STATUS shows
        # it known and no longer running), so it is no longer ours to report on.
        jobs = self.jobs
        for handle in [h for h, job in jobs.items() if job.function == event.function]:
            del jobs[handle]

    def _reset_abilities(self, event: ResetAbilities) -> None:
        # Every function is removed, so every job in hand is requeued (§4.7).
        self.abilities.clear()
        self.jobs.clear()

    def _request(self, event: EchoReq | OptionReq) -> None:
        self._requests.append(event)

    # -- bytes in -------------------------------------------------------------

    def _take_fast(self, buf: bytes, pos: i64, limit: i64) -> Event | None:
        # JOB_ASSIGN_UNIQ and JOB_ASSIGN: the arguments found once, the event
        # built at once.
        if _COMPILED:
            taken = _assign_uniq(self, buf, pos, limit)
            if taken is not None:
                return taken
        end = whole_res_packet(buf, pos, limit)
        if not end:
            return None
        ptype = buf[pos + 7]
        start: int = pos + 12
        if ptype == 31:  # JOB_ASSIGN_UNIQ
            parts = _split(buf[start:end], b"\0", 3)
            if len(parts) != 4:
                return None
            event = JobAssign(parts[0], parts[1], parts[3], parts[2])
        elif ptype == 11:  # JOB_ASSIGN
            parts = _split(buf[start:end], b"\0", 2)
            if len(parts) != 3:
                return None
            event = JobAssign(parts[0], parts[1], parts[2])
        else:
            return None
        self._decoder._pos = end
        self._job_assign(event)
        return event

    def _job_assign(self, event: JobAssign) -> None:
        try:
            grab = self._grabs.popleft()
        except IndexError:
            raise RemoteProtocolError(
                f"{event.packet_type.name} for job handle {event.handle!r} without an "
                f"outstanding GRAB_JOB"
            ) from None
        if grab is GrabJobUniq:  # the usual grab first
            fits = event.unique is not None and event.reducer is None
        elif grab is GrabJob:
            fits = event.unique is None
        else:
            # GRAB_JOB_ALL: JOB_ASSIGN_ALL only for jobs with a reducer,
            # JOB_ASSIGN_UNIQ otherwise (§4.6).
            fits = event.unique is not None
        if not fits:
            raise RemoteProtocolError(
                f"{event.packet_type.name} does not answer {grab.packet_type.name} "
                f"(expected {_EXPECTED[grab]})"
            )
        # Put in hand even if the function was given up since the grab was
        # sent (CANT_DO crossing JOB_ASSIGN): the server has requeued that job,
        # and a WORK_* for it only draws a harmless ERROR JOB_NOT_FOUND, where
        # refusing it here would break a worker that simply answers every job.
        # A handle already in hand is replaced: after a CAN_DO_TIMEOUT requeue
        # the same worker may be given the same job again (§4.7).
        self.jobs[event.handle] = event

    def _no_job(self, event: NoJob) -> None:
        if not self._grabs:
            raise RemoteProtocolError("NO_JOB without an outstanding GRAB_JOB")
        self._grabs.popleft()

    def _noop(self, event: Noop) -> None:
        # Harmless at any time: it only says "there may be work, grab again".
        self._sleeping = False

    def _echo_res(self, event: EchoRes) -> Event:
        requests = self._requests
        if not requests or type(requests[0]) is not EchoReq:
            raise RemoteProtocolError(
                f"ECHO_RES does not answer the oldest outstanding request "
                f"({type(requests[0]).__name__ if requests else 'nothing'})"
            )
        return EchoRes(event.data, request=requests.popleft())  # type: ignore[arg-type]

    def _option_res(self, event: OptionRes) -> Event:
        requests = self._requests
        if not requests or type(requests[0]) is not OptionReq:
            raise RemoteProtocolError(
                f"OPTION_RES does not answer the oldest outstanding request "
                f"({type(requests[0]).__name__ if requests else 'nothing'})"
            )
        self.options.add(event.name.lower())
        return OptionRes(event.name, request=requests.popleft())  # type: ignore[arg-type]

    def _error(self, event: Error) -> Event | None:
        if event.code != b"UNKNOWN_OPTION":
            return None
        for request in self._requests:
            if type(request) is OptionReq:
                self._requests.remove(request)
                return Error(event.code, event.text, request=request)
        return None


def _assign_uniq(conn: WorkerConnection, buf: bytes, pos: i64, limit: i64) -> JobAssign | None:
    """Compiled only: :meth:`WorkerConnection._take_fast` for a JOB_ASSIGN_UNIQ, in
    native ints: the header read byte by byte and the fields sliced straight from
    the buffer; ``None`` (nothing changed) for anything else, which the general
    ``_take_fast`` reads.

    The NULs are found by ``str.find`` in the Latin-1 text of the buffer
    (``Connection._text_at``): no copy of the payload and no list, which
    ``split`` makes.  The function name is most often the one of the job
    before: if the bytes after the handle are that name and a NUL, compared
    byte by byte, the same bytes object is used again, which saves a search
    and an allocation.  A NUL outside the text's window: ``None``.
    """
    n: i64 = len(buf)
    if pos + 12 > n or buf[pos + 7] != 31:
        return None
    if (buf[pos] or buf[pos + 1] != 82 or buf[pos + 2] != 69 or buf[pos + 3] != 83
            or buf[pos + 4] or buf[pos + 5] or buf[pos + 6]):
        return None
    b8: i64 = buf[pos + 8]
    b9: i64 = buf[pos + 9]
    b10: i64 = buf[pos + 10]
    b11: i64 = buf[pos + 11]
    size: i64 = (b8 << 24) | (b9 << 16) | (b10 << 8) | b11
    if pos + 12 + size > n or (limit and size > limit):
        return None
    start: i64 = pos + 12
    end: i64 = start + size
    text, tbase = conn._text_at(buf, start)
    # Positions in native ints; each made a plain int where a slice or find
    # takes it (compiled, those are native for int bounds and box i64 ones).
    base: i64 = tbase
    stop: int = end - base
    found: i64 = text.find("\0", int(start - base), stop)
    if found < 0:
        return None
    a: i64 = found + base
    function = conn._function
    m: i64 = len(function)
    j: i64 = a + 1 + m
    if j < end and buf[j] == 0:
        k: i64 = 0
        i: i64 = a + 1
        while k < m:
            if buf[i + k] != function[k]:
                break
            k += 1
        else:
            found = text.find("\0", int(j + 1 - base), stop)
            if found < 0:
                return None
            c: i64 = found + base
            event = JobAssign(buf[int(start):int(a)], function, buf[int(c + 1):int(end)],
                              buf[int(j + 1):int(c)])
            conn._decoder._pos = end
            conn._job_assign(event)
            return event
    found = text.find("\0", int(a + 1 - base), stop)
    if found < 0:
        return None
    b: i64 = found + base
    found = text.find("\0", int(b + 1 - base), stop)
    if found < 0:
        return None
    c = found + base
    function = buf[int(a + 1):int(b)]
    event = JobAssign(buf[int(start):int(a)], function, buf[int(c + 1):int(end)],
                      buf[int(b + 1):int(c)])
    conn._function = function
    conn._decoder._pos = end
    conn._job_assign(event)
    return event


# WorkerConnection.grab's bytes: a grab has no arguments.
_GRAB_PACKETS: Final[dict[type, bytes]] = {
    kind: encode_packet(REQ, kind.packet_type, ()) for kind in (GrabJob, GrabJobUniq, GrabJobAll)
}
# Dispatch on the exact event class: one dict lookup per event.  (WorkComplete is
# not here: _on_send calls _finish for it directly.)
_SEND: Final[dict[type, Callable[[WorkerConnection, Event], None]]] = {
    WorkData: WorkerConnection._in_hand,  # type: ignore[dict-item]
    WorkWarning: WorkerConnection._in_hand,  # type: ignore[dict-item]
    WorkStatus: WorkerConnection._in_hand,  # type: ignore[dict-item]
    WorkFail: WorkerConnection._finish,  # type: ignore[dict-item]
    WorkException: WorkerConnection._finish,  # type: ignore[dict-item]
    GrabJob: WorkerConnection._grab,  # type: ignore[dict-item]
    GrabJobUniq: WorkerConnection._grab,  # type: ignore[dict-item]
    GrabJobAll: WorkerConnection._grab,  # type: ignore[dict-item]
    PreSleep: WorkerConnection._pre_sleep,  # type: ignore[dict-item]
    CanDo: WorkerConnection._can_do,  # type: ignore[dict-item]
    CanDoTimeout: WorkerConnection._can_do_timeout,  # type: ignore[dict-item]
    CantDo: WorkerConnection._cant_do,  # type: ignore[dict-item]
    ResetAbilities: WorkerConnection._reset_abilities,  # type: ignore[dict-item]
    EchoReq: WorkerConnection._request,  # type: ignore[dict-item]
    OptionReq: WorkerConnection._request,  # type: ignore[dict-item]
}

_RECEIVE: Final[dict[type, Callable[[WorkerConnection, Event], Event | None]]] = {
    JobAssign: WorkerConnection._job_assign,  # type: ignore[dict-item]
    NoJob: WorkerConnection._no_job,  # type: ignore[dict-item]
    Noop: WorkerConnection._noop,  # type: ignore[dict-item]
    EchoRes: WorkerConnection._echo_res,  # type: ignore[dict-item]
    OptionRes: WorkerConnection._option_res,  # type: ignore[dict-item]
    Error: WorkerConnection._error,  # type: ignore[dict-item]
}
