"""The Python client that calls worker.php: ``python python_client.py [host:port]``.

The same calls as client.php, from our blocking client: a foreground job,
priorities, a background job followed by its status, a failure, an
exception, and several jobs in flight with their updates.
"""

import sys
import time

from gearman_proto.adapters import JobException, JobFailed
from gearman_proto.adapters.sync import Client

from gearman_proto import Priority

server = sys.argv[1] if len(sys.argv) > 1 else "localhost:4730"

with Client(server, result_timeout=30) as client:
    print("reverse:", client.do("reverse", "Hello world!").decode())
    print("high:", client.do("reverse", "high", priority=Priority.HIGH).decode())
    print("low:", client.do("reverse", "low", priority=Priority.LOW).decode())

    job = client.submit("reverse", "in the background", background=True)
    print("background: submitted")
    for _ in range(500):
        if not client.get_status(job.handle).known:
            break
        time.sleep(0.01)
    print("background done:", "no" if client.get_status(job.handle).known else "yes")

    try:
        client.do("fail", "x")
    except JobFailed:
        print("fail: JobFailed")
    try:
        client.do("explode", "this")
    except JobException as exc:
        print("explode: JobException:", exc.data.decode())

    # Several jobs in flight at once, each with its updates.
    jobs = {"t1": client.submit("reverse", "one"),
            "t2": client.submit("reverse", "two", priority=Priority.HIGH),
            "t3": client.submit("reverse", "three", priority=Priority.LOW),
            "t4": client.submit("progress", "job")}
    for name, job in jobs.items():
        for update in job.updates():
            if hasattr(update, "numerator"):
                print(f"task {name} status: {update.numerator}/{update.denominator}")
            else:
                print(f"task {name} data: {update.data.decode()}")
        print(f"task {name} complete: {job.wait().decode()}")
