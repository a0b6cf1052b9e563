"""Where background jobs live: the store interface and the in-memory store.

A job server keeps only **background** jobs in its store (PROTOCOL-NOTES §4.16):
a foreground job dies with its client anyway, so there is nothing to replay.
:class:`~gearman_proto.broker.JobServer` writes a :class:`StoredJob` when it
accepts a background submission, removes it when the job ends (complete, fail,
exception, cancel, retry limit), and on start replays whatever
:meth:`JobStore.load` returns.

Rows are keyed by a counter of the job server, not by ``(unique, function)`` as
gearmand's queue plugins do: two background jobs that share a unique id (one
finished, one new; or two replayed after a crash) never overwrite each other
(gearmand issue #80).

A store whose :attr:`JobStore.durable` is true makes the job server hold back
JOB_CREATED for stored jobs until :meth:`JobStore.write` has returned, so an
acknowledged background job survives a crash; until then the job is not
handed to a worker either, so a batch the store refuses (a full disk, a lost
database) is answered QUEUE_ERROR and leaves no trace.  The job server writes
once per batch of input (group commit), not once per job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .events import Priority, _fast_init

__all__ = ["StoreKey", "StoredJob", "StoreBatch", "StoreError", "JobStore", "MemoryStore"]

StoreKey = int
"""A row key: a counter of the job server, unique among the rows of one store."""


@dataclass(frozen=True, slots=True)
class StoredJob:
    """One background job as a store keeps it: everything needed to run it again.

    The job handle is not part of it: handles are per server process, and a
    replayed job gets a new one.
    """

    function: bytes
    unique: bytes
    data: bytes
    priority: Priority = Priority.NORMAL
    epoch: int | None = None
    """Unix time before which the job may not run (SUBMIT_JOB_EPOCH), else ``None``."""
    reducer: bytes | None = None
    """The reducer of a SUBMIT_REDUCE_JOB_BACKGROUND job, else ``None``."""


# Built for every background job a durable server accepts: the events' faster
# __init__ (same signature; see events._fast_init).
_fast_init(StoredJob)


class StoreError(Exception):
    """The store could not keep a job; the submission is refused with QUEUE_ERROR.

    The message becomes the ERROR packet's text, as gearmand reports its queue
    plugin's error string.
    """


@dataclass(slots=True)
class StoreBatch:
    """The changes of one batch of input: written by :meth:`JobStore.write` in one commit.

    Keys are handed out by the job server (:class:`~gearman_proto.broker.JobServer`
    counts on from the largest key it replayed), so a batch is plain data that
    can be written on another thread while the server goes on.
    """

    adds: list[tuple[StoreKey, StoredJob]] = field(default_factory=list)
    removes: list[StoreKey] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.adds or self.removes)


class JobStore(Protocol):
    """What :class:`~gearman_proto.broker.JobServer` needs from a store of background jobs.

    The job server buffers the rows added and removed while it handles a batch
    of input and hands them to :meth:`write` once per batch (group commit).  A
    durable store makes the whole batch survive a crash before ``write``
    returns, or none of it; the job server then sends JOB_CREATED for the
    batch's jobs, or QUEUE_ERROR if ``write`` raised :class:`StoreError`.
    ``write`` may be called on a thread of its own (one call at a time), so it
    must not touch the job server.
    """

    @property
    def durable(self) -> bool:
        """True if :meth:`write` makes rows survive a crash (JOB_CREATED then waits for it)."""
        ...

    def write(self, batch: StoreBatch) -> None:
        """Add and remove the batch's rows in one commit.  Raises :class:`StoreError`.

        Removing a key that is not there is not an error; a batch may remove a
        key it also adds (the job ended before its row was written).

        Removals must last as the adds do, unless the store can lose them only
        together with the job server's own memory (SQLite's file, on the
        server's machine, may then commit deletes without an fsync): once
        ``write`` returns, the server forgets those rows, and a database that
        crashes and comes back while the server runs on would otherwise keep
        the rows of finished jobs, to run them again at the next start.
        """
        ...

    def load(self) -> Iterable[tuple[StoreKey, StoredJob]]:
        """Every stored job with its key, oldest first, for replay when a server starts."""
        ...


class MemoryStore:
    """A store that keeps rows in a dict: nothing survives the process.

    Useful to "restart" a :class:`~gearman_proto.broker.JobServer` in a test by
    building a new one on the same store.  ``durable=True`` only pretends (it
    makes the job server hold JOB_CREATED until the batch is written), so group
    commit can be tested without a disk; :attr:`commits` counts the writes.
    :attr:`fail` (a message) makes every write raise :class:`StoreError`, as a
    full disk or a lost database would.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self._durable = durable
        self._rows: dict[StoreKey, StoredJob] = {}
        self.commits = 0
        self.fail: str | None = None

    @property
    def durable(self) -> bool:
        """False unless built with ``durable=True`` (which only pretends)."""
        return self._durable

    @property
    def rows(self) -> dict[StoreKey, StoredJob]:
        """A copy of the stored rows, by key."""
        return dict(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def write(self, batch: StoreBatch) -> None:
        """Apply the batch; counted so tests can see group commit at work."""
        if self.fail is not None:
            raise StoreError(self.fail)
        rows = self._rows
        for key, job in batch.adds:
            rows[key] = job
        for key in batch.removes:
            rows.pop(key, None)
        self.commits += 1

    def load(self) -> list[tuple[StoreKey, StoredJob]]:
        """The rows in key order (the order they were added)."""
        return sorted(self._rows.items(), key=lambda item: item[0])
