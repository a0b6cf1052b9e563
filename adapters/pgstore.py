"""A durable store for background jobs on PostgreSQL (psycopg 3): the queue outlives the machine.

``--queue postgresql://USER@HOST:PORT/DB`` (the ``postgresql`` extra).  One
table, ``gearman_queue``, holds the rows of every job server that uses the
database, each under its server name (``--queue-name``, default
``default``), keyed by ``(queue_name, id)``.  A server owns its name through a
session-level advisory lock: a second live server with the same name is
refused with one line naming the holder (kept in ``gearman_servers``), and
when the holder's session ends -- its process died, or its machine, once
PostgreSQL's TCP keepalive notices -- a replacement started anywhere takes the
name and replays its rows.

Each batch of input is one statement (insert and delete together), one round
trip and one commit, autocommitted at the database's ``synchronous_commit``:
JOB_CREATED goes out after PostgreSQL has flushed the commit to its WAL.
A batch of deletes only waits for that flush too: PostgreSQL may crash while
the job server runs on, and must not lose what the server has forgotten.
Outages are handled by :class:`~gearman_proto.adapters.stores.NetworkStore`.
"""

from __future__ import annotations

import struct
from typing import Any, TypeVar

try:
    import psycopg
    from psycopg.adapt import Dumper
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError("the PostgreSQL store needs psycopg 3: "
                      "pip install 'gearman-proto[postgresql]'") from exc

from gearman_proto.events import Priority
from gearman_proto.store import StoreBatch, StoredJob, StoreError, StoreKey

from .stores import NameTaken, NetworkStore, lock_key, one_line

__all__ = ["PostgreSQLStore"]

TABLE = "gearman_queue"
SERVERS = "gearman_servers"
_COLUMNS = ["queue_name", "id", "function_name", "unique_key", "priority", "data",
            "when_to_run", "reducer"]
_CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    queue_name text NOT NULL,
    id bigint NOT NULL,
    function_name bytea NOT NULL,
    unique_key bytea NOT NULL,
    priority smallint NOT NULL,
    data bytea NOT NULL,
    when_to_run bigint,
    reducer bytea,
    PRIMARY KEY (queue_name, id)
);
CREATE TABLE IF NOT EXISTS {SERVERS} (
    queue_name text PRIMARY KEY,
    holder text NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
)
"""
# One statement per batch: the inserts and the deletes, one round trip, one commit.
# The arrays go in PostgreSQL's binary form, built here (see _Array): psycopg's
# text form hex-escapes every bytea in Python, and its generic binary dumper
# calls a dumper per element: for a 500-row batch ~86 and ~10 ms of Python on
# the store thread (cProfile), against ~3 ms here, time the event loop waits
# for (the GIL).
_WRITE = f"""
WITH added AS (
    INSERT INTO {TABLE} (queue_name, id, function_name, unique_key, priority, data,
                         when_to_run, reducer)
    SELECT %(name)b, * FROM unnest(%(ids)b::bigint[], %(functions)b::bytea[],
                                   %(uniques)b::bytea[], %(priorities)b::smallint[],
                                   %(datas)b::bytea[], %(epochs)b::bigint[],
                                   %(reducers)b::bytea[])
), removed AS (
    DELETE FROM {TABLE} WHERE queue_name = %(name)b AND id = ANY(%(removes)b::bigint[])
)
SELECT 1
"""
# A batch that only deletes commits at the database's synchronous_commit too,
# although it acknowledges nothing: PostgreSQL can crash while this server
# runs on, and a delete it lost would leave a finished job's row behind (run
# again at the next start) while this server believes it gone.
_DELETE = f"DELETE FROM {TABLE} WHERE queue_name = %(name)b AND id = ANY(%(removes)b::bigint[])"


_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_NULL = _I32.pack(-1)
_LEN8 = _I32.pack(8)
_ONE_DIM = struct.Struct(">iiIii")  # dimensions, has nulls, element type, length, lower bound
_NO_DIM = struct.Struct(">iiI")
_PRIORITIES = {int(p): _I32.pack(2) + struct.pack(">h", int(p)) for p in Priority}


_A = TypeVar("_A", bound="_Array")


class _Array(bytes):
    """A one-dimensional array in PostgreSQL's binary form (the bytes of array_send)."""

    __slots__ = ()
    element_oid = 0

    @classmethod
    def of(cls: type[_A], items: list[bytes], has_null: bool) -> _A:
        """The array of ``items``: each the element's length (or -1, NULL) and its bytes."""
        if not items:
            return cls(_NO_DIM.pack(0, 0, cls.element_oid))
        return cls(b"".join([_ONE_DIM.pack(1, has_null, cls.element_oid, len(items), 1),
                             *items]))


class _ByteaArray(_Array):
    __slots__ = ()
    element_oid = 17


class _Int8Array(_Array):
    __slots__ = ()
    element_oid = 20


class _Int2Array(_Array):
    __slots__ = ()
    element_oid = 21


def _dumper(array: type[_Array], array_oid: int) -> type[Dumper]:
    class ArrayDumper(Dumper):
        format = psycopg.pq.Format.BINARY
        oid = array_oid

        def dump(self, obj: Any) -> bytes:
            return bytes(obj)
    ArrayDumper.__name__ = f"{array.__name__}Dumper"
    return ArrayDumper


_DUMPERS = [(_ByteaArray, _dumper(_ByteaArray, 1001)), (_Int8Array, _dumper(_Int8Array, 1016)),
            (_Int2Array, _dumper(_Int2Array, 1005))]


def _bigints(values: list[int]) -> _Int8Array:
    return _Int8Array.of([_LEN8 + _I64.pack(v) for v in values], False)


def _blobs(values: list[bytes]) -> _ByteaArray:
    return _ByteaArray.of([_I32.pack(len(v)) + v for v in values], False)


def _batch_params(name: str, adds: list[tuple[StoreKey, StoredJob]],
                  removes: list[StoreKey]) -> dict[str, Any]:
    """The parameters of :data:`_WRITE` for ``adds`` and ``removes``."""
    jobs = [job for _, job in adds]
    epochs = [job.epoch for job in jobs]
    reducers = [job.reducer for job in jobs]
    return {
        "name": name,
        "ids": _bigints([key for key, _ in adds]),
        "functions": _blobs([job.function for job in jobs]),
        "uniques": _blobs([job.unique for job in jobs]),
        "priorities": _Int2Array.of([_PRIORITIES[job.priority] for job in jobs], False),
        "datas": _blobs([job.data for job in jobs]),
        "epochs": _Int8Array.of([_NULL if e is None else _LEN8 + _I64.pack(e) for e in epochs],
                                None in epochs),
        "reducers": _ByteaArray.of([_NULL if r is None else _I32.pack(len(r)) + r
                                    for r in reducers], None in reducers),
        "removes": _bigints(removes),
    }


class PostgreSQLStore(NetworkStore):
    """Background jobs in a PostgreSQL table, under this server's name.

    Raises :class:`~gearman_proto.store.StoreError` (one line) if the URL is
    wrong, the server refuses the connection or the credentials, the database
    is missing, the table has another shape, or another live server holds the
    name.
    """

    kind = "postgresql"
    _transient = (psycopg.OperationalError, psycopg.InterfaceError)

    def __init__(self, url: str, *, name: str, connect_timeout: int = 5) -> None:
        self.connect_timeout = connect_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._lock_key = lock_key("gearman-proto", TABLE, name)
        super().__init__(url, name=name)

    def _connect(self) -> None:
        self._drop()
        try:
            conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=self.connect_timeout,
                application_name=f"gearman-proto {self.name}",
                # Find a dead peer in seconds, not hours, both ways of the link:
                # ours (libpq's keepalives) and the server's (its session settings),
                # so the name's lock goes with a dead machine's session in ~25 s.
                keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
                tcp_user_timeout=30_000,
                options="-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 "
                        "-c tcp_keepalives_count=3")
        except psycopg.Error as exc:
            self.fail(one_line(exc))
        except Exception as exc:  # a malformed URL is a ProgrammingError or ValueError
            self.fail(f"bad URL: {one_line(exc)}")
        try:
            self._setup(conn)
        except psycopg.Error as exc:
            conn.close()
            self.fail(one_line(exc))
        except StoreError:
            conn.close()
            raise
        for array, dumper in _DUMPERS:
            conn.adapters.register_dumper(array, dumper)
        self._conn = conn

    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        try:
            conn.execute(_CREATE)
        except psycopg.errors.UniqueViolation:
            pass  # another server created the tables at the same moment
        columns = [row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s "
            "ORDER BY ordinal_position", (TABLE,))]
        if columns != _COLUMNS:
            self.fail(f"table {TABLE} has columns ({', '.join(columns)}), not a gearman-proto "
                      f"queue's ({', '.join(_COLUMNS)}); use another database")
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,)).fetchone()
        if not row or not row[0]:
            found = conn.execute(f"SELECT holder, since FROM {SERVERS} WHERE queue_name = %s",
                                 (self.name,)).fetchone()
            holder = f"{found[0]}, since {found[1]:%Y-%m-%d %H:%M:%S %Z}" if found else "unknown"
            raise NameTaken(f"{self.kind} {self.where}: queue name {self.name!r} is held by "
                            f"another live job server ({holder}); start this one with "
                            "another --queue-name")
        conn.execute(f"INSERT INTO {SERVERS} (queue_name, holder) VALUES (%s, %s) "
                     f"ON CONFLICT (queue_name) DO UPDATE SET holder = EXCLUDED.holder, "
                     f"since = now()", (self.name, self.holder))

    def _write(self, batch: StoreBatch) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            raise psycopg.OperationalError("not connected")
        removes = batch.removes
        gone = set(removes)
        # A row added and removed in one batch (a job cancelled before its row
        # was written) is just not inserted: the statement's parts share a snapshot.
        adds = [(key, job) for key, job in batch.adds if key not in gone] if gone else batch.adds
        try:
            if not adds:
                conn.execute(_DELETE, {"name": self.name, "removes": _bigints(removes)},
                             prepare=True)
                return
            conn.execute(_WRITE, _batch_params(self.name, adds, removes), prepare=True)
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise
            self.fail(one_line(exc))  # the database said no (disk full, ...): still connected

    def _load(self) -> list[tuple[StoreKey, StoredJob]]:
        conn = self._conn
        if conn is None:
            self.fail("not connected")
        rows = conn.execute(
            f"SELECT id, function_name, unique_key, priority, data, when_to_run, reducer "
            f"FROM {TABLE} WHERE queue_name = %s ORDER BY id", (self.name,)).fetchall()
        return [(key, StoredJob(bytes(function), bytes(unique), bytes(data), Priority(priority),
                                epoch, None if reducer is None else bytes(reducer)))
                for key, function, unique, priority, data, epoch, reducer in rows]

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass
