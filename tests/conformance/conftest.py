"""One blocking face over every adapter, so one suite runs unchanged on all four.

The ``gm`` fixture is parametrized over ``sync``, ``asyncio``, ``anyio`` (on
anyio's asyncio backend) and ``trio`` (the trio adapter under ``trio.run``).
It builds the adapter's own ``Client``, ``Worker`` and ``AdminClient`` and
wraps them in thin proxies whose methods block the test's thread until the
adapter's call returns:

* ``sync``: called directly (``Worker.work`` in a thread of its own);
* ``asyncio``: a plain asyncio event loop in a thread,
  ``asyncio.run_coroutine_threadsafe``;
* ``anyio`` / ``trio``: an anyio blocking portal on that backend.

The servers are parametrized too, over our server's flavours (``asyncio``,
``uvloop``, ``trio``: the ``server_loop`` parameter, ``srv-...`` in test
ids), through the ``our_server`` and ``our_server_factory`` fixtures
overridden here.  The whole matrix (4 client flavours x 3 server flavours)
runs for the tests where the server's side is what is tested: the modules in
:data:`SERVER_MATRIX_MODULES` and the tests in :data:`SERVER_MATRIX_TESTS`.
The others run against the asyncio server only, to keep the suite's time
reasonable; ``GEARMAN_SERVER_MATRIX=all`` runs every test on every flavour.

Every call is bounded by :data:`BOUND`, so a hang fails the test instead of
the run; nothing here measures how long anything took.  Objects are made on
their own event loop's thread, and everything a test made (clients, workers,
admin clients, gates, servers) is closed or released when it ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import os
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from gearman_proto.adapters import sync as sync_adapter

BOUND = 20.0
"""The bound on every wait: long enough never to matter, short enough to end a hang."""

ADAPTERS = ["sync", "asyncio", "anyio", "trio"]

SERVER_LOOPS = ["asyncio", "uvloop", "trio"]
"""Our server's flavours (``gearman-proto server --loop``)."""
SERVER_MATRIX_MODULES = {"test_admin", "test_durability", "test_tls"}
"""Modules run on every server flavour: admin, durability and TLS are the server's."""
SERVER_MATRIX_TESTS = {
    "test_do_returns_the_result",
    "test_data_warning_and_status_stream_as_they_arrive",
    "test_handler_exception_is_work_exception_with_its_message",
    "test_get_status_get_status_unique_and_echo",
    "test_worker_never_runs_more_than_max_jobs",
    "test_background_jobs_at_every_priority_run_highest_first",
    "test_epoch_jobs_run_no_earlier_than_their_time",
}
"""Tests of other modules run on every server flavour: forwarding, status, priorities,
timers and the worker's slots go through the server's I/O."""


def unique_name(label: str) -> str:
    """A function name (or client id) no other test uses: tests share one server."""
    return f"{label}-{uuid.uuid4().hex[:10]}"


def eventually(predicate: Callable[[], Any], what: str, bound: float = BOUND) -> Any:
    """Poll ``predicate`` until it gives something true; fail after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class Gate:
    """Holds handlers until the test opens it; works for sync and async handlers."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def open(self) -> None:
        self._event.set()

    def wait(self) -> None:
        """In a sync handler (a thread)."""
        if not self._event.wait(BOUND):
            raise RuntimeError("gate never opened")

    async def wait_async(self) -> None:
        """In an async handler: polls, so it runs on any event loop."""
        deadline = time.monotonic() + BOUND
        while not self._event.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError("gate never opened")
            await anyio.sleep(0.005)


# -- runners: where an adapter's calls run --------------------------------------------


async def _invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                  ) -> Any:
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


class _Runner:
    blocking = False
    """Whether the adapter's calls block (rather than return awaitables)."""

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any
              ) -> concurrent.futures.Future[Any]:
        raise NotImplementedError

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        future = self.spawn(fn, *args, **kwargs)
        try:
            return future.result(BOUND)
        except TimeoutError:
            if future.done():  # the call itself raised a TimeoutError (JobTimeout is one)
                raise
            future.cancel()
            pytest.fail(f"{getattr(fn, '__qualname__', fn)} did not return in {BOUND}s")

    def close(self) -> None:
        pass


class _Threads(_Runner):
    """The blocking adapter: calls run in the caller's thread, spawns in a new one."""

    blocking = True

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any
              ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)
        threading.Thread(target=run, daemon=True).start()
        return future

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


class _AsyncioLoop(_Runner):
    """A plain asyncio event loop in a thread of its own (no anyio in between)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any
              ) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(_invoke(fn, args, kwargs), self.loop)

    def close(self) -> None:
        async def cancel_all() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(BOUND)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(BOUND)
        self.loop.close()


class _Portal(_Runner):
    """An anyio blocking portal: an event loop of ``backend`` in a thread."""

    def __init__(self, backend: str) -> None:
        self._cm = anyio.from_thread.start_blocking_portal(backend)
        self.portal = self._cm.__enter__()

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any
              ) -> concurrent.futures.Future[Any]:
        return self.portal.start_task_soon(_invoke, fn, args, kwargs)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.portal.call(self.portal.stop, True)  # cancel what still runs
        self._cm.__exit__(None, None, None)


# -- blocking proxies -----------------------------------------------------------------


class _Proxy:
    """Calls the wrapped object's methods through the runner; coroutines are awaited."""

    def __init__(self, runner: _Runner, obj: Any) -> None:
        self._runner = runner
        self.obj = obj

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.obj, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: self._runner.call(attr, *args, **kwargs)


class JobProxy(_Proxy):
    """A submitted job: ``wait()`` and ``updates()`` on every adapter."""

    @property
    def handle(self) -> bytes:
        return self.obj.handle  # type: ignore[no-any-return]

    def wait(self, timeout: float | None = None) -> bytes | None:
        return self._runner.call(self.obj.wait, timeout)  # type: ignore[no-any-return]

    def updates(self, timeout: float | None = BOUND) -> Iterator[Any]:
        """WORK_DATA / WORK_WARNING / WORK_STATUS one by one, as they arrive."""
        it = self.obj.updates(timeout)
        if self._runner.blocking:
            yield from it
            return

        async def step() -> tuple[bool, Any]:
            try:
                return True, await it.__anext__()
            except StopAsyncIteration:
                return False, None
        while True:
            more, update = self._runner.call(step)
            if not more:
                return
            yield update


class ClientProxy(_Proxy):
    def submit(self, *args: Any, **kwargs: Any) -> JobProxy:
        return JobProxy(self._runner, self._runner.call(self.obj.submit, *args, **kwargs))


class WorkerProxy(_Proxy):
    """A worker: :meth:`start` runs ``work()`` in the background, :meth:`join` waits for it."""

    def __init__(self, gm: GM, runner: _Runner, obj: Any) -> None:
        super().__init__(runner, obj)
        self._gm = gm
        self.future: concurrent.futures.Future[Any] | None = None

    def register(self, function: str, handler: Callable[..., Any],
                 timeout_ms: int | None = None) -> None:
        self.obj.register(function, handler, timeout_ms)

    def start(self, ready_on: list[Any] | None = None) -> WorkerProxy:
        """Start working; wait until every server of ``ready_on`` (default: all of the
        worker's) lists this worker with all its functions, so tests start from a known
        state.  Each server is a ServerProcess or ``(host, port)``."""
        self.future = self._runner.spawn(self.obj.work)
        functions = {f.encode() if isinstance(f, str) else f for f in self._functions()}
        client_id = self.obj.client_id
        for server in self.obj.servers if ready_on is None else ready_on:
            address = getattr(server, "address", server)

            def registered(address: Any = address) -> bool:
                if self.future is not None and self.future.done():
                    self.future.result()  # work() ended: show why
                return any(row.client_id == client_id and functions <= set(row.functions)
                           for row in self._gm.observe(address).workers())
            eventually(registered, f"worker {client_id!r} on {address}")
        return self

    def _functions(self) -> list[bytes]:
        return list(self.obj.handlers)

    def stop(self, graceful: bool = True) -> None:
        self.obj.stop(graceful)  # documented as safe from any thread

    def join(self, timeout: float = BOUND) -> None:
        assert self.future is not None
        self.future.result(timeout)

    @property
    def running(self) -> bool:
        return self.future is not None and not self.future.done()


# -- the adapter under test -----------------------------------------------------------


class GM:
    """The adapter under test, behind one blocking face."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "sync":
            self.module: Any = sync_adapter
            self.runner: _Runner = _Threads()
        elif name == "asyncio":
            from gearman_proto.adapters import asyncio as module
            self.module = module
            self.runner = _AsyncioLoop()
        else:
            if name == "anyio":
                from gearman_proto.adapters import anyio as module
            else:
                from gearman_proto.adapters import trio as module  # type: ignore[no-redef]
            self.module = module
            self.runner = _Portal("asyncio" if name == "anyio" else "trio")
        self.async_handlers = True
        """Whether ``async def`` handlers are supported (by every flavour now: the
        blocking one runs them on its worker's event loop)."""
        self._made: list[_Proxy] = []
        self._gates: list[Gate] = []
        self.tls: dict[Any, ssl.SSLContext] = {}
        """The TLS context :meth:`observe` uses for a server, by address."""

    eventually = staticmethod(eventually)
    unique_name = staticmethod(unique_name)

    def _make(self, cls: Any, *args: Any, **kwargs: Any) -> Any:
        return self.runner.call(cls, *args, **kwargs)

    @staticmethod
    def _addresses(servers: Any) -> Any:
        if isinstance(servers, list):
            return [getattr(s, "address", s) for s in servers]
        return getattr(servers, "address", servers)

    def client(self, servers: Any, **kwargs: Any) -> ClientProxy:
        """The adapter's Client."""
        proxy = ClientProxy(self.runner, self._make(self.module.Client,
                                                    self._addresses(servers), **kwargs))
        self._made.append(proxy)
        return proxy

    def worker(self, servers: Any, **kwargs: Any) -> WorkerProxy:
        """The adapter's Worker, with a client id of its own unless given one."""
        kwargs.setdefault("client_id", unique_name("worker"))
        kwargs.setdefault("reconnect_delay", 0.1)
        kwargs.setdefault("max_reconnect_delay", 0.5)
        proxy = WorkerProxy(self, self.runner, self._make(self.module.Worker,
                                                          self._addresses(servers), **kwargs))
        self._made.append(proxy)
        return proxy

    def admin(self, server: Any, **kwargs: Any) -> _Proxy:
        """The adapter's AdminClient."""
        proxy = _Proxy(self.runner, self._make(self.module.AdminClient,
                                               self._addresses(server), **kwargs))
        self._made.append(proxy)
        return proxy

    def gate(self) -> Gate:
        """A gate opened at the latest when the test ends."""
        gate = Gate()
        self._gates.append(gate)
        return gate

    def observe(self, server: Any) -> _Observer:
        """A server's state seen from outside, through the blocking adapter's AdminClient
        (a connection per question, so a restarted server needs no care)."""
        address = getattr(server, "address", server)
        return _Observer(address, self.tls.get(address))

    def status(self, server: Any, function: str) -> tuple[int, int, int]:
        """``(total, running, available workers)`` of one function, from outside."""
        for row in self.observe(server).status():
            if row.function == function.encode():
                return row.total, row.running, row.available_workers
        return 0, 0, 0

    def close(self) -> None:
        for gate in self._gates:
            gate.open()
        for proxy in reversed(self._made):
            with contextlib.suppress(Exception):
                if isinstance(proxy, WorkerProxy):
                    if proxy.running:
                        proxy.stop(graceful=False)
                        proxy.join()
                else:
                    self.runner.call(proxy.obj.close)
        self.runner.close()


class _Observer:
    def __init__(self, address: Any, context: ssl.SSLContext | None) -> None:
        self._address = address
        self._context = context

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def command(*args: Any) -> Any:
            with sync_adapter.AdminClient(self._address, ssl=self._context,
                                          timeout=BOUND) as admin:
                return getattr(admin, name)(*args)
        return command


# -- our servers, per flavour ------------------------------------------------------------


def _root_conftest() -> Any:
    """``tests/conftest.py`` as pytest loaded it (its server helpers and live-log list)."""
    path = Path(__file__).resolve().parent.parent / "conftest.py"
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) and Path(module.__file__).resolve() == path:
            return module
    raise RuntimeError("tests/conftest.py is not loaded")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "server_loop" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rpartition(".")[2]
    everything = os.environ.get("GEARMAN_SERVER_MATRIX") == "all"
    full = (everything or module in SERVER_MATRIX_MODULES
            or metafunc.function.__name__ in SERVER_MATRIX_TESTS)
    metafunc.parametrize("server_loop", SERVER_LOOPS if full else ["asyncio"],
                         ids=lambda loop: f"srv-{loop}", scope="session")


@pytest.fixture(scope="session")
def our_server(server_loop: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One of our job servers per flavour (in-memory queue) for the whole session."""
    root = _root_conftest()
    started = root._Started()
    yield started.start(root.make_our_server(tmp_path_factory.mktemp(f"ours-{server_loop}"),
                                             loop=server_loop))
    started.stop_all()


@pytest.fixture
def our_server_factory(server_loop: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """More of our servers for one test, of this test's flavour unless ``loop=`` says."""
    root = _root_conftest()
    started = root._Started()

    def factory(port: int | None = None, extra: tuple[str, ...] = (),
                loop: str | None = None) -> Any:
        return started.start(root.make_our_server(tmp_path / f"ours{len(started.servers)}",
                                                  port, extra, loop or server_loop))

    yield factory
    started.stop_all()


@pytest.fixture(params=ADAPTERS)
def gm(request: pytest.FixtureRequest) -> Iterator[GM]:
    """The adapter under test (every conformance test runs once per adapter)."""
    driver = GM(str(request.param))
    yield driver
    driver.close()


@pytest.fixture
def fn() -> Callable[[str], str]:
    """Function names of this test's own: ``fn("reverse")``."""
    return unique_name


# -- TLS --------------------------------------------------------------------------------


class Certs:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, as files."""

    def __init__(self, directory: Path) -> None:
        import trustme
        self.ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server_file = directory / "server.pem"  # key and certificate chain
        self.ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem \
            .write_to_path(str(self.server_file))
        self._client_cert = self.ca.issue_cert("client@example.org")

    def server_args(self, require_client_cert: bool = False) -> tuple[str, ...]:
        args = ("--ssl-certificate", str(self.server_file), "--ssl-key", str(self.server_file))
        if require_client_cert:
            args += ("--ssl-ca-file", str(self.ca_file))
        return args

    def client_context(self, with_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if with_cert:
            self._client_cert.configure_cert(ctx)
        return ctx


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    pytest.importorskip("trustme")
    return Certs(tmp_path_factory.mktemp("certs"))
