"""``submit``, ``work``, ``admin``, ``job-status`` with a ``gearman``/``gearadmin`` user's habits.

Where the behaviour should match, the real ``gearman`` and ``gearadmin`` run
the same command line against the same gearmand, and the outputs are compared.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
from typing import TYPE_CHECKING, Any

import pytest
from clitools import BOUND, CLI, Factory, at, eventually, gp, name, peer, status, working
from gearman_proto.adapters.sync import AdminClient, Client

from gearman_proto.events import WorkData

if TYPE_CHECKING:
    from conftest import ServerProcess


def echo(job: Any) -> bytes:
    return bytes(job.data)


def gearman(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([peer("gearman"), *args], input=input, capture_output=True,
                          timeout=BOUND)


# -- submit -----------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [
    [], ["-n"], ["-N"], ["-P"], ["-P", "-n"], ["-P", "-N"], ["-s"], ["-s", "data", "words"],
    ["-f", "{f}2"],  # a second function: each gets the workload, in turn
    ["-P", "-f", "{f}2"],
], ids=lambda flags: " ".join(flags) or "plain")
def test_submit_prints_what_gearman_prints(gearmand: ServerProcess, flags: list[str]) -> None:
    f = name("echo")
    flags = [a.format(f=f) for a in flags]
    lines = b"first line\nsecond line\n"
    with working(gearmand.address, f, echo), working(gearmand.address, f + "2", echo):
        theirs = gearman(*at(gearmand), "-f", f, *flags, input=lines)
        ours = gp("submit", *at(gearmand), "-f", f, *flags, input=lines)
    assert (ours.returncode, ours.stderr, theirs.returncode) == (0, b"", 0)
    if f + "2" in flags:  # gearman runs the two at once: either may print first
        assert sorted(ours.stdout.splitlines()) == sorted(theirs.stdout.splitlines())
    else:
        assert ours.stdout == theirs.stdout


def test_submit_s_does_not_read_standard_input(gearmand: ServerProcess) -> None:
    """-s: the workload is empty; standard input (a pipe nobody writes or closes) is
    left alone, so the command does not wait on it."""
    f = name("no-input")
    with working(gearmand.address, f, lambda job: b"<" + bytes(job.data) + b">"):
        proc = subprocess.Popen([*CLI, "submit", *at(gearmand), "-s", "-f", f],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            out, _ = proc.communicate(timeout=BOUND)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
    assert (proc.returncode, out) == (0, b"<>")


@pytest.mark.parametrize("background", [False, True])
def test_submit_v_says_task_created_as_gearman(gearmand: ServerProcess,
                                               background: bool) -> None:
    f = name("verbose")
    bg = ["-b"] if background else []
    with working(gearmand.address, f, echo):
        theirs = gearman(*at(gearmand), "-v", *bg, "-f", f, "hello")
        ours = gp("submit", *at(gearmand), "-v", *bg, "-f", f, "hello")
    created = rb"Task created: H:[^\n]+:\d+\n"
    assert re.fullmatch(created if background else created + b"hello", ours.stdout)
    # gearman's line is buffered until exit, so into a pipe it comes after the result.
    assert re.fullmatch(created if background else b"hello" + created, theirs.stdout)


def test_submit_t_times_out_as_gearman_t(our_server: ServerProcess,
                                         gearmand: ServerProcess) -> None:
    """No worker for the function: ``-t 1000`` gives up.  gearman says "timeout reached"
    on standard error (and exits 0, even then); ours says so and exits 1."""
    f = name("nobody-works")
    theirs = gearman(*at(gearmand), "-t", "1000", "-f", f, "x")
    assert b"timeout reached" in theirs.stderr
    for server in (our_server, gearmand):
        run = gp("submit", *at(server), "-t", "1000", "-f", f, "x")
        assert run.returncode == 1
        assert run.stderr == b"gearman-proto submit: timed out after 1000 ms (-t 1000)\n"
        assert run.stdout == b""


def test_submit_t_bounds_a_job_that_streams_then_stalls(our_server: ServerProcess) -> None:
    """The bound covers the whole wait, updates included: a job that sends WORK_DATA and
    then never ends is given up after -t as well."""
    f = name("stalls")
    release = threading.Event()

    def stall(job: Any) -> bytes:
        job.send_data(b"partial\n")
        release.wait(BOUND)
        return b"late"
    with working(our_server.address, f, stall):
        run = gp("submit", *at(our_server), "-t", "1000", "-f", f, "x")
        release.set()
    assert (run.returncode, run.stdout) == (1, b"partial\n")
    assert run.stderr == b"gearman-proto submit: timed out after 1000 ms (-t 1000)\n"


# -- work ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "expected"), [
    ("-n", [b"one\n", b"two\n", b"three"]), ("-N", [b"one", b"two", b"three"])])
def test_work_n_sends_each_output_line_as_work_data(our_server: ServerProcess, flag: str,
                                                    expected: list[bytes]) -> None:
    f = name("lines")
    worker = subprocess.Popen([*CLI, "work", *at(our_server), flag, "-f", f, "-c", "1", "--",
                               "cat"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        eventually(lambda: status(our_server, f)[2] == 1, "the worker")
        with Client(our_server.address) as client:
            job = client.submit(f, b"one\ntwo\nthree")
            data = [u.data for u in job.updates() if isinstance(u, WorkData)]
            assert job.wait(BOUND) == b""
    finally:
        worker.communicate(timeout=BOUND)
    assert data == expected
    assert worker.returncode == 0


# -- job-status ---------------------------------------------------------------------------


def test_job_status_by_handle_and_by_unique_id(our_server: ServerProcess) -> None:
    f = name("status")
    run = gp("submit", *at(our_server), "-v", "-b", "-u", "my-key", "-f", f, "x")
    handle = run.stdout.decode().removeprefix("Task created: ").strip()
    assert gp("job-status", *at(our_server), handle).stdout == f"{handle}\tqueued\n".encode()
    assert gp("job-status", *at(our_server), "-u", "my-key").stdout == \
        b"my-key\tqueued\t0 waiting\n"

    taken, release = threading.Event(), threading.Event()

    def half(job: Any) -> bytes:
        job.send_status(1, 2)
        taken.set()
        release.wait(BOUND)
        return b""
    with working(our_server.address, f, half):
        assert taken.wait(BOUND)
        eventually(lambda: gp("job-status", *at(our_server), handle).stdout
                   == f"{handle}\trunning\t1/2\n".encode(), "the status")
        run = gp("job-status", *at(our_server), "--json", handle)
        release.set()
        # Inside the block: leaving it stops the worker at once, which would hand a
        # job still finishing back to the server.
        eventually(lambda: gp("job-status", *at(our_server), handle).returncode == 1,
                   "the job to end")
    assert json.loads(run.stdout) == {"handle": handle, "known": True, "running": True,
                                      "numerator": 1, "denominator": 2}
    run = gp("job-status", *at(our_server), handle, "H:nowhere:1")
    assert (run.returncode, run.stdout) == (1, f"{handle}\tunknown\nH:nowhere:1\tunknown\n"
                                               .encode())


# -- admin --------------------------------------------------------------------------------


def without_own_line(output: bytes) -> bytes:
    """``workers`` lists the asking connection too, under its own fd: leave it out."""
    return b"\n".join(line for line in output.split(b"\n")
                      if not (line.endswith(b" - :") and line.count(b" ") == 3))


def test_admin_several_commands_and_gearadmins_flags(our_server_factory: Factory) -> None:
    gearadmin = peer("gearadmin")
    server = our_server_factory()
    f = name("several")
    with Client(server.address) as client:
        client.submit(f, "x", background=True)
    w = name("w")
    with working(server.address, w, echo):
        eventually(lambda: status(server, f)[0] == 1, "the job")
        # Its CAN_DO, or gearadmin's view and ours differ by the worker's line.
        eventually(lambda: status(server, w)[2] == 1, "the worker")
        real = subprocess.run([gearadmin, *at(server), "--status"], capture_output=True,
                              timeout=BOUND).stdout
        real += subprocess.run([gearadmin, *at(server), "--workers"], capture_output=True,
                               timeout=BOUND).stdout
        for words in (["status", "workers"], ["--status", "--workers"],
                      ["status", "-p", str(server.port), "workers"]):
            run = gp("admin", "-h", server.host, "-p", str(server.port), *words)
            assert run.returncode == 0, run.stderr
            assert without_own_line(run.stdout) == without_own_line(real), words
    # Commands with arguments, in both spellings, one after another.
    g = name("made")
    run = gp("admin", *at(server), "create-function", g, "--drop-function", g, "getpid")
    assert run.stdout == f"OK\nOK\n{server.pid}\n".encode()
    run = gp("admin", *at(server), "stauts")
    assert run.returncode == 2
    assert run.stderr.startswith(b"gearman-proto admin: unknown admin command 'stauts'")


def test_admin_json_for_every_command(our_server_factory: Factory) -> None:
    server = our_server_factory(extra=("--allow-shutdown",))
    f = name("json")
    with Client(server.address) as client:
        client.submit(f, "x", background=True, unique="u1")
    words = ["status", "priority-status", "workers", "version", "verbose", "getpid",
             "show-jobs", "show-unique-jobs", "create-function", f + "x", "maxqueue", f, "5",
             "drop-function", f + "x"]
    run = gp("admin", *at(server), "--json", *words)
    assert run.returncode == 0, run.stderr
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    by = {a["command"]: a["answer"] for a in answers}
    assert [a["command"] for a in answers] == [w for w in words if not w.startswith(f)
                                               and w != "5"]
    with AdminClient(server.address) as admin:
        assert by["status"] == [{"function": r.function.decode(), "total": r.total,
                                 "running": r.running,
                                 "available_workers": r.available_workers}
                                for r in admin.status()]
        jobs = admin.show_jobs()
    assert {"function": f, "high": 0, "normal": 1, "low": 0, "available_workers": 0} in \
        by["priority-status"]
    assert by["show-jobs"] == [{"handle": jobs[0].handle.decode(), "retries": 0,
                                "ignore": False, "queued": True}]
    assert by["show-unique-jobs"] == ["u1"]
    assert by["getpid"] == {"pid": server.pid}
    assert by["verbose"] == {"verbose": "INFO"}
    assert by["version"] == {"version": __import__("gearman_proto").SERVER_VERSION}
    assert by["maxqueue"] == by["create-function"] == {"ok": True}
    assert any(w["functions"] == [] for w in by["workers"])  # this very connection
    run = gp("admin", *at(server), "--json", "shutdown")
    assert json.loads(run.stdout) == {"command": "shutdown", "args": [], "answer": {"ok": True}}


def test_admin_shutdown_says_why_it_is_refused(our_server: ServerProcess,
                                               gearmand: ServerProcess) -> None:
    for server in (our_server, gearmand):  # gearmand 1.1.20 has no shutdown either
        run = gp("admin", *at(server), "shutdown")
        assert run.returncode == 1
        assert run.stderr == (b"Error: UNKNOWN_COMMAND (the server does not take `shutdown` "
                              b"(gearmand removed it in 1.1.15; gearman-proto server takes it "
                              b"when started with --allow-shutdown))\n")
    run = gp("admin", *at(our_server), "--json", "shutdown")
    assert json.loads(run.stdout)["error"] == "UNKNOWN_COMMAND"


def test_submit_t_bounds_a_server_that_never_answers() -> None:
    """A server that takes the connection and says nothing (a listening socket nobody
    reads): -t still ends the wait for JOB_CREATED."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = str(silent.getsockname()[1])
        run = gp("submit", "-h", "127.0.0.1", "-p", port, "-t", "1000", "-f", "f", "x")
    assert (run.returncode, run.stdout) == (1, b"")
    assert run.stderr == b"gearman-proto submit: timed out after 1000 ms (-t 1000)\n"


def test_work_and_submit_i_write_a_pid_file_as_gearman_i(our_server: ServerProcess,
                                                         tmp_path: Any) -> None:
    f = name("pid")
    pid_file = tmp_path / "worker.pid"
    proc = subprocess.Popen([*CLI, "work", *at(our_server), "-f", f, "-i", str(pid_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        eventually(lambda: pid_file.exists() and pid_file.read_text().strip(),
                   "the worker's pid file")
        assert pid_file.read_text() == f"{proc.pid}\n"
        done = gp("submit", *at(our_server), "-f", f, "-s", "hello")
        assert (done.returncode, done.stdout) == (0, b"hello")
    finally:
        proc.terminate()
        proc.communicate(timeout=BOUND)
    assert proc.returncode == 0
    assert not pid_file.exists()  # removed on exit, as gearman does
    bad = gp("submit", *at(our_server), "-f", f, "-s", "-i", "/nonexistent-dir/x.pid", "x")
    assert bad.returncode == 1
    assert bad.stderr == (b"gearman-proto submit: -i/--pid-file /nonexistent-dir/x.pid: "
                          b"cannot write it (No such file or directory)\n")
