"""A worker process for the fault tests: ``_worker.py HOST PORT FUNCTION LOG [options]``.

For each job it appends ``start ID PID`` to LOG, sleeps a random time up to
``--max-sleep`` seconds, appends ``end ID PID``, and completes the job with
``done:ID`` (ID is the job's data).  Lines are written with O_APPEND in one
``write()``, so several workers share the log safely, and a worker killed with
SIGKILL leaves a ``start`` without its ``end``: a job it held when it died.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from gearman_proto.adapters.sync import Worker, WorkerJob


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("function")
    p.add_argument("log")
    p.add_argument("--max-sleep", type=float, default=0.0)
    p.add_argument("--hold", type=float, default=0.0, help="sleep this long in every job")
    p.add_argument("--max-jobs", type=int, default=1)
    p.add_argument("--result-size", type=int, default=0)
    ns = p.parse_args()
    fd = os.open(ns.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()
    pad = b"x" * ns.result_size

    def handler(job: WorkerJob) -> bytes:
        os.write(fd, b"start %s %d\n" % (job.data, pid))
        if ns.max_sleep:
            time.sleep(random.uniform(0, ns.max_sleep))
        if ns.hold:
            time.sleep(ns.hold)
        os.write(fd, b"end %s %d\n" % (job.data, pid))
        return b"done:" + job.data + pad

    worker = Worker([(ns.host, ns.port)], max_jobs=ns.max_jobs, reconnect_delay=0.05,
                    max_reconnect_delay=0.2, connect_timeout=2.0)
    worker.register(ns.function, handler)
    worker.work()


if __name__ == "__main__":
    main()
