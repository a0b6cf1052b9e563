"""A durable store for background jobs: stdlib :mod:`sqlite3` in WAL mode, group commit.

The job server adds a row when it accepts a background job and removes it when
the job ends; it sends JOB_CREATED only after :meth:`SQLiteStore.commit` has
returned, and calls ``commit()`` once per batch of reads, so one fsync covers
every job accepted in that batch.  On start the server replays every row
(priority, epoch time and reducer kept).  A job running when the server dies
is still stored, so it runs again after restart: at-least-once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from gearman_proto.events import Priority
from gearman_proto.store import StoredJob, StoreError, StoreKey

__all__ = ["SQLiteStore"]

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


class SQLiteStore:
    """Background jobs in an SQLite file; ``synchronous=FULL`` so a commit survives power loss.

    ``synchronous="NORMAL"`` trades that for speed: in WAL mode a commit then
    survives a crash of the server process but not of the machine.
    """

    def __init__(self, path: str | Path, *, table: str = "gearman_queue",
                 synchronous: str = "FULL") -> None:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"bad table name {table!r}")
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.path = str(path)
        self.table = table
        # isolation_level=None: transactions are ours (BEGIN at the first write
        # of a batch, COMMIT in commit()), not the module's implicit ones.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute(_SCHEMA.format(table=table))
        self._insert = (f"INSERT INTO {table} (function_name, unique_key, priority, data, "
                        f"when_to_run, reducer) VALUES (?, ?, ?, ?, ?, ?)")
        self._delete = f"DELETE FROM {table} WHERE id = ?"
        self._in_tx = False
        self.commits = 0

    @property
    def durable(self) -> bool:
        """Always true: JOB_CREATED waits for the commit."""
        return True

    def _begin(self) -> None:
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True

    def add(self, job: StoredJob) -> StoreKey:
        """Insert the job in the open transaction; its rowid is the key."""
        try:
            self._begin()
            cur = self._db.execute(self._insert, (job.function, job.unique, int(job.priority),
                                                  job.data, job.epoch, job.reducer))
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        key = cur.lastrowid
        assert key is not None
        return key

    def remove(self, key: StoreKey) -> None:
        """Delete the row in the open transaction."""
        try:
            self._begin()
            self._db.execute(self._delete, (key,))
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def commit(self) -> None:
        """Commit the batch: one fsync for every add and remove since the last commit."""
        if self._in_tx:
            self._db.execute("COMMIT")
            self._in_tx = False
            self.commits += 1

    def load(self) -> Iterator[tuple[StoreKey, StoredJob]]:
        """Every stored job, oldest first."""
        rows = self._db.execute(
            f"SELECT id, function_name, unique_key, priority, data, when_to_run, reducer "
            f"FROM {self.table} ORDER BY id").fetchall()
        for key, function, unique, priority, data, epoch, reducer in rows:
            yield key, StoredJob(bytes(function), bytes(unique), bytes(data),
                                 Priority(priority), epoch,
                                 None if reducer is None else bytes(reducer))

    def __len__(self) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])

    def close(self) -> None:
        """Commit what is pending and close the database."""
        self.commit()
        self._db.close()
