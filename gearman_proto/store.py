"""Where background jobs live: the store interface and the in-memory store.

A job server keeps only **background** jobs in its store (PROTOCOL-NOTES §4.16):
a foreground job dies with its client anyway, so there is nothing to replay.
:class:`~gearman_proto.broker.JobServer` writes a :class:`StoredJob` when it
accepts a background submission, removes it when the job ends (complete, fail,
exception, cancel, retry limit), and on start replays whatever
:meth:`JobStore.load` returns.

Rows are keyed by a key the store hands out, not by ``(unique, function)`` as
gearmand's queue plugins do: two background jobs that share a unique id (one
finished, one new; or two replayed after a crash) never overwrite each other
(gearmand issue #80).

A store whose :attr:`JobStore.durable` is true makes the job server hold back
JOB_CREATED for stored jobs until :meth:`JobStore.commit` has returned, so an
acknowledged background job survives a crash.  The job server calls
``commit()`` once per batch of input (group commit), not once per job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .events import Priority, _fast_init

__all__ = ["StoreKey", "StoredJob", "StoreError", "JobStore", "MemoryStore"]

StoreKey = int
"""A store-assigned row key (an SQLite rowid, a counter, ...)."""


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


class JobStore(Protocol):
    """What :class:`~gearman_proto.broker.JobServer` needs from a store of background jobs.

    Writes may be buffered until :meth:`commit`; a durable store must make
    every :meth:`add` before a ``commit()`` survive a crash once that
    ``commit()`` returns.
    """

    @property
    def durable(self) -> bool:
        """True if :meth:`commit` makes writes survive a crash (JOB_CREATED then waits for it)."""
        ...

    def add(self, job: StoredJob) -> StoreKey:
        """Keep ``job``; return the key to remove it by.  Raises :class:`StoreError`."""
        ...

    def remove(self, key: StoreKey) -> None:
        """Forget the job stored under ``key`` (a missing key is not an error)."""
        ...

    def commit(self) -> None:
        """Make every add and remove so far permanent."""
        ...

    def load(self) -> Iterable[tuple[StoreKey, StoredJob]]:
        """Every stored job with its key, oldest first, for replay when a server starts."""
        ...


class MemoryStore:
    """A store that keeps rows in a dict: nothing survives the process.

    Useful to "restart" a :class:`~gearman_proto.broker.JobServer` in a test by
    building a new one on the same store.  ``durable=True`` only pretends (it
    makes the job server hold JOB_CREATED until ``commit()``), so group commit
    can be tested without a disk; :attr:`commits` counts the commits.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self._durable = durable
        self._rows: dict[StoreKey, StoredJob] = {}
        self._next_key: StoreKey = 1
        self.commits = 0

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

    def add(self, job: StoredJob) -> StoreKey:
        """Keep ``job`` under a new key."""
        key = self._next_key
        self._next_key = key + 1
        self._rows[key] = job
        return key

    def remove(self, key: StoreKey) -> None:
        """Forget the row ``key``, if it is there."""
        self._rows.pop(key, None)

    def commit(self) -> None:
        """Nothing to flush; counted so tests can see group commit at work."""
        self.commits += 1

    def load(self) -> list[tuple[StoreKey, StoredJob]]:
        """The rows in the order they were added (dicts keep insertion order)."""
        return list(self._rows.items())
