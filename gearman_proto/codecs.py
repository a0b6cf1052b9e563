"""Data codecs: how clients and workers turn application values into payloads and back.

Gearman payloads are bytes and the protocol never looks inside them.  A
``codec=`` on a Client or Worker (every flavour) lets an application pass
objects instead: the client encodes what it submits and decodes the result,
the worker decodes the job's data (``job.value``) and encodes what the handler
returns.  The default, :data:`BYTES`, keeps bytes as they are (``str`` is
encoded as UTF-8).  Progress updates (WORK_DATA, WORK_WARNING) stay bytes:
they are pieces of output, not values.

:data:`JSON` suits values any language can read (a PHP or Perl peer).
:data:`PICKLE` carries any Python object between Python programs, and is
**unsafe with peers you do not trust**: unpickling runs code the payload names.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol

__all__ = ["Codec", "BytesCodec", "JSONCodec", "PickleCodec", "BYTES", "JSON", "PICKLE"]


class Codec(Protocol):
    """Turns an application value into a payload and back."""

    def encode(self, value: Any) -> bytes:
        """The payload for ``value``; raises TypeError or ValueError if it has none."""
        ...

    def decode(self, data: bytes) -> Any:
        """The value of a payload; raises ValueError if it is not one."""
        ...


class BytesCodec:
    """Payloads as they are: bytes (and bytearray, memoryview) pass, str is UTF-8."""

    def encode(self, value: Any) -> bytes:
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(memoryview(value))
        raise TypeError(f"a payload is bytes or str, not {type(value).__name__} "
                        f"(pass codec=JSON or another codec to send objects)")

    def decode(self, data: bytes) -> Any:
        return data

    def __repr__(self) -> str:
        return "BYTES"


class JSONCodec:
    """JSON in UTF-8, compact; any JSON value (dict, list, str, number, bool, None)."""

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def decode(self, data: bytes) -> Any:
        return json.loads(data.decode("utf-8"))

    def __repr__(self) -> str:
        return "JSON"


class PickleCodec:
    """Any picklable Python object.  Never decode payloads from a peer you do not trust."""

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=self.protocol)

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)

    def __repr__(self) -> str:
        return "PICKLE"


BYTES = BytesCodec()
JSON = JSONCodec()
PICKLE = PickleCodec()
