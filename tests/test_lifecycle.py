"""Every move the job server makes follows the job lifecycle table.

gearman_proto.lifecycle holds the table of ``(state, move) -> state`` and of
which inputs may cause which change.  Hypothesis drives a JobServer with
arbitrary mixes of submissions (foreground, background, epoch, unique),
grabs, results, losses (disconnects, CANT_DO, CAN_DO_TIMEOUT), cancels, drops
and time, and every move the broker makes is observed (each job's state before
and after each input): each must be in the table, and each must be one its
input may cause.  Fixed scripts take every
edge of the table, so no edge's check is vacuous.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gearman_proto import lifecycle
from gearman_proto.broker import JobServer
from gearman_proto.events import (
    AdminCommand,
    CanDo,
    CanDoTimeout,
    CantDo,
    GrabJobUniq,
    JobAssign,
    JobCreated,
    SubmitJob,
    SubmitJobEpoch,
    WorkComplete,
    WorkException,
    WorkFail,
)
from gearman_proto.store import MemoryStore

FUNCTIONS = [b"f", b"g"]
CLIENTS = [1, 2]
WORKERS = [10, 11]

operation = st.one_of(
    st.tuples(st.just("submit"), st.sampled_from(CLIENTS), st.sampled_from(FUNCTIONS),
              st.booleans(), st.sampled_from([b"", b"u1", b"u2"])),
    st.tuples(st.just("epoch"), st.sampled_from(CLIENTS), st.sampled_from(FUNCTIONS),
              st.integers(0, 3)),
    st.tuples(st.just("grab"), st.sampled_from(WORKERS)),
    st.tuples(st.just("end"), st.sampled_from(WORKERS), st.sampled_from(["complete", "fail",
                                                                         "exception"])),
    st.tuples(st.just("lose"), st.sampled_from(WORKERS + CLIENTS),
              st.sampled_from(["disconnect", "cant_do"])),
    st.tuples(st.just("cancel"),),
    st.tuples(st.just("drop function"), st.sampled_from(FUNCTIONS)),
    st.tuples(st.just("advance"), st.floats(0.1, 3.0)),
    st.tuples(st.just("commit"), st.booleans()),
)


class Run:
    """One JobServer and the bookkeeping a script needs to address its jobs."""

    def __init__(self, durable: bool) -> None:
        # A durable store: background jobs wait (PENDING) for their batch's commit.
        self.store = MemoryStore(durable=True) if durable else None
        self.server = JobServer(now=1000.0, job_retries=1, allow_shutdown=False,
                                store=self.store)
        self.now = 1000.0
        self.held: dict[int, list[bytes]] = {w: [] for w in WORKERS}
        self.handles: list[bytes] = []
        for cid in CLIENTS + WORKERS:
            self.connect(cid)

    def connect(self, cid: int) -> None:
        self.server.connect(cid)
        if cid in WORKERS:
            self.held[cid] = []
            self.server.receive(cid, CanDo(FUNCTIONS[0]))
            self.server.receive(cid, CanDoTimeout(FUNCTIONS[1], 1000))

    def feed(self, cid: int, event: Any) -> None:
        for dest, out in self.server.receive(cid, event):
            self.note(dest, out)

    def note(self, dest: int, out: Any) -> None:
        if isinstance(out, JobCreated):
            self.handles.append(out.handle)
        elif isinstance(out, JobAssign) and dest in WORKERS:
            self.held[dest].append(out.handle)

    def apply(self, op: tuple[Any, ...]) -> str:
        """Do ``op``; returns the kind of input it is, as lifecycle.CAUSES names them."""
        kind = op[0]
        if kind == "submit":
            _, cid, function, background, unique = op
            self.feed(cid, SubmitJob(function, b"data", unique, background=background))
            return "submit"
        if kind == "epoch":
            _, cid, function, ahead = op
            self.feed(cid, SubmitJobEpoch(function, int(self.now) + ahead, b"data", b""))
            return "submit"
        if kind == "grab":
            self.feed(op[1], GrabJobUniq())
            return "grab"
        if kind == "end":
            _, worker, how = op
            if not self.held[worker]:
                return "end"
            handle = self.held[worker].pop(0)
            event = {"complete": WorkComplete(handle, b"r"), "fail": WorkFail(handle),
                     "exception": WorkException(handle, b"e")}[how]
            self.feed(worker, event)
            return "end"
        if kind == "lose":
            _, cid, how = op
            if how == "cant_do" and cid in WORKERS:
                for function in FUNCTIONS:
                    self.feed(cid, CantDo(function))
                self.held[cid] = []
                self.feed(cid, CanDo(FUNCTIONS[0]))
                self.feed(cid, CanDoTimeout(FUNCTIONS[1], 1000))
            else:
                for dest, out in self.server.disconnect(cid):
                    self.note(dest, out)
                self.connect(cid)
            return "lose"
        if kind == "cancel":
            if self.handles:
                self.feed(CLIENTS[0], AdminCommand(b"cancel job " + self.handles[-1]))
            return "cancel"
        if kind == "commit":
            if self.store is not None:  # a full disk, a dead database
                self.store.fail = "disk full" if op[1] else None
            for dest, out in self.server.commit():
                self.note(dest, out)
            if self.store is not None:
                self.store.fail = None
            return "commit"
        if kind == "drop function":
            self.feed(CLIENTS[0], AdminCommand(b"drop function " + op[1]))
            return "drop function"
        self.now += op[1]
        for dest, out in self.server.advance(self.now):
            self.note(dest, out)
        for worker in WORKERS:  # a timed-out job is no longer the worker's
            self.held[worker] = [h for h in self.held[worker]
                                 if (info := self.server.job(h)) is not None
                                 and info.worker == worker]
        return "advance"


def _states(server: JobServer) -> dict[int, tuple[Any, int]]:
    """Every job in ``server`` and its state, by the job's identity."""
    return {id(job): (job, job.state) for job in server._jobs.values()}


def _move_between(state: int, new: int) -> int:
    """The one move of the table from ``state`` to ``new`` (fails if there is none)."""
    kinds = [kind for (s, kind), n in lifecycle.TRANSITIONS.items() if s == state and n == new]
    assert len(kinds) == 1, (
        f"no move takes a job {lifecycle.STATE_NAMES[state]} -> {lifecycle.STATE_NAMES[new]}")
    return kinds[0]


def run_script(script: list[Any], durable: bool) -> set[tuple[int, int]]:
    """Run ``script``, checking every move against both tables; the moves taken.

    The moves are observed, not intercepted: each job's state before and after
    every input (so the broker runs as it does in production, compiled or not;
    a move the table lacks raises InvalidTransition in the broker itself).
    One input moves a job at most once, so the change is one edge of the table.
    """
    taken: set[tuple[int, int]] = set()
    run = Run(durable)
    for op in script:
        before = _states(run.server)
        cause = run.apply(op)
        after = _states(run.server)
        changes = [(state, job.state) for key, (job, state) in before.items()
                   if job.state != state]
        changes += [(lifecycle.NEW, state) for key, (job, state) in after.items()
                    if key not in before]
        for state, new in changes:
            kind = _move_between(state, new)
            if state == lifecycle.NEW and cause != "submit":
                pytest.fail(f"a job was created by {cause}")
            if state != lifecycle.NEW:
                assert (state, new) in lifecycle.CAUSES[cause], (
                    f"{cause} moved a job {lifecycle.STATE_NAMES[state]} -> "
                    f"{lifecycle.STATE_NAMES[new]}")
            taken.add((state, kind))
    return taken


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=40), st.booleans())
def test_every_move_is_in_the_table_and_caused_by_its_input(script: list[Any],
                                                            durable: bool) -> None:
    run_script(script, durable)


# Scripts that take every edge of the table, so the checks above cannot be
# vacuous for one (hypothesis may or may not draw it in a given run).
EVERY_EDGE: list[tuple[bool, list[Any]]] = [
    (False, [("submit", 1, b"f", False, b""), ("grab", 10), ("end", 10, "complete")]),
    (False, [("submit", 1, b"f", False, b""), ("grab", 10), ("lose", 10, "disconnect")]),
    (False, [("submit", 1, b"f", True, b""), ("cancel",)]),
    (False, [("epoch", 1, b"f", 2), ("advance", 3.0)]),
    (False, [("epoch", 1, b"f", 2), ("cancel",)]),
    (True, [("submit", 1, b"f", True, b""), ("commit", False)]),
    (True, [("submit", 1, b"f", True, b""), ("commit", True)]),
    (True, [("epoch", 1, b"f", 3), ("commit", False)]),
]


def test_scripts_take_every_edge_of_the_table() -> None:
    taken: set[tuple[int, int]] = set()
    for durable, script in EVERY_EDGE:
        taken |= run_script(script, durable)
    assert set(lifecycle.TRANSITIONS) <= taken, (
        "never taken: " + ", ".join(
            f"{lifecycle.STATE_NAMES[s]}+{lifecycle.MOVE_NAMES[k]}"
            for s, k in set(lifecycle.TRANSITIONS) - taken))


def test_a_move_not_in_the_table_is_refused() -> None:
    with pytest.raises(lifecycle.InvalidTransition, match="a DONE job cannot QUEUE"):
        lifecycle.move(lifecycle.DONE, lifecycle.QUEUE)
    with pytest.raises(lifecycle.InvalidTransition, match="a RUNNING job cannot SCHEDULE"):
        lifecycle.move(lifecycle.RUNNING, lifecycle.SCHEDULE)


def test_move_is_the_table() -> None:
    """move() answers from the table for every pair, and refuses every pair not in it."""
    for state in range(lifecycle.NEW - 2, lifecycle.PENDING + 3):
        for kind in range(lifecycle.QUEUE - 3, lifecycle.PERSIST + 3):
            if (state, kind) in lifecycle.TRANSITIONS:
                assert lifecycle.move(state, kind) == lifecycle.TRANSITIONS[state, kind]
            else:
                with pytest.raises(lifecycle.InvalidTransition):
                    lifecycle.move(state, kind)
