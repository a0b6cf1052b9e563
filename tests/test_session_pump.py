"""The worker session's slot rule under arbitrary server answers and reports.

``WorkerSession._pump`` answers "no free slot" at once when every slot runs a
job, without asking the connections for their grabs (the usual case right
after a job arrives).  Whatever the order of JOB_ASSIGN_UNIQ, NO_JOB, NOOP,
final reports and lost connections, the rule it shortcuts must still hold after
every step: never more jobs and grabs than ``max_jobs``, and no free slot left
idle while a connection could be asked for work.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gearman_proto import RES, PacketType, encode_packet
from gearman_proto.events import WorkComplete
from gearman_proto.session import WorkerSession

KEYS = ("a", "b", "c")
GRAB = encode_packet(b"\0REQ", PacketType.GRAB_JOB_UNIQ, ())

steps = st.lists(st.tuples(st.sampled_from(("assign", "no_job", "noop", "done", "lose")),
                           st.sampled_from(KEYS), st.integers(0, 7)), max_size=60)


def _check(session: WorkerSession[str], max_jobs: int) -> None:
    grabs = sum(conn.outstanding_grabs for conn in session.connections.values())
    assert session.running + grabs <= max_jobs
    assert session.free_slots == max_jobs - session.running - grabs
    if session.free_slots > 0:
        # A free slot is only left free when no connection could use it.
        for conn in session.connections.values():
            assert conn.outstanding_grabs or conn.sleeping


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), steps)
def test_grabs_never_exceed_free_slots_and_no_slot_idles(max_jobs: int, servers: int,
                                                         script: list[tuple[str, str, int]]
                                                         ) -> None:
    session: WorkerSession[str] = WorkerSession({b"f": None}, max_jobs=max_jobs)
    keys = KEYS[:servers]
    for key in keys:
        session.connect(key)
    _check(session, max_jobs)
    handles = 0
    in_hand: list[tuple[str, bytes]] = []
    for action, key, pick in script:
        if key not in keys:
            continue
        conn = session.connections.get(key)
        if conn is None:  # lost earlier: the adapter reconnects
            session.connect(key)
        elif action == "assign" and conn.outstanding_grabs:
            handles += 1
            handle = b"H:%d" % handles
            step = session.receive_data(key, encode_packet(
                RES, PacketType.JOB_ASSIGN_UNIQ, (handle, b"f", b"u", b"x")))
            assert [(k, a.handle) for k, a in step.jobs] == [(key, handle)]
            in_hand.append((key, handle))
        elif action == "no_job" and conn.outstanding_grabs:
            session.receive_data(key, encode_packet(RES, PacketType.NO_JOB, ()))
        elif action == "noop":
            step = session.receive_data(key, encode_packet(RES, PacketType.NOOP, ()))
            assert step.writes.get(key, b"").count(GRAB) <= 1
        elif action == "done" and in_hand:
            done_key, handle = in_hand.pop(pick % len(in_hand))
            session.send(done_key, WorkComplete(handle, b"r"))
        elif action == "lose":
            session.disconnect(key, keep_slots=True)
            session.pump()  # what the adapters do next
        _check(session, max_jobs)
    for done_key, handle in in_hand:
        session.send(done_key, WorkComplete(handle, b"r"))
        _check(session, max_jobs)
    assert session.idle
