"""gearman_proto: the Gearman job-queue protocol as a sans-IO state machine.

Bytes in (``receive_data``), events out (``next_event``), bytes out
(``send``).  Nothing in this package does I/O; ``gearman_proto.adapters``
binds it to sockets, asyncio, trio and anyio.
"""

from __future__ import annotations

import os as _os

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

# In a source checkout the adapters sit beside this folder (adapters/, installed
# as gearman_proto.adapters).  Python puts the current directory first on
# sys.path, so a script or `python -m pytest` run from the checkout imports this
# folder, not the installed package, and would not find gearman_proto.adapters;
# the checkout's root joins the package path so it does.  Installed, the parent
# is site-packages, which has no pyproject.toml, and nothing changes.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isfile(
        _os.path.join(_root, "adapters", "__init__.py")):
    __path__.append(_root)  # noqa: F405  (a package global, not from the star import)
del _root

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
