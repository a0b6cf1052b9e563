"""The trio adapter: the anyio adapter's classes, which run natively under trio.

``Client``, ``ClientJob``, ``Worker``, ``WorkerJob``, ``AdminClient``,
``Server`` and ``serve()`` here are those of :mod:`gearman_proto.adapters.anyio`.
That module is written against anyio's primitives only (task groups, cancel
scopes, ``connect_tcp`` and listeners, ``to_thread``), and under ``trio.run``
anyio's trio backend maps each of them onto trio's own: nurseries, trio cancel
scopes and deadlines, trio sockets and TLS, ``trio.to_thread``.  So these
classes are native trio code there, with no asyncio event loop underneath,
and they keep trio's rules: no task outlives the nursery or ``async with`` that
started it, and any of their waits can be cancelled.

A separate trio implementation would repeat the client's, worker's and
server's I/O logic line for line with other names, and give every fix two
places to be made; this module is the trio-facing name for the one
implementation instead.  Install with ``pip install gearman-proto[trio]``
(anyio with its trio backend).

::

    import trio
    from gearman_proto.adapters.trio import Client, Worker

    async def main():
        worker = Worker(["127.0.0.1:4730"])
        worker.register("reverse", lambda job: job.data[::-1])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.work)
            async with Client(["127.0.0.1:4730"]) as client:
                print(await client.do("reverse", "Hello world!"))
            worker.stop()

    trio.run(main)
"""

from __future__ import annotations

from .anyio import AdminClient, Client, ClientJob, KeepAlive, Server, Worker, WorkerJob, serve

__all__ = ["Client", "ClientJob", "Worker", "WorkerJob", "AdminClient", "Server", "serve",
           "KeepAlive"]
