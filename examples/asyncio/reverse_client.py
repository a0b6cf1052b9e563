"""Reverse client on asyncio: ``python reverse_client.py [host:port]``."""

import asyncio
import sys

from gearman_proto.adapters.asyncio import Client


async def main(server):
    async with Client(server) as client:
        result = await client.do("reverse", "Hello world!")
        print(result.decode())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:4730"))
