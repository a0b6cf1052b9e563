"""The cost of one GRAB_JOB_UNIQ from a worker that can do 10,000 functions (issue 11 item 8).

One function of the 10,000 has queued jobs.  Prints microseconds per GRAB; for the
deterministic figure, count instructions with cachegrind at two GRAB counts and divide::

    python -m benchmarks.grab_cost                 # us per GRAB (a timing: noisy)
    valgrind --tool=cachegrind --cache-sim=no python -m benchmarks.grab_cost --grabs 0 --quiet
    valgrind --tool=cachegrind --cache-sim=no python -m benchmarks.grab_cost --grabs 2000 --quiet
    # (I refs at 2000 - I refs at 0) / 2000 = instructions per GRAB
"""

from __future__ import annotations

import argparse
import time

from gearman_proto.broker import JobServer
from gearman_proto.events import CanDo, GrabJobUniq, SubmitJob


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--functions", type=int, default=10_000)
    p.add_argument("--grabs", type=int, default=2_000)
    p.add_argument("--quiet", action="store_true", help="print nothing (under cachegrind)")
    args = p.parse_args(argv)
    broker = JobServer()
    broker.connect(1)
    broker.connect(2)
    for i in range(args.functions):
        broker.receive(1, CanDo(b"f%d" % i))
    for i in range(args.grabs):
        broker.receive(2, SubmitJob(b"f%d" % (args.functions // 2), b"", b"x%d" % i,
                                    background=True))
    start = time.perf_counter()
    for _ in range(args.grabs):
        broker.receive(1, GrabJobUniq())
    if not args.quiet and args.grabs:
        print(f"{(time.perf_counter() - start) / args.grabs * 1e6:.1f} us per GRAB_JOB_UNIQ "
              f"({args.functions} functions)")


if __name__ == "__main__":
    main()
