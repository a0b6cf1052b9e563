"""The ``gearman-proto`` command: ``server``, ``submit``, ``work``, ``admin`` and ``job-status``.

Flags follow the tools gearmand users know: ``gearmand`` for the server,
``gearman`` for submit/work (``-h`` is the host, as there; help is
``--help``), ``gearadmin`` for admin, whose output it reproduces.  A bad flag
or value is one line on standard error naming it, exit status 2; anything else
that stops a command (a port in use, an unreadable file, a failed job) is one
line and exit status 1.  docs/cli.md is the user's page.

Each subcommand is a pair of functions, ``_X_args(parser)`` and ``_run_X(ns)``,
and one line in :data:`_COMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import importlib
import importlib.util
import json
import logging
import os
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

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
from gearman_proto.store import StoreError

from . import GearmanError, _fuzz
from . import http as _http
from . import top as _top
from ._common import DEFAULT_PORT, Address, KeepAlive, parse_servers, to_bytes
from .stores import open_store, redact

__all__ = ["main"]

log = logging.getLogger("gearman_proto.cli")
T = TypeVar("T")

# gearmand's --verbose level names, mapped onto the logging module's levels.
_LEVELS = {"FATAL": logging.CRITICAL, "ALERT": logging.CRITICAL, "CRITICAL": logging.CRITICAL,
           "ERROR": logging.ERROR, "WARNING": logging.WARNING, "NOTICE": logging.INFO,
           "INFO": logging.INFO, "DEBUG": logging.DEBUG}
# -v, -vv, -vvv: each one level more than the default ERROR (old gearmand's habit).
_V_LEVELS = ["ERROR", "WARNING", "INFO", "DEBUG"]


class Fatal(Exception):
    """Stops a command with one line on standard error and exit status 1."""


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line naming the flag, the cause and where help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")

    def refuse(self, message: str) -> NoReturn:
        """A flag we know but do not take: the subcommand's usage, then why."""
        self.exit(2, f"usage: {self.prog} [options]\n{self.prog}: {message}\n")


def _whole(low: int, high: int | None = None, hint: str = "") -> Callable[[str], int]:
    """An argparse type: an integer in ``low..high``; the message says what fits."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {span}{hint}")
        return value
    parse.__name__ = "number"
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is out of range: give 0 or more")
    return value


class _Refused(argparse.Action):
    """A gearmand flag with no counterpart here: refused, saying why (``help`` is the why)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", "?")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        assert isinstance(parser, _Parser)
        parser.refuse(f"{'/'.join(self.option_strings)} (a gearmand flag) is not supported: "
                      f"{self.help}")


# -- server ---------------------------------------------------------------------------


def _server_args(s: _Parser) -> None:
    s.add_argument("-V", "--version", action="version", version=f"gearman-proto {__version__}")
    s.add_argument("-L", "--listen", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    s.add_argument("-p", "--port", type=_whole(0, 65535, " (0 picks a free port)"),
                   default=int(os.environ.get("GEARMAND_PORT", DEFAULT_PORT)))
    s.add_argument("--queue", default=None,
                   help="where background jobs are kept: memory (default), sqlite:PATH, "
                        "postgresql://USER@HOST:PORT/DB or redis://HOST:PORT/N")
    s.add_argument("--queue-name", default="default", metavar="NAME",
                   help="this server's name in a shared PostgreSQL or Redis queue: its rows "
                        "are its own; two live servers may not share one (default: default)")
    s.add_argument("-q", "--queue-type", default=None, metavar="TYPE",
                   help="gearmand's spelling: builtin (= --queue memory) or libsqlite3 "
                        "(with --libsqlite3-db FILE, = --queue sqlite:FILE)")
    s.add_argument("--libsqlite3-db", default=None, metavar="FILE", help="see -q")
    s.add_argument("-j", "--job-retries", type=_whole(0), default=None, metavar="N",
                   help="as gearmand: runs of a job whose worker is lost before it is "
                        "failed (default 0: no limit; 1: never run it again)")
    s.add_argument("--max-requeues", type=_whole(0), default=None, metavar="N",
                   help="the same limit counted in requeues (-j N is --max-requeues N-1; "
                        "0: never requeue)")
    s.add_argument("-w", "--worker-wakeup", type=_whole(0), default=0, metavar="N",
                   help="sleeping workers woken per new job (0 = all)")
    s.add_argument("--max-packet", type=_whole(0), default=None, metavar="BYTES",
                   help="largest packet payload accepted, in bytes (0 = unlimited)")
    s.add_argument("--max-connections", type=_whole(0), default=0, metavar="N",
                   help="0 = unlimited")
    s.add_argument("--exceptions", action="store_true",
                   help="every connection starts with the exceptions option on")
    s.add_argument("--job-handle-prefix", default=None, help="default H:<hostname>")
    s.add_argument("--output-limit", type=_whole(1), default=4 * 1024 * 1024, metavar="BYTES",
                   help="stop reading from a peer while this many bytes wait to be sent "
                        "to it (default 4 MiB)")
    s.add_argument("--max-client-jobs", type=_whole(0), default=10_000, metavar="N",
                   help="stop reading from a connection while it waits for N foreground "
                        "jobs (default 10000; 0 = no limit)")
    s.add_argument("--idle-timeout", type=_seconds, default=0, metavar="SECONDS",
                   help="close connections silent this long that neither run a job, "
                        "wait for one nor sleep as a worker (default 0: never)")
    s.add_argument("--graceful-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                   help="a graceful stop (SIGUSR1, admin shutdown graceful) waits this long "
                        "at most for running jobs (default 30)")
    s.add_argument("--keepalive", action="store_true", help="TCP keepalive on connections")
    s.add_argument("--keepalive-idle", type=_whole(1), default=None, metavar="SECONDS",
                   help="silence before the first keepalive probe (implies --keepalive)")
    s.add_argument("--keepalive-interval", type=_whole(1), default=None, metavar="SECONDS",
                   help="time between keepalive probes (implies --keepalive)")
    s.add_argument("--keepalive-count", type=_whole(1), default=None, metavar="N",
                   help="unanswered probes before a peer is dropped (implies --keepalive)")
    s.add_argument("--allow-shutdown", action="store_true",
                   help="accept the admin `shutdown [graceful]` command")
    s.add_argument("--admin-changes", default="any", choices=["any", "loopback", "none"],
                   help="who may run the admin commands that change state (cancel job, "
                        "create/drop function, maxqueue, shutdown): any peer (default), "
                        "loopback peers only, or none; others get ERR PERMISSION_DENIED")
    s.add_argument("--ssl", action="store_true",
                   help="serve TLS (gearmand's switch; needs --ssl-certificate)")
    s.add_argument("--ssl-certificate", help="PEM certificate: serve TLS")
    s.add_argument("--ssl-key", help="PEM private key of the certificate")
    s.add_argument("--ssl-ca-file", help="CA file: require and check client certificates")
    s.add_argument("--verbose", default=None, type=str.upper, choices=list(_LEVELS),
                   help="log level (default ERROR)")
    s.add_argument("-v", dest="v_count", action="count", default=0,
                   help="one level more than ERROR per -v: -v WARNING, -vv INFO, -vvv DEBUG")
    s.add_argument("-l", "--log-file", default=None,
                   help="write the log here; 'stderr' (the default) or 'none'")
    s.add_argument("-P", "--pid-file", default=None, metavar="FILE",
                   help="write the server's process id here (removed on exit)")
    s.add_argument("-t", "--threads", type=_whole(0), default=None, metavar="N",
                   help="accepted for gearmand command lines, and ignored: one event loop "
                        "serves every connection")
    s.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop", "trio"],
                   help="event loop (default auto: uvloop if installed, else asyncio)")
    s.add_argument("--http", default=None, metavar="[HOST:]PORT",
                   help="serve /metrics and the dashboard here, read-only (default: off; "
                        "PORT alone binds 127.0.0.1); see docs/observability.md")
    for flags, why in (
        (("-d", "--daemon"), "the server stays in the foreground for its supervisor "
                             "(systemd, runit, a container); to detach by hand run "
                             "`nohup gearman-proto server ... &`"),
        (("-u", "--user"), "start it as that user instead (systemd's User=, "
                           "`runuser -u USER -- gearman-proto server ...`)"),
        (("-R", "--round-robin"), "jobs go out by priority, then in arrival order, across "
                                  "all of a worker's functions; there is no other order"),
        (("-b", "--backlog"), "the listen backlog is the event loop's"),
        (("-f", "--file-descriptors"), "raise the limit with `ulimit -n` before starting"),
        (("-r", "--protocol"), "only the Gearman protocol is served (no HTTP)"),
        (("--http-port",), "only the Gearman protocol is served (no HTTP)"),
        (("--syslog",), "log to standard error (-l stderr) and let the supervisor or "
                        "`logger` forward it"),
        (("--config-file",), "give the flags on the command line"),
        (("--libsqlite3-table",), "the sqlite store keeps its own table"),
        (("--store-queue-on-shutdown",), "the sqlite store keeps every background job "
                                         "from the moment it is accepted"),
    ):
        s.add_argument(*flags, action=_Refused, help=why)


def _tls(ns: argparse.Namespace, parser: _Parser) -> ssl.SSLContext | None:
    """The server's TLS context, or None; a TLS flag that cannot be honoured stops the start."""
    if not ns.ssl_certificate:
        given = [f for f, v in (("--ssl", ns.ssl), ("--ssl-key", ns.ssl_key),
                                ("--ssl-ca-file", ns.ssl_ca_file)) if v]
        if given:
            parser.error(f"{given[0]} needs --ssl-certificate FILE (a PEM certificate); "
                         "without it the server would not serve TLS")
        return None
    for flag, path in (("--ssl-certificate", ns.ssl_certificate), ("--ssl-key", ns.ssl_key),
                       ("--ssl-ca-file", ns.ssl_ca_file)):
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise Fatal(f"{flag} {path}: cannot read it ({exc.strerror})") from None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(ns.ssl_certificate, ns.ssl_key)
    except ssl.SSLError as exc:
        key = f" / --ssl-key {ns.ssl_key}" if ns.ssl_key else " (no --ssl-key given)"
        raise Fatal(f"--ssl-certificate {ns.ssl_certificate}{key}: not a usable PEM "
                    f"certificate and private key ({exc.reason or exc})") from None
    if ns.ssl_ca_file:
        try:
            ctx.load_verify_locations(ns.ssl_ca_file)
        except ssl.SSLError as exc:
            raise Fatal(f"--ssl-ca-file {ns.ssl_ca_file}: not a PEM CA file "
                        f"({exc.reason or exc})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _gearmand_queue(ns: argparse.Namespace, parser: _Parser) -> str:
    """``--queue``, from it or from gearmand's ``-q TYPE --libsqlite3-db FILE``."""
    if ns.queue_type is None:
        if ns.libsqlite3_db is not None:
            parser.error("--libsqlite3-db needs -q libsqlite3")
        return ns.queue or "memory"
    if ns.queue is not None:
        parser.error("give --queue or -q/--queue-type, not both")
    if ns.queue_type == "builtin":
        return "memory"
    if ns.queue_type == "libsqlite3":
        if not ns.libsqlite3_db:
            parser.error("-q libsqlite3 needs --libsqlite3-db FILE")
        return f"sqlite:{ns.libsqlite3_db}"
    parser.error(f"-q/--queue-type {ns.queue_type}: not available here; "
                 "use -q builtin, -q libsqlite3 --libsqlite3-db FILE, or --queue")


def _server_options(ns: argparse.Namespace) -> dict[str, Any]:
    parser: _Parser = ns.parser
    keepalive: bool | KeepAlive = ns.keepalive
    timings = (ns.keepalive_idle, ns.keepalive_interval, ns.keepalive_count)
    if any(t is not None for t in timings):
        try:
            keepalive = KeepAlive(*timings)
        except ValueError as exc:
            parser.error(str(exc))
    if ns.job_retries is not None and ns.max_requeues is not None:
        parser.error("give -j/--job-retries (gearmand's count of runs) or --max-requeues, "
                     "not both")
    requeues = ns.max_requeues
    if ns.job_retries:  # gearmand: the Nth lost run fails the job; 0 is no limit
        requeues = ns.job_retries - 1
    opts: dict[str, Any] = {
        "job_retries": requeues, "worker_wakeup": ns.worker_wakeup,
        "exceptions": ns.exceptions, "allow_shutdown": ns.allow_shutdown,
        "verbose": ns.level_name.encode(), "keepalive": keepalive,
        "max_connections": ns.max_connections, "pid": os.getpid(),
        "output_limit": ns.output_limit, "idle_timeout": ns.idle_timeout,
        "max_client_jobs": ns.max_client_jobs, "graceful_timeout": ns.graceful_timeout,
        "admin_changes": ns.admin_changes,
    }
    if ns.http is not None:
        opts["http"] = _http.address_option(ns.http)
    if ns.max_packet is not None:
        opts["max_packet_size"] = ns.max_packet
    prefix = ns.job_handle_prefix or f"H:{os.uname().nodename}"
    opts["handle_prefix"] = prefix.encode()
    if ns.queue != "memory" and not ns.queue.startswith(
            ("sqlite:", "postgresql://", "postgres://", "redis://", "rediss://")):
        parser.error(f"unknown --queue {ns.queue!r} (memory, sqlite:PATH, "
                     "postgresql://USER@HOST:PORT/DB or redis://HOST:PORT/N)")
    ctx = _tls(ns, parser)  # checked before a store is opened (and locked)
    try:
        store = open_store(ns.queue, name=ns.queue_name)
    except (StoreError, ImportError) as exc:
        raise Fatal(str(exc)) from None
    if store is not None:
        opts["store"] = store
    if ctx is not None:
        opts["ssl"] = ctx
    return opts


def _check_loop(ns: argparse.Namespace) -> None:
    """The event loop asked for is installed, or say which extra brings it."""
    if ns.loop == "auto":
        # uvloop is the fast path (benchmarks/RESULTS.md): taken whenever it is installed.
        ns.loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    needs = {"trio": ("anyio", "trio"), "uvloop": ("uvloop",)}.get(ns.loop, ())
    for module in needs:
        try:
            importlib.import_module(module)
        except ImportError:
            raise Fatal(f"--loop {ns.loop} needs the {module} module, which is not installed: "
                        f"pip install 'gearman-proto[{ns.loop}]'") from None


def _setup_server_log(ns: argparse.Namespace) -> bool:
    """Configure logging from --verbose/-v and -l; True when the log goes to standard error."""
    if ns.verbose is not None and ns.v_count:
        ns.parser.error("give --verbose LEVEL or -v, not both")
    ns.level_name = ns.verbose or _V_LEVELS[min(ns.v_count, len(_V_LEVELS) - 1)]
    level = _LEVELS[ns.level_name]
    target = ns.log_file or "stderr"
    handler: logging.Handler
    if target == "none":
        handler = logging.NullHandler()
    elif target == "stderr":
        handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            handler = logging.FileHandler(target)
        except OSError as exc:
            raise Fatal(f"-l/--log-file {target}: cannot open it for writing "
                        f"({exc.strerror}); give a writable file, 'stderr' or 'none'") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(level, logging.WARNING))  # other libraries' warnings still show
    logging.getLogger("gearman_proto").setLevel(level)
    return target == "stderr"


@contextlib.contextmanager
def _pid_file(path: str | None, flag: str = "-P/--pid-file") -> Iterator[None]:
    """gearmand's -P (gearman's -i): the pid written before serving, the file removed after."""
    if path is None:
        yield
        return
    try:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise Fatal(f"{flag} {path}: cannot write it ({exc.strerror})") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


@contextlib.contextmanager
def _listen_errors(ns: argparse.Namespace) -> Iterator[None]:
    """A socket that cannot be bound is one line naming -L/-p and the fix."""
    try:
        yield
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        if isinstance(exc, _http.HttpListenError):
            raise Fatal(f"--http {exc.filename}: cannot listen ({why}); pick another address "
                        "or port for the metrics and dashboard") from None
        if exc.errno == errno.EADDRINUSE:
            fix = "stop the other server there, or pick another port with -p"
        elif exc.errno == errno.EACCES:
            fix = "ports below 1024 need root; pick another with -p"
        else:
            fix = "check the address given to -L"
        raise Fatal(f"-L {ns.listen} -p {ns.port}: cannot listen ({why}); {fix}") from None


def _run_server(ns: argparse.Namespace) -> int:
    log_on_stderr = _setup_server_log(ns)
    _check_loop(ns)
    ns.queue = _gearmand_queue(ns, ns.parser)
    if ns.threads is not None:
        sys.stderr.write("gearman-proto server: note: -t/--threads is ignored: one event "
                         "loop serves every connection\n")
    try:
        opts = _server_options(ns)
    except sqlite3.Error as exc:
        raise Fatal(f"--queue {ns.queue}: cannot use {ns.queue.partition(':')[2]} as the job "
                    f"store ({exc}); give the path of a new or existing SQLite database in a "
                    "writable directory") from None

    store = opts.get("store")
    try:
        return _serve(ns, opts, log_on_stderr)
    except StoreError as exc:  # the replay at start could not read the store
        raise Fatal(str(exc)) from None
    finally:
        if store is not None:
            store.close()


def _serve(ns: argparse.Namespace, opts: dict[str, Any], log_on_stderr: bool) -> int:
    # As gearmand's "Starting up with pid N": the server logs its own "listening on" line.
    log.info("%s starting: pid %d, %s loop, queue %s, log level %s",
             SERVER_VERSION, os.getpid(), ns.loop, redact(ns.queue), ns.level_name)

    def ready(server: Any) -> None:
        if not (log_on_stderr and log.isEnabledFor(logging.INFO)):
            # Standard error does not show the log's INFO lines: the one line that says
            # the server is up, whatever the log level.
            http = (f", metrics and dashboard on {server.http.url}"
                    if getattr(server, "http", None) is not None else "")
            sys.stderr.write(f"{SERVER_VERSION} listening on {ns.listen}:"
                             f"{server.port} ({ns.loop}, queue {redact(ns.queue)}){http}\n")
            sys.stderr.flush()

    with _pid_file(ns.pid_file), _listen_errors(ns):
        if ns.loop == "trio":
            import anyio

            from .anyio import serve as anyio_serve
            anyio.run(lambda: anyio_serve(ns.listen, ns.port, ready=ready, **opts),
                      backend="trio")
            return 0
        from .asyncio import serve
        if ns.loop == "uvloop":
            import uvloop
            uvloop.run(serve(ns.listen, ns.port, ready=ready, **opts))
        else:
            asyncio.run(serve(ns.listen, ns.port, ready=ready, **opts))
    return 0


# -- what a client command shows --------------------------------------------------------


class _Screen:
    """Standard output and error as the user sees them, with the WORK_STATUS bar.

    The bar is drawn on standard error only when it is a terminal, on a line of
    its own, and erased before anything else is written (job data, warnings,
    log lines, errors), so no output lands on the bar's line.
    """

    WIDTH = 30

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.bar_shown = False
        self.mid_line = False  # the last text written did not end a line

    def bar(self, num: int, den: int) -> None:
        if not self.tty or den <= 0:
            return
        if self.mid_line:  # keep the unfinished line: the bar goes below it
            sys.stderr.write("\n")
            self.mid_line = False
        done = max(0, min(self.WIDTH, self.WIDTH * num // den))
        sys.stderr.write(f"\r\x1b[K[{'#' * done}{'.' * (self.WIDTH - done)}] {num}/{den}")
        sys.stderr.flush()
        self.bar_shown = True

    def clear(self) -> None:
        if self.bar_shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.bar_shown = False

    def out(self, data: bytes) -> None:
        self._write(sys.stdout, data)

    def err(self, data: bytes) -> None:
        self._write(sys.stderr, data)

    def _write(self, stream: Any, data: bytes) -> None:
        if not data:
            return
        self.clear()
        stream.buffer.write(data)
        stream.flush()
        self.mid_line = not data.endswith(b"\n")


_screen = _Screen()


class _ScreenLog(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines of the client commands, written after the bar is erased."""

    def emit(self, record: logging.LogRecord) -> None:
        _screen.clear()
        super().emit(record)
        _screen.mid_line = False


def _conn_args(sp: _Parser) -> None:
    sp.add_argument("--help", action="help", help="show this help and exit")
    sp.add_argument("-h", "--host", action="append", default=None,
                    help="job server host[:port] (repeat for several; default localhost)")
    sp.add_argument("-p", "--port", type=_whole(1, 65535), default=DEFAULT_PORT)
    sp.add_argument("-S", "--ssl", action="store_true", help="connect with TLS")
    sp.add_argument("--ssl-ca-file", help="CA file to verify the server with")


def _client_ssl(ns: argparse.Namespace) -> ssl.SSLContext | None:
    if not ns.ssl:
        return None
    try:
        return ssl.create_default_context(cafile=ns.ssl_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise Fatal(f"--ssl-ca-file {ns.ssl_ca_file}: not a readable PEM CA file "
                    f"({getattr(exc, 'strerror', None) or exc})") from None


def _servers(ns: argparse.Namespace) -> list[Address]:
    try:
        return parse_servers(ns.host or ["localhost"], default_port=ns.port)
    except ValueError as exc:
        parser: _Parser = ns.parser
        parser.error(f"-h/--host: {exc}")


def _pid_arg(sp: _Parser) -> None:
    sp.add_argument("-i", "--pid-file", default=None, metavar="FILE",
                    help="write this process's id here (removed on exit), as gearman -i")


def _run_async(ns: argparse.Namespace, main: Callable[[argparse.Namespace], Awaitable[int]],
               timeout_ms: int | None = None) -> int:
    """Run a client command's coroutine, within ``-t`` milliseconds when given."""
    async def bounded() -> int:
        if timeout_ms is None:
            return await main(ns)
        try:
            return await asyncio.wait_for(main(ns), timeout_ms / 1000)
        except asyncio.TimeoutError:
            raise Fatal(f"timed out after {timeout_ms} ms (-t {timeout_ms})") from None
    with _pid_file(getattr(ns, "pid_file", None), "-i/--pid-file"):
        return asyncio.run(bounded())


# -- submit -------------------------------------------------------------------------


def _submit_args(c: _Parser) -> None:
    _conn_args(c)
    c.add_argument("-f", "--function", action="append", required=True,
                   help="function to call (repeat for several: each gets the workload)")
    c.add_argument("-b", "--background", action="store_true")
    prio = c.add_mutually_exclusive_group()
    prio.add_argument("-I", "--high", action="store_true", help="high priority")
    prio.add_argument("-L", "--low", action="store_true", help="low priority")
    c.add_argument("-u", "--unique", default=None)
    lines = c.add_mutually_exclusive_group()
    lines.add_argument("-n", "--lines", action="store_true",
                       help="one job per input line (the newline kept, as gearman)")
    lines.add_argument("-N", "--stripped-lines", action="store_true",
                       help="one job per input line, the newline stripped")
    c.add_argument("-s", "--no-input", action="store_true",
                   help="do not read standard input: the workload is the arguments or empty")
    c.add_argument("-P", "--prefix", action="store_true",
                   help="start each job's output with its function name and ': '")
    c.add_argument("-v", "--verbose", action="store_true",
                   help="print 'Task created: HANDLE' for each job")
    c.add_argument("-t", "--timeout", type=_whole(0), default=None, metavar="MS",
                   help="give up after this many milliseconds (exit status 1)")
    _pid_arg(c)
    c.add_argument("data", nargs="*",
                   help="workloads, one job each (default: standard input, one job)")


def _payloads(ns: argparse.Namespace) -> list[bytes]:
    """The workloads, read before the event loop starts (so one Ctrl-C ends the wait)."""
    if ns.data:  # one job per argument, as gearman
        return [os.fsencode(word) for word in ns.data]
    raw = b"" if ns.no_input else sys.stdin.buffer.read()
    if ns.lines:
        return raw.splitlines(keepends=True)
    if ns.stripped_lines:
        return raw.splitlines()
    return [raw]


async def _submit(ns: argparse.Namespace) -> int:
    from .asyncio import Client
    priority = Priority.HIGH if ns.high else Priority.LOW if ns.low else Priority.NORMAL
    timeout = None if ns.timeout is None else ns.timeout / 1000
    async with Client(_servers(ns), ssl=_client_ssl(ns), result_timeout=timeout) as client:
        for payload in ns.payloads:
            for function in ns.function:
                job = await client.submit(function, payload, unique=ns.unique,
                                          priority=priority, background=ns.background)
                if ns.verbose:
                    _screen.out(b"Task created: %s\n" % (job.handle or b""))
                if ns.background:
                    continue
                prefix = f"{function}: ".encode() if ns.prefix else b""
                async for update in job.updates(timeout):
                    if isinstance(update, WorkData):
                        _screen.out(prefix + update.data)
                    elif isinstance(update, WorkWarning):
                        _screen.err(update.data)
                    elif isinstance(update, WorkStatus):
                        _screen.bar(update.numerator, update.denominator)
                result = await job
                _screen.clear()
                _screen.out(prefix + (result or b""))
    return 0


def _run_submit(ns: argparse.Namespace) -> int:
    ns.payloads = _payloads(ns)
    return _run_async(ns, _submit, ns.timeout)


# -- work ---------------------------------------------------------------------------


def _work_args(w: _Parser) -> None:
    _conn_args(w)
    w.add_argument("-f", "--function", action="append", required=True)
    w.add_argument("-c", "--count", type=_whole(1), default=None, help="exit after COUNT jobs")
    w.add_argument("--max-jobs", type=_whole(1), default=1, help="jobs run at once")
    lines = w.add_mutually_exclusive_group()
    lines.add_argument("-n", "--lines", action="store_true",
                       help="send each line of the output as WORK_DATA as it comes (the "
                            "result is then empty)")
    lines.add_argument("-N", "--stripped-lines", action="store_true",
                       help="as -n, the newline stripped")
    _pid_arg(w)
    w.add_argument("program", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="-- COMMAND ARGS: run per job, workload on stdin, result from stdout")


async def _work(ns: argparse.Namespace) -> int:
    from .asyncio import Worker, WorkerJob
    command = ns.program[1:] if ns.program[:1] == ["--"] else ns.program
    worker = Worker(_servers(ns), ssl=_client_ssl(ns), max_jobs=ns.max_jobs)
    by_line = ns.lines or ns.stripped_lines

    def send_lines(job: WorkerJob, output: bytes) -> bytes:
        for line in output.splitlines(keepends=ns.lines):
            job.send_data(line)
        return b""

    async def run_command(job: WorkerJob) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(job.data)
        proc.stdin.close()
        if by_line:  # each line goes out as the command prints it
            while line := await proc.stdout.readline():
                send_lines(job, line)
            result = b""
        else:
            result = await proc.stdout.read()
        if await proc.wait():
            raise GearmanError(f"{command[0]} exited with status {proc.returncode}")
        return result

    async def run(job: WorkerJob) -> bytes:
        try:
            if command:
                return await run_command(job)
            _screen.out(job.data)
            return send_lines(job, job.data) if by_line else job.data
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


def _run_work(ns: argparse.Namespace) -> int:
    return _run_async(ns, _work)


# -- admin --------------------------------------------------------------------------

# Each admin command: how many arguments it takes (min, max).
_ADMIN = {"status": (0, 0), "priority-status": (0, 0), "workers": (0, 0), "version": (0, 0),
          "server-version": (0, 0), "verbose": (0, 0), "server-verbose": (0, 0),
          "getpid": (0, 0), "show-jobs": (0, 0), "show-unique-jobs": (0, 0),
          "cancel-job": (1, 1), "create-function": (1, 1), "drop-function": (1, 1),
          "maxqueue": (1, 4), "shutdown": (0, 1)}
# gearadmin's flags (`--status`, `--cancel-job H`, ...) name the same commands.
_GEARADMIN = ["status", "priority-status", "workers", "server-version", "server-verbose",
              "getpid", "show-jobs", "show-unique-jobs", "cancel-job", "create-function",
              "drop-function"]


def _gearadmin_words(args: Sequence[str]) -> list[str]:
    """gearadmin's ``--status`` / ``--cancel-job=H`` as our words, in the order given."""
    words: list[str] = []
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag.startswith("--") and flag[2:] in _GEARADMIN:
            words += [flag[2:], value] if eq else [flag[2:]]
        else:
            words.append(arg)
    return words


def _admin_args(a: _Parser) -> None:
    _conn_args(a)
    a.add_argument("--json", action="store_true",
                   help="print each command's answer as one line of JSON")
    a.add_argument("commands", nargs="*", metavar="COMMAND [ARG...]",
                   help=f"one or more of: {', '.join(_ADMIN)} (gearadmin's --status, "
                        "--workers, ... work too)")


def _admin_commands(ns: argparse.Namespace) -> list[list[str]]:
    """The commands to run, in order: each one word and its arguments."""
    out: list[list[str]] = []
    words = list(ns.commands)
    while words:
        word = words.pop(0)
        if word not in _ADMIN:
            ns.parser.error(f"unknown admin command {word!r}: give one of {', '.join(_ADMIN)}")
        low, high = _ADMIN[word]
        args: list[str] = []
        # Arguments run up to the next command word, past the required ones.
        while words and len(args) < high and (len(args) < low or words[0] not in _ADMIN):
            args.append(words.pop(0))
        if len(args) < low:
            ns.parser.error(f"admin {word} needs {'an argument' if low == 1 else 'arguments'}")
        out.append([word, *args])
    if not out:
        ns.parser.error(f"give an admin command: {', '.join(_ADMIN)}")
    return out


def _plain(value: Any) -> Any:
    """An admin answer as JSON-ready values (bytes as text)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # The fields a repr shows: what was asked (a reply's request) is left out.
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.repr}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


_WHY_REFUSED = {
    ("shutdown", b"UNKNOWN_COMMAND"): "the server does not take `shutdown` (gearmand removed "
                                      "it in 1.1.15; gearman-proto server takes it when "
                                      "started with --allow-shutdown)",
    (None, b"PERMISSION_DENIED"): "the server's --admin-changes setting refuses this "
                                  "command from this peer",
}


async def _admin_one(admin: Any, word: str, args: list[str]) -> tuple[Any, bytes]:
    """Run one admin command: (the answer as data, the answer as gearadmin prints it)."""
    if word == "status":
        rows = await admin.status()
        return rows, format_status(rows)
    if word == "priority-status":
        rows = await admin.priority_status()
        return rows, format_priority_status(rows)
    if word == "workers":
        rows = await admin.workers()
        return rows, format_workers(rows)
    if word == "show-jobs":
        rows = await admin.show_jobs()
        return rows, format_jobs(rows)
    if word == "show-unique-jobs":
        rows = await admin.show_unique_jobs()
        return rows, format_unique_jobs(rows)
    if word in ("version", "server-version"):
        text = await admin.version()
        return {"version": text}, text.encode() + b"\n"
    if word in ("verbose", "server-verbose"):
        text = await admin.verbose()
        return {"verbose": text}, text.encode() + b"\n"
    if word == "getpid":
        pid = await admin.getpid()
        return {"pid": pid}, b"%d\n" % pid
    if word == "cancel-job":
        await admin.cancel_job(to_bytes(args[0]))
    elif word == "create-function":
        await admin.create_function(to_bytes(args[0]))
    elif word == "drop-function":
        await admin.drop_function(to_bytes(args[0]))
    elif word == "maxqueue":
        try:
            limits = [int(a) for a in args[1:]]
        except ValueError:
            raise Fatal(f"admin maxqueue {' '.join(args)}: the limits must be whole numbers "
                        "(maxqueue FUNCTION [N | HIGH NORMAL LOW])") from None
        await admin.maxqueue(args[0], *limits)
    elif word == "shutdown":
        if args and args != ["graceful"]:
            raise Fatal(f"admin shutdown {args[0]}: only 'shutdown' or 'shutdown graceful'")
        await admin.shutdown(graceful=bool(args))
    return {"ok": True}, b"OK\n"


async def _admin(ns: argparse.Namespace) -> int:
    from .asyncio import AdminClient
    commands = ns.admin_commands
    async with AdminClient(_servers(ns)[0], ssl=_client_ssl(ns)) as admin:
        for word, *args in commands:
            try:
                data, text = await _admin_one(admin, word, args)
            except AdminError as err:
                # gearadmin's words: the code, or the text for code-less errors.
                said = (err.code or err.text).decode(errors="replace")
                why = _WHY_REFUSED.get((word, err.code)) or _WHY_REFUSED.get((None, err.code))
                if ns.json:
                    _screen.out(json.dumps({"command": word, "error": said, "why": why})
                                .encode() + b"\n")
                _screen.err(f"Error: {said}{f' ({why})' if why else ''}\n".encode())
                return 1
            if ns.json:
                text = json.dumps({"command": word, "args": args, "answer": _plain(data)}
                                  ).encode() + b"\n"
            _screen.out(text)
    return 0


def _run_admin(ns: argparse.Namespace) -> int:
    ns.admin_commands = _admin_commands(ns)
    return _run_async(ns, _admin)


# -- job-status ---------------------------------------------------------------------


def _job_status_args(j: _Parser) -> None:
    _conn_args(j)
    j.add_argument("-u", "--unique", action="store_true",
                   help="the arguments are unique ids (GET_STATUS_UNIQUE), not handles")
    j.add_argument("--json", action="store_true", help="one line of JSON per job")
    j.add_argument("jobs", nargs="+", metavar="HANDLE", help="job handle(s), or unique ids")


async def _job_status(ns: argparse.Namespace) -> int:
    from .asyncio import Client
    unknown = 0
    async with Client(_servers(ns), ssl=_client_ssl(ns)) as client:
        for key in ns.jobs:
            answer: Any = await (client.get_status_unique(key) if ns.unique
                                 else client.get_status(key))
            unknown += not answer.known
            if ns.json:
                _screen.out(json.dumps(_plain(answer)).encode() + b"\n")
                continue
            state = ("unknown" if not answer.known else "running" if answer.running
                     else "queued")
            line = f"{key}\t{state}"
            if answer.known and answer.denominator:
                line += f"\t{answer.numerator}/{answer.denominator}"
            if ns.unique and answer.known:
                line += f"\t{answer.waiting} waiting"
            _screen.out(line.encode() + b"\n")
    return 1 if unknown else 0


def _run_job_status(ns: argparse.Namespace) -> int:
    return _run_async(ns, _job_status)


def _top_args(t: _Parser) -> None:
    _conn_args(t)
    _top.add_arguments(t)


def _run_top(ns: argparse.Namespace) -> int:
    return _top.run(_servers(ns), ns)


# -- the command ----------------------------------------------------------------------


# name: (help, add its arguments, run it).  A subcommand is one line here.
_COMMANDS: dict[str, tuple[str, Callable[[_Parser], None], Callable[[argparse.Namespace], int]]]
_COMMANDS = {
    "server": ("run a job server (flags as gearmand)", _server_args, _run_server),
    "submit": ("submit a job (as `gearman`)", _submit_args, _run_submit),
    "work": ("run a worker (as `gearman -w`)", _work_args, _run_work),
    "admin": ("admin commands (as gearadmin)", _admin_args, _run_admin),
    "job-status": ("ask a job's status by handle or unique id", _job_status_args,
                   _run_job_status),
    "top": ("live view of job servers (as top)", _top_args, _run_top),
    "fuzz": ("fuzz a running job server against our model (docs/fuzzing.md)",
             _fuzz.add_arguments, _fuzz.main),
}


def _parser() -> _Parser:
    p = _Parser(prog="gearman-proto",
                description="Gearman job server, client, worker and admin tool.")
    p.add_argument("--version", action="version", version=f"gearman-proto {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, add_args, run) in _COMMANDS.items():
        # The client commands keep -h for the host, as `gearman` does.
        sp = sub.add_parser(name, help=text, add_help=name == "server",
                            description=text)
        add_args(sp)
        sp.set_defaults(run=run, parser=sp)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gearman-proto`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["admin"]:
        args = ["admin", *_gearadmin_words(args[1:])]
    ns, extra = _parser().parse_known_args(args)
    parser: _Parser = ns.parser
    if extra and ns.command == "admin":  # admin's words after a flag: more commands
        words = [w for w in extra if not w.startswith("-")]
        ns.commands, extra = [*ns.commands, *words], [w for w in extra if w.startswith("-")]
    if extra:
        parser.refuse(f"unrecognized arguments: {' '.join(extra)}")
    if ns.command != "server":
        handler = _ScreenLog(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.basicConfig(level=logging.WARNING, handlers=[handler])
    try:
        return int(ns.run(ns))
    except Fatal as exc:
        _screen.err(f"{parser.prog}: {exc}\n".encode())
        return 1
    except (GearmanError, OSError) as exc:
        # A port in use, a server that cannot be reached, a failed job, ...
        _screen.err(f"gearman-proto: {exc}\n".encode())
        return 1
    except KeyboardInterrupt:
        _screen.clear()
        return 130


if __name__ == "__main__":
    sys.exit(main())
