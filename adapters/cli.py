"""The ``gearman-proto`` command: ``server``, ``submit``, ``work`` and ``admin``.

Flags follow the tools gearmand users know: ``gearmand`` for the server,
``gearman`` for submit/work (``-h`` is the host, as there; help is
``--help``), ``gearadmin`` for admin, whose output it reproduces.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import ssl
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from gearman_proto import SERVER_VERSION, __version__
from gearman_proto.admin import (
    AdminError,
    format_jobs,
    format_priority_status,
    format_status,
    format_unique_jobs,
    format_workers,
)
from gearman_proto.events import Priority, WorkData, WorkStatus, WorkWarning

from ._common import DEFAULT_PORT, Address, GearmanError, KeepAlive, parse_servers, to_bytes

__all__ = ["main"]

log = logging.getLogger("gearman_proto")

# gearmand's --verbose level names, mapped onto the logging module's levels.
_LEVELS = {"FATAL": logging.CRITICAL, "ALERT": logging.CRITICAL, "CRITICAL": logging.CRITICAL,
           "ERROR": logging.ERROR, "WARNING": logging.WARNING, "NOTICE": logging.INFO,
           "INFO": logging.INFO, "DEBUG": logging.DEBUG}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gearman-proto",
                                description="Gearman job server, client, worker and admin tool.")
    p.add_argument("--version", action="version", version=f"gearman-proto {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("server", help="run a job server (flags as gearmand)")
    s.add_argument("-L", "--listen", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    s.add_argument("-p", "--port", type=int, default=int(os.environ.get("GEARMAND_PORT",
                                                                         DEFAULT_PORT)))
    s.add_argument("--queue", default="memory",
                   help="memory (default) or sqlite:PATH for durable background jobs")
    s.add_argument("-j", "--job-retries", type=int, default=None,
                   help="requeues of a job whose worker was lost before it is failed "
                        "(default: unlimited; 0: never requeue)")
    s.add_argument("-w", "--worker-wakeup", type=int, default=0,
                   help="sleeping workers woken per new job (0 = all)")
    s.add_argument("--max-packet", type=int, default=None,
                   help="largest packet payload accepted, in bytes (0 = unlimited)")
    s.add_argument("--max-connections", type=int, default=0, help="0 = unlimited")
    s.add_argument("--exceptions", action="store_true",
                   help="every connection starts with the exceptions option on")
    s.add_argument("--job-handle-prefix", default=None, help="default H:<hostname>")
    s.add_argument("--output-limit", type=int, default=4 * 1024 * 1024, metavar="BYTES",
                   help="stop reading from a peer while this many bytes wait to be sent "
                        "to it (default 4 MiB)")
    s.add_argument("--max-client-jobs", type=int, default=10_000, metavar="N",
                   help="stop reading from a connection while it waits for N foreground "
                        "jobs (default 10000; 0 = no limit)")
    s.add_argument("--idle-timeout", type=float, default=0, metavar="SECONDS",
                   help="close connections silent this long that neither run a job, "
                        "wait for one nor sleep as a worker (default 0: never)")
    s.add_argument("--keepalive", action="store_true", help="TCP keepalive on connections")
    s.add_argument("--keepalive-idle", type=int, default=None, metavar="SECONDS",
                   help="silence before the first keepalive probe (implies --keepalive)")
    s.add_argument("--keepalive-interval", type=int, default=None, metavar="SECONDS",
                   help="time between keepalive probes (implies --keepalive)")
    s.add_argument("--keepalive-count", type=int, default=None, metavar="N",
                   help="unanswered probes before a peer is dropped (implies --keepalive)")
    s.add_argument("--allow-shutdown", action="store_true",
                   help="accept the admin `shutdown [graceful]` command")
    s.add_argument("--admin-changes", default="any", choices=["any", "loopback", "none"],
                   help="who may run the admin commands that change state (cancel job, "
                        "create/drop function, maxqueue, shutdown): any peer (default), "
                        "loopback peers only, or none; others get ERR PERMISSION_DENIED")
    s.add_argument("--ssl-certificate", help="PEM certificate: serve TLS")
    s.add_argument("--ssl-key", help="PEM private key of the certificate")
    s.add_argument("--ssl-ca-file", help="CA file: require and check client certificates")
    s.add_argument("--verbose", default="ERROR", type=str.upper, choices=list(_LEVELS))
    s.add_argument("-l", "--log-file", default=None,
                   help="write the log here (default: standard error)")
    s.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop", "trio"],
                   help="event loop (default auto: uvloop if installed, else asyncio)")

    def _conn_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--help", action="help", help="show this help and exit")
        sp.add_argument("-h", "--host", action="append", default=None,
                        help="job server host[:port] (repeat for several; default localhost)")
        sp.add_argument("-p", "--port", type=int, default=DEFAULT_PORT)
        sp.add_argument("-S", "--ssl", action="store_true", help="connect with TLS")
        sp.add_argument("--ssl-ca-file", help="CA file to verify the server with")

    c = sub.add_parser("submit", add_help=False, help="submit a job (as `gearman`)")
    _conn_args(c)
    c.add_argument("-f", "--function", required=True)
    c.add_argument("-b", "--background", action="store_true")
    prio = c.add_mutually_exclusive_group()
    prio.add_argument("-I", "--high", action="store_true", help="high priority")
    prio.add_argument("-L", "--low", action="store_true", help="low priority")
    c.add_argument("-u", "--unique", default=None)
    c.add_argument("-n", "--lines", action="store_true", help="one job per input line")
    c.add_argument("-t", "--timeout", type=int, default=None, help="milliseconds")
    c.add_argument("data", nargs="*", help="workload (default: standard input)")

    w = sub.add_parser("work", add_help=False, help="run a worker (as `gearman -w`)")
    _conn_args(w)
    w.add_argument("-f", "--function", action="append", required=True)
    w.add_argument("-c", "--count", type=int, default=None, help="exit after COUNT jobs")
    w.add_argument("--max-jobs", type=int, default=1, help="jobs run at once")
    w.add_argument("program", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="-- COMMAND ARGS: run per job, workload on stdin, result from stdout")

    a = sub.add_parser("admin", add_help=False, help="admin commands (as gearadmin)")
    _conn_args(a)
    a.add_argument("what", choices=["status", "priority-status", "workers", "version",
                                    "server-version", "verbose", "server-verbose", "getpid",
                                    "show-jobs", "show-unique-jobs", "cancel-job",
                                    "create-function", "drop-function", "maxqueue",
                                    "shutdown"])
    a.add_argument("args", nargs="*")
    return p


def _client_ssl(ns: argparse.Namespace) -> ssl.SSLContext | None:
    if not ns.ssl:
        return None
    return ssl.create_default_context(cafile=ns.ssl_ca_file)


def _servers(ns: argparse.Namespace) -> list[Address]:
    return parse_servers(ns.host or ["localhost"], default_port=ns.port)


# -- server -------------------------------------------------------------------------


def _server_options(ns: argparse.Namespace) -> dict[str, Any]:
    keepalive: bool | KeepAlive = ns.keepalive
    timings = (ns.keepalive_idle, ns.keepalive_interval, ns.keepalive_count)
    if any(t is not None for t in timings):
        try:
            keepalive = KeepAlive(*timings)
        except ValueError as exc:
            raise SystemExit(f"gearman-proto: {exc}") from None
    if ns.output_limit < 1 or ns.idle_timeout < 0 or ns.max_client_jobs < 0:
        raise SystemExit("gearman-proto: --output-limit must be >= 1, --idle-timeout and "
                         "--max-client-jobs >= 0")
    opts: dict[str, Any] = {
        "job_retries": ns.job_retries, "worker_wakeup": ns.worker_wakeup,
        "exceptions": ns.exceptions, "allow_shutdown": ns.allow_shutdown,
        "verbose": ns.verbose.encode(), "keepalive": keepalive,
        "max_connections": ns.max_connections, "pid": os.getpid(),
        "output_limit": ns.output_limit, "idle_timeout": ns.idle_timeout,
        "max_client_jobs": ns.max_client_jobs,
        "admin_changes": ns.admin_changes,
    }
    if ns.max_packet is not None:
        opts["max_packet_size"] = ns.max_packet
    prefix = ns.job_handle_prefix or f"H:{os.uname().nodename}"
    opts["handle_prefix"] = prefix.encode()
    if ns.queue != "memory":
        kind, _, path = ns.queue.partition(":")
        if kind != "sqlite" or not path:
            raise SystemExit(f"gearman-proto: unknown --queue {ns.queue!r} "
                             "(memory or sqlite:PATH)")
        from .sqlite import SQLiteStore
        opts["store"] = SQLiteStore(path)
    if ns.ssl_certificate:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(ns.ssl_certificate, ns.ssl_key)
        if ns.ssl_ca_file:
            ctx.load_verify_locations(ns.ssl_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        opts["ssl"] = ctx
    return opts


def _run_server(ns: argparse.Namespace) -> int:
    opts = _server_options(ns)
    if ns.loop == "auto":
        # uvloop is the fast path (benchmarks/RESULTS.md): taken whenever it is installed.
        ns.loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"

    def ready(server: Any) -> None:
        # Printed whatever the log level, as the one line that says it is up.
        line = (f"{SERVER_VERSION} listening on {ns.listen}:{server.port} "
                f"({ns.loop}, queue {ns.queue})")
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        if ns.log_file:  # without one the log is standard error, which has the line already
            log.log(max(logging.getLogger("gearman_proto").level, logging.ERROR), line)

    if ns.loop == "trio":
        import anyio

        from .anyio import serve as anyio_serve
        anyio.run(lambda: anyio_serve(ns.listen, ns.port, ready=ready, **opts), backend="trio")
        return 0
    from .asyncio import serve
    if ns.loop == "uvloop":
        import uvloop
        uvloop.run(serve(ns.listen, ns.port, ready=ready, **opts))
    else:
        asyncio.run(serve(ns.listen, ns.port, ready=ready, **opts))
    return 0


# -- submit -------------------------------------------------------------------------


def _progress(num: int, den: int) -> None:
    if not sys.stderr.isatty() or den <= 0:
        return
    width = 30
    done = min(width, width * num // den)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {num}/{den}")
    sys.stderr.flush()


async def _submit(ns: argparse.Namespace) -> int:
    from .asyncio import Client
    if ns.data:
        payloads = [" ".join(ns.data).encode()]
    else:
        raw = sys.stdin.buffer.read()
        payloads = raw.splitlines(keepends=False) if ns.lines else [raw]
    priority = Priority.HIGH if ns.high else Priority.LOW if ns.low else Priority.NORMAL
    timeout = None if ns.timeout is None else ns.timeout / 1000
    out = sys.stdout.buffer
    async with Client(_servers(ns), ssl=_client_ssl(ns), result_timeout=timeout) as client:
        for payload in payloads:
            job = await client.submit(ns.function, payload, unique=ns.unique,
                                      priority=priority, background=ns.background)
            if ns.background:
                continue
            async for update in job.updates():
                if isinstance(update, WorkData):
                    out.write(update.data)
                    out.flush()
                elif isinstance(update, WorkWarning):
                    sys.stderr.buffer.write(update.data)
                elif isinstance(update, WorkStatus):
                    _progress(update.numerator, update.denominator)
            result = await job
            if sys.stderr.isatty() and job.status[1]:
                sys.stderr.write("\n")
            out.write(result or b"")
            if ns.lines:
                out.write(b"\n")
            out.flush()
    return 0


# -- work ---------------------------------------------------------------------------


async def _work(ns: argparse.Namespace) -> int:
    from .asyncio import Worker, WorkerJob
    command = ns.program[1:] if ns.program[:1] == ["--"] else ns.program
    worker = Worker(_servers(ns), ssl=_client_ssl(ns), max_jobs=ns.max_jobs)

    async def run(job: WorkerJob) -> bytes:
        try:
            if not command:
                sys.stdout.buffer.write(job.data)
                sys.stdout.buffer.flush()
                return job.data
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            result, _ = await proc.communicate(job.data)
            if proc.returncode:
                raise GearmanError(f"{command[0]} exited with status {proc.returncode}")
            return result
        finally:  # a failed job counts too, as in `gearman -w -c COUNT`
            done[0] += 1
            if ns.count is not None and done[0] >= ns.count:
                worker.stop(graceful=True)

    done = [0]
    for f in ns.function:
        worker.register(f, run)
    loop = asyncio.get_running_loop()
    import signal
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.work()
    return 0


# -- admin --------------------------------------------------------------------------


async def _admin(ns: argparse.Namespace) -> int:
    from .asyncio import AdminClient
    what, args = ns.what, ns.args
    out = sys.stdout.buffer
    async with AdminClient(_servers(ns)[0], ssl=_client_ssl(ns)) as admin:
        try:
            if what == "status":
                out.write(format_status(await admin.status()))
            elif what == "priority-status":
                out.write(format_priority_status(await admin.priority_status()))
            elif what == "workers":
                out.write(format_workers(await admin.workers()))
            elif what == "show-jobs":
                out.write(format_jobs(await admin.show_jobs()))
            elif what == "show-unique-jobs":
                out.write(format_unique_jobs(await admin.show_unique_jobs()))
            elif what in ("version", "server-version"):
                out.write((await admin.version()).encode() + b"\n")
            elif what in ("verbose", "server-verbose"):
                out.write((await admin.verbose()).encode() + b"\n")
            elif what == "getpid":
                out.write(b"%d\n" % await admin.getpid())
            else:
                if what == "cancel-job":
                    await admin.cancel_job(_one(args, "HANDLE"))
                elif what == "create-function":
                    await admin.create_function(_one(args, "FUNCTION"))
                elif what == "drop-function":
                    await admin.drop_function(_one(args, "FUNCTION"))
                elif what == "maxqueue":
                    if not args:
                        raise SystemExit("gearman-proto admin maxqueue FUNCTION [N | H N L]")
                    await admin.maxqueue(args[0], *(int(a) for a in args[1:]))
                elif what == "shutdown":
                    await admin.shutdown(graceful=args[:1] == ["graceful"])
                out.write(b"OK\n")
        except AdminError as err:
            # gearadmin's words: the code, or the text for code-less errors.
            sys.stderr.write(f"Error: {(err.code or err.text).decode(errors='replace')}\n")
            return 1
    out.flush()
    return 0


def _one(args: Sequence[str], what: str) -> bytes:
    if len(args) != 1:
        raise SystemExit(f"expected exactly one {what}")
    return to_bytes(args[0])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gearman-proto`` console script."""
    ns = _parser().parse_args(argv)
    level = _LEVELS.get(getattr(ns, "verbose", "WARNING"), logging.WARNING)
    logging.basicConfig(level=min(level, logging.WARNING) if ns.command == "server" else
                        logging.WARNING, format="%(asctime)s %(levelname)s %(message)s",
                        filename=getattr(ns, "log_file", None))
    if ns.command == "server":
        logging.getLogger("gearman_proto").setLevel(level)
        try:
            return _run_server(ns)
        except OSError as exc:  # the port is taken, a certificate file is missing, ...
            sys.stderr.write(f"gearman-proto: {exc}\n")
            return 1
    try:
        if ns.command == "submit":
            return asyncio.run(_submit(ns))
        if ns.command == "work":
            return asyncio.run(_work(ns))
        return asyncio.run(_admin(ns))
    except (GearmanError, OSError) as exc:
        sys.stderr.write(f"gearman-proto: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
