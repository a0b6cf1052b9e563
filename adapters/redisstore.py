"""A durable store for background jobs on Redis (redis-py): the queue outlives the machine.

``--queue redis://[:PASSWORD@]HOST:PORT/N`` (the ``redis`` extra).  A server's
rows are one hash, ``gearman-proto:NAME:jobs`` (field: the row key; value: the
job, packed), under its server name (``--queue-name``, default ``default``).
Each batch of input is one ``MULTI``/``HSET``/``HDEL``/``EXEC``: one round trip,
all or nothing.  How durable an acknowledged job is, is Redis's setting: with
``appendonly yes`` and ``appendfsync always`` Redis fsyncs the transaction
before it answers; anything less is logged once at start.

A server owns its name through a lease, ``gearman-proto:NAME:owner`` (``SET NX
PX``), renewed every few seconds by a thread: a second live server with the
same name is refused with one line naming the holder.  A holder that died
frees the name when its lease expires (:attr:`RedisStore.lease` seconds), or at
once for a restart on the same host whose old process is gone; a replacement
started elsewhere then takes the name and replays its rows.
"""

from __future__ import annotations

import logging
import struct
import threading
import uuid
from typing import Any

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError("the Redis store needs redis-py: "
                      "pip install 'gearman-proto[redis]'") from exc

from gearman_proto.events import Priority
from gearman_proto.store import StoreBatch, StoredJob, StoreKey

from .stores import NameTaken, NetworkStore, one_line, pid_is_dead_here

__all__ = ["RedisStore"]

log = logging.getLogger("gearman_proto")

PREFIX = "gearman-proto"
_HEAD = struct.Struct(">BBBqIIi")  # format, priority, has epoch, epoch, len f, len u, len r
_FORMAT = 1
# Renew the lease only while we still hold it (another server may have taken it).
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def pack(job: StoredJob) -> bytes:
    """One job as a hash value: a small header, then function, unique, reducer, data."""
    reducer = job.reducer
    head = _HEAD.pack(_FORMAT, int(job.priority), job.epoch is not None, job.epoch or 0,
                      len(job.function), len(job.unique), -1 if reducer is None else len(reducer))
    return b"".join((head, job.function, job.unique, reducer or b"", job.data))


def unpack(value: bytes) -> StoredJob:
    """The job :func:`pack` made; ValueError for anything else."""
    try:
        fmt, priority, has_epoch, epoch, nf, nu, nr = _HEAD.unpack_from(value)
    except struct.error:
        raise ValueError("too short") from None
    if fmt != _FORMAT or priority > 2:
        raise ValueError(f"format {fmt}, priority {priority}")
    at = _HEAD.size
    function = value[at:at + nf]
    at += nf
    unique = value[at:at + nu]
    at += nu
    reducer = None
    if nr >= 0:
        reducer = value[at:at + nr]
        at += nr
    if at > len(value):
        raise ValueError("truncated")
    return StoredJob(function, unique, value[at:], Priority(priority),
                     epoch if has_epoch else None, reducer)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def transaction(jobs_key: bytes, batch: StoreBatch) -> tuple[bytes, int]:
    """``MULTI``, ``HSET`` of the adds, ``HDEL`` of the removes, ``EXEC``, in RESP; its replies."""
    parts = [b"*1\r\n$5\r\nMULTI\r\n"]
    replies = 2
    key = _bulk(jobs_key)
    if batch.adds:
        parts.append(b"*%d\r\n$4\r\nHSET\r\n%b" % (2 + 2 * len(batch.adds), key))
        for row, job in batch.adds:
            field, value = b"%d" % row, pack(job)
            parts.append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(field), field, len(value), value))
        replies += 1
    if batch.removes:
        parts.append(b"*%d\r\n$4\r\nHDEL\r\n%b" % (2 + len(batch.removes), key))
        parts.extend(_bulk(b"%d" % row) for row in batch.removes)
        replies += 1
    parts.append(b"*1\r\n$4\r\nEXEC\r\n")
    return b"".join(parts), replies


class RedisStore(NetworkStore):
    """Background jobs in a Redis hash, under this server's name.

    Raises :class:`~gearman_proto.store.StoreError` (one line) if the URL is
    wrong, Redis refuses the connection or the password, the database number
    does not exist, the keys hold something else, or another live server holds
    the name.
    """

    kind = "redis"
    lease = 15.0
    """Seconds a dead server's name stays taken (renewed every third of it)."""
    _transient = (redis.ConnectionError, redis.TimeoutError, OSError)

    def __init__(self, url: str, *, name: str, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._jobs_key = f"{PREFIX}:{name}:jobs"
        self._owner_key = f"{PREFIX}:{name}:owner"
        self._client: redis.Redis | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._token = ""
        super().__init__(url, name=name)
        self._renewer = threading.Thread(target=self._renew_lease, name="redis-lease",
                                         daemon=True)
        self._renewer.start()

    def _connect(self) -> None:
        self._drop()
        try:
            client = redis.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                socket_keepalive=True, retry=Retry(NoBackoff(), 0),
                client_name=f"gearman-proto-{self.name}")
        except ValueError as exc:
            self.fail(f"bad URL: {one_line(exc)}")
        try:
            client.ping()
            self._check(client)
            self._take_name(client)
        except redis.RedisError as exc:
            client.close()
            self.fail(one_line(exc))
        except BaseException:
            client.close()
            raise
        self._client = client

    def _check(self, client: redis.Redis) -> None:
        kind = _text(client.type(self._jobs_key))
        if kind not in ("none", "hash"):
            self.fail(f"key {self._jobs_key} holds a {kind}, not a gearman-proto "
                      "queue's hash; use another database number or --queue-name")
        if getattr(self, "_checked", False):
            return
        self._checked = True
        try:
            config: dict[Any, Any] = {}
            for item in ("appendonly", "appendfsync"):
                config.update(client.config_get(item))
        except redis.ResponseError:
            return  # CONFIG renamed away: Redis's durability is the operator's to know
        values = {_text(k): _text(v) for k, v in config.items()}
        if values.get("appendonly") != "yes" or values.get("appendfsync") != "always":
            log.warning("redis %s: appendonly=%s appendfsync=%s: acknowledged jobs survive "
                        "this server's crash but not necessarily Redis's (set appendonly yes, "
                        "appendfsync always)", self.where, values.get("appendonly"),
                        values.get("appendfsync"))

    def _take_name(self, client: redis.Redis) -> None:
        token = self._token or f"{self.holder} token {uuid.uuid4().hex}"
        ms = int(self.lease * 1000)
        if client.set(self._owner_key, token, nx=True, px=ms):
            self._token = token
            return
        current = client.get(self._owner_key)
        holder = _text(current) if current is not None else ""
        if holder == token or (holder and pid_is_dead_here(holder)):
            # Ours from before an outage, or a dead process of this host: take it back.
            client.set(self._owner_key, token, px=ms)
            self._token = token
            return
        if not holder:
            self._take_name(client)  # expired just now
            return
        left = client.pttl(self._owner_key)
        raise NameTaken(f"{self.kind} {self.where}: queue name {self.name!r} is held by "
                        f"another live job server ({holder.split(' token ')[0]}; its lease "
                        f"ends in {max(left, 0) / 1000:.0f} s unless renewed); start this "
                        "one with another --queue-name")

    def _renew_lease(self) -> None:
        while not self._stop.wait(self.lease / 3):
            client = self._client
            if client is None:
                continue  # down: the next write reconnects and takes the name again
            try:
                if not client.eval(_RENEW, 1, self._owner_key, self._token,
                                   int(self.lease * 1000)):
                    # Expired during an outage and someone else took it: the next
                    # write's reconnect finds out who, and refuses for good.
                    self._client = None
            except redis.RedisError:
                pass  # an outage: write() sees it too

    def _write(self, batch: StoreBatch) -> None:
        client = self._client
        if client is None:
            raise redis.ConnectionError("not connected")
        data, replies = transaction(self._jobs_key.encode(), batch)
        # The transaction is packed here and sent on one of redis-py's
        # connections: redis-py's packer encodes argument by argument, ~20 us of
        # the store thread's time per job, which the event loop waits for (the GIL).
        conn = client.connection_pool.get_connection()
        try:
            conn.send_packed_command([data])  # type: ignore[no-untyped-call]
            answers = [conn.read_response(disable_decoding=True, disconnect_on_error=True)
                       for _ in range(replies)]
        except redis.ResponseError as exc:
            conn.disconnect()  # type: ignore[no-untyped-call]  # replies left unread
            self.fail(one_line(exc))  # Redis said no (out of memory, a read-only replica, ...)
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            client.connection_pool.release(conn)
        failed = [a for a in answers[-1] or () if isinstance(a, redis.ResponseError)]
        if failed or answers[-1] is None:
            self.fail(one_line(failed[0]) if failed else "transaction aborted")

    def _load(self) -> list[tuple[StoreKey, StoredJob]]:
        client = self._client
        if client is None:
            self.fail("not connected")
        rows = []
        for field, value in client.hgetall(self._jobs_key).items():
            try:
                rows.append((int(field), unpack(_bytes(value))))
            except ValueError as exc:
                self.fail(f"{self._jobs_key} field {field!r} is not a gearman-proto job "
                          f"({exc}); use another database number or --queue-name")
        rows.sort(key=lambda row: row[0])
        return rows

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except redis.RedisError:
                pass

    def close(self) -> None:
        """Give the name back, stop renewing the lease and close the connection."""
        self._stop.set()
        client = self._client
        if client is not None and self._token:
            try:
                client.eval("if redis.call('get', KEYS[1]) == ARGV[1] then "
                            "return redis.call('del', KEYS[1]) end return 0",
                            1, self._owner_key, self._token)
            except redis.RedisError:
                pass
        super().close()
