"""Reverse worker on anyio: ``python reverse_worker.py [host:port]``.

The same code runs on asyncio (the default here) and on trio:
``anyio.run(main, server, backend="trio")``.
"""

import signal
import sys

import anyio
from gearman_proto.adapters.anyio import Worker


async def reverse(job):
    await anyio.sleep(0)  # async handlers may await anything the backend offers
    return job.data[::-1]


async def stop_on_signal(worker):
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            worker.stop()  # finish the jobs in hand; work() then returns


async def main(server):
    worker = Worker(server, max_jobs=4)
    worker.register("reverse", reverse)
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signal, worker)
        await worker.work()
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "localhost:4730")
