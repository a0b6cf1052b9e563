"""The client's and worker's fast path and their general path are one machine.

``WorkerConnection`` reads JOB_ASSIGN_UNIQ and JOB_ASSIGN, ``ClientConnection``
WORK_COMPLETE and JOB_CREATED, straight from the bytes (``_take_fast``) and
hands the event to the same rule as every other packet; anything unusual is
left to the general path.  A worker's grabs go out by ``grab(kind)``, bytes
made once, where the general path sends ``kind()``.  So with the fast path on or forced off
(``fast_path = False``), and through ``next_event()``, the same byte stream in
the same reads must give the same events, the same errors, the same state and
the same bytes sent afterwards.  The streams mix well-formed server packets
(``gearman_proto.strategies``), the fast path's packets with every argument
count and a NUL where it does not belong, wrong magic, a size over the limit,
bytes cut anywhere, and garbage.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gearman_proto import (
    COMPILED,
    NEED_DATA,
    ClientConnection,
    ConnectionClosed,
    Event,
    GetStatus,
    GrabJob,
    GrabJobAll,
    GrabJobUniq,
    LocalProtocolError,
    PreSleep,
    RemoteProtocolError,
    SubmitJob,
    WorkComplete,
    WorkerConnection,
    strategies,
)
from gearman_proto._connection import Connection
from gearman_proto.packets import REQ, RES, SPECS, PacketType, Role, encode_packet

_P = PacketType
_HANDLES = st.sampled_from([b"H:1", b"H:2"])
_FIELDS = st.sampled_from([b"H:1", b"H:2", b"f", b"u", b"", b"H:1", b"x\0y"])
_LIMIT = 64


@st.composite
def _fast_packet(draw: st.DrawFn) -> bytes:
    """A packet of a fast-path type, its arguments right or not, sometimes REQ-magic."""
    ptype = draw(st.sampled_from([_P.JOB_ASSIGN_UNIQ, _P.JOB_ASSIGN, _P.WORK_COMPLETE,
                                  _P.JOB_CREATED, _P.JOB_ASSIGN_ALL, _P.WORK_DATA]))
    nargs = len(SPECS[ptype].args)
    # Mostly the count its type takes, else one short or one over.
    count = max(0, nargs + draw(st.sampled_from([0, 0, -1, 1])))
    payload = b"\0".join(draw(st.lists(_FIELDS, min_size=count, max_size=count)))
    if draw(st.booleans()):
        payload += b"d" * draw(st.sampled_from([0, _LIMIT]))  # over the limit, or not
    magic = REQ if draw(st.integers(0, 15)) == 0 else RES
    return encode_packet(magic, ptype, (payload,))


_PIECES = st.one_of(
    _fast_packet(), _fast_packet(), _fast_packet(),
    strategies.packets(Role.SERVER, handles=_HANDLES, uniques=st.just(b"u"),
                       payloads=st.sampled_from([b"", b"r"])),
    st.binary(max_size=14),
)


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    return [stream[a:b] for a, b in itertools.pairwise([0, *points, len(stream)])]


def _run(conn: Connection, chunks: list[bytes], close: bool, how: str) -> list[object]:
    seen: list[object] = []
    try:
        for chunk in [*filter(None, chunks), *([b""] if close else [])]:
            conn.receive_data(chunk)
            if how == "next_event":
                while (event := conn.next_event()) is not NEED_DATA:
                    seen.append(event)
                    if isinstance(event, ConnectionClosed):
                        break
            else:
                seen.extend(conn.events())
    except RemoteProtocolError as exc:
        seen.append((type(exc).__name__, str(exc), exc.error_code, exc.error_text))
    seen.append(conn.state)
    return seen


def _worker_state(conn: WorkerConnection) -> object:
    sent = []
    for handle in list(conn.jobs):
        try:
            sent.append(conn.send(WorkComplete(handle, b"r")))
        except LocalProtocolError as exc:
            sent.append(str(exc).encode())
    return dict(conn.jobs), conn.outstanding_grabs, conn.outstanding, conn.sleeping, sent


def _client_state(conn: ClientConnection) -> object:
    try:
        sent = conn.send(SubmitJob(b"f", b"d"))
    except LocalProtocolError as exc:
        sent = str(exc).encode()
    return ({h: (j.request, j.attached, j.numerator, j.denominator, j.finished)
             for h, j in conn.jobs.items()}, conn.pending_requests, sent)


_GRAB_KINDS = (GrabJob, GrabJobUniq, GrabJobAll)
_GRABS = st.lists(st.sampled_from([GrabJob(), GrabJobUniq(), GrabJobAll()]), max_size=8)
_SUBMITS = st.lists(st.sampled_from([SubmitJob(b"f"), SubmitJob(b"f", background=True),
                                     SubmitJob(b"f", unique=b"u"), GetStatus(b"H:1")]),
                    max_size=8)


@pytest.mark.parametrize(("make", "first", "state"), [
    (WorkerConnection, _GRABS, _worker_state),
    (ClientConnection, _SUBMITS, _client_state),
], ids=["worker", "client"])
@settings(deadline=None, max_examples=300)  # no test asserts a time
@given(data=st.data(), cuts=st.lists(st.integers(0, 10**6), max_size=6), close=st.booleans())
def test_the_fast_path_and_the_general_path_agree(
    make: Callable[..., Connection], first: st.SearchStrategy[list[Event]],
    state: Callable[[Connection], object], data: st.DataObject, cuts: list[int], close: bool,
) -> None:
    sent = data.draw(first)
    chunks = _split(b"".join(data.draw(st.lists(_PIECES, max_size=10))), cuts)
    _agree(make, sent, chunks, state, close)


def _agree(make: Callable[..., Connection], first: list[Event], chunks: list[bytes],
           state: Callable[[Any], object], close: bool = False,
           limit: int = _LIMIT) -> list[object]:
    """Fast path on, forced off and ``next_event()``: each connection sent ``first`` and
    fed ``chunks`` (then closed, if ``close``) must give the same results and end state."""
    results = []
    for how in ("fast", "general", "next_event"):
        conn = make(max_packet_size=limit)
        conn.fast_path = how == "fast"
        # The fast way grabs by WorkerConnection.grab(kind), the others by send(kind()).
        out = [conn.grab(type(r)) if how == "fast" and type(r) in _GRAB_KINDS  # type: ignore[attr-defined]
               else conn.send(r) for r in first]
        results.append([*_run(conn, chunks, close, how), state(conn), out])
    assert results[0] == results[1] == results[2]
    return results[0][:-1]


_FAST_TYPES = {WorkerConnection: [_P.JOB_ASSIGN_UNIQ, _P.JOB_ASSIGN],
               ClientConnection: [_P.WORK_COMPLETE, _P.JOB_CREATED]}
_STATES = {WorkerConnection: _worker_state, ClientConnection: _client_state}
_BEFORE = {WorkerConnection: [[], [GrabJob()], [GrabJobUniq()], [GrabJobAll()]],
           ClientConnection: [[], [SubmitJob(b"f")], [SubmitJob(b"f", background=True)],
                              [GetStatus(b"H:1")]]}


@pytest.mark.parametrize("make", [WorkerConnection, ClientConnection],
                         ids=["worker", "client"])
def test_every_shape_of_a_fast_path_packet_reads_the_same(make: Callable[..., Connection]
                                                          ) -> None:
    # The cases the property test may take long to meet, each of them: every
    # argument count around the right one, an empty or NUL-bearing field, the
    # other magic, a payload over the limit, a packet cut short, in every state.
    created = encode_packet(RES, _P.JOB_CREATED, (b"H:1",))
    for ptype, before, magic, tail in itertools.product(
            _FAST_TYPES[make], _BEFORE[make], (RES, REQ), (b"", b"d" * _LIMIT)):
        nargs = len(SPECS[ptype].args)
        for count in range(max(0, nargs - 2), nargs + 2):
            for fields in itertools.product([b"H:1", b""], repeat=count):
                packet = encode_packet(magic, ptype, (b"\0".join(fields) + tail,))
                for stream in (packet, created + packet, packet + packet, packet[:-1]):
                    _agree(make, before, [stream], _STATES[make])


def test_the_fast_path_is_taken() -> None:
    # Not vacuous: the roles that have one turn it on, and it is what reads their packets.
    worker = WorkerConnection()
    assert worker.fast_path
    worker.send(GrabJobUniq())
    packet = encode_packet(RES, _P.JOB_ASSIGN_UNIQ, (b"H:1", b"f", b"u", b"d"))
    taken = worker._take_fast(packet, 0, 0)
    assert taken is not None and worker.jobs == {b"H:1": taken}
    assert worker._decoder._pos == len(packet)
    client = ClientConnection()
    assert client.fast_path
    assert client._take_fast(encode_packet(RES, _P.NOOP, ()), 0, 0) is None


@pytest.mark.parametrize("make", [WorkerConnection, ClientConnection],
                         ids=["worker", "client"])
def test_a_fast_path_header_with_any_byte_changed_reads_the_same(
        make: Callable[..., Connection]) -> None:
    # The fast paths read the 12-byte header byte by byte (compiled: in native ints,
    # _connection._native_res_packet), not through the decoder's struct: each byte
    # of the magic, the type and the size, changed in turn -- a type of 256 or more,
    # a size with a high byte set, over the limit or short of the stream -- must
    # read as the general path reads it.
    created = encode_packet(RES, _P.JOB_CREATED, (b"H:1",))
    for ptype in _FAST_TYPES[make]:
        nargs = len(SPECS[ptype].args)
        packet = encode_packet(RES, ptype, (b"\0".join([b"H:1"] * nargs),))
        for i, value in itertools.product(range(12), (0, 1, 0x52, 0x80, 0xFF)):
            if packet[i] == value:
                continue
            changed = packet[:i] + bytes([value]) + packet[i + 1:]
            for before in _BEFORE[make]:
                for stream in (changed, created + changed, changed + packet):
                    _agree(make, before, [stream], _STATES[make])


def _assigns_read_alike(args: list[tuple[bytes, ...]], sizes: tuple[int, ...]
                        ) -> tuple[list[bytes], list[Event]]:
    """Each JOB_ASSIGN_UNIQ of ``args``, the whole stream cut into reads of each of
    ``sizes`` (0: one read), reads the same on every path and as its fields."""
    packets = [encode_packet(RES, _P.JOB_ASSIGN_UNIQ, a) for a in args]
    stream = b"".join(packets)
    grabs: list[Event] = [GrabJobUniq()] * len(packets)
    for size in sizes:
        size = size or len(stream)
        chunks = [stream[i:i + size] for i in range(0, len(stream), size)]
        seen = _agree(WorkerConnection, grabs, chunks, _worker_state, limit=1 << 20)
        assert [(e.handle, e.function, e.unique, e.data) for e in seen[:-2]] == args
    return packets, grabs


def test_fields_found_across_the_text_window() -> None:
    # Compiled, the worker finds a JOB_ASSIGN_UNIQ's NULs in a Latin-1 copy of up to
    # 4096 bytes of the buffer (Connection._text_at): packets that straddle that
    # window, fields longer than it, every byte value in a field, and buffers of
    # one read or many must read as the general path reads them.
    every = bytes(range(1, 256))
    args = [(b"H:%d" % i, b"f" * (i % 9 + 1), every[:i * 7 % 60], b"d" * (i % 150))
            for i in range(200)]
    args += [(b"H:long-unique", b"f", b"u" * 5000, b"d"), (b"H:" + every * 20, b"f", b"u", b""),
             (b"H:end", b"f", every, every)]
    _assigns_read_alike(args, (0, 4096, 5000, 1000))


def test_the_function_name_read_again_reads_the_same() -> None:
    # Compiled, the worker uses the last JOB_ASSIGN_UNIQ's function bytes again when
    # the bytes after the handle are that name and a NUL (worker._assign_uniq): the
    # same name again, a prefix of the last one or longer than it, the empty name,
    # one that differs in its last byte, and a packet that ends right after the
    # name (its NUL would be the next header's first byte) must read as the
    # general path reads them.
    names = [b"reverse", b"reverse", b"rev", b"reverse", b"reversed", b"reverse", b"",
             b"", b"r", b"reversf", b"reverse", b"reverse"]
    args: list[tuple[bytes, ...]] = []
    for name in names:
        for unique, data in ((b"u", b"d"), (b"", b"\0reverse\0"), (name, b""),
                             (b"reverse", name)):
            args.append((b"H:%d" % len(args), name, unique, data))
    packets, grabs = _assigns_read_alike(args, (0, 4096, 31, 7))
    short = encode_packet(RES, _P.JOB_ASSIGN_UNIQ, (b"H:x", b"reverse"))
    for tail in (b"", packets[0], short):
        _agree(WorkerConnection, grabs[:3], [packets[0] + short + tail], _worker_state)
    if COMPILED:
        # Not vacuous: compiled, the same name is the same object.
        worker = WorkerConnection()
        for _ in range(2):
            worker.send(GrabJobUniq())
        worker.receive_data(packets[0] + packets[4])
        first, second = worker.events()
        assert first.function == b"reverse" and second.function is first.function  # type: ignore[attr-defined]


def test_the_compiled_grab_fifo_is_a_deque() -> None:
    # What WorkerConnection keeps its grabs in when compiled (a deque interpreted):
    # the same order, length, truth and error, across its compaction.
    from collections import deque

    from gearman_proto.worker import _Grabs

    kinds = [GrabJob, GrabJobUniq, GrabJobAll]
    ours, theirs = _Grabs(), deque()  # type: ignore[var-annotated]
    for step in range(2000):
        if step % 3 != 2 or not theirs:
            ours.append(kinds[step % 3])
            theirs.append(kinds[step % 3])
        else:
            assert ours.popleft() is theirs.popleft()
        assert len(ours) == len(theirs) and bool(ours) == bool(theirs)
    while theirs:
        assert ours.popleft() is theirs.popleft()
    assert not ours and len(ours) == 0
    with pytest.raises(IndexError):
        ours.popleft()


def test_a_grab_is_what_sending_its_event_is() -> None:
    # WorkerConnection.grab(kind): send(kind())'s bytes and record, and its refusal
    # once the connection is in ERROR (the state left as it was).
    for kind in _GRAB_KINDS:
        fast, general = WorkerConnection(), WorkerConnection()
        for conn in (fast, general):
            conn.send(PreSleep())
        assert fast.grab(kind) == general.send(kind()) == encode_packet(
            REQ, kind.packet_type, ())
        assert (fast.outstanding_grabs, fast.sleeping) == (
            general.outstanding_grabs, general.sleeping) == (1, False)
        for conn in (fast, general):
            with pytest.raises(RemoteProtocolError):
                conn.receive_data(b"\0RES\xff\xff\xff\xff\0\0\0\0")
                list(conn.events())
        with pytest.raises(LocalProtocolError, match="error state") as refused_fast:
            fast.grab(kind)
        with pytest.raises(LocalProtocolError, match="error state") as refused_general:
            general.send(kind())
        assert str(refused_fast.value) == str(refused_general.value)
        assert fast.outstanding_grabs == general.outstanding_grabs == 1
        assert fast._grabs.popleft() is general._grabs.popleft() is kind
