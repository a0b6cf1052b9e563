"""The codec's two ways of reading a packet agree, and the build says what it is.

``Connection.events()`` reads the common packets through the hand-written
``codec.HOT_DECODERS``; ``next_event()`` reads every packet the long way, through
the decoders generated from SPECS.  Both are fed the same arbitrary byte streams,
in arbitrary reads, here: what comes out (events, errors), the state the
connection is left in, and the bytes it then sends must be the same.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.machinery
import itertools
import os
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import gearman_proto
from gearman_proto import (
    NEED_DATA,
    ClientConnection,
    ConnectionClosed,
    Event,
    GrabJob,
    GrabJobAll,
    GrabJobUniq,
    LocalProtocolError,
    RemoteProtocolError,
    ServerConnection,
    SubmitJob,
    WorkComplete,
    WorkerConnection,
    codec,
    packets,
)
from gearman_proto._connection import Connection
from gearman_proto.codec import (
    DECODERS,
    HOT_DECODERS,
    assign_packet,
    packet_of_one,
    packet_of_two,
)
from gearman_proto.packets import HEADER_SIZE, REQ, RES, PacketType, encode_packet, split_args

_P = PacketType
# Mostly the hot packets, with arguments that make them right, short of an
# argument, or with NULs where they do not belong; some others to interleave.
hot_types = st.sampled_from([*sorted(HOT_DECODERS), _P.NO_JOB, _P.NOOP, _P.WORK_FAIL,
                             _P.ECHO_RES, _P.ERROR, _P.WORK_STATUS])
field = st.sampled_from([b"H:1", b"H:2", b"f", b"u", b"", b"x\0y", b"7"])


@st.composite
def packet(draw: st.DrawFn, magic: bytes) -> bytes:
    ptype = draw(hot_types)
    args = draw(st.lists(field, min_size=0, max_size=5))
    payload = b"\0".join(args)
    if draw(st.booleans()):
        # The number of arguments its type takes, the last one free.
        nargs = len(packets.SPECS[ptype].args)
        payload = b"\0".join((args + [b"H:1"] * nargs)[:nargs]) if nargs else b""
    wrong_magic = draw(st.integers(0, 19)) == 0
    return packets.encode_packet(REQ if wrong_magic == (magic == RES) else RES, ptype,
                                 (payload,))


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def run(conn: Connection, chunks: list[bytes], close: bool, use_events: bool) -> list[object]:
    seen: list[object] = []
    try:
        for chunk in [*filter(None, chunks), *([b""] if close else [])]:
            conn.receive_data(chunk)
            if use_events:
                seen.extend(conn.events())
            else:
                while (event := conn.next_event()) is not NEED_DATA:
                    seen.append(event)
                    if isinstance(event, ConnectionClosed):
                        break
    except RemoteProtocolError as exc:
        seen.append((type(exc), str(exc), exc.error_code, exc.error_text))
    seen.append(conn.state)
    return seen


def worker_state(conn: WorkerConnection) -> object:
    # ...and the bytes it sends next: the result of every job in hand.
    out = []
    for handle in list(conn.jobs):
        try:
            out.append(conn.send(WorkComplete(handle, b"r")))
        except LocalProtocolError as exc:
            out.append(str(exc))
    return (dict(conn.jobs), conn.outstanding_grabs, conn.outstanding, conn.sleeping, out)


def client_state(conn: ClientConnection) -> object:
    try:
        sent = conn.send(SubmitJob(b"f", b"d"))
    except LocalProtocolError as exc:
        sent = str(exc).encode()
    return ({h: (j.attached, j.numerator, j.denominator) for h, j in conn.jobs.items()},
            conn.pending_requests, sent)


grabs = st.lists(st.sampled_from([GrabJob(), GrabJobUniq(), GrabJobAll()]), max_size=6)
submits = st.lists(st.sampled_from([SubmitJob(b"f"), SubmitJob(b"f", background=True)]),
                   max_size=6)


@pytest.mark.parametrize(("make", "sent_first", "state"), [
    (WorkerConnection, grabs, worker_state),
    (ClientConnection, submits, client_state),
], ids=["worker", "client"])
@settings(deadline=None)  # a loaded machine is no failure: no test asserts a time
@given(data=st.data(), cuts=st.lists(st.integers(0, 10**6), max_size=6), close=st.booleans())
def test_the_hot_path_and_the_long_way_agree(
    make: Callable[[], Connection], sent_first: st.SearchStrategy[list[Event]],
    state: Callable[[Connection], object], data: st.DataObject, cuts: list[int], close: bool,
) -> None:
    sent = data.draw(sent_first)
    stream = b"".join(data.draw(st.lists(packet(RES), max_size=8)))
    chunks = split(stream, cuts)
    results = []
    for use_events in (True, False):
        conn = make()
        for request in sent:
            conn.send(request)
        results.append((run(conn, chunks, close, use_events), state(conn)))
    assert results[0] == results[1]


@settings(deadline=None)
@given(stream=st.lists(packet(REQ), max_size=8).map(b"".join),
       cuts=st.lists(st.integers(0, 10**6), max_size=6), close=st.booleans())
def test_the_hot_path_and_the_long_way_agree_for_a_server(
    stream: bytes, cuts: list[int], close: bool
) -> None:
    chunks = split(stream, cuts)
    assert (run(ServerConnection(), chunks, close, True)
            == run(ServerConnection(), chunks, close, False))


@pytest.mark.parametrize("ptype", sorted(HOT_DECODERS), ids=lambda t: _P(t).name)
@settings(deadline=None)
@given(payload=st.lists(field, max_size=6).map(b"\0".join))
def test_each_hot_decoder_builds_what_the_generated_one_builds(ptype: int,
                                                               payload: bytes) -> None:
    message = packets.encode_packet(RES, ptype, (payload,))
    try:
        expected: object = DECODERS[ptype](split_args(ptype, message, 0, len(message)))
    except RemoteProtocolError:
        expected = ValueError  # the hot decoder says so by ValueError
    try:
        got: object = HOT_DECODERS[ptype](message[HEADER_SIZE:])
    except ValueError:
        got = ValueError
    assert got == expected
    assert type(got) is type(expected)


def test_compiled_says_which_build_runs() -> None:
    compiled = packets.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert gearman_proto.COMPILED is compiled
    assert gearman_proto.SERVER_VERSION.endswith("(compiled)" if compiled else "(pure Python)")
    # CI runs the suite once per build and says which one it expects.
    expected = os.environ.get("GEARMAN_PROTO_EXPECT_COMPILED")
    if expected is not None:
        assert compiled is (expected == "1")


def test_compiled_events_are_values_the_collector_never_walks() -> None:
    # Compiled, every event class is acyclic (mypyc_attr(acyclic=True)): its
    # instances carry no GC header and the cyclic collector never walks them, which
    # is what a worker holding many jobs in hand pays for otherwise.  They stay
    # values: equal, hashable, repr'd and frozen as in the pure build, where the
    # classes are ordinary slotted dataclasses (and tracked).
    from gearman_proto import events

    job = events.JobAssign(b"H:1", b"f", b"data", b"u")
    reply = events.JobCreated(b"H:1", request=events.SubmitJob(b"f", b"x"))
    for event in (job, reply, events.WorkComplete(b"H:1", b"r"), events.Noop()):
        assert gc.is_tracked(event) is not gearman_proto.COMPILED
    assert job == events.JobAssign(b"H:1", b"f", b"data", b"u")
    assert hash(job) == hash(events.JobAssign(b"H:1", b"f", b"data", b"u"))
    assert repr(job) == "JobAssign(handle=b'H:1', function=b'f', data=b'data', unique=b'u', " \
        "reducer=None)"
    assert reply == events.JobCreated(b"H:1") and reply.request == events.SubmitJob(b"f", b"x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.handle = b"H:2"  # type: ignore[misc]
    # Every event class, not only the hot ones, and the bases they share.
    names = [n for n in events.__all__ if isinstance(getattr(events, n), type)
             and issubclass(getattr(events, n), events.Event)]
    assert len(names) > 30
    if gearman_proto.COMPILED:
        for name in names:
            cls = getattr(events, name)
            assert not cls.__flags__ & (1 << 14), f"{name} has Py_TPFLAGS_HAVE_GC"


# The packet builders (codec.assign_packet, packet_of_one, packet_of_two): compiled they
# build the bytes by ``%b`` formatting and ``codec._word``, interpreted by
# ``struct`` and ``join``.  Whichever this build runs must be encode_packet's bytes.
@given(magic=st.sampled_from([REQ, RES]), h=st.binary(max_size=40), f=st.binary(max_size=40),
       u=st.none() | st.binary(max_size=40), d=st.binary(max_size=300))
# Sizes at and past the end of codec._WORD (1024), where the header's size is made anew.
@example(magic=RES, h=b"H:x:1", f=b"f", u=b"", d=b"d" * (1024 - 5 - 1 - 3))
@example(magic=RES, h=b"H:x:1", f=b"f", u=b"", d=b"d" * (1024 - 5 - 1 - 3 + 1))
@example(magic=RES, h=b"H:x:1", f=b"f", u=None, d=b"d" * 70000)
def test_assign_packet_is_encode_packet(magic: bytes, h: bytes, f: bytes, u: bytes | None,
                                        d: bytes) -> None:
    got = assign_packet(magic, h, f, u, d)
    leading = (h, f) if u is None else (h, f, u)
    if any(0 in a for a in leading):
        assert got is None
    elif u is None:
        assert got == encode_packet(magic, PacketType.JOB_ASSIGN, (h, f, d))
    else:
        assert got == encode_packet(magic, PacketType.JOB_ASSIGN_UNIQ, (h, f, u, d))


@given(magic=st.sampled_from([REQ, RES]), ptype=st.sampled_from(list(PacketType)),
       arg=st.binary(max_size=300))
def test_packet_of_one_is_encode_packet(magic: bytes, ptype: PacketType, arg: bytes) -> None:
    assert packet_of_one(magic, int(ptype), arg) == encode_packet(magic, ptype, (arg,))


@given(magic=st.sampled_from([REQ, RES]), ptype=st.sampled_from(list(PacketType)),
       a=st.binary(max_size=40), b=st.binary(max_size=300))
@example(magic=REQ, ptype=PacketType.WORK_COMPLETE, a=b"H:x:1", b=b"d" * (1024 - 6))
@example(magic=REQ, ptype=PacketType.WORK_COMPLETE, a=b"H:x:1", b=b"d" * (1024 - 5))
def test_packet_of_two_is_encode_packet(magic: bytes, ptype: PacketType, a: bytes,
                                        b: bytes) -> None:
    got = packet_of_two(magic, int(ptype), a, b)
    if 0 in a:
        assert got is None
    else:
        assert got == encode_packet(magic, ptype, (a, b))


def test_the_header_words_are_to_bytes() -> None:
    """codec._word: the table's words and the ones made anew are int.to_bytes's."""
    for n in [*range(codec._WORDS + 2), 2**16, 2**32 - 1]:
        assert codec._word(n) == n.to_bytes(4, "big")
    with pytest.raises(OverflowError):
        codec._word(-1)
    with pytest.raises(OverflowError):
        codec._word(2**32)
