"""The job server's logic, one behaviour per test (PROTOCOL-NOTES §3 and §4).

Each test drives a :class:`JobServer` with events, as a ServerConnection would
hand them over, and checks what it answers to whom.  Where gearmand 1.1.20 was
checked by hand the test says what it did; where we differ on purpose the test
says so (the list is in ``gearman_proto/broker.py``'s docstring).
"""

from __future__ import annotations

import pytest

from gearman_proto import NeedData, admin
from gearman_proto.broker import CLIENT_ID_MAX, UNIQUE_MAX, JobServer, Output
from gearman_proto.events import (
    AdminCommand,
    AdminReply,
    AllYours,
    CanDo,
    CanDoTimeout,
    CantDo,
    ConnectionClosed,
    EchoReq,
    EchoRes,
    Error,
    Event,
    GetStatus,
    GetStatusUnique,
    GrabJob,
    GrabJobAll,
    GrabJobUniq,
    JobAssign,
    JobCreated,
    NoJob,
    Noop,
    OptionReq,
    OptionRes,
    PreSleep,
    Priority,
    ResetAbilities,
    SetClientId,
    StatusRes,
    StatusResUnique,
    SubmitJob,
    SubmitJobEpoch,
    SubmitJobSched,
    SubmitReduceJob,
    WorkComplete,
    WorkData,
    WorkException,
    WorkFail,
    WorkStatus,
    WorkWarning,
)
from gearman_proto.store import MemoryStore, StoredJob, StoreError

HIGH, NORMAL, LOW = Priority.HIGH, Priority.NORMAL, Priority.LOW
C, C2, W, W2, W3, A = 1, 2, 11, 12, 13, 99  # clients, workers, an admin connection


def make(*conns: int, **options: object) -> JobServer:
    """A server with handle prefix ``H:t`` and the given connections open."""
    server = JobServer(handle_prefix=b"H:t", **options)  # type: ignore[arg-type]
    for conn in conns:
        server.connect(conn, b"10.0.0.%d" % conn)
    return server


def submit(server: JobServer, conn: int, function: bytes = b"f", data: bytes = b"d",
           unique: bytes = b"", priority: Priority = NORMAL,
           background: bool = False) -> bytes:
    """Submit a job and return its handle (the one JOB_CREATED named)."""
    out = server.receive(conn, SubmitJob(function, data, unique, priority, background))
    assert out[0][0] == conn and isinstance(out[0][1], JobCreated), out
    return out[0][1].handle


def grab(server: JobServer, worker: int, event: Event | None = None) -> JobAssign | NoJob:
    """Send a GRAB_JOB (or the variant given) and return the single answer."""
    (to, answer), = server.receive(worker, event or GrabJob())
    assert to == worker and isinstance(answer, JobAssign | NoJob)
    return answer


def grab_handle(server: JobServer, worker: int) -> bytes:
    answer = grab(server, worker)
    assert isinstance(answer, JobAssign), answer
    return answer.handle


def ask(server: JobServer, line: bytes, conn: int = A) -> admin.AdminResult:
    """Run an admin command and parse the reply as a client would."""
    out = run_admin(server, line, conn)
    assert out[-1][0] == conn and isinstance(out[-1][1], AdminReply)
    client = admin.AdminClientConnection()
    try:
        request: admin.AdminRequest = admin.parse_command(line, allow_shutdown=True)
    except admin.AdminError:
        request = admin.Version()  # any one-line command: the reply is an ERR line
    client.send(request)
    client.receive_data(out[-1][1].text)
    result = client.next_event()
    assert not isinstance(result, NeedData)
    return result


def run_admin(server: JobServer, line: bytes, conn: int = A) -> list[Output]:
    """Send an admin line from ``conn`` (connected first if need be)."""
    if conn not in server.connection_ids:
        server.connect(conn, b"10.0.0.%d" % conn)
    return server.receive(conn, AdminCommand(line))


def raw_admin(server: JobServer, line: bytes, conn: int = A) -> bytes:
    out = run_admin(server, line, conn)
    reply = out[-1][1]
    assert isinstance(reply, AdminReply)
    return reply.text


def status(server: JobServer) -> dict[bytes, tuple[int, int, int]]:
    result = ask(server, b"status")
    assert isinstance(result, list)
    return {r.function: (r.total, r.running, r.available_workers)
            for r in result if isinstance(r, admin.StatusRow)}


def sent_to(out: list[Output], conn: int) -> list[Event]:
    return [event for to, event in out if to == conn]


# -- §4.1 priorities ---------------------------------------------------------------------


def test_fifo_within_one_priority() -> None:
    """§4.1: within one function and one priority, jobs run in submission order."""
    server = make(C, W)
    handles = [submit(server, C, data=b"%d" % i, background=True) for i in range(5)]
    server.receive(W, CanDo(b"f"))
    assert [grab_handle(server, W) for _ in range(5)] == handles


def test_high_before_normal_before_low() -> None:
    """§4.1: HIGH jobs run before NORMAL, NORMAL before LOW, whatever the order of arrival."""
    server = make(C, W)
    low = submit(server, C, priority=LOW, background=True)
    normal = submit(server, C, priority=NORMAL, background=True)
    high = submit(server, C, priority=HIGH, background=True)
    server.receive(W, CanDo(b"f"))
    assert [grab_handle(server, W) for _ in range(3)] == [high, normal, low]


def test_priority_is_global_across_a_workers_functions() -> None:
    """§4.1: every HIGH job of any of the worker's functions before any NORMAL one.

    Deliberate difference: gearmand 1.1.20 (checked by hand) walks the worker's
    functions and takes the first with any job, so registering g then f gave
    the LOW job of f before the HIGH job of g.
    """
    server = make(C, W)
    server.receive(W, CanDo(b"g"))
    server.receive(W, CanDo(b"f"))
    low_f = submit(server, C, b"f", priority=LOW, background=True)
    normal_g = submit(server, C, b"g", priority=NORMAL, background=True)
    high_g = submit(server, C, b"g", priority=HIGH, background=True)
    normal_f = submit(server, C, b"f", priority=NORMAL, background=True)
    high_f = submit(server, C, b"f", priority=HIGH, background=True)
    # Among equal priorities the oldest goes first, whichever function it has.
    assert [grab_handle(server, W) for _ in range(5)] == [high_g, high_f, normal_g,
                                                          normal_f, low_f]


def test_a_worker_only_gets_jobs_of_its_functions() -> None:
    """§4.6: a worker is only given jobs for functions it registered."""
    server = make(C, W)
    submit(server, C, b"other", background=True)
    assert grab(server, W) == NoJob()
    server.receive(W, CanDo(b"f"))
    assert grab(server, W) == NoJob()


# -- §4.2 foreground and background, handles ---------------------------------------------


def test_job_created_answers_every_submission_in_order_with_counter_handles() -> None:
    """§4.2, §4.4: one JOB_CREATED per accepted submission, handles ``prefix:N`` from 1."""
    server = make(C)
    out: list[Output] = []
    for i in range(3):
        out += server.receive(C, SubmitJob(b"f", b"%d" % i, background=i == 1))
    assert out == [(C, JobCreated(b"H:t:1")), (C, JobCreated(b"H:t:2")),
                   (C, JobCreated(b"H:t:3"))]
    default = JobServer()
    default.connect(C)
    assert default.receive(C, SubmitJob(b"f")) == [(C, JobCreated(b"H:gearman-proto:1"))]


def test_foreground_client_receives_updates_and_result() -> None:
    """§4.2, §4.9: WORK_DATA/WARNING/STATUS and the result go to the foreground client."""
    server = make(C, W)
    handle = submit(server, C)
    server.receive(W, CanDo(b"f"))
    grab_handle(server, W)
    updates: list[Event] = [WorkData(handle, b"part"), WorkWarning(handle, b"careful"),
                            WorkStatus(handle, 1, 2), WorkComplete(handle, b"result")]
    for update in updates:
        assert server.receive(W, update) == [(C, update)]
    assert server.job(handle) is None
    assert server.receive(C, GetStatus(handle)) == [(C, StatusRes(handle, False, False))]


def test_background_submitter_gets_only_the_handle() -> None:
    """§4.2: a background job's updates and result go to nobody."""
    server = make(C, W)
    handle = submit(server, C, background=True)
    server.receive(W, CanDo(b"f"))
    grab_handle(server, W)
    assert server.receive(W, WorkStatus(handle, 1, 2)) == []
    assert server.receive(W, WorkComplete(handle, b"r")) == []
    assert server.job_count == 0


def test_work_fail_from_a_worker_is_final() -> None:
    """§4.9: WORK_FAIL is forwarded and the job is gone; it is never re-run."""
    server = make(C, W)
    handle = submit(server, C)
    server.receive(W, CanDo(b"f"))
    grab_handle(server, W)
    assert server.receive(W, WorkFail(handle)) == [(C, WorkFail(handle))]
    assert grab(server, W) == NoJob()
    assert server.job_count == 0


def test_a_connection_attached_twice_gets_everything_twice() -> None:
    """§4.3: as gearmand 1.1.20 (checked by hand), each attachment gets its own copy."""
    server = make(C, W)
    handle = submit(server, C, unique=b"k")
    assert submit(server, C, unique=b"k") == handle
    server.receive(W, CanDo(b"f"))
    grab_handle(server, W)
    assert server.receive(W, WorkData(handle, b"x")) == [(C, WorkData(handle, b"x"))] * 2
    assert server.receive(W, WorkComplete(handle, b"r")) == [(C, WorkComplete(handle, b"r"))] * 2


# -- §4.3 unique coalescing --------------------------------------------------------------


def test_same_function_and_unique_coalesce_while_queued_or_running() -> None:
    """§4.3: a second submission with the same (function, unique) gets the existing handle."""
    server = make(C, C2, W)
    first = submit(server, C, unique=b"u", background=True)
    assert submit(server, C2, unique=b"u", data=b"other", background=True) == first
    assert server.job_count == 1
    server.receive(W, CanDo(b"f"))
    grab_handle(server, W)
    assert submit(server, C2, unique=b"u") == first  # running: still coalesced
    assert server.receive(W, WorkComplete(first, b"r")) == [(C2, WorkComplete(first, b"r"))]
    # Once finished, the unique is free again.
    assert submit(server, C, unique=b"u", background=True) != first


def test_unique_is_per_function() -> None:
    """§4.3: the key is (function, unique)."""
    server = make(C)
    assert submit(server, C, b"f", unique=b"u") != submit(server, C, b"g", unique=b"u")


def test_foreground_submitter_attaches_to_a_background_job() -> None:
    """§4.3: gearmand 1.1.20 (checked by hand) attaches the foreground submitter."""
    server = make(C, C2, W)
    handle = submit(server, C, unique=b"u", background=True)
    assert submit(server, C2, unique=b"u", priority=HIGH) == handle
    info = server.job(handle)
    assert info is not None and info.clients == (C2,) and info.priority == NORMAL
    server.receive(W, CanDo(b"f"))
    grab_handle(server, W)
    assert server.receive(W, WorkComplete(handle, b"r")) == [(C2, WorkComplete(handle, b"r"))]


def test_empty_unique_never_coalesces() -> None:
    """§4.3: an empty unique id makes every submission a new job."""
    server = make(C)
    assert submit(server, C, background=True) != submit(server, C, background=True)


def test_dash_unique_coalesces_on_the_data() -> None:
    """§4.3: unique ``-`` uses the data as the key; empty data never coalesces.

    gearmand 1.1.20 (checked by hand) keeps ``-`` jobs apart from explicit
    uniques: ``-`` with data X does not meet unique X, and the worker sees ``-``.
    """
    server = make(C, W)
    dash = submit(server, C, data=b"X", unique=b"-", background=True)
    assert submit(server, C, data=b"X", unique=b"-", background=True) == dash
    assert submit(server, C, data=b"Y", unique=b"-", background=True) != dash
    assert submit(server, C, data=b"zz", unique=b"X", background=True) != dash
    assert submit(server, C, b"g", data=b"X", unique=b"-", background=True) != dash
    empty = submit(server, C, data=b"", unique=b"-", background=True)
    assert submit(server, C, data=b"", unique=b"-", background=True) != empty
    server.receive(W, CanDo(b"f"))
    assert grab(server, W, GrabJobUniq()) == JobAssign(dash, b"f", b"X", b"-")


def test_coalescing_skips_the_maxqueue_check() -> None:
    """§4.3, §4.14: no new job is created, so the queue limit does not apply."""
    server = make(C)
    submit(server, C, unique=b"u", background=True)
    assert ask(server, b"maxqueue f 1") == admin.AdminOk()
    assert submit(server, C, unique=b"u", background=True) == b"H:t:1"
    out = server.receive(C, SubmitJob(b"f", b"d", b"v", background=True))
    assert out == [(C, Error(b"QUEUE_ERROR", b"Job queue is full"))]


def test_unique_longer_than_64_bytes_is_refused() -> None:
    """§4.3: gearmand 1.1.20 accepts 64 bytes and refuses 65 (checked by hand).

    It truncates a 64-byte unique to 63 on storage; we keep it whole.  The
    reducer is held to the same limit.
    """
    server = make(C, W)
    handle = submit(server, C, unique=b"u" * UNIQUE_MAX, background=True)
    too_long = Error(b"ARGUMENT_TOO_LARGE", b"Unique value too large")
    assert server.receive(C, SubmitJob(b"f", b"d", b"u" * 65)) == [(C, too_long)]
    assert server.receive(C, SubmitReduceJob(b"f", b"r" * 65, b"d")) == [(C, too_long)]
    assert server.receive(C, SubmitJobEpoch(b"f", 0, b"d", b"u" * 65)) == [(C, too_long)]
    assert server.job_count == 1
    server.receive(W, CanDo(b"f"))
    assert grab(server, W, GrabJobUniq()) == JobAssign(handle, b"f", b"d", b"u" * 64)


# -- §4.5 PRE_SLEEP and NOOP -------------------------------------------------------------


def test_pre_sleep_with_work_waiting_is_answered_noop_at_once() -> None:
    """§4.5: the race between NO_JOB and PRE_SLEEP is closed by an immediate NOOP."""
    server = make(C, W)
    server.receive(W, CanDo(b"f"))
    submit(server, C, background=True)
    assert server.receive(W, PreSleep()) == [(W, Noop())]


def test_new_work_wakes_each_sleeping_worker_of_the_function_once() -> None:
    """§4.5: NOOP to sleeping workers of that function not NOOPed since they slept."""
    server = make(C, W, W2, W3)
    for worker in (W, W2):
        server.receive(worker, CanDo(b"f"))
        assert server.receive(worker, PreSleep()) == []
    server.receive(W3, CanDo(b"g"))
    server.receive(W3, PreSleep())
    out = server.receive(C, SubmitJob(b"f", background=True))
    assert out == [(C, JobCreated(b"H:t:1")), (W, Noop()), (W2, Noop())]
    assert sent_to(server.receive(C, SubmitJob(b"f", background=True)), W) == []
    # Sleeping again makes it NOOP-able again (and there is work, so at once).
    assert server.receive(W, PreSleep()) == [(W, Noop())]


def test_worker_wakeup_limits_and_rotates_the_noops() -> None:
    """§4.5: ``worker_wakeup=1`` wakes one sleeper per job, a different one each time.

    gearmand 1.1.20 with ``-w 1`` and three sleepers (checked by hand) woke a
    different worker for each of three jobs.
    """
    server = make(C, W, W2, W3, worker_wakeup=1)
    for worker in (W, W2, W3):
        server.receive(worker, CanDo(b"f"))
        server.receive(worker, PreSleep())
    woken = []
    for _ in range(3):
        out = server.receive(C, SubmitJob(b"f", background=True))
        noops = [to for to, event in out if isinstance(event, Noop)]
        assert len(noops) == 1
        woken += noops
    assert sorted(woken) == [W, W2, W3]
    out = server.receive(C, SubmitJob(b"f", background=True))
    assert [e for _, e in out if isinstance(e, Noop)] == []  # all NOOPed already


def test_noop_never_goes_to_a_worker_that_is_not_sleeping() -> None:
    """§4.5: no PRE_SLEEP, no NOOP; and any GRAB clears the sleep."""
    server = make(C, W, W2)
    server.receive(W, CanDo(b"f"))
    server.receive(W2, CanDo(b"f"))
    server.receive(W2, PreSleep())
    assert grab(server, W2, GrabJobAll()) == NoJob()  # awake again
    assert server.receive(C, SubmitJob(b"f", background=True)) == [(C, JobCreated(b"H:t:1"))]


def test_can_do_while_asleep_wakes_the_worker_if_that_function_has_work() -> None:
    """§4.5: deliberate difference -- gearmand 1.1.20 (checked by hand) leaves it asleep."""
    server = make(C, W)
    server.receive(W, CanDo(b"f"))
    server.receive(W, PreSleep())
    submit(server, C, b"g", background=True)
    assert server.receive(W, CanDo(b"g")) == [(W, Noop())]
    assert server.receive(W, CanDo(b"h")) == []


# -- §4.6 GRAB_JOB variants --------------------------------------------------------------


def test_grab_variants_choose_the_assign_packet() -> None:
    """§4.6: GRAB_JOB → JOB_ASSIGN, _UNIQ → with unique, _ALL → with reducer for reduce jobs."""
    server = make(C, W)
    server.receive(W, CanDo(b"f"))
    plain = submit(server, C, unique=b"u1", data=b"a")
    uniq = submit(server, C, unique=b"u2", data=b"b")
    all_plain = submit(server, C, unique=b"u3", data=b"c")
    out = server.receive(C, SubmitReduceJob(b"f", b"red", b"e", b"u4"))
    reduce_job = out[0][1].handle  # type: ignore[attr-defined]
    out = server.receive(C, SubmitReduceJob(b"f", b"", b"g", b"u5", background=True))
    empty_reducer = out[0][1].handle  # type: ignore[attr-defined]
    assert grab(server, W, GrabJob()) == JobAssign(plain, b"f", b"a")
    assert grab(server, W, GrabJobUniq()) == JobAssign(uniq, b"f", b"b", b"u2")
    assert grab(server, W, GrabJobAll()) == JobAssign(all_plain, b"f", b"c", b"u3")
    assert grab(server, W, GrabJobAll()) == JobAssign(reduce_job, b"f", b"e", b"u4", b"red")
    # gearmand sends JOB_ASSIGN_ALL only for a non-empty reducer.
    assert grab(server, W, GrabJobAll()) == JobAssign(empty_reducer, b"f", b"g", b"u5")
    assert grab(server, W, GrabJobAll()) == NoJob()


def test_reduce_jobs_are_normal_priority() -> None:
    """§2: SUBMIT_REDUCE_JOB(_BACKGROUND) always queue at NORMAL."""
    server = make(C)
    out = server.receive(C, SubmitReduceJob(b"f", b"r", b"d", background=True))
    info = server.job(out[0][1].handle)  # type: ignore[attr-defined]
    assert info is not None and info.priority == NORMAL and info.background


# -- §4.7, §4.8 requeue, timeouts, retries -----------------------------------------------


def test_worker_disconnect_requeues_at_the_end_with_status_reset() -> None:
    """§4.8: the job goes to the end of its priority queue, status 0/0, retries + 1.

    Its foreground client is not told anything.
    """
    server = make(C, W, W2)
    server.receive(W, CanDo(b"f"))
    server.receive(W2, CanDo(b"f"))
    first = submit(server, C)
    second = submit(server, C)
    assert grab_handle(server, W) == first
    server.receive(W, WorkStatus(first, 3, 4))
    assert server.disconnect(W) == []
    info = server.job(first)
    assert info is not None
    assert (info.state, info.retries, info.numerator, info.denominator) == ("queued", 1, 0, 0)
    assert [grab_handle(server, W2) for _ in range(2)] == [second, first]
    assert server.receive(C, GetStatus(first)) == [(C, StatusRes(first, True, True, 0, 0))]


def test_requeue_wakes_sleeping_workers() -> None:
    """§4.5, §4.8: a requeued job is new work for sleeping workers of its function."""
    server = make(C, W, W2)
    server.receive(W, CanDo(b"f"))
    server.receive(W2, CanDo(b"f"))
    submit(server, C)
    grab_handle(server, W)
    assert server.receive(W2, PreSleep()) == []
    assert server.disconnect(W) == [(W2, Noop())]


def test_cant_do_requeues_only_the_jobs_of_that_function() -> None:
    """§4.7: CANT_DO gives back running jobs of the removed function only."""
    server = make(C, W)
    server.receive(W, CanDo(b"f"))
    server.receive(W, CanDo(b"g"))
    job_f = submit(server, C, b"f")
    job_g = submit(server, C, b"g")
    grab_handle(server, W)
    grab_handle(server, W)
    server.receive(W, CantDo(b"f"))
    info_f, info_g = server.job(job_f), server.job(job_g)
    assert info_f is not None and info_f.state == "queued" and info_f.retries == 1
    assert info_g is not None and info_g.state == "running"
    # The worker no longer holds it: its late result is refused.
    assert server.receive(W, WorkComplete(job_f, b"late")) == [
        (W, Error(b"JOB_NOT_FOUND", b"Job given in work result not found"))]


def test_reset_abilities_requeues_everything_the_worker_runs() -> None:
    """§4.7: RESET_ABILITIES is CANT_DO for every function."""
    server = make(C, W)
    server.receive(W, CanDo(b"f"))
    server.receive(W, CanDo(b"g"))
    handles = [submit(server, C, b"f"), submit(server, C, b"g")]
    grab_handle(server, W)
    grab_handle(server, W)
    server.receive(W, ResetAbilities())
    assert [server.job(h).state for h in handles] == ["queued", "queued"]  # type: ignore[union-attr]
    assert grab(server, W) == NoJob()
    assert status(server) == {b"f": (1, 0, 0), b"g": (1, 0, 0)}


def test_can_do_timeout_requeues_a_job_that_overruns() -> None:
    """§4.7: milliseconds; timer per job from assignment; expiry requeues, fired by advance().

    gearmand 1.1.20 (checked by hand, 500 ms) requeued the job with retries 1
    and answered the slow worker's late WORK_COMPLETE with JOB_NOT_FOUND.
    """
    server = make(C, W, W2, now=1000.0)
    server.receive(W, CanDoTimeout(b"f", 1500))
    handle = submit(server, C)
    assert server.next_deadline() is None
    grab_handle(server, W)
    assert server.next_deadline() == 1001.5
    assert server.advance(1001.4) == []
    assert server.job(handle).state == "running"  # type: ignore[union-attr]
    server.receive(W2, CanDo(b"f"))
    server.receive(W2, PreSleep())
    assert server.advance(1001.5) == [(W2, Noop())]
    info = server.job(handle)
    assert info is not None and info.state == "queued" and info.retries == 1
    assert server.receive(W, WorkComplete(handle, b"late")) == [
        (W, Error(b"JOB_NOT_FOUND", b"Job given in work result not found"))]
    assert server.next_deadline() is None


def test_can_do_timeout_timer_is_per_job_and_stops_when_the_job_ends() -> None:
    """§4.7: each job has its own timer; a finished job's timer never fires; 0 = none."""
    server = make(C, W, now=0.0)
    server.receive(W, CanDoTimeout(b"f", 1000))
    first, second = submit(server, C), submit(server, C)
    grab_handle(server, W)
    server.advance(0.5)
    grab_handle(server, W)
    server.receive(W, WorkComplete(first, b""))
    assert server.next_deadline() == 1.5
    server.advance(1.5)
    assert server.job(second).state == "queued"  # type: ignore[union-attr]
    server.receive(W, CanDoTimeout(b"f", 0))
    grab_handle(server, W)
    assert server.next_deadline() is None


def test_a_timer_from_an_earlier_run_does_not_fire_on_the_next() -> None:
    """§4.7: a requeued job taken again without a timeout keeps running past the old deadline."""
    server = make(C, W, W2, now=0.0)
    server.receive(W, CanDoTimeout(b"f", 1000))
    server.receive(W2, CanDo(b"f"))
    handle = submit(server, C)
    grab_handle(server, W)
    server.receive(W, CantDo(b"f"))  # requeued; nobody asks next_deadline() in between
    assert grab_handle(server, W2) == handle
    assert server.advance(5.0) == []
    info = server.job(handle)
    assert info is not None and info.state == "running" and info.worker == W2


@pytest.mark.parametrize("retries", [None, 0, 2])
def test_job_retries_limits_requeues(retries: int | None) -> None:
    """§4.8: None = requeue forever, 0 = the first loss fails it, N = at most N requeues.

    gearmand 1.1.20 counts runs instead (checked by hand: ``-j 1`` failed the
    job at its first loss, ``-j 2`` at its second, ``-j 0`` never).
    """
    store = MemoryStore()
    server = make(C, C2, job_retries=retries, store=store)
    handle = submit(server, C2, unique=b"u", background=True)  # stored
    assert submit(server, C, unique=b"u") == handle  # and C waits for it
    assert len(store) == 1
    losses = 0
    while True:
        server.connect(W)
        server.receive(W, CanDo(b"f"))
        assert grab_handle(server, W) == handle
        out = server.disconnect(W)
        losses += 1
        if out:
            break
        assert server.job(handle).retries == losses  # type: ignore[union-attr]
        if losses == 10:
            assert retries is None
            return
    assert out == [(C, WorkFail(handle))]
    assert losses == retries + 1  # type: ignore[operator]
    assert server.job(handle) is None and len(store) == 0


def test_lost_foreground_job_with_no_clients_left_is_discarded() -> None:
    """§4.8: nobody waits for it, so it is not requeued when its worker goes."""
    server = make(C, W)
    server.receive(W, CanDo(b"f"))
    handle = submit(server, C)
    grab_handle(server, W)
    server.disconnect(C)
    assert server.job(handle) is not None  # running: it may finish into the void
    assert server.receive(W, WorkData(handle, b"x")) == []
    server.disconnect(W)
    assert server.job(handle) is None and server.job_count == 0


def test_client_disconnect_discards_its_queued_foreground_job() -> None:
    """§4.8: a queued job nobody waits for is never assigned.

    Deliberate difference: it leaves at once (``status`` stops counting it),
    where gearmand 1.1.20 (checked by hand) keeps it flagged in ``show jobs``
    and attaches a later submitter of the same unique to it, who then waits
    forever.  Here that submitter gets a fresh job.
    """
    server = make(C, C2, W)
    handle = submit(server, C, unique=b"u")
    assert status(server) == {b"f": (1, 0, 0)}
    server.receive(C, ConnectionClosed())
    assert server.job(handle) is None
    assert status(server) == {b"f": (0, 0, 0)}
    fresh = submit(server, C2, unique=b"u")
    assert fresh != handle
    server.receive(W, CanDo(b"f"))
    assert grab_handle(server, W) == fresh


def test_client_disconnect_detaches_only_that_client() -> None:
    """§4.8: another client still waits; a background job is unaffected."""
    server = make(C, C2, W)
    shared = submit(server, C, unique=b"u")
    assert submit(server, C2, unique=b"u") == shared
    background = submit(server, C, unique=b"b", background=True)
    assert submit(server, C, unique=b"b") == background
    server.disconnect(C)
    assert server.job(shared).clients == (C2,)  # type: ignore[union-attr]
    assert server.job(background).clients == ()  # type: ignore[union-attr]
    server.receive(W, CanDo(b"f"))
    assert {grab_handle(server, W), grab_handle(server, W)} == {shared, background}


def test_work_for_a_job_the_worker_does_not_hold_is_job_not_found() -> None:
    """§4.8: gearmand 1.1.20's texts (checked by hand); the connection carries on."""
    server = make(C, W, W2)
    server.receive(W, CanDo(b"f"))
    handle = submit(server, C)
    grab_handle(server, W)
    expected = {
        WorkComplete(handle, b""): b"Job given in work result not found",
        WorkFail(handle): b"Job given in work result not found",
        WorkStatus(handle, 1, 2): b"Job given in work result not found",
        WorkData(handle, b""): b"Job does not exist on server",
        WorkWarning(handle, b""): b"Job does not exist on server",
        WorkException(handle, b""): b"An exception was received for a job that does not exist",
    }
    for event, text in expected.items():
        assert server.receive(W2, event) == [(W2, Error(b"JOB_NOT_FOUND", text))]
    assert server.receive(W2, EchoReq(b"still here")) == [(W2, EchoRes(b"still here"))]
    assert server.receive(W, WorkComplete(handle, b"r")) == [(C, WorkComplete(handle, b"r"))]


# -- §4.13 SUBMIT_JOB_EPOCH --------------------------------------------------------------


def test_epoch_job_runs_when_due_and_wakes_sleepers_on_time() -> None:
    """§4.13: background, NORMAL, not runnable before its epoch; NOOP at the due time.

    Deliberate difference: gearmand 1.1.20 has no timer, and (checked by hand)
    answers PRE_SLEEP with NOOP at once even when the only job is not yet due.
    """
    server = make(C, W, now=100.0)
    server.receive(W, CanDo(b"f"))
    out = server.receive(C, SubmitJobEpoch(b"f", 160, b"later"))
    handle = out[0][1].handle  # type: ignore[attr-defined]
    info = server.job(handle)
    assert info is not None and info.state == "scheduled" and info.background
    assert info.priority == NORMAL and info.epoch == 160
    assert status(server) == {b"f": (1, 0, 1)}  # counted, as gearmand
    assert grab(server, W) == NoJob()
    assert server.receive(W, PreSleep()) == []
    assert server.next_deadline() == 160
    assert server.advance(159.9) == []
    assert server.advance(160) == [(W, Noop())]
    assert grab(server, W) == JobAssign(handle, b"f", b"later")
    assert server.next_deadline() is None


def test_epoch_in_the_past_is_runnable_at_once() -> None:
    """§4.13: now >= epoch means runnable."""
    server = make(C, W, now=100.0)
    server.receive(W, CanDo(b"f"))
    server.receive(W, PreSleep())
    out = server.receive(C, SubmitJobEpoch(b"f", 100, b"now"))
    assert out == [(C, JobCreated(b"H:t:1")), (W, Noop())]


# -- §4.14 maxqueue ----------------------------------------------------------------------


def test_maxqueue_refuses_a_new_job_when_the_function_is_full() -> None:
    """§4.14: limit per priority against the function's total (queued + running).

    gearmand 1.1.20 (checked by hand): ``maxqueue mq 0 3 0`` let a HIGH job in
    and refused a NORMAL one with four jobs present.
    """
    server = make(C, W)
    server.receive(W, CanDo(b"f"))
    submit(server, C, background=True)
    grab_handle(server, W)  # running jobs count too
    assert ask(server, b"maxqueue f 0 2 0") == admin.AdminOk()
    submit(server, C, background=True)
    full = [(C, Error(b"QUEUE_ERROR", b"Job queue is full"))]
    assert server.receive(C, SubmitJob(b"f", background=True)) == full
    assert server.receive(C, SubmitJobEpoch(b"f", 0)) == full
    submit(server, C, priority=HIGH, background=True)  # HIGH is unlimited
    assert ask(server, b"maxqueue f 1") == admin.AdminOk()
    assert server.receive(C, SubmitJob(b"f", priority=HIGH)) == full
    assert ask(server, b"maxqueue f") == admin.AdminOk()  # back to unlimited
    submit(server, C, priority=LOW)


def test_maxqueue_for_an_unknown_function_is_ignored() -> None:
    """§3.2: gearmand 1.1.20 (checked by hand) answers OK and forgets it."""
    server = make(C)
    assert ask(server, b"maxqueue nope 1") == admin.AdminOk()
    submit(server, C, b"nope")
    submit(server, C, b"nope")


# -- §4.9, §4.10 exceptions --------------------------------------------------------------


def test_option_exceptions_is_the_only_option() -> None:
    """§4.10: case-insensitive, echoed as sent; anything else is UNKNOWN_OPTION."""
    server = make(C)
    assert server.receive(C, OptionReq(b"EXCEPTIONS")) == [(C, OptionRes(b"EXCEPTIONS"))]
    assert server.receive(C, OptionReq(b"foo")) == [
        (C, Error(b"UNKNOWN_OPTION", b"Server does not recognize given option"))]


def test_work_exception_only_reaches_clients_that_asked() -> None:
    """§4.9: WORK_EXCEPTION to clients with the option, WORK_FAIL to the rest.

    As gearmand 1.1.20, checked by hand with two clients on one unique.
    """
    server = make(C, C2, W)
    server.receive(C, OptionReq(b"exceptions"))
    handle = submit(server, C, unique=b"u")
    submit(server, C2, unique=b"u")
    server.receive(W, CanDo(b"f"))
    grab_handle(server, W)
    assert server.receive(W, WorkException(handle, b"boom")) == [
        (C, WorkException(handle, b"boom")), (C2, WorkFail(handle))]
    assert server.job_count == 0


def test_server_wide_exceptions_option() -> None:
    """§4.9: like gearmand --exceptions, every client gets WORK_EXCEPTION."""
    server = make(C, W, exceptions=True)
    handle = submit(server, C)
    server.receive(W, CanDo(b"f"))
    grab_handle(server, W)
    assert server.receive(W, WorkException(handle, b"e")) == [(C, WorkException(handle, b"e"))]


# -- §4.11, §4.12 status, echo, client id, refused packets -------------------------------


def test_get_status_reports_known_running_and_progress() -> None:
    """§4.11: known while queued or running, running once assigned, the last WORK_STATUS."""
    server = make(C, W)
    handle = submit(server, C, background=True)
    assert server.receive(C, GetStatus(handle)) == [(C, StatusRes(handle, True, False, 0, 0))]
    server.receive(W, CanDo(b"f"))
    grab_handle(server, W)
    server.receive(W, WorkStatus(handle, 3, 7))
    assert server.receive(C, GetStatus(handle)) == [(C, StatusRes(handle, True, True, 3, 7))]
    assert server.receive(C, GetStatus(b"H:t:99")) == [(C, StatusRes(b"H:t:99", False, False))]


def test_get_status_unique_counts_waiting_clients() -> None:
    """§4.11: by unique alone, the unique echoed, waiting = attached foreground clients.

    gearmand 1.1.20 (checked by hand) reported 3/7 progress and 2 waiting.
    """
    server = make(C, C2, W)
    submit(server, C, b"g", unique=b"k", background=True)
    submit(server, C, unique=b"k")
    submit(server, C2, b"g", unique=b"k")
    submit(server, C2, b"g", unique=b"k")
    out = server.receive(C, GetStatusUnique(b"k"))
    assert out == [(C, StatusResUnique(b"k", True, False, 0, 0, 2))]  # the oldest: g
    assert server.receive(C, GetStatusUnique(b"nope")) == [
        (C, StatusResUnique(b"nope", False, False, 0, 0, 0))]


def test_echo_returns_the_bytes_unchanged() -> None:
    """§4.12: ECHO_RES carries exactly the ECHO_REQ data."""
    server = make(C)
    assert server.receive(C, EchoReq(b"a\0b")) == [(C, EchoRes(b"a\0b"))]


def test_set_client_id_shows_in_workers() -> None:
    """§4.12: shown by ``workers``, ``-`` by default, cut to 127 bytes as gearmand 1.1.20."""
    server = make(C, W)
    server.receive(W, SetClientId(b"x" * 200))
    server.receive(W, CanDo(b"f"))
    assert ask(server, b"workers") == [
        admin.WorkerRow(C, b"10.0.0.1", b"-", ()),
        admin.WorkerRow(W, b"10.0.0.11", b"x" * CLIENT_ID_MAX, (b"f",)),
        admin.WorkerRow(A, b"10.0.0.99", b"-", ())]


@pytest.mark.parametrize("event", [
    SubmitJobSched(b"f", b"", 0, 0, 1, 1, 0, b"d"), AllYours(), JobCreated(b"H:t:1"), Noop()])
def test_packets_gearmand_does_not_expect(event: Event) -> None:
    """§4.12, §4.13: SUBMIT_JOB_SCHED, ALL_YOURS and server-only packets are refused.

    gearmand 1.1.20 (checked by hand) answers ERROR INVALID_COMMAND.
    """
    server = make(C)
    assert server.receive(C, event) == [(C, Error(b"INVALID_COMMAND", b"Command not expected"))]
    assert server.job_count == 0


# -- §3 admin ----------------------------------------------------------------------------


def test_status_and_prioritystatus_count_what_is_there() -> None:
    """§3.2: TOTAL = queued + running; prioritystatus counts waiting jobs per priority."""
    server = make(C, W, W2)
    server.receive(W, CanDo(b"f"))
    server.receive(W2, CanDo(b"f"))
    server.receive(W2, CanDo(b"g"))
    for priority in (HIGH, NORMAL, NORMAL, LOW):
        submit(server, C, priority=priority, background=True)
    grab_handle(server, W)  # the HIGH one
    assert ask(server, b"create function idle") == admin.AdminOk()
    assert ask(server, b"status") == [admin.StatusRow(b"f", 4, 1, 2),
                                      admin.StatusRow(b"g", 0, 0, 1),
                                      admin.StatusRow(b"idle", 0, 0, 0)]
    assert ask(server, b"prioritystatus") == [admin.PriorityStatusRow(b"f", 0, 2, 1, 2),
                                              admin.PriorityStatusRow(b"g", 0, 0, 0, 1),
                                              admin.PriorityStatusRow(b"idle", 0, 0, 0, 0)]
    # Functions outlive their workers (§3.2).
    server.disconnect(W2)
    assert status(server)[b"g"] == (0, 0, 0)


def test_workers_lists_every_connection_and_forgets_departed_ones() -> None:
    """§3.2: clients too; conn id as FD; a departed one disappears at once.

    Functions newest first, as gearmand.  CAN_DO twice is one registration
    (gearmand 1.1.20 lists it twice: a deliberate difference).
    """
    server = make(C, W, A)
    server.receive(W, CanDo(b"f"))
    server.receive(W, CanDo(b"g"))
    server.receive(W, CanDo(b"f"))
    assert ask(server, b"workers") == [admin.WorkerRow(C, b"10.0.0.1", b"-", ()),
                                       admin.WorkerRow(W, b"10.0.0.11", b"-", (b"g", b"f")),
                                       admin.WorkerRow(A, b"10.0.0.99", b"-", ())]
    assert status(server)[b"f"] == (0, 0, 1)
    server.disconnect(W)
    assert [row.fd for row in ask(server, b"workers")] == [C, A]  # type: ignore[union-attr]
    assert raw_admin(server, b"workers") == b"1 10.0.0.1 - :\n99 10.0.0.99 - :\n.\n"


def test_show_jobs_and_show_unique_jobs() -> None:
    """§3.2: one line per job, with retries; QUEUED = 1 for background jobs.

    gearmand 1.1.20 (checked by hand) shows QUEUED 1 for background jobs even
    with its builtin queue, 0 for foreground ones, and every job's unique in
    ``show unique jobs``, empty ones included.
    """
    server = make(C, W, A)
    first = submit(server, C, unique=b"u1", background=True)
    second = submit(server, C)
    server.receive(W, CanDo(b"f"))
    grab_handle(server, W)
    server.disconnect(W)
    assert ask(server, b"show jobs") == [admin.JobRow(first, 1, False, True),
                                         admin.JobRow(second, 0, False, False)]
    assert raw_admin(server, b"show unique jobs") == b"u1\n\n.\n"


def test_cancel_job_fails_it_for_its_clients_and_removes_it() -> None:
    """§3.2: WORK_FAIL to attached clients, out of the queue and the store."""
    store = MemoryStore()
    server = make(C, W, A, store=store)
    handle = submit(server, C, unique=b"u", background=True)
    submit(server, C, unique=b"u")
    out = server.receive(A, AdminCommand(b"cancel job " + handle))
    assert out == [(C, WorkFail(handle)), (A, AdminReply(b"OK\r\n"))]
    assert server.job(handle) is None and len(store) == 0
    server.receive(W, CanDo(b"f"))
    assert grab(server, W) == NoJob()
    assert raw_admin(server, b"cancel job " + handle) == b"ERR UNKNOWN_JOB\r\n"


def test_cancel_job_of_a_running_job_detaches_its_worker() -> None:
    """§3.2: the worker is not interrupted; its later WORK_* are JOB_NOT_FOUND.

    Deliberate difference: gearmand 1.1.20 (checked by hand) silently accepts
    them and keeps counting the job in ``status`` until it finishes.
    """
    server = make(C, W, A)
    server.receive(W, CanDo(b"f"))
    handle = submit(server, C)
    grab_handle(server, W)
    assert ask(server, b"cancel job " + handle) == admin.AdminOk()
    assert status(server) == {b"f": (0, 0, 1)}
    assert server.receive(W, WorkComplete(handle, b"r")) == [
        (W, Error(b"JOB_NOT_FOUND", b"Job given in work result not found"))]


def test_create_and_drop_function() -> None:
    """§3.2: gearmand 1.1.20's exact ERR lines (checked by hand).

    Dropping a function with queued jobs fails those jobs; gearmand 1.1.20
    answers OK and orphans them (a deliberate difference).
    """
    server = make(C, W, A)
    assert raw_admin(server, b"create function cf") == b"OK\r\n"
    assert raw_admin(server, b"create function cf") == b"OK\r\n"
    assert raw_admin(server, b"drop function cf") == b"OK\r\n"
    assert raw_admin(server, b"drop function cf") == b"ERR function not found\r\n"
    server.receive(W, CanDo(b"f"))
    busy = b"ERR there are still connected workers or executing clients\r\n"
    assert raw_admin(server, b"drop function f") == busy
    handle = submit(server, C)
    grab_handle(server, W)
    server.receive(W, CantDo(b"f"))  # requeued; still no running job now
    waiting = submit(server, C, background=True)
    out = server.receive(A, AdminCommand(b"drop function f"))
    assert out == [(C, WorkFail(handle)), (A, AdminReply(b"OK\r\n"))]
    assert server.job(waiting) is None and server.job_count == 0
    assert status(server) == {}


def test_getpid_version_verbose() -> None:
    """§3.2: ``OK value\\n`` replies with what the server was built with."""
    server = make(A, pid=4242, version=b"1.2.3", verbose=b"INFO")
    assert raw_admin(server, b"getpid") == b"OK 4242\n"
    assert raw_admin(server, b"version") == b"OK 1.2.3\n"
    assert raw_admin(server, b"VERBOSE") == b"OK INFO\n"


def test_shutdown_is_opt_in() -> None:
    """§3.3: removed in gearmand 1.1.15 (1.1.20 answers UNKNOWN_COMMAND, checked by hand)."""
    server = make(A)
    assert raw_admin(server, b"shutdown") == (
        b"ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n")
    assert server.shutdown_requested is None
    allowed = make(A, allow_shutdown=True)
    requested = []
    for line in (b"shutdown graceful", b"shutdown", b"shutdown graceful"):
        assert raw_admin(allowed, line) == b"OK\r\n"
        requested.append(allowed.shutdown_requested)
    # An immediate request is not weakened by a later graceful one.
    assert requested == ["graceful", "immediate", "immediate"]


def test_admin_errors_are_formatted_as_gearmand() -> None:
    """§3.2: unknown commands and show arguments."""
    server = make(A)
    assert raw_admin(server, b"foo bar") == b"ERR UNKNOWN_COMMAND Unknown+server+commandfoo\r\n"
    assert raw_admin(server, b"show foo") == b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"


# -- §4.16 the store and durability ------------------------------------------------------


def test_only_background_jobs_are_stored_until_they_end() -> None:
    """§4.16: a row per background job; removed on complete, fail or exception."""
    store = MemoryStore()
    server = make(C, W, store=store)
    foreground = submit(server, C)
    for i in range(3):
        submit(server, C, data=b"%d" % i, background=True)
    assert [row.data for row in store.rows.values()] == [b"0", b"1", b"2"]
    server.receive(W, CanDo(b"f"))
    assert grab_handle(server, W) == foreground
    server.receive(W, WorkComplete(foreground, b""))
    assert len(store) == 3
    for left, end in ((2, WorkComplete), (1, WorkFail), (0, WorkException)):
        handle = grab_handle(server, W)
        assert len(store) == left + 1  # running jobs stay stored: at-least-once
        server.receive(W, end(handle))
        assert len(store) == left


def test_a_restarted_server_replays_the_store() -> None:
    """§4.16: rows come back as background jobs, priority and epoch kept, new handles.

    Rows are keyed by the store, not by (unique, function): two background
    jobs never overwrite each other (gearmand issue #80).
    """
    store = MemoryStore()
    server = make(C, W, store=store, now=10.0)
    submit(server, C, data=b"low", priority=LOW, background=True)
    submit(server, C, data=b"x", unique=b"-", background=True)
    submit(server, C, data=b"y", unique=b"-", background=True)
    server.receive(C, SubmitJobEpoch(b"f", 50, b"later", b"e"))
    server.receive(C, SubmitReduceJob(b"f", b"red", b"r", b"ru", background=True))
    server.receive(W, CanDo(b"f"))
    running = grab_handle(server, W)  # still stored: at-least-once
    assert len(store) == 5
    assert StoredJob(b"f", b"e", b"later", NORMAL, 50) in store.rows.values()

    restarted = JobServer(handle_prefix=b"H:new", store=store, now=20.0)
    restarted.connect(W)
    restarted.receive(W, CanDo(b"f"))
    assert restarted.job_count == 5 and running not in [j.handle for j in restarted.jobs()]
    first = grab(restarted, W, GrabJobAll())
    second = grab(restarted, W, GrabJobAll())
    third = grab(restarted, W, GrabJobAll())
    assert [a.data for a in (first, second, third)] == [  # type: ignore[union-attr]
        b"x", b"y", b"r"]
    assert third == JobAssign(b"H:new:5", b"f", b"r", b"ru", b"red")
    assert grab(restarted, W).data == b"low"  # type: ignore[union-attr]
    assert grab(restarted, W) == NoJob()
    # The dash coalescing index is rebuilt too.
    restarted.connect(C)
    assert submit(restarted, C, data=b"x", unique=b"-", background=True) == b"H:new:2"
    assert restarted.next_deadline() == 50
    restarted.advance(50)
    assert grab(restarted, W).data == b"later"  # type: ignore[union-attr]


def test_durable_store_holds_job_created_until_commit() -> None:
    """Durability: JOB_CREATED for a stored job, and all after it to that connection, wait.

    Other connections' output is not held; commit() commits the store once for
    the batch and releases the held output in order.
    """
    store = MemoryStore(durable=True)
    server = make(C, C2, W, store=store)
    server.receive(W, CanDo(b"f"))
    server.receive(W, PreSleep())
    # Not even a worker sees the job before its row is written.
    assert server.receive(C, SubmitJob(b"f", b"1", background=True)) == []
    assert server.receive(C, EchoReq(b"after")) == []
    assert server.receive(C, SubmitJob(b"f", b"2", background=True)) == []
    assert server.receive(C2, SubmitJob(b"f", b"fg")) == [(C2, JobCreated(b"H:t:3")),
                                                         (W, Noop())]
    assert store.commits == 0
    assert server.commit() == [(C, JobCreated(b"H:t:1")), (C, EchoRes(b"after")),
                               (C, JobCreated(b"H:t:2"))]
    assert store.commits == 1
    assert server.receive(C, EchoReq(b"x")) == [(C, EchoRes(b"x"))]
    assert server.commit() == [] and store.commits == 1  # nothing written: no commit


def test_durable_hold_is_dropped_for_a_departed_connection() -> None:
    """Durability: nothing is released later to a connection that has gone."""
    store = MemoryStore(durable=True)
    server = make(C, C2, store=store)
    server.receive(C, SubmitJob(b"f", b"1", background=True))
    server.receive(C2, SubmitJob(b"f", b"2", background=True))
    server.disconnect(C)
    assert server.commit() == [(C2, JobCreated(b"H:t:2"))]
    assert len(store) == 2  # the jobs themselves stay


def test_a_failed_commit_refuses_its_batch_and_the_server_goes_on() -> None:
    """Issue 11.1: a store that fails (a full disk, a lost database) costs its batch only.

    Each submission of the failed batch gets QUEUE_ERROR instead of JOB_CREATED
    (coalesced ones too), no worker ever sees those jobs, output to others and
    later output to the same connection flow, the batch's removals are retried
    with the next commit, and durable submissions work again once it succeeds.
    """
    store = MemoryStore(durable=True)
    server = make(C, C2, W, store=store)
    server.receive(C, SubmitJob(b"f", b"kept", background=True))
    kept = b"H:t:1"
    assert server.commit() == [(C, JobCreated(kept))]
    server.receive(W, CanDo(b"f"))
    assert grab_handle(server, W) == kept
    server.receive(W, WorkComplete(kept, b""))  # its removal is in the failing batch
    store.fail = "disk full"
    assert server.receive(C, SubmitJob(b"f", b"1", b"u1", background=True)) == []
    assert server.receive(C2, SubmitJob(b"f", b"1", b"u1", background=True)) == []
    assert server.receive(C, EchoReq(b"after")) == []
    assert server.commit() == [(C, Error(b"QUEUE_ERROR", b"disk full")),
                               (C2, Error(b"QUEUE_ERROR", b"disk full")),
                               (C, EchoRes(b"after"))]
    assert server.job_count == 0 and grab(server, W) == NoJob()
    assert server.receive(C, EchoReq(b"x")) == [(C, EchoRes(b"x"))]
    assert len(store) == 1  # the finished job's row: removed with the next good commit
    store.fail = None
    assert server.receive(C, SubmitJob(b"f", b"2", background=True)) == []
    assert server.commit() == [(C, JobCreated(b"H:t:3"))]
    assert [row.data for row in store.rows.values()] == [b"2"]


def test_background_submission_onto_a_foreground_job_makes_it_durable() -> None:
    """Issue 11.4: coalescing a background submission onto a foreground job stores it,
    and it outlives its foreground clients; refused with it if the store fails."""
    store = MemoryStore(durable=True)
    server = make(C, C2, W, store=store)
    handle = submit(server, C, unique=b"u1")
    assert server.receive(C2, SubmitJob(b"f", b"d", b"u1", background=True)) == []
    assert server.commit() == [(C2, JobCreated(handle))]
    assert [row.unique for row in store.rows.values()] == [b"u1"]
    server.disconnect(C)
    info = server.job(handle)
    assert info is not None and info.background and info.stored
    restarted = JobServer(handle_prefix=b"H:new", store=store)
    assert [j.unique for j in restarted.jobs()] == [b"u1"]
    # A failed commit leaves the job foreground, alive for its client.
    server.connect(C)
    other = submit(server, C, unique=b"u2")
    store.fail = "gone"
    server.receive(C2, SubmitJob(b"f", b"d", b"u2", background=True))
    assert server.commit() == [(C2, Error(b"QUEUE_ERROR", b"gone"))]
    info = server.job(other)
    assert info is not None and not info.background and not info.stored
    server.disconnect(C)
    assert server.job(other) is None


def test_commit_in_two_halves_keeps_later_output_held() -> None:
    """begin_commit/end_commit (a store written on a thread): input handled while a
    batch is written belongs to the next one; its output waits for that one."""
    store = MemoryStore(durable=True)
    server = make(C, C2, store=store)
    server.receive(C, SubmitJob(b"f", b"1", background=True))
    first = server.begin_commit()
    assert first is not None and len(first.batch.adds) == 1
    server.receive(C, SubmitJob(b"f", b"2", background=True))
    server.receive(C2, EchoReq(b"free"))  # C2 waits for nothing
    assert server.write(first) is None
    assert server.end_commit(first) == [(C, JobCreated(b"H:t:1"))]
    assert server.receive(C, EchoReq(b"e")) == []  # behind JOB_CREATED H:t:2
    second = server.begin_commit()
    assert second is not None
    assert server.end_commit(second, StoreError("down")) == [
        (C, Error(b"QUEUE_ERROR", b"down")), (C, EchoRes(b"e"))]
    assert len(store) == 1


def test_non_durable_store_holds_nothing() -> None:
    """Durability: with a non-durable store JOB_CREATED goes out at once."""
    server = make(C, store=MemoryStore())
    assert server.receive(C, SubmitJob(b"f", background=True)) == [(C, JobCreated(b"H:t:1"))]
    assert server.commit() == []


def test_a_store_that_cannot_keep_the_job_refuses_it() -> None:
    """§4.15: a failed store write is QUEUE_ERROR with the store's message."""

    store = MemoryStore()
    store.fail = "disk full"
    server = make(C, store=store)
    assert server.receive(C, SubmitJob(b"f", background=True)) == [
        (C, Error(b"QUEUE_ERROR", b"disk full"))]
    assert server.job_count == 0
    assert server.receive(C, SubmitJob(b"f")) == [(C, JobCreated(b"H:t:2"))]


# -- connection life ---------------------------------------------------------------------


def test_connection_life() -> None:
    """connect twice is an error; events need a connection; closing twice is harmless."""
    with pytest.raises(ValueError):
        JobServer(job_retries=-1)
    with pytest.raises(ValueError):
        JobServer(worker_wakeup=-1)
    server = make(C)
    with pytest.raises(ValueError):
        server.connect(C)
    with pytest.raises(KeyError):
        server.receive(C2, EchoReq(b""))
    assert server.receive(C, ConnectionClosed()) == []
    assert server.receive(C, ConnectionClosed()) == []
    assert server.disconnect(C) == []
    server.connect(C)  # an id may be reused once closed
