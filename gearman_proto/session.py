"""What a client program and a worker program decide, over one or more job servers.

The connection classes know one conversation each.  A program usually talks
to several job servers at once and has policies on top: which server a job
goes to, what becomes of jobs on a server that went away, when a worker may
grab (never beyond its free slots), when it sleeps.  Those decisions are
protocol behaviour too, so they live here, free of I/O, and every adapter
shares them.  Connections are named by any hashable key the adapter picks.

:class:`ClientSession` turns submissions and replies into :class:`Job` and
:class:`Reply` records that an adapter only has to wake its waiters for.
:class:`WorkerSession` turns bytes from the servers into bytes to write and
jobs to run.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from .client import ClientConnection
from .codec import event_to_packet
from .errors import GrabRefused, LocalProtocolError
from .events import (
    CanDo,
    CanDoTimeout,
    EchoReq,
    EchoRes,
    Error,
    Event,
    GetStatus,
    GetStatusUnique,
    GrabJob,
    GrabJobAll,
    GrabJobUniq,
    JobAssign,
    JobCreated,
    NoJob,
    Noop,
    OptionReq,
    OptionRes,
    PreSleep,
    SetClientId,
    StatusRes,
    StatusResUnique,
    Submission,
    WorkComplete,
    WorkData,
    WorkException,
    WorkFail,
    WorkStatus,
    WorkUpdate,
    WorkWarning,
)
from .packets import DEFAULT_MAX_PACKET_SIZE
from .worker import WorkerConnection

__all__ = [
    "JobState",
    "Job",
    "Reply",
    "ClientSession",
    "WorkerStep",
    "WorkerSession",
    "WorkerDriver",
    "check_report",
]

K = TypeVar("K", bound=Hashable)


class JobState(str, enum.Enum):
    """Where a submitted job is, as its submitter sees it.

    A ``str`` too, so ``job.state == "complete"`` (the asyncio adapter's old
    string states) still holds.
    """

    PENDING = "pending"
    """Sent; JOB_CREATED not yet received."""
    QUEUED = "queued"
    """Accepted (it has a handle); a foreground job now waits for its result."""
    COMPLETE = "complete"
    FAILED = "failed"
    EXCEPTION = "exception"
    REFUSED = "refused"
    """The server answered ERROR instead of JOB_CREATED (a full queue, say)."""
    LOST = "lost"
    """The connection to its server closed before the job finished."""


_FINAL = frozenset({JobState.COMPLETE, JobState.FAILED, JobState.EXCEPTION, JobState.REFUSED,
                    JobState.LOST})
"""The states after which nothing more happens to a job: every state but PENDING and QUEUED."""


class Job(Generic[K]):
    """One submission and everything that came back for it.

    A background job is done once accepted: the server sends its submitter
    nothing more.  ``result`` is WORK_COMPLETE's data, ``exception``
    WORK_EXCEPTION's, ``error`` the ERROR that refused the submission.
    ``updates`` collects WORK_DATA, WORK_WARNING and WORK_STATUS in arrival
    order; an adapter may pop from it as it streams them.  ``on_change``, if
    set, is called after every change.
    """

    # A plain class, not a dataclass: mypyc compiles no generic dataclass.
    __slots__ = (
        "denominator",
        "error",
        "exception",
        "handle",
        "numerator",
        "on_change",
        "request",
        "result",
        "server",
        "state",
        "updates",
    )

    def __init__(self, request: Submission, server: K, handle: bytes | None = None,
                 state: JobState = JobState.PENDING) -> None:
        self.request = request
        self.server = server
        self.handle = handle
        self.state = state
        self.result: bytes | None = None
        self.exception: bytes | None = None
        self.error: Error | None = None
        self.numerator = 0
        self.denominator = 0
        self.updates: deque[WorkData | WorkWarning | WorkStatus] = deque()
        self.on_change: Callable[[Job[K]], None] | None = None

    def __repr__(self) -> str:
        return (f"Job(request={self.request!r}, server={self.server!r}, "
                f"handle={self.handle!r}, state={self.state!r})")

    @property
    def background(self) -> bool:
        """True if the submitter gets nothing after JOB_CREATED."""
        return bool(self.request.background)

    @property
    def done(self) -> bool:
        """True when nothing more will happen to this job as far as its submitter can see."""
        # Equal to `state in _FINAL or (state is QUEUED and background)`, by
        # identity: `in _FINAL` hashes the Enum member, which runs Python code
        # (Enum.__hash__), and adapters ask this after every change of a job.
        state = self.state
        return state is not JobState.PENDING and (state is not JobState.QUEUED or self.background)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)


class Reply(Generic[K]):
    """A GET_STATUS, GET_STATUS_UNIQUE, ECHO_REQ or OPTION_REQ and its answer.

    ``lost`` says the connection closed before the answer came.
    """

    __slots__ = ("answer", "lost", "on_change", "request", "server")

    def __init__(self, request: GetStatus | GetStatusUnique | EchoReq | OptionReq,
                 server: K) -> None:
        self.request = request
        self.server = server
        self.answer: StatusRes | StatusResUnique | EchoRes | OptionRes | Error | None = None
        self.lost = False
        self.on_change: Callable[[Reply[K]], None] | None = None

    def __repr__(self) -> str:
        return (f"Reply(request={self.request!r}, server={self.server!r}, "
                f"answer={self.answer!r}, lost={self.lost!r})")

    @property
    def done(self) -> bool:
        """True once answered or lost."""
        return self.answer is not None or self.lost

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)


_REPLIES = (StatusRes, StatusResUnique, EchoRes, OptionRes)
# ERROR codes that say "unknown packet", which a worker only sees after a grab
# the server lacks (Perl's Gearman::Server: server_error); lower case.  Others,
# such as JOB_NOT_FOUND after a WORK_* on a requeued job, are only logged.
_REFUSALS = frozenset({b"server_error", b"unknown_command", b"invalid_command"})
_FINAL_STATES: dict[type, JobState] = {
    WorkComplete: JobState.COMPLETE,
    WorkFail: JobState.FAILED,
    WorkException: JobState.EXCEPTION,
}


class ClientSession(Generic[K]):
    """A client program's jobs over any number of job-server connections.

    ``exceptions`` (on by default) asks each server for the ``exceptions``
    option as soon as the connection opens, so failed jobs report their
    message.  A connection's jobs and questions are lost with it: each such
    :class:`Job` ends in :attr:`JobState.LOST`, which the adapter reports as an
    error, since the job may or may not still run on that server.
    """

    def __init__(self, *, exceptions: bool = True,
                 max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        self.exceptions = exceptions
        self.max_packet_size = max_packet_size
        self.connections: dict[K, ClientConnection] = {}
        # Submissions and questions sent, awaiting their reply, by request identity.
        self._waiting: dict[K, dict[int, deque[Job[K] | Reply[K]]]] = {}
        # Foreground jobs with a handle, awaiting their result.
        self._running: dict[K, dict[bytes, list[Job[K]]]] = {}

    def connect(self, key: K) -> bytes:
        """Start a conversation on a new connection; returns the bytes to send first."""
        if key in self.connections:
            raise LocalProtocolError(f"connection {key!r} is already open")
        self.connections[key] = ClientConnection(max_packet_size=self.max_packet_size)
        self._waiting[key] = {}
        self._running[key] = {}
        if self.exceptions:
            return self.ask(key, OptionReq(b"exceptions"))[1]
        return b""

    def disconnect(self, key: K) -> list[Job[K] | Reply[K]]:
        """The connection closed: every job and question still open on it is lost."""
        self.connections.pop(key, None)
        changed: list[Job[K] | Reply[K]] = []
        for queue in self._waiting.pop(key, {}).values():
            changed.extend(queue)
        for jobs in self._running.pop(key, {}).values():
            changed.extend(jobs)
        for item in changed:
            if isinstance(item, Job):
                item.state = JobState.LOST
            else:
                item.lost = True
            item._changed()
        return changed

    def submit(self, key: K, request: Submission) -> tuple[Job[K], bytes]:
        """Send a submission on connection ``key``; returns its :class:`Job` and the bytes."""
        data = self.connections[key].send(request)
        job: Job[K] = Job(request, key)
        self._waiting[key].setdefault(id(request), deque()).append(job)
        return job, data

    def ask(self, key: K, request: GetStatus | GetStatusUnique | EchoReq | OptionReq
            ) -> tuple[Reply[K], bytes]:
        """Send a question on connection ``key``; returns its :class:`Reply` and the bytes."""
        data = self.connections[key].send(request)
        reply: Reply[K] = Reply(request, key)
        self._waiting[key].setdefault(id(request), deque()).append(reply)
        return reply, data

    def set_client_id(self, key: K, client_id: bytes) -> bytes:
        """The bytes of SET_CLIENT_ID (no reply comes)."""
        return self.connections[key].send(SetClientId(client_id))

    def _take(self, key: K, request: Event | None) -> Job[K] | Reply[K] | None:
        if request is None:
            return None
        waiting = self._waiting[key]
        queue = waiting.get(id(request))
        if not queue:
            return None
        item = queue.popleft()
        if not queue:
            del waiting[id(request)]
        return item

    def receive_data(self, key: K, data: bytes) -> list[Job[K] | Reply[K]]:
        """Feed bytes from connection ``key``; returns the jobs and replies that changed.

        Raises :class:`~gearman_proto.RemoteProtocolError` if the server broke
        the protocol; the adapter should then close and :meth:`disconnect`.
        An ERROR that answers nothing is dropped here (the connection goes on).
        """
        conn = self.connections[key]
        conn.receive_data(data)
        changed: list[Job[K] | Reply[K]] = []
        running = self._running[key]
        for event in conn.events():
            kind = type(event)
            if kind is JobCreated:
                job = self._take(key, event.request)  # type: ignore[attr-defined]
                if isinstance(job, Job):
                    job.handle = event.handle  # type: ignore[attr-defined]
                    job.state = JobState.QUEUED
                    if not job.background:
                        running.setdefault(job.handle, []).append(job)
                    job._changed()
                    changed.append(job)
            elif kind in _FINAL_STATES or kind in (WorkData, WorkWarning, WorkStatus):
                handle: bytes = event.handle  # type: ignore[attr-defined]
                jobs = running.get(handle, ())
                final = _FINAL_STATES.get(kind)
                for job in jobs:
                    if final is None:
                        if kind is WorkStatus:
                            job.numerator = event.numerator  # type: ignore[attr-defined]
                            job.denominator = event.denominator  # type: ignore[attr-defined]
                        job.updates.append(event)  # type: ignore[arg-type]
                    else:
                        job.state = final
                        if kind is WorkComplete:
                            job.result = event.data  # type: ignore[attr-defined]
                        elif kind is WorkException:
                            job.exception = event.data  # type: ignore[attr-defined]
                    job._changed()
                    changed.append(job)
                if final is not None and jobs:
                    # Every attachment is resolved by the first final packet; the
                    # connection counts the duplicates gearmand still sends.
                    del running[handle]
            elif kind in _REPLIES or kind is Error:
                item = self._take(key, event.request)  # type: ignore[attr-defined]
                if isinstance(item, Reply):
                    item.answer = event  # type: ignore[assignment]
                    item._changed()
                    changed.append(item)
                elif isinstance(item, Job):
                    item.state = JobState.REFUSED
                    item.error = event  # type: ignore[assignment]
                    item._changed()
                    changed.append(item)
        return changed


# -- workers ------------------------------------------------------------------------


def check_report(event: WorkUpdate) -> None:
    """Raise LocalProtocolError if the wire cannot carry this report (a negative number).

    Asked before a connection sees the report, so a bad report is refused to
    the handler that made it and the connection stays usable for every other
    job (a connection that refuses an event goes to its ERROR state).
    """
    if type(event) is WorkStatus:
        event_to_packet(event)


class WorkerStep(Generic[K]):
    """What a worker must do next: bytes to write per connection, jobs to start, errors to log."""

    __slots__ = ("errors", "jobs", "writes")

    def __init__(self, writes: dict[K, bytes] | None = None) -> None:
        self.writes: dict[K, bytes] = {} if writes is None else writes
        self.jobs: list[tuple[K, JobAssign]] = []
        self.errors: list[tuple[K, Error]] = []

    def __repr__(self) -> str:
        return f"WorkerStep(writes={self.writes!r}, jobs={self.jobs!r}, errors={self.errors!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WorkerStep):
            return NotImplemented
        return (self.writes, self.jobs, self.errors) == (other.writes, other.jobs, other.errors)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value


class WorkerSession(Generic[K]):
    """A worker program's decisions over any number of job-server connections.

    It registers ``abilities`` (function → CAN_DO_TIMEOUT in ms, or ``None``)
    on every connection, then keeps ``max_jobs`` slots busy: a grab is only
    sent for a free slot, so the worker never holds more jobs than it can run.
    A connection that answered NO_JOB is put to sleep (PRE_SLEEP) until the
    server's NOOP; the others are asked in turn.  :meth:`drain` stops all
    grabbing while the jobs in hand finish.

    ``grab`` is the grab packet to send.  A server that refuses it (Perl's
    Gearman::Server has no GRAB_JOB_UNIQ nor GRAB_JOB_ALL and answers ``ERROR
    server_error``) is asked with plain GRAB_JOB from then on, on that
    connection only, unless ``grab_fallback`` is false; a refused grab that
    cannot fall back raises :class:`~gearman_proto.errors.GrabRefused`, since
    such a worker could never get a job there.
    """

    def __init__(
        self,
        abilities: dict[bytes, int | None],
        *,
        max_jobs: int = 1,
        client_id: bytes | None = None,
        grab: type[GrabJob] | type[GrabJobUniq] | type[GrabJobAll] = GrabJobUniq,
        grab_fallback: bool = True,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        if max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        self.abilities = dict(abilities)
        self.max_jobs = max_jobs
        self.client_id = client_id
        self.grab = grab
        self.grab_fallback = grab_fallback
        # Connections whose server refused `grab`: they are sent GRAB_JOB.
        self._plain_grab: set[K] = set()
        # Connections none of whose grabs was answered yet.  Only there does an
        # ERROR stand for the grab: the grab is then the one packet sent that
        # may draw an answer (CAN_DO and SET_CLIENT_ID do not), where later an
        # ERROR may be the refusal of a WORK_* report (Perl's Gearman::Server
        # has no WORK_DATA nor WORK_WARNING) crossing the next grab.
        self._unverified: set[K] = set()
        self.max_packet_size = max_packet_size
        self.connections: dict[K, WorkerConnection] = {}
        self.draining = False
        # Connections that may have work for us (new, woken, or just gave a job).
        self._hungry: deque[K] = deque()
        # Runs the program has been given and not yet reported the end of, per
        # connection (one table per open connection) and handle: usually one per
        # job in hand, but two when the server took a job back (its
        # CAN_DO_TIMEOUT passed) and gave it to this worker again under the same
        # handle while the first run went on.  (By handle within a connection's
        # table, not by (key, handle): no tuple to build and hash per job, and
        # the handle's hash is the one its bytes keep.)
        self._runs: dict[K, dict[bytes, int]] = {}
        # Runs whose connection closed while the program still runs them
        # (disconnect(keep_slots=True)): each holds a slot until its final
        # report, which goes nowhere, arrives.  A connection's table goes with
        # its last run.
        self._orphans: dict[K, dict[bytes, int]] = {}
        self._running = 0  # every count in self._runs and self._orphans, summed

    @property
    def running(self) -> int:
        """Jobs the program runs: given to it and not yet reported ended (orphans included)."""
        return self._running

    @property
    def free_slots(self) -> int:
        """Slots neither running a job (orphans included) nor reserved by an unanswered grab."""
        # A loop, not sum() over a generator: asked after every job and grab.
        used = self._running
        for conn in self.connections.values():
            used += conn.outstanding_grabs
        return self.max_jobs - used

    @property
    def idle(self) -> bool:
        """True when no job is running (a draining worker may stop)."""
        return self._running == 0

    def connect(self, key: K) -> WorkerStep[K]:
        """Register on a new connection and start grabbing there."""
        conn = self.connections[key] = WorkerConnection(max_packet_size=self.max_packet_size)
        self._runs[key] = {}
        out = []
        for function, timeout in self.abilities.items():
            out.append(conn.send(CanDo(function) if timeout is None
                                 else CanDoTimeout(function, timeout)))
        if self.client_id is not None:
            out.append(conn.send(SetClientId(self.client_id)))
        step: WorkerStep[K] = WorkerStep({key: b"".join(out)})
        self._unverified.add(key)
        self._hungry.append(key)
        self._pump(step)
        return step

    def disconnect(self, key: K, *, keep_slots: bool = False) -> list[JobAssign]:
        """The connection closed; returns the jobs that were in hand on it.

        The server requeues those jobs; results for them can no longer be sent.
        Their slots are free at once, unless ``keep_slots``: an adapter whose
        handlers cannot be stopped passes it, so that each job keeps its slot
        until the program reports its end through :meth:`send` as usual (which
        then writes nothing), and the worker never runs more than ``max_jobs``
        at once, lost connections or not.  Such an adapter must report the end
        of every job it started.
        """
        conn = self.connections.pop(key, None)
        self._plain_grab.discard(key)
        self._unverified.discard(key)
        if key in self._hungry:
            self._hungry.remove(key)
        if conn is None:
            return []
        runs = self._runs.pop(key, None)
        if runs:
            if keep_slots:
                orphans = self._orphans.setdefault(key, {})
                for handle, count in runs.items():
                    orphans[handle] = orphans.get(handle, 0) + count
            else:
                for count in runs.values():
                    self._running -= count
        return list(conn.jobs.values())

    def pump(self) -> WorkerStep[K]:
        """The grabs the free slots call for now, on the connections that may have work.

        Every other call grabs as it goes; this is for after :meth:`disconnect`,
        whose connection may have held the one outstanding grab: without it a
        worker with one slot and two servers would leave the other server
        unasked for as long as the lost one stays away.
        """
        step: WorkerStep[K] = WorkerStep()
        self._pump(step)
        return step

    def drain(self) -> None:
        """Stop grabbing; the jobs in hand may still be finished."""
        self.draining = True

    def receive_data(self, key: K, data: bytes) -> WorkerStep[K]:
        """Feed bytes from connection ``key``; returns what to write and what to run."""
        conn = self.connections[key]
        conn.receive_data(data)
        step: WorkerStep[K] = WorkerStep()
        runs = self._runs[key]
        out = []
        for event in conn.events():
            kind = type(event)
            if kind is JobAssign:
                step.jobs.append((key, event))  # type: ignore[arg-type]
                handle: bytes = event.handle  # type: ignore[attr-defined]
                runs[handle] = runs.get(handle, 0) + 1
                self._running += 1
                self._want(key)
                if self._unverified:
                    self._unverified.discard(key)
            elif kind is NoJob:
                if self._unverified:
                    self._unverified.discard(key)
                if not conn.sleeping and not conn.outstanding_grabs:
                    out.append(conn.send(PreSleep()))
            elif kind is Noop:
                self._want(key)
            elif kind is Error:
                step.errors.append((key, event))  # type: ignore[arg-type]
                if (key in self._unverified and conn.outstanding_grabs
                        and event.request is None  # type: ignore[attr-defined]
                        and event.code.lower() in _REFUSALS):  # type: ignore[attr-defined]
                    self._grab_refused(key, conn, event)  # type: ignore[arg-type]
        if out:
            step.writes[key] = b"".join(out)
        self._pump(step)
        return step

    def send(self, key: K, event: WorkUpdate) -> WorkerStep[K]:
        """Report on a job in hand; a final report frees its slot and may grab again.

        A report on a job whose connection closed writes nothing; if the job
        kept its slot (``disconnect(keep_slots=True)``), its final report frees it.
        So does a report from the second run of a job given to this worker twice
        (the server took it back after its CAN_DO_TIMEOUT) once the other run's
        result went out.  A report on a handle never given raises LocalProtocolError.
        The step returned only writes (the report, and the grabs a freed slot calls for).
        """
        final = type(event) in _FINAL_STATES
        handle = event.handle
        step: WorkerStep[K] = WorkerStep()
        if self._orphans:
            orphans = self._orphans.get(key)
            if orphans is not None and handle in orphans:
                if final:
                    self._end(orphans, handle)
                    if not orphans:
                        del self._orphans[key]
                    self._pump(step)
                return step
        conn = self.connections.get(key)
        if conn is None:
            return step
        runs = self._runs[key]
        if handle in conn.jobs:
            if type(event) is WorkStatus:  # the only report with numbers to check
                check_report(event)
            step.writes[key] = conn.send(event)
        elif handle not in runs:
            # Refused here, before the connection sees it: a refused send would
            # put the connection in its ERROR state, and this is not worth it.
            raise LocalProtocolError(
                f"cannot send {event.packet_type.name} for job handle {event.handle!r}: "
                f"no such job in hand")
        # (else: the other run of a job whose result went out: written nowhere)
        if final:
            self._end(runs, handle)
            self._pump(step)
        return step

    def _end(self, runs: dict[bytes, int], handle: bytes) -> None:
        """One run of ``handle`` (in a connection's table) reported its end: its slot is free."""
        left = runs[handle] - 1
        if left:
            runs[handle] = left
        else:
            del runs[handle]
        self._running -= 1

    def _grab_refused(self, key: K, conn: WorkerConnection, error: Error) -> None:
        """The server answered the first grab with ERROR: it does not know that packet."""
        # The server answers in order, so the ERROR stands for the oldest grab,
        # which will get no JOB_ASSIGN / NO_JOB: forget it, or no slot frees.
        refused = conn._grabs.popleft()
        if refused is GrabJob or not self.grab_fallback:
            raise GrabRefused(
                f"the job server refused {refused.packet_type.name} "
                f"({error.code.decode(errors='replace')}: "
                f"{error.text.decode(errors='replace').strip()}); this worker cannot get "
                f"jobs from it" + ("" if refused is GrabJob else
                                   " (grab_fallback=True would use GRAB_JOB)"))
        self._plain_grab.add(key)
        self._want(key)

    def _want(self, key: K) -> None:
        if key not in self._hungry:
            self._hungry.append(key)

    def _pump(self, step: WorkerStep[K]) -> None:
        """Send grabs for free slots, one outstanding grab per connection, in turn."""
        hungry = self._hungry
        if self.draining or not hungry or self._running >= self.max_jobs:
            # (No slot can be free with every one running a job: the usual case
            # right after a job arrives, answered without asking each connection.)
            return
        free = self.free_slots
        for _ in range(len(hungry)):
            if free <= 0:
                break
            key = hungry.popleft()
            conn = self.connections.get(key)
            if conn is None:
                continue
            if conn.outstanding_grabs:
                hungry.append(key)
                continue
            grab = GrabJob if key in self._plain_grab else self.grab
            step.writes[key] = step.writes.get(key, b"") + conn.grab(grab)
            free -= 1


class WorkerDriver(Generic[K]):
    """A worker adapter's per-job path: bytes read in, jobs started, bytes written out.

    The adapter binds its read callbacks to :meth:`receive` and its handlers'
    reports to :meth:`report`; this feeds the :class:`WorkerSession`, writes
    what it calls for through ``writers`` (each open connection's write
    function, by key) and hands every job given to ``start(key, assign)``.
    ``start`` returns ``(key, final report)`` when the job ended at once (an
    async handler that returned without waiting): the report is sent here, in
    the read that brought the job, so that such a job costs the adapter one
    call.  It returns ``None`` when the job goes on in a task or a thread,
    which reports through :meth:`report` as it goes, and through
    :meth:`finish` when it ends.

    ``stop_after`` (if set) drains the session once that many jobs were
    started, before the last one starts (so that one, ending at once, grabs
    no more).  ``on_error(key, error)`` is told of every ERROR the servers
    send, ``on_refused(key, report, exc)`` of a report the session refused
    (the handler's to lose, not the worker's), and ``on_idle()`` when a final
    report leaves a draining worker with nothing to run.  ``ended`` counts the
    final reports made.  The driver does no I/O: the functions it is given do.
    """

    __slots__ = ("buffers", "ended", "on_error", "on_idle", "on_refused", "reading", "session",
                 "start", "started", "stop_after", "writers")

    def __init__(self, session: WorkerSession[K],
                 start: Callable[[K, JobAssign], tuple[K, WorkUpdate] | None],
                 writers: dict[K, Callable[[bytes], object]],
                 on_error: Callable[[K, Error], object],
                 on_refused: Callable[[K, WorkUpdate, Exception], object],
                 on_idle: Callable[[], object], stop_after: int | None = None,
                 buffers: dict[K, list[bytes]] | None = None) -> None:
        self.session = session
        # A connection's output during its own read, if its link gives a buffer it
        # sends when the read's callback returns: an append, not a write call.
        self.buffers: dict[K, list[bytes]] = {} if buffers is None else buffers
        self.reading: K | None = None
        self.start = start
        self.writers = writers
        self.on_error = on_error
        self.on_refused = on_refused
        self.on_idle = on_idle
        self.stop_after = stop_after
        self.started = 0
        self.ended = 0

    def receive(self, key: K, data: bytes) -> None:
        """Bytes read on connection ``key``: carry out what they call for, in order:
        the writes, the errors, then the jobs.

        Raises what :meth:`WorkerSession.receive_data` raises (the connection
        must then close).
        """
        session = self.session
        step = session.receive_data(key, data)
        self.reading = key
        try:
            if step.writes:
                self.write(step.writes)
            if step.errors:
                for k, error in step.errors:
                    self.on_error(k, error)
            if step.jobs:
                for k, assign in step.jobs:
                    self.started += 1
                    if self.stop_after is not None and self.started >= self.stop_after:
                        session.drain()
                    ended = self.start_job(k, assign)
                    if ended is not None:
                        self.report(ended[0], ended[1])
        finally:
            self.reading = None

    def start_job(self, key: K, assign: JobAssign) -> tuple[K, WorkUpdate] | None:
        """Start job ``assign`` from connection ``key``: ``start``'s answer (a subclass
        may start jobs itself, as :class:`~gearman_proto.policy.HandlerDriver` does)."""
        return self.start(key, assign)

    def write(self, writes: dict[K, bytes]) -> None:
        """Write a step's bytes (such as those of :meth:`WorkerSession.connect` or
        :meth:`WorkerSession.pump`, which only write)."""
        writers = self.writers
        reading = self.reading
        for key, data in writes.items():
            if reading is not None and key == reading:
                buffer = self.buffers.get(key)
                if buffer is not None:
                    buffer.append(data)
                    continue
            write = writers.get(key)
            if write is not None:
                write(data)

    def finish(self, ended: tuple[K, WorkUpdate] | None) -> None:
        """A job that went on in a task ended: its final report, if one is still due."""
        if ended is not None:
            self.report(ended[0], ended[1])

    def report(self, key: K, event: WorkUpdate) -> None:
        """A handler's report on a job in hand (its end included): send it, write it."""
        session = self.session
        try:
            step = session.send(key, event)
        except Exception as exc:  # never given, say: refused to the handler alone
            self.on_refused(key, event, exc)
            return
        if step.writes:
            self.write(step.writes)
        if type(event) in _FINAL_STATES:
            self.ended += 1
            if session.draining and session.idle:
                self.on_idle()
