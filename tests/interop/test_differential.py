"""The same scripted scenario against gearmand 1.1.20 and against our server (issue 4 §4).

Each scenario drives raw connections (tests/interop/conftest.py's RawPeer: its
own framing, not our codec) step by step, waiting for the packet each step
needs, so the order of what every peer receives is fixed by the script.  At the
end every peer does an ECHO round trip, and its transcript (every packet it
received, job handles named ``<1>``, ``<2>``... in order of appearance) is
compared between the two servers.  Admin replies are compared the same way.

Where we deliberately differ from gearmand 1.1.20 (gearman_proto/broker.py's
docstring), the test says so, asserts gearmand's transcript as observed and
ours as documented, and names the difference; the README's Interoperability section lists them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Handles, RawPeer, ServerProcess

Transcript = dict[str, Any]


class Run:
    """One scenario run against one server: named peers, shared handle names."""

    def __init__(self, lib: Any, server: ServerProcess) -> None:
        self.lib = lib
        self.server = server
        self.handles: Handles = lib.Handles()
        self.peers: dict[str, RawPeer] = {}
        self.closed: set[str] = set()
        self.notes: dict[str, Any] = {}
        """Anything else the scenario observed (admin replies), by name."""

    def peer(self, label: str) -> RawPeer:
        p = self.lib.RawPeer(self.server.address, label, self.handles)
        self.peers[label] = p
        return p

    def close(self, label: str) -> None:
        self.peers[label].close()
        self.closed.add(label)

    def admin(self, line: str, note: str | None = None) -> bytes:
        """An admin command on a connection of its own; the reply, handles named."""
        if "admin" not in self.peers:
            self.peer("admin")
        reply = self.handles.text(self.peers["admin"].admin(line))
        if note is not None:
            self.notes[note] = reply
        return reply

    def transcript(self) -> Transcript:
        for label, p in self.peers.items():
            if label not in self.closed and label != "admin":
                p.sync()
        out: Transcript = {label: p.log for label, p in self.peers.items() if label != "admin"}
        out.update(self.notes)
        for p in self.peers.values():
            p.close()
        return out


@pytest.fixture
def both(lib: Any, gearmand: ServerProcess, our_server: ServerProcess
         ) -> Callable[..., dict[str, Transcript]]:
    """``both(scenario, *args)``: run ``scenario(run, *args)`` on each server; transcripts."""

    def run_both(scenario: Callable[..., None], *args: Any) -> dict[str, Transcript]:
        out = {}
        for kind, server in (("gearmand", gearmand), ("ours", our_server)):
            run = Run(lib, server)
            scenario(run, *args)
            out[kind] = run.transcript()
        return out

    return run_both


def line_of(reply: bytes, key: bytes) -> bytes:
    """The line of an admin listing that starts with ``key``."""
    return next((line for line in reply.split(b"\n") if line.split(b"\t")[0] == key), b"")


# -- the same on both servers -------------------------------------------------------------------


def coalescing(run: Run, fn: bytes, other: bytes) -> None:
    c1, c2, c3, w = (run.peer(n) for n in ("client1", "client2", "bg-client", "worker"))
    c1.send("SUBMIT_JOB", fn, b"key", b"first")
    (h,) = c1.expect("JOB_CREATED")
    c2.send("SUBMIT_JOB", fn, b"key", b"second")
    c2.expect("JOB_CREATED")
    c3.send("SUBMIT_JOB_BG", fn, b"key", b"third")
    c3.expect("JOB_CREATED")
    c1.send("GET_STATUS_UNIQUE", b"key")
    c1.expect("STATUS_RES_UNIQUE")
    w.send("CAN_DO", fn)
    w.send("GRAB_JOB_UNIQ")
    w.expect("JOB_ASSIGN_UNIQ")
    c2.send("GET_STATUS", h)
    c2.expect("STATUS_RES")
    w.send("WORK_STATUS", h, b"1", b"2")
    w.send("WORK_DATA", h, b"part")
    w.send("WORK_WARNING", h, b"careful")
    w.send("WORK_COMPLETE", h, b"done")
    w.sync()
    c3.send("SUBMIT_JOB", fn, b"key", b"after")  # a new job: the old one is gone
    c3.expect("JOB_CREATED")
    for data in (b"same", b"same", b"different"):  # unique "-": the data is the key
        c3.send("SUBMIT_JOB_BG", other, b"-", data)
        c3.expect("JOB_CREATED")


@pytest.mark.feature("differential.coalescing")
def test_coalescing(both: Callable[..., dict[str, Transcript]],
                    fresh: Callable[[str], str]) -> None:
    """Same (function, unique): one job, one handle, every foreground submitter gets every
    update and the result; a background submitter only the handle.  Unique ``-``."""
    out = both(coalescing, fresh("coalesce").encode(), fresh("dash").encode())
    assert out["ours"] == out["gearmand"]
    ours = out["ours"]
    assert ours["client2"] == [
        ("JOB_CREATED", (b"<1>",)), ("STATUS_RES", (b"<1>", b"1", b"1", b"0", b"0")),
        ("WORK_STATUS", (b"<1>", b"1", b"2")), ("WORK_DATA", (b"<1>", b"part")),
        ("WORK_WARNING", (b"<1>", b"careful")), ("WORK_COMPLETE", (b"<1>", b"done"))]
    assert ours["client1"][1] == ("STATUS_RES_UNIQUE", (b"key", b"1", b"0", b"0", b"0", b"2"))
    assert [p for p, _ in ours["bg-client"]] == ["JOB_CREATED"] * 5
    assert [a for _, (a,) in ours["bg-client"]] == [b"<1>", b"<2>", b"<3>", b"<3>", b"<4>"]


def requeue_after_disconnect(run: Run, fn: bytes, how: str) -> None:
    c, w1, w2 = run.peer("client"), run.peer("worker1"), run.peer("worker2")
    c.send("SUBMIT_JOB", fn, b"", b"payload")
    (h,) = c.expect("JOB_CREATED")
    if how == "timeout":
        w1.send("CAN_DO_TIMEOUT", fn, b"300")
    else:
        w1.send("CAN_DO", fn)
    w1.send("GRAB_JOB")
    w1.expect("JOB_ASSIGN")
    w1.send("WORK_STATUS", h, b"1", b"2")
    c.expect("WORK_STATUS")
    c.send("GET_STATUS", h)
    c.expect("STATUS_RES")
    w2.send("CAN_DO", fn)
    w2.send("GRAB_JOB")
    w2.expect("NO_JOB")
    w2.send("PRE_SLEEP")
    w2.sync()
    if how == "disconnect":
        run.close("worker1")
    elif how == "cant_do":
        w1.send("CANT_DO", fn)
    # "timeout": the server takes the job back by itself
    w2.expect("NOOP")
    w2.send("GRAB_JOB")
    w2.expect("JOB_ASSIGN")
    if how != "disconnect":  # the first worker's late result is refused
        w1.send("WORK_COMPLETE", h, b"first run")
        w1.expect("ERROR")
    c.send("GET_STATUS", h)
    c.expect("STATUS_RES")
    run.notes["show jobs"] = line_of(run.admin("show jobs"), b"<1>")
    w2.send("WORK_COMPLETE", h, b"second run")
    c.expect("WORK_COMPLETE")


@pytest.mark.parametrize("how", ["disconnect", "cant_do", "timeout"])
@pytest.mark.feature("differential.requeue")
def test_requeue_of_a_lost_job(both: Callable[..., dict[str, Transcript]],
                               fresh: Callable[[str], str], how: str) -> None:
    """A worker that disconnects, says CANT_DO, or overruns its CAN_DO_TIMEOUT loses its
    job: it is requeued (status reset, retries + 1), a sleeping worker gets NOOP and the
    same job; the client sees only the second run's result, and the first worker's late
    result gets JOB_NOT_FOUND."""
    out = both(requeue_after_disconnect, fresh("requeue").encode(), how)
    assert out["ours"] == out["gearmand"]
    ours = out["ours"]
    assert ours["client"] == [
        ("JOB_CREATED", (b"<1>",)), ("WORK_STATUS", (b"<1>", b"1", b"2")),
        ("STATUS_RES", (b"<1>", b"1", b"1", b"1", b"2")),
        ("STATUS_RES", (b"<1>", b"1", b"1", b"0", b"0")),
        ("WORK_COMPLETE", (b"<1>", b"second run"))]
    assert ours["worker2"] == [("NO_JOB", ()), ("NOOP", ()),
                               ("JOB_ASSIGN", (b"<1>", ours["worker2"][2][1][1], b"payload"))]
    assert ours["show jobs"] == b"<1>\t1\t0\t0"  # one retry


def maxqueue(run: Run, fn: bytes) -> None:
    c = run.peer("client")
    run.admin(f"create function {fn.decode()}", "create")  # maxqueue ignores unknown ones
    run.admin(f"maxqueue {fn.decode()} 2", "maxqueue 2")
    for unique in (b"u1", b"u2", b"u3", b"u1"):  # the 3rd is refused; u1 coalesces
        c.send("SUBMIT_JOB_BG", fn, unique, b"x")
        c.recv()
    c.send("SUBMIT_JOB_LOW", fn, b"u4", b"fg")  # foreground too
    c.recv()
    run.admin(f"maxqueue {fn.decode()} 0 5 1", "maxqueue 0 5 1")  # high unlimited, low 1
    for ptype, unique in (("SUBMIT_JOB_LOW_BG", b"u5"), ("SUBMIT_JOB_HIGH_BG", b"u6"),
                          ("SUBMIT_JOB_BG", b"u7"), ("SUBMIT_JOB_BG", b"u8"),
                          ("SUBMIT_JOB_BG", b"u9")):
        c.send(ptype, fn, unique, b"x")
        c.recv()
    run.admin(f"maxqueue {fn.decode()}", "maxqueue reset")
    c.send("SUBMIT_JOB_LOW_BG", fn, b"u10", b"x")
    c.recv()
    run.admin("prioritystatus", "prioritystatus")
    run.notes["prioritystatus"] = line_of(run.notes["prioritystatus"], fn)


@pytest.mark.feature("differential.maxqueue-full")
def test_maxqueue_full(both: Callable[..., dict[str, Transcript]],
                       fresh: Callable[[str], str]) -> None:
    """``maxqueue FN N`` and ``maxqueue FN H N L``: a submission that would pass the limit
    gets ERROR QUEUE_ERROR; a coalesced one is never refused; reset lifts the limit."""
    fn = fresh("maxqueue").encode()
    out = both(maxqueue, fn)
    assert out["ours"] == out["gearmand"]
    full = ("ERROR", (b"QUEUE_ERROR", b"Job queue is full"))
    assert [p if p[0] == "ERROR" else p[0] for p in out["ours"]["client"]] == [
        "JOB_CREATED", "JOB_CREATED", full, "JOB_CREATED", full,
        full, "JOB_CREATED", "JOB_CREATED", "JOB_CREATED", full, "JOB_CREATED"]
    assert out["ours"]["prioritystatus"] == fn + b"\t1\t4\t1\t0"


def errors(run: Run, fn: bytes) -> None:
    c, w = run.peer("client"), run.peer("worker")
    for packet in (("OPTION_REQ", b"exceptions"), ("OPTION_REQ", b"no-such-option"),
                   ("GET_STATUS", b"H:nowhere:1"), ("GET_STATUS_UNIQUE", b"nowhere"),
                   ("ECHO_REQ", b"e\0cho"),
                   ("SUBMIT_JOB_SCHED", fn, b"", b"1", b"2", b"3", b"4", b"5", b"x"),
                   ("ALL_YOURS",), ("SUBMIT_JOB", fn, b"u" * 65, b"too long")):
        c.send(*packet)
        c.recv()
    for packet in (("WORK_COMPLETE", b"H:nowhere:1", b""), ("WORK_FAIL", b"H:nowhere:1"),
                   ("WORK_EXCEPTION", b"H:nowhere:1", b"x"),
                   ("WORK_STATUS", b"H:nowhere:1", b"1", b"2"),
                   ("WORK_DATA", b"H:nowhere:1", b"d"), ("WORK_WARNING", b"H:nowhere:1", b"w")):
        w.send(*packet)
        w.recv()
    w.send("CAN_DO", fn)
    w.send("GRAB_JOB_ALL")  # nothing queued
    w.recv()
    c.send("SUBMIT_REDUCE_JOB", fn, b"r", b"reducer", b"", b"mapped")
    c.recv()
    w.send("GRAB_JOB_ALL")  # a reduce job: JOB_ASSIGN_ALL with its reducer
    w.recv()
    c.send("SUBMIT_JOB", fn, b"plain", b"x")
    c.recv()
    w.send("GRAB_JOB_ALL")  # no reducer: JOB_ASSIGN_UNIQ
    w.recv()


@pytest.mark.feature("differential.errors")
def test_errors_and_odd_requests(both: Callable[..., dict[str, Transcript]],
                                 fresh: Callable[[str], str]) -> None:
    """OPTION_REQ, unknown handles, SUBMIT_JOB_SCHED, ALL_YOURS, a too-long unique, WORK_*
    for a job that does not exist, GRAB_JOB_ALL with and without a reducer."""
    out = both(errors, fresh("errors").encode())
    assert out["ours"] == out["gearmand"]
    assert out["ours"]["client"][5:8] == [
        ("ERROR", (b"INVALID_COMMAND", b"Command not expected")),
        ("ERROR", (b"INVALID_COMMAND", b"Command not expected")),
        ("ERROR", (b"ARGUMENT_TOO_LARGE", b"Unique value too large"))]
    assert [p for p, _ in out["ours"]["worker"][-3:]] == [
        "NO_JOB", "JOB_ASSIGN_ALL", "JOB_ASSIGN_UNIQ"]


def cancel_queued(run: Run, fn: bytes) -> None:
    c1, c2, w = run.peer("client"), run.peer("bg-client"), run.peer("worker")
    c1.send("SUBMIT_JOB", fn, b"u1", b"foreground")
    (h1,) = c1.expect("JOB_CREATED")
    c2.send("SUBMIT_JOB_BG", fn, b"u2", b"background")
    c2.expect("JOB_CREATED")
    run.admin(f"cancel job {h1.decode()}", "cancel")
    c1.expect("WORK_FAIL")
    run.admin("cancel job H:nowhere:1", "cancel unknown")
    w.send("CAN_DO", fn)
    w.send("GRAB_JOB_UNIQ")  # gearmand drops the cancelled job here; ours already did
    (h2, *_rest) = w.expect("JOB_ASSIGN_UNIQ")
    w.send("WORK_COMPLETE", h2, b"")
    w.send("GRAB_JOB_UNIQ")
    w.expect("NO_JOB")
    run.notes["status"] = line_of(run.admin("status"), fn)


@pytest.mark.feature("differential.cancel")
def test_cancel_job(both: Callable[..., dict[str, Transcript]],
                    fresh: Callable[[str], str]) -> None:
    """``cancel job``: OK, WORK_FAIL to its client, never assigned; unknown → ERR."""
    fn = fresh("cancel").encode()
    out = both(cancel_queued, fn)
    assert out["ours"] == out["gearmand"]
    assert out["ours"]["client"] == [("JOB_CREATED", (b"<1>",)), ("WORK_FAIL", (b"<1>",))]
    assert out["ours"]["cancel"] == b"OK\r\n"
    assert out["ours"]["cancel unknown"] == b"ERR UNKNOWN_JOB\r\n"
    assert out["ours"]["status"] == fn + b"\t0\t0\t1"


def ownership(run: Run, fn: bytes) -> None:
    c, owner, other = run.peer("client"), run.peer("owner"), run.peer("other-worker")
    c.send("SUBMIT_JOB", fn, b"", b"x")
    (h,) = c.expect("JOB_CREATED")
    owner.send("CAN_DO", fn)
    owner.send("GRAB_JOB")
    owner.expect("JOB_ASSIGN")
    other.send("CAN_DO", fn)
    other.send("WORK_STATUS", h, b"1", b"2")  # not its job
    other.send("WORK_COMPLETE", h, b"not mine")
    other.sync()
    c.sync()
    owner.send("WORK_COMPLETE", h, b"mine")
    c.expect("WORK_COMPLETE")
    # The same connection attached twice to one job gets every packet twice.
    c.send("SUBMIT_JOB", fn, b"twice", b"x")
    c.expect("JOB_CREATED")
    c.send("SUBMIT_JOB", fn, b"twice", b"x")
    c.expect("JOB_CREATED")
    owner.send("GRAB_JOB")
    (h2, *_rest) = owner.expect("JOB_ASSIGN")
    owner.send("WORK_DATA", h2, b"d")
    owner.send("WORK_COMPLETE", h2, b"r")
    owner.sync()
    c.sync()
    # PRE_SLEEP with work already queued: NOOP at once.
    c.send("SUBMIT_JOB_BG", fn, b"", b"queued")
    c.expect("JOB_CREATED")
    owner.send("PRE_SLEEP")
    owner.expect("NOOP")
    owner.send("GRAB_JOB")
    (h3, *_rest) = owner.expect("JOB_ASSIGN")
    owner.send("WORK_COMPLETE", h3, b"")
    # A long client id is cut to 127 bytes in ``workers``.
    other.send("SET_CLIENT_ID", b"L" * 200)
    other.sync()
    run.notes["client id length"] = [len(line.split(b" ")[2]) for line in
                                     run.admin("workers").split(b"\n") if b"LLLL" in line]


@pytest.mark.feature("differential.who-reports")
def test_who_may_report_on_a_job(both: Callable[..., dict[str, Transcript]],
                                 fresh: Callable[[str], str]) -> None:
    """WORK_* from a worker that does not hold the job get JOB_NOT_FOUND and reach nobody;
    a connection attached twice gets every packet twice; PRE_SLEEP with work queued is
    answered NOOP at once; a 200-byte client id shows as 127 bytes."""
    out = both(ownership, fresh("ownership").encode())
    assert out["ours"] == out["gearmand"]
    assert out["ours"]["other-worker"] == [
        ("ERROR", (b"JOB_NOT_FOUND", b"Job given in work result not found"))] * 2
    assert out["ours"]["client id length"] == [127]


# -- deliberate differences -------------------------------------------------------------------


def priorities(run: Run, f1: bytes, f2: bytes) -> None:
    c, w = run.peer("client"), run.peer("worker")
    w.send("CAN_DO", f1)
    w.send("CAN_DO", f2)
    for ptype, fn, data in (("SUBMIT_JOB_LOW_BG", f1, b"f1-low"),
                            ("SUBMIT_JOB_BG", f2, b"f2-normal"),
                            ("SUBMIT_JOB_HIGH_BG", f1, b"f1-high"),
                            ("SUBMIT_JOB_LOW_BG", f2, b"f2-low"),
                            ("SUBMIT_JOB_BG", f1, b"f1-normal"),
                            ("SUBMIT_JOB_HIGH_BG", f2, b"f2-high")):
        c.send(ptype, fn, b"", data)
        c.expect("JOB_CREATED")
    order = []
    for _ in range(6):
        w.send("GRAB_JOB")
        h, _fn, data = w.expect("JOB_ASSIGN")
        order.append(data)
        w.send("WORK_COMPLETE", h, b"")
    run.notes["order"] = order


@pytest.mark.feature("differential.priority")
@pytest.mark.feature("differences.priority")
def test_priority_order_across_functions(both: Callable[..., dict[str, Transcript]],
                                         fresh: Callable[[str], str]) -> None:
    """Deliberate difference: our priority is global across a worker's functions (every
    HIGH job first, oldest first among equals).  gearmand 1.1.20 takes the worker's newest
    registered function that has any job, so a LOW job beats another function's HIGH one.
    Within one function both go HIGH, NORMAL, LOW."""
    out = both(priorities, fresh("prio1").encode(), fresh("prio2").encode())
    assert out["gearmand"]["order"] == [b"f2-high", b"f2-normal", b"f2-low",
                                        b"f1-high", b"f1-normal", b"f1-low"]
    assert out["ours"]["order"] == [b"f1-high", b"f2-high", b"f2-normal", b"f1-normal",
                                    b"f1-low", b"f2-low"]


def cancel_running(run: Run, fn: bytes) -> None:
    c, w = run.peer("client"), run.peer("worker")
    c.send("SUBMIT_JOB", fn, b"", b"x")
    (h,) = c.expect("JOB_CREATED")
    w.send("CAN_DO", fn)
    w.send("GRAB_JOB")
    w.expect("JOB_ASSIGN")
    run.admin(f"cancel job {h.decode()}", "cancel")
    c.expect("WORK_FAIL")
    w.send("WORK_STATUS", h, b"1", b"2")
    w.send("WORK_DATA", h, b"data")
    w.send("WORK_WARNING", h, b"warning")
    w.send("WORK_COMPLETE", h, b"late")


@pytest.mark.feature("differences.cancel-running")
def test_cancel_a_running_job(both: Callable[..., dict[str, Transcript]],
                              fresh: Callable[[str], str]) -> None:
    """Deliberate difference: ``cancel job`` on a running job detaches it from its worker,
    whose later WORK_* get ERROR JOB_NOT_FOUND (the texts gearmand uses for unknown
    handles); gearmand 1.1.20 answers them nothing, forwards the WORK_STATUS to the client
    it already told WORK_FAIL, and drops the others."""
    out = both(cancel_running, fresh("cancel-running").encode())
    assert out["ours"]["cancel"] == out["gearmand"]["cancel"] == b"OK\r\n"
    cancelled = [("JOB_CREATED", (b"<1>",)), ("WORK_FAIL", (b"<1>",))]
    assert out["ours"]["client"] == cancelled
    # gearmand still forwards the WORK_STATUS (after the WORK_FAIL) and drops the rest.
    assert out["gearmand"]["client"] == [*cancelled, ("WORK_STATUS", (b"<1>", b"1", b"2"))]
    assignment = out["ours"]["worker"][0]
    assert out["gearmand"]["worker"] == [assignment]
    result, update = (("ERROR", (b"JOB_NOT_FOUND", text)) for text in (
        b"Job given in work result not found", b"Job does not exist on server"))
    assert out["ours"]["worker"] == [assignment, result, update, update, result]


def exceptions(run: Run, fn: bytes) -> None:
    c1, c2, w = run.peer("with-option"), run.peer("without-option"), run.peer("worker")
    c1.send("OPTION_REQ", b"exceptions")
    c1.expect("OPTION_RES")
    c1.send("SUBMIT_JOB", fn, b"key", b"x")
    c1.expect("JOB_CREATED")
    c2.send("SUBMIT_JOB", fn, b"key", b"x")
    c2.expect("JOB_CREATED")
    w.send("CAN_DO", fn)
    w.send("GRAB_JOB")
    (h, *_rest) = w.expect("JOB_ASSIGN")
    w.send("WORK_EXCEPTION", h, b"it went \0 boom")


@pytest.mark.feature("differences.exception-as-fail")
def test_exception_to_clients_with_and_without_the_option(
        both: Callable[..., dict[str, Transcript]], fresh: Callable[[str], str]) -> None:
    """WORK_EXCEPTION reaches a client that asked for the exceptions option as it is, and
    one that did not as WORK_FAIL.  Deliberate difference in that WORK_FAIL's bytes:
    gearmand 1.1.20 puts the handle's NUL terminator in it (one byte more), which
    libgearman does not match (see test_gearman_tool.py); ours sends the bare handle."""
    out = both(exceptions, fresh("exceptions").encode())
    assert out["ours"]["with-option"] == out["gearmand"]["with-option"] == [
        ("OPTION_RES", (b"exceptions",)), ("JOB_CREATED", (b"<1>",)),
        ("WORK_EXCEPTION", (b"<1>", b"it went \0 boom"))]
    assert out["ours"]["without-option"] == [("JOB_CREATED", (b"<1>",)),
                                             ("WORK_FAIL", (b"<1>",))]
    (created, (kind, (handle,))) = out["gearmand"]["without-option"]
    assert created == ("JOB_CREATED", (b"<1>",))
    assert kind == "WORK_FAIL" and handle.endswith(b"\0") and handle.startswith(b"H:")


def abandoned(run: Run, fn: bytes) -> None:
    c1, c2, w = run.peer("leaving-client"), run.peer("next-client"), run.peer("worker")
    c1.send("SET_CLIENT_ID", b"leaving-" + fn)
    c1.send("SUBMIT_JOB", fn, b"key", b"x")
    c1.expect("JOB_CREATED")
    run.close("leaving-client")
    deadline = time.monotonic() + 15
    while b"leaving-" + fn in run.admin("workers"):  # until the server saw it go
        assert time.monotonic() < deadline, "the server did not notice the client leave"
        time.sleep(0.01)
    c2.send("SUBMIT_JOB", fn, b"key", b"y")
    c2.expect("JOB_CREATED")
    w.send("CAN_DO", fn)
    w.send("GRAB_JOB_UNIQ")
    w.recv()


@pytest.mark.feature("differences.client-left")
def test_foreground_job_whose_client_left(both: Callable[..., dict[str, Transcript]],
                                          fresh: Callable[[str], str]) -> None:
    """Deliberate difference: a queued foreground job whose only client left is gone at
    once on our server, so the same unique submitted again is a new job that runs.
    gearmand 1.1.20 keeps the old job flagged, attaches the new submitter to it and drops
    it when a worker reaches it: the new client never gets an answer."""
    out = both(abandoned, fresh("abandoned").encode())
    ours, theirs = out["ours"], out["gearmand"]
    assert theirs["next-client"] == [("JOB_CREATED", (b"<1>",))]  # the doomed job's handle
    assert ours["leaving-client"] == theirs["leaving-client"] == [("JOB_CREATED", (b"<1>",))]
    assert theirs["worker"] == [("NO_JOB", ())]
    assert ours["next-client"] == [("JOB_CREATED", (b"<2>",))]
    assert ours["worker"] == [("JOB_ASSIGN_UNIQ", (b"<2>", ours["worker"][0][1][1], b"key",
                                                   b"y"))]


def epoch_wakeup(run: Run, fn: bytes) -> None:
    sleeper, late, c = run.peer("sleeping-worker"), run.peer("late-worker"), run.peer("client")
    sleeper.send("CAN_DO", fn)
    sleeper.send("GRAB_JOB")
    sleeper.expect("NO_JOB")
    sleeper.send("PRE_SLEEP")
    sleeper.sync()
    epoch = int(time.time()) + 1
    c.send("SUBMIT_JOB_EPOCH", fn, b"", b"%d" % epoch, b"later")
    c.expect("JOB_CREATED")
    run.notes["at submission"] = sleeper.sync()
    sleeper.send("GRAB_JOB")
    sleeper.expect("NO_JOB")  # not due yet
    sleeper.send("PRE_SLEEP")
    sleeper.sync()
    while time.time() < epoch + 0.2:
        time.sleep(0.05)
    late.send("CAN_DO", fn)
    late.send("GRAB_JOB")
    late.expect("JOB_ASSIGN")  # due now
    run.notes["when due"] = sleeper.sync()


@pytest.mark.feature("differences.epoch-timer")
def test_epoch_job_wakes_a_sleeping_worker(both: Callable[..., dict[str, Transcript]],
                                           fresh: Callable[[str], str]) -> None:
    """Deliberate difference: our server NOOPs sleeping workers when a SUBMIT_JOB_EPOCH job
    comes due, not before.  gearmand 1.1.20 has no timer (its issue #101): it NOOPs them
    when the job is submitted, though it cannot be run yet, and never when it comes due;
    the job goes to the next GRAB after its time."""
    out = both(epoch_wakeup, fresh("epoch").encode())
    assert out["ours"]["late-worker"] == out["gearmand"]["late-worker"]
    assert out["ours"]["client"] == out["gearmand"]["client"]
    assert (out["gearmand"]["at submission"], out["gearmand"]["when due"]) == (
        [("NOOP", ())], [])
    assert (out["ours"]["at submission"], out["ours"]["when due"]) == ([], [("NOOP", ())])


def can_do_twice(run: Run, fn: bytes) -> None:
    w = run.peer("worker")
    w.send("SET_CLIENT_ID", b"twice-" + fn)
    w.send("CAN_DO", fn)
    w.send("CAN_DO", fn)
    w.sync()
    run.notes["workers"] = next(line for line in run.admin("workers").split(b"\n")
                                if b"twice-" + fn in line).split(b" ", 1)[1]
    run.notes["status"] = line_of(run.admin("status"), fn)


@pytest.mark.feature("differences.can-do-twice")
def test_can_do_twice(both: Callable[..., dict[str, Transcript]],
                      fresh: Callable[[str], str]) -> None:
    """Deliberate difference: a repeated CAN_DO is one registration on our server; gearmand
    1.1.20 registers the function twice (listed twice, the worker counted twice)."""
    fn = fresh("twice").encode()
    out = both(can_do_twice, fn)
    assert out["gearmand"]["workers"].endswith(b" : " + fn + b" " + fn)
    assert out["gearmand"]["status"] == fn + b"\t0\t0\t2"
    assert out["ours"]["workers"].endswith(b" : " + fn)
    assert out["ours"]["status"] == fn + b"\t0\t0\t1"


def can_do_timeout_and_pre_sleep(run: Run, fn: bytes) -> None:
    c, w1, w2 = run.peer("client"), run.peer("worker1"), run.peer("worker2")
    c.send("SUBMIT_JOB", fn, b"", b"x")
    c.expect("JOB_CREATED")
    w1.send("CAN_DO_TIMEOUT", fn, b"200")
    w1.send("GRAB_JOB")
    w1.expect("JOB_ASSIGN")
    w1.send("PRE_SLEEP")  # while holding the job (an asynchronous worker would)
    w2.send("CAN_DO", fn)
    w2.send("GRAB_JOB")
    w2.expect("NO_JOB")
    w2.send("PRE_SLEEP")
    w2.sync()
    start = time.monotonic()
    while time.monotonic() < start + 0.6:  # past the 200 ms timeout
        time.sleep(0.05)
    run.notes["worker2 after the timeout"] = w2.sync()


@pytest.mark.feature("differences.can-do-timeout-timer")
def test_pre_sleep_does_not_cancel_can_do_timeout(both: Callable[..., dict[str, Transcript]],
                                                  fresh: Callable[[str], str]) -> None:
    """Deliberate difference: our CAN_DO_TIMEOUT timer belongs to the job and runs until it
    ends; gearmand 1.1.20 cancels its (one per connection) timer when the worker sends
    PRE_SLEEP, so a worker that sleeps while it runs a job is never timed out."""
    out = both(can_do_timeout_and_pre_sleep, fresh("timeout-sleep").encode())
    assert out["gearmand"]["worker2 after the timeout"] == []
    assert out["ours"]["worker2 after the timeout"] == [("NOOP", ())]  # the job is back


def drop_function(run: Run, fn: bytes) -> None:
    c = run.peer("client")
    c.send("SUBMIT_JOB", fn, b"", b"x")
    c.expect("JOB_CREATED")
    run.admin(f"drop function {fn.decode()}", "drop")
    run.notes["status"] = line_of(run.admin("status"), fn)
    run.notes["show jobs"] = line_of(run.admin("show jobs"), b"<1>")


@pytest.mark.feature("differences.drop-function")
def test_drop_function_with_queued_jobs(both: Callable[..., dict[str, Transcript]],
                                        fresh: Callable[[str], str]) -> None:
    """Deliberate difference: ``drop function`` with queued jobs fails them (WORK_FAIL to
    their clients).  gearmand 1.1.20 answers OK too but orphans them: the function is
    gone, the job stays in ``show jobs`` and its client waits forever."""
    out = both(drop_function, fresh("drop").encode())
    assert out["ours"]["drop"] == out["gearmand"]["drop"] == b"OK\r\n"
    assert out["ours"]["status"] == out["gearmand"]["status"] == b""
    assert out["gearmand"]["client"] == [("JOB_CREATED", (b"<1>",))]
    assert out["gearmand"]["show jobs"].startswith(b"<1>\t")
    assert out["ours"]["client"] == [("JOB_CREATED", (b"<1>",)), ("WORK_FAIL", (b"<1>",))]
    assert out["ours"]["show jobs"] == b""


def can_do_wakes(run: Run, f1: bytes, f2: bytes) -> None:
    c, w = run.peer("client"), run.peer("worker")
    w.send("CAN_DO", f1)
    w.send("GRAB_JOB")
    w.expect("NO_JOB")
    w.send("PRE_SLEEP")
    w.sync()
    c.send("SUBMIT_JOB_BG", f2, b"", b"x")
    c.expect("JOB_CREATED")
    w.send("CAN_DO", f2)  # work is waiting for it


@pytest.mark.feature("differences.can-do-wakes")
def test_can_do_for_waiting_work_wakes_a_sleeping_worker(
        both: Callable[..., dict[str, Transcript]], fresh: Callable[[str], str]) -> None:
    """Deliberate difference: a sleeping worker that registers a function with queued jobs
    gets NOOP from our server; gearmand 1.1.20 leaves it asleep beside the job."""
    out = both(can_do_wakes, fresh("wake1").encode(), fresh("wake2").encode())
    assert out["gearmand"]["worker"] == [("NO_JOB", ())]
    assert out["ours"]["worker"] == [("NO_JOB", ()), ("NOOP", ())]


def long_unique(run: Run, fn: bytes) -> None:
    c, w = run.peer("client"), run.peer("worker")
    unique = b"u" * 63 + b"!"  # 64 bytes: the largest gearmand accepts
    for _ in range(2):
        c.send("SUBMIT_JOB_BG", fn, unique, b"x")
        c.expect("JOB_CREATED")
    w.send("CAN_DO", fn)
    w.send("GRAB_JOB_UNIQ")
    w.expect("JOB_ASSIGN_UNIQ")


@pytest.mark.feature("differences.unique-64")
def test_a_64_byte_unique(both: Callable[..., dict[str, Transcript]],
                          fresh: Callable[[str], str]) -> None:
    """Deliberate difference: a 64-byte unique id is kept whole and coalesces.  gearmand
    1.1.20 accepts it but truncates it to 63 bytes, never coalesces it, and sends it to the
    worker as 64 bytes with a NUL inside."""
    out = both(long_unique, fresh("long").encode())
    unique = b"u" * 63 + b"!"
    assert out["gearmand"]["client"] == [("JOB_CREATED", (b"<1>",)), ("JOB_CREATED", (b"<2>",))]
    (_h, _fn, sent, data) = out["gearmand"]["worker"][0][1]
    assert sent + b"\0" + data == b"u" * 63 + b"\0\0x"  # the NUL splits one argument early
    assert out["ours"]["client"] == [("JOB_CREATED", (b"<1>",)), ("JOB_CREATED", (b"<1>",))]
    assert out["ours"]["worker"][0][1][2:] == (unique, b"x")


def status_of_dash(run: Run, fn: bytes) -> None:
    c = run.peer("client")
    c.send("SUBMIT_JOB_BG", fn, b"-", b"-")  # unique "-": the data ("-") is the key
    c.expect("JOB_CREATED")
    c.send("GET_STATUS_UNIQUE", b"-")
    c.expect("STATUS_RES_UNIQUE")


@pytest.mark.feature("differences.status-unique-dash")
def test_get_status_unique_of_a_dash_job(both: Callable[..., dict[str, Transcript]],
                                         fresh: Callable[[str], str]) -> None:
    """Deliberate difference: ``GET_STATUS_UNIQUE -`` never finds jobs submitted with
    unique ``-`` on our server (they are keyed by their data); gearmand 1.1.20 finds one
    when its data hashes like ``-``, as data ``-`` does."""
    out = both(status_of_dash, fresh("dash-status").encode())
    assert out["gearmand"]["client"][1] == ("STATUS_RES_UNIQUE",
                                            (b"-", b"1", b"0", b"0", b"0", b"0"))
    assert out["ours"]["client"][1] == ("STATUS_RES_UNIQUE", (b"-", b"0", b"0", b"0", b"0", b"0"))


# -- server options ---------------------------------------------------------------------------


def lose_twice(run: Run, fn: bytes) -> None:
    c = run.peer("client")
    c.send("SUBMIT_JOB", fn, b"", b"x")
    c.expect("JOB_CREATED")
    sleeper = None
    for n in (1, 2):
        w = sleeper or run.peer(f"worker{n}")
        if sleeper is None:
            w.send("CAN_DO", fn)
        w.send("GRAB_JOB")
        w.expect("JOB_ASSIGN")
        if n == 1:
            sleeper = run.peer("worker2")
            sleeper.send("CAN_DO", fn)
            sleeper.send("GRAB_JOB")
            sleeper.expect("NO_JOB")
            sleeper.send("PRE_SLEEP")
            sleeper.sync()
        run.close(f"worker{n}")
        if n == 1:
            sleeper.expect("NOOP")
    c.expect("WORK_FAIL")


@pytest.mark.feature("differential.job-retries")
@pytest.mark.feature("differences.job-retries")
def test_job_retries_counts_runs_in_gearmand(lib: Any, gearmand_factory: Callable[..., Any],
                                             our_server_factory: Callable[..., Any],
                                             fresh: Callable[[str], str]) -> None:
    """``--job-retries N`` means what gearmand 1.1.20's means: it counts runs (the Nth
    loss fails the job; the broker's ``job_retries`` counts requeues, N-1): with ``-j 2``
    a job lost once is requeued, lost twice its client gets WORK_FAIL."""
    fn = fresh("retries").encode()
    out = {}
    for kind, server in (("gearmand", gearmand_factory(extra=("--job-retries=2",))),
                         ("ours", our_server_factory(extra=("--job-retries=2",)))):
        run = Run(lib, server)
        lose_twice(run, fn)
        out[kind] = run.transcript()
    assert out["ours"] == out["gearmand"]
    assert out["ours"]["client"] == [("JOB_CREATED", (b"<1>",)), ("WORK_FAIL", (b"<1>",))]


@pytest.mark.feature("differences.store-keys")
def test_store_keeps_background_jobs_that_share_a_key(
        lib: Any, gearmand_factory: Callable[..., Any], our_server_factory: Callable[..., Any],
        tmp_path: Any, fresh: Callable[[str], str]) -> None:
    """Deliberate difference (gearmand issue #80): gearmand 1.1.20's sqlite queue keys rows
    by (unique, function), so two background jobs with the same key (here the empty unique,
    which never coalesces) are one row, and a restart brings back one job.  Our store keys
    rows itself: both come back."""
    fn = fresh("durable").encode()
    servers = {"gearmand": gearmand_factory(extra=(
                   "--queue-type=libsqlite3", f"--libsqlite3-db={tmp_path / 'gearmand.db'}")),
               "ours": our_server_factory(extra=("--queue", f"sqlite:{tmp_path / 'ours.db'}"))}
    counts = {}
    for kind, server in servers.items():
        run = Run(lib, server)
        c = run.peer("client")
        for data in (b"one", b"two"):
            c.send("SUBMIT_JOB_BG", fn, b"", data)
            c.expect("JOB_CREATED")
        assert line_of(run.admin("status"), fn) == fn + b"\t2\t0\t0"
        run.transcript()
        server.stop(kill=True)
        server.start()
        check = Run(lib, server)
        counts[kind] = line_of(check.admin("status"), fn)
        check.transcript()
    assert counts["gearmand"] == fn + b"\t1\t0\t0"
    assert counts["ours"] == fn + b"\t2\t0\t0"


# -- the admin text protocol, line by line --------------------------------------------------


ADMIN_LINES = [
    "", " status", "bogus", "bogus with words", "cancel", "cancel x", "cancel job",
    "cancel job H:nowhere:1", "CANCEL JOB H:nowhere:1", "cancel  job  H:nowhere:1",
    "cancel job a b", "cancel jobs x", "cancel x y z", "create", "create x", "create function",
    "create function a b", "create x y", "CREATE FUNCTION {fn}", "create  function  {fn}",
    "drop function {fn}", "Drop Function {fn}", "drop", "drop x y", "drop function a b",
    "show", "show everything", "show unique", "show jobs x", "SHOW UNIQUE X", "maxqueue",
    "maxqueue {fn}", "maxqueue {fn} 1", "maxqueue {fn} 1 2", "maxqueue {fn} 1 2 3",
    "maxqueue {fn} x", "maxqueue {fn} -5", "maxqueue no-such-function 1", "shutdown",
    "shutdown graceful", "verbose", "VERBOSE extra", "getpid extra", "version x",
]


def admin_lines(run: Run, fn: bytes) -> None:
    for line in ADMIN_LINES:
        reply = run.admin(line.format(fn=fn.decode()))
        if reply.startswith(b"OK ") and line.split()[0].lower() in ("getpid", "version"):
            reply = b"OK <value>\n"  # the pid and the version are each server's own
        run.notes[line] = reply


@pytest.mark.feature("differential.admin-lines")
def test_admin_lines_answer_alike(both: Callable[..., dict[str, Transcript]],
                                  fresh: Callable[[str], str]) -> None:
    """Odd, misspelt and malformed admin lines: the exact reply bytes, one after another on
    one connection (case, runs of spaces, extra words, missing or wrong arguments)."""
    out = both(admin_lines, fresh("admin-lines").encode())
    assert out["ours"] == out["gearmand"]
    assert out["ours"]["cancel job a b"] == b"ERR UNKNOWN_ERROR\r\n"
    assert out["ours"]["create"] == (b"ERR INVALID_ARGUMENTS "
                                     b"An+incomplete+set+of+arguments+was+sent+to+this+command"
                                     b"+create\r\n")


def maxqueue_too_many(run: Run, fn: bytes) -> None:
    a = run.peer("admin")
    try:
        # Two reads, one per command: the answers may arrive in one segment or two.
        reply = a.admin(f"maxqueue {fn.decode()} 1 2 3 4")
        run.notes["reply"] = reply + a.admin("version")
    except ConnectionError:
        run.notes["reply"] = b"<closed>"


@pytest.mark.feature("differences.maxqueue-limits")
def test_maxqueue_with_too_many_limits(both: Callable[..., dict[str, Transcript]],
                                       fresh: Callable[[str], str]) -> None:
    """Deliberate difference: ``maxqueue FN`` with four or more limits answers ERR
    INVALID_ARGUMENTS on our server; gearmand 1.1.20 closes the connection."""
    out = both(maxqueue_too_many, fresh("maxqueue-4").encode())
    assert out["gearmand"]["reply"] == b"<closed>"
    assert out["ours"]["reply"].startswith(  # then the version's OK: still connected
        b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command"
        b"+maxqueue\r\nOK ")


# -- malformed packets ------------------------------------------------------------------------


def probe(lib: Any, server: ServerProcess, data: bytes) -> list[str]:
    """Send ``data`` on a fresh connection, then an ECHO: what came back, until the echo or
    the end of the connection."""
    p = lib.RawPeer(server.address, "probe", lib.Handles())
    try:
        p.sock.sendall(data)
        p.send("ECHO_REQ", b"probe")
        seen = []
        while True:
            try:
                packet = p.recv()
            except (ConnectionError, OSError):
                return [*seen, "closed"]
            seen.append(f"{packet.name} {packet.args[0].decode()}" if packet.name == "ERROR"
                        else packet.name)
            if packet.name == "ECHO_RES":
                return seen
    finally:
        p.close()


MALFORMED = {
    "RES magic": (b"\0RES" + bytes.fromhex("00000010 00000001") + b"x",
                  ["ERROR INVALID_MAGIC", "ECHO_RES"], ["ERROR INVALID_MAGIC", "closed"]),
    "bad magic": (b"\0XYZ" + bytes(8), ["closed"], ["ERROR INVALID_MAGIC", "closed"]),
    "type 43": (b"\0REQ" + bytes.fromhex("0000002b 00000000"),
                ["closed"], ["ERROR INVALID_COMMAND", "closed"]),
    "NOOP sent to the server": (b"\0REQ" + bytes.fromhex("00000006 00000000"),
                                ["ERROR INVALID_COMMAND", "ECHO_RES"],
                                ["ERROR INVALID_COMMAND", "closed"]),
    "too few arguments": (b"\0REQ" + bytes.fromhex("00000007 00000003") + b"f\0u",
                          ["closed"], ["ERROR INVALID_ARGUMENTS", "closed"]),
    # A leniency, not a difference: read as no timeout, as gearmand does (an npm client
    # sends the timeout in binary; tests/interop/test_leniencies.py).
    "non-decimal timeout": (b"\0REQ" + bytes.fromhex("00000017 00000005") + b"f\0abc",
                            ["ECHO_RES"], ["ECHO_RES"]),
}


@pytest.mark.feature("differences.malformed")
def test_malformed_packets(lib: Any, gearmand_factory: Callable[..., Any],
                           our_server: ServerProcess) -> None:
    """Deliberate difference: every malformed packet gets an ERROR packet with gearmand's
    code, then our server closes the connection (the stream is not trusted further).
    gearmand 1.1.20 is inconsistent: it answers a RES magic or a response-only packet with
    ERROR and carries on, closes without a word on a bad magic, type or argument count,
    and reads numbers with atoi (``abc`` is 0)."""
    theirs = gearmand_factory()  # its own: malformed input is not for the shared one
    for name, (data, expected_gearmand, expected_ours) in MALFORMED.items():
        assert probe(lib, theirs, data) == expected_gearmand, name
        assert probe(lib, our_server, data) == expected_ours, name
