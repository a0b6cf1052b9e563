"""The client's side of a connection to a job server.

A client submits jobs and asks questions; the job server answers every request
that expects a reply **in the order the requests were sent** (gearmand handles
one connection's packets one after another, PROTOCOL-NOTES §4.2).  So one FIFO
of outstanding requests is enough to tell what each reply answers: JOB_CREATED
answers the oldest submission, STATUS_RES the oldest GET_STATUS, and so on.
A reply of the wrong kind for the head of the FIFO means the two ends no
longer agree on the conversation, and is a :class:`RemoteProtocolError`.

Results arrive later, interleaved, by job handle (WORK_DATA, WORK_STATUS,
WORK_COMPLETE, ...).  Each foreground job is tracked in :attr:`ClientConnection.jobs`
as a :class:`ClientJob` from its JOB_CREATED until its final result, the way h2
tracks a stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ._connection import _COMPILED, Connection, _native_nul, _popleft, _split, whole_res_packet
from .errors import RemoteProtocolError
from .events import (
    EchoReq,
    EchoRes,
    Error,
    Event,
    GetStatus,
    GetStatusUnique,
    JobCreated,
    OptionReq,
    OptionRes,
    StatusRes,
    StatusResUnique,
    Submission,
    SubmitJob,
    SubmitJobEpoch,
    SubmitJobSched,
    SubmitReduceJob,
    WorkComplete,
    WorkData,
    WorkException,
    WorkFail,
    WorkStatus,
    WorkWarning,
)
from .packets import DEFAULT_MAX_PACKET_SIZE, Role

if TYPE_CHECKING:
    from mypy_extensions import i64

__all__ = ["ClientJob", "ClientConnection"]

_SUBMISSIONS = (SubmitJob, SubmitJobEpoch, SubmitJobSched, SubmitReduceJob)

# Requests that the job server answers with exactly one reply packet.
# SET_CLIENT_ID is the one client request with no reply.
_EXPECTS_REPLY: Final = frozenset({*_SUBMISSIONS, GetStatus, GetStatusUnique, EchoReq, OptionReq})


# Mutable and compared by identity: it is the live record of one job.
@dataclass(slots=True, eq=False)
class ClientJob:
    """One foreground job this connection is waiting on, from JOB_CREATED to its result.

    ``attached`` counts how many of this connection's submissions are attached
    to the job.  gearmand coalesces submissions with the same function and
    unique id into one job and attaches the submitter once per submission, so a
    connection that submits the same unique twice gets every WORK_* packet,
    the final result included, twice (PROTOCOL-NOTES §4.3).  Checked by hand
    against gearmand 1.1.20: two pipelined SUBMIT_JOB("f", unique="u") on one
    connection were both answered JOB_CREATED "H:vm:1"; the worker's single
    WORK_STATUS, WORK_DATA and WORK_COMPLETE each reached that client twice.
    """

    request: Submission
    """The submission that created the job (the first one, if several coalesced)."""
    handle: bytes
    attached: int = 1
    numerator: int = 0
    """Last WORK_STATUS numerator received (0 until one arrives)."""
    denominator: int = 0
    finished: bool = False
    """True once the last attachment got WORK_COMPLETE, WORK_FAIL or WORK_EXCEPTION."""


class ClientConnection(Connection):
    """A connection seen from a client: submissions, replies and results.

    Use the three verbs: ``send(event) -> bytes``, ``receive_data(bytes)`` and
    ``next_event()``.  Replies are handed out with ``request`` set to the request
    they answer.  ``jobs`` maps each foreground job's handle to its
    :class:`ClientJob` until the job's final result arrives; ``options`` holds
    the connection options the server confirmed (lower-cased, e.g.
    ``b"exceptions"``).
    """

    role = Role.CLIENT

    def __init__(self, *, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        super().__init__(max_packet_size=max_packet_size)
        self.jobs: dict[bytes, ClientJob] = {}
        self.options: set[bytes] = set()
        self._pending: deque[Event] = deque()
        self._receive = _RECEIVE
        self.fast_path = True

    @property
    def outstanding(self) -> int:
        """How many replies the server still owes this connection."""
        return len(self._pending)

    @property
    def pending_requests(self) -> tuple[Event, ...]:
        """The requests still awaiting a reply, oldest first."""
        return tuple(self._pending)

    # -- bytes out ------------------------------------------------------------

    def _on_send(self, event: Event) -> None:
        if type(event) in _EXPECTS_REPLY:
            self._pending.append(event)

    # -- bytes in -------------------------------------------------------------

    def _take_fast(self, buf: bytes, pos: i64, limit: i64) -> Event | None:
        # WORK_COMPLETE and JOB_CREATED: the event built at once from the bytes.
        end = whole_res_packet(buf, pos, limit)
        if not end:
            return None
        ptype = buf[pos + 7]
        if ptype == 13:  # WORK_COMPLETE
            if _COMPILED:
                # Both fields sliced from the buffer: no payload copy, no list.
                nul = _native_nul(buf, pos + 12, end)
                if nul < 0:
                    return None
                event = WorkComplete(buf[pos + 12:nul], buf[nul + 1:end])
            else:
                parts = _split(buf[pos + 12:end], b"\0", 1)
                if len(parts) != 2:
                    return None
                event = WorkComplete(parts[0], parts[1])
            self._decoder._pos = end
            self._work_final(event)
            return event
        if ptype == 8:  # JOB_CREATED
            self._decoder._pos = end
            return self._job_created(JobCreated(buf[pos + 12:end]))
        return None

    def _answer(self, event: Event, expected: type | tuple[type, ...]) -> Event:
        """Pop the oldest outstanding request, which ``event`` must answer."""
        pending = self._pending
        if not pending or not isinstance(pending[0], expected):
            name = event.packet_type.name
            head = type(pending[0]).__name__ if pending else "nothing"
            raise RemoteProtocolError(
                f"{name} does not answer the oldest outstanding request ({head})"
            )
        return _popleft(pending)

    def _job(self, handle: bytes, event: Event) -> ClientJob:
        job = self.jobs.get(handle)
        if job is None:
            raise RemoteProtocolError(
                f"{event.packet_type.name} for job handle {handle!r}, which this "
                f"client is not waiting on"
            )
        return job

    def _job_created(self, event: JobCreated) -> Event:
        request: Submission = self._answer(event, _SUBMISSIONS)  # type: ignore[assignment]
        handle = event.handle
        if not request.background:
            # A background submitter is never attached to the job, so nothing
            # more will arrive for it on this connection.
            job = self.jobs.get(handle)
            if job is None:
                self.jobs[handle] = ClientJob(request, handle)
            else:
                job.attached += 1
        return JobCreated(handle, request=request)

    def _status_res(self, event: StatusRes) -> Event:
        request: GetStatus = self._answer(event, GetStatus)  # type: ignore[assignment]
        return StatusRes(event.handle, event.known, event.running, event.numerator,
                         event.denominator, request=request)

    def _status_res_unique(self, event: StatusResUnique) -> Event:
        request: GetStatusUnique = self._answer(event, GetStatusUnique)  # type: ignore[assignment]
        return StatusResUnique(event.unique, event.known, event.running, event.numerator,
                               event.denominator, event.waiting, request=request)

    def _echo_res(self, event: EchoRes) -> Event:
        request: EchoReq = self._answer(event, EchoReq)  # type: ignore[assignment]
        return EchoRes(event.data, request=request)

    def _option_res(self, event: OptionRes) -> Event:
        request: OptionReq = self._answer(event, OptionReq)  # type: ignore[assignment]
        self.options.add(event.name.lower())
        return OptionRes(event.name, request=request)

    def _error(self, event: Error) -> Event | None:
        # gearmand answers a refused request with ERROR in place of its normal
        # reply (a full queue, a unique id over 64 bytes or SUBMIT_JOB_SCHED
        # instead of JOB_CREATED; an unknown option instead of OPTION_RES), so
        # an ERROR while a reply is owed answers the oldest request.
        if not self._pending:
            return None
        return Error(event.code, event.text, request=self._pending.popleft())

    def _work_update(self, event: WorkData | WorkWarning) -> None:
        self._job(event.handle, event)

    def _work_status(self, event: WorkStatus) -> None:
        job = self._job(event.handle, event)
        job.numerator = event.numerator
        job.denominator = event.denominator

    def _work_final(self, event: WorkComplete | WorkFail | WorkException) -> None:
        handle = event.handle
        job = self._job(handle, event)
        # One final packet arrives per attachment (see ClientJob).
        job.attached -= 1
        if not job.attached:
            job.finished = True
            del self.jobs[handle]


# Dispatch on the exact event class: one dict lookup per received event.
_RECEIVE: Final[dict[type, Callable[[ClientConnection, Event], Event | None]]] = {
    JobCreated: ClientConnection._job_created,  # type: ignore[dict-item]
    StatusRes: ClientConnection._status_res,  # type: ignore[dict-item]
    StatusResUnique: ClientConnection._status_res_unique,  # type: ignore[dict-item]
    EchoRes: ClientConnection._echo_res,  # type: ignore[dict-item]
    OptionRes: ClientConnection._option_res,  # type: ignore[dict-item]
    Error: ClientConnection._error,  # type: ignore[dict-item]
    WorkData: ClientConnection._work_update,  # type: ignore[dict-item]
    WorkWarning: ClientConnection._work_update,  # type: ignore[dict-item]
    WorkStatus: ClientConnection._work_status,  # type: ignore[dict-item]
    WorkComplete: ClientConnection._work_final,  # type: ignore[dict-item]
    WorkFail: ClientConnection._work_final,  # type: ignore[dict-item]
    WorkException: ClientConnection._work_final,  # type: ignore[dict-item]
}
