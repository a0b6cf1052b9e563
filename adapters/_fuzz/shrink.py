"""Make a failing case smaller while it still fails the same way.

Greedy and bounded: candidates drop what comes after the failing step, whole
connections, runs of steps (halves, quarters, ... single steps), single items,
and the tail of raw bytes; a candidate is kept when running it gives a finding
with the same signature.  Each try runs against the live target, restarting
it first when a try killed it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from .case import Case, Raw, Step
from .run import Finding

__all__ = ["shrink"]


def _renumber(roles: tuple[str, ...], steps: list[Step]) -> Case:
    used = sorted({s.conn for s in steps})
    index = {old: new for new, old in enumerate(used)}
    return Case(tuple(roles[i] for i in used), [s._replace(conn=index[s.conn]) for s in steps])


def _candidates(case: Case, step: int) -> Iterator[Case]:
    steps = case.steps
    if step + 1 < len(steps):
        yield _renumber(case.roles, steps[:step + 1])
    for conn in range(len(case.roles)):
        rest = [s for s in steps if s.conn != conn]
        if rest:
            yield _renumber(case.roles, rest)
    size = len(steps) // 2
    while size >= 1:
        for start in range(0, len(steps), size):
            rest = steps[:start] + steps[start + size:]
            if rest:
                yield _renumber(case.roles, rest)
        size //= 2
    for i, s in enumerate(steps):
        for j in range(len(s.items)):
            items = s.items[:j] + s.items[j + 1:]
            if items or s.close:
                yield Case(case.roles, [*steps[:i], s._replace(items=items), *steps[i + 1:]])
        for j, item in enumerate(s.items):
            if isinstance(item, Raw) and len(item.data) > 1:
                for cut in sorted({12, len(item.data) // 2, len(item.data) - 1}):
                    if 0 < cut < len(item.data):
                        items = (*s.items[:j], Raw(item.data[:cut]), *s.items[j + 1:])
                        yield Case(case.roles,
                                   [*steps[:i], s._replace(items=items), *steps[i + 1:]])


def shrink(case: Case, finding: Finding, attempt: Callable[[Case], Finding | None], *,
           seconds: float = 60.0, tries: int = 300) -> tuple[Case, Finding, int]:
    """The smallest case found, its finding and the number of tries made."""
    deadline = time.monotonic() + seconds
    made = 0
    best, best_finding = case, finding
    improved = True
    while improved:
        improved = False
        for candidate in _candidates(best, best_finding.step):
            if candidate.size >= best.size:
                continue
            if made >= tries or time.monotonic() > deadline:
                return best, best_finding, made
            made += 1
            got = attempt(candidate)
            if got is not None and got.signature == finding.signature:
                best, best_finding, improved = candidate, got, True
                break
    return best, best_finding, made
