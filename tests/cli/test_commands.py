"""The ``gearman-proto`` command, run as a subprocess: server, submit, work and admin.

Servers are ours, as child processes; where a test needs a handler it
controls (one that streams, holds or fails a job), the worker is the blocking
adapter in this process.  ``admin`` output is compared byte for byte with
what ``gearadmin`` prints for the same server in the same state.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from clitools import (
    BOUND,
    CLI,
    Factory,
    at,
    eventually,
    free_port,
    gp,
    name,
    reverse,
    serving,
    status,
    working,
)
from gearman_proto.adapters.sync import AdminClient, Client

import gearman_proto
from gearman_proto.packets import REQ, RES, Decoder, PacketType, encode_packet

if TYPE_CHECKING:
    from conftest import ServerProcess

# -- the command itself -----------------------------------------------------------------


def test_console_script_help_and_version() -> None:
    script = shutil.which("gearman-proto", path=str(Path(sys.executable).parent)) \
        or shutil.which("gearman-proto")
    if script is None:
        pytest.skip("the gearman-proto console script is not installed")
    run = subprocess.run([script, "--version"], capture_output=True, timeout=BOUND)
    assert run.returncode == 0
    assert run.stdout.decode().strip() == f"gearman-proto {gearman_proto.__version__}"
    run = subprocess.run([script, "--help"], capture_output=True, timeout=BOUND)
    assert run.returncode == 0
    for command in (b"server", b"submit", b"work", b"admin"):
        assert command in run.stdout


@pytest.mark.parametrize("command", ["submit", "work", "admin"])
def test_dash_h_is_the_host_and_help_is_double_dash_help(command: str) -> None:
    run = gp(command, "--help")
    assert run.returncode == 0
    assert b"-h HOST, --host HOST" in run.stdout
    run = gp(command, "-h")  # -h wants a host, as in the gearman tool
    assert run.returncode == 2
    assert b"-h/--host: expected one argument" in run.stderr


# -- server ---------------------------------------------------------------------------------


def test_server_short_flags_ready_line_and_sigterm() -> None:
    port = free_port()
    with serving("-L", "127.0.0.1", "-p", str(port), port=port) as (proc, _):
        assert gp("admin", "-h", "127.0.0.1", "-p", str(port), "getpid").stdout == \
            f"{proc.pid}\n".encode()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=BOUND)
        assert proc.returncode == 0
        # Said once on standard error (which is also where the log goes without -l).
        assert err.count(b"listening on") == 1
        # --loop auto, the default: uvloop when it is installed.
        loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
        assert f"listening on 127.0.0.1:{port} ({loop}, queue memory)".encode() in err


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_server_that_cannot_start_says_why(loop: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run = gp("server", "-p", str(taken.getsockname()[1]), "--loop", loop)
        port = taken.getsockname()[1]
    assert run.returncode == 1
    assert run.stderr == (f"gearman-proto server: -L 127.0.0.1 -p {port}: cannot listen "
                          "(Address already in use); stop the other server there, or pick "
                          "another port with -p\n").encode()
    missing = tmp_path / "missing.pem"
    run = gp("server", "-p", "0", "--ssl-certificate", str(missing), "--loop", loop)
    assert (run.returncode, run.stderr) == (1, f"gearman-proto server: --ssl-certificate "
                                               f"{missing}: cannot read it (No such file or "
                                               "directory)\n".encode())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "trio"])
def test_server_loops(loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    f = name("loop")
    with serving("--loop", loop) as (proc, port), \
            working(("127.0.0.1", port), f, reverse):
        run = gp("submit", "-h", "127.0.0.1", "-p", str(port), "-f", f, "Hello world!")
        assert run.stdout == b"!dlrow olleH"
        proc.terminate()
        _, err = proc.communicate(timeout=BOUND)
        assert f"({loop}, queue memory)".encode() in err


def test_server_queue_sqlite_keeps_background_jobs_across_restarts(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    f = name("durable")
    port = free_port()
    with serving("--queue", f"sqlite:{db}", port=port):
        for data in ("one", "two", "three"):
            assert gp("submit", "-h", "127.0.0.1", "-p", str(port), "-f", f, "-b",
                      data).returncode == 0
    with serving("--queue", f"sqlite:{db}", port=port) as (_, port):
        assert status(("127.0.0.1", port), f) == (3, 0, 0)
        run = gp("work", "-h", "127.0.0.1", "-p", str(port), "-f", f, "-c", "3")
        assert run.returncode == 0
        assert sorted(run.stdout.split(b"o")) == sorted(b"onetwothree".split(b"o"))
    with serving("--queue", "memory", port=port) as (_, port):  # the default: nothing kept
        assert status(("127.0.0.1", port), f) == (0, 0, 0)
    run = gp("server", "--port", str(port), "--queue", "redis:x")
    assert run.returncode != 0
    assert b"unknown --queue" in run.stderr


def raw_worker(address: tuple[str, int], function: str) -> socket.socket:
    """A worker connection that registered ``function`` and said PRE_SLEEP."""
    sock = socket.create_connection(address, timeout=BOUND)
    sock.sendall(encode_packet(REQ, PacketType.CAN_DO, [function.encode()])
                 + encode_packet(REQ, PacketType.PRE_SLEEP, []))
    assert not woken(sock)  # the echo's answer: both were read, and there is no work yet
    return sock


def woken(sock: socket.socket) -> bool:
    """Whether a NOOP came before the answer to an ECHO sent now (the server answers in
    order, so a NOOP it already sent is read first)."""
    sock.sendall(encode_packet(REQ, PacketType.ECHO_REQ, [b"x"]))
    decoder = Decoder(RES)
    types = []
    while PacketType.ECHO_RES not in types:
        decoder.feed(sock.recv(4096))
        while (packet := decoder.next()) is not None:
            types.append(packet.type)  # type: ignore[union-attr]
    return PacketType.NOOP in types


@pytest.mark.parametrize(("wakeup", "expected"), [("0", 2), ("1", 1)])
def test_server_worker_wakeup(our_server_factory: Factory, wakeup: str, expected: int) -> None:
    f = name("wake")
    server = our_server_factory(extra=("--worker-wakeup", wakeup))
    sleepers = [raw_worker(server.address, f) for _ in range(2)]
    try:
        assert status(server, f)[2] == 2
        assert gp("submit", *at(server), "-f", f, "-b", "job").returncode == 0
        assert sum(woken(s) for s in sleepers) == expected
    finally:
        for s in sleepers:
            s.close()


def test_server_max_packet(our_server_factory: Factory) -> None:
    f = name("big")
    server = our_server_factory(extra=("--max-packet", "1024"))
    assert gp("submit", *at(server), "-f", f, "-b", "x" * 100).returncode == 0
    run = gp("submit", *at(server), "-f", f, "-b", "x" * 2000)
    assert run.returncode == 1
    assert run.stderr.startswith(b"gearman-proto: ")
    assert status(server, f)[0] == 1


def test_server_tls(our_server_factory: Factory, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    tls = ["--ssl-certificate", str(cert_file), "--ssl-key", str(cert_file)]
    f = name("tls")
    server = our_server_factory(extra=tuple(tls))
    client_tls = ["-S", "--ssl-ca-file", str(ca_file)]
    worker = subprocess.Popen([*CLI, "work", *at(server), *client_tls, "-f", f, "-c", "1",
                               "--", "rev"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run = gp("submit", *at(server), *client_tls, "-f", f, "over TLS")
    assert (run.returncode, run.stdout) == (0, b"SLT revo")
    assert worker.wait(BOUND) == 0
    assert gp("admin", *at(server), *client_tls, "getpid").stdout == f"{server.pid}\n".encode()
    assert gp("submit", *at(server), "-f", f, "plain TCP").returncode == 1
    assert gp("submit", *at(server), "-S", "-f", f, "unknown CA").returncode == 1

    # --ssl-ca-file: only clients with a certificate from that CA get in.
    strict = our_server_factory(extra=(*tls, "--ssl-ca-file", str(ca_file)))
    assert gp("admin", *at(strict), *client_tls, "getpid").returncode == 1  # no certificate
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ca.issue_cert("client@example.org").configure_cert(ctx)
    assert AdminClient(strict.address, ssl=ctx).getpid() == strict.pid


def test_server_verbose_and_log_file(our_server_factory: Factory) -> None:
    server = our_server_factory(extra=("--verbose", "debug"))
    assert gp("admin", *at(server), "verbose").stdout == b"DEBUG\n"
    if shutil.which("gearadmin"):
        assert subprocess.run(["gearadmin", *at(server), "--server-verbose"],
                              capture_output=True, timeout=BOUND).stdout == b"DEBUG\n"
    assert b" DEBUG " in server.log.read_bytes()  # the fixture passes --log-file


# -- submit -----------------------------------------------------------------------------------


def test_submit_data_from_arguments_or_stdin(our_server: ServerProcess) -> None:
    f = name("rev")
    with working(our_server.address, f, reverse):
        # A job per argument, as gearman.
        assert gp("submit", *at(our_server), "-f", f, "Hello", "world!").stdout == \
            b"olleH!dlrow"
        assert gp("submit", *at(our_server), "-f", f, input=b"from\nstdin").stdout == \
            b"nidts\nmorf"
        # -n: one job per line, the newline part of it (as gearman); -N strips it.
        lines = gp("submit", *at(our_server), "-f", f, "-n", input=b"ab\ncd\n")
        assert lines.stdout == b"\nba\ndc"
        lines = gp("submit", *at(our_server), "-f", f, "-N", input=b"ab\ncd\n")
        assert lines.stdout == b"badc"


def test_submit_background_priorities_and_unique(our_server_factory: Factory) -> None:
    f = name("bg")
    server = our_server_factory()
    for flags in (["-I"], ["-I"], [], ["-L"], ["-L"], ["-L"]):
        run = gp("submit", *at(server), "-f", f, "-b", *flags, "data")
        assert (run.returncode, run.stdout) == (0, b"")
    assert gp("admin", *at(server), "priority-status").stdout == f"{f}\t2\t1\t3\t0\n.\n".encode()
    for _ in range(2):  # the same unique id twice: one job
        assert gp("submit", *at(server), "-f", f, "-b", "-u", "my-key", "x").returncode == 0
    assert b"\nmy-key\n" in b"\n" + gp("admin", *at(server), "show-unique-jobs").stdout
    assert status(server, f)[0] == 7
    assert gp("submit", *at(server), "-f", f, "-I", "-L", "x").returncode == 2  # one or other


def test_submit_prints_work_data_as_it_arrives(our_server: ServerProcess) -> None:
    f = name("stream")
    release = threading.Event()

    def stream(job: Any) -> bytes:
        job.send_data(b"first part\n")
        release.wait(BOUND)
        job.send_warning(b"a warning\n")
        job.send_data(b"second part\n")
        return b"the end\n"
    with working(our_server.address, f, stream):
        proc = subprocess.Popen([*CLI, "submit", *at(our_server), "-f", f, "x"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"first part\n"  # while the job still runs
        release.set()
        out, err = proc.communicate(timeout=BOUND)
    assert out == b"second part\nthe end\n"
    assert err == b"a warning\n"
    assert proc.returncode == 0


def test_submit_reports_a_failed_job(our_server: ServerProcess) -> None:
    f = name("boom")

    def boom(job: Any) -> bytes:
        raise RuntimeError("it broke")
    with working(our_server.address, f, boom):
        run = gp("submit", *at(our_server), "-f", f, "x")
    assert run.returncode == 1
    assert b"it broke" in run.stderr


def test_submit_to_several_servers_fails_over(our_server: ServerProcess) -> None:
    f = name("failover")
    down = f"127.0.0.1:{free_port()}"
    with working(our_server.address, f, reverse):
        for _ in range(3):  # whichever server comes first in turn, the job gets done
            run = gp("submit", "-h", down, "-h", f"{our_server.host}:{our_server.port}",
                     "-f", f, "abc")
            assert (run.returncode, run.stdout) == (0, b"cba")


# -- work ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "expected"), [
    (["rev"], [b"olleh", b"dlrow"]),
    (["tr", "a-z", "A-Z"], [b"HELLO", b"WORLD"]),
    ([], [b"hello", b"world"]),  # no command: echo the workload
])
def test_work_runs_the_command_per_job(our_server: ServerProcess, command: list[str],
                                       expected: list[bytes]) -> None:
    if command and shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} not installed")
    f = name("work")
    args = [*CLI, "work", *at(our_server), "-f", f, "-c", "2"]
    if command:
        args += ["--", *command]
    worker = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with Client(our_server.address) as client:
        assert [client.do(f, "hello"), client.do(f, "world")] == expected
    out, err = worker.communicate(timeout=BOUND)  # -c 2: exits after two jobs
    assert worker.returncode == 0, err
    assert out == (b"helloworld" if not command else b"")


def test_work_command_failure_fails_the_job(our_server: ServerProcess) -> None:
    f = name("false")
    worker = subprocess.Popen([*CLI, "work", *at(our_server), "-f", f, "-c", "1", "--",
                               "false"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run = gp("submit", *at(our_server), "-f", f, "x")
    assert run.returncode == 1
    assert b"exited with status 1" in run.stderr
    assert worker.wait(BOUND) == 0


def test_work_takes_jobs_from_several_servers(our_server_factory: Factory) -> None:
    f = name("multi")
    a = our_server_factory(extra=("--job-handle-prefix", "H:a"))
    b = our_server_factory(extra=("--job-handle-prefix", "H:b"))
    with Client(a.address) as ca, Client(b.address) as cb:
        jobs = [ca.submit(f, "from a"), cb.submit(f, "from b")]
        worker = subprocess.run([*CLI, "work", "-h", f"127.0.0.1:{a.port}",
                                 "-h", f"127.0.0.1:{b.port}", "-f", f, "-c", "2"],
                                capture_output=True, timeout=BOUND)
        assert worker.returncode == 0
        assert [job.wait(BOUND) for job in jobs] == [b"from a", b"from b"]


# -- admin --------------------------------------------------------------------------------------


GEARADMIN = {"status": "--status", "priority-status": "--priority-status",
             "workers": "--workers", "show-jobs": "--show-jobs",
             "show-unique-jobs": "--show-unique-jobs", "getpid": "--getpid",
             "server-version": "--server-version", "server-verbose": "--server-verbose"}


def without_own_line(output: bytes) -> bytes:
    """``workers`` lists the asking connection too, under its own fd: leave it out."""
    return b"\n".join(line for line in output.split(b"\n")
                      if not (line.endswith(b" - :") and line.count(b" ") == 3))


def test_admin_prints_what_gearadmin_prints(our_server_factory: Factory) -> None:
    gearadmin = shutil.which("gearadmin")
    if gearadmin is None:
        if os.environ.get("CI"):
            pytest.fail("gearadmin not installed")
        pytest.skip("gearadmin not installed")
    server = our_server_factory()
    f, g = name("queued"), name("served")
    with Client(server.address) as client:
        for flags in ({"priority": 0}, {"priority": 2}, {"unique": "key"}):
            client.submit(f, "x", background=True, **flags)  # type: ignore[arg-type]
    with working(server.address, g, reverse, client_id="cli-test-worker"):
        eventually(lambda: status(server, g)[2] == 1, "the worker")
        for ours, theirs in GEARADMIN.items():
            mine = gp("admin", *at(server), ours)
            real = subprocess.run([gearadmin, *at(server), theirs], capture_output=True,
                                  timeout=BOUND)
            assert mine.returncode == 0, mine.stderr
            if ours == "workers":
                assert b"cli-test-worker : " + g.encode() in mine.stdout
                assert without_own_line(mine.stdout) == without_own_line(real.stdout)
            else:
                assert mine.stdout == real.stdout, ours

    # Commands that change state: the same words (gearadmin ends its error lines with
    # the \r of the reply; we do not), each tool on a function of its own.
    for ours, theirs in ((["create-function", "ours"], ["--create-function", "theirs"]),
                         (["drop-function", "ours"], ["--drop-function", "theirs"]),
                         (["drop-function", "nope"], ["--drop-function", "nope"]),
                         (["cancel-job", "H:none:1"], ["--cancel-job", "H:none:1"])):
        mine = gp("admin", *at(server), *ours)
        real = subprocess.run([gearadmin, *at(server), *theirs], capture_output=True,
                              timeout=BOUND)
        assert (mine.stdout, mine.stderr) == (real.stdout, real.stderr.replace(b"\r\n", b"\n"))
    assert gp("admin", *at(server), "cancel-job", "H:none:1").returncode == 1  # gearadmin: 0


def test_admin_commands_change_the_state(our_server_factory: Factory) -> None:
    f = name("adm")
    server = our_server_factory(extra=("--allow-shutdown",))
    assert gp("admin", *at(server), "create-function", f).stdout == b"OK\n"
    assert status(server, f) == (0, 0, 0)
    assert gp("admin", *at(server), "maxqueue", f, "1").stdout == b"OK\n"
    assert gp("submit", *at(server), "-f", f, "-b", "one").returncode == 0
    assert gp("submit", *at(server), "-f", f, "-b", "two").returncode == 1  # queue full
    handle = gp("admin", *at(server), "show-jobs").stdout.split(b"\t")[0].decode()
    assert gp("admin", *at(server), "cancel-job", handle).stdout == b"OK\n"
    assert gp("admin", *at(server), "drop-function", f).stdout == b"OK\n"
    assert gp("admin", *at(server), "version").stdout == \
        f"{gearman_proto.SERVER_VERSION}\n".encode()
    assert gp("admin", *at(server), "shutdown").stdout == b"OK\n"
    assert server.proc is not None
    assert server.proc.wait(BOUND) == 0
    run = gp("admin", *at(server), "status")
    assert run.returncode == 1
    assert run.stderr.startswith(b"gearman-proto: cannot connect")
