"""Bindings of the sans-IO core to real transports (installed as ``gearman_proto.adapters``).

``sync`` (blocking sockets), ``asyncio``, ``anyio`` and ``trio`` each offer
``Client``, ``Worker`` and ``AdminClient``; the async ones also a job
``Server``.  The errors they raise are the same for all four and are importable
from here.
"""

from ._common import (
    ConnectionLost,
    GearmanError,
    JobEnded,
    JobException,
    JobFailed,
    JobTimeout,
    NoServerAvailable,
    ServerError,
)

__all__ = [
    "GearmanError",
    "ConnectionLost",
    "NoServerAvailable",
    "ServerError",
    "JobFailed",
    "JobException",
    "JobTimeout",
    "JobEnded",
]
