"""What each role may send and receive, and when (PROTOCOL-NOTES §2, §4).

The client correlates replies with requests in order and follows each
foreground job by handle; the worker follows its abilities, its grabs, its
sleep and the jobs in hand; the server connection only frames and checks
roles, and knows how to say goodbye after a protocol error.
"""

from __future__ import annotations

import struct

import pytest

from gearman_proto import (
    NEED_DATA,
    REQ,
    RES,
    AdminCommand,
    AdminReply,
    CanDo,
    CanDoTimeout,
    CantDo,
    ClientConnection,
    ConnectionState,
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
    LocalProtocolError,
    NoJob,
    Noop,
    OptionReq,
    OptionRes,
    PacketType,
    PreSleep,
    Priority,
    RemoteProtocolError,
    ResetAbilities,
    ServerConnection,
    SetClientId,
    StatusRes,
    StatusResUnique,
    SubmitJob,
    SubmitJobEpoch,
    SubmitJobSched,
    SubmitReduceJob,
    WorkComplete,
    WorkData,
    WorkerConnection,
    WorkException,
    WorkFail,
    WorkStatus,
    WorkWarning,
    encode_packet,
)
from gearman_proto._connection import Connection

# The job server's side, used to produce the bytes a client or worker receives.
_server = ServerConnection()


def deliver(conn: Connection, *events: Event) -> list[Event]:
    """Send ``events`` from the job server to ``conn``; return what ``conn`` makes of them."""
    conn.receive_data(b"".join(_server.send(e) for e in events))
    return list(conn.events())


def refused_remote(conn: Connection, event: Event, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        deliver(conn, event)
    assert conn.state is ConnectionState.ERROR


def refused_local(conn: Connection, event: Event, match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        conn.send(event)
    assert conn.state is ConnectionState.ERROR


# == client ======================================================================================


class TestClientCorrelation:
    """§4.2: the job server answers a connection's requests in the order they were sent."""

    def test_job_created_answers_the_submission_and_carries_it(self) -> None:
        client = ClientConnection()
        request = SubmitJob(b"reverse", b"test")
        client.send(request)
        assert client.outstanding == 1
        [created] = deliver(client, JobCreated(b"H:1"))
        assert created == JobCreated(b"H:1")
        assert isinstance(created, JobCreated) and created.request is request
        assert client.outstanding == 0

    def test_replies_of_every_kind_are_matched_in_order(self) -> None:
        client = ClientConnection()
        sent: list[Event] = [
            SubmitJob(b"f", b"1"), GetStatus(b"H:1"), GetStatusUnique(b"u"), EchoReq(b"ping"),
            OptionReq(b"exceptions"), SubmitJobEpoch(b"f", 2_000_000_000),
            SubmitReduceJob(b"f", b"sum", b"1 2"), SubmitJob(b"f", priority=Priority.LOW),
        ]
        for request in sent:
            client.send(request)
        assert client.pending_requests == tuple(sent)
        replies = deliver(
            client, JobCreated(b"H:1"), StatusRes(b"H:1", True, False),
            StatusResUnique(b"u", False, False), EchoRes(b"ping"), OptionRes(b"exceptions"),
            JobCreated(b"H:2"), JobCreated(b"H:3"), JobCreated(b"H:4"),
        )
        assert [r.request for r in replies] == sent  # type: ignore[attr-defined]
        assert all(r.request is s for r, s in zip(replies, sent, strict=True))  # type: ignore[attr-defined]
        assert client.outstanding == 0

    def test_set_client_id_expects_no_reply(self) -> None:
        """§4.12: SET_CLIENT_ID is stored silently."""
        client = ClientConnection()
        client.send(SetClientId(b"reporting-1"))
        assert client.outstanding == 0

    def test_job_created_with_nothing_outstanding_is_refused(self) -> None:
        refused_remote(ClientConnection(), JobCreated(b"H:1"),
                       r"JOB_CREATED does not answer the oldest outstanding request \(nothing\)")

    def test_job_created_when_a_get_status_is_oldest_is_refused(self) -> None:
        client = ClientConnection()
        client.send(GetStatus(b"H:1"))
        client.send(SubmitJob(b"f"))
        refused_remote(client, JobCreated(b"H:2"),
                       r"JOB_CREATED does not answer the oldest outstanding request \(GetStatus\)")

    @pytest.mark.parametrize(("request_", "reply", "name"), [
        (SubmitJob(b"f"), StatusRes(b"H:1", False, False), "STATUS_RES"),
        (GetStatus(b"H:1"), StatusResUnique(b"u", False, False), "STATUS_RES_UNIQUE"),
        (OptionReq(b"exceptions"), EchoRes(b"x"), "ECHO_RES"),
        (EchoReq(b"x"), OptionRes(b"exceptions"), "OPTION_RES"),
    ])
    def test_a_reply_of_the_wrong_kind_is_refused(
        self, request_: Event, reply: Event, name: str
    ) -> None:
        client = ClientConnection()
        client.send(request_)
        refused_remote(client, reply, f"{name} does not answer the oldest outstanding request")

    def test_error_answers_a_refused_submission(self) -> None:
        """§4.14, §4.3: gearmand sends ERROR instead of JOB_CREATED for a full queue."""
        client = ClientConnection()
        full, ok = SubmitJob(b"f", b"1"), SubmitJob(b"f", b"2")
        client.send(full)
        client.send(ok)
        error, created = deliver(client, Error(b"QUEUE_ERROR", b"Job queue is full"),
                                 JobCreated(b"H:9"))
        assert error == Error(b"QUEUE_ERROR", b"Job queue is full")
        assert isinstance(error, Error) and error.request is full
        assert isinstance(created, JobCreated) and created.request is ok
        assert list(client.jobs) == [b"H:9"]

    def test_error_answers_sched_and_unknown_option(self) -> None:
        """§4.13, §4.10: checked against gearmand 1.1.20, which answers both with ERROR."""
        client = ClientConnection()
        sched = SubmitJobSched(b"f", b"", 1, 2, 3, 4, 5)
        option = OptionReq(b"bogus")
        client.send(sched)
        client.send(option)
        errors = deliver(client, Error(b"INVALID_COMMAND", b"Command not expected"),
                         Error(b"UNKNOWN_OPTION", b"Server does not recognize given option"))
        assert [e.request for e in errors] == [sched, option]  # type: ignore[attr-defined]
        assert client.options == set()
        assert client.jobs == {}

    def test_error_with_nothing_outstanding_is_unsolicited(self) -> None:
        client = ClientConnection()
        [error] = deliver(client, Error(b"UNKNOWN_ERROR", b"something"))
        assert isinstance(error, Error) and error.request is None
        assert client.state is ConnectionState.OPEN

    def test_confirmed_options_are_recorded_lower_cased(self) -> None:
        """§4.10: gearmand echoes the name as sent (checked: "Exceptions" comes back as is)."""
        client = ClientConnection()
        client.send(OptionReq(b"Exceptions"))
        deliver(client, OptionRes(b"Exceptions"))
        assert client.options == {b"exceptions"}


class TestClientJobs:
    """§4.2, §4.3, §4.9: results arrive by handle for foreground jobs only."""

    def test_foreground_job_is_followed_until_its_result(self) -> None:
        client = ClientConnection()
        client.send(SubmitJob(b"f", b"x"))
        deliver(client, JobCreated(b"H:1"))
        job = client.jobs[b"H:1"]
        assert (job.handle, job.attached, job.finished) == (b"H:1", 1, False)
        events = deliver(client, WorkData(b"H:1", b"a"), WorkWarning(b"H:1", b"w"),
                         WorkStatus(b"H:1", 3, 10))
        assert len(events) == 3
        assert (job.numerator, job.denominator) == (3, 10)
        deliver(client, WorkComplete(b"H:1", b"done"))
        assert job.finished and client.jobs == {}

    @pytest.mark.parametrize("final", [WorkComplete(b"H:1", b"r"), WorkFail(b"H:1"),
                                       WorkException(b"H:1", b"boom")])
    def test_each_final_packet_ends_the_job(self, final: Event) -> None:
        client = ClientConnection()
        client.send(SubmitJob(b"f"))
        deliver(client, JobCreated(b"H:1"))
        assert deliver(client, final) == [final]
        assert client.jobs == {}

    @pytest.mark.parametrize("submission", [
        SubmitJob(b"f", background=True),
        SubmitJob(b"f", priority=Priority.HIGH, background=True),
        SubmitJobEpoch(b"f", 1),
        SubmitReduceJob(b"f", b"r", background=True),
    ])
    def test_background_jobs_are_not_followed(self, submission: Event) -> None:
        """§4.2: a background submitter only gets the handle."""
        client = ClientConnection()
        client.send(submission)
        deliver(client, JobCreated(b"H:1"))
        assert client.jobs == {}
        refused_remote(client, WorkComplete(b"H:1"), r"WORK_COMPLETE for job handle b'H:1'")

    @pytest.mark.parametrize("update", [
        WorkData(b"H:7", b""), WorkWarning(b"H:7", b""), WorkStatus(b"H:7", 1, 2),
        WorkComplete(b"H:7"), WorkFail(b"H:7"), WorkException(b"H:7"),
    ])
    def test_work_for_an_unknown_handle_is_refused_naming_it(self, update: Event) -> None:
        client = ClientConnection()
        client.send(SubmitJob(b"f"))
        deliver(client, JobCreated(b"H:1"))
        refused_remote(client, update, f"{update.packet_type.name} for job handle b'H:7', "
                       "which this client is not waiting on")

    def test_same_unique_twice_attaches_twice_and_gets_every_result_twice(self) -> None:
        """§4.3: coalesced submissions share a handle; gearmand 1.1.20 sends each WORK_* once
        per attachment (checked by hand: two SUBMIT_JOB "f"/"u" on one connection, one
        WORK_STATUS/WORK_DATA/WORK_COMPLETE from the worker, each arrived twice)."""
        client = ClientConnection()
        first, second = SubmitJob(b"f", b"x", b"u"), SubmitJob(b"f", b"x", b"u")
        client.send(first)
        client.send(second)
        created = deliver(client, JobCreated(b"H:1"), JobCreated(b"H:1"))
        assert [c.request for c in created] == [first, second]  # type: ignore[attr-defined]
        job = client.jobs[b"H:1"]
        assert job.attached == 2 and job.request is first
        deliver(client, WorkStatus(b"H:1", 1, 2), WorkStatus(b"H:1", 1, 2))
        deliver(client, WorkComplete(b"H:1", b"r"))
        assert client.jobs == {b"H:1": job} and job.attached == 1 and not job.finished
        deliver(client, WorkComplete(b"H:1", b"r"))
        assert client.jobs == {} and job.finished
        refused_remote(client, WorkComplete(b"H:1", b"r"), "not waiting on")

    def test_background_submission_coalesced_onto_a_followed_job_adds_no_attachment(
        self,
    ) -> None:
        """§4.3: a background submitter is never attached, even to an existing job."""
        client = ClientConnection()
        client.send(SubmitJob(b"f", b"x", b"u"))
        client.send(SubmitJob(b"f", b"x", b"u", background=True))
        deliver(client, JobCreated(b"H:1"), JobCreated(b"H:1"))
        assert client.jobs[b"H:1"].attached == 1


class TestClientRoleRules:
    """§2: a client sends submissions and questions, and receives replies and results."""

    @pytest.mark.parametrize(("event", "name"), [
        (GrabJob(), r"GrabJob \(GRAB_JOB\)"),
        (CanDo(b"f"), r"CanDo \(CAN_DO\)"),
        (WorkComplete(b"H:1"), r"WorkComplete \(WORK_COMPLETE\)"),
        (JobCreated(b"H:1"), r"JobCreated \(JOB_CREATED\)"),
    ])
    def test_sending_a_message_of_another_role_is_refused(self, event: Event, name: str) -> None:
        refused_local(ClientConnection(), event, f"a client may not send {name}")

    def test_admin_reply_is_not_a_client_message(self) -> None:
        refused_local(ClientConnection(), AdminReply(b"OK\r\n"), "not a binary protocol message")

    @pytest.mark.parametrize("event", [Noop(), NoJob(), JobAssign(b"H:1", b"f", b"")])
    def test_worker_packets_sent_to_a_client_are_refused(self, event: Event) -> None:
        refused_remote(ClientConnection(), event,
                       f"a client may not receive {event.packet_type.name}")

    def test_a_failed_send_leaves_the_connection_unusable(self) -> None:
        client = ClientConnection()
        with pytest.raises(LocalProtocolError):
            client.send(GrabJob())
        with pytest.raises(LocalProtocolError, match="error state"):
            client.send(SubmitJob(b"f"))


# == worker ======================================================================================


def worker_with_job(handle: bytes = b"H:1", function: bytes = b"f") -> WorkerConnection:
    worker = WorkerConnection()
    worker.send(CanDo(function))
    worker.send(GrabJob())
    deliver(worker, JobAssign(handle, function, b"data"))
    return worker


class TestWorkerAbilities:
    """§4.7: the abilities follow CAN_DO, CAN_DO_TIMEOUT, CANT_DO and RESET_ABILITIES."""

    def test_abilities_follow_what_was_sent(self) -> None:
        worker = WorkerConnection()
        worker.send(CanDo(b"a"))
        worker.send(CanDoTimeout(b"b", 1500))
        worker.send(CanDo(b"a"))
        assert worker.abilities == {b"a": None, b"b": 1500}
        worker.send(CantDo(b"a"))
        assert worker.abilities == {b"b": 1500}
        worker.send(ResetAbilities())
        assert worker.abilities == {}

    def test_cant_do_drops_the_jobs_in_hand_for_that_function(self) -> None:
        """§4.7: the server requeues them (checked with gearmand 1.1.20)."""
        worker = WorkerConnection()
        worker.send(CanDo(b"a"))
        worker.send(CanDo(b"b"))
        worker.send(GrabJob())
        worker.send(GrabJob())
        deliver(worker, JobAssign(b"H:1", b"a", b""), JobAssign(b"H:2", b"b", b""))
        worker.send(CantDo(b"a"))
        assert list(worker.jobs) == [b"H:2"]
        refused_local(worker, WorkComplete(b"H:1"), "b'H:1': no such job in hand")

    def test_reset_abilities_drops_every_job_in_hand(self) -> None:
        worker = worker_with_job()
        worker.send(ResetAbilities())
        assert worker.jobs == {}


class TestWorkerGrabs:
    """§4.5, §4.6: each grab is answered, in order, by NO_JOB or the matching JOB_ASSIGN*."""

    @pytest.mark.parametrize(("grab", "assign"), [
        (GrabJob(), JobAssign(b"H:1", b"f", b"d")),
        (GrabJobUniq(), JobAssign(b"H:1", b"f", b"d", b"u")),
        (GrabJobAll(), JobAssign(b"H:1", b"f", b"d", b"u")),  # no reducer: JOB_ASSIGN_UNIQ
        (GrabJobAll(), JobAssign(b"H:1", b"f", b"d", b"u", b"sum")),
    ])
    def test_grab_is_answered_by_its_kind_of_assign(self, grab: Event, assign: JobAssign) -> None:
        worker = WorkerConnection()
        worker.send(grab)
        assert worker.outstanding_grabs == 1
        assert deliver(worker, assign) == [assign]
        assert worker.jobs == {b"H:1": assign}
        assert worker.outstanding_grabs == 0

    @pytest.mark.parametrize(("grab", "assign", "match"), [
        (GrabJob(), JobAssign(b"H:1", b"f", b"d", b"u"),
         r"JOB_ASSIGN_UNIQ does not answer GRAB_JOB \(expected JOB_ASSIGN\)"),
        (GrabJob(), JobAssign(b"H:1", b"f", b"d", b"u", b"r"),
         "JOB_ASSIGN_ALL does not answer GRAB_JOB "),
        (GrabJobUniq(), JobAssign(b"H:1", b"f", b"d"),
         r"JOB_ASSIGN does not answer GRAB_JOB_UNIQ \(expected JOB_ASSIGN_UNIQ\)"),
        (GrabJobUniq(), JobAssign(b"H:1", b"f", b"d", b"u", b"r"),
         "JOB_ASSIGN_ALL does not answer GRAB_JOB_UNIQ"),
        (GrabJobAll(), JobAssign(b"H:1", b"f", b"d"),
         r"JOB_ASSIGN does not answer GRAB_JOB_ALL \(expected JOB_ASSIGN_UNIQ or JOB_ASSIGN_ALL\)"),
    ])
    def test_assign_of_the_wrong_kind_is_refused(
        self, grab: Event, assign: Event, match: str
    ) -> None:
        worker = WorkerConnection()
        worker.send(grab)
        refused_remote(worker, assign, match)

    def test_grabs_are_answered_in_order(self) -> None:
        worker = WorkerConnection()
        worker.send(GrabJob())
        worker.send(GrabJobUniq())
        worker.send(GrabJob())
        deliver(worker, JobAssign(b"H:1", b"f", b""), JobAssign(b"H:2", b"f", b"", b"u"),
                NoJob())
        assert sorted(worker.jobs) == [b"H:1", b"H:2"]

        worker = WorkerConnection()
        worker.send(GrabJob())
        worker.send(GrabJobUniq())
        refused_remote(worker, JobAssign(b"H:2", b"f", b"", b"u"),
                       "JOB_ASSIGN_UNIQ does not answer GRAB_JOB")

    def test_assign_without_a_grab_is_refused(self) -> None:
        refused_remote(WorkerConnection(), JobAssign(b"H:1", b"f", b""),
                       "JOB_ASSIGN for job handle b'H:1' without an outstanding GRAB_JOB")

    def test_no_job_without_a_grab_is_refused(self) -> None:
        refused_remote(WorkerConnection(), NoJob(), "NO_JOB without an outstanding GRAB_JOB")


class TestWorkerSleep:
    """§4.5: PRE_SLEEP, then NOOP when work may be there; NOOP itself carries no job."""

    def test_the_cycle(self) -> None:
        worker = WorkerConnection()
        worker.send(CanDo(b"f"))
        worker.send(GrabJob())
        assert deliver(worker, NoJob()) == [NoJob()]
        worker.send(PreSleep())
        assert worker.sleeping
        assert deliver(worker, Noop()) == [Noop()]
        assert not worker.sleeping
        worker.send(GrabJob())
        deliver(worker, JobAssign(b"H:1", b"f", b""))
        assert list(worker.jobs) == [b"H:1"]

    def test_noop_when_not_sleeping_is_harmless(self) -> None:
        worker = WorkerConnection()
        assert deliver(worker, Noop(), Noop()) == [Noop(), Noop()]
        assert worker.state is ConnectionState.OPEN and not worker.sleeping

    def test_noop_between_a_grab_and_its_answer_is_harmless(self) -> None:
        worker = WorkerConnection()
        worker.send(GrabJob())
        deliver(worker, Noop(), NoJob())
        assert worker.outstanding_grabs == 0

    def test_a_grab_ends_the_sleep(self) -> None:
        """§4.5: any GRAB_JOB* clears "sleeping" on the server too."""
        worker = WorkerConnection()
        worker.send(PreSleep())
        worker.send(GrabJob())
        assert not worker.sleeping

    def test_pre_sleep_with_a_grab_outstanding_is_allowed(self) -> None:
        """Pipelined GRAB + PRE_SLEEP: gearmand answers the grab, then NOOPs if more work is
        queued (checked with gearmand 1.1.20: JOB_ASSIGN_UNIQ then NOOP)."""
        worker = WorkerConnection()
        worker.send(GrabJobAll())
        worker.send(PreSleep())
        assert worker.sleeping and worker.outstanding_grabs == 1
        deliver(worker, JobAssign(b"H:1", b"f", b"", b"u"), Noop())
        assert list(worker.jobs) == [b"H:1"] and not worker.sleeping


class TestWorkerJobsInHand:
    """§4.8, §4.9: WORK_* only for jobs in hand; the final one gives the job back."""

    def test_several_jobs_in_hand(self) -> None:
        worker = WorkerConnection()
        worker.send(GrabJob())
        worker.send(GrabJob())
        deliver(worker, JobAssign(b"H:1", b"f", b"1"), JobAssign(b"H:2", b"f", b"2"))
        worker.send(WorkStatus(b"H:2", 1, 2))
        worker.send(WorkComplete(b"H:2", b"r"))
        assert list(worker.jobs) == [b"H:1"]
        worker.send(WorkData(b"H:1", b"partial"))
        worker.send(WorkWarning(b"H:1", b"hmm"))
        worker.send(WorkFail(b"H:1"))
        assert worker.jobs == {}

    @pytest.mark.parametrize("update", [
        WorkData(b"H:9", b""), WorkWarning(b"H:9", b""), WorkStatus(b"H:9", 1, 2),
        WorkComplete(b"H:9"), WorkFail(b"H:9"), WorkException(b"H:9"),
    ])
    def test_work_for_a_job_not_in_hand_is_refused_naming_the_handle(self, update: Event) -> None:
        refused_local(worker_with_job(), update,
                      f"cannot send {update.packet_type.name} for job handle b'H:9': "
                      "no such job in hand")

    @pytest.mark.parametrize("final", [WorkComplete(b"H:1"), WorkFail(b"H:1"),
                                       WorkException(b"H:1", b"e")])
    def test_nothing_may_be_sent_for_a_job_after_its_result(self, final: Event) -> None:
        worker = worker_with_job()
        worker.send(final)
        refused_local(worker, WorkData(b"H:1", b"late"), "no such job in hand")

    def test_server_error_after_work_is_reported_not_fatal(self) -> None:
        """§4.8: gearmand answers WORK_* for a job it dropped with ERROR JOB_NOT_FOUND and
        keeps the connection (checked with gearmand 1.1.20)."""
        worker = worker_with_job()
        worker.send(WorkData(b"H:1", b"x"))
        [error] = deliver(worker, Error(b"JOB_NOT_FOUND", b"Job does not exist on server"))
        assert isinstance(error, Error) and error.request is None
        assert worker.state is ConnectionState.OPEN
        worker.send(WorkComplete(b"H:1"))


class TestWorkerReplies:
    """§4.10, §4.12: ECHO and OPTION on a worker connection, answered in order."""

    def test_echo_and_option_replies_carry_their_request(self) -> None:
        worker = WorkerConnection()
        echo, option = EchoReq(b"ping"), OptionReq(b"Exceptions")
        worker.send(echo)
        worker.send(GrabJob())
        worker.send(option)
        assert worker.outstanding == 3
        got = deliver(worker, EchoRes(b"ping"), NoJob(), OptionRes(b"Exceptions"))
        assert got[0].request is echo and got[2].request is option  # type: ignore[attr-defined]
        assert worker.options == {b"exceptions"}
        assert worker.outstanding == 0

    def test_unknown_option_answers_the_oldest_option_request(self) -> None:
        worker = WorkerConnection()
        first, second = OptionReq(b"bogus"), OptionReq(b"exceptions")
        worker.send(first)
        worker.send(second)
        [error] = deliver(worker, Error(b"UNKNOWN_OPTION", b"Server does not recognize"))
        assert isinstance(error, Error) and error.request is first
        [res] = deliver(worker, OptionRes(b"exceptions"))
        assert isinstance(res, OptionRes) and res.request is second

    def test_unknown_option_with_no_option_request_is_unsolicited(self) -> None:
        [error] = deliver(WorkerConnection(), Error(b"UNKNOWN_OPTION", b""))
        assert isinstance(error, Error) and error.request is None

    def test_echo_res_when_an_option_request_is_oldest_is_refused(self) -> None:
        worker = WorkerConnection()
        worker.send(OptionReq(b"exceptions"))
        refused_remote(worker, EchoRes(b"x"), r"ECHO_RES does not answer the oldest "
                       r"outstanding request \(OptionReq\)")

    def test_option_res_with_nothing_outstanding_is_refused(self) -> None:
        refused_remote(WorkerConnection(), OptionRes(b"x"), r"\(nothing\)")


class TestWorkerRoleRules:
    @pytest.mark.parametrize(("event", "name"), [
        (SubmitJob(b"f"), r"SubmitJob \(SUBMIT_JOB\)"),
        (GetStatus(b"H:1"), r"GetStatus \(GET_STATUS\)"),
        (Noop(), r"Noop \(NOOP\)"),
        (JobAssign(b"H:1", b"f", b""), r"JobAssign \(JOB_ASSIGN\)"),
    ])
    def test_sending_a_message_of_another_role_is_refused(self, event: Event, name: str) -> None:
        refused_local(WorkerConnection(), event, f"a worker may not send {name}")

    @pytest.mark.parametrize("event", [JobCreated(b"H:1"), WorkComplete(b"H:1"),
                                       StatusRes(b"H:1", False, False)])
    def test_client_packets_sent_to_a_worker_are_refused(self, event: Event) -> None:
        refused_remote(WorkerConnection(), event,
                       f"a worker may not receive {event.packet_type.name}")


# == server ======================================================================================


class TestServerConnection:
    """§3.1: one port, binary packets and admin text lines; the job logic lives elsewhere."""

    def test_admin_reply_goes_out_as_it_is(self) -> None:
        server = ServerConnection()
        server.receive_data(b"status\r\n")
        assert server.next_event() == AdminCommand(b"status")
        assert server.send(AdminReply(b"reverse\t0\t0\t1\n.\n")) == b"reverse\t0\t0\t1\n.\n"

    def test_server_sends_res_magic(self) -> None:
        wire = ServerConnection().send(WorkComplete(b"H:1", b"r"))
        assert wire == encode_packet(RES, PacketType.WORK_COMPLETE, (b"H:1", b"r"))

    @pytest.mark.parametrize(("event", "name"), [
        (GrabJob(), r"GrabJob \(GRAB_JOB\)"),
        (SubmitJob(b"f"), r"SubmitJob \(SUBMIT_JOB\)"),
        (CanDo(b"f"), r"CanDo \(CAN_DO\)"),
    ])
    def test_sending_a_message_of_another_role_is_refused(self, event: Event, name: str) -> None:
        refused_local(ServerConnection(), event, f"a server may not send {name}")

    def test_every_client_and_worker_request_is_received(self) -> None:
        """§2: SCHED and ALL_YOURS too; refusing them is the job server's decision (§4.13)."""
        server = ServerConnection()
        worker, client = WorkerConnection(), ClientConnection()
        events: list[Event] = [SubmitJobSched(b"f", b"", 0, 0, 1, 1, 0), SetClientId(b"me")]
        wire = b"".join(client.send(e) for e in events)
        server.receive_data(wire + worker.send(GrabJobAll()) + worker.send(PreSleep()))
        assert list(server.events()) == [*events, GrabJobAll(), PreSleep()]

    def test_error_reply_to_a_binary_error_is_an_error_packet(self) -> None:
        """§4.15: RES magic sent to the server: ERROR INVALID_MAGIC "Request magic expected",
        byte for byte what gearmand 1.1.20 sent (checked by hand)."""
        server = ServerConnection()
        server.receive_data(RES + struct.pack(">II", 16, 1) + b"x")
        with pytest.raises(RemoteProtocolError) as info:
            server.next_event()
        assert server.state is ConnectionState.ERROR
        assert server.error_reply(info.value) == (
            b"\0RES\0\0\0\x13\0\0\0\x24INVALID_MAGIC\0Request magic expected")

    def test_error_reply_to_an_admin_line_is_an_err_line(self) -> None:
        """§3.2: ERR CODE text, spaces written as +, ended by \\r\\n."""
        server = ServerConnection(max_line_length=16)
        server.receive_data(b"status\n" + b"x" * 17)
        assert server.next_event() == AdminCommand(b"status")
        with pytest.raises(RemoteProtocolError) as info:
            server.next_event()
        assert server.error_reply(info.value) == b"ERR ARGUMENT_TOO_LARGE Line+too+long\r\n"

    def test_error_reply_to_a_binary_error_before_a_text_line_is_a_packet(self) -> None:
        """The decoder has moved past a packet with a wrong argument count when it raises;
        the text line behind it must not make the reply text."""
        server = ServerConnection()
        server.receive_data(REQ + struct.pack(">II", 7, 1) + b"f" + b"status\n")
        with pytest.raises(RemoteProtocolError) as info:
            server.next_event()
        reply = server.error_reply(info.value)
        assert reply.startswith(RES + struct.pack(">I", PacketType.ERROR))
        assert b"INVALID_ARGUMENTS" in reply

    def test_error_reply_to_a_role_error_before_a_text_line_is_a_packet(self) -> None:
        server = ServerConnection()
        server.receive_data(encode_packet(REQ, PacketType.NOOP, ()) + b"status\n")
        with pytest.raises(RemoteProtocolError, match="a server may not receive NOOP") as info:
            server.next_event()
        assert server.error_reply(info.value).startswith(RES)

    def test_error_reply_to_a_line_cut_by_close_is_an_err_line(self) -> None:
        server = ServerConnection()
        server.receive_data(b"stat")
        server.receive_data(b"")
        with pytest.raises(RemoteProtocolError) as info:
            server.next_event()
        assert server.error_reply(info.value).startswith(b"ERR UNKNOWN_ERROR peer+closed")

    def test_error_reply_for_a_local_error(self) -> None:
        """A refused send still gets a well-formed ERROR packet, in the ERROR state too."""
        server = ServerConnection()
        with pytest.raises(LocalProtocolError) as info:
            server.send(GrabJob())
        assert server.state is ConnectionState.ERROR
        reply = server.error_reply(info.value)
        assert reply[:8] == RES + struct.pack(">I", PacketType.ERROR)
        assert reply[12:].split(b"\0", 1)[0] == b"UNKNOWN_ERROR"

    def test_need_data_until_a_whole_message_arrives(self) -> None:
        server = ServerConnection()
        server.receive_data(b"\0REQ\0\0\0\x10")
        assert server.next_event() is NEED_DATA
        server.receive_data(b"\0\0\0\x01x")
        assert server.next_event() == EchoReq(b"x")


def test_client_server_worker_in_memory() -> None:
    """§4.2, §4.5, §4.9 end to end without sockets; the test plays the job server's logic."""
    client, worker = ClientConnection(), WorkerConnection()
    from_client, from_worker = ServerConnection(), ServerConnection()

    from_worker.receive_data(worker.send(CanDo(b"reverse")) + worker.send(GrabJob()))
    assert list(from_worker.events()) == [CanDo(b"reverse"), GrabJob()]
    worker.receive_data(from_worker.send(NoJob()))
    assert list(worker.events()) == [NoJob()]
    from_worker.receive_data(worker.send(PreSleep()))

    from_client.receive_data(client.send(SubmitJob(b"reverse", b"test", b"u1")))
    [submit] = from_client.events()
    client.receive_data(from_client.send(JobCreated(b"H:1")))
    worker.receive_data(from_worker.send(Noop()))
    assert [e.request for e in client.events()] == [submit]  # type: ignore[attr-defined]
    assert list(worker.events()) == [Noop()]

    from_worker.receive_data(worker.send(GrabJobUniq()))
    worker.receive_data(from_worker.send(JobAssign(b"H:1", b"reverse", b"test", b"u1")))
    [job] = worker.events()
    assert isinstance(job, JobAssign)
    from_worker.receive_data(worker.send(WorkStatus(job.handle, 1, 1))
                             + worker.send(WorkComplete(job.handle, job.data[::-1])))
    for update in list(from_worker.events())[-2:]:
        client.receive_data(from_client.send(update))
    assert list(client.events()) == [WorkStatus(b"H:1", 1, 1), WorkComplete(b"H:1", b"tset")]
    assert client.jobs == {} and worker.jobs == {}
