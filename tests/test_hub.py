"""The server's policy in :class:`ServerHub`, with no sockets: bytes in, decisions out.

Every rule a server flavour used to carry on its own -- refusing connections,
pausing and resuming reads, the graceful stop, the timer, what is logged --
is decided here once, so it is tested here once; ``tests/reliability/
test_server_flavours.py`` checks that each flavour carries the decisions out.
"""

from __future__ import annotations

from gearman_proto.broker import JobServer
from gearman_proto.events import CanDo, GrabJob, JobAssign, NoJob, PreSleep, SubmitJob
from gearman_proto.hub import (
    INFO,
    LINGER_BYTES,
    LINGER_SECONDS,
    TURN_BYTES,
    WARNING,
    ServerHub,
)
from gearman_proto.packets import REQ, RES, Decoder, Packet, PacketType, TextLine, encode_packet
from gearman_proto.store import MemoryStore


def packet(ptype: PacketType, *args: bytes) -> bytes:
    return encode_packet(REQ, ptype, args)


def decode(data: bytes) -> list[Packet | TextLine]:
    decoder = Decoder(RES, allow_text=True, max_packet_size=0, max_line_length=0)
    decoder.feed(data)
    items = []
    while (item := decoder.next()) is not None:
        items.append(item)
    return items


def messages(hub: ServerHub) -> list[str]:
    return [message % args for _level, message, args in hub.flush().notes]


def test_max_connections_refuses_and_logs_once_per_episode() -> None:
    hub = ServerHub(max_connections=2)
    first, _second = hub.open(b"10.0.0.1", "10.0.0.1:5000"), hub.open()
    assert not hub.may_open() and not hub.may_open()
    assert hub.refused == 2
    notes = hub.flush().notes
    assert [level for level, message, _ in notes if "refusing" in message] == [WARNING]
    hub.closed(first)
    assert hub.may_open()
    assert any("accepting connections again" in m for m in messages(hub))


def test_accept_failures_pause_and_are_logged_once_until_an_accept_succeeds() -> None:
    hub = ServerHub()
    delays = [hub.accept_failed("[Errno 24] Too many open files") for _ in range(50)]
    assert all(delay > 0 for delay in delays)
    notes = messages(hub)
    assert len([m for m in notes if "accept failed" in m]) == 1
    hub.open()
    assert any("accepting again after 50 failed accepts" in m for m in messages(hub))


def test_output_backpressure_pauses_the_client_and_the_worker_streaming_to_it() -> None:
    """Issue 11 item 7: WORK_DATA for a client that does not read pauses its worker."""
    hub = ServerHub()
    client, worker, bystander = hub.open(), hub.open(), hub.open()
    hub.receive(client, packet(PacketType.SUBMIT_JOB, b"f", b"", b"x"))
    hub.receive(worker, packet(PacketType.CAN_DO, b"f") + packet(PacketType.GRAB_JOB))
    handle = hub.broker.jobs()[0].handle
    hub.flush()
    assert hub.output_blocked(client, True) == [client]
    assert hub.output_blocked(client, True) == []  # reported once
    assert not hub.may_read(client) and hub.may_read(worker)  # results are bounded
    data = [packet(PacketType.WORK_DATA, handle, b"%d" % i) for i in range(3)]
    hub.receive(worker, b"".join(data))  # a stream is not: the worker waits too
    out = hub.flush()
    assert out.pause == [worker] and not hub.may_read(worker) and hub.may_read(bystander)
    assert decode(out.writes[client]) == [Packet(RES, PacketType.WORK_DATA, (handle, b"0"))]
    assert not out.more  # the rest waits for the client, not for another turn
    hub.output_blocked(client, False)
    out = hub.flush()
    assert sorted(out.resume) == [client, worker]
    assert decode(out.writes[client]) == [Packet(RES, PacketType.WORK_DATA, (handle, b"%d" % i))
                                          for i in (1, 2)]


def test_a_connection_waiting_for_max_client_jobs_is_paused_until_one_ends() -> None:
    hub = ServerHub(max_client_jobs=2)
    client, worker = hub.open(), hub.open()
    hub.receive(client, packet(PacketType.SUBMIT_JOB, b"f", b"", b"1")
                + packet(PacketType.SUBMIT_JOB, b"f", b"", b"2"))
    assert hub.flush().pause == [client]
    hub.receive(worker, packet(PacketType.CAN_DO, b"f") + packet(PacketType.GRAB_JOB))
    handle = hub.broker.jobs()[0].handle
    hub.flush()
    hub.receive(worker, packet(PacketType.WORK_COMPLETE, handle, b"r"))
    assert hub.flush().resume == [client]


def test_one_connection_gets_a_bounded_turn_and_the_rest_of_its_work_later() -> None:
    """Issue 11 item 8: ``status`` x 20,000 with 1,000 functions in one read built
    hundreds of megabytes of replies in one go while every other client waited."""
    hub = ServerHub()
    worker, flood, other = hub.open(), hub.open(), hub.open()
    hub.receive(worker, b"".join(packet(PacketType.CAN_DO, b"f%04d" % i) for i in range(1000)))
    hub.flush()
    hub.receive(flood, b"status\n" * 300)
    hub.receive(other, packet(PacketType.ECHO_REQ, b"ping"))
    out = hub.flush()
    one_reply = len(b"f0000\t0\t0\t1\n") * 1000 + 2
    turn = TURN_BYTES + one_reply  # a turn stops after the reply that passes the budget
    # Two turns: the read's, and the flush's turn for connections with work left.
    assert TURN_BYTES <= len(out.writes[flood]) <= 2 * turn
    assert decode(out.writes[other]) == [Packet(RES, PacketType.ECHO_RES, (b"ping",))]
    assert flood in out.pause and out.more
    replies = out.writes[flood].count(b"\n.\n")  # each reply ends with a "." line
    # Its output backs up: no more turns until it drains.
    hub.output_blocked(flood, True)
    assert not hub.flush().more
    hub.output_blocked(flood, False)
    while True:
        out = hub.flush()
        assert len(out.writes.get(flood, b"")) <= turn
        replies += out.writes.get(flood, b"").count(b"\n.\n")
        if not out.more:
            break
    assert replies == 300  # nothing lost
    assert flood in out.resume


def test_graceful_stop_hands_out_nothing_takes_nothing_and_ends_when_jobs_end() -> None:
    """Issue 11 item 6, and issue 10's drain: the rule, once."""
    store = MemoryStore()
    hub = ServerHub(JobServer(store=store), graceful_timeout=30)
    hub.advance(100.0)
    client, worker, late = hub.open(), hub.open(), hub.open()
    broker = hub.broker
    hub.receive(client, packet(PacketType.SUBMIT_JOB, b"f", b"a", b"1")
                + packet(PacketType.SUBMIT_JOB_BG, b"f", b"b", b"2"))
    hub.receive(worker, packet(PacketType.CAN_DO, b"f") + packet(PacketType.GRAB_JOB))
    handle = broker.jobs()[0].handle
    hub.flush()
    hub.stop(graceful=True, why="SIGUSR1")
    assert hub.stopping and not hub.stopped
    out = hub.flush()
    assert any("SIGUSR1: graceful stop" in message % args for _, message, args in out.notes)
    assert not hub.stopped  # a job runs
    assert out.deadline == 130.0  # the bound
    hub.receive(worker, packet(PacketType.GRAB_JOB) + packet(PacketType.PRE_SLEEP))
    hub.receive(late, packet(PacketType.SUBMIT_JOB, b"f", b"c", b"3"))
    out = hub.flush()
    assert decode(out.writes[worker]) == [Packet(RES, PacketType.NO_JOB, ())]
    ((error,),) = [decode(out.writes[late])]
    assert isinstance(error, Packet) and error.type == PacketType.ERROR
    assert error.args[0] == b"SHUTTING_DOWN"
    hub.receive(worker, packet(PacketType.WORK_COMPLETE, handle, b"done"))
    out = hub.flush()
    assert decode(out.writes[client]) == [Packet(RES, PacketType.WORK_COMPLETE,
                                                 (handle, b"done"))]
    assert hub.stopped
    assert [row.function for _key, row in store.load()] == [b"f"]  # the queued one stays


def test_graceful_stop_ends_at_the_graceful_timeout() -> None:
    hub = ServerHub(graceful_timeout=5)
    hub.advance(0.0)
    client, worker = hub.open(), hub.open()
    hub.receive(client, packet(PacketType.SUBMIT_JOB, b"f", b"", b"x"))
    hub.receive(worker, packet(PacketType.CAN_DO, b"f") + packet(PacketType.GRAB_JOB))
    hub.stop(graceful=True)
    assert hub.flush().deadline == 5.0
    hub.tick(4.9)
    assert not hub.stopped
    hub.tick(5.0)
    assert hub.stopped
    assert any("timed out" in m for m in messages(hub))


def test_an_immediate_stop_is_not_weakened_and_admin_shutdown_goes_through_stop() -> None:
    hub = ServerHub(JobServer(allow_shutdown=True))
    admin = hub.open()
    hub.receive(admin, b"shutdown graceful\n")
    out = hub.flush()
    assert out.writes[admin] == b"OK\r\n"
    assert hub.stopping and hub.stopped  # nothing ran: the drain is over at once
    hub.stop(graceful=True)
    assert hub.stopped


def test_a_protocol_error_is_answered_then_the_rest_is_read_and_dropped() -> None:
    """Issue 11 item 9: closing with 33 MiB unread sent a reset, which discards the ERROR."""
    hub = ServerHub()
    hub.advance(10.0)
    cid = hub.open(b"127.0.0.1", "127.0.0.1:4000")
    size = 33 * 1024 * 1024
    hub.receive(cid, b"\0REQ" + PacketType.ECHO_REQ.to_bytes(4, "big") + size.to_bytes(4, "big")
                + b"x" * 1000)
    out = hub.flush()
    (error,) = decode(out.writes[cid])
    assert isinstance(error, Packet) and error.args[0] == b"ARGUMENT_TOO_LARGE"
    assert out.shut == [cid] and out.close == []
    assert any("protocol error on connection 1 from 127.0.0.1:4000" in message % args
               and "ARGUMENT_TOO_LARGE" in message % args for _, message, args in out.notes)
    hub.receive(cid, b"x" * (1 << 20))  # dropped
    assert hub.flush().close == []
    hub.receive(cid, b"")  # the peer read the ERROR and closed
    assert hub.flush().close == [cid]
    assert len(hub) == 0


def test_lingering_is_bounded_in_bytes_and_in_time() -> None:
    hub = ServerHub()
    hub.advance(0.0)
    by_bytes, by_time = hub.open(), hub.open()
    for cid in (by_bytes, by_time):
        hub.receive(cid, b"\0XXX" + bytes(8))
    assert sorted(hub.flush().shut) == [by_bytes, by_time]
    hub.receive(by_bytes, b"x" * LINGER_BYTES)
    assert hub.flush().close == [by_bytes]
    assert hub.next_deadline() == LINGER_SECONDS
    hub.tick(LINGER_SECONDS)
    assert hub.flush().close == [by_time]
    assert hub.next_deadline() is None


def test_the_timer_is_rearmed_only_when_the_deadline_moves_and_after_each_tick() -> None:
    hub = ServerHub(idle_timeout=10)
    hub.advance(0.0)
    hub.open()
    out = hub.flush()
    assert out.rearm and out.deadline == 10.0
    assert not hub.flush().rearm  # asked after every batch: the timer set stands
    hub.tick(9.99)  # a timer may fire a little early: it must be armed again
    out = hub.flush()
    assert out.rearm and out.deadline == 10.0
    hub.tick(10.0)
    out = hub.flush()
    assert out.close and out.rearm and out.deadline is None


def test_a_packet_trickled_byte_by_byte_does_not_restart_the_idle_clock() -> None:
    hub = ServerHub(idle_timeout=10)
    hub.advance(0.0)
    slow, chatty = hub.open(), hub.open()
    message = packet(PacketType.ECHO_REQ, b"x" * 100)
    closed = []
    for i in range(12):
        hub.advance(float(i))
        if slow not in closed:
            hub.receive(slow, message[i:i + 1])
        hub.receive(chatty, packet(PacketType.ECHO_REQ, b"y"))
        closed += hub.flush().close
    assert closed == [slow]


def test_the_log_notes_name_the_peer_and_respect_the_level() -> None:
    hub = ServerHub(JobServer(store=_store_with(3)))
    assert any("3 stored background jobs replayed" in m for m in messages(hub))
    cid = hub.open(b"127.0.0.1", "127.0.0.1:50318")
    hub.receive(cid, b"")
    notes = messages(hub)
    assert "accepted connection 1 from 127.0.0.1:50318" in notes
    assert "connection 1 from 127.0.0.1:50318 closed by the peer" in notes
    quiet = ServerHub(log_level=WARNING)
    quiet.receive(quiet.open(), b"")
    assert quiet.flush().notes == []
    assert INFO < WARNING


def _store_with(jobs: int) -> MemoryStore:
    store = MemoryStore()
    broker = JobServer(store=store)
    broker.connect(1)
    for i in range(jobs):
        broker.receive(1, SubmitJob(b"f", b"u%d" % i, b"", background=True))
    broker.commit()
    return store


def test_a_grab_looks_at_the_functions_with_work_not_at_every_function_of_the_worker() -> None:
    """Issue 11 item 8: a worker with 10,000 functions paid ~800 us per GRAB (gearmand
    96 us) because each GRAB scanned all of them.  Counted, not timed: the worker's
    function table is not walked when fewer functions have work."""

    class CountingDict(dict):  # type: ignore[type-arg]
        walks = 0

        def values(self):  # type: ignore[no-untyped-def,override]
            CountingDict.walks += 1
            return super().values()

    broker = JobServer()
    broker.connect(1)
    broker.connect(2)
    for i in range(10_000):
        broker.receive(1, CanDo(b"f%d" % i))
    conn = broker._conns[1]
    conn.abilities = CountingDict(conn.abilities)
    broker.receive(2, SubmitJob(b"f9999", b"", b"x", background=True))
    ((_, assign),) = broker.receive(1, GrabJob())
    assert isinstance(assign, JobAssign) and assign.function == b"f9999"
    ((_, none),) = broker.receive(1, GrabJob())
    assert isinstance(none, NoJob)
    assert broker.receive(1, PreSleep()) == []
    assert CountingDict.walks <= 1  # PRE_SLEEP registers it with each function, once
