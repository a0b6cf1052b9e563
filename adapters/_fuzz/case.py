"""A fuzz case: who the connections are and what each sends, step by step; its file format.

A case is written at the level of packets, not events, so that a reproducer
says exactly what went on the wire.  An item is a request packet (its type and
arguments), an admin line, or raw bytes (the malformed messages).  Job
handles are not known before the server gives them out, so a packet's
arguments and an admin line may hold a *handle reference* ``{H1}``, ``{H2}``,
...: the first, second, ... distinct job handle the server has named on any
connection so far, filled in when the step is sent.  Function names and unique
ids are references too (``{F1}``, ``{U1}``, ``{U64}``), made into names that
belong to one run of the case, so that what a case leaves behind in a
long-lived server (queued background jobs, a maxqueue limit) never meets the
next case.

The file is JSON; bytes are written as strings whose code points are the byte
values (ASCII stays readable), raw bytes in hex.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from gearman_proto.codec import event_to_packet
from gearman_proto.events import AdminCommand, Event
from gearman_proto.packets import REQ, PacketType, encode_packet

__all__ = ["Packet", "Line", "Raw", "Item", "Step", "Case", "handle_ref", "resolver",
           "encode_item", "FORMAT"]

FORMAT = "gearman-proto-fuzz/1"
"""The ``format`` field of a reproducer file."""

_REF = re.compile(rb"\{([HFU])(\d+)\}")


def handle_ref(k: int) -> bytes:
    """The placeholder for the ``k``-th job handle the server names (from 1)."""
    return b"{H%d}" % k


class Packet(NamedTuple):
    """A request packet: its type number and arguments (possibly holding handle references)."""

    type: int
    args: tuple[bytes, ...]


class Line(NamedTuple):
    """An admin text line, sent with ``\\n``."""

    text: bytes


class Raw(NamedTuple):
    """Bytes sent as they are: a malformed message."""

    data: bytes


Item = Packet | Line | Raw


class Step(NamedTuple):
    """Connection ``conn`` sends ``items``, then closes its side if ``close``."""

    conn: int
    items: tuple[Item, ...]
    close: bool = False


Resolver = Callable[[bytes, int], bytes]
"""What a reference ``{Xk}`` stands for: ``resolver(b"X", k)``."""


def resolver(token: bytes, handle: Callable[[int], bytes]) -> Resolver:
    """References for one run of a case: ``{Fk}`` and ``{Uk}`` named after ``token``
    (``{U64}`` padded to 64 bytes), ``{Hk}`` given by ``handle(k)``."""
    def resolve(kind: bytes, k: int) -> bytes:
        if kind == b"H":
            return handle(k)
        if kind == b"F":
            return b"%s-f%d" % (token, k)
        if k == 64:
            return (token + b"-u64-").ljust(64, b"k")
        return b"%s-u%d" % (token, k)
    return resolve


def _plain(kind: bytes, k: int) -> bytes:
    return b"{%s%d}" % (kind, k)


def _resolve(value: bytes, resolve: Resolver) -> bytes:
    if b"{" not in value:
        return value
    return _REF.sub(lambda m: resolve(m.group(1), int(m.group(2))), value)


def encode_item(item: Item, resolve: Resolver = _plain) -> bytes:
    """The bytes of ``item``, its references replaced by ``resolve``."""
    if isinstance(item, Raw):
        return item.data
    if isinstance(item, Line):
        return _resolve(item.text, resolve) + b"\n"
    return encode_packet(REQ, item.type, [_resolve(a, resolve) for a in item.args])


def item_from(value: Event | bytes) -> Item:
    """An item from what the strategies give: an event (encoded) or raw bytes."""
    if isinstance(value, bytes):
        return Raw(value)
    if isinstance(value, AdminCommand):
        return Line(value.line)
    ptype, args = event_to_packet(value)
    return Packet(int(ptype), args)


def _text(b: bytes) -> str:
    return b.decode("latin-1")


def _bytes(s: str) -> bytes:
    return s.encode("latin-1")


def _item_json(item: Item) -> dict[str, Any]:
    if isinstance(item, Raw):
        return {"raw": item.data.hex()}
    if isinstance(item, Line):
        return {"line": _text(item.text)}
    name = PacketType(item.type).name if item.type in PacketType._value2member_map_ else None
    return {"packet": name or item.type, "args": [_text(a) for a in item.args]}


def _item_from_json(obj: dict[str, Any]) -> Item:
    if "raw" in obj:
        return Raw(bytes.fromhex(obj["raw"]))
    if "line" in obj:
        return Line(_bytes(obj["line"]))
    ptype = obj["packet"]
    number = PacketType[ptype].value if isinstance(ptype, str) else int(ptype)
    return Packet(number, tuple(_bytes(a) for a in obj["args"]))


@dataclass
class Case:
    """A script: the part each connection plays (``client``, ``worker``, ``admin``)
    and the steps, in order.  ``meta`` is what a reproducer file says about it."""

    roles: tuple[str, ...]
    steps: list[Step]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_script(cls, script: tuple[tuple[str, ...], Iterable[Any]]) -> Case:
        """A case from :func:`gearman_proto.strategies.conversations`' ``(roles, steps)``."""
        roles, steps = script
        return cls(tuple(roles), [Step(s.conn, tuple(item_from(v) for v in s.send), s.close)
                                  for s in steps])

    @property
    def size(self) -> tuple[int, int, int]:
        """What the shrinker makes smaller: steps, items, bytes."""
        items = [i for s in self.steps for i in s.items]
        return (len(self.steps), len(items),
                sum(len(encode_item(i)) for i in items))

    def to_json(self) -> dict[str, Any]:
        """The reproducer file's content."""
        return {"format": FORMAT, **self.meta, "connections": list(self.roles),
                "steps": [{"conn": s.conn, "send": [_item_json(i) for i in s.items],
                           **({"close": True} if s.close else {})} for s in self.steps]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Case:
        """Read a reproducer file's content; ``ValueError`` if it is not one."""
        if obj.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file (format {obj.get('format')!r})")
        try:
            roles = tuple(str(r) for r in obj["connections"])
            steps = [Step(int(s["conn"]), tuple(_item_from_json(i) for i in s["send"]),
                          bool(s.get("close", False))) for s in obj["steps"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed reproducer: {exc!r}") from None
        if any(not 0 <= s.conn < len(roles) for s in steps):
            raise ValueError("malformed reproducer: a step names a connection not listed")
        meta = {k: v for k, v in obj.items() if k not in ("format", "connections", "steps")}
        return cls(roles, steps, meta)

    def save(self, path: Path) -> None:
        """Write the case as a reproducer file."""
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Case:
        """Read a reproducer file (``ValueError`` or ``OSError`` if it cannot)."""
        try:
            obj = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: not a reproducer")
        return cls.from_json(obj)
