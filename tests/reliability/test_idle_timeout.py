"""``ServerHub(idle_timeout=...)``: connections silent without a reason are closed.

The rule lives in the core, where time is just a number given to
:meth:`ServerHub.advance`; the servers only pass the option through and call
``advance`` when :meth:`ServerHub.next_deadline` comes.
"""

from __future__ import annotations

import pytest

from gearman_proto.broker import JobServer
from gearman_proto.events import CanDo, GrabJob, JobAssign, PreSleep, SubmitJob
from gearman_proto.hub import ServerHub
from gearman_proto.packets import REQ, PacketType, encode_packet


def packet(ptype: PacketType, *args: bytes) -> bytes:
    return encode_packet(REQ, ptype, args)


def test_idle_connection_is_closed_after_the_timeout_and_not_before() -> None:
    hub = ServerHub(JobServer(now=100.0), idle_timeout=10)
    hub.advance(100.0)
    quiet, chatty = hub.open(b"127.0.0.1"), hub.open(b"127.0.0.1")
    assert hub.next_deadline() == 110.0
    for now in (103.0, 106.0, 109.0):
        hub.advance(now)
        hub.receive(chatty, packet(PacketType.ECHO_REQ, b"x"))
        assert hub.flush().close == []
    hub.advance(110.0)
    assert hub.flush().close == [quiet]
    assert hub.next_deadline() == 119.0  # chatty was last heard at 109
    assert len(hub) == 1 and hub.idle_closed == 1
    hub.advance(119.5)
    assert hub.flush().close == [chatty]
    assert hub.next_deadline() is None


def test_busy_connections_are_spared_by_the_idle_timeout() -> None:
    hub = ServerHub(JobServer(now=0.0), idle_timeout=5)
    client, worker, sleeper, admin_conn = (hub.open(b"127.0.0.1") for _ in range(4))
    hub.receive(worker, packet(PacketType.CAN_DO, b"f") + packet(PacketType.CAN_DO, b"g"))
    hub.receive(sleeper, packet(PacketType.CAN_DO, b"other")
                + packet(PacketType.PRE_SLEEP))
    hub.receive(client, packet(PacketType.SUBMIT_JOB, b"f", b"u", b"data"))
    hub.receive(worker, packet(PacketType.GRAB_JOB))
    hub.flush()
    hub.advance(60.0)  # everyone silent for a minute
    assert hub.flush().close == [admin_conn]
    # The job ends: the client and worker have no reason left to be silent.
    handle = hub.broker.jobs()[0].handle
    hub.advance(62.0)
    hub.receive(worker, packet(PacketType.WORK_COMPLETE, handle, b"r"))
    hub.flush()
    hub.advance(64.0)
    assert hub.flush().close == []  # the worker was heard at 62; the client spared at 60
    hub.advance(65.0)
    assert hub.flush().close == [client]
    hub.advance(67.0)
    assert hub.flush().close == [worker]
    assert hub.broker.is_busy(sleeper)
    assert hub.broker.connection_ids == [sleeper]


def test_a_closed_idle_worker_gives_its_jobs_back() -> None:
    """Only possible if it was not busy; the timeout never takes a running job away."""
    broker = JobServer()
    broker.connect(1)
    broker.connect(2)
    broker.receive(1, CanDo(b"f"))
    broker.receive(2, SubmitJob(b"f", b"d", b"", background=True))
    (_, assign), = broker.receive(1, GrabJob())
    assert isinstance(assign, JobAssign)
    assert broker.is_busy(1) and not broker.is_busy(2)
    broker.receive(1, PreSleep())
    assert broker.is_busy(1)


def test_no_idle_timeout_by_default_and_no_deadline_from_it() -> None:
    hub = ServerHub(JobServer())
    hub.open()
    assert hub.next_deadline() is None
    hub.advance(1e9)
    assert hub.flush().close == []
    with pytest.raises(ValueError):
        ServerHub(idle_timeout=-1)
