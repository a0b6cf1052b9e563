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
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _support import (
    HERE,
    Raw,
    ServerProcess,
    packet,
    status_of,
    wait_for,
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


@pytest.mark.feature("reliability.keepalive")
def test_keepalive_timings_are_set_on_the_socket() -> None:
    with socket.socket() as s:
        apply_keepalive(s, KeepAlive(idle=11, interval=4, count=3))
        assert keepalive_of(s) == (1, 11, 4, 3)
        # Unacknowledged data gets the same bound as silence: 11 + 4 * 3 s.
        assert s.getsockopt(TCP, socket.TCP_USER_TIMEOUT) == 23_000
    with socket.socket() as s:
        default = keepalive_of(s)[1:]
        apply_keepalive(s, True)
        assert keepalive_of(s) == (1, *default)
        assert s.getsockopt(TCP, socket.TCP_USER_TIMEOUT) == 0  # the system's
    with socket.socket() as s:
        apply_keepalive(s, False)
        assert keepalive_of(s)[0] == 0
    with pytest.raises(ValueError):
        KeepAlive(idle=0)


@pytest.mark.feature("reliability.keepalive")
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


def _settled_timers(port: int, side: str, settled: Callable[[list[float]], bool]
                    ) -> list[float]:
    """The keepalive timers once no socket shows another timer instead.

    The kernel lists one timer per socket: while a segment is unacknowledged
    it shows the retransmission timer, so read again for up to two seconds.
    """
    deadline = time.monotonic() + 2.0
    while True:
        timers = _keepalive_timers(port, side)
        if settled(timers) or time.monotonic() > deadline:
            return timers
        time.sleep(0.02)


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.feature("reliability.keepalive")
def test_server_keepalive_flags_reach_the_kernel(
        our_server_factory: Callable[..., ServerProcess], loop: str) -> None:
    server = our_server_factory(loop=loop, extra=(
        "--keepalive-idle", "7", "--keepalive-interval", "3", "--keepalive-count", "2"))
    plain = Raw(server.address)
    # The client's idle time is far from the server's 7 s, so a timer read a few
    # seconds late on a loaded machine still tells the two apart.
    client = sync.Client([server.address], keepalive=KeepAlive(idle=60, interval=2, count=2))
    try:
        assert plain.echo_works()
        assert client.echo(b"x") == b"x"
        # Server side: every accepted connection counts down from 7 s.
        timers = _settled_timers(server.port, "local",
                                 lambda ts: len(ts) == 2 and all(0 < t <= 7 for t in ts))
        assert len(timers) == 2 and all(0 < t <= 7 for t in timers), timers
        # Client side: only the client that asked for it, from 60 s.
        timers = _settled_timers(server.port, "remote",
                                 lambda ts: len(ts) == 2 and sorted(ts)[0] == -1.0)
        assert sorted(timers)[0] == -1.0 and 7 < sorted(timers)[1] <= 60, timers
    finally:
        client.close()
        plain.close()


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.feature("reliability.keepalive")
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


# -- a worker whose network dies under it ----------------------------------------------------

_CLIENT = """
import sys, time
from gearman_proto.adapters.sync import Client
with Client([("::1", int(sys.argv[1]))], result_timeout=60) as client:
    job = client.submit("held", b"payload")
    print("created", flush=True)
    print("result", job.wait().decode(), time.monotonic(), flush=True)
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class _Namespaces:
    """Two network namespaces joined by a veth pair, addressed link-local (fe80::a, fe80::b).

    Nothing in them is reachable from outside: the server and its peers talk
    over the pair, which the test can cut from one side.
    """

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}{int(time.monotonic() * 1000) % 1000}"
        self.a, self.b = f"gpa{tag}", f"gpb{tag}"
        self.va, self.vb = f"gva{tag}", f"gvb{tag}"
        _ip("netns", "add", self.a)
        try:
            _ip("netns", "add", self.b)
            _ip("link", "add", self.va, "netns", self.a, "type", "veth", "peer", "name",
                self.vb, "netns", self.b)
            for ns, dev, addr in ((self.a, self.va, "fe80::a/64"), (self.b, self.vb,
                                                                    "fe80::b/64")):
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", addr, "dev", dev, "nodad")
                _ip("-n", ns, "link", "set", dev, "up")
        except BaseException:
            self.remove()
            raise

    def run(self, ns: str, *cmd: str, **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd],  # type: ignore[call-overload]
                                stdin=subprocess.DEVNULL, **kw)

    def remove(self) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def namespaces() -> Iterator[_Namespaces]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make network namespaces")
    try:
        spaces = _Namespaces()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make network namespaces here: {exc.stderr!r}")
    yield spaces
    spaces.remove()


@pytest.mark.parametrize("keepalive", [True, False], ids=["keepalive", "no-keepalive"])
@pytest.mark.feature("reliability.half-dead")
def test_half_dead_worker_is_dropped_by_keepalive_and_its_job_runs_again(
        namespaces: _Namespaces, tmp_path: Path, keepalive: bool) -> None:
    """The worker's network goes down while it holds a job (its process lives on,
    no FIN, no RST).  With keepalive (idle 1 s, 2 probes 1 s apart) the server
    drops it within seconds and another worker runs the job; without, the
    job stays with the dead worker."""
    port = 4730
    log = tmp_path / "server.log"
    runs = tmp_path / "runs.log"
    flags = ["--keepalive-idle", "1", "--keepalive-interval", "1", "--keepalive-count", "2"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(namespaces.run(
            namespaces.a, sys.executable, "-m", "gearman_proto.adapters.cli", "server",
            "--listen", "::", "--port", str(port), "--log-file", str(log), "--verbose", "INFO",
            *(flags if keepalive else []), stderr=subprocess.DEVNULL))
        wait_for(lambda: log.exists() and "listening" in log.read_text(), timeout=20,
                 what="the server in its namespace")
        procs.append(namespaces.run(
            namespaces.b, sys.executable, str(HERE / "_worker.py"), f"fe80::a%{namespaces.vb}",
            str(port), "held", str(runs), "--hold", "3600", stderr=subprocess.DEVNULL))
        client = namespaces.run(namespaces.a, sys.executable, "-c", _CLIENT, str(port),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(client)
        assert client.stdout is not None
        assert client.stdout.readline() == b"created\n"
        wait_for(lambda: runs.exists() and "start" in runs.read_text(), timeout=20,
                 what="the doomed worker to hold the job")
        _ip("-n", namespaces.b, "link", "set", namespaces.vb, "down")  # half-dead now
        cut = time.monotonic()
        procs.append(namespaces.run(
            namespaces.a, sys.executable, str(HERE / "_worker.py"), "::1", str(port), "held",
            str(runs), stderr=subprocess.DEVNULL))
        # Without keepalive the job would stay with the dead worker for good:
        # any bound far above the 3 s the keepalive timings give tells the two apart.
        ready, _, _ = select.select([client.stdout], [], [], 30 if keepalive else 6)
        if keepalive:
            assert ready, "the job did not run again within 30 s"
            line = client.stdout.readline().split()
            assert line[:2] == [b"result", b"done:payload"], line
            recovered = time.monotonic() - cut
            starts = [r for r in runs.read_text().splitlines() if r.startswith("start")]
            assert len(starts) == 2 and starts[0].split()[2] != starts[1].split()[2]
            print(f"FIGURES half_dead_worker_dropped_and_job_rerun_after={recovered:.1f}s")
        else:
            assert not ready, "without keepalive the job should still be stuck"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
