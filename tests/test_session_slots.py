"""Two core rules found while binding the core to blocking sockets and gearmand 1.1.20."""

from __future__ import annotations

import pytest

from gearman_proto import RES, ClientConnection, LocalProtocolError, PacketType, encode_packet
from gearman_proto.events import JobAssign, JobCreated, SubmitJob, WorkComplete, WorkFail
from gearman_proto.session import WorkerSession


def test_a_job_on_a_lost_connection_keeps_its_slot_until_it_ends() -> None:
    """The server requeues the jobs of a lost worker connection, but the worker may
    still be running them: with ``keep_slots`` their slots stay taken until the
    program reports their end, so it never runs more than ``max_jobs`` at once."""
    session: WorkerSession[str] = WorkerSession({b"f": None}, max_jobs=1)
    first = session.connect("a")
    assert first.writes["a"].endswith(encode_packet(b"\0REQ", PacketType.GRAB_JOB_UNIQ, ()))
    step = session.receive_data("a", encode_packet(
        RES, PacketType.JOB_ASSIGN_UNIQ, (b"H:1", b"f", b"u", b"data")))
    assert step.jobs == [("a", JobAssign(b"H:1", b"f", b"data", b"u"))]
    assert session.disconnect("a", keep_slots=True) == [JobAssign(b"H:1", b"f", b"data", b"u")]

    second = session.connect("b")  # registers, but may not grab: the slot is still busy
    assert session.free_slots == 0 and not session.idle
    assert encode_packet(b"\0REQ", PacketType.GRAB_JOB_UNIQ, ()) not in second.writes["b"]

    ended = session.send("a", WorkComplete(b"H:1", b"too late"))  # written nowhere...
    assert "a" not in ended.writes
    assert ended.writes["b"] == encode_packet(b"\0REQ", PacketType.GRAB_JOB_UNIQ, ())
    assert session.free_slots == 0 and session.idle  # ...and the slot went to a grab


def test_without_keep_slots_a_lost_connection_frees_its_slots_at_once() -> None:
    session: WorkerSession[str] = WorkerSession({b"f": None}, max_jobs=1)
    session.connect("a")
    session.receive_data("a", encode_packet(
        RES, PacketType.JOB_ASSIGN_UNIQ, (b"H:1", b"f", b"u", b"data")))
    session.disconnect("a")
    assert session.free_slots == 1 and session.idle
    assert session.send("a", WorkComplete(b"H:1")).writes == {}  # gone: writes nothing


def test_work_fail_from_a_converted_work_exception_names_the_job() -> None:
    """gearmand 1.1.20 sends WORK_FAIL "H:host:N\\0" (the handle with its NUL) to a
    client without the exceptions option when the worker sent WORK_EXCEPTION."""
    conn = ClientConnection()
    conn.send(SubmitJob(b"f", b"x", b"u"))
    conn.receive_data(encode_packet(RES, PacketType.JOB_CREATED, (b"H:vm:2",)))
    conn.receive_data(encode_packet(RES, PacketType.WORK_FAIL, (b"H:vm:2\0",)))
    assert list(conn.events()) == [JobCreated(b"H:vm:2"), WorkFail(b"H:vm:2")]
    assert not conn.jobs


GRAB = encode_packet(b"\0REQ", PacketType.GRAB_JOB_UNIQ, ())


def test_a_job_given_twice_holds_two_slots_until_both_runs_end() -> None:
    """After a CAN_DO_TIMEOUT the server gives the job out again, possibly to the same
    worker under the same handle while the first run goes on: two runs, two slots.
    The first result goes out; the other run's report is written nowhere and frees
    its slot; the connection stays usable throughout."""
    session: WorkerSession[str] = WorkerSession({b"f": 200}, max_jobs=2)
    session.connect("a")
    assign = encode_packet(RES, PacketType.JOB_ASSIGN_UNIQ, (b"H:1", b"f", b"", b"x"))
    session.receive_data("a", assign)  # first run: overruns the timeout
    again = session.receive_data("a", assign)  # taken back, and given out again
    assert session.running == 2 and session.free_slots == 0
    assert "a" not in again.writes  # no grab: both slots are taken

    first = session.send("a", WorkComplete(b"H:1", b"run2"))
    assert first.writes["a"] == encode_packet(b"\0REQ", PacketType.WORK_COMPLETE,
                                              (b"H:1", b"run2")) + GRAB
    assert session.running == 1 and not session.idle
    late = session.send("a", WorkComplete(b"H:1", b"run1"))  # the first run, late
    assert late.writes == {} and session.running == 0 and session.idle

    step = session.receive_data("a", encode_packet(
        RES, PacketType.JOB_ASSIGN_UNIQ, (b"H:2", b"f", b"", b"y")))
    assert step.jobs == [("a", JobAssign(b"H:2", b"f", b"y", b""))]
    done = session.send("a", WorkComplete(b"H:2", b"run3"))
    assert done.writes["a"].startswith(encode_packet(b"\0REQ", PacketType.WORK_COMPLETE,
                                                     (b"H:2", b"run3")))


def test_a_report_on_a_handle_never_given_is_refused_and_the_connection_lives() -> None:
    session: WorkerSession[str] = WorkerSession({b"f": None}, max_jobs=1)
    session.connect("a")
    with pytest.raises(LocalProtocolError, match="no such job in hand"):
        session.send("a", WorkComplete(b"H:9", b"?"))
    step = session.receive_data("a", encode_packet(
        RES, PacketType.JOB_ASSIGN_UNIQ, (b"H:1", b"f", b"", b"x")))
    assert step.jobs == [("a", JobAssign(b"H:1", b"f", b"x", b""))]
    assert session.send("a", WorkComplete(b"H:1", b"ok")).writes["a"].startswith(
        encode_packet(b"\0REQ", PacketType.WORK_COMPLETE, (b"H:1", b"ok")))


def test_both_runs_of_a_job_given_twice_keep_their_slots_when_the_connection_is_lost() -> None:
    session: WorkerSession[str] = WorkerSession({b"f": 200}, max_jobs=2)
    session.connect("a")
    assign = encode_packet(RES, PacketType.JOB_ASSIGN_UNIQ, (b"H:1", b"f", b"", b"x"))
    session.receive_data("a", assign)
    session.receive_data("a", assign)
    session.disconnect("a", keep_slots=True)
    session.connect("b")
    assert session.running == 2 and session.free_slots == 0
    assert session.send("a", WorkComplete(b"H:1", b"one")).writes == {"b": GRAB}
    assert session.running == 1
    assert session.send("a", WorkComplete(b"H:1", b"two")).writes == {}
    assert session.idle and session.free_slots == 1  # one slot free, one grab out


def test_a_reconnected_connection_keeps_its_orphans_apart_from_its_new_jobs() -> None:
    # A server restarted under the same key may hand out a handle its first run
    # used: the lost run's end frees the orphan's slot (written nowhere), the new
    # run's end is written, and each is counted once.
    session: WorkerSession[str] = WorkerSession({b"f": None}, max_jobs=2)
    session.connect("a")
    assign = encode_packet(RES, PacketType.JOB_ASSIGN_UNIQ, (b"H:1", b"f", b"", b"x"))
    session.receive_data("a", assign)
    session.disconnect("a", keep_slots=True)
    session.connect("a")
    session.receive_data("a", assign)
    assert session.running == 2 and session.free_slots == 0
    lost = session.send("a", WorkComplete(b"H:1", b"old"))
    assert lost.writes == {"a": GRAB}  # the orphan's end: only the grab its slot frees
    assert session.running == 1
    new = session.send("a", WorkComplete(b"H:1", b"new"))
    assert new.writes["a"].startswith(encode_packet(b"\0REQ", PacketType.WORK_COMPLETE,
                                                    (b"H:1", b"new")))
    assert session.idle
    with pytest.raises(LocalProtocolError):
        session.send("a", WorkComplete(b"H:1", b"third"))
