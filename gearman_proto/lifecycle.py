"""A job's life in the job server, as a table: ``(state, move) -> state``.

The broker (:class:`~gearman_proto.broker.JobServer`) keeps every job in
exactly one place: nowhere yet (``NEW``), waiting for its durable row to be
written (``PENDING``: a background job with a durable store), a function's
queue (``QUEUED``), the epoch heap (``SCHEDULED``), a worker (``RUNNING``),
or gone (``DONE``).  Every
change of place goes through :func:`move`, which looks the change up in
:data:`TRANSITIONS` and refuses one that is not there, so the table below is
the whole story (as h11's ``_state.py`` is for HTTP, and h2's stream machine
for a stream)::

        NEW ─── submit (background, durable store) ───▶ PENDING ── row not written ──▶ DONE
         │                                                │
         │ submit, replay                                 │ row written (commit)
         ▼                                                ▼
       ┌──────────────────────── by its epoch ─────────────────────────┐
       ▼                                                               ▼
     QUEUED ◀──────────────── comes due (advance) ─────────────── SCHEDULED
      │  ▲
 grab │  │ lost with retries left (disconnect, CANT_DO,
      ▼  │ RESET_ABILITIES, CAN_DO_TIMEOUT overrun)
     RUNNING

    PENDING, QUEUED, SCHEDULED or RUNNING ──▶ DONE: the end (WORK_COMPLETE,
    WORK_FAIL, WORK_EXCEPTION), lost with no retry left or nobody waiting,
    cancel job, drop function, a queued foreground job whose clients all left,
    a durable row the store could not write.

Which protocol inputs cause each move is :data:`CAUSES` (the docs draw it);
the property test in ``tests/test_lifecycle.py`` drives a JobServer with
arbitrary conversations and checks every move it makes against both tables.
"""

from __future__ import annotations

from typing import Final

__all__ = ["NEW", "QUEUED", "SCHEDULED", "RUNNING", "DONE", "PENDING", "STATE_NAMES",
           "QUEUE", "SCHEDULE", "ASSIGN", "FINISH", "PERSIST", "MOVE_NAMES",
           "TRANSITIONS", "CAUSES", "InvalidTransition", "move"]

# States.  Small ints: the broker compares them on its hot path.
NEW: Final = -1
QUEUED: Final = 0
SCHEDULED: Final = 1
RUNNING: Final = 2
DONE: Final = 3
PENDING: Final = 4
STATE_NAMES: Final = {NEW: "NEW", QUEUED: "QUEUED", SCHEDULED: "SCHEDULED",
                      RUNNING: "RUNNING", DONE: "DONE", PENDING: "PENDING"}

# Moves: what the broker does to a job.
QUEUE: Final = 10
"""Put it at the end of its priority queue."""
SCHEDULE: Final = 11
"""Park it until its epoch time."""
ASSIGN: Final = 12
"""Hand it to a worker (JOB_ASSIGN*)."""
FINISH: Final = 13
"""Remove it for good (its store row too)."""
PERSIST: Final = 14
"""Hold it until the store has written its row (then QUEUE or SCHEDULE)."""
MOVE_NAMES: Final = {QUEUE: "QUEUE", SCHEDULE: "SCHEDULE", ASSIGN: "ASSIGN", FINISH: "FINISH",
                     PERSIST: "PERSIST"}

TRANSITIONS: Final[dict[tuple[int, int], int]] = {
    (NEW, QUEUE): QUEUED,
    (NEW, SCHEDULE): SCHEDULED,
    (NEW, PERSIST): PENDING,
    (PENDING, QUEUE): QUEUED,
    (PENDING, SCHEDULE): SCHEDULED,
    (PENDING, FINISH): DONE,
    (SCHEDULED, QUEUE): QUEUED,
    (SCHEDULED, FINISH): DONE,
    (QUEUED, ASSIGN): RUNNING,
    (QUEUED, FINISH): DONE,
    (RUNNING, QUEUE): QUEUED,
    (RUNNING, FINISH): DONE,
}
"""Every change of place a job may make; nothing leaves DONE."""

CAUSES: Final[dict[str, frozenset[tuple[int, int]]]] = {
    "submit": frozenset({(NEW, QUEUED), (NEW, SCHEDULED), (NEW, PENDING)}),
    "commit": frozenset({(PENDING, QUEUED), (PENDING, SCHEDULED), (PENDING, DONE)}),
    "advance": frozenset({(SCHEDULED, QUEUED), (RUNNING, QUEUED), (RUNNING, DONE)}),
    "grab": frozenset({(QUEUED, RUNNING)}),
    "end": frozenset({(RUNNING, DONE)}),
    "lose": frozenset({(RUNNING, QUEUED), (RUNNING, DONE), (QUEUED, DONE)}),
    "cancel": frozenset({(QUEUED, DONE), (SCHEDULED, DONE), (RUNNING, DONE), (PENDING, DONE)}),
    "drop function": frozenset({(QUEUED, DONE), (SCHEDULED, DONE), (PENDING, DONE)}),
}
"""Which ``(from, to)`` changes each kind of input may cause.

``commit`` is the store's answer to a batch: the rows written (the jobs go to
their queue or the epoch heap) or not (the jobs end, their submitters get
QUEUE_ERROR).  ``advance`` is time: an epoch job comes due, or a CAN_DO_TIMEOUT expires (a
loss).  ``lose`` is a worker's disconnect, CANT_DO or RESET_ABILITIES, and a
client's disconnect (its queued foreground jobs nobody else waits for end).
"""


class InvalidTransition(Exception):
    """The broker tried a move the table does not allow: a bug in the broker.

    (An Exception, not a RuntimeError: a compiled class may only derive from
    Exception among the builtin exceptions.)
    """


# TRANSITIONS as a flat table for move(), which the broker calls a few times per
# job: indexed by (state - NEW) * _MOVES + (kind - QUEUE), each entry the new
# state or _NONE.  An index into a tuple is a native read, compiled; a dict keyed
# by the pair (or by one int) was a hash and a probe, and boxed the key (~250
# instructions a call, compiled, against ~60).  With the range checks in move()
# no two pairs share an index.
_MOVES: Final = PERSIST - QUEUE + 1
_NONE: Final = -100
_NEXT: Final[tuple[int, ...]] = tuple(
    TRANSITIONS.get((state, kind), _NONE)
    for state in range(NEW, PENDING + 1) for kind in range(QUEUE, PERSIST + 1))


def move(state: int, kind: int) -> int:
    """The state after ``kind`` from ``state``; InvalidTransition if there is none."""
    if QUEUE <= kind <= PERSIST and NEW <= state <= PENDING:
        new = _NEXT[(state - NEW) * _MOVES + kind - QUEUE]
        if new != _NONE:
            return new
    raise InvalidTransition(
        f"a {STATE_NAMES.get(state, state)} job cannot {MOVE_NAMES.get(kind, kind)}")
