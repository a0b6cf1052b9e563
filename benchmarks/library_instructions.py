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
    python -m benchmarks.library_instructions --in-process --jobs 2000

Under valgrind the number of turns of the event loop per job depends on timing,
which moves the end-to-end counts by up to 15 % between runs of the same code.
``--in-process`` takes that out: the asyncio worker runs its jobs with no
socket and no job server, each JOB_ASSIGN_UNIQ fed to its connection's read
callback in the turn of the loop after the worker wrote its result and next
grab, so that every job costs the same instructions in every run (the worker's
own Python and the loop's callbacks, not the system calls or the peer).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks._util import ROOT, Server, available, workdir, write_json
from benchmarks.overhead import _workers_of


def _instructions(cmd: list[str], env: dict[str, str] | None = None) -> int:
    with tempfile.NamedTemporaryFile(suffix=".cg") as out:
        done = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                               f"--cachegrind-out-file={out.name}", *cmd],
                              cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
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


def drive_worker(jobs: int) -> None:
    """Run ``jobs`` jobs through the asyncio worker with a transport of its own (no I/O).

    The transport answers each write (a result and the next grab) by feeding
    the next JOB_ASSIGN_UNIQ to the read callback one turn of the loop later,
    as a socket's readiness would; the first write is the worker's CAN_DO and
    grab.
    """
    import asyncio

    from gearman_proto.adapters import _asyncio_backend
    from gearman_proto.adapters.asyncio import Worker, WorkerJob

    from benchmarks._peers import FUNCTION, PAYLOAD
    from benchmarks._util import run_loop
    from gearman_proto import RES, PacketType, encode_packet

    assigns = iter([encode_packet(RES, PacketType.JOB_ASSIGN_UNIQ,
                                  (b"H:bench:%d" % i, FUNCTION, b"", PAYLOAD))
                    for i in range(jobs)])
    worker = Worker(("127.0.0.1", 9))  # never connected to: connect() is replaced below

    class Transport:
        link: Any = None
        writes = 0

        def write(self, data: bytes) -> None:
            self.writes += 1
            asyncio.get_running_loop().call_soon(self.feed)

        def feed(self) -> None:
            assign = next(assigns, None)
            if assign is None:
                worker.stop(graceful=False)
            else:
                self.link.data_received(assign)

        def close(self) -> None:
            pass

        def get_extra_info(self, name: str) -> None:
            return None

    transport = Transport()

    async def connect(address: Any, options: Any, on_data: Any, on_close: Any = None) -> Any:
        link = transport.link = _asyncio_backend._Link(on_data, on_close)
        link.connection_made(transport)  # type: ignore[arg-type]
        return link

    async def bench(job: WorkerJob) -> bytes:
        return job.data

    async def main() -> None:
        _asyncio_backend.BACKEND.connect = connect  # type: ignore[method-assign]  # here only
        worker.register(FUNCTION, bench)
        await worker.work()

    run_loop(main())
    if worker.jobs_done != jobs or transport.writes != jobs + 1:
        raise RuntimeError(f"{worker.jobs_done} jobs done and {transport.writes} writes "
                           f"for {jobs} jobs")


def in_process(jobs: int) -> dict[str, Any]:
    """Instructions per job of :func:`drive_worker`, start-up taken out (N and 2N jobs)."""
    cmd = [sys.executable, "-m", "benchmarks.library_instructions", "--drive-worker"]
    # One hash seed: str hashes (and so dict and set probing) the same in every run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    small = _instructions([*cmd, str(jobs)], env)
    large = _instructions([*cmd, str(2 * jobs)], env)
    return {"lib": "asyncio", "side": "worker", "scenario": "in-process",
            "instructions_per_job": (large - small) / jobs, "small": small, "large": large}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--libs", default="asyncio,sync")
    p.add_argument("--sides", default="client,worker")
    p.add_argument("--scenario", default="conc", choices=("seq", "conc"))
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--inflight", type=int, default=16)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--in-process", action="store_true",
                   help="the asyncio worker's own instructions per job, no socket, no server")
    p.add_argument("--drive-worker", type=int, metavar="JOBS", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.drive_worker is not None:
        drive_worker(args.drive_worker)
        return 0
    if args.in_process:
        if shutil.which("valgrind") is None:
            print("needs valgrind", file=sys.stderr)
            return 1
        row = in_process(args.jobs)
        print(f"asyncio  worker  in-process: {row['instructions_per_job']:10,.0f} "
              f"instructions per job", flush=True)
        write_json(args.json, {"args": vars(args), "rows": [row]})
        return 0
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
