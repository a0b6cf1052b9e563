"""How many background jobs per second JobServer moves with no I/O.

Each job is three events through :meth:`JobServer.receive`: SUBMIT_JOB_BG from
a client, GRAB_JOB from a worker, WORK_COMPLETE from the worker.  ``--batch``
submits every job first and then drains the queue (deep queues); the default
interleaves submit, grab and complete (a queue that stays short).  The figure
is the best of ``--repeat`` runs, since a shared machine only ever adds time.

    python benchmarks/broker_throughput.py [--jobs N] [--repeat R] [--batch] [--unique]
"""

from __future__ import annotations

import argparse
import time

from gearman_proto.broker import JobServer
from gearman_proto.events import CanDo, GrabJob, JobAssign, SubmitJob, WorkComplete


def run(jobs: int, batch: bool, unique: bool) -> float:
    """Move ``jobs`` background jobs through a fresh server; return the seconds taken."""
    server = JobServer()
    server.connect(1)
    server.connect(2)
    server.receive(2, CanDo(b"reverse"))
    submits = [SubmitJob(b"reverse", b"payload", b"u%d" % i if unique else b"",
                         background=True) for i in range(jobs)]
    grab = GrabJob()
    receive = server.receive

    def take() -> None:
        (_, assign), = receive(2, grab)
        assert isinstance(assign, JobAssign)
        receive(2, WorkComplete(assign.handle, b"done"))

    start = time.perf_counter()
    if batch:
        for submit in submits:
            receive(1, submit)
        for _ in range(jobs):
            take()
    else:
        for submit in submits:
            receive(1, submit)
            take()
    elapsed = time.perf_counter() - start
    assert server.job_count == 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", action="store_true", help="submit all, then drain")
    parser.add_argument("--unique", action="store_true", help="give every job a unique id")
    args = parser.parse_args()
    best = min(run(args.jobs, args.batch, args.unique) for _ in range(args.repeat))
    mode = "batch" if args.batch else "interleaved"
    print(f"{mode}{' unique' if args.unique else ''}: {args.jobs} background jobs "
          f"(submit, grab, complete) in {best:.3f}s = {args.jobs / best:,.0f} jobs/s "
          f"(best of {args.repeat})")


if __name__ == "__main__":
    main()
