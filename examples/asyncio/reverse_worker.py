"""Reverse worker on asyncio: ``python reverse_worker.py [host:port]``."""

import asyncio
import signal
import sys

from gearman_proto.adapters.asyncio import Worker


async def reverse(job):
    return job.data[::-1]  # handlers may be async (here) or plain functions (run in a thread)


async def main(server):
    worker = Worker(server, max_jobs=4)
    worker.register("reverse", reverse)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # finish the jobs in hand, then return
        loop.add_signal_handler(sig, worker.stop)
    await worker.work()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:4730"))
