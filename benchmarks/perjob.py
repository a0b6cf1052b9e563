"""Per job, in the job server's process: instructions (cachegrind) and system calls (strace).

Figures that do not drift with a shared machine's speed, for the end-to-end
scenarios of :mod:`benchmarks.e2e` (same load generator, 4 clients, 2 workers,
100-byte payloads).  Each server runs under ``valgrind --tool=cachegrind`` (or
``strace -f -c``) twice, for ``--small`` and ``--large`` jobs after the same
warm-up; the difference over the difference in jobs is the cost of one job,
start-up and shutdown taken out.  Every thread of the server is counted.

    python -m benchmarks.perjob                          # gearmand (both), uvloop
    GEARMAN_BENCH_COMPILED_ROOT=../compiled python -m benchmarks.perjob \\
        --servers gearmand,gearmand-t0,uvloop,uvloop-mypyc
    python -m benchmarks.perjob --smoke                  # tiny: does it still work?
    python -m benchmarks.perjob --tools callgrind --servers uvloop-mypyc --scenarios fg1

``--tools callgrind`` counts as ``instructions`` does, under callgrind, and keeps
the two profiles in the work directory it names: :mod:`benchmarks.profile_diff`
takes the small run's from the large run's, function by function, for where the
instructions of one job go.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks._util import available, machine, workdir, write_json
from benchmarks.e2e import SCENARIOS, measure

TOOLS = ("instructions", "syscalls")
"""What is counted by default; ``callgrind`` is the third, asked for by name."""
_BINARIES = {"instructions": "valgrind", "callgrind": "valgrind", "syscalls": "strace"}
"""Every tool, and the program it runs the server under."""


def _prefix(tool: str, out: Path) -> list[str]:
    if tool == "instructions":
        return ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                f"--cachegrind-out-file={out}"]
    if tool == "callgrind":
        return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    return ["strace", "-f", "-c", "-o", str(out)]


def _total(tool: str, out: Path) -> int:
    text = out.read_text()
    if tool in ("instructions", "callgrind"):
        match = re.search(r"^summary:\s+(\d+)", text, re.M)
    else:
        # strace -c's last line: "100.00  seconds  usecs/call  calls  [errors]  total"
        match = re.search(r"^\s*100\.00\s+\S+\s+\S+\s+(\d+)\s.*total\s*$", text, re.M)
    if match is None:
        raise RuntimeError(f"no total in {out}: {text[-500:]}")
    return int(match.group(1))


def per_job(tool: str, kind: str, scenario: str, small: int, large: int,
            wd: Path, **load: Any) -> dict[str, Any]:
    """The tool's count per job for ``kind`` in ``scenario``: (large run - small run) / jobs."""
    counts = []
    jobs = []
    outputs = []
    for n in (small, large):
        out = wd / f"{tool}-{kind}-{scenario}-{n}.out"
        outputs.append(str(out))
        r = measure(kind, scenario, n, prefix=_prefix(tool, out), start_timeout=600.0,
                    wd=wd, **load)
        if r["jobs"] != n or r["errors"]:
            raise RuntimeError(f"{kind} {scenario}: {r['jobs']} of {n} jobs, "
                               f"{r['errors']} errors")
        counts.append(_total(tool, out))
        jobs.append(r["jobs"])
    return {"tool": tool, "server": kind, "scenario": scenario, "jobs": jobs,
            "totals": counts, "per_job": (counts[1] - counts[0]) / (jobs[1] - jobs[0]),
            "outputs": outputs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="gearmand,gearmand-t0,uvloop,uvloop-mypyc")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--small", type=int, default=500)
    p.add_argument("--large", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--smoke", action="store_true", help="50 and 150 jobs, bg only")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    if args.smoke:
        args.small, args.large, args.warmup, args.scenarios = 50, 150, 20, "bg"
    tools = [t for t in args.tools.split(",") if t]
    for tool in tools:
        if tool not in _BINARIES:
            p.error(f"unknown tool {tool!r}: choose from {', '.join(_BINARIES)}")
        if shutil.which(_BINARIES[tool]) is None:
            p.error(f"{tool} needs {_BINARIES[tool]}, which is not installed")
    servers = [s for s in args.servers.split(",") if s and available(s)]
    scenarios = [s for s in args.scenarios.split(",") if s]
    wd = workdir("perjob")
    load = {"window": 1000, "inflight": 16, "max_seconds": 600.0, "warmup": args.warmup,
            "workers": 2, "clients": 4, "payload": 100}
    info = machine()
    print(f"# {info['cpu']}, Python {info['python']}, gearmand {info['gearmand']}; "
          f"commit {info['commit']}; jobs {args.small} and {args.large}, warm-up {args.warmup}")
    rows = []
    for tool in tools:
        for sc in scenarios:
            for kind in servers:
                row = per_job(tool, kind, sc, args.small, args.large, wd, **load)
                rows.append(row)
                print(f"{tool:12s} {sc:4s} {kind:14s} {row['per_job']:12,.1f} per job",
                      flush=True)
                if tool == "callgrind":
                    small, large = row["outputs"]
                    print(f"    python -m benchmarks.profile_diff {small} {large} "
                          f"{row['jobs'][1] - row['jobs'][0]}", flush=True)
    print()
    for tool in tools:
        print(f"| {tool} per job | " + " | ".join(scenarios) + " |")
        print("|---|" + "---:|" * len(scenarios))
        for kind in servers:
            cells = [next(r["per_job"] for r in rows
                          if r["tool"] == tool and r["server"] == kind and r["scenario"] == sc)
                     for sc in scenarios]
            fmt = "{:.1f}" if tool == "syscalls" else "{:,.0f}"
            print(f"| {kind} | " + " | ".join(fmt.format(c) for c in cells) + " |")
        print()
    write_json(args.json, {"machine": info, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
