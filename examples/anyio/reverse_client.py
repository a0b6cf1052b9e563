"""Reverse client on anyio: ``python reverse_client.py [host:port]``.

Several jobs in flight on one connection, each awaited in its own task.
"""

import sys

import anyio
from gearman_proto.adapters.anyio import Client


async def main(server):
    texts = ["Hello world!", "Gearman", "anyio"]
    results = [b""] * len(texts)
    async with Client(server) as client:

        async def reverse(i):
            results[i] = await client.do("reverse", texts[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(texts)):
                tg.start_soon(reverse, i)
    for result in results:
        print(result.decode())


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "localhost:4730")
