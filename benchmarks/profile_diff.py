"""Where one job's instructions go: two callgrind profiles of a run, the small from the large.

:mod:`benchmarks.perjob` with ``--tools callgrind`` runs the server under
callgrind for a small and a large number of jobs after the same warm-up and
keeps both profiles.  Taking the small run's counts from the large run's, for
each function, leaves what the extra jobs cost -- start-up, imports and
shutdown cancel out -- and dividing by the extra jobs gives a per-job profile:
the instructions spent in each function itself, with its callees (inclusive)
and the calls made to it.

    python -m benchmarks.profile_diff SMALL.out LARGE.out JOBS [--top 40] [--match RE]
    python -m benchmarks.profile_diff SMALL.out LARGE.out JOBS --sort calls --match 'gil|GIL'

Functions are told apart by name (the same compiled function reached through
headers of several files counts once).  A recursive function's inclusive count
holds its recursion more than once, as callgrind's own call costs do.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

_NAME = re.compile(r"(c?fn)=\((\d+)\)(?: (.*))?$")
_CALLS = re.compile(r"calls=(\d+)")


@dataclass
class Profile:
    """One callgrind profile, summed by function name: Ir spent in the function
    itself, Ir of the calls it made (their callees' inclusive cost), and the
    calls made to it."""

    own: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    callees: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: int = 0

    def inclusive(self, name: str) -> int:
        return self.own.get(name, 0) + self.callees.get(name, 0)


def _cost(line: str) -> int:
    """The Ir of a cost line (``position Ir``; a position may be ``+n``, ``-n`` or ``*``)."""
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def load(path: Path) -> Profile:
    """Read a callgrind output file (one event, Ir, as callgrind writes by default)."""
    profile = Profile()
    names: dict[str, str] = {}
    fn = callee = ""
    call_pending = False
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            head = line[:1]
            if head and (head.isdigit() or head in "+-*"):
                cost = _cost(line)
                if call_pending:
                    profile.callees[fn] += cost
                    call_pending = False
                else:
                    profile.own[fn] += cost
                continue
            match = _NAME.match(line.rstrip("\n"))
            if match is not None:
                kind, number, name = match.groups()
                if name:
                    names[number] = name.strip()
                if kind == "fn":
                    fn = names.get(number, number)
                else:
                    callee = names.get(number, number)
                continue
            match = _CALLS.match(line)
            if match is not None:
                profile.calls[callee] += int(match.group(1))
                call_pending = True
            elif line.startswith("summary:"):
                profile.total = int(line.split()[1])
    if not profile.total:
        profile.total = sum(profile.own.values())
    return profile


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("small", type=Path, help="the profile of the run with fewer jobs")
    p.add_argument("large", type=Path, help="the profile of the run with more jobs")
    p.add_argument("jobs", type=int, help="how many more jobs the large run made")
    p.add_argument("--top", type=int, default=40, help="rows to print (default 40)")
    p.add_argument("--sort", choices=("own", "inclusive", "calls"), default="own")
    p.add_argument("--match", help="only functions whose name matches this expression")
    args = p.parse_args(argv)
    if args.jobs <= 0:
        p.error(f"jobs must be positive, not {args.jobs}")
    try:
        pattern = re.compile(args.match) if args.match else None
    except re.error as exc:
        p.error(f"--match {args.match!r}: {exc}")
    profiles = []
    for path in (args.small, args.large):
        try:
            profiles.append(load(path))
        except OSError as exc:
            p.error(f"cannot read {path}: {exc.strerror or exc}")
    small, large = profiles
    n = args.jobs
    names = set(small.own) | set(large.own) | set(small.calls) | set(large.calls)
    if pattern is not None:
        names = {name for name in names if pattern.search(name)}
    rows = []
    for name in names:
        own = (large.own.get(name, 0) - small.own.get(name, 0)) / n
        incl = (large.inclusive(name) - small.inclusive(name)) / n
        calls = (large.calls.get(name, 0) - small.calls.get(name, 0)) / n
        rows.append((own, incl, calls, name))
    key = {"own": 0, "inclusive": 1, "calls": 2}[args.sort]
    rows.sort(key=lambda row: row[key], reverse=True)
    print(f"# per job: {(large.total - small.total) / n:,.0f} instructions "
          f"({args.large.name} - {args.small.name}, over {n:,} jobs)")
    print(f"{'own':>9} {'inclusive':>10} {'calls':>7}  function")
    for own, incl, calls, name in rows[:args.top]:
        print(f"{own:9,.0f} {incl:10,.0f} {calls:7.2f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
