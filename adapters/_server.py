"""What the asyncio and the anyio job servers set up alike: the broker, the hub, the options.

Each server flavour is a loop of its own around :class:`~gearman_proto.hub.ServerHub`;
what it is given and how its hub is built is the same, so it is written here once.
"""

from __future__ import annotations

import logging
import os
import ssl as _ssl
import time
from typing import Any

from gearman_proto.broker import JobServer
from gearman_proto.hub import DEFAULT_GRACEFUL_TIMEOUT, DEFAULT_MAX_CLIENT_JOBS, ServerHub
from gearman_proto.packets import DEFAULT_MAX_PACKET_SIZE

from ._common import KeepAlive

__all__ = ["ServerBase", "server_log"]

server_log = logging.getLogger("gearman_proto.server")
"""The server's log (accepts, closes, protocol errors, replays, signals, drains)."""


class ServerBase:
    """A job server's options and its hub; the flavours add the event loop's part."""

    def __init__(self, host: str = "127.0.0.1", port: int = 4730, *,
                 broker: JobServer | None = None, ssl: _ssl.SSLContext | None = None,
                 max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
                 max_connections: int = 0, output_limit: int = 4 * 1024 * 1024,
                 keepalive: bool | KeepAlive = False, backlog: int = 1024,
                 idle_timeout: float = 0.0, max_client_jobs: int = DEFAULT_MAX_CLIENT_JOBS,
                 graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
                 http: tuple[str, int] | None = None, **broker_options: Any) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl
        self.backlog = backlog
        if broker is None:
            broker_options.setdefault("pid", os.getpid())
            broker = JobServer(now=time.time(), **broker_options)
        self.hub = ServerHub(broker, max_packet_size=max_packet_size, idle_timeout=idle_timeout,
                             max_client_jobs=max_client_jobs, max_connections=max_connections,
                             graceful_timeout=graceful_timeout,
                             log_level=server_log.getEffectiveLevel())
        self.max_connections = max_connections
        self.output_limit = output_limit
        self.keepalive = keepalive
        self.http_address = http  # (host, port) of /metrics and the dashboard (adapters/http.py)
        self.http: Any = None

    @property
    def broker(self) -> JobServer:
        """The core's job server (its state is what the admin commands report)."""
        return self.hub.broker
