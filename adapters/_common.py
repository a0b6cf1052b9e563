"""What every adapter shares that is not protocol: addresses, argument coercion, sockets.

Protocol rules and policy live in the core (:mod:`gearman_proto.session`,
:mod:`gearman_proto.policy`); the errors an application sees are defined in
:mod:`gearman_proto.policy` and re-exported here.
"""

from __future__ import annotations

import functools
import inspect
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gearman_proto.events import (
    Priority,
    Submission,
    SubmitJob,
    SubmitJobEpoch,
    SubmitReduceJob,
)
from gearman_proto.policy import (
    ConnectionLost,
    GearmanError,
    JobEnded,
    JobException,
    JobFailed,
    JobTimeout,
    NoServerAvailable,
    ServerError,
    job_outcome,
)

__all__ = [
    "DEFAULT_PORT",
    "GearmanError",
    "ConnectionLost",
    "NoServerAvailable",
    "ServerError",
    "JobFailed",
    "JobException",
    "JobTimeout",
    "JobEnded",
    "Address",
    "ServersArg",
    "parse_servers",
    "to_bytes",
    "make_submission",
    "job_outcome",
    "set_keepalive",
    "is_async_handler",
    "KeepAlive",
    "apply_keepalive",
]

DEFAULT_PORT = 4730


Address = tuple[str, int]
ServersArg = str | Address | Iterable[str | Address] | None


def parse_servers(servers: ServersArg, default_port: int = DEFAULT_PORT) -> list[Address]:
    """Turn ``"host"``, ``"host:port"``, ``"[v6]:port"``, ``(host, port)`` or a list of those
    into ``[(host, port), ...]``; ``None`` means the local default server."""
    if servers is None:
        return [("127.0.0.1", default_port)]
    if isinstance(servers, str) or (isinstance(servers, tuple) and len(servers) == 2
                                    and isinstance(servers[1], int)):
        items: Sequence[str | Address] = [servers]
    else:
        items = list(servers)
    out: list[Address] = []
    for item in items:
        if isinstance(item, tuple):
            out.append((item[0], int(item[1])))
            continue
        text = item.strip()
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else default_port
        elif text.count(":") == 1:
            host, _, p = text.partition(":")
            port = int(p)
        else:
            host, port = text, default_port
        out.append((host or "127.0.0.1", port))
    if not out:
        raise ValueError("no job server given")
    return out


def to_bytes(value: bytes | bytearray | memoryview | str) -> bytes:
    """Payloads and names are bytes; ``str`` is accepted and encoded as UTF-8 at the edge."""
    if isinstance(value, str):
        return value.encode("utf-8")
    # Not bytes(value): bytes(42) is 42 NUL bytes, and a handler returning a
    # number must be an error, not a payload of zeros.
    return bytes(memoryview(value))


def make_submission(
    function: bytes | str,
    data: bytes | str = b"",
    *,
    unique: bytes | str | None = None,
    priority: Priority = Priority.NORMAL,
    background: bool = False,
    epoch: int | None = None,
    reducer: bytes | str | None = None,
) -> Submission:
    """Build the submission event for the adapters' ``submit()``.

    ``unique=None`` gives a random id (as libgearman does), so jobs never
    coalesce by accident; pass ``b""`` for no unique id at all, or your own key
    (or ``"-"``: the data is the key) to coalesce on purpose.
    """
    f = to_bytes(function)
    d = to_bytes(data)
    u = uuid.uuid4().hex.encode() if unique is None else to_bytes(unique)
    if epoch is not None:
        if not background or priority is not Priority.NORMAL or reducer is not None:
            raise ValueError("epoch jobs are background, NORMAL priority, without a reducer")
        return SubmitJobEpoch(f, int(epoch), d, u)
    if reducer is not None:
        if priority is not Priority.NORMAL:
            raise ValueError("reduce jobs always run at NORMAL priority")
        return SubmitReduceJob(f, to_bytes(reducer), d, u, background)
    return SubmitJob(f, d, u, Priority(priority), background)


def set_keepalive(sock: socket.socket, idle: int | None = None, interval: int | None = None,
                  count: int | None = None) -> None:
    """Turn on TCP keepalive, so a peer that vanished without a FIN is noticed.

    With all three timings given, TCP_USER_TIMEOUT is set to the same bound
    (``idle + interval * count`` seconds): keepalive probes only go out on a
    quiet connection, so without it a peer that vanished with data of ours
    unacknowledged (a JOB_ASSIGN just sent, say) would be retransmitted to for
    many minutes instead of being dropped.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval),
                        ("TCP_KEEPCNT", count)):
        opt = getattr(socket, name, None)
        if opt is not None and value is not None:
            sock.setsockopt(socket.IPPROTO_TCP, opt, value)
    user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    if user_timeout is not None and None not in (idle, interval, count):
        assert idle is not None and interval is not None and count is not None
        sock.setsockopt(socket.IPPROTO_TCP, user_timeout, (idle + interval * count) * 1000)


@dataclass(frozen=True)
class KeepAlive:
    """TCP keepalive with its timings, for the ``keepalive=`` option of every adapter.

    ``keepalive=True`` turns keepalive on with the system's timings (Linux:
    first probe after 2 hours); ``KeepAlive(idle=60, interval=10, count=3)``
    notices a peer that vanished without a FIN (power cut, cable pulled, a
    firewall that forgot the connection) after about ``idle + interval *
    count`` seconds of silence -- or of our data left unacknowledged that
    long (TCP_USER_TIMEOUT, set when all three are given).  ``None`` keeps the
    system's value.  Options the platform lacks are skipped.
    """

    idle: int | None = None
    """Seconds of silence before the first probe (TCP_KEEPIDLE)."""
    interval: int | None = None
    """Seconds between probes (TCP_KEEPINTVL)."""
    count: int | None = None
    """Unanswered probes before the connection is declared dead (TCP_KEEPCNT)."""

    def __post_init__(self) -> None:
        for name in ("idle", "interval", "count"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"keepalive {name} must be >= 1, not {value}")


def apply_keepalive(sock: socket.socket, keepalive: bool | KeepAlive | None) -> None:
    """Apply an adapter's ``keepalive=`` option to a connected socket."""
    if isinstance(keepalive, KeepAlive):
        set_keepalive(sock, keepalive.idle, keepalive.interval, keepalive.count)
    elif keepalive:
        set_keepalive(sock)


_is_coroutine_function = functools.lru_cache(maxsize=256)(inspect.iscoroutinefunction)


def is_async_handler(handler: object) -> bool:
    """Whether a worker's ``handler`` is a coroutine function: remembered per handler,
    since ``inspect`` takes a microsecond or two and workers ask with every job."""
    try:
        return _is_coroutine_function(handler)
    except TypeError:  # an unhashable callable object
        return inspect.iscoroutinefunction(handler)
