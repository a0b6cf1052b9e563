"""Input that bends the protocol, accepted as gearmand accepts it (docs/interoperability.md).

A widely used npm client sends CAN_DO_TIMEOUT's timeout as four binary bytes
(a big-endian integer) instead of decimal text.  gearmand 1.1.20 reads that
as 0 -- no timeout -- and carries on; so do we, with one warning in the log.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

import pytest

from gearman_proto.broker import JobServer
from gearman_proto.hub import ServerHub
from gearman_proto.packets import REQ, PacketType, encode_packet


def warnings(out: Any) -> list[str]:
    """The WARNING lines a flush asks the server to log."""
    return [message % args for level, message, args in out.notes if level == logging.WARNING]


NPM_CAN_DO_TIMEOUT = encode_packet(REQ, PacketType.CAN_DO_TIMEOUT,
                                   (b"timed", struct.pack(">I", 5000)))


def test_the_hub_registers_it_without_a_timeout_and_notes_it() -> None:
    hub = ServerHub(JobServer())
    cid = hub.open(b"127.0.0.1")
    hub.receive(cid, NPM_CAN_DO_TIMEOUT + encode_packet(REQ, PacketType.ECHO_REQ, (b"hi",)))
    out = hub.flush()
    assert out.close == []
    assert out.writes[cid].endswith(b"hi")  # ECHO_RES: the connection carries on
    assert [row.functions for row in hub.broker.worker_rows()] == [(b"timed",)]
    assert warnings(out) == [f"connection {cid} from 127.0.0.1: CAN_DO_TIMEOUT argument "
                             "'timeout' is not decimal (b'\\x00\\x00\\x13\\x88'): read as 0, as "
                             "gearmand does"]
    assert warnings(hub.flush()) == []  # said once


@pytest.mark.parametrize(("timeout", "read"), [
    (b"10s", 10), (b"abc", 0), (b"", 0), (struct.pack(">I", 0x31320000), 12)])
def test_a_bent_timeout_is_read_as_strtol_reads_it(timeout: bytes, read: int) -> None:
    """gearmand reads the field with strtol(): its leading digits, else 0."""
    hub = ServerHub(JobServer())
    cid = hub.open()
    hub.receive(cid, encode_packet(REQ, PacketType.CAN_DO_TIMEOUT, (b"f", timeout)))
    out = hub.flush()
    assert out.close == [] and len(warnings(out)) == 1
    assert warnings(out)[0].endswith(f"read as {read}, as gearmand does")


def test_a_timeout_field_too_long_is_still_refused() -> None:
    hub = ServerHub(JobServer())
    cid = hub.open()
    hub.receive(cid, encode_packet(REQ, PacketType.CAN_DO_TIMEOUT, (b"f", b"\xff" * 21)))
    out = hub.flush()
    # Refused: the ERROR, then the connection is shut (and closed once drained).
    assert out.shut == [cid] and b"INVALID_ARGUMENTS" in out.writes[cid]


def test_other_numeric_fields_stay_strict() -> None:
    hub = ServerHub(JobServer())
    cid = hub.open()
    hub.receive(cid, encode_packet(REQ, PacketType.SUBMIT_JOB_EPOCH,
                                   (b"f", b"u", struct.pack(">I", 5000), b"data")))
    out = hub.flush()
    # Refused: the ERROR, then the connection is shut (and closed once drained).
    assert out.shut == [cid] and b"INVALID_ARGUMENTS" in out.writes[cid]


@pytest.mark.parametrize("kind", ["gearmand", "asyncio", "trio"])
def test_servers_accept_the_npm_clients_can_do_timeout(
        kind: str, raw: Callable[..., Any], handles: Any, fresh: Callable[[str], str],
        gearmand: Any, our_server_factory: Callable[..., Any]) -> None:
    server = gearmand if kind == "gearmand" else our_server_factory(loop=kind)
    fn = fresh("timed").encode()
    worker = raw(server.address, "npm worker", handles)
    worker.send("CAN_DO_TIMEOUT", fn, struct.pack(">I", 5000))
    assert worker.sync() == []  # ECHO answered: no ERROR, not closed
    admin = raw(server.address, "admin", handles)
    assert fn in admin.admin("workers")
    if kind != "gearmand":
        log = server.log.read_text()
        assert "WARNING gearman_proto.server connection" in log
        assert "CAN_DO_TIMEOUT argument 'timeout' is not decimal (b'\\x00\\x00\\x13\\x88'): " \
            "read as 0, as gearmand does" in log
