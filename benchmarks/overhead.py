"""Library overhead: clients and workers of each library driving gearmand --threads=1.

The baseline is a minimal raw-socket client and worker (``benchmarks._peers``:
blocking sockets, hand-framed packets, nothing else).  Against it: our asyncio
adapter (on uvloop), our blocking adapter, and OpenStack's gear.  A pair runs
with both ends from one library, and each of ours also beside the raw other
end, so client and worker overhead show separately.  Client and worker are
separate processes; gearmand is restarted for every measurement.

Scenarios (foreground jobs, 100-byte payloads, one client, one worker):

* ``seq``   one job at a time (submit, wait for the result, next): latency-bound;
* ``conc``  ``--inflight`` jobs in flight (tasks for asyncio, threads for the
  blocking adapter and gear, a window for raw).

    python -m benchmarks.overhead             # 20k jobs per run, 3 runs
    python -m benchmarks.overhead --smoke     # a tiny run: does it still work?
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._util import (
    HOST,
    ROOT,
    Server,
    available,
    machine,
    median,
    workdir,
    write_json,
)

PAIRS = [
    ("raw", "raw"),
    ("asyncio", "asyncio"), ("asyncio", "raw"), ("raw", "asyncio"),
    ("sync", "sync"), ("sync", "raw"), ("raw", "sync"),
    ("gear", "gear"), ("gear", "raw"), ("raw", "gear"),
]
SCENARIOS = ("seq", "conc")


def _workers_of(port: int, function: str = "bench") -> int:
    """How many workers gearmand's admin ``status`` lists for ``function``."""
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(b"status\n")
        data = b""
        while not data.endswith(b".\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode().splitlines():
        parts = line.split("\t")
        if parts[0] == function and len(parts) == 4:
            return int(parts[3])
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(client: str, worker: str, scenario: str, jobs: int, inflight: int,
            seconds: float) -> dict[str, Any]:
    """One measurement on a fresh gearmand."""
    with Server("gearmand", workdir("overhead")) as server:
        port = str(server.port)
        wproc = subprocess.Popen([sys.executable, "-m", "benchmarks._peers", "worker", worker,
                                  port], cwd=ROOT)
        try:
            deadline = time.monotonic() + 15
            while _workers_of(server.port) < 1:
                if time.monotonic() > deadline or wproc.poll() is not None:
                    raise RuntimeError(f"{worker} worker did not register")
                time.sleep(0.05)
            cpu0 = _cpu_seconds(wproc.pid)
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks._peers", "client", client, port, scenario,
                 str(jobs), str(inflight), str(seconds)],
                cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60)
            if out.returncode:
                raise RuntimeError(f"{client} client failed: {out.stderr[-2000:]}")
            res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
            # The worker's CPU time over the client's run, per job: what the
            # worker spends, which a loaded machine's scheduling moves far less
            # than it moves jobs/s (the client measures its own: client_cpu_us).
            res["worker_cpu_us"] = (_cpu_seconds(wproc.pid) - cpu0) / max(res["jobs"], 1) * 1e6
        finally:
            wproc.terminate()
            try:
                wproc.wait(10)
            except subprocess.TimeoutExpired:
                wproc.kill()
                wproc.wait()
    res.update(client=client, worker=worker, scenario=scenario)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--inflight", type=int, default=16)
    p.add_argument("--max-seconds", type=float, default=20.0)
    p.add_argument("--pairs", default="all",
                   help="comma-separated client/worker pairs, e.g. raw/raw,asyncio/asyncio")
    p.add_argument("--smoke", action="store_true",
                   help="100 jobs, 1 run, raw/raw, asyncio/asyncio and sync/sync")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    if args.smoke:
        args.jobs, args.runs, args.max_seconds = 100, 1, 10.0
        if args.pairs == "all":
            args.pairs = "raw/raw,asyncio/asyncio,sync/sync"
    if not available("gearmand"):
        print("gearmand is not installed: nothing to measure", file=sys.stderr)
        return 1
    pairs = PAIRS if args.pairs == "all" else [
        tuple(x.split("/")) for x in args.pairs.split(",")]  # type: ignore[misc]
    if not available("gear"):
        pairs = [pair for pair in pairs if "gear" not in pair]
    info = machine()
    print(f"# {info['cpu']}, {info['cores']} cores, Python {info['python']}, gearmand "
          f"{info['gearmand']}, gear {info['gear']}, uvloop {info['uvloop']}; "
          f"{args.jobs} jobs per run, {args.runs} runs, conc = {args.inflight} in flight; "
          f"commit {info['commit']}")
    rows = []
    for run in range(args.runs):
        for scenario in SCENARIOS:
            for client, worker in pairs:
                r = measure(client, worker, scenario, args.jobs, args.inflight,
                            args.max_seconds)
                r["run"] = run
                rows.append(r)
                print(f"run {run + 1} {scenario:4s} client {client:8s} worker {worker:8s} "
                      f"{r['jobs_per_s']:9,.0f} jobs/s  p50 {r['p50_us']:8.0f} µs  "
                      f"p99 {r['p99_us']:8.0f} µs  CPU/job client {r['client_cpu_us']:6.1f} "
                      f"worker {r['worker_cpu_us']:6.1f} µs"
                      f"{'  TIME BOUND' if r['timed_out'] else ''}",
                      flush=True)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    print()
    for scenario in SCENARIOS:
        summary[scenario] = {}
        title = ("one job at a time" if scenario == "seq"
                 else f"{args.inflight} jobs in flight")
        print(f"**{scenario}** ({title})\n")
        print("| client | worker | jobs/s | x raw | p50 µs | p99 µs | client CPU µs/job "
              "| worker CPU µs/job |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for client, worker in pairs:
            mine = [r for r in rows if r["scenario"] == scenario and r["client"] == client
                    and r["worker"] == worker]
            cell = {k: median(r[k] for r in mine)
                    for k in ("jobs_per_s", "p50_us", "p99_us", "client_cpu_us", "worker_cpu_us")}
            summary[scenario][f"{client}/{worker}"] = cell
        base = summary[scenario].get("raw/raw", {}).get("jobs_per_s")
        for key, cell in summary[scenario].items():
            cell["ratio"] = cell["jobs_per_s"] / base if base else float("nan")
            client, worker = key.split("/")
            print(f"| {client} | {worker} | {cell['jobs_per_s']:,.0f} | {cell['ratio']:.2f} | "
                  f"{cell['p50_us']:,.0f} | {cell['p99_us']:,.0f} | {cell['client_cpu_us']:,.1f} "
                  f"| {cell['worker_cpu_us']:,.1f} |")
        print()
    write_json(args.json, {"machine": info, "args": vars(args), "rows": rows,
                           "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
