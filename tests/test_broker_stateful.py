"""A model-checked run of the job server (PROTOCOL-NOTES §3.2, §4).

Hypothesis drives a :class:`JobServer` with clients and workers that submit
every kind of job, grab with every GRAB variant, report progress and results
(on their own jobs and on others'), register and drop functions, sleep,
disconnect (and are replaced by new connections), while an admin cancels jobs
and drops functions and time passes.  A small model --
plain lists and scans, nothing clever -- predicts every answer, and after
every step the invariants are checked:

* every accepted job has ended exactly once (completed, failed, cancelled,
  dropped by the retry limit, discarded when nobody waited for it) or is still
  queued, scheduled or running, and each ending reached its attached clients;
* no job is lost when its worker goes: it is requeued or, at the retry limit,
  failed for its clients;
* each assignment is the job the global priority rule picks (§4.1);
* ``status`` and ``prioritystatus``, parsed as a client would, equal the
  model's counts and are never negative;
* ``workers`` lists exactly the live connections;
* the store holds exactly the live background jobs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import hypothesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gearman_proto import NeedData, admin
from gearman_proto.broker import JobServer, Output
from gearman_proto.events import (
    AdminCommand,
    AdminReply,
    CanDo,
    CanDoTimeout,
    CantDo,
    Error,
    Event,
    GetStatus,
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
    StatusRes,
    SubmitJob,
    SubmitJobEpoch,
    SubmitReduceJob,
    WorkComplete,
    WorkData,
    WorkException,
    WorkFail,
    WorkStatus,
    WorkWarning,
)
from gearman_proto.store import MemoryStore

FUNCTIONS = (b"f", b"g")
SUBMISSIONS = st.tuples(
    st.sampled_from(["plain", "plain", "epoch", "reduce"]), st.sampled_from((b"f", b"g")),
    st.sampled_from((b"", b"", b"-", b"u1", b"u2", b"x" * 65)), st.sampled_from((b"", b"a", b"b")),
    st.sampled_from(list(Priority)), st.booleans(), st.sampled_from([b"", b"r"]),
    st.sampled_from([-1, 0, 1, 2, 5]))
Submission = tuple[str, bytes, bytes, bytes, Priority, bool, bytes, int]
"""kind, function, unique, data, priority, background, reducer, epoch delay (seconds)."""
ADMIN = 0  # the connection the invariants ask through
NOT_FOUND_RESULT = b"Job given in work result not found"
WORK_KINDS = st.sampled_from(["complete", "status", "fail", "data", "exception", "warning"])


@dataclass
class MJob:
    """The model of one job."""

    handle: bytes
    function: bytes
    unique: bytes
    data: bytes
    priority: Priority
    background: bool
    reducer: bytes | None
    epoch: int | None
    key: tuple[bytes, bytes, bytes] | None
    stored: bool
    clients: list[int] = field(default_factory=list)
    state: str = "queued"
    worker: int | None = None
    seq: int = 0
    retries: int = 0
    numerator: int = 0
    denominator: int = 0
    assign_no: int = 0


@dataclass
class MConn:
    """The model of one connection: a client or a worker."""

    worker: bool
    address: bytes
    abilities: dict[bytes, int] = field(default_factory=dict)  # function -> timeout ms
    held: list[bytes] = field(default_factory=list)  # handles, in assignment order
    asleep: bool = False
    exceptions: bool = False


class JobServerMachine(RuleBasedStateMachine):
    """Drives a JobServer and a model side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.store = MemoryStore()
        self.server = JobServer(handle_prefix=b"H:m", now=self.now, store=self.store)
        self.conns: dict[int, MConn] = {}
        self.jobs: dict[bytes, MJob] = {}
        self.ended: dict[bytes, str] = {}
        self.functions: list[bytes] = []
        self.next_conn = itertools.count(1)
        self.next_handle = 1
        self.next_seq = itertools.count(1)
        self.timers: list[tuple[float, int, bytes, int]] = []
        self.retries: int | None = None
        self.exceptions = False

    @initialize(retries=st.sampled_from([None, 0, 1, 2]), exceptions=st.booleans(),
                timeouts=st.lists(st.sampled_from([0, 0, 1000, 2500]), min_size=3, max_size=3))
    def setup(self, retries: int | None, exceptions: bool, timeouts: list[int]) -> None:
        self.retries = retries
        self.exceptions = exceptions
        self.server = JobServer(handle_prefix=b"H:m", now=self.now, store=self.store,
                                job_retries=retries, exceptions=exceptions)
        self.server.connect(ADMIN, b"admin")
        # A fixed population (a departing connection is replaced at once), so
        # that every rule always applies and short runs already move jobs:
        # two clients and three workers, one of which does both functions.
        for worker in (False, False, True, True, True):
            self.connect(worker)
        workers = self.ids(worker=True)
        for cid, function, timeout in zip([workers[0], workers[0], workers[1], workers[2]],
                                          [b"f", b"g", b"f", b"g"], [*timeouts, 0],
                                          strict=True):
            self.register(cid, function, timeout)

    # -- model helpers ---------------------------------------------------------------------

    def ids(self, worker: bool) -> list[int]:
        return sorted(cid for cid, conn in self.conns.items() if conn.worker == worker)

    def add_function(self, name: bytes) -> None:
        if name not in self.functions:
            self.functions.append(name)

    def enqueue(self, job: MJob, noops: list[int]) -> None:
        """A job becomes runnable: NOOP every sleeping worker of its function (wakeup 0)."""
        job.state = "queued"
        job.worker = None
        job.seq = next(self.next_seq)
        for cid, conn in self.conns.items():
            if conn.asleep and job.function in conn.abilities:
                conn.asleep = False
                noops.append(cid)

    def end(self, job: MJob, outcome: str) -> None:
        assert job.handle not in self.ended, "a job ended twice"
        self.ended[job.handle] = outcome
        hypothesis.event(f"job {outcome}")
        del self.jobs[job.handle]
        if job.worker is not None:
            self.conns[job.worker].held.remove(job.handle)

    def lose(self, job: MJob, expected: list[Output], noops: list[int]) -> None:
        """The job's worker let go of it (§4.8): discard, drop or requeue."""
        if not job.background and not job.clients:
            self.end(job, "discarded")
        elif self.retries is not None and job.retries >= self.retries:
            expected += [(cid, WorkFail(job.handle)) for cid in job.clients]
            self.end(job, "dropped")
        else:
            assert job.worker is not None
            self.conns[job.worker].held.remove(job.handle)
            job.retries += 1
            job.numerator = job.denominator = 0
            hypothesis.event("job requeued")
            self.enqueue(job, noops)

    def runnable_for(self, conn: MConn) -> list[MJob]:
        return [j for j in self.jobs.values()
                if j.state == "queued" and j.function in conn.abilities]

    def check(self, out: list[Output], expected: list[Output], noops: list[int]) -> None:
        """NOOPs may come in any order; everything else exactly as predicted, in order."""
        got_noops = sorted(cid for cid, event in out if isinstance(event, Noop))
        assert got_noops == sorted(noops), (out, noops)
        assert [item for item in out if not isinstance(item[1], Noop)] == expected

    # -- connections -------------------------------------------------------------------------

    def connect(self, worker: bool) -> int:
        cid = next(self.next_conn)
        self.conns[cid] = MConn(worker, b"10.0.0.%d" % cid)
        self.server.connect(cid, self.conns[cid].address)
        return cid

    @rule(data=st.data(), function=st.sampled_from(FUNCTIONS))
    def disconnect(self, data: st.DataObject, function: bytes) -> None:
        """A connection goes; a new one of the same kind takes its place."""
        cid = data.draw(st.sampled_from(sorted(self.conns)))
        worker = self.conns[cid].worker
        self.drop(cid)
        replacement = self.connect(worker)
        if worker:
            self.register(replacement, function, 0)

    def drop(self, cid: int) -> None:
        conn = self.conns[cid]
        expected: list[Output] = []
        noops: list[int] = []
        # Detach it from the jobs it waits for; a queued job nobody waits for goes.
        for job in list(self.jobs.values()):
            if cid in job.clients:
                job.clients = [c for c in job.clients if c != cid]
                if not job.clients and not job.background and job.state == "queued":
                    self.end(job, "discarded")
        conn.asleep = False
        conn.abilities.clear()
        for handle in list(conn.held):
            self.lose(self.jobs[handle], expected, noops)
        del self.conns[cid]
        self.check(self.server.disconnect(cid), expected, noops)

    # -- clients -----------------------------------------------------------------------------

    @rule(data=st.data(), submission=SUBMISSIONS)
    def submit(self, data: st.DataObject, submission: Submission) -> None:
        self.submit_one(data.draw(st.sampled_from(self.ids(worker=False))), *submission)

    @rule(data=st.data(), submissions=st.lists(SUBMISSIONS, min_size=2, max_size=5))
    def submit_several(self, data: st.DataObject, submissions: list[Submission]) -> None:
        cid = data.draw(st.sampled_from(self.ids(worker=False)))
        for submission in submissions:
            self.submit_one(cid, *submission)

    def submit_one(self, cid: int, kind: str, function: bytes, unique: bytes, payload: bytes,
                   priority: Priority, background: bool, reducer: bytes, delay: int) -> None:
        epoch: int | None = None
        red: bytes | None = None
        event: Event
        if kind == "epoch":
            epoch = int(self.now) + delay
            priority, background = Priority.NORMAL, True
            event = SubmitJobEpoch(function, epoch, payload, unique)
        elif kind == "reduce":
            red, priority = reducer, Priority.NORMAL
            event = SubmitReduceJob(function, reducer, payload, unique, background)
        else:
            event = SubmitJob(function, payload, unique, priority, background)
        out = self.server.receive(cid, event)
        noops: list[int] = []
        if len(unique) > 64:
            self.check(out, [(cid, Error(b"ARGUMENT_TOO_LARGE", b"Unique value too large"))],
                       noops)
            return
        key: tuple[bytes, bytes, bytes] | None = None
        if unique == b"-":
            key = (function, b"data", payload) if payload else None
        elif unique:
            key = (function, b"unique", unique)
        existing = [j for j in self.jobs.values() if key is not None and j.key == key]
        if existing:
            job = existing[0]
            if not background:
                job.clients.append(cid)
            else:  # issue 11.4: a background submitter makes the job durable
                job.background = job.stored = True
            self.check(out, [(cid, JobCreated(job.handle))], noops)
            return
        handle = b"H:m:%d" % self.next_handle
        self.next_handle += 1
        job = MJob(handle, function, unique, payload, priority, background, red, epoch, key,
                   stored=background, clients=[] if background else [cid])
        self.jobs[handle] = job
        self.add_function(function)
        if epoch is not None and epoch > self.now:
            job.state = "scheduled"
            job.seq = next(self.next_seq)  # the order in which due jobs are queued
        else:
            self.enqueue(job, noops)
        self.check(out, [(cid, JobCreated(handle))], noops)

    @rule(data=st.data())
    def ask_for_exceptions(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(self.ids(worker=False)))
        self.conns[cid].exceptions = True
        assert self.server.receive(cid, OptionReq(b"exceptions")) == [
            (cid, OptionRes(b"exceptions"))]

    @rule(data=st.data())
    def get_status(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(self.ids(worker=False)))
        handle = data.draw(st.sampled_from(sorted(self.jobs) + sorted(self.ended) + [b"H:m:0"]))
        job = self.jobs.get(handle)
        expected = (StatusRes(handle, False, False) if job is None else
                    StatusRes(handle, True, job.state == "running", job.numerator,
                              job.denominator))
        assert self.server.receive(cid, GetStatus(handle)) == [(cid, expected)]

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if not self.jobs:
            out = self.server.receive(ADMIN, AdminCommand(b"cancel job H:m:0"))
            assert out == [(ADMIN, AdminReply(b"ERR UNKNOWN_JOB\r\n"))]
            return
        job = self.jobs[data.draw(st.sampled_from(sorted(self.jobs)))]
        expected: list[Output] = [(cid, WorkFail(job.handle)) for cid in job.clients]
        self.end(job, "cancelled")
        expected.append((ADMIN, AdminReply(b"OK\r\n")))
        out = self.server.receive(ADMIN, AdminCommand(b"cancel job " + job.handle))
        self.check(out, expected, [])

    @rule(function=st.sampled_from(FUNCTIONS))
    def drop_function(self, function: bytes) -> None:
        """§3.2: refused while workers have it; otherwise its waiting jobs fail."""
        out = self.server.receive(ADMIN, AdminCommand(b"drop function " + function))
        if function not in self.functions:
            assert out == [(ADMIN, AdminReply(b"ERR function not found\r\n"))]
            return
        if any(function in conn.abilities for conn in self.conns.values()):
            assert out == [(ADMIN, AdminReply(
                b"ERR there are still connected workers or executing clients\r\n"))]
            return
        expected: list[Output] = []
        for job in [j for j in self.jobs.values() if j.function == function]:
            assert job.state != "running"  # a running job's worker still has the function
            expected += [(cid, WorkFail(job.handle)) for cid in job.clients]
            self.end(job, "failed by drop function")
        self.functions.remove(function)
        self.check(out, [*expected, (ADMIN, AdminReply(b"OK\r\n"))], [])

    # -- workers -----------------------------------------------------------------------------

    @rule(data=st.data(), function=st.sampled_from(FUNCTIONS),
          timeout=st.sampled_from([0, 0, 1000, 2500]))
    def can_do(self, data: st.DataObject, function: bytes, timeout: int) -> None:
        self.register(data.draw(st.sampled_from(self.ids(worker=True))), function, timeout)

    def register(self, cid: int, function: bytes, timeout: int) -> None:
        conn = self.conns[cid]
        conn.abilities[function] = timeout
        self.add_function(function)
        noops: list[int] = []
        if conn.asleep and any(j.function == function for j in self.runnable_for(conn)):
            conn.asleep = False
            noops.append(cid)
        event = CanDoTimeout(function, timeout) if timeout else CanDo(function)
        self.check(self.server.receive(cid, event), [], noops)

    @rule(data=st.data(), function=st.sampled_from(FUNCTIONS))
    def cant_do(self, data: st.DataObject, function: bytes) -> None:
        cid = data.draw(st.sampled_from(self.ids(worker=True)))
        conn = self.conns[cid]
        conn.abilities.pop(function, None)  # an unregistered function is just ignored
        expected: list[Output] = []
        noops: list[int] = []
        for handle in [h for h in conn.held if self.jobs[h].function == function]:
            self.lose(self.jobs[handle], expected, noops)
        self.check(self.server.receive(cid, CantDo(function)), expected, noops)

    @rule(data=st.data())
    def pre_sleep(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(self.ids(worker=True)))
        conn = self.conns[cid]
        out = self.server.receive(cid, PreSleep())
        if self.runnable_for(conn):
            assert out == [(cid, Noop())]
        else:
            conn.asleep = True
            assert out == []

    @rule(data=st.data(), variant=st.sampled_from([GrabJob(), GrabJobUniq(), GrabJobAll()]))
    def grab(self, data: st.DataObject, variant: Event) -> None:
        cid = data.draw(st.sampled_from(self.ids(worker=True)))
        conn = self.conns[cid]
        conn.asleep = False
        out = self.server.receive(cid, variant)
        runnable = self.runnable_for(conn)
        hypothesis.event("grab got a job" if runnable else "grab NO_JOB")
        if not runnable:
            assert out == [(cid, NoJob())]
            return
        # §4.1: global priority, oldest first among equals.
        job = min(runnable, key=lambda j: (j.priority, j.seq))
        job.state, job.worker = "running", cid
        conn.held.append(job.handle)
        job.assign_no += 1
        timeout = conn.abilities[job.function]
        if timeout:
            self.timers.append((self.now + timeout / 1000.0, next(self.next_seq), job.handle,
                                job.assign_no))
        if isinstance(variant, GrabJob):
            assign = JobAssign(job.handle, job.function, job.data)
        elif isinstance(variant, GrabJobUniq) or not job.reducer:
            assign = JobAssign(job.handle, job.function, job.data, job.unique)
        else:
            assign = JobAssign(job.handle, job.function, job.data, job.unique, job.reducer)
        assert out == [(cid, assign)]

    def results_for(self, job: MJob, event: Event) -> list[Output]:
        if isinstance(event, WorkException):
            return [(c, event if self.conns[c].exceptions or self.exceptions
                     else WorkFail(job.handle)) for c in job.clients]
        return [(c, event) for c in job.clients]

    @rule(data=st.data(), kind=WORK_KINDS)
    def work(self, data: st.DataObject, kind: str) -> None:
        """A worker that holds jobs (if any does) reports on one of them."""
        holders = [c for c in self.ids(worker=True) if self.conns[c].held]
        cid = data.draw(st.sampled_from(holders or self.ids(worker=True)))
        held = self.conns[cid].held
        handle = data.draw(st.sampled_from(held)) if held else b"H:m:0"
        self.report(cid, kind, handle)

    @rule(data=st.data(), kind=WORK_KINDS)
    def work_on_a_job_not_held(self, data: st.DataObject, kind: str) -> None:
        """A worker reports on any job: another's, a finished one, or one never seen."""
        cid = data.draw(st.sampled_from(self.ids(worker=True)))
        handle = data.draw(st.sampled_from(sorted(self.jobs) + sorted(self.ended) + [b"H:m:0"]))
        self.report(cid, kind, handle)

    def report(self, cid: int, kind: str, handle: bytes) -> None:
        conn = self.conns[cid]
        event: Event = {
            "status": WorkStatus(handle, 1, 3), "data": WorkData(handle, b"d"),
            "warning": WorkWarning(handle, b"w"), "complete": WorkComplete(handle, b"r"),
            "fail": WorkFail(handle), "exception": WorkException(handle, b"e")}[kind]
        out = self.server.receive(cid, event)
        hypothesis.event("work on a held job" if handle in conn.held else "work on another job")
        if handle not in conn.held:
            text = {"data": b"Job does not exist on server",
                    "warning": b"Job does not exist on server",
                    "exception": b"An exception was received for a job that does not exist",
                    }.get(kind, NOT_FOUND_RESULT)
            assert out == [(cid, Error(b"JOB_NOT_FOUND", text))]
            return
        job = self.jobs[handle]
        expected = self.results_for(job, event)
        if kind == "status":
            job.numerator, job.denominator = 1, 3
        elif kind in ("complete", "fail", "exception"):
            self.end(job, kind)
        self.check(out, expected, [])

    # -- time ----------------------------------------------------------------------------------

    @rule(step=st.sampled_from([0.5, 1.0, 3.0, 10.0]))
    def advance(self, step: float) -> None:
        self.now += step
        expected: list[Output] = []
        noops: list[int] = []
        # Due epoch jobs first, in (epoch, submission) order; then expired timers.
        due = sorted((j for j in self.jobs.values()
                      if j.state == "scheduled" and j.epoch is not None and j.epoch <= self.now),
                     key=lambda j: (j.epoch, j.seq))
        for job in due:
            self.enqueue(job, noops)
        for deadline, seq, handle, assign_no in sorted(self.timers):
            if deadline > self.now:
                continue
            self.timers.remove((deadline, seq, handle, assign_no))
            timed = self.jobs.get(handle)
            if timed is not None and timed.state == "running" and timed.assign_no == assign_no:
                self.lose(timed, expected, noops)
        self.check(self.server.advance(self.now), expected, noops)

    # -- invariants ----------------------------------------------------------------------------

    def ask(self, request: admin.AdminRequest) -> admin.AdminResult:
        line = admin.encode_command(request).rstrip(b"\r\n")
        (to, reply), = self.server.receive(ADMIN, AdminCommand(line))
        assert to == ADMIN and isinstance(reply, AdminReply)
        client = admin.AdminClientConnection()
        client.send(request)
        client.receive_data(reply.text)
        result = client.next_event()
        assert not isinstance(result, NeedData)
        return result

    @invariant()
    def jobs_match_the_model(self) -> None:
        assert {j.handle for j in self.server.jobs()} == set(self.jobs)
        assert not set(self.jobs) & set(self.ended)
        for info in self.server.jobs():
            job = self.jobs[info.handle]
            assert (info.state, info.worker, sorted(info.clients), info.retries,
                    info.numerator, info.denominator) == (
                job.state, job.worker, sorted(job.clients), job.retries,
                job.numerator, job.denominator)
        assert len(self.store) == sum(j.stored for j in self.jobs.values())

    @invariant()
    def status_counts_match_the_model(self) -> None:
        status = self.ask(admin.Status())
        priority_status = self.ask(admin.PriorityStatus())
        assert isinstance(status, list) and isinstance(priority_status, list)
        expected_status, expected_priority = [], []
        for name in self.functions:
            jobs = [j for j in self.jobs.values() if j.function == name]
            waiting = [j for j in jobs if j.state != "running"]
            workers = sum(name in c.abilities for c in self.conns.values())
            expected_status.append(admin.StatusRow(
                name, len(jobs), len(jobs) - len(waiting), workers))
            high, normal, low = (sum(j.priority == p for j in waiting) for p in Priority)
            expected_priority.append(admin.PriorityStatusRow(name, high, normal, low, workers))
        assert status == expected_status
        assert priority_status == expected_priority
        for row in status:
            assert isinstance(row, admin.StatusRow)
            assert min(row.total, row.running, row.available_workers) >= 0

    @invariant()
    def workers_lists_the_live_connections(self) -> None:
        rows = self.ask(admin.Workers())
        expected = [admin.WorkerRow(ADMIN, b"admin", b"-", ())] + [
            admin.WorkerRow(cid, conn.address, b"-", tuple(reversed(conn.abilities)))
            for cid, conn in self.conns.items()]
        assert rows == expected

    @invariant()
    def next_deadline_matches_the_model(self) -> None:
        times: list[float] = [j.epoch for j in self.jobs.values()
                              if j.state == "scheduled" and j.epoch is not None]
        times += [deadline for deadline, _seq, handle, assign_no in self.timers
                  if handle in self.jobs and self.jobs[handle].state == "running"
                  and self.jobs[handle].assign_no == assign_no]
        assert self.server.next_deadline() == (min(times) if times else None)


JobServerMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_job_server_against_the_model = JobServerMachine.TestCase
