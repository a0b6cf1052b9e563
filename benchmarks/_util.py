"""What the benchmarks share: machine facts, job servers as child processes, statistics.

Every server is started on 127.0.0.1 on a free port and stopped by its pid;
nothing here talks to any other address.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
SERVER_ROOT = Path(os.environ.get("GEARMAN_BENCH_SERVER_ROOT", ROOT))
"""Where ``gearman-proto server`` is run from: this checkout unless the environment
variable ``GEARMAN_BENCH_SERVER_ROOT`` names another (to compare two versions)."""
COMPILED_ROOT = os.environ.get("GEARMAN_BENCH_COMPILED_ROOT")
"""A checkout with the compiled build in place (``GEARMAN_PROTO_USE_MYPYC=1 pip install
-e .`` there), which the ``-mypyc`` servers run from, with the Python named by
``GEARMAN_BENCH_COMPILED_PYTHON`` (default: this one)."""
COMPILED_PYTHON = os.environ.get("GEARMAN_BENCH_COMPILED_PYTHON", sys.executable)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def listening_inode(port: int, host: str = HOST) -> str | None:
    """The inode of the listening TCP socket on ``host:port``, if one listens (Linux)."""
    wanted = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"  # /proc/net/tcp's form
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
            return fields[9]
    return None


def holds_socket(pids: Iterable[int], inode: str) -> bool:
    """Whether one of ``pids`` has the socket ``inode`` open."""
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            if any(os.readlink(fd) == target for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return True
        except OSError:  # gone meanwhile
            continue
    return False


def _family(pid: int) -> set[int]:
    """``pid`` and its descendants (a server under strace is strace's child)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(child) for child in children)
    return found


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values`` by nearest rank; NaN if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def median(values: Iterable[float]) -> float:
    """The median, ignoring NaN; NaN if nothing is left."""
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def package_version(name: str) -> str:
    """The installed version of a distribution, or ``"-"``."""
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def gearmand_binary() -> str | None:
    """The gearmand executable, if installed."""
    return shutil.which("gearmand") or next(
        (p for p in ("/usr/sbin/gearmand", "/usr/local/sbin/gearmand") if os.path.exists(p)),
        None)


def gearmand_version() -> str:
    """``gearmand --version``'s first word after the name, or ``"-"``."""
    binary = gearmand_binary()
    if binary is None:
        return "-"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                         timeout=10).stdout.split()
    return out[1] if len(out) > 1 else "-"


def machine() -> dict[str, Any]:
    """What a reader needs to compare figures: CPU, cores, kernel, Python, versions."""
    cpu = platform.processor() or "-"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gearmand": gearmand_version(),
        "gear": package_version("gear"),
        "uvloop": package_version("uvloop"),
        "trio": package_version("trio"),
        "anyio": package_version("anyio"),
        "gearman-proto": package_version("gearman-proto"),
        "commit": _git_commit(),
        # The machine is not ours alone: what else ran shows here.
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip() or "-"
    except OSError:
        return "-"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run_loop(coro: Any) -> Any:
    """Run ``coro`` on uvloop if it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        import asyncio
        return asyncio.run(coro)
    return uvloop.run(coro)


def write_json(path: str | None, data: Any) -> None:
    """Write ``data`` to ``path`` as indented JSON (no-op without a path)."""
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


# -- job servers as child processes -----------------------------------------------------

SERVERS = ("gearmand", "gearmand-t0", "gear", "asyncio", "uvloop", "uvloop-mypyc", "trio",
           "uvloop+sqlite")
"""Every server the end-to-end benchmark knows: gearmand ``--threads=1`` and
``--threads=0``, gear.Server, and ours (``-mypyc``: the compiled build, from
:data:`COMPILED_ROOT`)."""
GEARMANDS = ("gearmand", "gearmand-t0")
"""The two configurations of gearmand; the better of them in a run is the reference."""
WITH_HTTP = ("asyncio+http", "uvloop+http", "trio+http")
"""Ours with ``--http`` on, its /metrics scraped once a second (e2e.py): what metrics cost."""


_PORT_TAKEN = ("Address already in use", "calling bind()")
"""What a server's log says when its port was taken: ours and Python's, gearmand's
(which retries its bind for a while instead of exiting; a stranger seen listening on
the port ends the wait sooner)."""


class Server:
    """A job server in a child process on 127.0.0.1; :meth:`stop` ends it by its pid."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.workdir = workdir
        self._take_ports()
        self.proc: subprocess.Popen[bytes] | None = None
        self.compiled = kind.endswith("-mypyc")
        self.prefix: list[str] = []
        """Run the server under this (``valgrind ...``, ``strace ...``)."""

    def _take_ports(self) -> None:
        """Free ports for the server (and its ``--http``), and the log named by the first."""
        self.port = free_port()
        self.log = self.workdir / f"{self.kind.replace('+', '-')}-{self.port}.log"
        self.http_port = free_port() if self.kind.endswith("+http") else None

    def command(self) -> list[str]:
        port = str(self.port)
        if self.kind in GEARMANDS:
            binary = gearmand_binary()
            if binary is None:
                raise RuntimeError("gearmand is not installed")
            threads = "0" if self.kind == "gearmand-t0" else "1"
            return [binary, f"--listen={HOST}", f"--port={port}", f"--threads={threads}",
                    "--verbose=ERROR", "-l", str(self.log),
                    "--pid-file", str(self.workdir / f"gearmand-{port}.pid")]
        if self.kind == "gear":
            return [sys.executable, "-m", "benchmarks._gear_server", port]
        loop, _, queue = self.kind.removesuffix("-mypyc").partition("+")
        python = COMPILED_PYTHON if self.compiled else sys.executable
        cmd = [python, "-m", "gearman_proto.adapters.cli", "server", "--listen", HOST,
               "--port", port, "--loop", loop, "--verbose", "ERROR",
               "--log-file", str(self.log)]
        if queue == "sqlite":
            cmd += ["--queue", f"sqlite:{self.workdir / f'queue-{port}.db'}"]
        if queue == "http":
            cmd += ["--http", f"{HOST}:{self.http_port}"]
        return cmd

    def start(self, timeout: float = 15.0) -> Server:
        """Start it and wait until it listens; on another port if its own was taken.

        :func:`free_port` can only say a port is free now: a test or server
        running beside this one may bind it before the child does.  So a port
        counts as ready only when the child holds the listening socket (not when
        something there accepts: the load would then go to a stranger, as a CI
        run once saw), and a child that could not bind, or whose port a
        stranger holds, is started again on a fresh port.
        """
        for _attempt in range(3):
            if self._start_once(timeout):
                return self
            self._take_ports()
        raise RuntimeError(f"{self.kind}: three ports in a row were taken before it bound one")

    def _start_once(self, timeout: float) -> bool:
        """Start the child on :attr:`port`; False (the child stopped) if a port of its was
        taken: its log says so, or a stranger listens on :attr:`port`."""
        log = open(self.log, "ab")  # the child keeps it open
        # Our server runs from SERVER_ROOT: another checkout may be measured
        # against this one (``python -m`` imports from the working directory).
        cwd = COMPILED_ROOT if self.compiled else SERVER_ROOT
        self.proc = subprocess.Popen([*self.prefix, *self.command()], cwd=cwd,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            text = self.log.read_text(errors="replace")
            if any(sign in text for sign in _PORT_TAKEN):
                self.stop()
                return False
            if exited:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: "
                                   f"{text[-2000:]}")
            inode = listening_inode(self.port)
            if inode is not None:
                if holds_socket(_family(self.proc.pid), inode):
                    return True
                self.stop()  # a stranger listens there: the child can never bind it
                return False
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.kind} did not listen on {self.port}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s) by pid, and wait."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if self.prefix and Path(self.prefix[0]).name == "strace":
            # strace writes its report when the traced server exits, not when it
            # is itself terminated: end the server, strace's one child, by pid.
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if children:
                os.kill(int(children[0]), signal.SIGTERM)
        else:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def workdir(prefix: str) -> Path:
    """A fresh temporary directory for logs and queue files."""
    return Path(tempfile.mkdtemp(prefix=f"gearman-bench-{prefix}-"))


def available(kind: str) -> bool:
    """Whether the server ``kind`` can be started here."""
    if kind in GEARMANDS:
        return gearmand_binary() is not None
    if kind.endswith("-mypyc"):
        return (COMPILED_ROOT is not None and package_version("uvloop") != "-"
                and any(Path(COMPILED_ROOT, "gearman_proto").glob("packets.*.so")))
    if kind == "gear":
        return package_version("gear") != "-"
    if kind.startswith("uvloop"):
        return package_version("uvloop") != "-"
    if kind == "trio":
        return package_version("trio") != "-"
    return True
