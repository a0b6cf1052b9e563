"""A durable store for background jobs: stdlib :mod:`sqlite3` in WAL mode, group commit.

The job server hands :meth:`SQLiteStore.write` the rows one batch of input
added and removed, and sends JOB_CREATED for the batch's jobs only once it has
returned, so one fsync covers every job accepted in that batch.  On start the
server replays every row (priority, epoch time and reducer kept).  A job
running when the server dies is still stored, so it runs again after restart:
at-least-once.

Only adds are acknowledged, so only a batch with an add pays for the fsync: a
batch that only deletes the rows of finished jobs commits at
``synchronous=NORMAL`` (in WAL mode it survives a crash of the server process;
after a power loss those jobs may come back and run again, at least once, as
a running job would).  The next durable commit's fsync of the WAL makes the
earlier deletes durable as well.

One file serves one job server: the store holds an exclusive lock on
``PATH.lock`` (which names the holder) for as long as it is open, so a second
server on the same file refuses to start instead of replaying every job a
second time.  Every failure is a :class:`~gearman_proto.store.StoreError`
whose message names the file and the cause.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from gearman_proto.events import Priority
from gearman_proto.store import StoreBatch, StoredJob, StoreError, StoreKey

__all__ = ["SQLiteStore"]

_COLUMNS = ("id", "function_name", "unique_key", "priority", "data", "when_to_run", "reducer")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    function_name BLOB NOT NULL,
    unique_key BLOB NOT NULL,
    priority INTEGER NOT NULL,
    data BLOB NOT NULL,
    when_to_run INTEGER,
    reducer BLOB
)
"""


def _lock(path: str) -> int:
    """Take the exclusive lock that makes this process the file's one server; its fd."""
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"sqlite {path}: cannot open {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
        os.close(fd)
        raise StoreError(f"sqlite {path}: in use by another job server ({holder}); "
                         "one file serves one server") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return fd


class SQLiteStore:
    """Background jobs in an SQLite file; ``synchronous=FULL`` so a commit survives power loss.

    ``synchronous="NORMAL"`` trades that for speed: in WAL mode a commit then
    survives a crash of the server process but not of the machine.  Raises
    :class:`~gearman_proto.store.StoreError` if the file cannot serve (missing
    directory, read-only, not a database, a table of another shape, or held by
    another server).
    """

    def __init__(self, path: str | Path, *, table: str = "gearman_queue",
                 synchronous: str = "FULL") -> None:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"bad table name {table!r}")
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.path = str(path)
        self.table = table
        self._synchronous = synchronous.upper()
        self._lock_fd = -1
        self._db: sqlite3.Connection | None = None
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise StoreError(f"sqlite {self.path}: directory {parent} does not exist")
        self._lock_fd = _lock(self.path)
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        try:
            # isolation_level=None: transactions are ours (BEGIN ... COMMIT in write()).
            db = self._db = sqlite3.connect(self.path, isolation_level=None,
                                            check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute(_SCHEMA.format(table=self.table))
            columns = tuple(row[1] for row in db.execute(f"PRAGMA table_info({self.table})"))
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: {exc}") from None
        if columns != _COLUMNS:
            raise StoreError(f"sqlite {self.path}: table {self.table} has columns "
                             f"({', '.join(columns)}), not a gearman queue's "
                             f"({', '.join(_COLUMNS)})")
        self._level = self._synchronous  # NORMAL after a batch of deletes only
        self._insert = (f"INSERT INTO {self.table} (id, function_name, unique_key, priority, "
                        f"data, when_to_run, reducer) VALUES (?, ?, ?, ?, ?, ?, ?)")
        self._delete = f"DELETE FROM {self.table} WHERE id = ?"
        self.commits = 0

    @property
    def durable(self) -> bool:
        """Always true: JOB_CREATED waits for the commit."""
        return True

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"sqlite {self.path}: closed")
        return self._db

    def write(self, batch: StoreBatch) -> None:
        """Insert and delete the batch's rows in one transaction: one fsync if it adds any.

        On failure (``database or disk is full``, say) the transaction is
        rolled back, so the file holds all of the batch or none of it, and
        the next batch starts clean.
        """
        db = self._connection()
        # SQLite changes the level only outside a transaction: set it first.
        level = self._synchronous if batch.adds else "NORMAL"
        try:
            if self._level != level:
                db.execute(f"PRAGMA synchronous={level}")
                self._level = level
            db.execute("BEGIN")
            if batch.adds:
                db.executemany(self._insert, [
                    (key, job.function, job.unique, int(job.priority), job.data, job.epoch,
                     job.reducer) for key, job in batch.adds])
            if batch.removes:
                db.executemany(self._delete, [(key,) for key in batch.removes])
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # a failed rollback leaves SQLite to roll back on the next open
            raise StoreError(f"sqlite {self.path}: {exc}") from None
        self.commits += 1

    def load(self) -> Iterator[tuple[StoreKey, StoredJob]]:
        """Every stored job, oldest first."""
        try:
            rows = self._connection().execute(
                f"SELECT id, function_name, unique_key, priority, data, when_to_run, reducer "
                f"FROM {self.table} ORDER BY id").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: {exc}") from None
        for key, function, unique, priority, data, epoch, reducer in rows:
            yield key, StoredJob(bytes(function), bytes(unique), bytes(data),
                                 Priority(priority), epoch,
                                 None if reducer is None else bytes(reducer))

    def __len__(self) -> int:
        return int(self._connection().execute(
            f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])

    def close(self) -> None:
        """Close the database and let another server have the file."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
