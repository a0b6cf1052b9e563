"""WorkerSession against a server without GRAB_JOB_UNIQ (Perl's Gearman::Server), in memory."""

from __future__ import annotations

import pytest

from gearman_proto.errors import GrabRefused
from gearman_proto.events import (
    Error,
    GrabJob,
    GrabJobUniq,
    JobAssign,
    PreSleep,
    WorkComplete,
    WorkData,
)
from gearman_proto.packets import RES, PacketType, encode_packet
from gearman_proto.server import ServerConnection
from gearman_proto.session import WorkerSession

PERL_REFUSAL = encode_packet(RES, PacketType.ERROR, (
    b"server_error", b'Can\'t locate object method "CMD_" via package '
    b'"Gearman::Server::Client" at /usr/share/perl5/Gearman/Server/Client.pm line 552.\n'))


def sent(data: bytes) -> list[type]:
    """The event classes in bytes a worker wrote, as a server reads them."""
    server = ServerConnection()
    server.receive_data(data)
    return [type(e) for e in server.events()]


def test_refused_grab_job_uniq_falls_back_to_grab_job_on_that_connection_only() -> None:
    session: WorkerSession[str] = WorkerSession({b"reverse": None}, max_jobs=2)
    first = session.connect("perl").writes["perl"]
    session.connect("gearmand")
    assert sent(first)[-1] is GrabJobUniq
    step = session.receive_data("perl", PERL_REFUSAL)
    assert [e.code for _, e in step.errors] == [b"server_error"]  # still logged by the adapter
    assert sent(step.writes["perl"]) == [GrabJob]
    step = session.receive_data("perl", encode_packet(
        RES, PacketType.JOB_ASSIGN, (b"H:perl:1", b"reverse", b"Hello")))
    assert step.jobs == [("perl", JobAssign(b"H:perl:1", b"reverse", b"Hello"))]
    # The other server keeps GRAB_JOB_UNIQ.
    step = session.receive_data("gearmand", encode_packet(RES, PacketType.NO_JOB, ()))
    assert session.connections["gearmand"].outstanding_grabs == 0
    session.receive_data("gearmand", encode_packet(RES, PacketType.NOOP, ()))
    # A reconnected "perl" starts over with GRAB_JOB_UNIQ and falls back again.
    session.disconnect("perl")
    assert sent(session.connect("perl").writes["perl"])[-1] is GrabJobUniq


def test_without_fallback_a_refused_grab_raises_instead_of_stalling() -> None:
    session: WorkerSession[str] = WorkerSession({b"reverse": None}, grab_fallback=False)
    session.connect("perl")
    with pytest.raises(GrabRefused, match="refused GRAB_JOB_UNIQ"):
        session.receive_data("perl", PERL_REFUSAL)


def test_a_refused_plain_grab_job_raises() -> None:
    session: WorkerSession[str] = WorkerSession({b"reverse": None})
    session.connect("odd")
    session.receive_data("odd", PERL_REFUSAL)            # GRAB_JOB_UNIQ refused: fall back
    with pytest.raises(GrabRefused, match="refused GRAB_JOB "):
        session.receive_data("odd", PERL_REFUSAL)        # GRAB_JOB refused too


def test_other_errors_do_not_change_the_grab() -> None:
    session: WorkerSession[str] = WorkerSession({b"reverse": None})
    session.connect("gearmand")
    step = session.receive_data("gearmand", encode_packet(
        RES, PacketType.ERROR, (b"JOB_NOT_FOUND", b"Job given in work result not found")))
    assert step.errors == [("gearmand", Error(b"JOB_NOT_FOUND",
                                              b"Job given in work result not found"))]
    assert session.connections["gearmand"].outstanding_grabs == 1
    assert not step.writes
    step = session.receive_data("gearmand", encode_packet(RES, PacketType.NO_JOB, ()))
    assert sent(step.writes["gearmand"]) == [PreSleep]


def test_an_error_after_a_grab_was_answered_is_only_logged() -> None:
    """Perl's server refuses WORK_DATA too: that ERROR may cross the next grab."""
    session: WorkerSession[str] = WorkerSession({b"reverse": None})
    session.connect("perl")
    session.receive_data("perl", PERL_REFUSAL)  # the first grab: fall back
    step = session.receive_data("perl", encode_packet(
        RES, PacketType.JOB_ASSIGN, (b"H:perl:1", b"reverse", b"Hello")))
    session.send("perl", WorkData(b"H:perl:1", b"part"))
    step = session.send("perl", WorkComplete(b"H:perl:1", b"olleH"))
    assert sent(step.writes["perl"])[-1] is GrabJob   # outstanding when the ERROR comes
    step = session.receive_data("perl", PERL_REFUSAL)  # (for the WORK_DATA)
    assert [e.code for _, e in step.errors] == [b"server_error"]
    assert session.connections["perl"].outstanding_grabs == 1
    step = session.receive_data("perl", encode_packet(
        RES, PacketType.JOB_ASSIGN, (b"H:perl:2", b"reverse", b"again")))
    assert [job.handle for _, job in step.jobs] == [b"H:perl:2"]
