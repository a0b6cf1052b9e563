"""gearman_proto: the Gearman job-queue protocol as a sans-IO state machine.

Bytes in (``receive_data``), events out (``next_event``), bytes out
(``send``).  Nothing in this package does I/O; ``gearman_proto.adapters``
binds it to sockets, asyncio, trio and anyio.
"""

from __future__ import annotations

from ._connection import NEED_DATA, ConnectionState, NeedData
from .broker import JobServer
from .client import ClientConnection, ClientJob
from .codec import event_to_packet, packet_to_event
from .errors import LocalProtocolError, PacketTooLarge, ProtocolError, RemoteProtocolError
from .events import *  # noqa: F403
from .events import __all__ as _events_all
from .hub import ServerHub
from .packets import (
    COMPILED,
    DEFAULT_MAX_LINE_LENGTH,
    DEFAULT_MAX_PACKET_SIZE,
    REQ,
    RES,
    SERVER_VERSION,
    SPECS,
    Decoder,
    Packet,
    PacketType,
    Role,
    TextLine,
    encode_packet,
)
from .server import ServerConnection
from .session import ClientSession, WorkerSession
from .store import JobStore, MemoryStore, StoredJob
from .worker import WorkerConnection

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "COMPILED",
    "SERVER_VERSION",
    "NEED_DATA",
    "NeedData",
    "ConnectionState",
    "ClientConnection",
    "ClientJob",
    "JobServer",
    "ServerHub",
    "ClientSession",
    "WorkerSession",
    "JobStore",
    "MemoryStore",
    "StoredJob",
    "WorkerConnection",
    "ServerConnection",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "PacketTooLarge",
    "REQ",
    "RES",
    "SPECS",
    "DEFAULT_MAX_PACKET_SIZE",
    "DEFAULT_MAX_LINE_LENGTH",
    "Decoder",
    "Packet",
    "PacketType",
    "Role",
    "TextLine",
    "encode_packet",
    "event_to_packet",
    "packet_to_event",
    *_events_all,
]
