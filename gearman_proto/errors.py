"""One hierarchy of errors for everything the core can refuse.

The split follows h11: a :class:`LocalProtocolError` means *this* program asked a
connection to do something the protocol forbids; a :class:`RemoteProtocolError`
means the peer sent something it may not.  Both carry the Gearman ERROR code and
text a job server would answer with, so a server adapter can reply without
deciding anything itself.
"""

from __future__ import annotations

__all__ = [
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "PacketTooLarge",
    "GrabRefused",
]


class ProtocolError(Exception):
    """Base class: the Gearman protocol was violated.

    ``error_code`` and ``error_text`` are what a job server sends back in an
    ERROR packet (gearmand's codes, e.g. ``b"INVALID_MAGIC"``); they default to
    ``UNKNOWN_ERROR`` when no better code applies.
    """

    def __init__(
        self,
        message: str,
        *,
        error_code: bytes = b"UNKNOWN_ERROR",
        error_text: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.error_text = error_text if error_text is not None else message.encode(
            "utf-8", "replace"
        )


class LocalProtocolError(ProtocolError):
    """This program tried to send something its role or state does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes or a message that its role or state does not allow."""


class PacketTooLarge(RemoteProtocolError):
    """A packet header (or admin line) announced more bytes than the configured maximum.

    Raised from the header alone, before any of the payload is buffered.
    """


class GrabRefused(RemoteProtocolError):
    """The job server refused the worker's grab packet and no other grab is left to try.

    A worker that gets this cannot be given jobs by that server: it should say
    so and stop rather than wait for work that will never come.
    """
