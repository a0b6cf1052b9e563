"""gearman_proto.strategies: what each strategy promises, held by the core it feeds.

Valid events survive the wire (encoded by the sender's role, decoded by the
receiver's, the same event comes out); every malformed kind is refused by a
ServerConnection with the documented RemoteProtocolError; conversations drive a
ServerHub without a protocol error from a well-formed peer.  And importing
``gearman_proto`` does not import hypothesis: only the strategies module does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gearman_proto import strategies as gst
from gearman_proto.broker import JobServer
from gearman_proto.codec import packet_to_event
from gearman_proto.errors import RemoteProtocolError
from gearman_proto.events import AdminCommand, ConnectionClosed, Event
from gearman_proto.hub import ServerHub
from gearman_proto.packets import RES, Decoder, Role
from gearman_proto.server import ServerConnection

SETTINGS = settings(max_examples=int(os.environ.get("GEARMAN_FUZZ_EXAMPLES", "50")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_importing_the_core_does_not_import_hypothesis() -> None:
    code = ("import sys, json\nimport gearman_proto, gearman_proto.hub\n"
            "a = 'hypothesis' in sys.modules\nimport gearman_proto.strategies\n"
            "print(json.dumps([a, 'hypothesis' in sys.modules]))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True, cwd="/")
    assert json.loads(out.stdout) == [False, True]


def _server_events(data: bytes) -> list[Event]:
    conn = ServerConnection()
    conn.receive_data(data)
    return [e for e in conn.events() if type(e) is not ConnectionClosed]


@SETTINGS
@given(st.sampled_from([Role.CLIENT, Role.WORKER]).flatmap(
    lambda role: st.tuples(st.just(role), gst.events(role))))
def test_client_and_worker_events_reach_the_server_unchanged(pair: tuple[Role, Event]) -> None:
    role, event = pair
    assert _server_events(gst.encode(event, role)) == [event]


@SETTINGS
@given(gst.events(Role.SERVER))
def test_server_events_decode_on_the_receiving_side(event: Event) -> None:
    dec = Decoder(RES)
    dec.feed(gst.encode(event, Role.SERVER))
    packet = dec.next()
    assert packet is not None and dec.next() is None
    assert packet_to_event(packet.type, packet.args) == event


@SETTINGS
@given(gst.admin_lines())
def test_admin_lines_are_one_admin_command_each(line: bytes) -> None:
    events = _server_events(line)
    assert [type(e) for e in events] == [AdminCommand]
    assert events[0] == AdminCommand(line.rstrip(b"\r\n"))


# A NUL inside a leading argument shifts the split (the last argument takes the
# rest), garbage may be a valid line and a bad text line gets an ERR answer: these
# may decode; every other kind must be refused.
REFUSED = [k for k in gst.MALFORMED_KINDS if k not in ("garbage", "bad_text", "nul_in_field")]


@pytest.mark.parametrize("kind", REFUSED)
def test_each_malformed_kind_is_refused_by_the_server_connection(kind: str) -> None:
    @SETTINGS
    @given(gst.malformed_streams(kind))
    def check(data: bytes) -> None:
        conn = ServerConnection()
        conn.receive_data(data)
        conn.receive_data(b"")
        with pytest.raises(RemoteProtocolError):
            list(conn.events())
    check()


def test_an_unknown_kind_is_named() -> None:
    with pytest.raises(ValueError, match="unknown malformed kind 'nope'"):
        gst.malformed_streams("nope")


@SETTINGS
@given(gst.conversations(malformed=False))
def test_well_formed_conversations_never_break_the_protocol(
        script: tuple[tuple[str, ...], list[gst.Step]]) -> None:
    roles, steps = script
    hub = ServerHub(JobServer(handle_prefix=b"H:fuzz", now=1000.0))
    cids = [hub.open(b"127.0.0.1") for _ in roles]
    hung_up: set[int] = set()
    for step in steps:
        role = Role.WORKER if roles[step.conn] == "worker" else Role.CLIENT
        for item in step.send:
            assert isinstance(item, Event)
            hub.receive(cids[step.conn], gst.encode(item, role))
        if step.close:
            hub.receive(cids[step.conn], b"")
            hung_up.add(cids[step.conn])
        out = hub.flush()
        # The hub closes the transport of a peer that hung up (its end of the
        # script); any other close is the hub refusing a well-formed peer.
        assert not set(out.close) - hung_up, "a well-formed peer was closed"
    assert hub.protocol_errors == 0 and hub.internal_errors == 0
