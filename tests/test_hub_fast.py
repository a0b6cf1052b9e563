"""The server's fast path and its general path are one machine.

:meth:`ServerHub._fast` takes the hot packets (SUBMIT_JOB*, GRAB_JOB*,
WORK_COMPLETE, PRE_SLEEP) from bytes to the broker's methods to bytes, and
leaves everything else to the general path (decode to an event,
``JobServer.receive``, route).  Here two hubs, one with the fast path and one
forced to the general path (``fast_path = False``), are fed the same byte
streams from several connections, cut into the same arbitrary reads, and must
hand out the same :class:`Flush` after every read (bytes per connection,
closes, half-closes, pauses, log lines), and end in the same broker state;
and so must a hub that runs the turn itself (``ServerHub.drive``: reads
through ``read``, output written by ``flush_written`` through each
connection's writer), as the asyncio server drives it.
"""

from __future__ import annotations

import itertools
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import gearman_proto
from gearman_proto import packets
from gearman_proto import strategies as gst
from gearman_proto._connection import _native_nul
from gearman_proto.broker import JobServer
from gearman_proto.errors import RemoteProtocolError
from gearman_proto.events import (
    CanDo,
    CantDo,
    Event,
    GrabJob,
    GrabJobAll,
    GrabJobUniq,
    PreSleep,
    Priority,
    SubmitJob,
    SubmitReduceJob,
    WorkComplete,
)
from gearman_proto.hub import WARNING, Flush, Reader, ServerHub
from gearman_proto.packets import (
    REQ,
    RES,
    SPECS,
    PacketType,
    Role,
    encode_packet,
    frame,
    frame_plain,
)
from gearman_proto.stats import ServerStats

CONNECTIONS = 4
_FUNCTIONS = st.sampled_from([b"f", b"g"])
_DATA = st.sampled_from([b"", b"d", b"a\0b"]) | st.binary(max_size=8)


def _req(event: Event) -> bytes:
    return gst.encode(event, Role.CLIENT)


# The hot packets, from a vocabulary small enough that they meet: submissions
# that coalesce or not, at every priority, foreground and background; grabs of
# the three forms; results for handles the server gave out (and some it did not).
_hot = st.one_of(
    st.builds(SubmitJob, _FUNCTIONS, _DATA, st.sampled_from([b"", b"u1", b"-", b"k" * 65]),
              st.sampled_from(list(Priority)), st.booleans()).map(_req),
    st.sampled_from([GrabJob(), GrabJobUniq(), GrabJobAll(), PreSleep()]).map(_req),
    st.builds(WorkComplete, st.sampled_from(gst.HANDLES), _DATA).map(_req),
    st.builds(CanDo, _FUNCTIONS).map(_req),
    # A job JOB_ASSIGN_ALL names its reducer in; a hot packet's form with extra bytes.
    st.builds(SubmitReduceJob, _FUNCTIONS, st.just(b"r"), _DATA, st.just(b"")).map(_req),
    st.sampled_from([PacketType.GRAB_JOB_UNIQ, PacketType.PRE_SLEEP]).map(
        lambda t: encode_packet(b"\0REQ", t, (b"x",))),
    st.just(encode_packet(b"\0REQ", PacketType.SUBMIT_JOB_BG, (b"f", b"u"))),  # too few args
    st.just(encode_packet(b"\0REQ", PacketType.WORK_COMPLETE, (b"H:fuzz:1",))),
)
_message = st.one_of(
    _hot, _hot, _hot,
    gst.packets(Role.CLIENT), gst.packets(Role.WORKER),
    gst.admin_lines(),
    gst.malformed_streams(),
)


# A result for a job the connection runs (the index picks which), resolved when
# it is sent, from that run's broker: both runs resolve it alike while their
# states agree, and results mostly name a real job.
_complete = st.tuples(st.just("complete"), st.integers(0, 3), _DATA)


@st.composite
def _scripts(draw: st.DrawFn) -> list[tuple[str, int, Any]]:
    """Steps: ("read", cid, (messages, cuts)), ("eof", cid, None), ("stop", 0, graceful)."""
    steps: list[tuple[str, int, Any]] = []
    for _ in range(draw(st.integers(1, 24))):
        cid = draw(st.integers(1, CONNECTIONS))
        action = draw(st.sampled_from(["read"] * 16 + ["eof", "stop"]))
        if action == "read":
            messages = draw(st.lists(_message | _complete | _complete, min_size=1, max_size=6))
            cuts = draw(st.lists(st.integers(0, 10_000), max_size=3))
            steps.append(("read", cid, (messages, cuts)))
        elif action == "eof":
            steps.append(("eof", cid, None))
        else:
            steps.append(("stop", 0, draw(st.booleans())))
    return steps


def _reads(hub: ServerHub, cid: int, messages: list[Any], cuts: list[int]) -> list[bytes]:
    held = hub.broker._conns.get(cid)
    handles = list(held.jobs) if held is not None else []
    data = b"".join(
        m if isinstance(m, bytes) else
        _req(WorkComplete(handles[m[1] % len(handles)] if handles else b"H:fuzz:1", m[2]))
        for m in messages)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _state(hub: ServerHub) -> Any:
    broker = hub.broker
    functions = [(f.name, f.counts, f.ready, f.running, f.max_queue, list(f.workers),
                  list(f.sleepers), [[j.handle for j in q] for q in f.queues])
                 for f in broker._functions.values()]
    conns = [(c.id, c.asleep, list(c.jobs), list(c.attached), list(c.abilities))
             for c in broker._conns.values()]
    return (broker.jobs(), functions, conns, broker.connection_ids, hub.protocol_errors,
            hub.internal_errors, len(hub), broker.next_deadline(), hub.stopping, hub.stopped)


def _seen(out: Flush) -> Flush:
    # A log line's exception compares by identity: compare its text.
    out.notes = [(level, message, tuple(repr(a) if isinstance(a, Exception) else a
                                        for a in args))
                 for level, message, args in out.notes]
    return out


def _run(steps: list[tuple[str, int, Any]], fast: bool,
         driven: bool = False) -> tuple[list[Any], Any]:
    """Feed ``steps`` to a hub; every Flush it hands out, and its end state.

    ``driven``: the hub runs the turn itself (ServerHub.drive, read,
    flush_written) and writes through the connections' writers; what they were
    given in a flush that came back as ``None`` is taken as that flush's writes.
    The odd connections read through their :class:`Reader` (as the asyncio
    server's do), the even ones through ``read``; the turns end alternately
    with ``flush_written`` and with ``end_turn`` (its Flush handed to
    ``carry_out``).
    """
    hub = ServerHub(JobServer(handle_prefix=b"H:fuzz"))
    hub.fast_path = fast
    hub.advance(1000.0)
    written: dict[int, list[bytes]] = {}
    carried: list[Flush] = []
    readers: dict[int, Reader] = {}
    turns = itertools.count()
    if driven:
        hub.drive(lambda: 1000.0, lambda: None, carried.append)

    def flush() -> Flush:
        if not driven:
            return hub.flush()
        out: Flush | None
        if next(turns) % 2:
            hub.end_turn()
            out = carried.pop() if carried else None
            assert not carried
        else:
            out = hub.flush_written()
        # A worker's answers may go out at the end of its own read
        # (ServerHub._answer_worker), ahead of the turn's other bytes for it: at
        # most two writes per connection per turn, together the turn's output.
        assert all(len(chunks) <= 2 for chunks in written.values())
        if out is None:
            out = Flush({cid: b"".join(chunks) for cid, chunks in written.items()})
        else:
            assert all(len(chunks) == 1 for chunks in written.values())
            for cid, chunks in written.items():
                out.writes[cid] = chunks[0] + out.writes.get(cid, b"")
        written.clear()
        return out

    def writer(cid: int) -> Any:
        return lambda data: written.setdefault(cid, []).append(data)

    for cid in range(1, CONNECTIONS + 1):
        reader = readers[cid] = hub.reader()
        assert hub.open(b"127.0.0.1", writer=writer(cid) if driven else None,
                        reader=reader if driven and cid % 2 else None) == cid
        # Every connection may work (and submit): so a submitter may be a
        # sleeping worker its own submission wakes.
        hub.receive(cid, _req(CanDo(b"f")) + (_req(CanDo(b"g")) if cid > 2 else b""))
    seen: list[Any] = []
    gone: set[int] = set()
    for action, cid, arg in steps:
        if action == "stop":
            hub.stop(graceful=arg)
        elif cid in gone:
            continue
        elif action == "eof":
            hub.receive(cid, b"")
        else:
            for data in _reads(hub, cid, *arg):
                if driven and cid % 2:
                    readers[cid](data)
                elif driven:
                    hub.read(cid, data)
                else:
                    hub.receive(cid, data)
                out = flush()
                seen.append(_seen(out))
                gone.update(out.close)
                if cid in out.close or cid in out.shut:
                    break
            else:
                continue
        out = flush()
        seen.append(_seen(out))
        for closed in out.close:
            gone.add(closed)
            hub.closed(closed)
    return seen, _state(hub)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scripts())
def test_fast_and_general_paths_answer_alike(steps: list[tuple[str, int, Any]]) -> None:
    fast_out, fast_state = _run(steps, True)
    slow_out, slow_state = _run(steps, False)
    assert fast_out == slow_out
    assert fast_state == slow_state
    # The turn run by the hub itself (the asyncio server's) is the same machine too.
    driven_out, driven_state = _run(steps, True, driven=True)
    assert driven_out == fast_out
    assert driven_state == fast_state


def test_a_result_is_matched_to_the_job_last_assigned_only_while_it_runs_there() -> None:
    """The compiled fast path compares a WORK_COMPLETE's handle with the job last
    assigned to the worker before looking the handle up: a result for an older
    job it holds, for the one it just finished, and for the last one assigned
    after another worker took it over (CANT_DO requeued it) answer as the
    general path answers."""
    bg = Priority.NORMAL
    steps: list[tuple[str, int, Any]] = [
        ("read", 1, ([_req(SubmitJob(b"f", b"a", b"", bg, True)),
                      _req(SubmitJob(b"f", b"b", b"", bg, True))], [])),
        ("read", 2, ([_req(GrabJob()), _req(GrabJob())], [])),
        ("read", 2, ([("complete", 0, b"older")], [])),  # H:fuzz:1, not the last assigned
        ("read", 2, ([("complete", 0, b"last")], [])),  # H:fuzz:2, the last assigned
        ("read", 2, ([_req(WorkComplete(b"H:fuzz:2", b"again"))], [])),  # done: not found
        ("read", 1, ([_req(SubmitJob(b"g", b"c", b"", bg, True))], [])),  # H:fuzz:3
        ("read", 3, ([_req(GrabJob()), _req(CantDo(b"g"))], [])),  # requeued
        ("read", 4, ([_req(GrabJob())], [])),  # now 4 runs it
        ("read", 3, ([_req(WorkComplete(b"H:fuzz:3", b"stale"))], [])),  # not 3's: not found
        ("read", 4, ([_req(WorkComplete(b"H:fuzz:3", b"done"))], [])),
    ]
    fast_out, fast_state = _run(steps, True)
    slow_out, slow_state = _run(steps, False)
    assert fast_out == slow_out
    assert fast_state == slow_state
    assert _run(steps, True, driven=True) == (fast_out, fast_state)
    error = encode_packet(RES, PacketType.ERROR, ())[:8]  # magic and type
    assert [(cid, data[12:25]) for out in fast_out for cid, data in out.writes.items()
            if data.startswith(error)] == [(2, b"JOB_NOT_FOUND"), (3, b"JOB_NOT_FOUND")]
    assert fast_state[0] == []  # every job done


def test_a_submission_finds_its_function_past_the_one_last_submitted_to() -> None:
    """A connection remembers the function it last submitted to and compares a
    submission's name with it before looking the name up: a submission to
    another function, back to the first, and to a function dropped (``drop
    function``, which fails its queued job) and then submitted to again, all
    land on the live function, on either path."""
    bg = Priority.NORMAL
    steps: list[tuple[str, int, Any]] = [
        ("read", 1, ([_req(SubmitJob(b"f", b"a", b"", bg, True)),    # H:fuzz:1
                      _req(SubmitJob(b"h", b"b", b"", bg, True)),    # H:fuzz:2, no workers
                      _req(SubmitJob(b"f", b"c", b"", bg, True))], [])),  # H:fuzz:3
        ("read", 2, ([_req(SubmitJob(b"h", b"d", b"", bg, True))], [])),  # H:fuzz:4
        ("read", 1, ([_req(SubmitJob(b"h", b"e", b"", bg, True))], [])),  # H:fuzz:5
        ("read", 3, ([b"drop function h\n"], [])),  # fails H:fuzz:2, 4 and 5
        ("read", 1, ([_req(SubmitJob(b"h", b"f", b"", bg, True))], [])),  # H:fuzz:6, new h
        ("read", 2, ([_req(SubmitJob(b"h", b"g", b"", bg, True)),    # H:fuzz:7
                      _req(SubmitJob(b"g", b"h", b"", bg, True))], [])),  # H:fuzz:8
        ("read", 2, ([_req(SubmitJob(b"h", b"i", b"", bg, True))], [])),  # H:fuzz:9
    ]
    fast_out, fast_state = _run(steps, True)
    slow_out, slow_state = _run(steps, False)
    assert fast_out == slow_out
    assert fast_state == slow_state
    assert _run(steps, True, driven=True) == (fast_out, fast_state)
    queued = {name: queues for name, *_, queues in fast_state[1]}
    assert queued[b"f"][1] == [b"H:fuzz:1", b"H:fuzz:3"]
    assert queued[b"g"][1] == [b"H:fuzz:8"]
    # The h made again holds the jobs submitted after the drop, and only those.
    assert queued[b"h"][1] == [b"H:fuzz:6", b"H:fuzz:7", b"H:fuzz:9"]
    assert [j.handle for j in fast_state[0]] == [
        b"H:fuzz:1", b"H:fuzz:3", b"H:fuzz:6", b"H:fuzz:7", b"H:fuzz:8", b"H:fuzz:9"]


@pytest.mark.skipif(gearman_proto.COMPILED, reason="a compiled JobServer's methods cannot be "
                    "replaced")
def test_the_fast_path_serves_the_hot_packets() -> None:
    """Not vacuous: the hot packets do go the fast way (no event reaches the broker)."""
    hub = ServerHub(JobServer(handle_prefix=b"H:fuzz"))
    client, worker = hub.open(), hub.open()
    hub.receive(worker, _req(CanDo(b"f")))
    received: list[Event] = []
    receive = hub.broker.receive

    def counting(cid: int, event: Event) -> Any:
        received.append(event)
        return receive(cid, event)

    hub.broker.receive = counting  # type: ignore[method-assign]
    hub.receive(client, _req(SubmitJob(b"f", b"data", b"", Priority.NORMAL, False)))
    hub.receive(worker, _req(GrabJobUniq()) + _req(PreSleep()))
    hub.receive(worker, _req(WorkComplete(b"H:fuzz:1", b"done")))
    out = hub.flush().writes
    assert received == []
    assert out[client] == (encode_packet(RES, PacketType.JOB_CREATED, (b"H:fuzz:1",))
                           + encode_packet(RES, PacketType.WORK_COMPLETE,
                                           (b"H:fuzz:1", b"done")))
    # PRE_SLEEP while no job waits: no NOOP.
    assert out[worker] == encode_packet(RES, PacketType.JOB_ASSIGN_UNIQ,
                                        (b"H:fuzz:1", b"f", b"", b"data"))


# The fast path's own reads of a packet: its header (packets.frame_plain) and
# its NULs (_connection._native_nul, the compiled build's bytes.find).  Each must agree
# with the general path's function wherever it answers.
_headers = st.tuples(
    st.sampled_from([REQ, RES, b"\0REP", b"xREQ"]) | st.binary(min_size=4, max_size=4),
    st.sampled_from(list(PacketType)) | st.integers(0, 2**32 - 1),
    st.integers(0, 40) | st.integers(0, 2**32 - 1),
    st.binary(max_size=40),
).map(lambda t: t[0] + t[1].to_bytes(4, "big") + t[2].to_bytes(4, "big") + t[3])


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=3), _headers, st.sampled_from([REQ, RES]),
       st.sampled_from([0, 16, 2**20]))
@example(b"", b"\0REQ\0\0\0\x05\0\0\0\0", REQ, 0)  # UNUSED: a PacketType, not a packet
def test_the_fast_header_read_agrees_with_frame(lead: bytes, data: bytes, magic: bytes,
                                                limit: int) -> None:
    buf = lead + data
    ptype, end = frame_plain(buf, len(lead), magic, limit)
    # Both of its bodies, the struct read and the compiled build's byte reads, on
    # the pure build (compiled, the flag is a constant and the byte reads run).
    for compiled in (False, True):
        with mock.patch.object(packets, "COMPILED", compiled):
            assert frame_plain(buf, len(lead), magic, limit) == (ptype, end)
    try:
        expected: tuple[int, int] | None = frame(buf, len(lead), magic, limit)
    except RemoteProtocolError:
        expected = None
    if ptype < 0:
        assert end == 0
        # Declined only for what is not a plain, whole-header packet of type < 256.
        assert expected is None or expected[0] > 255 or len(data) < 12
    else:
        assert expected is None or (ptype, end) == expected
        # frame_plain leaves the type to its caller, so only an unknown one may differ
        # (UNUSED, 5, is a PacketType but no packet).
        assert expected is not None or ptype not in SPECS


def test_the_fast_header_read_takes_the_hot_packets() -> None:
    """Not vacuous: a whole hot packet is read the fast way."""
    packet = encode_packet(REQ, PacketType.SUBMIT_JOB_BG, (b"f", b"", b"x" * 100))
    assert frame_plain(b"ab" + packet, 2, REQ, 2**20) == (PacketType.SUBMIT_JOB_BG,
                                                          2 + len(packet))
    assert frame_plain(packet[:-1], 0, REQ, 0) == (PacketType.SUBMIT_JOB_BG, 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"")) | st.binary(max_size=40),
       st.integers(0, 40), st.integers(0, 40))
def test_native_nul_is_bytes_find(buf: bytes, a: int, b: int) -> None:
    start, end = sorted((min(a, len(buf)), min(b, len(buf))))
    assert _native_nul(buf, start, end) == buf.find(0, start, end)


def test_a_driven_hub_writes_the_usual_turn_itself() -> None:
    """Not vacuous: the usual turn comes back as None, its bytes written; a close does not."""
    hub = ServerHub(JobServer(handle_prefix=b"H:fuzz"), log_level=WARNING)  # no accept lines
    flushes: list[int] = []
    hub.drive(lambda: 1000.0, lambda: flushes.append(1))
    written: list[bytes] = []
    client = hub.open(writer=written.append)
    hub.read(client, _req(SubmitJob(b"f", b"data", b"", Priority.NORMAL, True)))
    hub.read(client, b"")  # the same batch: one flush scheduled
    assert flushes == [1]
    out = hub.flush_written()
    assert out is not None and out.close == [client] and written == []
    assert out.writes == {client: encode_packet(RES, PacketType.JOB_CREATED, (b"H:fuzz:1",))}
    other = hub.open(writer=written.append)
    hub.read(other, _req(SubmitJob(b"f", b"data", b"", Priority.NORMAL, True)))
    assert flushes == [1, 1]
    assert hub.flush_written() is None
    assert written == [encode_packet(RES, PacketType.JOB_CREATED, (b"H:fuzz:2",))]


def test_a_reader_and_end_turn_run_the_usual_turn_and_hand_out_the_rest() -> None:
    """Not vacuous: a connection's Reader reads it (one flush scheduled per batch),
    end_turn writes the usual turn itself and hands anything more (a close) to
    carry_out; a Reader not yet bound to a connection reads nothing."""
    hub = ServerHub(JobServer(handle_prefix=b"H:fuzz"), log_level=WARNING)
    flushes: list[int] = []
    carried: list[Flush] = []
    hub.drive(lambda: 1000.0, lambda: flushes.append(1), carried.append)
    written: list[bytes] = []
    hub.end_turn()  # the first turn sets the timer (none): that comes back
    assert [out.rearm for out in carried] == [True]
    carried.clear()
    unbound = hub.reader()
    unbound(_req(SubmitJob(b"f", b"data", b"", Priority.NORMAL, True)))
    assert flushes == [] and hub.broker.job_count == 0
    reader = hub.reader()
    client = hub.open(writer=written.append, reader=reader)
    reader(_req(SubmitJob(b"f", b"data", b"", Priority.NORMAL, True)))
    assert flushes == [1]
    hub.end_turn()
    assert carried == [] and written == [
        encode_packet(RES, PacketType.JOB_CREATED, (b"H:fuzz:1",))]
    reader(b"")  # the peer closed: the flush closes it, so it comes back
    hub.end_turn()
    assert flushes == [1, 1] and [out.close for out in carried] == [[client]]
    hub.closed(client)
    reader(_req(SubmitJob(b"f", b"data", b"", Priority.NORMAL, True)))  # gone: dropped
    assert hub.broker.job_count == 1


def test_a_driven_hub_still_counts_bytes_out_with_stats() -> None:
    """flush_written's own write of the usual turn is skipped when stats are attached:
    the bytes a peer was handed are counted by flush(), as without drive()."""
    hub = ServerHub(JobServer(handle_prefix=b"H:fuzz"), log_level=WARNING)
    hub.stats = ServerStats(hub, clock=lambda: 0.0, now=0.0)
    hub.drive(lambda: 1000.0, lambda: None)
    written: list[bytes] = []
    client = hub.open(writer=written.append)
    assert hub.flush_written() is not None  # the first turn sets the timer
    hub.read(client, _req(SubmitJob(b"f", b"data", b"", Priority.NORMAL, True)))
    out = hub.flush_written()
    created = encode_packet(RES, PacketType.JOB_CREATED, (b"H:fuzz:1",))
    assert out is None and written == [created]
    assert hub.stats.bytes_out == len(created)


def test_a_workers_answer_is_written_at_the_end_of_its_own_read() -> None:
    """A worker's answer to its grab (JOB_ASSIGN_UNIQ, NO_JOB) goes out at the end of the
    read that grabbed, before the turn ends; a client's JOB_CREATED, and a grab from a
    connection that registered no function, wait for the turn's end, and so does
    everything when the flush must see the bytes first (stats attached)."""
    def assign(n: int) -> bytes:
        return encode_packet(RES, PacketType.JOB_ASSIGN_UNIQ,
                             (b"H:fuzz:%d" % n, b"f", b"", b"data"))

    no_job = encode_packet(RES, PacketType.NO_JOB, ())
    for stats in (False, True):
        hub = ServerHub(JobServer(handle_prefix=b"H:fuzz"), log_level=WARNING)
        if stats:
            hub.stats = ServerStats(hub, clock=lambda: 0.0, now=0.0)
        hub.drive(lambda: 1000.0, lambda: None)
        written: dict[int, list[bytes]] = {}
        cids = [hub.open(writer=written.setdefault(n, []).append) for n in range(4)]
        client, busy, idle, stranger = cids
        hub.flush_written()  # the first turn sets the timer
        submit = _req(SubmitJob(b"f", b"data", b"", Priority.NORMAL, True))
        hub.read(client, submit + submit)
        assert written[0] == []  # JOB_CREATED waits for the turn's end
        hub.flush_written()
        hub.read(busy, _req(CanDo(b"f")) + _req(GrabJobUniq()))
        hub.read(idle, _req(CanDo(b"g")) + _req(GrabJobUniq()))  # nothing for g: NO_JOB
        hub.read(stranger, _req(GrabJobUniq()))  # no CAN_DO: not a worker yet
        assert written[1] == ([] if stats else [assign(1)])
        assert written[2] == ([] if stats else [no_job])
        assert written[3] == []
        hub.flush_written()
        assert written[1] == [assign(1)] and written[2] == written[3] == [no_job]
        # The next job, asked for with the result of the first, the same way.
        hub.read(busy, _req(WorkComplete(b"H:fuzz:1", b"r")) + _req(GrabJobUniq()))
        assert written[1] == [assign(1)] + ([] if stats else [assign(2)])
        hub.flush_written()
        assert written[1] == [assign(1), assign(2)]
