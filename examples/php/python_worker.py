"""The Python worker that client.php calls: ``python python_worker.py [host:port]``.

Functions: ``reverse`` (``Hello world!`` → ``!dlrow olleH``), ``progress``
(status and data updates, then a result), ``fail`` (WORK_FAIL) and ``explode``
(raises: WORK_EXCEPTION with the exception's type and message).
"""

import signal
import sys

from gearman_proto.adapters.sync import Worker

server = sys.argv[1] if len(sys.argv) > 1 else "localhost:4730"
worker = Worker(server, max_jobs=4, client_id="python-worker")


@worker.task("reverse")
def reverse(job):
    return job.data[::-1]


@worker.task("progress")
def progress(job):
    for step in (1, 2, 3):
        job.send_status(step, 3)
        job.send_data(b"part %d of %s" % (step, job.data))
    return b"all parts of " + job.data


@worker.task("fail")
def fail(job):
    job.fail()


@worker.task("explode")
def explode(job):
    raise ValueError("cannot handle " + job.data.decode())


signal.signal(signal.SIGINT, lambda *_: worker.stop())
signal.signal(signal.SIGTERM, lambda *_: worker.stop())
worker.work()
