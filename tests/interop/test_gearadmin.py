"""``gearadmin`` (gearman-tools) against our server: every flag, output equal to gearmand's.

A fresh gearmand 1.1.20 and a fresh ``gearman-proto server`` are put in the
same state by the same raw packets (queued jobs at each priority, a running
job, workers with client ids and functions, an idle client, a function made by
``create function``); then each gearadmin flag runs against both and the
outputs are compared after normalizing what is not the protocol's to fix: job
handles (named in order of creation), file descriptors, the pid, the version
string, and the order of lines gearmand does not define (it lists functions and
jobs in hash order, connections in its own order).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Handles, RawPeer, ServerProcess, Tool

KINDS = ("gearmand", "ours")


class Twin:
    """One server in the shared state, with the job handles it gave."""

    def __init__(self, server: ServerProcess, handles: Handles, peers: list[RawPeer]) -> None:
        self.server = server
        self.handles = handles
        self.peers = peers
        self.jobs: dict[str, bytes] = {}


def build(lib: Any, server: ServerProcess) -> Twin:
    """The state every flag is shown on (the same packets to either server)."""
    handles = lib.Handles()
    twin = Twin(server, handles, [])

    def peer(label: str) -> RawPeer:
        p = lib.RawPeer(server.address, label, handles)
        twin.peers.append(p)
        return p

    admin = peer("admin")
    assert admin.admin("create function made-by-admin") == b"OK\r\n"
    client = peer("client")
    client.send("SET_CLIENT_ID", b"the-client")
    for label, ptype, fn, unique in (
            ("reverse-high", "SUBMIT_JOB_HIGH_BG", b"reverse", b"u-high"),
            ("reverse-normal", "SUBMIT_JOB_BG", b"reverse", b"u-normal"),
            ("reverse-low", "SUBMIT_JOB_LOW_BG", b"reverse", b"u-low"),
            ("resize", "SUBMIT_JOB_BG", b"resize", b"u-resize"),
            ("upper", "SUBMIT_JOB", b"upper", b"u-upper")):
        client.send(ptype, fn, unique, label.encode())
        twin.jobs[label] = client.expect("JOB_CREATED")[0]
    busy = peer("busy-worker")  # takes the HIGH reverse job and keeps it
    busy.send("SET_CLIENT_ID", b"busy-worker")
    busy.send("CAN_DO", b"reverse")
    busy.send("CAN_DO", b"thumbnail")
    busy.send("GRAB_JOB")
    assert busy.expect("JOB_ASSIGN")[0] == twin.jobs["reverse-high"]
    idle = peer("idle-worker")
    idle.send("CAN_DO", b"resize-later")
    idle.send("PRE_SLEEP")
    for p in (client, busy, idle):
        p.sync()
    return twin


@pytest.fixture(scope="module")
def twins(module_servers: Callable[..., ServerProcess], lib: Any) -> Iterator[dict[str, Twin]]:
    built = {kind: build(lib, module_servers(kind)) for kind in KINDS}
    yield built
    for twin in built.values():
        for p in twin.peers:
            p.close()


def normalize(twin: Twin, out: bytes) -> bytes:
    """Handles named, fds and the pid replaced, lines sorted within each listing."""
    text = twin.handles.text(out)
    text = re.sub(rb"(?m)^%d$" % twin.server.pid, b"<pid>", text)
    text = re.sub(rb"(?m)^\d+ (\d+\.\d+\.\d+\.\d+) ", rb"<fd> \1 ", text)
    blocks, current = [], []
    for line in text.split(b"\n"):
        current.append(line)
        if line == b".":
            blocks.append(b"\n".join([*sorted(current[:-1]), b"."]))
            current = []
    blocks.append(b"\n".join(current))
    return b"\n".join(blocks)


def gearadmin(lib: Any, tool: str, twin: Twin, *flags: str) -> Tool:
    return lib.run_tool([tool, "-h", twin.server.host, "-p", str(twin.server.port), *flags])


def both(lib: Any, tool: str, twins: dict[str, Twin], *flags: str) -> dict[str, Tool]:
    return {kind: gearadmin(lib, tool, twin, *flags) for kind, twin in twins.items()}


READ_ONLY = [["--status"], ["--priority-status"], ["--workers"], ["--show-jobs"],
             ["--show-unique-jobs"], ["--getpid"], ["--server-verbose"],
             ["--status", "--workers", "--getpid", "--priority-status"]]


@pytest.mark.parametrize("flags", READ_ONLY, ids=lambda f: " ".join(f))
@pytest.mark.feature("tools.listings", "gearadmin")
@pytest.mark.feature("differences.listing-order")
def test_same_output_as_gearmand(gearadmin_tool: str, twins: dict[str, Twin], lib: Any,
                                 flags: list[str]) -> None:
    outs = both(lib, gearadmin_tool, twins, *flags)
    ours, theirs = outs["ours"], outs["gearmand"]
    assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr) == (0, b"")
    assert normalize(twins["ours"], ours.stdout) == normalize(twins["gearmand"], theirs.stdout)


@pytest.mark.feature("tools.listings", "gearadmin")
def test_listings_show_the_state(gearadmin_tool: str, twins: dict[str, Twin], lib: Any) -> None:
    """What the shared state looks like (so that "equal" above is not "equally empty")."""
    twin = twins["ours"]
    status = normalize(twin, gearadmin(lib, gearadmin_tool, twin, "--status").stdout)
    for line in (b"made-by-admin\t0\t0\t0", b"resize\t1\t0\t0", b"resize-later\t0\t0\t1",
                 b"reverse\t3\t1\t1", b"thumbnail\t0\t0\t1", b"upper\t1\t0\t0"):
        assert line in status.split(b"\n")
    jobs = normalize(twin, gearadmin(lib, gearadmin_tool, twin, "--show-jobs").stdout)
    for line in (b"<1>\t0\t0\t1", b"<2>\t0\t0\t1", b"<3>\t0\t0\t1", b"<4>\t0\t0\t1",
                 b"<5>\t0\t0\t0"):  # background jobs show QUEUED 1, as in gearmand
        assert line in jobs.split(b"\n")
    workers = normalize(twin, gearadmin(lib, gearadmin_tool, twin, "--workers").stdout)
    assert b"<fd> 127.0.0.1 busy-worker : " in workers
    assert b"<fd> 127.0.0.1 the-client :\n" in workers


@pytest.mark.feature("tools.version", "gearadmin")
@pytest.mark.feature("differences.version")
def test_server_version(gearadmin_tool: str, twins: dict[str, Twin], lib: Any) -> None:
    """One line, ``OK`` stripped; the version itself is each server's own."""
    outs = both(lib, gearadmin_tool, twins, "--server-version")
    assert outs["gearmand"].stdout.startswith(b"1.1.20")
    assert outs["ours"].stdout.startswith(b"gearman-proto ")
    for out in outs.values():
        assert (out.returncode, out.stderr, out.stdout.count(b"\n")) == (0, b"", 1)


@pytest.mark.feature("tools.flags", "gearadmin")
def test_help_and_no_flag(gearadmin_tool: str, twins: dict[str, Twin], lib: Any) -> None:
    for flags in (["--help"], []):
        outs = both(lib, gearadmin_tool, twins, *flags)
        assert outs["ours"].stdout == outs["gearmand"].stdout
        assert outs["ours"].returncode == outs["gearmand"].returncode


@pytest.mark.feature("tools.flags", "gearadmin")
def test_ssl_flag(gearadmin_tool: str, twins: dict[str, Twin], lib: Any) -> None:
    """``-S``: Debian's gearman-tools is built without TLS and ignores it (as gearmand
    built without TLS ignores ``--ssl``), so it talks plain text to either server."""
    outs = both(lib, gearadmin_tool, twins, "-S", "--status")
    assert outs["ours"].returncode == outs["gearmand"].returncode
    assert normalize(twins["ours"], outs["ours"].stdout) == normalize(
        twins["gearmand"], outs["gearmand"].stdout)


@pytest.mark.feature("tools.functions", "gearadmin")
def test_create_and_drop_function(gearadmin_tool: str, twins: dict[str, Twin],
                                  lib: Any) -> None:
    for flags in (["--create-function", "brand-new"], ["--drop-function", "brand-new"],
                  ["--drop-function", "no-such-function"],
                  ["--drop-function", "reverse"]):  # a worker has it
        outs = both(lib, gearadmin_tool, twins, *flags)
        ours, theirs = outs["ours"], outs["gearmand"]
        assert (ours.returncode, ours.stdout, ours.stderr) == (
            theirs.returncode, theirs.stdout, theirs.stderr), flags


@pytest.mark.feature("tools.cancel", "gearadmin")
@pytest.mark.feature("differences.cancel-queued")
def test_cancel_job(gearadmin_tool: str, twins: dict[str, Twin], lib: Any) -> None:
    """``--cancel-job``: the same answers.  Deliberate difference in what follows: gearmand
    1.1.20 keeps a cancelled queued job (flagged ignore) until a worker reaches it, so
    ``--status`` and ``--show-jobs`` still count it and a second cancel is OK again; ours
    removes it at once.  (The job is one of its own, and a worker takes the flagged job
    off gearmand at the end, so the twins' states stay equal for the other tests.)"""
    for twin in twins.values():
        client = twin.peers[1]
        client.send("SUBMIT_JOB_BG", b"cancel-me", b"u-cancel-me", b"x")
        twin.jobs["cancel-me"] = client.expect("JOB_CREATED")[0]
    outs = {kind: gearadmin(lib, gearadmin_tool, twin, "--cancel-job",
                            twin.jobs["cancel-me"].decode())
            for kind, twin in twins.items()}
    assert outs["ours"].stdout == outs["gearmand"].stdout == b"OK\n"
    unknown = both(lib, gearadmin_tool, twins, "--cancel-job", "H:nowhere:99")
    assert unknown["ours"].stdout == unknown["gearmand"].stdout
    assert unknown["ours"].stderr == unknown["gearmand"].stderr == b"Error: UNKNOWN_JOB\r\n"

    after = {kind: normalize(twin, gearadmin(lib, gearadmin_tool, twin, "--status",
                                             "--show-jobs").stdout)
             for kind, twin in twins.items()}
    cancelled = twins["gearmand"].handles.learn(twins["gearmand"].jobs["cancel-me"])
    assert b"cancel-me\t1\t0\t0\n" in after["gearmand"]
    assert cancelled + b"\t0\t1\t" in after["gearmand"]  # flagged ignore
    assert b"cancel-me\t0\t0\t0\n" in after["ours"]
    assert twins["ours"].handles.learn(twins["ours"].jobs["cancel-me"]) not in after["ours"]
    again = {kind: gearadmin(lib, gearadmin_tool, twin, "--cancel-job",
                             twin.jobs["cancel-me"].decode())
             for kind, twin in twins.items()}
    assert (again["gearmand"].stdout, again["gearmand"].stderr) == (b"OK\n", b"")
    assert (again["ours"].stdout, again["ours"].stderr) == (b"", b"Error: UNKNOWN_JOB\r\n")

    for twin in twins.values():  # gearmand drops the flagged job when a worker reaches it
        taker = lib.RawPeer(twin.server.address, "taker", twin.handles)
        twin.peers.append(taker)
        taker.send("CAN_DO", b"cancel-me")
        taker.send("GRAB_JOB")
        taker.expect("NO_JOB")
        taker.send("RESET_ABILITIES")
        taker.sync()
    outs = both(lib, gearadmin_tool, twins, "--status", "--show-jobs")
    assert normalize(twins["ours"], outs["ours"].stdout) == normalize(
        twins["gearmand"], outs["gearmand"].stdout)
