"""What observability costs: per scrape of /metrics and /api/status, and per job.

* **per scrape**: CPU time of one ``GET /metrics`` (and one ``GET /api/status``)
  answered by :class:`~gearman_proto.adapters.http.HttpApp`, no socket, for a
  server with 10, 100 and 1,000 functions (each with queued jobs and a worker);
  the label cap keeps the last one near the 100 case;
* **per job**: ``benchmarks.core``'s hub loop with and without a
  :class:`~gearman_proto.stats.ServerStats` attached (``--http`` attaches one).

The end-to-end figure is ``python -m benchmarks.e2e --servers uvloop,uvloop+http``;
the deterministic one, instructions per job, is the cachegrind recipe in RESULTS.md.

    python -m benchmarks.observability
    python -m benchmarks.observability --smoke
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

from gearman_proto.adapters.http import HttpApp, attach_stats

from benchmarks.core import best, hub_run
from gearman_proto.broker import JobServer
from gearman_proto.events import CanDo, SubmitJob
from gearman_proto.hub import ServerHub
from gearman_proto.stats import ServerStats


def busy_hub(functions: int, jobs_each: int = 10) -> ServerHub:
    """A hub whose broker has ``functions`` functions, each with queued jobs and a worker."""
    hub = ServerHub(JobServer())
    broker = hub.broker
    client = hub.open(b"127.0.0.1")
    for f in range(functions):
        name = b"function-%d" % f
        worker = hub.open(b"127.0.0.1")
        broker.receive(worker, CanDo(name))
        for _j in range(jobs_each):
            broker.receive(client, SubmitJob(name, b"x" * 100, background=True))
    return hub


def per_request(hub: ServerHub, path: str, repeat: int) -> float:
    """CPU seconds per answer to ``GET path``."""
    stats: ServerStats = attach_stats(hub)
    stats.sample(time.time())
    app = HttpApp(stats)
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    app.handle(request)
    gc.collect()
    start = time.process_time()
    for _ in range(repeat):
        app.handle(request)
    return (time.process_time() - start) / repeat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    scrapes = 20 if args.smoke else 200
    jobs = 2000 if args.smoke else args.jobs
    print("| functions | CPU ms per GET /metrics | CPU ms per GET /api/status |")
    print("|---:|---:|---:|")
    for functions in (10, 100, 1000):
        hub = busy_hub(functions)
        metrics = per_request(hub, "/metrics", scrapes)
        status = per_request(hub, "/api/status", scrapes)
        print(f"| {functions:,} | {metrics * 1000:.2f} | {status * 1000:.2f} |")
    print()
    attach: Callable[[ServerHub], object] = attach_stats
    off = best(hub_run(jobs), args.repeat)
    on = best(hub_run(jobs, attach), args.repeat)
    for label, (n, seconds) in (("stats off", off), ("stats on", on)):
        print(f"hub loop, {label}: {n / seconds:,.0f} jobs/s ({seconds / n * 1e6:.2f} µs per job)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
