"""What the fuzzers feed and what they check; shared by atheris (``fuzz/fuzz_*.py``) and
hypothesis (``tests/reliability/test_fuzz.py``).

Three targets, each a plain function of its input that raises ``AssertionError``
(or lets an undocumented exception escape) when something is wrong:

* :func:`decoder` -- :class:`~gearman_proto.packets.Decoder` on arbitrary bytes:
  only :class:`~gearman_proto.errors.RemoteProtocolError` may escape, and
  feeding the bytes whole or in any split gives the same packets.
* :func:`server_connection` -- :class:`~gearman_proto.server.ServerConnection`
  on arbitrary bytes: only ``RemoteProtocolError`` escapes ``next_event()``,
  every decoded event is one a client or worker may send, and after an error
  :meth:`error_reply` still gives the bytes to answer with.
* :func:`hub` -- a :class:`~gearman_proto.hub.ServerHub` (and its
  :class:`~gearman_proto.broker.JobServer`) driven by a script of operations on
  several connections: open, bytes in, close, time passes.  Nothing may escape
  (protocol errors are the hub's to answer), every output is encodable, and
  :func:`check_invariants` holds after every step and after everyone leaves.

The core never raises anything else on peer input: that is the contract
the README's Reliability section states and these functions hold it to.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gearman_proto import lifecycle
from gearman_proto.broker import JobServer
from gearman_proto.errors import RemoteProtocolError
from gearman_proto.events import AdminCommand, ConnectionClosed, Event
from gearman_proto.hub import ServerHub
from gearman_proto.packets import REQ, SPECS, Decoder, Role, encode_packet
from gearman_proto.server import ServerConnection
from gearman_proto.store import MemoryStore

__all__ = ["decoder", "server_connection", "hub", "check_invariants", "Op", "packet_bytes",
           "conversation_ops", "CLIENT_AND_WORKER_TYPES", "WORDS"]

MAX_PACKET = 4096
"""Small limits, so the fuzzers reach the size checks."""
MAX_LINE = 256

CLIENT_AND_WORKER_TYPES = sorted(t for t, spec in SPECS.items() if Role.SERVER in spec.receivers)
"""Packet types a client or worker may send to the server."""
WORDS = (b"f", b"g", b"-", b"", b"1", b"0", b"10", b"H:fuzz:1", b"H:fuzz:2", b"H:fuzz:3",
         b"u", b"exceptions", b"x" * 65, b"a\0b", b"\n.\n")
"""Small argument values that make separate packets talk about the same things."""
ADMIN_LINES = (b"status", b"workers", b"show jobs", b"show unique jobs", b"prioritystatus",
               b"maxqueue f 1", b"maxqueue g", b"cancel job H:fuzz:1", b"cancel job H:fuzz:2",
               b"create function f", b"drop function f", b"drop function g", b"getpid",
               b"version", b"verbose", b"shutdown", b"shutdown graceful", b"bogus")


def packet_bytes(ptype: int, args: Sequence[bytes]) -> bytes:
    """A REQ packet with exactly ``args`` (no checks: the fuzzers build bad ones too)."""
    return encode_packet(REQ, ptype, list(args))


# -- the decoder ---------------------------------------------------------------------------------


def _drain(dec: Decoder) -> tuple[list[object], RemoteProtocolError | None]:
    out: list[object] = []
    try:
        while (item := dec.next()) is not None:
            out.append(item)
    except RemoteProtocolError as exc:
        return out, exc
    return out, None


def decoder(data: bytes, cuts: Iterable[int] = (), *, magic: bytes = REQ,
            allow_text: bool = True) -> None:
    """Decode ``data`` whole and cut at ``cuts``: same packets, same error or none."""
    whole = Decoder(magic, allow_text=allow_text, max_packet_size=MAX_PACKET,
                    max_line_length=MAX_LINE)
    whole.feed(data)
    items, error = _drain(whole)
    pieces = Decoder(magic, allow_text=allow_text, max_packet_size=MAX_PACKET,
                     max_line_length=MAX_LINE)
    got: list[object] = []
    got_error: RemoteProtocolError | None = None
    start = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        pieces.feed(data[start:cut])
        start = cut
        more, got_error = _drain(pieces)
        got += more
        if got_error is not None:
            break
    # The split stream may fail earlier (a line too long, a bad magic seen in
    # the first bytes of a header), never later and never on other packets.
    assert got == items[:len(got)], (got, items)
    if error is not None:
        assert got_error is not None, f"whole stream failed ({error!r}), pieces did not"
        assert isinstance(error.error_code, bytes) and isinstance(got_error.error_code, bytes)
    elif got_error is None:
        assert got == items
    for item in items:
        if hasattr(item, "type"):
            spec = SPECS[item.type]  # type: ignore[attr-defined]
            assert len(item.args) == len(spec.args)  # type: ignore[attr-defined]


# -- one server connection ----------------------------------------------------------------------


def server_connection(data: bytes, eof: bool = True) -> list[Event]:
    """Feed ``data`` (then EOF) to a ServerConnection; return the events it gave."""
    conn = ServerConnection(max_packet_size=MAX_PACKET, max_line_length=MAX_LINE)
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    events: list[Event] = []
    try:
        for event in conn.events():
            events.append(event)
            if type(event) not in (AdminCommand, ConnectionClosed):
                ptype = event.packet_type  # type: ignore[attr-defined]
                assert Role.SERVER in SPECS[ptype].receivers, event
    except RemoteProtocolError as exc:
        reply = conn.error_reply(exc)
        assert isinstance(reply, bytes) and reply
        # An ERROR packet of two arguments, or one ERR line.
        if reply.startswith(b"\0"):
            _magic, ptype, size = struct.unpack(">4sII", reply[:12])
            assert ptype == 19 and size == len(reply) - 12 and reply.count(b"\0", 12) == 1
        else:
            assert reply.startswith(b"ERR ") and reply.endswith(b"\r\n")
            assert reply.count(b"\n") == 1
        try:
            conn.next_event()
        except RemoteProtocolError:
            pass
        else:
            raise AssertionError("next_event() after an error did not raise") from None
    return events


# -- the whole server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One step of a hub script.

    ``kind`` is ``open``, ``send`` (``data`` to connection number ``conn``),
    ``close`` (the peer closes), ``drop`` (the transport dies) or ``advance``
    (``seconds`` pass).  ``conn`` counts the connections opened so far, modulo.
    """

    kind: str
    conn: int = 0
    data: bytes = b""
    seconds: float = 0.0


def conversation_ops(script: tuple[Sequence[str], Sequence[object]]) -> list[Op]:
    """Hub operations for a :func:`gearman_proto.strategies.conversations` script:
    one ``open`` per connection, then each step's bytes and its close."""
    from gearman_proto.packets import Role
    from gearman_proto.strategies import encode  # needs hypothesis, as the script did

    roles, steps = script
    ops = [Op("open") for _ in roles]
    for step in steps:
        role = Role.WORKER if roles[step.conn] == "worker" else Role.CLIENT  # type: ignore[attr-defined]
        data = b"".join(item if isinstance(item, bytes) else encode(item, role)
                        for item in step.send)  # type: ignore[attr-defined]
        if data:
            ops.append(Op("send", step.conn, data))  # type: ignore[attr-defined]
        if step.close:  # type: ignore[attr-defined]
            ops.append(Op("close", step.conn))  # type: ignore[attr-defined]
    return ops


def hub(ops: Sequence[Op], *, durable: bool = False, job_retries: int | None = None,
        idle_timeout: float = 0.0) -> ServerHub:
    """Run ``ops`` on a fresh hub, checking the invariants after each step and at the end."""
    store = MemoryStore(durable=durable)
    server = ServerHub(JobServer(handle_prefix=b"H:fuzz", store=store, job_retries=job_retries,
                                 allow_shutdown=True, admin_changes="loopback", now=1000.0),
                       max_packet_size=MAX_PACKET, max_line_length=MAX_LINE,
                       idle_timeout=idle_timeout)
    now = 1000.0
    opened: list[int] = []
    closed_by_server: set[int] = set()
    for op in ops:
        if op.kind == "open" or not opened:
            opened.append(server.open(b"127.0.0.1" if len(opened) % 2 else b"192.0.2.1"))
            continue
        cid = opened[op.conn % len(opened)]
        if op.kind == "send":
            server.receive(cid, op.data)
        elif op.kind == "close":
            server.receive(cid, b"")
        elif op.kind == "drop":
            server.closed(cid)
        else:
            now += op.seconds
            server.advance(now)
        out = server.flush()
        for target, data in out.writes.items():
            assert target in opened and isinstance(data, bytes) and data, (target, data)
        closed_by_server.update(out.close)
        check_invariants(server.broker, store)
    assert server.internal_errors == 0, "an answer the core could not frame"
    for cid in opened:
        server.closed(cid)
    server.flush()
    check_invariants(server.broker, store)
    _check_left_alone(server.broker, store)
    return server


def check_invariants(js: JobServer, store: MemoryStore | None = None) -> None:
    """The JobServer's bookkeeping agrees with itself (reads its private state)."""
    QUEUED, SCHEDULED, RUNNING = lifecycle.QUEUED, lifecycle.SCHEDULED, lifecycle.RUNNING
    jobs = js._jobs
    conns = js._conns
    functions = js._functions
    ready: Counter[tuple[bytes, int]] = Counter()
    running: Counter[bytes] = Counter()
    for handle, job in jobs.items():
        assert job.handle == handle
        assert job.state in (QUEUED, SCHEDULED, RUNNING), (handle, job.state)
        assert functions.get(job.function.name) is job.function, "job of a dropped function"
        if job.state == RUNNING:
            assert conns[job.worker].jobs.get(handle) is job
            running[job.function.name] += 1
        else:
            assert job.worker == -1
        if job.state == QUEUED:
            ready[(job.function.name, job.priority)] += 1
            assert job in job.function.queues[job.priority]
        if job.state == SCHEDULED:
            assert job in job.function.scheduled
        if not job.background:
            # A foreground job nobody waits for is never left waiting in a queue.
            assert job.clients or job.state == RUNNING, handle
        for cid in job.clients:
            assert conns[cid].attached.get(handle) is job
        if store is not None:
            assert (job.store_key is not None) == (job.background and store is not None)
    for name, function in functions.items():
        assert function.name == name
        for p in range(3):
            assert function.ready[p] == ready[(name, p)], (name, p)
            live = sum(1 for j in function.queues[p] if j.state == QUEUED)
            assert live == function.ready[p]
            assert function.dead[p] == len(function.queues[p]) - live
        assert function.running == running[name]
        assert set(function.workers) == {c for c, conn in conns.items()
                                         if name in conn.abilities}
        for cid in function.sleepers:
            assert conns[cid].asleep and cid in function.workers
    for cid, conn in conns.items():
        assert conn.id == cid
        for handle, job in conn.jobs.items():
            assert jobs.get(handle) is job and job.state == RUNNING and job.worker == cid
        for handle, job in conn.attached.items():
            assert jobs.get(handle) is job and cid in job.clients
        if conn.asleep:
            for function, _timeout in conn.abilities.values():
                assert cid in function.sleepers
    rows = {row.function: row for row in js.status_rows()}
    for name, function in functions.items():
        assert rows[name].total == sum(1 for j in jobs.values() if j.function is function)
        assert rows[name].running == function.running
    if store is not None:
        stored = {j.store_key for j in jobs.values() if j.store_key is not None}
        assert stored == set(store.rows), "store and jobs disagree"
    assert js.held_count == 0, "output held past a commit"


def _check_left_alone(js: JobServer, store: MemoryStore) -> None:
    """Everyone left: only background jobs remain, none running, no worker anywhere."""
    assert js.connection_ids == []
    for job in js._jobs.values():
        assert job.background and job.state != lifecycle.RUNNING
    for function in js._functions.values():
        assert not function.workers and not function.sleepers and function.running == 0
    assert len(store) == js.job_count
