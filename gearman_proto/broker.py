"""JobServer: the job server's logic (queues, workers, results), with no I/O.

A :class:`JobServer` takes ``(connection id, event)`` pairs -- the events a
:class:`~gearman_proto.server.ServerConnection` decodes -- and returns the
``(connection id, event)`` pairs to send, in send order.  It never reads a
clock: time-driven work (CAN_DO_TIMEOUT expiry, SUBMIT_JOB_EPOCH jobs coming
due) happens in :meth:`JobServer.advance`, and :meth:`JobServer.next_deadline`
says when that must next be called.  An adapter is therefore a loop::

    server.advance(time.time())          # before each batch: timers count from here
    for conn_id, event in events_read:   # one batch of reads
        send(server.receive(conn_id, event))
    send(server.commit())                # group commit of the durable store

Behaviour follows gearmand 1.1.20 (PROTOCOL-NOTES §4, admin §3), checked by
hand against the real server where the notes left doubt; comments marked
"gearmand 1.1.20:" record what was observed.

Semantics worth knowing
-----------------------
* Retries (``job_retries``): a job is *lost* when its worker disconnects, drops
  the function (CANT_DO / RESET_ABILITIES) or overruns its CAN_DO_TIMEOUT.  A
  lost job is requeued at the end of its priority queue with its status reset,
  unless the limit is reached: ``None`` = requeue forever, ``0`` = never (the
  first loss fails the job), ``N`` = at most N requeues (N+1 runs).  A dropped
  job sends WORK_FAIL to its clients and leaves the store.  gearmand 1.1.20's
  ``--job-retries=N`` counts *runs* instead: 0 is unlimited, N>0 fails the job
  at its Nth loss (checked by hand: ``-j 1`` fails on the first loss, ``-j 2``
  on the second).  So gearmand's ``-j N`` (N>0) is our ``job_retries=N-1``.
  A WORK_FAIL from a worker is final and never retried (as gearmand).
* A lost foreground job whose clients have all gone is discarded, not requeued.

Deliberate differences from gearmand 1.1.20
-------------------------------------------
* Priority is global across a worker's functions: every HIGH job of any of its
  functions before any NORMAL one, oldest first among equals (PROTOCOL-NOTES
  §4.1; gearmand HEAD does this).  gearmand 1.1.20 walks the worker's functions
  newest registration first and takes the first with any job, so a LOW job can
  beat a HIGH one of another function (checked by hand).
* SUBMIT_JOB_EPOCH jobs are woken on time: sleeping workers get NOOP when the
  job comes due (via :meth:`~JobServer.advance`), and a not-yet-due job neither
  counts as work for PRE_SLEEP nor can be grabbed.  gearmand 1.1.20 has no
  timer (issue #101): it NOOPs sleeping workers when the job is submitted,
  though it cannot run yet, and never when it comes due (tests/interop shows
  both).
* One CAN_DO_TIMEOUT timer per job, started when it is assigned, not one per
  connection; PRE_SLEEP does not cancel it (a worker may sleep while it runs
  jobs asynchronously).
* A queued foreground job whose clients all left, and a cancelled job, leave
  the server at once: ``status`` stops counting them, ``show jobs`` never shows
  the IGNORE flag, and a new submission with the same unique id creates a new
  job.  gearmand 1.1.20 keeps them flagged until a worker reaches them, and
  attaches such a new submitter to the doomed job, which then never answers
  (checked by hand).
* ``cancel job`` on a running job detaches it from its worker, whose later
  WORK_* get JOB_NOT_FOUND; gearmand 1.1.20 answers them nothing, still
  forwards WORK_STATUS to the client it told WORK_FAIL, and drops the rest.
* ``drop function`` on a function with queued jobs fails those jobs (WORK_FAIL
  to their clients, removed from the store).  gearmand 1.1.20 answers OK and
  orphans them: still in ``show jobs``, never assigned, clients waiting forever.
* CAN_DO is idempotent (a repeat only updates the timeout).  gearmand 1.1.20
  registers the function twice: ``workers`` lists it twice and ``status``
  counts the worker twice.
* CAN_DO for a function with waiting work from a worker that sleeps wakes it
  with NOOP; gearmand 1.1.20 leaves it asleep beside the job.
* A 64-byte unique id is kept whole.  gearmand 1.1.20 accepts it but truncates
  it to 63 bytes on storage, sends it in JOB_ASSIGN_UNIQ as 64 bytes with a NUL
  inside, and never coalesces it.  65 bytes or more is refused, as gearmand.
* ``GET_STATUS_UNIQUE -`` does not find jobs submitted with unique ``-`` (they
  are keyed by their data); in gearmand 1.1.20 it finds one only when its data
  hashes like ``-``.
* A WORK_EXCEPTION forwarded as WORK_FAIL (to a client without the
  ``exceptions`` option) carries the bare handle.  gearmand 1.1.20 sends the
  handle with its NUL terminator inside the packet, which libgearman clients
  (the ``gearman`` tool) do not match to their job, so they wait until their
  timeout (checked by hand; tests/interop shows both).
* Store rows are keyed by a store-assigned key, never by (unique, function),
  so two background jobs cannot overwrite each other (gearmand issue #80).
* Job handle counters do not wrap at 2**32; ``workers``, ``status`` and
  ``show jobs`` list in creation order rather than hash order.
* ``admin_changes`` (not in gearmand) can refuse the admin commands that
  change state -- ``cancel job``, ``create function``, ``drop function``,
  ``maxqueue`` and ``shutdown`` -- to every peer (``"none"``) or to peers not
  on a loopback address (``"loopback"``).  A refused command is answered
  ``ERR PERMISSION_DENIED Command+not+allowed+from+this+peer`` in gearmand's
  ERR format and changes nothing; the connection stays open, and the
  read-only commands still work.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from . import admin
from .events import (
    AdminCommand,
    AdminReply,
    AllYours,
    CanDo,
    CanDoTimeout,
    CantDo,
    ConnectionClosed,
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
    Priority,
    ResetAbilities,
    SetClientId,
    StatusRes,
    StatusResUnique,
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
from .lifecycle import (
    ASSIGN,
    DONE,
    FINISH,
    NEW,
    PENDING,
    PERSIST,
    QUEUE,
    QUEUED,
    RUNNING,
    SCHEDULE,
    SCHEDULED,
    move,
)
from .packets import SERVER_VERSION
from .store import JobStore, StoreBatch, StoredJob, StoreError, StoreKey

__all__ = ["Output", "JobInfo", "JobServer", "CommitTicket", "UNIQUE_MAX", "CLIENT_ID_MAX",
           "AdminChanges", "is_loopback"]

Output = tuple[int, Event]
"""``(connection id, event to send to it)``."""

UNIQUE_MAX: Final = 64
"""Longest unique id (and reducer name) accepted; gearmand 1.1.20 refuses 65 bytes."""
CLIENT_ID_MAX: Final = 127
"""SET_CLIENT_ID is cut to this many bytes, as gearmand 1.1.20 does (checked by hand)."""

ShutdownMode = Literal["immediate", "graceful"]
AdminChanges = Literal["any", "loopback", "none"]
"""Who may run the admin commands that change state (see :class:`JobServer`)."""
JobState = Literal["queued", "scheduled", "running"]

# Job states.  A job is in exactly one place: a function's ready deque
# (QUEUED), the epoch heap (SCHEDULED), a worker (RUNNING), or gone (DONE);
# or it waits for its durable row to be written (PENDING), in no queue at all.
# Deques and heaps are cleaned lazily: an entry whose job changed state is
# skipped when reached, so cancelling or abandoning a job is O(1).
# The moves between them are the table of gearman_proto.lifecycle: each one
# goes through move(), which refuses a move the table does not have.
# The states are lifecycle's Final ints, used by name: compiled code reads them as
# constants (an alias made here would be a module global, looked up by name).
_STATE_NAMES: dict[int, JobState] = {
    QUEUED: "queued", SCHEDULED: "scheduled", RUNNING: "running", PENDING: "queued"}
# Index kinds: how a job can be found by a later submission.
# Constants read per job are Final: compiled, they are constants, not globals.
_NOT_INDEXED: Final = 0
_BY_UNIQUE: Final = 1
_BY_DATA: Final = 2
# Rebuild a deque once this many (and more than half) of its entries are dead.
_COMPACT_MIN: Final = 64
# Bound once: compiled, ``queue.append(job)`` and ``queue.popleft()`` are generic
# method calls, looked up by name per job (deque has no mypyc primitive), where
# these are direct calls (~240 instructions a job less); interpreted, the same.
_append: Final = deque.append
_popleft: Final = deque.popleft

_NOOP: Final = Noop()
_NO_JOB: Final = NoJob()
# The three grabs, by the form of the assignment they ask for (see _assignment).
ASSIGN_PLAIN: Final = 1
ASSIGN_UNIQ: Final = 2
ASSIGN_ALL: Final = 3
_HIGH, _NORMAL, _LOW = Priority.HIGH, Priority.NORMAL, Priority.LOW
# As plain ints (HIGH, NORMAL, LOW): list indexes, which compiled code reads
# natively (an IntEnum member is indexed with through the generic protocol).
_PRIORITIES: Final[tuple[int, ...]] = (int(_HIGH), int(_NORMAL), int(_LOW))

# gearmand 1.1.20's texts for WORK_* about a job the worker does not hold
# (checked by hand; they differ by packet).
_NOT_FOUND_RESULT = b"Job given in work result not found"
_NOT_FOUND_DATA = b"Job does not exist on server"
_NOT_FOUND_EXCEPTION = b"An exception was received for a job that does not exist"
_NOT_EXPECTED = Error(b"INVALID_COMMAND", b"Command not expected")
_ADMIN_NO_FUNCTION = admin.AdminError(b"", b"function not found")
_ADMIN_FUNCTION_BUSY = admin.AdminError(
    b"", b"there are still connected workers or executing clients")
_ADMIN_DENIED = admin.AdminError(b"PERMISSION_DENIED", b"Command+not+allowed+from+this+peer")
# The admin commands that change the server's state (the rest only report).
_ADMIN_CHANGES = (admin.CancelJob, admin.CreateFunction, admin.DropFunction, admin.MaxQueue,
                  admin.Shutdown)


def is_loopback(address: bytes) -> bool:
    """True if ``address`` (as given to :meth:`JobServer.connect`) is a loopback IP.

    ``127.0.0.0/8``, ``::1`` and IPv4-mapped ``::ffff:127.x.y.z``; anything
    that is not an IP address (``b"-"``, a UNIX socket path) is not.
    """
    try:
        ip = ipaddress.ip_address(address.decode("ascii").partition("%")[0])
    except (UnicodeDecodeError, ValueError):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


class _Function:
    """Everything kept per function name: its queues, counts, workers and sleepers."""

    __slots__ = ("completed", "dead", "excepted", "failed", "max_queue", "name", "queues",
                 "ready", "requeued", "running", "scheduled", "sleepers", "submitted",
                 "timed_out", "workers")

    def __init__(self, name: bytes) -> None:
        self.name = name
        # One FIFO per priority.  `ready` counts the live entries, `dead` the
        # entries whose job left the queue some other way (cancel, abandon).
        self.queues: list[deque[_Job]] = [deque(), deque(), deque()]
        self.ready = [0, 0, 0]
        self.dead = [0, 0, 0]
        self.running = 0
        self.scheduled: set[_Job] = set()
        # Registered workers and, of those, the ones asleep and not yet NOOPed,
        # both as insertion-ordered dicts: the wake-up order rotates because a
        # woken worker re-enters at the end when it sleeps again.
        self.workers: dict[int, None] = {}
        self.sleepers: dict[int, None] = {}
        # A tuple of any length to the type checker: compiled, an index into a
        # fixed-length tuple type boxes the whole tuple first.
        self.max_queue: tuple[int, ...] = (0, 0, 0)
        # Jobs submitted, completed, failed, excepted, requeued, timed out, bumped
        # at the few points below; stats.py reads them as `counts`.  Attributes,
        # not a list: compiled, a native int attribute is bumped in place, where
        # a list item is read, unboxed, added to and boxed anew (a new int object
        # past 256) per job.
        self.submitted = 0
        self.completed = 0
        self.failed = 0
        self.excepted = 0
        self.requeued = 0
        self.timed_out = 0

    @property
    def counts(self) -> list[int]:
        """The counters in the order of stats.COUNTERS."""
        return [self.submitted, self.completed, self.failed, self.excepted, self.requeued,
                self.timed_out]

    def total(self) -> int:
        """Jobs of this function in the server: waiting, scheduled and running."""
        ready = self.ready
        return ready[0] + ready[1] + ready[2] + len(self.scheduled) + self.running


class _Job:
    """One job in the server; identity matters (it is the key of sets and heaps)."""

    __slots__ = ("assign_no", "background", "clients", "data", "denominator", "epoch",
                 "function", "handle", "indexed", "numerator", "priority", "reducer",
                 "retries", "seq", "state", "store_key", "unique", "worker")

    def __init__(self, handle: bytes, function: _Function, unique: bytes, data: bytes,
                 priority: Priority, background: bool) -> None:
        self.handle = handle
        self.function = function
        self.unique = unique
        self.data = data
        self.priority = priority
        self.background = background
        self.epoch: int | None = None
        self.reducer: bytes | None = None
        self.store_key: StoreKey | None = None
        # Attached foreground connections; one attached twice appears twice.
        # A tuple: most jobs have none, and a shared () costs nothing.
        self.clients: tuple[int, ...] = ()
        self.worker = -1  # connection running it, or -1
        self.state = NEW
        self.seq = 0  # position in the global arrival order of queued jobs
        self.retries = 0
        self.numerator = 0
        self.denominator = 0
        self.assign_no = 0  # tells a stale CAN_DO_TIMEOUT timer from the current one
        self.indexed = _NOT_INDEXED


class _Conn:
    """One connection: as a worker (abilities, jobs held, sleep) and as a client."""

    __slots__ = ("abilities", "address", "asleep", "attached", "client_id", "exceptions",
                 "id", "jobs", "may_change", "recent", "submitted")

    def __init__(self, conn_id: int, address: bytes, exceptions: bool,
                 may_change: bool = True) -> None:
        self.id = conn_id
        self.address = address
        # May it run the admin commands that change state (admin_changes)?
        self.may_change = may_change
        self.client_id = b"-"
        self.exceptions = exceptions
        # function name -> (function, CAN_DO_TIMEOUT in ms, 0 = none), in
        # registration order.  A function with registered workers is never
        # dropped, so the _Function reference stays the live one.
        self.abilities: dict[bytes, tuple[_Function, int]] = {}
        self.jobs: dict[bytes, _Job] = {}  # running on this worker, by handle
        # The job last assigned to it: still in `jobs` exactly while it is
        # RUNNING with this worker.  The server's fast path compares a result's
        # handle with it before hashing the handle for `jobs`.
        self.recent: _Job | None = None
        # The function it last submitted to (None after that function was
        # dropped): a submission compares its name with this one's before
        # hashing the wire's fresh name bytes for the functions' dictionary.
        self.submitted: _Function | None = None
        self.attached: dict[bytes, _Job] = {}  # foreground jobs it waits for
        # Asleep after PRE_SLEEP and not yet sent a NOOP: the only state in
        # which it may be NOOPed (PROTOCOL-NOTES §4.5).
        self.asleep = False


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A snapshot of one job, for tests, admin tools and adapters."""

    handle: bytes
    function: bytes
    unique: bytes
    data: bytes
    priority: Priority
    background: bool
    state: JobState
    worker: int | None
    """The connection running it, if it is running."""
    clients: tuple[int, ...]
    """Attached foreground connections; one attached twice appears twice."""
    retries: int
    numerator: int
    denominator: int
    epoch: int | None
    reducer: bytes | None
    stored: bool
    """True if the job has a row in the store."""


@dataclass(slots=True)
class CommitTicket:
    """One batch of store writes taken by :meth:`JobServer.begin_commit`.

    Write :attr:`batch` with the store (on any thread, one ticket at a time, in
    order), then hand the ticket back to :meth:`JobServer.end_commit`.
    """

    number: int
    batch: StoreBatch
    jobs: list[tuple[_Job, bool]]
    """The jobs whose rows the batch adds; True for a foreground job made durable."""


class JobServer:
    """The job server's state machine: events in, ``(connection id, event)`` out.

    ``handle_prefix`` starts every job handle (``prefix:1``, ``prefix:2``, ...).
    ``job_retries`` limits requeues of lost jobs (see the module docstring);
    ``worker_wakeup`` is how many sleeping workers one new job wakes (0 = all).
    ``exceptions=True`` treats every connection as having asked for the
    ``exceptions`` option, like gearmand's ``--exceptions``.  ``store`` keeps
    background jobs (replayed now, on construction).  ``allow_shutdown`` enables
    the admin ``shutdown [graceful]`` command, which only sets
    :attr:`shutdown_requested`.  ``admin_changes`` says who may run the admin
    commands that change state (``cancel job``, ``create function``, ``drop
    function``, ``maxqueue``, ``shutdown``): ``"any"`` peer (the default, as
    gearmand), only peers connected from a ``"loopback"`` address, or
    ``"none"``; others get ``ERR PERMISSION_DENIED``.  ``pid``, ``version``
    and ``verbose`` are what the admin ``getpid``, ``version`` and ``verbose``
    commands report.  ``now`` is the current Unix time.
    """

    def __init__(self, *, handle_prefix: bytes = b"H:gearman-proto",
                 job_retries: int | None = None, worker_wakeup: int = 0,
                 exceptions: bool = False, store: JobStore | None = None,
                 allow_shutdown: bool = False, admin_changes: AdminChanges = "any",
                 pid: int = 0, version: bytes = SERVER_VERSION.encode(),
                 verbose: bytes = b"ERROR", now: float = 0.0) -> None:
        if job_retries is not None and job_retries < 0:
            raise ValueError("job_retries must be None (unlimited) or >= 0")
        if worker_wakeup < 0:
            raise ValueError("worker_wakeup must be >= 0 (0 wakes every sleeping worker)")
        if admin_changes not in ("any", "loopback", "none"):
            raise ValueError("admin_changes must be 'any', 'loopback' or 'none'")
        self.handle_prefix = handle_prefix
        self.job_retries = job_retries
        self.worker_wakeup = worker_wakeup
        self.exceptions = exceptions
        self.allow_shutdown = allow_shutdown
        self.admin_changes: AdminChanges = admin_changes
        self.pid = pid
        self.version = version
        self.verbose = verbose
        self.shutdown_requested: ShutdownMode | None = None
        """Set by the admin ``shutdown`` command (only with ``allow_shutdown``)."""

        self._now = now
        self._prefix = handle_prefix + b":"
        self._next_handle = 1
        # The global arrival order (queued jobs' seq, heap tie-breaks): a plain int,
        # which compiled code counts natively.
        self._seq = 0
        self._conns: dict[int, _Conn] = {}
        self._functions: dict[bytes, _Function] = {}
        self._jobs: dict[bytes, _Job] = {}  # every live job, by handle, in creation order
        # Coalescing indexes (PROTOCOL-NOTES §4.3): unique -> function -> job,
        # which also serves GET_STATUS_UNIQUE (a lookup by unique alone); and
        # (function, data) -> job for the special unique "-".  gearmand 1.1.20
        # keeps the two apart: "-" with data X never meets an explicit unique X
        # (checked by hand).
        self._by_unique: dict[bytes, dict[bytes, _Job]] = {}
        self._by_data: dict[tuple[bytes, bytes], _Job] = {}
        # Heaps of (time, tie-break, job, ...) entries, cleaned lazily.
        self._epochs: list[tuple[float, int, _Job]] = []
        self._timers: list[tuple[float, int, _Job, int]] = []
        # Per priority, the functions with a job ready at it: a GRAB looks at
        # these or at the worker's functions, whichever are fewer, so a worker
        # that can do 10,000 functions does not scan them all for each GRAB.
        self._ready: list[dict[_Function, None]] = [{}, {}, {}]

        self._store = store
        self._durable = store is not None and store.durable
        # Durability.  The rows added and removed since the last begin_commit,
        # and the jobs whose rows they add; the next key to hand out.
        self._batch = StoreBatch()
        self._pending: list[tuple[_Job, bool]] = []
        self._next_key: StoreKey = 1
        self._commit_no = 1  # the number of the batch begin_commit takes next
        # Jobs whose rows are not written yet (this batch or one being written),
        # with the connections a background submission acknowledged against them.
        self._unwritten: dict[_Job, list[int]] = {}
        # Connections whose output waits for a commit (-> the batch number it
        # waits for), and that output, each item with the batch number.
        self._holding: dict[int, int] = {}
        self._held: list[tuple[int, Output]] = []

        self._handlers: dict[type[Event], Callable[[_Conn, Any, list[Output]], None]] = {
            SubmitJob: self._on_submit,
            GrabJob: self._on_grab_job,
            GrabJobUniq: self._on_grab_job_uniq,
            GrabJobAll: self._on_grab_job_all,
            WorkComplete: self._on_work_end,
            WorkFail: self._on_work_end,
            WorkException: self._on_work_exception,
            WorkStatus: self._on_work_status,
            WorkData: self._on_work_data,
            WorkWarning: self._on_work_data,
            PreSleep: self._on_pre_sleep,
            CanDo: self._on_can_do,
            CanDoTimeout: self._on_can_do,
            CantDo: self._on_cant_do,
            ResetAbilities: self._on_reset_abilities,
            SubmitJobEpoch: self._on_submit_epoch,
            SubmitReduceJob: self._on_submit_reduce,
            SubmitJobSched: self._on_not_expected,
            AllYours: self._on_not_expected,
            GetStatus: self._on_get_status,
            GetStatusUnique: self._on_get_status_unique,
            EchoReq: self._on_echo,
            OptionReq: self._on_option,
            SetClientId: self._on_set_client_id,
            AdminCommand: self._on_admin,
            ConnectionClosed: self._on_connection_closed,
        }
        if store is not None:
            self._replay(store)

    # -- the public verbs ------------------------------------------------------------

    def connect(self, conn_id: int, address: bytes = b"-") -> None:
        """A peer connected: ``workers`` shows ``conn_id`` as its FD and ``address`` as its IP."""
        if conn_id in self._conns:
            raise ValueError(f"connection {conn_id} is already connected")
        changes = self.admin_changes
        may_change = changes == "any" or (changes == "loopback" and is_loopback(address))
        self._conns[conn_id] = _Conn(conn_id, address, self.exceptions, may_change)

    def receive(self, conn_id: int, event: Event) -> list[Output]:
        """Handle one event from connection ``conn_id``; return what to send, in order.

        Events for a connection that is not connected raise ``KeyError``, except
        :class:`ConnectionClosed`, which like :meth:`disconnect` may be repeated.
        """
        conn = self._conns.get(conn_id)
        if conn is None:
            if type(event) is ConnectionClosed:
                return []
            raise KeyError(f"connection {conn_id} is not connected")
        out: list[Output] = []
        try:
            handler = self._handlers[type(event)]
        except KeyError:
            # A server-to-peer message (JOB_CREATED, NOOP, ...) sent to the
            # server: gearmand answers all of them alike.
            handler = self._on_not_expected
        handler(conn, event, out)
        if self._holding:
            return self._hold(out)
        return out

    def disconnect(self, conn_id: int) -> list[Output]:
        """The peer is gone: requeue the jobs it ran, detach it from the jobs it waited for."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return []
        out: list[Output] = []
        self._detach_client(conn)
        # Leave every function's worker and sleeper lists first, so the
        # requeues below cannot NOOP the departing connection.
        if conn.asleep:
            self._unsleep(conn)
        for function, _timeout in conn.abilities.values():
            del function.workers[conn_id]
        conn.abilities.clear()
        for job in list(conn.jobs.values()):
            self._lose(job, out)
        del self._conns[conn_id]
        if conn_id in self._holding:
            del self._holding[conn_id]
            self._held = [item for item in self._held if item[1][0] != conn_id]
        return self._hold(out) if self._holding else out

    def waiting_on(self, conn_id: int) -> int:
        """How many foreground jobs connection ``conn_id`` waits for (0 if unknown)."""
        conn = self._conns.get(conn_id)
        return 0 if conn is None else len(conn.attached)

    def clients_of(self, conn_id: int) -> list[int]:
        """The connections waiting for the jobs that connection ``conn_id`` runs."""
        conn = self._conns.get(conn_id)
        if conn is None or not conn.jobs:
            return []
        return [cid for job in conn.jobs.values() for cid in job.clients]

    @property
    def running_count(self) -> int:
        """Jobs running on a worker now."""
        return sum(f.running for f in self._functions.values())

    def is_busy(self, conn_id: int) -> bool:
        """True if connection ``conn_id`` has a reason to be silent.

        It runs a job, waits for a foreground job's result, or sleeps as a
        worker after PRE_SLEEP.  An idle-connection timeout spares these: a
        peer in them may legitimately send nothing for a long time.
        """
        conn = self._conns.get(conn_id)
        return conn is not None and bool(conn.jobs or conn.attached or conn.asleep)

    def advance(self, now: float) -> list[Output]:
        """Tell the server the time is ``now`` (Unix seconds); run what came due.

        Epoch jobs that came due are queued (waking sleeping workers) and
        CAN_DO_TIMEOUT timers that expired requeue their jobs.  Call it before
        each batch of :meth:`receive` calls -- a timer started while handling
        an event counts from the last time given here -- and whenever
        :meth:`next_deadline` has passed.
        """
        self._now = now
        epochs = self._epochs
        timers = self._timers
        if not epochs and not timers:
            return []  # called every turn of a server's loop; usually nothing is timed
        out: list[Output] = []
        while epochs and epochs[0][0] <= now:
            job = heapq.heappop(epochs)[2]
            if job.state == SCHEDULED:
                job.function.scheduled.discard(job)
                self._enqueue(job, out)
        while timers and timers[0][0] <= now:
            _deadline, _tie, job, assign_no = heapq.heappop(timers)
            if job.state == RUNNING and job.assign_no == assign_no:
                job.function.timed_out += 1
                self._lose(job, out)
        return self._hold(out) if self._holding else out

    def next_deadline(self) -> float | None:
        """When :meth:`advance` must next be called, or ``None`` if nothing is timed."""
        epochs, timers = self._epochs, self._timers
        while epochs and epochs[0][2].state != SCHEDULED:
            heapq.heappop(epochs)
        while timers and (timers[0][2].state != RUNNING
                          or timers[0][2].assign_no != timers[0][3]):
            heapq.heappop(timers)
        # Asked after every batch of reads, and usually both heaps are empty:
        # no list, no min() for that case.
        if not timers:
            return epochs[0][0] if epochs else None
        if not epochs:
            return timers[0][0]
        return min(epochs[0][0], timers[0][0])

    def commit(self) -> list[Output]:
        """Write the batch to the store and release the output held for it, in order.

        With a durable store, JOB_CREATED for a stored job -- and everything
        after it to the same connection, to keep order -- waits here, and the
        job reaches a worker only once its row is written.  Call it once per
        batch of reads: the store writes once for the whole batch.  If the
        store fails, the batch's submissions get QUEUE_ERROR instead (see
        :meth:`end_commit`); nothing is raised.
        """
        ticket = self.begin_commit()
        if ticket is None:
            return []
        return self.end_commit(ticket, self.write(ticket))

    def begin_commit(self) -> CommitTicket | None:
        """Take the batch for the store (``None`` if nothing writes or waits).

        The two halves of :meth:`commit`, for a server that writes on another
        thread: :meth:`write` the ticket there, then :meth:`end_commit` it
        here.  Input handled meanwhile goes to the next batch.
        """
        if not self._held and not self._pending and not self._batch:
            return None
        ticket = CommitTicket(self._commit_no, self._batch, self._pending)
        self._commit_no += 1
        self._batch = StoreBatch()
        self._pending = []
        return ticket

    def write(self, ticket: CommitTicket) -> StoreError | None:
        """Write the ticket's batch (thread-safe: it touches only the store); the error, if any.

        Every exception of the store is caught: a store that fails in an
        unforeseen way costs its batch, never the server.
        """
        if not ticket.batch or self._store is None:
            return None
        try:
            self._store.write(ticket.batch)
        except StoreError as exc:
            return exc
        except Exception as exc:  # a store bug or an unwrapped driver error
            return StoreError(f"{type(exc).__name__}: {exc}")
        return None

    def end_commit(self, ticket: CommitTicket, error: StoreError | None = None
                   ) -> list[Output]:
        """The ticket's batch was written (or failed with ``error``): release its output.

        Written: its jobs are queued (waking workers) and JOB_CREATED goes out.
        Failed: each submission of the batch gets ``ERROR QUEUE_ERROR`` with
        the store's message instead of JOB_CREATED; its new jobs are dropped
        (no worker ever saw them), a foreground job a background submission
        coalesced onto stays foreground, and the batch's removals -- and the
        removal of the rows it tried to add, in case the store committed them
        after all -- go with the next batch.
        """
        out: list[Output] = []
        unwritten = self._unwritten
        refused: set[tuple[int, bytes]] = set()  # (connection, handle) to answer QUEUE_ERROR
        gone: set[bytes] = set()  # handles of dropped jobs: every JOB_CREATED for them
        if error is None:
            for job, promoted in ticket.jobs:
                unwritten.pop(job, None)
                if promoted or job.state != PENDING:
                    continue  # cancelled meanwhile
                if job.epoch is not None and job.epoch > self._now:
                    self._schedule(job)
                else:
                    self._enqueue(job, out)
        else:
            # Its removals are tried again, and so are its rows' deletions: a
            # write whose answer was lost with the connection may have committed.
            self._batch.removes[:0] = [*ticket.batch.removes,
                                       *(key for key, _ in ticket.batch.adds)]
            for job, promoted in ticket.jobs:
                acked = unwritten.pop(job, ())
                if promoted:
                    refused.update((cid, job.handle) for cid in acked)
                    if job.store_key is not None and job.state != DONE:
                        job.store_key = None
                        job.background = False
                        if not job.clients and job.state == QUEUED:
                            self._finish(job)
                elif job.state == PENDING:
                    job.store_key = None  # never written: nothing to remove
                    gone.add(job.handle)
                    self._finish(job)
        number = ticket.number
        send: list[Output] = []
        keep: list[tuple[int, Output]] = []
        if refused or gone:
            text = str(error).encode("utf-8", "replace")
            for entry in self._held:
                cid, event = entry[1]
                if type(event) is JobCreated and (event.handle in gone
                                                  or (cid, event.handle) in refused):
                    entry = (entry[0], (cid, Error(b"QUEUE_ERROR", text)))
                if entry[0] <= number:
                    send.append(entry[1])
                else:
                    keep.append(entry)
        else:
            for entry in self._held:
                if entry[0] <= number:
                    send.append(entry[1])
                else:
                    keep.append(entry)
        self._held = keep
        if keep:
            self._holding = {cid: n for cid, n in self._holding.items() if n > number}
        else:
            self._holding.clear()
        if out:
            send.extend(self._hold(out) if self._holding else out)
        return send

    # -- introspection ------------------------------------------------------------------

    @property
    def durable(self) -> bool:
        """True if the store is durable: JOB_CREATED for stored jobs waits for its write."""
        return self._durable

    @property
    def now(self) -> float:
        """The time last given to :meth:`advance` (or the constructor)."""
        return self._now

    @property
    def job_count(self) -> int:
        """Jobs in the server: queued, scheduled or running."""
        return len(self._jobs)

    @property
    def connection_ids(self) -> list[int]:
        """Live connections, in the order they connected."""
        return list(self._conns)

    @property
    def commit_pending(self) -> bool:
        """True if :meth:`commit` would commit the store (it was written since the last)."""
        return self._store is not None and bool(self._batch)

    @property
    def held_count(self) -> int:
        """Outputs waiting for :meth:`commit`."""
        return len(self._held)

    def job(self, handle: bytes) -> JobInfo | None:
        """A snapshot of the job ``handle``, or ``None`` if the server does not have it."""
        job = self._jobs.get(handle)
        return None if job is None else self._info(job)

    def jobs(self) -> list[JobInfo]:
        """Snapshots of every job, oldest first."""
        return [self._info(job) for job in self._jobs.values()]

    def status_rows(self) -> list[admin.StatusRow]:
        """What ``status`` reports: per function, total (queued + running), running, workers."""
        return [admin.StatusRow(f.name, f.total(), f.running, len(f.workers))
                for f in self._functions.values()]

    def priority_status_rows(self) -> list[admin.PriorityStatusRow]:
        """What ``prioritystatus`` reports: per function, jobs not running, per priority.

        Scheduled epoch jobs count as waiting NORMAL jobs, as in gearmand.
        """
        return [admin.PriorityStatusRow(f.name, f.ready[0], f.ready[1] + len(f.scheduled),
                                        f.ready[2], len(f.workers))
                for f in self._functions.values()]

    def worker_rows(self) -> list[admin.WorkerRow]:
        """What ``workers`` reports: every connection, clients included.

        A worker's functions are listed newest registration first, as gearmand
        1.1.20 lists them (it prepends each CAN_DO to the connection's list).
        """
        return [admin.WorkerRow(c.id, c.address, c.client_id, tuple(reversed(c.abilities)))
                for c in self._conns.values()]

    def _info(self, job: _Job) -> JobInfo:
        return JobInfo(
            handle=job.handle, function=job.function.name, unique=job.unique, data=job.data,
            priority=job.priority, background=job.background, state=_STATE_NAMES[job.state],
            worker=job.worker if job.state == RUNNING else None,
            clients=job.clients, retries=job.retries, numerator=job.numerator,
            denominator=job.denominator, epoch=job.epoch, reducer=job.reducer,
            stored=job.store_key is not None)

    # -- output held for durability ---------------------------------------------------

    def _hold(self, out: list[Output]) -> list[Output]:
        """Move output for connections waiting on a commit to the held list."""
        holding, held = self._holding, self._held
        send: list[Output] = []
        for item in out:
            number = holding.get(item[0])
            if number is None:
                send.append(item)
            else:
                held.append((number, item))
        return send

    # -- submissions -------------------------------------------------------------------

    def _on_submit_epoch(self, conn: _Conn, event: SubmitJobEpoch, out: list[Output]) -> None:
        self._on_submit(conn, event, out, event.epoch)

    def _on_submit_reduce(self, conn: _Conn, event: SubmitReduceJob,
                          out: list[Output]) -> None:
        # The event says NORMAL priority, always (PROTOCOL-NOTES §2); `aggregate`
        # is ignored, as gearmand does.
        self._on_submit(conn, event, out, None, event.reducer)

    def _on_submit(self, conn: _Conn, event: SubmitJob | SubmitJobEpoch | SubmitReduceJob,
                   out: list[Output], epoch: int | None = None,
                   reducer: bytes | None = None) -> None:
        """Every submission event carries its function, unique, data, priority and
        whether it is background (as class attributes where they are fixed)."""
        job = self._submit(conn, event.function, event.unique, event.data, event.priority,
                           event.background, epoch, reducer, event, out)
        if job is not None:
            out.append((conn.id, JobCreated(job.handle)))
            self._place(job, out)

    def _submit(self, conn: _Conn, name: bytes, unique: bytes, data: bytes,
                priority: Priority, background: bool, epoch: int | None,
                reducer: bytes | None, request: Event | None,
                out: list[Output]) -> _Job | None:
        """Accept (or coalesce, or refuse) one submission (PROTOCOL-NOTES §4.2-4.3, §4.14).

        The one implementation for both of the hub's paths (``_on_submit`` and
        the server's fast path).  A refusal (an ERROR naming ``request``), and
        JOB_CREATED for a coalesced or a durable submission, are appended to
        ``out`` and ``None`` returned.  Otherwise the new job is returned: the
        caller tells the submitter its handle (JOB_CREATED), then calls
        :meth:`_place`, so that JOB_CREATED goes before any NOOP it causes.
        """
        cid = conn.id
        # gearmand 1.1.20 refuses 65 bytes and more, for the reducer too
        # (checked by hand); see the module docstring about 64.
        if len(unique) > UNIQUE_MAX or (reducer is not None and len(reducer) > UNIQUE_MAX):
            out.append((cid, Error(b"ARGUMENT_TOO_LARGE", b"Unique value too large",
                                   request=request)))
            return None
        job: _Job | None = None
        if unique:
            if unique == b"-":
                if data:  # "-" with empty data never coalesces
                    job = self._by_data.get((name, data))
            else:
                by_function = self._by_unique.get(unique)
                if by_function is not None:
                    job = by_function.get(name)
        if job is not None:
            # Coalesced: the existing handle, no maxqueue check; a foreground
            # submitter is attached even to a background job (§4.3).
            if not background:
                job.clients += (cid,)
                conn.attached[job.handle] = job
            elif job.store_key is None and self._store is not None:
                # Onto a foreground job: it becomes durable (stored, and kept
                # when its foreground clients leave), or the submission is refused.
                refused = self._store_job(job, cid, promoted=True)
                if refused is not None:
                    out.append((cid, Error(b"QUEUE_ERROR", refused, request=request)))
                    return None
            elif job in self._unwritten:
                self._unwritten[job].append(cid)
            if job in self._unwritten:
                self._holding[cid] = self._commit_no
            out.append((cid, JobCreated(job.handle)))
            return None

        function = conn.submitted
        if function is None or function.name != name:
            function = self._functions.get(name)
            if function is None:
                function = self._functions[name] = _Function(name)
            conn.submitted = function
        level: int = priority
        limit = function.max_queue[level]
        if limit and function.total() >= limit:
            out.append((cid, Error(b"QUEUE_ERROR", b"Job queue is full", request=request)))
            return None
        job = self._new_job(function, unique, data, priority, background, epoch, reducer, None)
        function.submitted += 1
        if not background:
            job.clients = (cid,)
            conn.attached[job.handle] = job
        elif self._store is not None:
            job.state = move(job.state, PERSIST)  # in no queue (yet)
            refused = self._store_job(job, cid, promoted=False)
            if refused is not None:
                self._finish(job)
                out.append((cid, Error(b"QUEUE_ERROR", refused, request=request)))
                return None
            if self._durable:
                # Queued only once its row is written: see end_commit.
                self._holding[cid] = self._commit_no
                out.append((cid, JobCreated(job.handle)))
                return None
        return job

    def _place(self, job: _Job, out: list[Output]) -> None:
        """Queue a job :meth:`_submit` accepted, or park it until its epoch."""
        epoch = job.epoch
        if epoch is not None and epoch > self._now:
            self._schedule(job)
        else:
            self._enqueue(job, out)

    def _store_job(self, job: _Job, cid: int, promoted: bool) -> bytes | None:
        """Give ``job`` a row: in the next batch (durable store), or written now.

        The error text if a non-durable store refused it at once (a durable
        store's refusal comes with the batch, in end_commit).
        """
        assert self._store is not None
        key = self._next_key
        self._next_key = key + 1
        row = StoredJob(job.function.name, job.unique, job.data, job.priority, job.epoch,
                        job.reducer)
        if not self._durable:
            try:
                self._store.write(StoreBatch([(key, row)]))
            except StoreError as exc:
                return str(exc).encode("utf-8", "replace")
        else:
            self._batch.adds.append((key, row))
            self._pending.append((job, promoted))
            self._unwritten[job] = [cid]
        job.store_key = key
        job.background = True
        return None

    def _new_job(self, function: _Function, unique: bytes, data: bytes, priority: Priority,
                 background: bool, epoch: int | None, reducer: bytes | None,
                 store_key: StoreKey | None) -> _Job:
        """Create a job with the next handle and make it findable; the caller queues it."""
        handle = b"%b%d" % (self._prefix, self._next_handle)
        self._next_handle += 1
        job = _Job(handle, function, unique, data, priority, background)
        if epoch is not None:
            job.epoch = epoch
        if reducer is not None:
            job.reducer = reducer
        if store_key is not None:
            job.store_key = store_key
        self._jobs[handle] = job
        if unique:
            if unique == b"-":
                if data:
                    key = (function.name, data)
                    if key not in self._by_data:
                        self._by_data[key] = job
                        job.indexed = _BY_DATA
            else:
                by_function = self._by_unique.setdefault(unique, {})
                if function.name not in by_function:
                    by_function[function.name] = job
                    job.indexed = _BY_UNIQUE
        return job

    def _replay(self, store: JobStore) -> None:
        """Re-create every stored background job, with new handles (§4.16)."""
        for key, row in store.load():
            if key >= self._next_key:
                self._next_key = key + 1
            function = self._functions.get(row.function)
            if function is None:
                function = self._functions[row.function] = _Function(row.function)
            # A duplicate unique (possible only if rows were written outside
            # this server) still runs: it is just not findable by its unique.
            job = self._new_job(function, row.unique, row.data, Priority(row.priority), True,
                                row.epoch, row.reducer, key)
            if row.epoch is not None and row.epoch > self._now:
                self._schedule(job)
            else:
                self._enqueue(job, [])  # nobody is connected yet to be woken

    def _schedule(self, job: _Job) -> None:
        """Park an epoch job until it comes due (§4.13)."""
        job.state = move(job.state, SCHEDULE)
        job.function.scheduled.add(job)
        self._seq += 1
        heapq.heappush(self._epochs, (float(job.epoch or 0), self._seq, job))

    def _enqueue(self, job: _Job, out: list[Output]) -> None:
        """Put a job at the end of its priority queue and wake sleeping workers (§4.5)."""
        function = job.function
        priority: int = job.priority  # a plain int indexes natively, compiled
        job.state = move(job.state, QUEUE)
        self._seq += 1
        job.seq = self._seq
        _append(function.queues[priority], job)
        ready = function.ready
        if not ready[priority]:
            self._ready[priority][function] = None
        # Not `+=`: compiled, an augmented assignment to a list item is a generic
        # in-place add; a read and a write of the item are native.
        ready[priority] = ready[priority] + 1
        if function.sleepers:
            self._wake(function, out)

    # -- waking workers ------------------------------------------------------------------

    def _wake(self, function: _Function, out: list[Output]) -> None:
        """NOOP the workers of ``function`` asleep since their last NOOP, at most worker_wakeup."""
        sleepers = list(function.sleepers)
        if self.worker_wakeup:
            sleepers = sleepers[:self.worker_wakeup]
        for cid in sleepers:
            self._unsleep(self._conns[cid])
            out.append((cid, _NOOP))

    def _unsleep(self, conn: _Conn) -> None:
        """The connection is no longer NOOP-able: it was NOOPed or it grabbed."""
        conn.asleep = False
        cid = conn.id
        for function, _timeout in conn.abilities.values():
            function.sleepers.pop(cid, None)

    def _on_pre_sleep(self, conn: _Conn, event: PreSleep, out: list[Output]) -> None:
        if self._pre_sleep(conn):
            out.append((conn.id, _NOOP))

    def _pre_sleep(self, conn: _Conn) -> bool:
        """The worker sleeps until NOOPed; True if it is to be NOOPed at once."""
        # Work already waiting: NOOP at once, closing the race between a
        # NO_JOB and the PRE_SLEEP that follows it (§4.5).
        if self._has_work(conn):
            return True
        if not conn.asleep:
            conn.asleep = True
            for function, _timeout in conn.abilities.values():
                function.sleepers[conn.id] = None
        return False

    def _has_work(self, conn: _Conn) -> bool:
        """Whether any function of ``conn`` has a ready job (as cheaply as :meth:`_take`)."""
        abilities = conn.abilities
        for ready in self._ready:
            if len(ready) < len(abilities):
                for function in ready:
                    entry = abilities.get(function.name)
                    if entry is not None and entry[0] is function:
                        return True
            elif ready:
                for function, _timeout in abilities.values():
                    if function in ready:
                        return True
        return False

    # -- abilities -------------------------------------------------------------------------

    def _on_can_do(self, conn: _Conn, event: CanDo | CanDoTimeout, out: list[Output]) -> None:
        name = event.function
        timeout = event.timeout if type(event) is CanDoTimeout else 0
        function = self._functions.get(name)
        if function is None:
            function = self._functions[name] = _Function(name)
        conn.abilities[name] = (function, max(timeout, 0))
        function.workers[conn.id] = None
        if conn.asleep:
            ready = function.ready
            if ready[0] or ready[1] or ready[2]:
                self._unsleep(conn)
                out.append((conn.id, _NOOP))
            else:
                function.sleepers[conn.id] = None

    def _on_cant_do(self, conn: _Conn, event: CantDo, out: list[Output]) -> None:
        self._forget_ability(conn, event.function, out)

    def _on_reset_abilities(self, conn: _Conn, event: ResetAbilities,
                            out: list[Output]) -> None:
        for name in list(conn.abilities):
            self._forget_ability(conn, name, out)

    def _forget_ability(self, conn: _Conn, name: bytes, out: list[Output]) -> None:
        """Unregister ``name``; jobs the worker runs for it are lost, hence requeued (§4.7)."""
        entry = conn.abilities.pop(name, None)
        if entry is None:
            return
        function = entry[0]
        del function.workers[conn.id]
        function.sleepers.pop(conn.id, None)
        for job in [job for job in conn.jobs.values() if job.function is function]:
            self._lose(job, out)

    # -- grabbing ---------------------------------------------------------------------------

    def _on_grab_job(self, conn: _Conn, event: GrabJob, out: list[Output]) -> None:
        out.append((conn.id, self._assignment(self._take(conn), ASSIGN_PLAIN)))

    def _on_grab_job_uniq(self, conn: _Conn, event: GrabJobUniq, out: list[Output]) -> None:
        out.append((conn.id, self._assignment(self._take(conn), ASSIGN_UNIQ)))

    def _on_grab_job_all(self, conn: _Conn, event: GrabJobAll, out: list[Output]) -> None:
        out.append((conn.id, self._assignment(self._take(conn), ASSIGN_ALL)))

    def _assignment(self, job: _Job | None, form: int) -> Event:
        """The answer to a grab of ``form`` (:data:`ASSIGN_PLAIN`, ``_UNIQ``, ``_ALL``)
        that :meth:`_take` answered with ``job``: NO_JOB or the JOB_ASSIGN* for it."""
        if job is None:
            return _NO_JOB
        if form == ASSIGN_PLAIN:
            return JobAssign(job.handle, job.function.name, job.data)
        if form == ASSIGN_UNIQ:
            return JobAssign(job.handle, job.function.name, job.data, job.unique)
        # JOB_ASSIGN_ALL only for a job with a (non-empty) reducer, else the
        # _UNIQ form, as gearmand (§4.6).
        return JobAssign(job.handle, job.function.name, job.data, job.unique,
                         job.reducer or None)

    def _take(self, conn: _Conn) -> _Job | None:
        """Assign the worker its next job, or return None (§4.1, §4.6).

        Global priority: the oldest HIGH job of any of its functions, else the
        oldest NORMAL one, else LOW.  Only the head of each (function,
        priority) deque is looked at, and only of the functions that have a
        ready job or of the worker's functions, whichever are fewer: a grab
        costs O(min(functions with work, functions of the worker)), however
        many jobs wait.
        """
        if conn.asleep:
            self._unsleep(conn)
        abilities = conn.abilities
        best: _Job | None = None
        timeout = 0  # best's CAN_DO_TIMEOUT, found with it (not looked up again)
        for priority in _PRIORITIES:
            ready = self._ready[priority]
            if not ready:
                continue
            if len(ready) < len(abilities):
                # Fewer functions have work than the worker can do: look at those.
                for function in ready:
                    entry = abilities.get(function.name)
                    if entry is not None and entry[0] is function:
                        job = function.queues[priority][0]
                        if job.state != QUEUED:
                            job = self._drop_dead_heads(function, priority)
                        if best is None or job.seq < best.seq:
                            best = job
                            timeout = entry[1]
            else:
                for function, function_timeout in abilities.values():
                    if function.ready[priority]:
                        job = function.queues[priority][0]
                        if job.state != QUEUED:
                            job = self._drop_dead_heads(function, priority)
                        if best is None or job.seq < best.seq:
                            best = job
                            timeout = function_timeout
            if best is not None:
                break
        else:
            return None
        job = best
        function = job.function
        # `priority` is the level the loop stopped at: the job's own.
        _popleft(function.queues[priority])
        live = function.ready
        left = live[priority] - 1  # not `-=`: see _enqueue
        live[priority] = left
        if not left:
            del self._ready[priority][function]
        function.running += 1
        job.state = move(job.state, ASSIGN)
        job.worker = conn.id
        # Counted on every assignment, timed or not, so that a timer left from
        # an earlier run of a requeued job can never fire on this one.
        job.assign_no += 1
        conn.jobs[job.handle] = job
        conn.recent = job
        if timeout:
            # CAN_DO_TIMEOUT is in milliseconds since gearmand 1.1.19 (§4.7).
            self._seq += 1
            heapq.heappush(self._timers, (self._now + timeout / 1000.0, self._seq, job,
                                          job.assign_no))
        return job

    def _drop_dead_heads(self, function: _Function, priority: int) -> _Job:
        """Pop entries of jobs that left the queue; return the live head (one must exist)."""
        queue = function.queues[priority]
        while queue[0].state != QUEUED:
            queue.popleft()
            function.dead[priority] -= 1
        return queue[0]

    # -- work results -----------------------------------------------------------------------

    def _held_job(self, conn: _Conn, handle: bytes, text: bytes,
                  out: list[Output]) -> _Job | None:
        """The job ``handle`` if this worker runs it, else answer JOB_NOT_FOUND (§4.8)."""
        job = conn.jobs.get(handle)
        if job is None:
            out.append((conn.id, Error(b"JOB_NOT_FOUND", text)))
        return job

    def _on_work_data(self, conn: _Conn, event: WorkData | WorkWarning,
                      out: list[Output]) -> None:
        job = self._held_job(conn, event.handle, _NOT_FOUND_DATA, out)
        if job is not None:
            for cid in job.clients:
                out.append((cid, event))

    def _on_work_status(self, conn: _Conn, event: WorkStatus, out: list[Output]) -> None:
        job = self._held_job(conn, event.handle, _NOT_FOUND_RESULT, out)
        if job is not None:
            job.numerator = event.numerator
            job.denominator = event.denominator
            for cid in job.clients:
                out.append((cid, event))

    def _on_work_end(self, conn: _Conn, event: WorkComplete | WorkFail,
                     out: list[Output]) -> None:
        # WORK_COMPLETE and WORK_FAIL: forwarded, and the job is over (§4.9).
        job = self._held_job(conn, event.handle, _NOT_FOUND_RESULT, out)
        if job is not None:
            for cid in job.clients:
                out.append((cid, event))
            self._end_work(job, 1 if type(event) is WorkComplete else 2)

    def _end_work(self, job: _Job, outcome: int) -> None:
        """A worker ended ``job`` (after its clients were told): count ``outcome``
        (1 completed, 2 failed, 3 excepted) and remove it."""
        function = job.function
        if outcome == 1:
            function.completed += 1
        elif outcome == 2:
            function.failed += 1
        else:
            function.excepted += 1
        self._finish(job)

    def _on_work_exception(self, conn: _Conn, event: WorkException, out: list[Output]) -> None:
        job = self._held_job(conn, event.handle, _NOT_FOUND_EXCEPTION, out)
        if job is None:
            return
        # Per receiving client: WORK_EXCEPTION if it asked for the option (or
        # the server was built with exceptions=True), else WORK_FAIL (§4.9).
        fail: WorkFail | None = None
        conns = self._conns
        for cid in job.clients:
            if conns[cid].exceptions:
                out.append((cid, event))
            else:
                if fail is None:
                    fail = WorkFail(event.handle)
                out.append((cid, fail))
        self._end_work(job, 3)

    # -- a job's end ------------------------------------------------------------------------

    def _finish(self, job: _Job) -> None:
        """Remove a job from the server for good (done, failed, cancelled, dropped, abandoned)."""
        state = job.state
        job.state = move(state, FINISH)
        function = job.function
        handle = job.handle
        if state == RUNNING:
            function.running -= 1
            del self._conns[job.worker].jobs[handle]
        elif state == QUEUED:
            # Its deque entry stays behind, dead, until reached or compacted;
            # compacting only when most entries are dead keeps this O(1) amortised.
            priority: int = job.priority
            function.ready[priority] -= 1
            if not function.ready[priority]:
                del self._ready[priority][function]
            function.dead[priority] += 1
            if (function.dead[priority] >= _COMPACT_MIN
                    and function.dead[priority] > function.ready[priority]):
                function.queues[priority] = deque(
                    j for j in function.queues[priority] if j.state == QUEUED)
                function.dead[priority] = 0
        elif state == SCHEDULED:
            function.scheduled.discard(job)
        del self._jobs[handle]
        if job.indexed == _BY_UNIQUE:
            by_function = self._by_unique[job.unique]
            del by_function[function.name]
            if not by_function:
                del self._by_unique[job.unique]
        elif job.indexed == _BY_DATA:
            del self._by_data[(function.name, job.data)]
        if job.clients:
            conns = self._conns
            for cid in job.clients:
                conns[cid].attached.pop(handle, None)
        if job.store_key is not None and self._store is not None:
            if self._durable:
                self._batch.removes.append(job.store_key)
            else:
                with contextlib.suppress(StoreError):
                    self._store.write(StoreBatch(removes=[job.store_key]))

    def _fail(self, job: _Job, out: list[Output]) -> None:
        """End a job with WORK_FAIL to every attached client."""
        if job.clients:
            fail = WorkFail(job.handle)
            for cid in job.clients:
                out.append((cid, fail))
        job.function.failed += 1
        self._finish(job)

    def _lose(self, job: _Job, out: list[Output]) -> None:
        """The running job's worker let it go without a result: requeue or drop it (§4.8)."""
        if not job.background and not job.clients:
            self._finish(job)  # nobody waits for it any more
            return
        if self.job_retries is not None and job.retries >= self.job_retries:
            self._fail(job, out)
            return
        del self._conns[job.worker].jobs[job.handle]
        job.function.running -= 1
        job.worker = -1
        job.retries += 1
        job.function.requeued += 1
        job.numerator = job.denominator = 0
        self._enqueue(job, out)

    def _detach_client(self, conn: _Conn) -> None:
        """A client left: it stops waiting; a queued foreground job nobody waits for goes (§4.8)."""
        cid = conn.id
        attached = list(conn.attached.values())
        conn.attached.clear()
        for job in attached:
            job.clients = tuple(c for c in job.clients if c != cid)
            if not job.clients and not job.background and job.state == QUEUED:
                self._finish(job)
            # A running one finishes into the void; a background one is unaffected.

    # -- status, echo, options ----------------------------------------------------------------

    def _on_get_status(self, conn: _Conn, event: GetStatus, out: list[Output]) -> None:
        job = self._jobs.get(event.handle)
        if job is None:
            out.append((conn.id, StatusRes(event.handle, False, False)))
        else:
            out.append((conn.id, StatusRes(event.handle, True, job.state == RUNNING,
                                           job.numerator, job.denominator)))

    def _on_get_status_unique(self, conn: _Conn, event: GetStatusUnique,
                              out: list[Output]) -> None:
        # By unique alone (§4.11); if several functions share the unique, the
        # oldest job answers.  The unique asked about is echoed.
        by_function = self._by_unique.get(event.unique)
        if not by_function:
            out.append((conn.id, StatusResUnique(event.unique, False, False)))
            return
        job = next(iter(by_function.values()))
        out.append((conn.id, StatusResUnique(event.unique, True, job.state == RUNNING,
                                             job.numerator, job.denominator,
                                             len(job.clients))))

    def _on_echo(self, conn: _Conn, event: EchoReq, out: list[Output]) -> None:
        out.append((conn.id, EchoRes(event.data)))

    def _on_option(self, conn: _Conn, event: OptionReq, out: list[Output]) -> None:
        if event.name.lower() == b"exceptions":
            conn.exceptions = True
            out.append((conn.id, OptionRes(event.name)))  # echoed as sent, as gearmand
        else:
            out.append((conn.id, Error(b"UNKNOWN_OPTION",
                                       b"Server does not recognize given option",
                                       request=event)))

    def _on_set_client_id(self, conn: _Conn, event: SetClientId, out: list[Output]) -> None:
        conn.client_id = event.client_id[:CLIENT_ID_MAX]

    def _on_not_expected(self, conn: _Conn, event: Event, out: list[Output]) -> None:
        # SUBMIT_JOB_SCHED and ALL_YOURS: gearmand 1.1.20 answers both so
        # (checked by hand).
        out.append((conn.id, _NOT_EXPECTED))

    def _on_connection_closed(self, conn: _Conn, event: ConnectionClosed,
                              out: list[Output]) -> None:
        out.extend(self.disconnect(conn.id))

    # -- admin --------------------------------------------------------------------------------

    def _on_admin(self, conn: _Conn, event: AdminCommand, out: list[Output]) -> None:
        try:
            request = admin.parse_command(event.line, allow_shutdown=self.allow_shutdown)
            if not conn.may_change and isinstance(request, _ADMIN_CHANGES):
                raise _ADMIN_DENIED
            text = self._run_admin(request, out)
        except admin.AdminError as exc:
            text = admin.format_err(exc)
        out.append((conn.id, AdminReply(text)))

    def _run_admin(self, request: admin.AdminRequest, out: list[Output]) -> bytes:
        """Carry out one admin command; return its reply (§3.2).  Raises AdminError."""
        if isinstance(request, admin.Status):
            return admin.format_status(self.status_rows())
        if isinstance(request, admin.PriorityStatus):
            return admin.format_priority_status(self.priority_status_rows())
        if isinstance(request, admin.Workers):
            return admin.format_workers(self.worker_rows())
        if isinstance(request, admin.ShowJobs):
            # IGNORE is always 0: abandoned and cancelled jobs leave at once.
            # QUEUED is 1 for background jobs, which gearmand 1.1.20 shows even
            # with its non-persistent builtin queue (checked by hand).
            return admin.format_jobs([admin.JobRow(j.handle, j.retries, False, j.background)
                                      for j in self._jobs.values()])
        if isinstance(request, admin.ShowUniqueJobs):
            # Every job's unique, empty ones included, as gearmand lists them.
            return admin.format_unique_jobs([j.unique for j in self._jobs.values()])
        if isinstance(request, admin.MaxQueue):
            function = self._functions.get(request.function)
            # An unknown function is silently ignored, as gearmand does (§3.2).
            if function is not None:
                function.max_queue = request.limits or (0, 0, 0)
            return admin.format_ok()
        if isinstance(request, admin.CancelJob):
            job = self._jobs.get(request.handle)
            if job is None:
                raise admin.AdminError(b"UNKNOWN_JOB")
            self._fail(job, out)
            return admin.format_ok()
        if isinstance(request, admin.CreateFunction):
            if request.function not in self._functions:
                self._functions[request.function] = _Function(request.function)
            return admin.format_ok()
        if isinstance(request, admin.DropFunction):
            self._drop_function(request.function, out)
            return admin.format_ok()
        if isinstance(request, admin.GetPid):
            return admin.format_ok(b"%d" % self.pid)
        if isinstance(request, admin.Version):
            return admin.format_ok(self.version)
        if isinstance(request, admin.Verbose):
            return admin.format_ok(self.verbose)
        # admin.Shutdown: only parsed when allow_shutdown.  An immediate request
        # is not weakened by a later graceful one.
        if self.shutdown_requested != "immediate":
            self.shutdown_requested = "graceful" if request.graceful else "immediate"
        return admin.format_ok()

    def _drop_function(self, name: bytes, out: list[Output]) -> None:
        """``drop function``: refused while workers or running jobs; fails its queued jobs."""
        function = self._functions.get(name)
        if function is None:
            raise _ADMIN_NO_FUNCTION
        if function.workers or function.running:
            raise _ADMIN_FUNCTION_BUSY
        # An admin command may walk every job; oldest first keeps the order plain.
        for job in [job for job in self._jobs.values() if job.function is function]:
            self._fail(job, out)
        del self._functions[name]
        for conn in self._conns.values():
            if conn.submitted is function:
                conn.submitted = None
