"""Durable stores by URL, and what the network stores share: outages and reconnects.

``open_store(spec, name=...)`` turns a ``--queue`` value into a store:
``memory``, ``sqlite:PATH``, ``postgresql://USER@HOST:PORT/DB`` (psycopg 3,
the ``postgresql`` extra) or ``redis://HOST:PORT/N`` (redis-py, the ``redis``
extra).  Every failure to open one is a :class:`~gearman_proto.store.StoreError`
whose message is one line naming the store and the cause.

A network store that loses its database keeps the job server serving: each
:meth:`NetworkStore.write` while it is down raises ``StoreError`` (so that
batch's submissions get ``ERROR QUEUE_ERROR``, never JOB_CREATED) without
waiting on the network, and the next write after a backoff -- 50 ms, doubling
to 5 s -- reconnects, takes the server's name again and writes.  Nothing else
needs the store, so queued and running jobs, foreground jobs and the admin
protocol carry on meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from gearman_proto.store import JobStore, StoreBatch, StoredJob, StoreError, StoreKey

if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["open_store", "NetworkStore", "NameTaken", "DEFAULT_QUEUE_NAME", "holder_id", "redact"]

log = logging.getLogger("gearman_proto")

DEFAULT_QUEUE_NAME = "default"
"""The server name a store's rows are filed under when ``--queue-name`` is not given."""

_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,100}$")


def holder_id() -> str:
    """How this process names itself to another server that finds the name taken."""
    return f"pid {os.getpid()} on {socket.gethostname()}"


def check_name(name: str) -> str:
    """The queue name, if it is a sane one (it becomes part of keys and log lines)."""
    if not _NAME.match(name):
        raise StoreError(f"bad --queue-name {name!r}: 1-100 letters, digits and _.:@-")
    return name


def open_store(spec: str, *, name: str = DEFAULT_QUEUE_NAME) -> JobStore | None:
    """The store a ``--queue`` value names (``None`` for ``memory``); raises StoreError."""
    if spec == "memory":
        return None
    kind, sep, rest = spec.partition(":")
    if kind == "sqlite" and sep and rest:
        from .sqlite import SQLiteStore
        return SQLiteStore(rest)
    if kind in ("postgresql", "postgres") and rest.startswith("//"):
        from .pgstore import PostgreSQLStore
        return PostgreSQLStore(spec, name=check_name(name))
    if kind in ("redis", "rediss", "unix") and rest.startswith("//"):
        from .redisstore import RedisStore
        return RedisStore(spec, name=check_name(name))
    raise StoreError(f"unknown --queue {spec!r}: memory, sqlite:PATH, "
                     "postgresql://USER@HOST:PORT/DB or redis://HOST:PORT/N")


def one_line(exc: BaseException) -> str:
    """A driver's (often multi-line) error message as one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def lock_key(*parts: str) -> int:
    """A stable signed 64-bit number for a name (a PostgreSQL advisory lock key)."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def pid_is_dead_here(holder: str) -> bool:
    """True if ``holder`` (a :func:`holder_id`) is a process of this host that is gone."""
    match = re.match(r"^pid (\d+) on (\S+)", holder)
    if match is None or match.group(2) != socket.gethostname():
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class NameTaken(StoreError):
    """Another live job server holds this server's name: the store will not write."""


class NetworkStore:
    """A durable store on a database server: backoff, reconnect and the name taken again.

    Subclasses connect (:meth:`_connect`, which must also take the name),
    write a batch in one round trip (:meth:`_write`), read every row
    (:meth:`_load`) and say which driver errors mean the connection is gone
    (:attr:`_transient`).  :meth:`write` may run on a thread of its own; one
    call at a time.
    """

    kind = "store"
    backoff_min = 0.05
    backoff_max = 5.0
    _transient: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, url: str, *, name: str) -> None:
        self.url = url
        self.name = name
        self.where = redact(url)
        self.commits = 0
        self.holder = holder_id()
        self._lock = threading.Lock()  # write() and close() on different threads
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._backoff = self.backoff_min
        self._last_error = ""
        self._taken: NameTaken | None = None  # set for good once another server took the name
        self._closed = False
        # At start, no retry: a server that cannot reach its store refuses to start.
        self._connect()

    @property
    def durable(self) -> bool:
        """Always true: JOB_CREATED waits for the write."""
        return True

    @property
    def connected(self) -> bool:
        """False while the database is unreachable (between an error and a reconnect)."""
        return self._down_since is None

    def fail(self, message: str) -> NoReturn:
        """Raise the one-line error for this store."""
        raise StoreError(f"{self.kind} {self.where}: {message}")

    def write(self, batch: StoreBatch) -> None:
        """Write the batch in one round trip, reconnecting first if the database was lost."""
        with self._lock:
            if self._taken is not None:
                raise self._taken
            if self._closed:
                self.fail("closed")
            now = time.monotonic()
            if self._down_since is not None:
                if now < self._retry_at:
                    self.fail(f"unreachable, next try in {self._retry_at - now:.1f} s "
                              f"({self._last_error})")
                try:
                    self._connect()
                except NameTaken as exc:
                    self._taken = exc
                    log.error("%s", exc)
                    raise
                except StoreError as exc:
                    self._went_down(str(exc), now)
                    raise
                log.warning("%s %s: reconnected after %.1f s; durable submissions resume",
                            self.kind, self.where, now - self._down_since)
                self._down_since = None
                self._backoff = self.backoff_min
            try:
                self._write(batch)
            except self._transient as exc:
                self._drop()
                self._went_down(one_line(exc), now)
                self.fail(f"lost the connection: {one_line(exc)}")
            except NameTaken as exc:
                self._taken = exc
                log.error("%s", exc)
                raise
            self.commits += 1

    def _went_down(self, why: str, now: float) -> None:
        if self._down_since is None:
            self._down_since = now
            log.error("%s %s: unreachable (%s); durable submissions get QUEUE_ERROR until "
                      "it is back, everything else goes on", self.kind, self.where, why)
        else:
            self._backoff = min(self._backoff * 2, self.backoff_max)
        self._last_error = why
        self._retry_at = now + self._backoff

    def load(self) -> Iterable[tuple[StoreKey, StoredJob]]:
        """Every row of this server's name, oldest first (at start: errors are not retried)."""
        try:
            return self._load()
        except self._transient as exc:
            self.fail(one_line(exc))

    def close(self) -> None:
        """Let the name go and close the connection."""
        with self._lock:
            self._closed = True
            self._drop()

    # -- for subclasses -----------------------------------------------------------------

    def _connect(self) -> None:
        raise NotImplementedError

    def _write(self, batch: StoreBatch) -> None:
        raise NotImplementedError

    def _load(self) -> list[tuple[StoreKey, StoredJob]]:
        raise NotImplementedError

    def _drop(self) -> None:
        raise NotImplementedError


def redact(url: str) -> str:
    """The URL without a password, for messages."""
    return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)

