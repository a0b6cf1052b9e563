"""What a job server is doing, as numbers: the source of ``/metrics``, the dashboard and tests.

:class:`ServerStats` reads the state of one :class:`~gearman_proto.hub.ServerHub`
and its :class:`~gearman_proto.broker.JobServer` -- queues, workers, running jobs,
the per-function counters the broker bumps as jobs end -- and keeps the few
numbers the broker does not: store commit latencies, event-loop lag and a short
history for throughput charts.  It does no I/O and reads no clock: the adapter
passes the time in (:meth:`ServerStats.sample`, :meth:`ServerStats.snapshot`) and
gives it a clock *function* to time commits with.  So the asyncio, uvloop and
trio servers all report the same numbers, computed here once.

Bounded labels
--------------
Function names and client ids are bytes chosen by peers.  A snapshot names at
most ``max_functions`` functions (default :data:`MAX_FUNCTIONS`), the first ones
the server learned of (its table is in creation order, so a function keeps its
place); every later function is summed into one row named :data:`OTHER`.  Names
are decoded as UTF-8 (bad bytes as ``\\xNN``) and cut to :data:`MAX_NAME`
characters; rows whose cut names collide are summed.  The status document
lists at most ``max_rows`` workers and running jobs, and says how many there
are in all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .broker import JobServer, Output
    from .hub import ServerHub

__all__ = ["COUNTERS", "COMMIT_BUCKETS", "MAX_FUNCTIONS", "MAX_NAME", "OTHER", "FunctionRow",
           "Snapshot", "ServerStats", "label"]

COUNTERS = ("submitted", "completed", "failed", "exceptions", "requeued", "timed_out")
"""The per-function job counters, in the order the broker keeps them.

``submitted``: new jobs accepted (a coalesced submission joins a job, it is
not one); ``completed``: WORK_COMPLETE; ``failed``: WORK_FAIL from the worker,
or failed by the server (cancel, retry limit, dropped function);
``exceptions``: WORK_EXCEPTION; ``requeued``: lost by a worker and queued
again; ``timed_out``: CAN_DO_TIMEOUT expired (then requeued or failed)."""

MAX_FUNCTIONS = 100
"""Functions named in a snapshot; the rest are summed under :data:`OTHER`."""
MAX_NAME = 100
"""Characters of a name kept in a label."""
OTHER = "__other__"
"""The function label of the row that sums every function past the cap."""
MAX_ROWS = 200
"""Workers and running jobs listed in the status document."""
HISTORY = 600
"""Samples kept for throughput charts (ten minutes at one a second)."""

COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                  0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the store-commit latency histogram; +Inf is implied."""


def label(name: bytes) -> str:
    """A peer-chosen name as a bounded, printable label value."""
    text = name.decode("utf-8", "backslashreplace")
    return text if len(text) <= MAX_NAME else text[:MAX_NAME]


@dataclass(slots=True)
class FunctionRow:
    """One function (or the :data:`OTHER` sum): jobs by state, workers, counters."""

    name: str
    queued: list[int]
    """Waiting jobs per priority: high, normal, low."""
    scheduled: int
    """SUBMIT_JOB_EPOCH jobs not yet due."""
    running: int
    workers: int
    counts: list[int]
    """:data:`COUNTERS`, in that order."""

    def add(self, other: FunctionRow) -> None:
        """Sum ``other`` into this row."""
        for i in range(3):
            self.queued[i] += other.queued[i]
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.scheduled += other.scheduled
        self.running += other.running
        self.workers += other.workers


@dataclass(slots=True)
class Snapshot:
    """The server's numbers at one moment (see :meth:`ServerStats.snapshot`)."""

    now: float
    uptime: float
    version: str
    functions: list[FunctionRow]
    functions_total: int
    """Functions the server knows, including those summed under OTHER."""
    connections: dict[str, int]
    """Open connections by role: ``worker`` (registered a function), ``client``
    (waits for a foreground job), ``other`` (admin, idle, background-only)."""
    jobs: int
    bytes_in: int
    bytes_out: int
    protocol_errors: int
    idle_closed: int
    commits: int
    commit_seconds: float
    commit_buckets: list[int]
    """Commits per :data:`COMMIT_BUCKETS` bound, not cumulative; the last is +Inf."""
    loop_lag: float


@dataclass(slots=True)
class _Sample:
    time: float
    counts: list[int] = field(default_factory=list)


class ServerStats:
    """Numbers about one job server, for metrics and the dashboard.

    ``clock`` (a monotonic clock function, e.g. ``time.perf_counter``) times
    the store's commits; the hub calls :meth:`timed_commit` once it has a
    ``stats``.  ``now`` is the Unix time the server started.
    """

    def __init__(self, hub: ServerHub, *, clock: Callable[[], float], now: float,
                 max_functions: int = MAX_FUNCTIONS, max_rows: int = MAX_ROWS) -> None:
        self.hub = hub
        self.clock = clock
        self.started = now
        self.max_functions = max_functions
        self.max_rows = max_rows
        # Only a server with a store has commits to time; the others skip the clock.
        self.time_commits = hub.broker._store is not None
        self.commits = 0
        self.commit_seconds = 0.0
        self.commit_buckets = [0] * (len(COMMIT_BUCKETS) + 1)
        self.bytes_in = 0
        """Bytes read from peers since the stats were attached (counted by the hub)."""
        self.bytes_out = 0
        """Bytes handed to peers since then (counted by the hub's flush)."""
        self.loop_lag = 0.0
        """Seconds the event loop was late to the last timer the adapter set (its probe)."""
        self.history: deque[_Sample] = deque(maxlen=HISTORY)

    # -- fed by the hub and the adapter ------------------------------------------------

    def timed_commit(self, broker: JobServer) -> list[Output]:
        """``broker.commit()``, timed into the histogram when it commits the store."""
        if not broker.commit_pending:
            return broker.commit()
        start = self.clock()
        try:
            return broker.commit()
        finally:
            self.observe_commit(self.clock() - start)

    def observe_commit(self, seconds: float) -> None:
        """Count one store commit that took ``seconds``."""
        self.commits += 1
        self.commit_seconds += seconds
        i = 0
        for i, bound in enumerate(COMMIT_BUCKETS):  # noqa: B007 (i is the bucket found)
            if seconds <= bound:
                break
        else:
            i = len(COMMIT_BUCKETS)
        self.commit_buckets[i] += 1

    def sample(self, now: float) -> None:
        """Record the server-wide job counters at ``now``, for throughput over time."""
        totals = [0] * len(COUNTERS)
        for function in self.hub.broker._functions.values():
            for i, n in enumerate(function.counts):
                totals[i] += n
        self.history.append(_Sample(now, totals))

    # -- read -----------------------------------------------------------------------

    def snapshot(self, now: float) -> Snapshot:
        """The numbers now: per-function rows (capped, see the module docstring) and totals."""
        hub = self.hub
        broker = hub.broker
        # stats is the broker's reader: its tables are walked here, not copied there.
        rows: dict[str, FunctionRow] = {}
        functions = broker._functions
        for n, function in enumerate(functions.values()):
            row = FunctionRow(label(function.name) if n < self.max_functions else OTHER,
                              list(function.ready), len(function.scheduled), function.running,
                              len(function.workers), function.counts)  # a new list each read
            have = rows.get(row.name)
            if have is None:
                rows[row.name] = row
            else:
                have.add(row)
        roles = {"worker": 0, "client": 0, "other": 0}
        for conn in broker._conns.values():
            roles["worker" if conn.abilities else "client" if conn.attached else "other"] += 1
        return Snapshot(
            now=now, uptime=max(0.0, now - self.started),
            version=broker.version.decode("utf-8", "backslashreplace"),
            functions=list(rows.values()), functions_total=len(functions),
            connections=roles, jobs=broker.job_count, bytes_in=self.bytes_in,
            bytes_out=self.bytes_out, protocol_errors=hub.protocol_errors,
            idle_closed=hub.idle_closed, commits=self.commits,
            commit_seconds=self.commit_seconds, commit_buckets=list(self.commit_buckets),
            loop_lag=self.loop_lag)

    def status_document(self, now: float) -> dict[str, Any]:
        """What the dashboard shows, as a JSON-ready dict (``/api/status``).

        Every name is a decoded, cut string (:func:`label`): the page must
        still insert them as text, never as markup.
        """
        snap = self.snapshot(now)
        broker = self.hub.broker
        functions = sorted(snap.functions, key=lambda r: -(sum(r.queued) + r.running))
        workers: list[dict[str, Any]] = []
        running: list[dict[str, Any]] = []
        conns = broker._conns
        for conn in conns.values():
            if conn.abilities and len(workers) < self.max_rows:
                workers.append({
                    "id": conn.id, "address": label(conn.address),
                    "client_id": label(conn.client_id),
                    "functions": [label(f) for f in list(conn.abilities)[:20]],
                    "jobs": len(conn.jobs), "asleep": conn.asleep})
            for job in conn.jobs.values():
                if len(running) >= self.max_rows:
                    break
                running.append({
                    "handle": label(job.handle), "function": label(job.function.name),
                    "worker": conn.id, "client_id": label(conn.client_id),
                    "numerator": job.numerator, "denominator": job.denominator})
        return {
            "server": {
                "version": snap.version, "now": now, "uptime": snap.uptime,
                "connections": snap.connections, "jobs": snap.jobs,
                "bytes_in": snap.bytes_in, "bytes_out": snap.bytes_out,
                "loop_lag": snap.loop_lag, "commits": snap.commits,
            },
            "functions": [{
                "name": r.name, "queued": r.queued, "scheduled": r.scheduled,
                "running": r.running, "workers": r.workers,
                **dict(zip(COUNTERS, r.counts, strict=True)),
            } for r in functions],
            "functions_total": snap.functions_total,
            "workers": workers,
            "workers_total": snap.connections["worker"],
            "running": running,
            "running_total": sum(len(c.jobs) for c in conns.values()),
            "counters": list(COUNTERS),
            "history": [[s.time, *s.counts] for s in self.history],
        }
