"""``JobServer(admin_changes=...)``: the state-changing admin commands, refused by peer.

The adapters and the command line only pass the option through, so its rules
are pinned down here, without sockets.  The answer to a refused command is
``ERR PERMISSION_DENIED`` in gearmand's ERR format (words joined by ``+``).
"""

from __future__ import annotations

import pytest

from gearman_proto.broker import JobServer, is_loopback
from gearman_proto.events import AdminCommand, AdminReply, SubmitJob

DENIED = b"ERR PERMISSION_DENIED Command+not+allowed+from+this+peer\r\n"
CHANGES = [b"cancel job H:x:1", b"create function f", b"drop function f", b"maxqueue f 3",
           b"maxqueue f", b"shutdown", b"shutdown graceful"]
READS = [b"status", b"workers", b"show jobs", b"show unique jobs", b"prioritystatus",
         b"version", b"getpid", b"verbose"]


def admin_reply(server: JobServer, conn: int, line: bytes) -> bytes:
    out = server.receive(conn, AdminCommand(line))
    assert out[-1][0] == conn and isinstance(out[-1][1], AdminReply)
    return out[-1][1].text


@pytest.mark.parametrize("address, loopback", [
    (b"127.0.0.1", True), (b"127.3.2.1", True), (b"::1", True), (b"::ffff:127.0.0.1", True),
    (b"fe80::1%lo", False), (b"10.0.0.1", False), (b"192.0.2.7", False), (b"::", False),
    (b"-", False), (b"/tmp/gearman.sock", False), (b"\xff", False), (b"", False)])
def test_which_addresses_are_loopback(address: bytes, loopback: bool) -> None:
    assert is_loopback(address) is loopback


@pytest.mark.parametrize("line", CHANGES)
def test_admin_changes_none_refuses_every_state_change_and_changes_nothing(line: bytes
                                                                           ) -> None:
    server = JobServer(admin_changes="none", allow_shutdown=True)
    server.connect(1, b"127.0.0.1")
    server.receive(1, SubmitJob(b"f", b"d", b"u", background=True))
    before = (server.status_rows(), server.jobs())
    assert admin_reply(server, 1, line) == DENIED
    assert (server.status_rows(), server.jobs()) == before
    assert server.shutdown_requested is None
    assert server.connection_ids == [1]  # the connection stays open


@pytest.mark.parametrize("line", READS)
def test_admin_changes_none_still_answers_the_read_only_commands(line: bytes) -> None:
    server = JobServer(admin_changes="none")
    server.connect(1, b"127.0.0.1")
    assert not admin_reply(server, 1, line).startswith(b"ERR")


def test_admin_changes_loopback_allows_loopback_peers_only() -> None:
    server = JobServer(admin_changes="loopback", allow_shutdown=True)
    for cid, address in ((1, b"127.0.0.1"), (2, b"::1"), (3, b"192.0.2.7"), (4, b"-")):
        server.connect(cid, address)
    assert admin_reply(server, 1, b"create function a") == b"OK\r\n"
    assert admin_reply(server, 2, b"maxqueue a 5") == b"OK\r\n"
    for cid in (3, 4):
        for line in CHANGES:
            assert admin_reply(server, cid, line) == DENIED
        assert admin_reply(server, cid, b"status").endswith(b".\n")
    assert admin_reply(server, 1, b"shutdown graceful") == b"OK\r\n"
    assert server.shutdown_requested == "graceful"


def test_shutdown_stays_unknown_without_allow_shutdown_whatever_admin_changes() -> None:
    server = JobServer(admin_changes="none")
    server.connect(1, b"127.0.0.1")
    assert admin_reply(server, 1, b"shutdown").startswith(b"ERR UNKNOWN_COMMAND")


def test_admin_changes_default_is_any_peer_as_gearmand() -> None:
    server = JobServer()
    server.connect(1, b"192.0.2.7")
    assert admin_reply(server, 1, b"create function a") == b"OK\r\n"
    with pytest.raises(ValueError):
        JobServer(admin_changes="some")  # type: ignore[arg-type]
