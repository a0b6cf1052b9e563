"""``gearman-proto top``: a live terminal view of one or several job servers.

It speaks the admin text protocol only (``version``, ``status``, ``workers``,
``show jobs`` where the server has it), so it watches gearmand as well as our
server.  Per function: jobs queued and running, workers, and how fast the
queue grows -- the admin protocol has no completion counter, so the rate is
the change of queued + running jobs per second between two refreshes (our
server's ``/metrics`` has the real counters).  Per server: reachable or not,
its version, round-trip time, connections and workers.

Keys: ``q`` quits; ``j`` sorts by queued jobs (the default), ``r`` by running,
``w`` by workers, ``g`` by growth, ``n`` by name, ``s`` by server.
``--once`` prints one frame as plain text, ``--json`` one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gearman_proto.admin import AdminError, StatusRow, WorkerRow

from ._common import Address, GearmanError

__all__ = ["ServerView", "FunctionView", "Top", "render", "document", "add_arguments", "run"]

SORTS = {"j": "queued", "r": "running", "w": "workers", "g": "growth", "n": "name",
         "s": "server"}
"""Sort keys and what they sort by."""


@dataclass(slots=True)
class FunctionView:
    """One function on one server, as ``status`` told it, plus its growth rate."""

    server: str
    name: str
    queued: int
    running: int
    workers: int
    growth: float | None = None
    """Change of queued + running jobs per second since the last refresh (None: first)."""


@dataclass(slots=True)
class ServerView:
    """What one refresh learned about one server."""

    address: str
    up: bool = False
    error: str = ""
    version: str = ""
    rtt: float = 0.0
    """Seconds the ``status`` round trip took."""
    connections: int = 0
    """Connections ``workers`` lists (our own admin connection not counted)."""
    workers: int = 0
    """Of those, the ones that registered a function."""
    jobs: int | None = None
    """Jobs ``show jobs`` lists, or None if the server lacks the command."""
    functions: list[FunctionView] = field(default_factory=list)


def _name(raw: bytes) -> str:
    # Peer-chosen bytes: printable, one line, whatever they contain.
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Top:
    """Polls servers over the admin protocol and remembers the last sample for rates."""

    def __init__(self, servers: list[Address], *, timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from .asyncio import AdminClient
        self.servers = servers
        self.clock = clock
        self._clients = [AdminClient(a, timeout=timeout) for a in servers]
        self._versions: dict[int, str] = {}
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    async def close(self) -> None:
        for client in self._clients:
            await client.close()

    async def refresh(self) -> list[ServerView]:
        """One sample of every server, concurrently; an unreachable one says why."""
        return list(await asyncio.gather(*(self._poll(i) for i in range(len(self.servers)))))

    async def _poll(self, i: int) -> ServerView:
        host, port = self.servers[i]
        view = ServerView(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        client = self._clients[i]
        try:
            if i not in self._versions:
                self._versions[i] = await client.version()
            view.version = self._versions[i]
            start = time.monotonic()
            rows: list[StatusRow] = await client.status()
            view.rtt = time.monotonic() - start
            workers = await client.workers()
            try:
                view.jobs = len(await client.show_jobs())
            except AdminError:
                view.jobs = None  # not every server has `show jobs`
        except (GearmanError, OSError, AdminError) as exc:
            self._versions.pop(i, None)
            view.error = str(exc) or type(exc).__name__
            return view
        self.apply(view, rows, workers)
        return view

    def apply(self, view: ServerView, rows: list[StatusRow], workers: list[WorkerRow]) -> None:
        """Fill ``view`` from one ``status`` and ``workers`` answer; rates against the last."""
        view.up = True
        view.connections = max(0, len(workers) - 1)
        view.workers = sum(1 for w in workers if w.functions)
        now = self.clock()
        for row in rows:
            fv = FunctionView(view.address, _name(row.function), row.total - row.running,
                              row.running, row.available_workers)
            key = (view.address, fv.name)
            last = self._last.get(key)
            if last is not None and now > last[0]:
                fv.growth = (row.total - last[1]) / (now - last[0])
            self._last[key] = (now, row.total)
            view.functions.append(fv)


def _sorted(views: list[ServerView], sort: str) -> list[FunctionView]:
    rows = [f for v in views for f in v.functions]
    if sort == "name":
        return sorted(rows, key=lambda f: (f.name, f.server))
    if sort == "server":
        return sorted(rows, key=lambda f: (f.server, f.name))
    return sorted(rows, key=lambda f: (-(getattr(f, sort) or 0), f.name, f.server))


def render(views: list[ServerView], sort: str = "queued", width: int = 100,
           height: int | None = None, clock: str = "") -> list[str]:
    """The frame as lines of text, at most ``width`` wide (and ``height`` long)."""
    keys = "  ".join(f"{k} {v}" for k, v in SORTS.items())
    lines = [f"gearman-proto top  {clock}  sorted by {sort}", f"keys: q quit  {keys}", ""]
    lines.append(f"{'SERVER':<24} {'STATE':<5} {'VERSION':<20} {'RTT ms':>7} {'CONNS':>6} "
                 f"{'WORKERS':>7} {'JOBS':>7}")
    for v in views:
        if v.up:
            jobs = "-" if v.jobs is None else str(v.jobs)
            lines.append(f"{v.address:<24} {'up':<5} {v.version[:20]:<20} {v.rtt * 1000:>7.1f} "
                         f"{v.connections:>6} {v.workers:>7} {jobs:>7}")
        else:
            lines.append(f"{v.address:<24} {'DOWN':<5} {v.error}")
    lines.append("")
    several = len(views) > 1
    head = f"{'FUNCTION':<32} "
    if several:
        head += f"{'SERVER':<24} "
    lines.append(head + f"{'QUEUED':>8} {'RUNNING':>8} {'WORKERS':>8} {'GROWTH/s':>9}")
    for f in _sorted(views, sort):
        name = f.name if len(f.name) <= 32 else f.name[:31] + "~"
        line = f"{name:<32} "
        if several:
            line += f"{f.server:<24} "
        growth = "-" if f.growth is None else f"{f.growth:+.1f}"
        lines.append(line + f"{f.queued:>8} {f.running:>8} {f.workers:>8} {growth:>9}")
    lines = [line[:width] for line in lines]
    return lines if height is None else lines[:height]


def document(views: list[ServerView]) -> dict[str, Any]:
    """The frame as a JSON-ready dict (``--json``)."""
    return {"time": time.time(), "servers": [{
        "address": v.address, "up": v.up, "error": v.error or None, "version": v.version,
        "rtt": v.rtt, "connections": v.connections, "workers": v.workers, "jobs": v.jobs,
        "functions": [{"name": f.name, "queued": f.queued, "running": f.running,
                       "workers": f.workers, "growth": f.growth} for f in v.functions],
    } for v in views]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``top`` beyond the common -h/-p."""
    p.add_argument("-d", "--delay", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--sort", default="queued", choices=sorted(SORTS.values()))
    out = p.add_mutually_exclusive_group()
    out.add_argument("--once", action="store_true", help="print one frame as text and exit")
    out.add_argument("--json", action="store_true", help="print one JSON document and exit")


def run(servers: list[Address], ns: argparse.Namespace) -> int:
    """The ``top`` subcommand."""
    if ns.delay <= 0:
        raise SystemExit("gearman-proto top: --delay must be > 0")
    if ns.once or ns.json:
        return asyncio.run(_once(servers, ns))
    if not sys.stdout.isatty():
        raise SystemExit("gearman-proto top: needs a terminal (or --once / --json)")
    import curses
    return curses.wrapper(lambda screen: asyncio.run(_live(screen, servers, ns)))


async def _once(servers: list[Address], ns: argparse.Namespace) -> int:
    top = Top(servers)
    try:
        views = await top.refresh()
    finally:
        await top.close()
    if ns.json:
        sys.stdout.write(json.dumps(document(views), indent=1) + "\n")
    else:
        sys.stdout.write("\n".join(render(views, ns.sort, width=1000,
                                          clock=time.strftime("%H:%M:%S"))) + "\n")
    return 0 if all(v.up for v in views) else 1


async def _live(screen: Any, servers: list[Address], ns: argparse.Namespace) -> int:
    import curses
    with contextlib.suppress(curses.error):
        curses.curs_set(0)
    screen.nodelay(True)
    top = Top(servers)
    sort = ns.sort
    views: list[ServerView] = []
    next_at = 0.0
    try:
        while True:
            key = screen.getch()
            if key != -1:
                char = chr(key) if 0 <= key < 256 else ""
                if char in ("q", "Q"):
                    return 0
                if char in SORTS:
                    sort = SORTS[char]
                    next_at = min(next_at, time.monotonic())  # redraw now, same data
            if time.monotonic() >= next_at:
                if not views or key == -1:
                    views = await top.refresh()
                next_at = time.monotonic() + ns.delay
                height, width = screen.getmaxyx()
                screen.erase()
                for y, line in enumerate(render(views, sort, width - 1, height,
                                                time.strftime("%H:%M:%S"))):
                    with contextlib.suppress(curses.error):
                        screen.addstr(y, 0, line)
                screen.refresh()
            await asyncio.sleep(0.05)
    finally:
        await top.close()
