"""Instructions per job of our client and worker libraries, counted by cachegrind.

Wall-clock rates on a shared machine move by tens of percent between runs;
the instructions a process executes for the same work do not.  Each
measurement runs one side (``client`` or ``worker``) of one library under
``valgrind --tool=cachegrind`` against gearmand, with the raw-socket peer of
``benchmarks._peers`` on the other end, twice (``--jobs`` and twice as many
jobs): the difference divided by the extra jobs is the cost of one job with
start-up taken out.

    python -m benchmarks.library_instructions                    # asyncio and sync, both sides
    python -m benchmarks.library_instructions --libs asyncio --sides worker --jobs 1000
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks._util import ROOT, Server, available, workdir, write_json
from benchmarks.overhead import _workers_of


def _instructions(cmd: list[str]) -> int:
    with tempfile.NamedTemporaryFile(suffix=".cg") as out:
        done = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                               f"--cachegrind-out-file={out.name}", *cmd],
                              cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise RuntimeError(f"{cmd} failed: {done.stderr[-2000:]}")
        match = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if not match:
            raise RuntimeError(f"no instruction count in valgrind's output: "
                               f"{done.stderr[-500:]}")
        return int(match.group(1).replace(",", ""))


def count(lib: str, side: str, scenario: str, jobs: int, inflight: int) -> int:
    """Instructions of ``lib``'s ``side`` for ``jobs`` jobs on a fresh gearmand."""
    peers = [sys.executable, "-m", "benchmarks._peers"]
    worker_lib, client_lib = (lib, "raw") if side == "worker" else ("raw", lib)
    with Server("gearmand", workdir("instructions")) as server:
        port = str(server.port)
        worker_cmd = [*peers, "worker", worker_lib, port]
        client_cmd = [*peers, "client", client_lib, port, scenario, str(jobs), str(inflight),
                      "600"]
        if side == "worker":
            wproc = subprocess.Popen(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                                      "--cachegrind-out-file=/dev/null", *worker_cmd],
                                     cwd=ROOT, stderr=subprocess.PIPE, text=True)
        else:
            wproc = subprocess.Popen(worker_cmd, cwd=ROOT)
        try:
            deadline = time.monotonic() + 120
            while _workers_of(server.port) < 1:
                if time.monotonic() > deadline or wproc.poll() is not None:
                    raise RuntimeError(f"{worker_lib} worker did not register")
                time.sleep(0.1)
            if side == "client":
                return _instructions(client_cmd)
            subprocess.run(client_cmd, cwd=ROOT, check=True, capture_output=True,
                           timeout=1800)
        finally:
            wproc.terminate()
            _, err = wproc.communicate(timeout=120)
        match = re.search(r"I\s+refs:\s+([\d,]+)", err or "")
        if not match:
            raise RuntimeError(f"no instruction count for the worker: {(err or '')[-500:]}")
        return int(match.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--libs", default="asyncio,sync")
    p.add_argument("--sides", default="client,worker")
    p.add_argument("--scenario", default="conc", choices=("seq", "conc"))
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--inflight", type=int, default=16)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    if not available("gearmand") or shutil.which("valgrind") is None:
        print("needs gearmand and valgrind", file=sys.stderr)
        return 1
    rows: list[dict[str, Any]] = []
    for lib in args.libs.split(","):
        for side in args.sides.split(","):
            small = count(lib, side, args.scenario, args.jobs, args.inflight)
            large = count(lib, side, args.scenario, 2 * args.jobs, args.inflight)
            per_job = (large - small) / args.jobs
            rows.append({"lib": lib, "side": side, "scenario": args.scenario,
                         "instructions_per_job": per_job, "small": small, "large": large})
            print(f"{lib:8s} {side:7s} {args.scenario}: {per_job:10,.0f} instructions per job",
                  flush=True)
    write_json(args.json, {"args": vars(args), "rows": rows})
    if args.json is None:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
