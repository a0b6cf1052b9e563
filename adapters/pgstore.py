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

from typing import Any

try:
    import psycopg
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
# Parameters go in binary (%b): psycopg then sends each bytea as it is, where
# text would hex-escape every value in Python (3-4x the time of a 500-row batch).
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
                conn.execute(_DELETE, {"name": self.name, "removes": removes}, prepare=True)
                return
            conn.execute(_WRITE, {
                "name": self.name,
                "ids": [key for key, _ in adds],
                "functions": [job.function for _, job in adds],
                "uniques": [job.unique for _, job in adds],
                "priorities": [int(job.priority) for _, job in adds],
                "datas": [job.data for _, job in adds],
                "epochs": [job.epoch for _, job in adds],
                "reducers": [job.reducer for _, job in adds],
                "removes": removes,
            }, prepare=True)
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
