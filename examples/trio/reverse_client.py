"""Reverse client on trio: ``python reverse_client.py [host:port]``.

Submits the job, streams its progress updates, then awaits the result.
"""

import sys

import trio
from gearman_proto.adapters.trio import Client


async def main(server):
    async with Client(server) as client:
        job = await client.submit("reverse", "Hello world!")  # returns at JOB_CREATED
        async for update in job.updates():  # WORK_DATA / WORK_WARNING / WORK_STATUS
            print("update:", update, file=sys.stderr)
        print((await job).decode())


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "localhost:4730")
