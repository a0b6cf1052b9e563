"""Known differences: divergences that are documented behaviour, not findings.

Each of our deliberate differences from gearmand 1.1.20 (the README's table,
``gearman_proto/broker.py``'s docstring) is here with a *trigger*: what a case
must have sent, up to the step where the target diverged, for the difference
to be a possible cause.  A divergence in a case that fired a listed trigger is
counted under that difference's name instead of being reported.  The triggers
are deliberately broad (a case that cancels a job may diverge anywhere after),
so a run that lists them finds less; run without them to see everything.

``--known-differences`` takes a built-in set name (``gearmand-1.1.20``: all of
them) or a file with one difference name a line (``#`` starts a comment).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gearman_proto.packets import PacketType as T

from .case import Case, Item, Line, Packet, Raw

__all__ = ["Difference", "DIFFERENCES", "load", "explain"]

_FOREGROUND = frozenset({T.SUBMIT_JOB, T.SUBMIT_JOB_HIGH, T.SUBMIT_JOB_LOW,
                         T.SUBMIT_REDUCE_JOB})
_SUBMIT = frozenset({*_FOREGROUND, T.SUBMIT_JOB_BG, T.SUBMIT_JOB_HIGH_BG,
                     T.SUBMIT_JOB_LOW_BG, T.SUBMIT_JOB_EPOCH, T.SUBMIT_JOB_SCHED,
                     T.SUBMIT_REDUCE_JOB_BACKGROUND})
_CAN_DO = frozenset({T.CAN_DO, T.CAN_DO_TIMEOUT})


@dataclass(frozen=True)
class Difference:
    """One documented difference: its name, what it is, and its trigger."""

    name: str
    text: str
    trigger: Callable[[Case, int], bool]


def _items(case: Case, upto: int) -> Iterator[tuple[int, Item]]:
    for step in case.steps[:upto + 1]:
        for item in step.items:
            yield step.conn, item


def _packets(case: Case, upto: int, *types: int) -> Iterator[tuple[int, Packet]]:
    for conn, item in _items(case, upto):
        if isinstance(item, Packet) and (not types or item.type in types):
            yield conn, item


def _admin(case: Case, upto: int, prefix: bytes) -> bool:
    return any(isinstance(i, Line) and b" ".join(i.text.lower().split()).startswith(prefix)
               for _, i in _items(case, upto))


def _functions_per_worker(case: Case, upto: int) -> bool:
    seen: dict[int, set[bytes]] = {}
    for conn, p in _packets(case, upto, *_CAN_DO):
        seen.setdefault(conn, set()).add(p.args[0])
    return any(len(f) > 1 for f in seen.values())


def _can_do_twice(case: Case, upto: int) -> bool:
    seen: set[tuple[int, bytes]] = set()
    for conn, p in _packets(case, upto, *_CAN_DO):
        if (conn, p.args[0]) in seen:
            return True
        seen.add((conn, p.args[0]))
    return False


def _can_do_after_sleep(case: Case, upto: int) -> bool:
    asleep: set[int] = set()
    for conn, p in _packets(case, upto):
        if p.type == T.PRE_SLEEP:
            asleep.add(conn)
        elif p.type in _CAN_DO and conn in asleep:
            return True
    return False


def _client_left(case: Case, upto: int) -> bool:
    submitted: set[int] = set()
    for step in case.steps[:upto + 1]:
        if any(isinstance(i, Packet) and i.type in _FOREGROUND for i in step.items):
            submitted.add(step.conn)
        if step.close and step.conn in submitted:
            return True
    return False


def _long_unique(case: Case, upto: int) -> bool:
    return any(len(p.args[1]) == 64 or p.args[1] == b"{U64}"
               for _, p in _packets(case, upto, *_SUBMIT))


def _dash(case: Case, upto: int) -> bool:
    return any(p.args[0] == b"-" for _, p in _packets(case, upto, T.GET_STATUS_UNIQUE))


def _maxqueue_limits(case: Case, upto: int) -> bool:
    return any(isinstance(i, Line) and i.text.lower().startswith(b"maxqueue")
               and len(i.text.split()) >= 6 for _, i in _items(case, upto))


DIFFERENCES: dict[str, Difference] = {d.name: d for d in (
    Difference("priority-across-functions",
               "priority is global across a worker's functions; gearmand takes its newest "
               "registered function with any job", _functions_per_worker),
    Difference("epoch-timer", "SUBMIT_JOB_EPOCH jobs wake sleepers when due; gearmand NOOPs "
               "them at submission and never when due",
               lambda c, u: any(_packets(c, u, T.SUBMIT_JOB_EPOCH))),
    Difference("can-do-timeout", "one CAN_DO_TIMEOUT timer per job, not cancelled by "
               "PRE_SLEEP", lambda c, u: any(_packets(c, u, T.CAN_DO_TIMEOUT))),
    Difference("cancel-job", "a cancelled job leaves at once; a running one's later WORK_* "
               "get JOB_NOT_FOUND", lambda c, u: _admin(c, u, b"cancel job")),
    Difference("client-left", "a queued foreground job whose clients all left is gone at "
               "once", _client_left),
    Difference("drop-function", "drop function fails the function's queued jobs",
               lambda c, u: _admin(c, u, b"drop function")),
    Difference("can-do-twice", "CAN_DO twice is one registration", _can_do_twice),
    Difference("can-do-wakes", "CAN_DO for waiting work wakes a sleeping worker",
               _can_do_after_sleep),
    Difference("unique-64", "a 64-byte unique is kept whole", _long_unique),
    Difference("status-unique-dash", "GET_STATUS_UNIQUE - never finds jobs submitted "
               "with unique -", _dash),
    Difference("exception-as-fail", "a WORK_EXCEPTION forwarded as WORK_FAIL carries the "
               "bare handle", lambda c, u: any(_packets(c, u, T.WORK_EXCEPTION))),
    Difference("maxqueue-limits", "maxqueue with four or more limits answers ERR "
               "INVALID_ARGUMENTS", _maxqueue_limits),
    Difference("malformed-packets", "a malformed packet gets an ERROR and a close; "
               "gearmand closes silently or carries on",
               lambda c, u: any(isinstance(i, Raw) for _, i in _items(c, u))),
)}

SETS = {"gearmand-1.1.20": tuple(DIFFERENCES)}
"""Built-in sets for ``--known-differences``."""


def load(spec: str) -> list[Difference]:
    """The differences ``spec`` names: a built-in set or a file of names.

    ``ValueError`` names what is wrong (an unknown name, a missing file).
    """
    if spec in SETS:
        return [DIFFERENCES[n] for n in SETS[spec]]
    try:
        text = Path(spec).read_text()
    except OSError as exc:
        raise ValueError(f"--known-differences {spec}: {exc.strerror or exc} (a file of "
                         f"names, or one of: {', '.join(SETS)})") from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if name not in DIFFERENCES:
            raise ValueError(f"{spec}:{number}: unknown difference {name!r} (known: "
                             f"{', '.join(DIFFERENCES)})")
        out.append(DIFFERENCES[name])
    return out


def explain(case: Case, upto: int, known: list[Difference]) -> str | None:
    """The name of the first listed difference ``case`` triggered by step ``upto``."""
    for d in known:
        if d.trigger(case, upto):
            return d.name
    return None
