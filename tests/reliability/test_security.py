"""Security: loopback by default, TLS with client certificates required, admin changes restricted.

The server runs as ``gearman-proto server`` in a child process with the flags
a deployment would use; certificates come from a throw-away CA (trustme).
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from _support import Raw, ServerProcess, free_port_for, packet, wait_for
from gearman_proto.adapters import sync
from gearman_proto.adapters._common import ConnectionLost, GearmanError, NoServerAvailable
from gearman_proto.adapters.asyncio import Client as AsyncClient
from gearman_proto.adapters.asyncio import Worker as AsyncWorker
from gearman_proto.adapters.cli import _parser

from gearman_proto.packets import PacketType

trustme = pytest.importorskip("trustme")

DENIED = b"ERR PERMISSION_DENIED Command+not+allowed+from+this+peer"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A CA, the server's certificate for 127.0.0.1, a client certificate, and a stranger's."""
    ca, other_ca = trustme.CA(), trustme.CA()
    d = tmp_path_factory.mktemp("pki")
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return {"ca": ca, "other_ca": other_ca, "dir": d,
            "client": ca.issue_cert("worker-1@example"),
            "stranger": other_ca.issue_cert("intruder@example")}


def client_context(pki: dict[str, object], cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    pki["ca"].configure_trust(ctx)  # type: ignore[attr-defined]
    if cert is not None:
        pki[cert].configure_cert(ctx)  # type: ignore[attr-defined]
    return ctx


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_tls_with_client_certificates_required(
        our_server_factory: Callable[..., ServerProcess], pki: dict[str, object],
        loop: str) -> None:
    d: Path = pki["dir"]  # type: ignore[assignment]
    server = our_server_factory(loop=loop, extra=(
        "--ssl-certificate", str(d / "server.pem"), "--ssl-ca-file", str(d / "ca.pem")))
    good = client_context(pki, "client")

    # The blocking adapter's worker and client, both with a certificate.
    worker = sync.Worker([server.address], ssl=good, reconnect_delay=0.05)
    worker.register("secret", lambda job: job.data[::-1])
    import threading
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()
    try:
        with sync.Client([server.address], ssl=good) as client:
            assert client.do("secret", b"tls" * 1000) == b"slt" * 1000
        # The asyncio adapter's client and worker too.
        async def both() -> bytes | None:
            aworker = AsyncWorker([server.address], ssl=good)
            aworker.register("asecret", lambda job: job.data.upper())
            task = asyncio.create_task(aworker.work())
            try:
                async with AsyncClient([server.address], ssl=good,
                                       result_timeout=20) as aclient:
                    return await aclient.do("asecret", b"hello")
            finally:
                aworker.stop()
                await asyncio.wait_for(task, 10)
        assert asyncio.run(both()) == b"HELLO"

        # No client certificate, or one from another CA: no job goes through.
        for cert in (None, "stranger"):
            with pytest.raises((GearmanError, OSError)):
                with sync.Client([server.address], ssl=client_context(pki, cert),
                                 connect_timeout=5, created_timeout=5,
                                 result_timeout=5) as refused:
                    refused.do("secret", b"x")
        # Plain TCP to the TLS port: nothing but a failed handshake.
        raw = Raw(server.address)
        raw.send(b"status\r\n")
        assert raw.is_closed_by_peer(timeout=10) or not raw.decoder.buffered
        raw.close()
    finally:
        worker.stop()
        thread.join(10)


def test_refused_certificate_errors_are_the_adapters_errors() -> None:
    assert issubclass(ConnectionLost, GearmanError)
    assert issubclass(NoServerAvailable, GearmanError)


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_admin_changes_none_refuses_every_state_change_on_the_running_server(
        our_server_factory: Callable[..., ServerProcess], loop: str) -> None:
    server = our_server_factory(loop=loop, extra=("--admin-changes", "none",
                                                  "--allow-shutdown"))
    raw = Raw(server.address)
    raw.send(packet(PacketType.SUBMIT_JOB_BG, b"queue", b"", b"j"))
    assert raw.read() is not None
    for line in (b"create function f", b"drop function queue", b"maxqueue queue 1",
                 b"cancel job H:x:1", b"shutdown", b"shutdown graceful"):
        assert raw.admin(line) == [DENIED], line
    assert raw.admin(b"status")[0].startswith(b"queue\t1\t")  # nothing changed, still up
    assert raw.admin(b"version")[0].startswith(b"OK")
    raw.close()
    assert server.proc is not None and server.proc.poll() is None


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_admin_changes_loopback_lets_loopback_peers_change_and_shut_down(
        our_server_factory: Callable[..., ServerProcess], loop: str) -> None:
    """The refusal for other addresses is tested in the core (test_admin_changes.py):
    no non-loopback address may be used here."""
    server = our_server_factory(loop=loop, extra=("--admin-changes", "loopback",
                                                  "--allow-shutdown"))
    raw = Raw(server.address)
    assert raw.admin(b"create function f") == [b"OK"]
    assert raw.admin(b"maxqueue f 3") == [b"OK"]
    workers = raw.admin(b"workers")
    assert any(line.split()[1:2] == [b"127.0.0.1"] for line in workers[:-1]), workers
    assert raw.admin(b"shutdown") == [b"OK"]
    assert server.proc is not None
    server.proc.wait(15)  # the server really stops


def test_the_server_binds_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    assert _parser().parse_args(["server"]).listen == "127.0.0.1"
    port = free_port_for()
    proc = subprocess.Popen([sys.executable, "-m", "gearman_proto.adapters.cli", "server",
                             "--port", str(port)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening() -> list[str]:
            rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
            return [r.split()[1] for r in rows
                    if r.split()[3] == "0A" and int(r.split()[1].split(":")[1], 16) == port]
        wait_for(lambda: bool(listening()), timeout=15, what="the server to listen")
        assert listening() == [f"0100007F:{port:04X}"]  # 127.0.0.1, and nothing else
        v6 = Path("/proc/net/tcp6")
        if v6.exists():
            assert not [r for r in v6.read_text().splitlines()[1:]
                        if r.split()[3] == "0A" and int(r.split()[1].split(":")[1], 16) == port]
    finally:
        proc.terminate()
        proc.wait(10)
