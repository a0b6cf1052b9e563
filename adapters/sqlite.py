"""A durable store for background jobs: stdlib :mod:`sqlite3` in WAL mode, group commit.

The job server adds a row when it accepts a background job and removes it when
the job ends; it sends JOB_CREATED only after :meth:`SQLiteStore.commit` has
returned, and calls ``commit()`` once per batch of reads, so one fsync covers
every job accepted in that batch.  On start the server replays every row
(priority, epoch time and reducer kept).  A job running when the server dies
is still stored, so it runs again after restart: at-least-once.

Only adds are acknowledged, so only a batch with an add pays for the fsync:
the rows of finished jobs are deleted with the next commit, and a commit that
has nothing but those deletes is made at ``synchronous=NORMAL`` (in WAL mode
it survives a crash of the server process; after a power loss those jobs may
come back and run again, at least once, as a running job would).  The next
durable commit's fsync of the WAL makes the earlier deletes durable as well.
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
        self._synchronous = synchronous.upper()
        self._level = self._synchronous  # the connection's level now: NORMAL after a relaxed commit
        self._db.execute(f"PRAGMA synchronous={self._synchronous}")
        self._db.execute(_SCHEMA.format(table=table))
        self._insert = (f"INSERT INTO {table} (function_name, unique_key, priority, data, "
                        f"when_to_run, reducer) VALUES (?, ?, ?, ?, ?, ?)")
        self._delete = f"DELETE FROM {table} WHERE id = ?"
        self._in_tx = False
        self._removed: list[StoreKey] = []  # deleted at the next commit, in one executemany
        self.commits = 0

    @property
    def durable(self) -> bool:
        """Always true: JOB_CREATED waits for the commit."""
        return True

    def _begin(self) -> None:
        if not self._in_tx:
            # SQLite only changes the level outside a transaction: every
            # transaction but a relaxed commit's runs at the level asked for.
            if self._level != self._synchronous:
                self._db.execute(f"PRAGMA synchronous={self._synchronous}")
                self._level = self._synchronous
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
        """Forget the row: it is deleted with the next commit (or load, or len)."""
        self._removed.append(key)

    def _delete_removed(self) -> None:
        """Delete the removed rows in the open transaction (opening one if needed)."""
        removed = self._removed
        if removed:
            try:
                self._begin()
                self._db.executemany(self._delete, [(key,) for key in removed])
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc
            removed.clear()

    def commit(self) -> None:
        """Commit the batch: one fsync for every add and remove since the last commit.

        A batch that only removed rows commits without the fsync (see the
        module docstring): nothing in it was acknowledged to anybody.
        """
        if not self._in_tx:
            if not self._removed:
                return
            # No transaction open: nothing was added since the last commit
            # (an add opens one).  Delete the finished jobs' rows at NORMAL.
            if self._level != "NORMAL":
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._level = "NORMAL"
            self._db.execute("BEGIN")
            self._in_tx = True
        self._delete_removed()
        self._db.execute("COMMIT")
        self._in_tx = False
        self.commits += 1

    def load(self) -> Iterator[tuple[StoreKey, StoredJob]]:
        """Every stored job, oldest first."""
        self._delete_removed()
        rows = self._db.execute(
            f"SELECT id, function_name, unique_key, priority, data, when_to_run, reducer "
            f"FROM {self.table} ORDER BY id").fetchall()
        for key, function, unique, priority, data, epoch, reducer in rows:
            yield key, StoredJob(bytes(function), bytes(unique), bytes(data),
                                 Priority(priority), epoch,
                                 None if reducer is None else bytes(reducer))

    def __len__(self) -> int:
        self._delete_removed()
        return int(self._db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])

    def close(self) -> None:
        """Commit what is pending and close the database."""
        self.commit()
        self._db.close()
