"""The wire format, seen through the connections that speak it (PROTOCOL-NOTES §1, §2, §3.1).

Every packet type goes from the role that sends it, through bytes, into the
role that receives it, and comes out equal.  Chunking never changes what is
decoded.  Bad bytes only ever raise RemoteProtocolError, with a message that
names the problem, and leave the connection in the ERROR state.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gearman_proto import (
    NEED_DATA,
    REQ,
    RES,
    SPECS,
    AdminCommand,
    AllYours,
    CanDo,
    CanDoTimeout,
    CantDo,
    ClientConnection,
    ConnectionClosed,
    ConnectionState,
    Decoder,
    EchoReq,
    EchoRes,
    Error,
    Event,
    GetStatus,
    GetStatusUnique,
    GrabJob,
    GrabJobAll,
    GrabJobUniq,
    JobAssign,
    JobCreated,
    LocalProtocolError,
    NoJob,
    Noop,
    OptionReq,
    OptionRes,
    Packet,
    PacketTooLarge,
    PacketType,
    PreSleep,
    Priority,
    RemoteProtocolError,
    ResetAbilities,
    Role,
    ServerConnection,
    SetClientId,
    StatusRes,
    StatusResUnique,
    SubmitJob,
    SubmitJobEpoch,
    SubmitJobSched,
    SubmitReduceJob,
    WorkComplete,
    WorkData,
    WorkerConnection,
    WorkException,
    WorkFail,
    WorkStatus,
    WorkWarning,
    encode_packet,
)
from gearman_proto._connection import Connection
from gearman_proto.codec import event_to_packet, packet_to_event

P = PacketType


def packet(magic: bytes, ptype: int, payload: bytes, size: int | None = None) -> bytes:
    """Raw packet bytes, with a size that may lie."""
    return magic + struct.pack(">II", ptype, len(payload) if size is None else size) + payload


def drain(conn: Connection) -> list[Event]:
    return list(conn.events())


# -- strategies: one per packet type ----------------------------------------------

name = st.binary(max_size=24).map(lambda b: b.replace(b"\0", b""))  # any field but the last
blob = st.binary(max_size=64)  # the last field: may hold NUL
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


def submit(priority: Priority, background: bool) -> st.SearchStrategy[Event]:
    return st.builds(SubmitJob, name, blob, name, st.just(priority), st.just(background))


EVENTS: dict[PacketType, st.SearchStrategy[Event]] = {
    P.CAN_DO: st.builds(CanDo, name),
    P.CANT_DO: st.builds(CantDo, name),
    P.RESET_ABILITIES: st.just(ResetAbilities()),
    P.PRE_SLEEP: st.just(PreSleep()),
    P.NOOP: st.just(Noop()),
    P.SUBMIT_JOB: submit(Priority.NORMAL, False),
    P.JOB_CREATED: st.builds(JobCreated, name),
    P.GRAB_JOB: st.just(GrabJob()),
    P.NO_JOB: st.just(NoJob()),
    P.JOB_ASSIGN: st.builds(JobAssign, name, name, blob),
    P.WORK_STATUS: st.builds(WorkStatus, name, u64, u64),
    P.WORK_COMPLETE: st.builds(WorkComplete, name, blob),
    P.WORK_FAIL: st.builds(WorkFail, name),
    P.GET_STATUS: st.builds(GetStatus, name),
    P.ECHO_REQ: st.builds(EchoReq, blob),
    P.ECHO_RES: st.builds(EchoRes, blob),
    P.SUBMIT_JOB_BG: submit(Priority.NORMAL, True),
    P.ERROR: st.builds(Error, name, blob),
    P.STATUS_RES: st.builds(StatusRes, name, st.booleans(), st.booleans(), u32, u32),
    P.SUBMIT_JOB_HIGH: submit(Priority.HIGH, False),
    P.SET_CLIENT_ID: st.builds(SetClientId, blob),
    P.CAN_DO_TIMEOUT: st.builds(CanDoTimeout, name, u32),
    P.ALL_YOURS: st.just(AllYours()),
    P.WORK_EXCEPTION: st.builds(WorkException, name, blob),
    P.OPTION_REQ: st.builds(OptionReq, blob),
    P.OPTION_RES: st.builds(OptionRes, blob),
    P.WORK_DATA: st.builds(WorkData, name, blob),
    P.WORK_WARNING: st.builds(WorkWarning, name, blob),
    P.GRAB_JOB_UNIQ: st.just(GrabJobUniq()),
    P.JOB_ASSIGN_UNIQ: st.builds(JobAssign, name, name, blob, name),
    P.SUBMIT_JOB_HIGH_BG: submit(Priority.HIGH, True),
    P.SUBMIT_JOB_LOW: submit(Priority.LOW, False),
    P.SUBMIT_JOB_LOW_BG: submit(Priority.LOW, True),
    P.SUBMIT_JOB_SCHED: st.builds(SubmitJobSched, name, name, st.integers(0, 59),
                                  st.integers(0, 23), st.integers(1, 31),
                                  st.integers(1, 12), st.integers(0, 6), blob),
    P.SUBMIT_JOB_EPOCH: st.builds(SubmitJobEpoch, name, u64, blob, name),
    P.SUBMIT_REDUCE_JOB: st.builds(SubmitReduceJob, name, name, blob, name,
                                   st.just(False), name),
    P.SUBMIT_REDUCE_JOB_BACKGROUND: st.builds(SubmitReduceJob, name, name, blob, name,
                                              st.just(True), name),
    P.GRAB_JOB_ALL: st.just(GrabJobAll()),
    P.JOB_ASSIGN_ALL: st.builds(JobAssign, name, name, blob, name, name),
    P.GET_STATUS_UNIQUE: st.builds(GetStatusUnique, name),
    P.STATUS_RES_UNIQUE: st.builds(StatusResUnique, name, st.booleans(), st.booleans(),
                                   u32, u32, u32),
}

CONNECTIONS: dict[Role, Callable[[], Connection]] = {
    Role.CLIENT: ClientConnection,
    Role.WORKER: WorkerConnection,
    Role.SERVER: ServerConnection,
}

# Every (packet type, sender, receiver) the table allows: WORK_* both from a
# worker to the server and from the server to a client, ECHO/OPTION/ERROR with
# both a client and a worker, and so on.
ROUTES = [
    (ptype, sender, receiver)
    for ptype in EVENTS
    for sender in sorted(SPECS[ptype].senders, key=lambda r: r.value)
    for receiver in sorted(SPECS[ptype].receivers - {sender}, key=lambda r: r.value)
    if Role.SERVER in (sender, receiver)
]

_WORK = (WorkStatus, WorkData, WorkWarning, WorkComplete, WorkFail, WorkException)


def _give_job(worker: WorkerConnection, handle: bytes) -> None:
    """Put a job in the worker's hand, as the server would."""
    worker.send(GrabJob())
    worker.receive_data(ServerConnection().send(JobAssign(handle, b"f", b"")))
    drain(worker)


def _await_job(client: ClientConnection, handle: bytes) -> None:
    """Make the client wait on a foreground job with this handle."""
    client.send(SubmitJob(b"f"))
    client.receive_data(ServerConnection().send(JobCreated(handle)))
    drain(client)


def prime(sender: Connection, receiver: Connection, event: Event) -> None:
    """Bring both ends to a state in which ``event`` may be sent and received."""
    if isinstance(sender, WorkerConnection) and isinstance(event, _WORK):
        _give_job(sender, event.handle)
    if isinstance(receiver, ClientConnection):
        if isinstance(event, _WORK):
            _await_job(receiver, event.handle)
        elif isinstance(event, JobCreated):
            receiver.send(SubmitJob(b"f"))
        elif isinstance(event, StatusRes):
            receiver.send(GetStatus(event.handle))
        elif isinstance(event, StatusResUnique):
            receiver.send(GetStatusUnique(event.unique))
        elif isinstance(event, EchoRes):
            receiver.send(EchoReq(event.data))
        elif isinstance(event, OptionRes):
            receiver.send(OptionReq(event.name))
    if isinstance(receiver, WorkerConnection):
        if isinstance(event, JobAssign):
            receiver.send(GrabJob() if event.unique is None
                          else GrabJobUniq() if event.reducer is None else GrabJobAll())
        elif isinstance(event, NoJob):
            receiver.send(GrabJob())
        elif isinstance(event, EchoRes):
            receiver.send(EchoReq(event.data))
        elif isinstance(event, OptionRes):
            receiver.send(OptionReq(event.name))


# -- round trip ------------------------------------------------------------------------


def test_every_packet_type_but_5_has_an_event_and_a_route() -> None:
    """§2: types 1..42 are all in use except 5."""
    assert set(EVENTS) == set(PacketType) - {P.UNUSED}
    assert {ptype for ptype, _, _ in ROUTES} == set(EVENTS)


@pytest.mark.parametrize(
    ("ptype", "sender", "receiver"), ROUTES,
    ids=[f"{p.name}-{s.value}-to-{r.value}" for p, s, r in ROUTES],
)
@given(data=st.data())
def test_round_trip_through_the_peer(
    ptype: PacketType, sender: Role, receiver: Role, data: st.DataObject
) -> None:
    """§1, §2: event -> sender.send -> bytes -> receiver.next_event -> the same event."""
    event = data.draw(EVENTS[ptype])
    out, into = CONNECTIONS[sender](), CONNECTIONS[receiver]()
    prime(out, into, event)
    wire = out.send(event)
    magic, wire_type, size = struct.unpack(">4sII", wire[:12])
    assert (magic, wire_type, size) == (RES if sender is Role.SERVER else REQ, ptype,
                                        len(wire) - 12)
    # Connections write common messages with their own encoders: the same bytes.
    assert wire == encode_packet(magic, *event_to_packet(event))
    into.receive_data(wire)
    assert into.next_event() == event
    assert into.next_event() is NEED_DATA


@given(event=st.one_of(*EVENTS.values()), magic=st.sampled_from([REQ, RES]))
def test_decoder_round_trip(event: Event, magic: bytes) -> None:
    """§1: the framing alone, without any role: decode(encode(packet)) == packet."""
    ptype, args = event_to_packet(event)
    decoder = Decoder(magic)
    decoder.feed(encode_packet(magic, ptype, args))
    assert decoder.next() == Packet(magic, ptype, args)
    assert packet_to_event(ptype, args) == event
    assert decoder.next() is None and decoder.buffered == 0


# -- worked examples ----------------------------------------------------------------------


def test_can_do_reverse_matches_the_protocol_file() -> None:
    """§1: CAN_DO "reverse" is 00 52 45 51 | 00 00 00 01 | 00 00 00 07 | "reverse"."""
    wire = WorkerConnection().send(CanDo(b"reverse"))
    assert wire == bytes.fromhex("00524551 00000001 00000007 72657665727365")


def test_submit_job_reverse_test_has_size_13() -> None:
    """§1: SUBMIT_JOB("reverse", unique="", data="test") is reverse\\0 + \\0 + test."""
    wire = ClientConnection().send(SubmitJob(b"reverse", b"test"))
    assert wire == b"\0REQ" + bytes.fromhex("00000007 0000000d") + b"reverse\0\0test"


def test_submit_reduce_job_uses_gearmands_four_field_layout() -> None:
    """§2: function, unique, reducer and an empty aggregate, each NUL-terminated, then data."""
    wire = ClientConnection().send(SubmitReduceJob(b"count", b"sum", b"a\0b", b"u1"))
    assert wire[4:8] == struct.pack(">I", 37)
    assert wire[12:] == b"count\0u1\0sum\0\0a\0b"
    server = ServerConnection()
    server.receive_data(wire)
    assert server.next_event() == SubmitReduceJob(b"count", b"sum", b"a\0b", b"u1")


def test_only_the_last_argument_may_hold_nul() -> None:
    """§1: a NUL in an earlier argument would shift the fields the receiver reads."""
    with pytest.raises(LocalProtocolError, match="only the last argument may contain NUL"):
        ClientConnection().send(SubmitJob(b"re\0verse", b"test"))


@pytest.mark.parametrize(("sender", "event"), [
    (ClientConnection, SubmitJob(b"re\0verse", b"test")),
    (ClientConnection, SubmitJob(b"reverse", b"test", b"u\0", background=True)),
    (ServerConnection, JobAssign(b"H:\0", b"f", b"data")),
    (ServerConnection, JobAssign(b"H:1", b"f\0", b"data", b"u")),
    (ServerConnection, JobAssign(b"H:1", b"f", b"data", b"u\0")),
    (ServerConnection, WorkComplete(b"H:\0:1", b"data")),
    (ServerConnection, Error(b"CODE\0", b"text")),
], ids=lambda v: type(v).__name__)
def test_nul_before_the_last_argument_is_refused_by_every_encoder(
    sender: Callable[[], Connection], event: Event
) -> None:
    with pytest.raises(LocalProtocolError, match="only the last argument may contain NUL"):
        sender().send(event)


def test_perl_servers_empty_status_numbers_read_as_zero() -> None:
    """§2: Perl Gearman::Server sends "" for numerator/denominator never reported."""
    client = ClientConnection()
    client.send(GetStatus(b"H:1"))
    client.receive_data(packet(RES, P.STATUS_RES, b"H:1\x001\x000\x00\x00"))
    assert client.next_event() == StatusRes(b"H:1", True, False, 0, 0)


# -- chunking never changes the events ------------------------------------------------------

# Binary messages a server accepts in any state, and admin text lines.
to_server = st.one_of(*(EVENTS[t] for t in EVENTS if Role.SERVER in SPECS[t].receivers))
admin_line = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30
).map(str.encode)
server_item = st.one_of(
    to_server.map(lambda e: (e, encode_packet(REQ, *event_to_packet(e)))),
    st.tuples(admin_line, st.sampled_from([b"\n", b"\r\n"])).map(
        lambda t: (AdminCommand(t[0]), t[0] + t[1])),
)


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def feed(conn: Connection, chunks: list[bytes]) -> list[Event]:
    """Feed the chunks in turn, collecting events (an empty chunk would mean "closed")."""
    events: list[Event] = []
    for chunk in filter(None, chunks):
        conn.receive_data(chunk)
        events.extend(conn.events())
    return events


@given(items=st.lists(server_item, max_size=12), cuts=st.lists(st.integers(0, 10**6)))
def test_server_stream_whole_bytewise_or_chunked_gives_the_same_events(
    items: list[tuple[Event, bytes]], cuts: list[int]
) -> None:
    """§1, §3.1: text and binary mixed on one connection, decided per message."""
    expected = [e for e, _ in items]
    stream = b"".join(b for _, b in items)
    assert feed(ServerConnection(), [stream]) == expected
    assert feed(ServerConnection(), [stream[i:i + 1] for i in range(len(stream))]) == expected
    assert feed(ServerConnection(), split(stream, cuts)) == expected


def test_admin_lines_end_with_lf_or_crlf() -> None:
    """§3.1: the line ends at \\n; one \\r before it is dropped."""
    server = ServerConnection()
    server.receive_data(b"status\r\nworkers\n" + packet(REQ, P.ECHO_REQ, b"x") + b"version\n")
    assert drain(server) == [AdminCommand(b"status"), AdminCommand(b"workers"),
                             EchoReq(b"x"), AdminCommand(b"version")]


@given(
    kinds=st.lists(st.sampled_from(["echo", "data", "status", "warning"]), max_size=10),
    payload=blob,
    cuts=st.lists(st.integers(0, 10**6)),
)
def test_client_stream_whole_bytewise_or_chunked_gives_the_same_events(
    kinds: list[str], payload: bytes, cuts: list[int]
) -> None:
    """§4.2: replies and interleaved results for one job decode the same in any split."""
    server = ServerConnection()
    replies: list[Event] = [JobCreated(b"H:1")]
    for kind in kinds:
        replies.append({"echo": EchoRes(payload), "data": WorkData(b"H:1", payload),
                        "status": WorkStatus(b"H:1", 1, 2),
                        "warning": WorkWarning(b"H:1", payload)}[kind])
    replies.append(WorkComplete(b"H:1", payload))
    stream = b"".join(server.send(e) for e in replies)

    def session(chunks: list[bytes]) -> list[Event]:
        client = ClientConnection()
        client.send(SubmitJob(b"f", b"x"))
        for kind in kinds:
            if kind == "echo":
                client.send(EchoReq(payload))
        return feed(client, chunks)

    assert session([stream]) == replies
    assert session([stream[i:i + 1] for i in range(len(stream))]) == replies
    assert session(split(stream, cuts)) == replies


# -- garbage in: RemoteProtocolError naming the problem, then the ERROR state --------------


def refuses(
    conn: Connection, data: bytes, match: str, *, close: bool = False
) -> RemoteProtocolError:
    conn.receive_data(data)
    if close:
        conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match=match) as info:
        drain(conn)
    assert conn.state is ConnectionState.ERROR
    with pytest.raises(RemoteProtocolError, match="error state"):
        conn.next_event()
    return info.value


def test_bad_magic_is_refused() -> None:
    """§1: only \\0REQ and \\0RES exist."""
    exc = refuses(ServerConnection(), packet(b"\0XYZ", P.ECHO_REQ, b""), "bad packet magic")
    assert exc.error_code == b"INVALID_MAGIC"


def test_bad_magic_is_refused_as_soon_as_it_shows() -> None:
    """§1: a stream that cannot become a packet fails before 12 bytes arrive."""
    refuses(WorkerConnection(), b"\0RX", "bad packet magic")


def test_res_magic_sent_to_the_server_is_refused_like_gearmand() -> None:
    """§1, §4.15: gearmand answers INVALID_MAGIC "Request magic expected"."""
    exc = refuses(ServerConnection(), packet(RES, P.ECHO_RES, b"x"), r"expected b'\\x00REQ'")
    assert (exc.error_code, exc.error_text) == (b"INVALID_MAGIC", b"Request magic expected")


def test_req_magic_sent_to_a_client_is_refused() -> None:
    """§1: everything the server sends carries \\0RES."""
    exc = refuses(ClientConnection(), packet(REQ, P.JOB_CREATED, b"H:1"), r"expected b'\\x00RES'")
    assert exc.error_code == b"INVALID_MAGIC"


@pytest.mark.parametrize("ptype", [0, 43, 0xFFFFFFFF])
def test_unknown_packet_type_is_refused(ptype: int) -> None:
    """§1: types 0 and >= 43 are INVALID_COMMAND."""
    exc = refuses(ServerConnection(), packet(REQ, ptype, b""), f"unknown packet type {ptype}")
    assert exc.error_code == b"INVALID_COMMAND"


def test_type_5_is_refused() -> None:
    """§2: type 5 is unused; gearmand answers INVALID_COMMAND."""
    exc = refuses(ServerConnection(), packet(REQ, 5, b""), "unknown packet type 5")
    assert exc.error_code == b"INVALID_COMMAND"


def test_truncated_packet_then_close_is_refused() -> None:
    """The peer may only close at a message boundary."""
    whole = packet(RES, P.WORK_DATA, b"H:1\0data")
    refuses(ClientConnection(), whole[:15], r"closed the connection in the middle of a message "
            r"\(15 bytes pending\)", close=True)


def test_close_at_a_message_boundary_is_clean() -> None:
    server = ServerConnection()
    server.receive_data(packet(REQ, P.GRAB_JOB, b""))
    server.receive_data(b"")
    assert drain(server) == [GrabJob(), ConnectionClosed()]
    assert server.state is ConnectionState.CLOSED


def test_oversize_packet_is_refused_from_its_header_alone() -> None:
    """§1: no size limit in the protocol; ours is checked before the payload is buffered."""
    decoder = Decoder(REQ, max_packet_size=100)
    decoder.feed(packet(REQ, P.SUBMIT_JOB, b"", size=101))
    with pytest.raises(PacketTooLarge, match="SUBMIT_JOB packet of 101 bytes exceeds the "
                       "maximum packet size of 100"):
        decoder.next()
    assert decoder.buffered == 12
    # The same through a connection: only the 12-byte header was ever fed.
    exc = refuses(ServerConnection(max_packet_size=100),
                  packet(REQ, P.SUBMIT_JOB, b"", size=2**32 - 1), "exceeds the maximum")
    assert isinstance(exc, PacketTooLarge)
    assert exc.error_code == b"ARGUMENT_TOO_LARGE"


def test_packet_at_the_size_limit_is_accepted() -> None:
    server = ServerConnection(max_packet_size=12)
    server.receive_data(packet(REQ, P.ECHO_REQ, b"x" * 12))
    assert server.next_event() == EchoReq(b"x" * 12)


def test_overlong_admin_line_is_refused() -> None:
    """§3.1: a text line must end within max_line_length bytes."""
    exc = refuses(ServerConnection(max_line_length=10), b"statusstatus", "admin line longer")
    assert isinstance(exc, PacketTooLarge)


def test_wrong_argument_count_is_refused() -> None:
    """§1, §2: SUBMIT_JOB carries exactly function, unique and data."""
    exc = refuses(ServerConnection(), packet(REQ, P.SUBMIT_JOB, b"reverse\0test"),
                  r"SUBMIT_JOB needs 3 arguments \(function, unique, data\) but carried 2")
    assert exc.error_code == b"INVALID_ARGUMENTS"


def test_payload_on_a_packet_without_arguments_is_refused() -> None:
    """§1: a packet with 0 arguments has size 0."""
    refuses(WorkerConnection(), packet(RES, P.NOOP, b"x"), "NOOP takes no arguments")


@pytest.mark.parametrize("number", [b"", b"-1", b"1.5", b" 7", b"\xd9\xa3", b"1" * 5000])
def test_non_decimal_numbers_are_refused(number: bytes) -> None:
    """§2: numbers are decimal ASCII.  5000 digits must not reach int() (it raises ValueError)."""
    exc = refuses(ServerConnection(), packet(REQ, P.WORK_STATUS, b"H:1\0" + number + b"\x002"),
                  "WORK_STATUS argument 'numerator' must be decimal ASCII")
    assert exc.error_code == b"INVALID_ARGUMENTS"


def test_text_line_sent_to_a_client_is_refused() -> None:
    """§3.1: only the server reads admin text."""
    refuses(ClientConnection(), b"status\n", "expected a binary packet")


def test_packet_a_client_may_not_receive_is_refused() -> None:
    """§2: JOB_ASSIGN goes from the server to a worker only."""
    exc = refuses(ClientConnection(), packet(RES, P.JOB_ASSIGN, b"H:1\0f\0"),
                  "a client may not receive JOB_ASSIGN")
    assert exc.error_code == b"INVALID_COMMAND"


def test_packet_a_worker_may_not_receive_is_refused() -> None:
    """§2: SUBMIT_JOB goes from a client to the server only."""
    refuses(WorkerConnection(), packet(RES, P.SUBMIT_JOB, b"f\0\0x"),
            "a worker may not receive SUBMIT_JOB")


def test_packet_the_server_may_not_receive_is_refused() -> None:
    """§2, §4.15: the server refuses RES-only types even with REQ magic."""
    refuses(ServerConnection(), packet(REQ, P.JOB_CREATED, b"H:1"),
            "a server may not receive JOB_CREATED")


# -- fuzzing: nothing but RemoteProtocolError ever escapes next_event() --------------------

ROLES = [ClientConnection, WorkerConnection, ServerConnection]


def only_remote_errors(conn: Connection, chunks: list[bytes], close: bool) -> None:
    try:
        for chunk in filter(None, chunks):  # b"" would mean "closed"
            conn.receive_data(chunk)
            drain(conn)
        if close:
            conn.receive_data(b"")
            drain(conn)
    except RemoteProtocolError as exc:
        assert conn.state is ConnectionState.ERROR
        assert str(exc)


@pytest.mark.parametrize("role", ROLES, ids=lambda c: c.__name__)
@given(chunks=st.lists(st.binary(max_size=40), max_size=8), close=st.booleans())
def test_arbitrary_bytes_raise_only_remote_protocol_error(
    role: Callable[[], Connection], chunks: list[bytes], close: bool
) -> None:
    only_remote_errors(role(), chunks, close)


# Bytes that are almost right reach deeper: real headers, any type, arguments
# that may or may not fit, on a connection with requests outstanding.
framed = st.builds(
    packet,
    st.sampled_from([REQ, RES]),
    st.integers(0, 45),
    st.lists(st.sampled_from([b"H:1", b"f", b"0", b"1", b"7", b"", b"x\0y"]), max_size=7).map(
        b"\0".join),
)
requests = st.lists(st.sampled_from(
    [SubmitJob(b"f"), SubmitJob(b"f", background=True), GetStatus(b"H:1"), EchoReq(b"x"),
     OptionReq(b"exceptions"), GetStatusUnique(b"u")]), max_size=4)
grabs = st.lists(st.sampled_from([GrabJob(), GrabJobUniq(), GrabJobAll(), EchoReq(b"x"),
                                  OptionReq(b"x"), PreSleep()]), max_size=4)


@given(sent=requests, packets=st.lists(framed, max_size=8), close=st.booleans())
def test_framed_garbage_to_a_client_raises_only_remote_protocol_error(
    sent: list[Event], packets: list[bytes], close: bool
) -> None:
    client = ClientConnection()
    for request in sent:
        client.send(request)
    only_remote_errors(client, packets, close)


@given(sent=grabs, packets=st.lists(framed, max_size=8), close=st.booleans())
def test_framed_garbage_to_a_worker_raises_only_remote_protocol_error(
    sent: list[Event], packets: list[bytes], close: bool
) -> None:
    worker = WorkerConnection()
    for request in sent:
        worker.send(request)
    only_remote_errors(worker, packets, close)


@given(packets=st.lists(st.one_of(framed, admin_line.map(lambda b: b + b"\n")), max_size=8),
       close=st.booleans())
def test_framed_garbage_to_a_server_raises_only_remote_protocol_error(
    packets: list[bytes], close: bool
) -> None:
    only_remote_errors(ServerConnection(), packets, close)


# -- events() decodes common packets in its own loop: it must agree with next_event() ------


def outcome(conn: Connection, chunks: list[bytes], use_events: bool) -> list[object]:
    """What the caller sees: each event, then the error (message and code) if one is raised."""
    seen: list[object] = []
    try:
        for chunk in filter(None, chunks):
            conn.receive_data(chunk)
            if use_events:
                seen.extend(conn.events())
            else:
                while (event := conn.next_event()) is not NEED_DATA:
                    seen.append(event)
                    if isinstance(event, ConnectionClosed):
                        break
    except RemoteProtocolError as exc:
        seen.append((str(exc), exc.error_code, exc.error_text))
    seen.append(conn.state)
    return seen


@pytest.mark.parametrize(("role", "sent_before"), [(WorkerConnection, grabs),
                                                   (ClientConnection, requests)],
                         ids=["worker", "client"])
@given(data=st.data(), packets=st.lists(framed, max_size=8),
       cuts=st.lists(st.integers(0, 10**6)))
def test_events_and_next_event_agree_for_a_worker_or_a_client(
    role: Callable[[], Connection], sent_before: st.SearchStrategy[list[Event]],
    data: st.DataObject, packets: list[bytes], cuts: list[int],
) -> None:
    sent = data.draw(sent_before)
    chunks = split(b"".join(packets), cuts)
    results = []
    for use_events in (True, False):
        conn = role()
        for request in sent:
            conn.send(request)
        results.append(outcome(conn, chunks, use_events))
    assert results[0] == results[1]


@given(packets=st.lists(st.one_of(framed, admin_line.map(lambda b: b + b"\n")), max_size=8),
       cuts=st.lists(st.integers(0, 10**6)))
def test_events_and_next_event_agree_for_a_server(packets: list[bytes], cuts: list[int]) -> None:
    chunks = split(b"".join(packets), cuts)
    assert (outcome(ServerConnection(), chunks, True)
            == outcome(ServerConnection(), chunks, False))
