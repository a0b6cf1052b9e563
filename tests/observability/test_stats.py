"""The numbers behind /metrics and the dashboard, from the core alone (no sockets, no clock).

A JobServer and a ServerHub are driven by events and bytes; ServerStats reads
them.  Every server flavour serves these same numbers.
"""

from __future__ import annotations

import json

from gearman_proto import stats as st
from gearman_proto.broker import JobServer
from gearman_proto.client import ClientConnection
from gearman_proto.events import (
    CanDo,
    CanDoTimeout,
    GrabJob,
    JobAssign,
    Priority,
    SetClientId,
    SubmitJob,
    SubmitJobEpoch,
    WorkComplete,
    WorkException,
    WorkFail,
    WorkStatus,
)
from gearman_proto.hub import ServerHub
from gearman_proto.stats import COUNTERS, OTHER, ServerStats
from gearman_proto.store import MemoryStore


class Ticks:
    """A clock function that advances by ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.t = 0.0
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def make(broker: JobServer | None = None, **kw: int) -> tuple[ServerHub, ServerStats]:
    hub = ServerHub(broker or JobServer())
    hub.stats = ServerStats(hub, clock=Ticks(0.003), now=100.0, **kw)
    return hub, hub.stats


def row(stats: ServerStats, name: str) -> st.FunctionRow:
    return next(r for r in stats.snapshot(200.0).functions if r.name == name)


def counters(stats: ServerStats, name: str) -> dict[str, int]:
    return dict(zip(COUNTERS, row(stats, name).counts, strict=True))


def grab(broker: JobServer, worker: int) -> JobAssign:
    (_, assign), = broker.receive(worker, GrabJob())
    assert isinstance(assign, JobAssign)
    return assign


def test_each_way_a_job_ends_is_counted_per_function() -> None:
    hub, stats = make()
    b = hub.broker
    b.connect(1)
    b.connect(2)
    for i in range(5):
        b.receive(1, SubmitJob(b"resize", b"%d" % i, background=True))
    b.receive(2, CanDo(b"resize"))
    b.receive(2, WorkComplete(grab(b, 2).handle, b"ok"))
    b.receive(2, WorkFail(grab(b, 2).handle))
    b.receive(2, WorkException(grab(b, 2).handle, b"boom"))
    grab(b, 2)
    b.disconnect(2)  # the job it held is lost: requeued
    assert counters(stats, "resize") == {"submitted": 5, "completed": 1, "failed": 1,
                                         "exceptions": 1, "requeued": 1, "timed_out": 0}
    r = row(stats, "resize")
    assert (r.queued, r.running, r.workers) == ([0, 2, 0], 0, 0)


def test_a_coalesced_submission_is_not_a_new_job() -> None:
    hub, stats = make()
    b = hub.broker
    b.connect(1)
    b.receive(1, SubmitJob(b"f", b"x", unique=b"same"))
    b.receive(1, SubmitJob(b"f", b"x", unique=b"same"))
    assert counters(stats, "f")["submitted"] == 1


def test_can_do_timeout_counts_a_timeout_and_a_requeue() -> None:
    hub, stats = make()
    b = hub.broker
    b.connect(1)
    b.connect(2)
    b.receive(2, CanDoTimeout(b"slow", 1000))
    b.receive(1, SubmitJob(b"slow", b"x", background=True))
    grab(b, 2)
    b.advance(b.now + 2)
    assert counters(stats, "slow")["timed_out"] == 1
    assert counters(stats, "slow")["requeued"] == 1


def test_server_side_failures_count_as_failed() -> None:
    hub, stats = make(JobServer(job_retries=0))
    b = hub.broker
    b.connect(1)
    b.connect(2)
    b.receive(2, CanDo(b"f"))
    b.receive(1, SubmitJob(b"f", b"x"))
    grab(b, 2)
    b.disconnect(2)  # retries exhausted: WORK_FAIL from the server
    assert counters(stats, "f")["failed"] == 1
    assert counters(stats, "f")["requeued"] == 0


def test_queued_per_priority_scheduled_and_running() -> None:
    hub, stats = make()
    b = hub.broker
    b.connect(1)
    b.connect(2)
    b.receive(1, SubmitJob(b"f", b"1", priority=Priority.HIGH, background=True))
    b.receive(1, SubmitJob(b"f", b"2", priority=Priority.LOW, background=True))
    b.receive(1, SubmitJob(b"f", b"3", priority=Priority.LOW, background=True))
    b.receive(1, SubmitJobEpoch(b"f", int(b.now) + 3600, b"4"))
    b.receive(2, CanDo(b"f"))
    grab(b, 2)  # the HIGH one
    r = row(stats, "f")
    assert (r.queued, r.scheduled, r.running, r.workers) == ([0, 0, 2], 1, 1, 1)


def test_label_values_are_capped_and_the_rest_summed_under_other() -> None:
    hub, stats = make(max_functions=3)
    b = hub.broker
    b.connect(1)
    for i in range(10):
        b.receive(1, SubmitJob(b"fn%d" % i, b"x", background=True))
    snap = stats.snapshot(200.0)
    assert [r.name for r in snap.functions] == ["fn0", "fn1", "fn2", OTHER]
    other = snap.functions[-1]
    assert other.queued == [0, 7, 0] and other.counts[0] == 7
    assert snap.functions_total == 10


def test_names_are_decoded_cut_and_colliding_cuts_summed() -> None:
    hub, stats = make()
    b = hub.broker
    b.connect(1)
    long = b"x" * (st.MAX_NAME + 50)
    b.receive(1, SubmitJob(long + b"a", b"1", background=True))
    b.receive(1, SubmitJob(long + b"b", b"1", background=True))
    b.receive(1, SubmitJob(b"caf\xc3\xa9\xff", b"1", background=True))
    names = [r.name for r in stats.snapshot(200.0).functions]
    assert names == ["x" * st.MAX_NAME, "caf\u00e9\\xff"]
    assert row(stats, "x" * st.MAX_NAME).queued == [0, 2, 0]


def test_connections_by_role() -> None:
    hub, stats = make()
    b = hub.broker
    for cid in (1, 2, 3, 4):
        b.connect(cid)
    b.receive(1, CanDo(b"f"))
    b.receive(2, SubmitJob(b"g", b"x"))  # waits for its result
    b.receive(3, SubmitJob(b"g", b"y", background=True))
    assert stats.snapshot(200.0).connections == {"worker": 1, "client": 1, "other": 2}


def test_bytes_in_and_out_are_what_went_through_the_hub() -> None:
    hub, stats = make()
    cid = hub.open(b"127.0.0.1")
    request = ClientConnection().send(SubmitJob(b"f", b"payload", background=True))
    hub.receive(cid, request)
    out = hub.flush()
    snap = stats.snapshot(200.0)
    assert snap.bytes_in == len(request)
    assert snap.bytes_out == len(out.writes[cid]) > 0


def test_store_commits_are_timed_into_the_histogram() -> None:
    hub, stats = make(JobServer(store=MemoryStore(durable=True)))
    cid = hub.open(b"127.0.0.1")
    hub.receive(cid, ClientConnection().send(SubmitJob(b"f", b"x", background=True)))
    hub.flush()
    hub.flush()  # nothing written since: no commit to count
    snap = stats.snapshot(200.0)
    assert snap.commits == 1
    assert abs(snap.commit_seconds - 0.003) < 1e-9  # one tick of the clock passed in
    bucket = st.COMMIT_BUCKETS.index(0.005)
    assert snap.commit_buckets[bucket] == 1 and sum(snap.commit_buckets) == 1


def test_the_status_document_is_json_with_workers_running_jobs_and_history() -> None:
    hub, stats = make(max_rows=1)
    b = hub.broker
    for cid in (1, 2, 3):
        b.connect(cid, b"127.0.0.1")
    b.receive(2, SetClientId(b"<b>w</b>"))
    for cid in (2, 3):
        b.receive(cid, CanDo(b"<script>"))
    b.receive(1, SubmitJob(b"<script>", b"a", background=True))
    b.receive(1, SubmitJob(b"<script>", b"b", background=True))
    stats.sample(150.0)
    handle = grab(b, 2).handle
    grab(b, 3)
    b.receive(2, WorkStatus(handle, 3, 10))
    stats.sample(151.0)
    doc = json.loads(json.dumps(stats.status_document(160.0)))
    assert doc["server"]["uptime"] == 60.0
    assert doc["functions"][0]["name"] == "<script>"
    assert doc["functions"][0]["running"] == 2
    assert doc["workers_total"] == 2 and len(doc["workers"]) == 1
    assert doc["workers"][0]["client_id"] == "<b>w</b>"
    assert doc["running_total"] == 2 and len(doc["running"]) == 1
    assert doc["running"][0]["numerator"] == 3 and doc["running"][0]["denominator"] == 10
    assert doc["history"] == [[150.0, 2, 0, 0, 0, 0, 0], [151.0, 2, 0, 0, 0, 0, 0]]
