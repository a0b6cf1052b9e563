"""``gearman-proto server`` with a gearmand user's command lines, good and bad.

A bad flag or value is one line naming it, the cause and the fix (exit 2 for
usage, 1 for the rest, never a traceback); gearmand's flags mean what they mean
in gearmand 1.1.20, which runs beside ours here wherever the two should agree.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from clitools import (
    BOUND,
    CLI,
    Factory,
    at,
    eventually,
    free_port,
    gp,
    listening,
    lose_a_worker,
    name,
    peer,
    serving,
    status,
)

import gearman_proto

if TYPE_CHECKING:
    from conftest import ServerProcess


def one_line(run: subprocess.CompletedProcess[bytes]) -> str:
    """The command's standard error, asserted to be one line and no traceback."""
    err = run.stderr.decode()
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    return err.rstrip("\n")


@pytest.mark.parametrize(("args", "code", "says"), [
    (["-p", "99999"], 2, "argument -p/--port: 99999 is out of range: give 0..65535"),
    (["-p", "http"], 2, "argument -p/--port: 'http' is not a whole number"),
    (["-j", "-5"], 2, "argument -j/--job-retries: -5 is out of range: give 0 or more"),
    (["--worker-wakeup", "-1"], 2, "argument -w/--worker-wakeup: -1 is out of range"),
    (["--max-packet", "-1"], 2, "argument --max-packet: -1 is out of range"),
    (["--idle-timeout", "-3"], 2, "argument --idle-timeout: -3 is out of range"),
    (["--keepalive-idle", "0"], 2, "argument --keepalive-idle: 0 is out of range"),
    (["--queue", "redis:x"], 2, "unknown --queue 'redis:x' (memory, sqlite:PATH, "
     "postgresql://USER@HOST:PORT/DB or redis://HOST:PORT/N)"),
    (["-q", "libsqlite3"], 2, "-q libsqlite3 needs --libsqlite3-db FILE"),
    (["-q", "libdrizzle"], 2, "-q/--queue-type libdrizzle: not available here"),
    (["--verbose", "LOUD"], 2, "argument --verbose: invalid choice: 'LOUD'"),
    (["--verbose", "INFO", "-v"], 2, "give --verbose LEVEL or -v, not both"),
    (["-j", "2", "--max-requeues", "1"], 2, "give -j/--job-retries (gearmand's count of runs)"),
    # A TLS flag that cannot be honoured refuses to start (it used to serve plaintext).
    (["--ssl-key", "/nonexistent.pem"], 2, "--ssl-key needs --ssl-certificate FILE"),
    (["--ssl-ca-file", "/nonexistent.pem"], 2, "--ssl-ca-file needs --ssl-certificate FILE"),
    (["--ssl"], 2, "--ssl needs --ssl-certificate FILE"),
    (["--ssl-certificate", "/nonexistent.pem"], 1,
     "--ssl-certificate /nonexistent.pem: cannot read it (No such file or directory)"),
    (["--queue", "sqlite:/nonexistent-dir/q.db"], 1,
     "sqlite /nonexistent-dir/q.db: directory /nonexistent-dir does not exist"),
    (["-q", "libsqlite3", "--libsqlite3-db", "/nonexistent-dir/q.db"], 1,
     "sqlite /nonexistent-dir/q.db: directory /nonexistent-dir does not exist"),
    (["-l", "/nonexistent-dir/server.log"], 1,
     "-l/--log-file /nonexistent-dir/server.log: cannot open it for writing (No such file"),
    (["-P", "/nonexistent-dir/server.pid"], 1,
     "-P/--pid-file /nonexistent-dir/server.pid: cannot write it (No such file or directory)"),
])
def test_a_bad_flag_is_one_line_naming_it(args: list[str], code: int, says: str) -> None:
    run = gp("server", "-p", "0", *args)
    assert run.returncode == code
    line = one_line(run)
    assert line.startswith("gearman-proto server: ")
    assert says in line
    if code == 2:
        assert line.endswith("(see 'gearman-proto server --help')")


def test_sqlite_queue_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 100)
    run = gp("server", "-p", "0", "--queue", f"sqlite:{notes}")
    assert run.returncode == 1
    assert one_line(run) == f"gearman-proto server: sqlite {notes}: file is not a database"
    assert notes.read_text() == "not a database\n" * 100


def test_gearmand_also_refuses_an_unopenable_sqlite_queue(gearmand_factory: Factory) -> None:
    """The same command line, both servers: neither starts, both exit 1."""
    flags = ["-q", "libsqlite3", "--libsqlite3-db", "/nonexistent-dir/q.db"]
    theirs = subprocess.run([peer("gearmand"), "-L", "127.0.0.1", "-p", str(free_port()), "-l",
                             "stderr", *flags], capture_output=True, timeout=BOUND)
    ours = gp("server", "-L", "127.0.0.1", "-p", str(free_port()), "-l", "stderr", *flags)
    assert (theirs.returncode, ours.returncode) == (1, 1)
    assert b"unable to open database file" in theirs.stderr
    assert b"/nonexistent-dir/q.db" in ours.stderr  # ours also names the path


@pytest.mark.parametrize(("loop", "module"), [("trio", "anyio"), ("trio", "trio"),
                                              ("uvloop", "uvloop")])
def test_a_loop_without_its_extra_names_the_extra(loop: str, module: str,
                                                  tmp_path: Path) -> None:
    # The module made missing, as on a machine without the extra.
    (tmp_path / f"{module}.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{module}'\", name='{module}')\n")
    run = subprocess.run([*CLI, "server", "-p", "0", "--loop", loop], capture_output=True,
                         timeout=BOUND, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin"})
    assert run.returncode == 1
    assert one_line(run) == (f"gearman-proto server: --loop {loop} needs the {module} module, "
                             f"which is not installed: pip install 'gearman-proto[{loop}]'")


# -- gearmand's own flags -------------------------------------------------------------


REFUSED = [["-d"], ["--daemon"], ["-u", "nobody"], ["--user", "nobody"], ["-R"],
           ["--round-robin"], ["-b", "64"], ["-f", "1024"], ["--syslog"], ["-r", "http"],
           ["--http-port", "8080"], ["--config-file", "/etc/gearmand.conf"],
           ["--libsqlite3-table", "q"], ["--store-queue-on-shutdown"]]


def gearmand_help() -> str:
    run = subprocess.run([peer("gearmand"), "--help"], capture_output=True, timeout=BOUND)
    return run.stdout.decode() + run.stderr.decode()


@pytest.mark.parametrize("flag", REFUSED, ids=lambda f: f[0])
def test_a_gearmand_flag_with_no_counterpart_is_refused_saying_why(flag: list[str]) -> None:
    assert re.search(rf"(\[ |^  ){re.escape(flag[0])}\b", gearmand_help(), re.M), \
        f"{flag[0]} is not a gearmand flag"
    run = gp("server", "-p", "0", *flag)
    assert run.returncode == 2
    err = run.stderr.decode()
    usage, why = err.splitlines()  # the subcommand's usage, then why
    assert usage == "usage: gearman-proto server [options]"
    assert why.startswith("gearman-proto server: ")
    assert f"{flag[0]}" in why and "(a gearmand flag) is not supported: " in why
    assert len(why.split("is not supported: ")[1]) > 20  # the reason, and what to do


def test_an_unknown_flag_gets_the_subcommands_usage() -> None:
    run = gp("server", "--bogus")
    assert run.returncode == 2
    assert run.stderr == (b"usage: gearman-proto server [options]\n"
                          b"gearman-proto server: unrecognized arguments: --bogus\n")


def test_dash_v_big_is_the_version_as_in_gearmand() -> None:
    run = gp("server", "-V")
    assert (run.returncode, run.stdout) == (0, f"gearman-proto {gearman_proto.__version__}\n"
                                               .encode())
    assert "-V [ --version ]" in gearmand_help()


def start_like_gearmand(binary: list[str], d: Path, f: str) -> bytes:
    """Start ``binary`` with a deployment's gearmand flags, queue one background job, stop
    it, restart it on the same sqlite file and see the job back; its standard error."""
    d.mkdir()
    port = free_port()
    argv = [*binary, "--listen=127.0.0.1", f"--port={port}", "--threads=4",
            "-l", str(d / "log"), "--pid-file", str(d / "pid"), "--verbose=INFO",
            "-q", "libsqlite3", f"--libsqlite3-db={d / 'q.db'}", "-j", "2",
            "--worker-wakeup=1"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        eventually(lambda: (d / "pid").exists() and listening(port),
                   "the server and its pid file")
        assert (d / "pid").read_text().strip() == str(proc.pid)
        assert gp("submit", "-h", "127.0.0.1", "-p", str(port), "-f", f, "-b",
                  "kept").returncode == 0
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=BOUND)
    # The background job is in the sqlite file: a restart on it brings it back.
    again = subprocess.Popen([*binary, "-L", "127.0.0.1", "-p", str(port), "-l",
                              str(d / "log2"), "-P", str(d / "pid2"), "-q", "libsqlite3",
                              "--libsqlite3-db", str(d / "q.db")],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        eventually(lambda: listening(port) and status(("127.0.0.1", port), f) == (1, 0, 0),
                   "the job back after a restart")
    finally:
        again.terminate()
        again.wait(BOUND)
    return err


def test_a_gearmand_command_line_runs_our_server(tmp_path: Path) -> None:
    """gearmand's flags, as a deployment's command line has them: the same words start
    gearmand and gearman-proto, and mean the same (pid file, sqlite queue, retries)."""
    start_like_gearmand([peer("gearmand")], tmp_path / "gearmand", name("copied"))
    err = start_like_gearmand([*CLI, "server"], tmp_path / "ours", name("copied"))
    assert not (tmp_path / "ours" / "pid").exists()  # removed on exit
    # -t is taken and said to be ignored, on standard error (the log is a file here).
    assert b"-t/--threads is ignored: one event loop serves every connection" in err
    assert b"listening on 127.0.0.1:" in err


@pytest.mark.parametrize(("flags", "level"), [((), "ERROR"), (("-v",), "WARNING"),
                                              (("-vv",), "INFO"), (("-v", "-v", "-v"), "DEBUG"),
                                              (("--verbose", "NOTICE"), "NOTICE")])
def test_dash_v_repeated_raises_the_level(flags: tuple[str, ...], level: str) -> None:
    with serving(*flags) as (_, port):
        assert gp("admin", "-h", "127.0.0.1", "-p", str(port), "verbose").stdout == \
            f"{level}\n".encode()


# -- -j: gearmand's meaning ---------------------------------------------------------------


@pytest.mark.parametrize(("theirs", "ours", "survives"), [
    (("-j", "2"), ("-j", "2"), 1),
    (("-j", "1"), ("-j", "1"), 0),
    (("-j", "0"), ("-j", "0"), 3),  # 0: no limit (it used to mean "never requeue" here)
    (("--job-retries=2",), ("--max-requeues", "1"), 1),  # our own count: requeues
])
def test_job_retries_means_what_gearmand_means(gearmand_factory: Factory,
                                               our_server_factory: Factory,
                                               theirs: tuple[str, ...], ours: tuple[str, ...],
                                               survives: int) -> None:
    """``-j N``: the Nth run whose worker is lost fails the job (WORK_FAIL to the
    client); 0 is no limit.  Checked on gearmand 1.1.20 and ours, same steps."""
    for server in (gearmand_factory(extra=theirs), our_server_factory(extra=ours)):
        lose_until_failed(server, survives)


def lose_until_failed(server: ServerProcess, survives: int) -> None:
    f = name("retry")
    submit = subprocess.Popen([*CLI, "submit", *at(server), "-f", f, "x"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        eventually(lambda: status(server, f)[0] == 1, "the job to be queued")
        for _ in range(survives):
            lose_a_worker(server.address, f)
            eventually(lambda: status(server, f) == (1, 0, 0), "the job to be requeued")
        if survives == 3:  # no limit: still queued, its client still waiting
            assert submit.poll() is None
            return
        lose_a_worker(server.address, f)
        _, err = submit.communicate(timeout=BOUND)
        assert submit.returncode == 1, server.name
        assert b"failed" in err
        eventually(lambda: status(server, f) == (0, 0, 0), "the job to be gone")
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.wait(BOUND)


# -- logging: -l stderr, -l none, the banner -----------------------------------------------


def listening_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "listening on" in line.lower()]


def test_log_file_stderr_and_none_are_gearmands_words(tmp_path: Path) -> None:
    port = free_port()
    for target in ("stderr", "none"):
        proc = subprocess.Popen([*CLI, "server", "-p", str(port), "-l", target,
                                 "--verbose", "INFO"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            eventually(lambda: listening(port), "the server")
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=BOUND)
        assert list(tmp_path.iterdir()) == []  # no file named stderr (or none)
        said = listening_lines(err.decode())
        assert len(said) == 1, err  # said once
        if target == "stderr":  # the log, at INFO, with the start-up line before it
            assert re.match(r"\S+ \S+ INFO gearman_proto", said[0]), said
            assert re.search(rf"INFO gearman_proto\.cli "
                             rf"{re.escape(gearman_proto.SERVER_VERSION)} starting: pid "
                             rf"{proc.pid}, \w+ loop, queue memory, log level INFO\n",
                             err.decode())
        else:  # no log at all: the plain line that says it is up
            assert re.fullmatch(rf"{re.escape(gearman_proto.SERVER_VERSION)} listening on "
                                rf"127\.0\.0\.1:{port} \(\w+, queue memory\)", said[0]), said
            assert b"starting" not in err


def test_the_start_is_logged_at_info_once(our_server: ServerProcess) -> None:
    log = our_server.log.read_text()  # --verbose INFO --log-file LOG
    said = listening_lines(log)
    assert len(said) == 1, log
    assert " INFO " in said[0]
    assert log.count(" starting: pid ") == 1
    assert " ERROR " not in log


def test_tls_certificate_without_its_key_refuses_to_start(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_only = tmp_path / "cert.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_only))
    run = gp("server", "-p", "0", "--ssl", "--ssl-certificate", str(cert_only))
    assert run.returncode == 1
    assert one_line(run).startswith(f"gearman-proto server: --ssl-certificate {cert_only} "
                                    "(no --ssl-key given): not a usable PEM certificate and "
                                    "private key")


def test_ssl_switch_with_certificate_serves_tls_only(our_server_factory: Factory,
                                                     tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    server = our_server_factory(extra=("--ssl", "--ssl-certificate", str(cert_file),
                                       "--ssl-key", str(cert_file)))
    tls = gp("admin", *at(server), "-S", "--ssl-ca-file", str(ca_file), "getpid")
    assert (tls.returncode, tls.stdout) == (0, f"{server.pid}\n".encode())
    assert gp("admin", *at(server), "getpid").returncode == 1  # no plaintext
