"""Our job server on a durable store, for ``benchmarks.stores``: writes on the store's
thread as ``gearman-proto server`` does (``default``, or forced: ``thread``, asyncio
loops only), or ``inline``, on the event loop.

    python -m benchmarks._store_server PORT QUEUE LOOP default|thread|inline

LOOP is asyncio, uvloop or trio.  At SIGTERM it prints ``writes N`` (the store
commits made): the group-commit figure that does not depend on timing.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from gearman_proto.adapters.stores import open_store

from benchmarks._util import HOST


def main() -> None:
    port, queue, loop, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    store = open_store(queue, name=f"bench{port}")
    assert store is not None
    options: dict[str, Any] = {"store": store, "handle_prefix": b"H:bench"}

    def started(server: Any) -> None:
        if mode == "inline" and server.hub.writer is not None:
            server.hub.writer.close()
            server.hub.writer = None
        elif mode == "thread" and server.hub.writer is None:
            import asyncio

            from gearman_proto.adapters.storethread import ThreadWriter
            loop = asyncio.get_running_loop()
            server.hub.writer = ThreadWriter(
                server.broker.write, lambda: loop.call_soon_threadsafe(server.batch_started))

    if loop == "trio":
        import anyio
        from gearman_proto.adapters.anyio import Server as AnyioServer

        async def run_trio() -> None:
            server = AnyioServer(HOST, port, **options)
            await server.start()
            started(server)
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async with anyio.create_task_group() as tg:
                    async def stop() -> None:
                        async for _ in signals:
                            server.close()
                            return
                    tg.start_soon(stop)
                    await server.serve_forever()
                    tg.cancel_scope.cancel()
        anyio.run(run_trio, backend="trio")
    else:
        import asyncio

        from gearman_proto.adapters.asyncio import Server

        async def run_asyncio() -> None:
            server = Server(HOST, port, **options)
            await server.start()
            started(server)
            server.install_signal_handlers()
            await server.serve_forever()
        if loop == "uvloop":
            import uvloop
            uvloop.run(run_asyncio())
        else:
            asyncio.run(run_asyncio())
    print(f"writes {getattr(store, 'commits', -1)}", flush=True)
    store.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
