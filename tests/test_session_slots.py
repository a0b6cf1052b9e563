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


def test_a_report_on_a_job_no_longer_in_hand_is_refused_and_the_connection_lives() -> None:
    """After a CAN_DO_TIMEOUT the server gives the job out again, possibly to the same
    worker under the same handle; when one run's result is in, the other's late report
    is refused -- and the connection must stay usable for every other job."""
    session: WorkerSession[str] = WorkerSession({b"f": 200}, max_jobs=2)
    session.connect("a")
    assign = encode_packet(RES, PacketType.JOB_ASSIGN_UNIQ, (b"H:1", b"f", b"", b"x"))
    session.receive_data("a", assign)  # first run: overruns the timeout
    session.receive_data("a", assign)  # the server took it back and gave it out again
    session.send("a", WorkComplete(b"H:1", b"run2"))
    with pytest.raises(LocalProtocolError, match="no such job in hand"):
        session.send("a", WorkComplete(b"H:1", b"run1"))  # the first run, late
    step = session.receive_data("a", encode_packet(
        RES, PacketType.JOB_ASSIGN_UNIQ, (b"H:2", b"f", b"", b"y")))
    assert step.jobs == [("a", JobAssign(b"H:2", b"f", b"y", b""))]
    done = session.send("a", WorkComplete(b"H:2", b"run3"))
    assert done.writes["a"].startswith(encode_packet(b"\0REQ", PacketType.WORK_COMPLETE,
                                                     (b"H:2", b"run3")))
