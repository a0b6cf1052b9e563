"""Reverse worker on blocking sockets: ``python reverse_worker.py [host:port]``."""

import signal
import sys

from gearman_proto.adapters.sync import Worker

server = sys.argv[1] if len(sys.argv) > 1 else "localhost:4730"
worker = Worker(server, max_jobs=4)  # up to 4 jobs at once, each in a thread


@worker.task("reverse")
def reverse(job):
    return job.data[::-1]  # bytes in, bytes (or str) out; an exception fails the job


# Ctrl-C or SIGTERM: stop taking jobs, finish those in hand, then work() returns.
signal.signal(signal.SIGINT, lambda *_: worker.stop())
signal.signal(signal.SIGTERM, lambda *_: worker.stop())
worker.work()
