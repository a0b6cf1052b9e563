"""Half-dead and silent peers: TCP keepalive and the idle-connection timeout, end to end.

The server runs as a real process started with the command-line flags
(``--idle-timeout``, ``--keepalive-idle``/``-interval``/``-count``); what the
flags do to its sockets is read back from the kernel (``/proc/net/tcp`` and
``getsockopt``), and what the timeout does is watched from raw connections.
A peer whose network dies under it is simulated in two network namespaces
joined by a veth pair (``test_half_dead_worker_...``); that test needs root and
is skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _support import (
    Raw,
    ServerProcess,
    packet,
    status_of,
)
from gearman_proto.adapters import sync
from gearman_proto.adapters._common import KeepAlive, apply_keepalive
from gearman_proto.adapters.asyncio import Server

from gearman_proto.packets import RES, Packet, PacketType

TCP = socket.IPPROTO_TCP


def keepalive_of(sock: socket.socket) -> tuple[int, int, int, int]:
    """(SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) as the kernel has them."""
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(TCP, socket.TCP_KEEPCNT))


def test_keepalive_timings_are_set_on_the_socket() -> None:
    with socket.socket() as s:
        apply_keepalive(s, KeepAlive(idle=11, interval=4, count=3))
        assert keepalive_of(s) == (1, 11, 4, 3)
    with socket.socket() as s:
        default = keepalive_of(s)[1:]
        apply_keepalive(s, True)
        assert keepalive_of(s) == (1, *default)
    with socket.socket() as s:
        apply_keepalive(s, False)
        assert keepalive_of(s)[0] == 0
    with pytest.raises(ValueError):
        KeepAlive(idle=0)


def test_asyncio_server_applies_keepalive_timings_to_accepted_connections() -> None:
    async def main() -> tuple[int, int, int, int]:
        async with Server("127.0.0.1", 0, keepalive=KeepAlive(idle=13, interval=5, count=4)
                          ) as server:
            _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            for _ in range(100):
                if server.peers:
                    break
                await asyncio.sleep(0.01)
            (peer,) = server.peers.values()
            assert peer.transport is not None
            result = keepalive_of(peer.transport.get_extra_info("socket"))
            writer.close()
            return result
    assert asyncio.run(main()) == (1, 13, 5, 4)


def _keepalive_timers(port: int, side: str) -> list[float]:
    """Seconds left on the keepalive timer of each established socket whose local
    (``side="local"``) or remote (``"remote"``) port is ``port``, from /proc/net/tcp."""
    timers = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, timer = fields[1], fields[2], fields[3], fields[5]
        ours = local if side == "local" else remote
        if state != "01" or int(ours.split(":")[1], 16) != port:  # 01: ESTABLISHED
            continue
        kind, when = timer.split(":")
        # Timer kind 2 is keepalive; its time is in clock ticks (USER_HZ).
        timers.append(int(when, 16) / os.sysconf("SC_CLK_TCK") if kind == "02" else -1.0)
    return timers


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_server_keepalive_flags_reach_the_kernel(
        our_server_factory: Callable[..., ServerProcess], loop: str) -> None:
    server = our_server_factory(loop=loop, extra=(
        "--keepalive-idle", "7", "--keepalive-interval", "3", "--keepalive-count", "2"))
    plain = Raw(server.address)
    client = sync.Client([server.address], keepalive=KeepAlive(idle=9, interval=2, count=2))
    try:
        assert plain.echo_works()
        assert client.echo(b"x") == b"x"
        # Server side: every accepted connection counts down from 7 s.
        timers = _keepalive_timers(server.port, "local")
        assert len(timers) == 2 and all(0 < t <= 7 for t in timers), timers
        # Client side: only the client that asked for it, from 9 s.
        timers = _keepalive_timers(server.port, "remote")
        assert sorted(timers)[0] == -1.0 and 7 < sorted(timers)[1] <= 9, timers
    finally:
        client.close()
        plain.close()


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_idle_timeout_closes_silent_connections_and_spares_busy_ones(
        our_server_factory: Callable[..., ServerProcess], loop: str) -> None:
    server = our_server_factory(loop=loop, extra=("--idle-timeout", "1"))
    silent, chatty, sleeper, worker, client = (Raw(server.address) for _ in range(5))
    sleeper.send(packet(PacketType.CAN_DO, b"other") + packet(PacketType.PRE_SLEEP))
    worker.send(packet(PacketType.CAN_DO, b"slow"))
    client.send(packet(PacketType.SUBMIT_JOB, b"slow", b"", b"payload"))
    created = client.read()
    assert isinstance(created, Packet) and created.type == PacketType.JOB_CREATED
    handle = created.args[0]
    worker.send(packet(PacketType.GRAB_JOB))
    assert worker.read() == Packet(RES, PacketType.JOB_ASSIGN, (handle, b"slow", b"payload"))
    start = time.monotonic()
    closed_after = None
    # 2.5 s in all: the chatty one talks, the others are silent but busy.
    while time.monotonic() - start < 2.5:
        assert chatty.echo_works()
        if closed_after is None and silent.is_closed_by_peer(timeout=0.3):
            closed_after = time.monotonic() - start
    assert closed_after is not None and 0.5 < closed_after < 2.5, closed_after
    worker.send(packet(PacketType.WORK_COMPLETE, handle, b"result"))
    assert client.read() == Packet(RES, PacketType.WORK_COMPLETE, (handle, b"result"))
    # No longer busy: the client goes a timeout after it was last spared.
    assert client.is_closed_by_peer(timeout=5)
    assert worker.is_closed_by_peer(timeout=5)
    assert sleeper.echo_works()
    chatty.close()
    rows = status_of(server.address)
    assert rows[b"other"].available_workers == 1  # the sleeping worker is still there
