"""Reverse worker on trio: ``python reverse_worker.py [host:port]``."""

import signal
import sys

import trio
from gearman_proto.adapters.trio import Worker


async def reverse(job):
    return job.data[::-1]


async def stop_on_signal(worker):
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            worker.stop()  # finish the jobs in hand; work() then returns


async def main(server):
    worker = Worker(server, max_jobs=4)
    worker.register("reverse", reverse)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_signal, worker)
        await worker.work()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "localhost:4730")
