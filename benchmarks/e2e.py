"""End to end on loopback: gearmand, gear's server and ours under one load generator.

Three scenarios (100-byte payloads, 2 workers, 4 clients):

* ``bg``   background jobs: SUBMIT_JOB_BG pipelined by 4 clients (``--window``
  unanswered each), 2 workers grab and complete; jobs/s up to the last WORK_COMPLETE.
* ``fg1``  foreground, one at a time: 4 clients each submit a job and wait for
  its result before the next; latency is submit to WORK_COMPLETE.
* ``fgp``  foreground pipelined: 4 clients x ``--inflight`` jobs in flight.

Servers: ``gearmand`` (``--threads=1``) and ``gearmand-t0`` (``--threads=0``: on
a 2-core machine often the faster), ``gear`` (OpenStack gear.Server), and ours
through the ``gearman-proto server`` command on ``asyncio``, ``uvloop`` and
``trio``, plus ``uvloop+sqlite`` (durable background jobs, group commit) and
``uvloop-mypyc`` (the compiled build, run from the checkout named by
``GEARMAN_BENCH_COMPILED_ROOT``).  Ratios are to the better gearmand of the run,
per scenario: the reference is gearmand's better configuration.  Each
measurement starts a fresh server and fresh load-generator processes
(``benchmarks._loadgen``: raw packets on uvloop, one process for the clients,
one for the workers), runs a warm-up, then the measured run, bounded by
``--jobs`` and ``--max-seconds``.  Servers are interleaved within each run, in
a rotated order, and the figures are medians over ``--runs``.  Server CPU
seconds come from /proc for the measured run only.

    python -m benchmarks.e2e                 # full: 100k jobs, 3 runs (~10 minutes)
    python -m benchmarks.e2e --quick         # 20k jobs, 3 runs
    python -m benchmarks.e2e --smoke         # a few hundred jobs: does it still work?
    python -m benchmarks.e2e --servers gearmand,uvloop --scenarios bg --runs 5
    python -m benchmarks.e2e --servers uvloop,uvloop+http --runs 5   # what --http costs

``asyncio+http``, ``uvloop+http`` and ``trio+http`` run ours with ``--http`` and
scrape its /metrics once a second during the measured run.
    GEARMAN_BENCH_COMPILED_ROOT=../compiled-checkout python -m benchmarks.e2e \
        --servers gearmand,gearmand-t0,uvloop,uvloop-mypyc
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._util import (
    GEARMANDS,
    ROOT,
    SERVERS,
    WITH_HTTP,
    Server,
    available,
    cpu_seconds,
    machine,
    median,
    workdir,
    write_json,
)

SCENARIOS = ("bg", "fg1", "fgp")
TITLES = {
    "bg": "background, pipelined",
    "fg1": "foreground, one at a time",
    "fgp": "foreground, pipelined",
}


class _Child:
    """A load-generator process spoken to by lines."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks._loadgen", *args],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)

    def expect_ready(self) -> None:
        line = self._line()
        if line.strip() != "ready":
            raise RuntimeError(f"load generator said {line!r}")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited ({self.proc.wait()})")
        return line

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self._line())  # type: ignore[no-any-return]

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


class _Scraper:
    """GETs /metrics once a second in a thread, as Prometheus would, until :meth:`stop`."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with urllib.request.urlopen(self.url, timeout=10) as r:
                r.read()
            self.scrapes += 1

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(15)
        return self.scrapes


def measure(kind: str, scenario: str, jobs: int, *, window: int, inflight: int,
            max_seconds: float, warmup: int, workers: int, clients: int,
            payload: int, wd: Path,
            make_server: Callable[[str, Path], Server] = Server,
            client_args: tuple[str, ...] = (), prefix: list[str] | None = None,
            start_timeout: float = 15.0) -> dict[str, Any]:
    """One measurement on a fresh server: warm-up, then ``jobs`` jobs (or ``max_seconds``).

    ``make_server`` builds the (not yet started) server of ``kind`` (see
    ``benchmarks.stores`` for servers on PostgreSQL and Redis); ``client_args``
    go to the client load generator (``--unique``, say); ``prefix`` runs the
    server under a tool (see ``benchmarks.perjob``).
    """
    server = make_server(kind, wd)
    server.prefix = prefix or []
    server.start(start_timeout)
    worker = client = scraper = None
    try:
        port = str(server.port)
        worker = _Child(["worker", "--port", port, "--workers", str(workers)])
        worker.expect_ready()
        client = _Child(["client", "--port", port, "--clients", str(clients),
                         "--payload", str(payload), *client_args])
        client.expect_ready()
        win = inflight if scenario == "fgp" else window
        base = 0
        if warmup:
            # A slow server (gear's, 44 ms per one-at-a-time job) needs longer than
            # a measured run's bound to finish the warm-up, which must finish.
            warm = client.ask(f"run {scenario} {warmup} {win} {max(max_seconds, 60.0)}")
            if warm["timed_out"] or warm["lost"]:
                raise RuntimeError(f"{kind} {scenario}: the warm-up did not finish: {warm}")
            if scenario == "bg":
                base = worker.ask(f"wait {warmup} {max(max_seconds, 60.0)}")["done"]
        if server.http_port is not None:
            scraper = _Scraper(server.http_port)
        cpu0 = cpu_seconds(server.pid)
        gen0 = cpu_seconds(worker.proc.pid) + cpu_seconds(client.proc.pid)
        res = client.ask(f"run {scenario} {jobs} {win} {max_seconds}")
        if scenario == "bg":
            left = max(0.5, max_seconds - (time.monotonic() - res["t0"]))
            w = worker.ask(f"wait {base + res['done']} {left}")
            done = w["done"] - base
            t_end = w["t_last"]
            timed_out = res["timed_out"] or done < res["done"]
        else:
            done, t_end, timed_out = res["done"], res["t_end"], res["timed_out"]
        cpu = cpu_seconds(server.pid) - cpu0
        gen = cpu_seconds(worker.proc.pid) + cpu_seconds(client.proc.pid) - gen0
        elapsed = max(t_end - res["t0"], 1e-9)
        return {
            "server": kind, "scenario": scenario, "jobs": done,
            "seconds": elapsed, "jobs_per_s": done / elapsed if done else 0.0,
            "cpu_s_per_100k": cpu / done * 100_000 if done else float("nan"),
            "server_cores": cpu / elapsed,
            "loadgen_cores": gen / elapsed,
            "p50_us": res["p50_us"], "p99_us": res["p99_us"],
            "errors": res["errors"], "timed_out": timed_out,
            "scrapes": scraper.stop() if scraper is not None else 0,
            # Submissions answered per second (JOB_CREATED for bg): what a durable
            # store limits, even when the workers fall behind.
            "acked_per_s": res["done"] / max(res["t_end"] - res["t0"], 1e-9),
        }
    finally:
        if scraper is not None:
            scraper.stop()
        for child in (client, worker):
            if child is not None:
                child.close()
        server.stop()


def summarize(rows: list[dict[str, Any]], servers: list[str],
              scenarios: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Medians per (scenario, server), and each server's ratio to the better gearmand."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for sc in scenarios:
        table[sc] = {}
        for kind in servers:
            mine = [r for r in rows if r["server"] == kind and r["scenario"] == sc]
            if not mine:
                continue
            table[sc][kind] = {
                key: median(r[key] for r in mine)
                for key in ("jobs_per_s", "cpu_s_per_100k", "p50_us", "p99_us", "jobs",
                            "server_cores", "loadgen_cores")
            }
            table[sc][kind]["runs"] = len(mine)
            table[sc][kind]["timed_out"] = sum(bool(r["timed_out"]) for r in mine)
        ref_kind = max((k for k in GEARMANDS if k in table[sc]),
                       key=lambda k: table[sc][k]["jobs_per_s"], default=None)
        ref = ref_p99 = None
        if ref_kind is not None:
            table[sc][ref_kind]["reference"] = 1.0
            ref, ref_p99 = table[sc][ref_kind]["jobs_per_s"], table[sc][ref_kind]["p99_us"]
        for cell in table[sc].values():
            cell["ratio"] = cell["jobs_per_s"] / ref if ref else float("nan")
            cell["p99_ratio"] = cell["p99_us"] / ref_p99 if ref_p99 else float("nan")
    return table


def markdown(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """The summary as markdown tables, one per scenario."""
    out = []
    for sc, cells in table.items():
        out.append(f"**{sc}** ({TITLES[sc]})\n")
        out.append("| server | jobs/s | x ref | server CPU s / 100k jobs | p50 ms | p99 ms "
                   "| p99 x ref | cores used: server, load generator | runs |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for kind, c in cells.items():
            note = f" ({int(c['timed_out'])} hit the time bound)" if c["timed_out"] else ""
            name = f"**{kind}** (reference)" if c.get("reference") else kind
            out.append(f"| {name} | {c['jobs_per_s']:,.0f} | {c['ratio']:.2f} | "
                       f"{c['cpu_s_per_100k']:.2f} | {c['p50_us'] / 1000:.2f} | "
                       f"{c['p99_us'] / 1000:.2f} | {c['p99_ratio']:.2f} | "
                       f"{c['server_cores']:.2f}, {c['loadgen_cores']:.2f} | "
                       f"{int(c['runs'])}{note} |")
        out.append("")
    return "\n".join(out)


def chart(table: dict[str, dict[str, dict[str, float]]], path: Path, title: str) -> None:
    """A bar chart of jobs/s per scenario and server, ratio to gearmand on each bar."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(table)
    servers = [s for s in SERVERS if any(s in table[sc] for sc in scenarios)]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    width = 0.8 / max(1, len(servers))
    for i, kind in enumerate(servers):
        xs, ys, ratios = [], [], []
        for j, sc in enumerate(scenarios):
            cell = table[sc].get(kind)
            if cell is None:
                continue
            xs.append(j + (i - (len(servers) - 1) / 2) * width)
            ys.append(cell["jobs_per_s"])
            ratios.append(cell["ratio"])
        bars = ax.bar(xs, ys, width, label=kind)
        for bar, ratio in zip(bars, ratios, strict=True):
            ax.annotate(f"{ratio:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7, rotation=90,
                        xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(scenarios)), [f"{sc}\n{TITLES[sc]}" for sc in scenarios])
    ax.set_ylabel("jobs/s (median)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default=None,
                   help=f"comma-separated, of {','.join(SERVERS)} (default: all; "
                        "with --smoke: gearmand,asyncio)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=20.0,
                   help="bound on each measured run (gear's server needs it)")
    p.add_argument("--warmup", type=int, default=2000)
    p.add_argument("--window", type=int, default=1000,
                   help="unanswered SUBMIT_JOB_BG per client in bg")
    p.add_argument("--inflight", type=int, default=16, help="jobs in flight per client in fgp")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--payload", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="20k jobs, 10 s bound")
    p.add_argument("--smoke", action="store_true", help="200 jobs, 1 run: does it work?")
    p.add_argument("--json", help="write every measurement and the summary here")
    p.add_argument("--chart", help="write a PNG bar chart here (needs matplotlib)")
    args = p.parse_args(argv)
    if args.quick:
        args.jobs, args.max_seconds = 20_000, 10.0
    if args.smoke:
        args.jobs, args.runs, args.warmup, args.max_seconds = 200, 1, 20, 10.0
        if args.servers is None:
            args.servers = "gearmand,asyncio"
    servers = [s for s in (args.servers or ",".join(SERVERS)).split(",") if s]
    for s in servers:
        if s not in SERVERS + WITH_HTTP:
            p.error(f"unknown server {s!r} (choose from {', '.join(SERVERS + WITH_HTTP)})")
    missing = [s for s in servers if not available(s)]
    if missing:
        print(f"# skipped (not installed): {', '.join(missing)}", file=sys.stderr)
    servers = [s for s in servers if s not in missing]
    scenarios = [s for s in args.scenarios.split(",") if s]
    wd = workdir("e2e")
    info = machine()
    print(f"# {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}, "
          f"Python {info['python']}, gearmand {info['gearmand']}, gear {info['gear']}, "
          f"uvloop {info['uvloop']}, trio {info['trio']}; commit {info['commit']}")
    print(f"# {args.jobs} jobs per run (bound {args.max_seconds:g} s), {args.runs} runs, "
          f"{args.clients} clients, {args.workers} workers, {args.payload}-byte payloads, "
          f"bg window {args.window}, fgp {args.inflight} in flight per client")
    rows: list[dict[str, Any]] = []
    for run in range(args.runs):
        for sc in scenarios:
            # Rotate the order each run, so no server always goes first or last.
            order = servers[run % len(servers):] + servers[:run % len(servers)]
            for kind in order:
                r = measure(kind, sc, args.jobs, window=args.window, inflight=args.inflight,
                            max_seconds=args.max_seconds, warmup=args.warmup,
                            workers=args.workers, clients=args.clients,
                            payload=args.payload, wd=wd)
                r["run"] = run
                rows.append(r)
                notes = "".join([f", {r['errors']} errors" if r["errors"] else "",
                                 ", TIME BOUND" if r["timed_out"] else ""])
                print(f"run {run + 1} {sc:4s} {kind:14s} {r['jobs_per_s']:10,.0f} jobs/s "
                      f"{r['cpu_s_per_100k']:6.2f} CPU s/100k  cores: server "
                      f"{r['server_cores']:.2f} loadgen {r['loadgen_cores']:.2f}  "
                      f"p50 {r['p50_us'] / 1000:7.2f} ms"
                      f"  p99 {r['p99_us'] / 1000:7.2f} ms  ({r['jobs']} jobs{notes})",
                      flush=True)
    table = summarize(rows, servers, scenarios)
    info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"\n# load average at start {info['loadavg_at_start']}, at end {info['loadavg_at_end']}")
    print(markdown(table))
    write_json(args.json, {"machine": info, "args": vars(args), "rows": rows,
                           "summary": table})
    if args.chart:
        chart(table, Path(args.chart),
              f"gearman-proto end to end, median of {args.runs} runs, {args.jobs} jobs "
              f"({info['cpu']}, {info['cores']} cores, Python {info['python']})")
        print(f"chart written to {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
