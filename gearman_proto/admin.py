"""The administrative text protocol, both sides.

gearmand answers text commands on its binary port (PROTOCOL-NOTES §3): a line
whose first byte is not NUL is a command, split on runs of spaces, matched
case-insensitively.  This module turns a command line into a typed
:class:`AdminRequest` (server side, :func:`parse_command`), typed results into
the exact bytes gearmand writes (``format_*``), and those bytes back into
typed results (client side, :class:`AdminClientConnection`).

Each command has its own end-of-reply rule: list replies (``status``,
``prioritystatus``, ``workers``, ``show jobs``, ``show unique jobs``) end with
a ``.`` line; everything else is one line.  An ``ERR CODE text`` line can end
any reply.  gearmand ends list lines and ``OK value`` with ``\\n`` but bare
``OK`` and ``ERR`` with ``\\r\\n``; the parser accepts both everywhere.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from ._connection import NEED_DATA, ConnectionState, NeedData
from .errors import LocalProtocolError, RemoteProtocolError
from .packets import DEFAULT_MAX_LINE_LENGTH

__all__ = [
    "Status",
    "PriorityStatus",
    "Workers",
    "MaxQueue",
    "ShowJobs",
    "ShowUniqueJobs",
    "CancelJob",
    "CreateFunction",
    "DropFunction",
    "GetPid",
    "Version",
    "Verbose",
    "Shutdown",
    "AdminRequest",
    "AdminError",
    "StatusRow",
    "PriorityStatusRow",
    "WorkerRow",
    "JobRow",
    "AdminOk",
    "AdminResult",
    "parse_command",
    "encode_command",
    "format_status",
    "format_priority_status",
    "format_workers",
    "format_jobs",
    "format_unique_jobs",
    "format_ok",
    "format_err",
    "AdminClientConnection",
    "maxqueue_limits",
    "result_value",
]

# -- requests ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """``status``: per function, jobs total / running and available workers."""


@dataclass(frozen=True, slots=True)
class PriorityStatus:
    """``prioritystatus``: per function, waiting jobs per priority and available workers."""


@dataclass(frozen=True, slots=True)
class Workers:
    """``workers``: one line per connection, with its client id and functions."""


@dataclass(frozen=True, slots=True)
class MaxQueue:
    """``maxqueue FUNC [N | H N L]``: cap queued jobs per priority (0 = unlimited).

    ``limits`` is ``(high, normal, low)``; ``None`` resets to the default.
    """

    function: bytes
    limits: tuple[int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class ShowJobs:
    """``show jobs``: every job with its retry count and flags."""


@dataclass(frozen=True, slots=True)
class ShowUniqueJobs:
    """``show unique jobs``: the unique id of every job."""


@dataclass(frozen=True, slots=True)
class CancelJob:
    """``cancel job HANDLE``: fail the job for its clients and drop it."""

    handle: bytes


@dataclass(frozen=True, slots=True)
class CreateFunction:
    """``create function NAME``: make a function known (it then shows in ``status``)."""

    function: bytes


@dataclass(frozen=True, slots=True)
class DropFunction:
    """``drop function NAME``: forget a function with no workers and no running jobs."""

    function: bytes


@dataclass(frozen=True, slots=True)
class GetPid:
    """``getpid``: the server's process id."""


@dataclass(frozen=True, slots=True)
class Version:
    """``version``: the server's version string."""


@dataclass(frozen=True, slots=True)
class Verbose:
    """``verbose``: the server's log level name (read-only)."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """``shutdown [graceful]``: removed from gearmand 1.1.15; our server accepts it only opt-in."""

    graceful: bool = False


AdminRequest = (Status | PriorityStatus | Workers | MaxQueue | ShowJobs | ShowUniqueJobs
                | CancelJob | CreateFunction | DropFunction | GetPid | Version | Verbose
                | Shutdown)
"""Any admin command, parsed."""

_LIST_REPLIES = (Status, PriorityStatus, Workers, ShowJobs, ShowUniqueJobs)

# -- results -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One line of ``status``: ``total`` counts queued plus running jobs."""

    function: bytes
    total: int
    running: int
    available_workers: int


@dataclass(frozen=True, slots=True)
class PriorityStatusRow:
    """One line of ``prioritystatus``: jobs still waiting, per priority."""

    function: bytes
    high: int
    normal: int
    low: int
    available_workers: int


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One line of ``workers``: any connection, clients included, as gearmand lists them."""

    fd: int
    address: bytes
    client_id: bytes
    functions: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class JobRow:
    """One line of ``show jobs``."""

    handle: bytes
    retries: int
    ignore: bool
    queued: bool


@dataclass(frozen=True, slots=True)
class AdminOk:
    """An ``OK`` reply; ``value`` is what followed ``OK`` (the pid, version, level), if anything."""

    value: bytes | None = None


@dataclass(frozen=True, slots=True)
class AdminError(Exception):
    """An ``ERR CODE text`` reply, or the reason a command line was refused.

    gearmand's ``drop function`` errors have no code word; then ``code`` is
    empty and ``text`` holds the whole message.
    """

    code: bytes
    text: bytes = b""

    def __str__(self) -> str:
        return f"{self.code.decode('ascii', 'replace')} {self.text.decode('utf-8', 'replace')}"


AdminResult = (list[StatusRow] | list[PriorityStatusRow] | list[WorkerRow] | list[JobRow]
               | list[bytes] | AdminOk | AdminError)
"""What :class:`AdminClientConnection` returns for one command."""

# -- server side: parsing commands, formatting replies ---------------------------------


def _atoi(word: bytes) -> int:
    # gearmand reads admin numbers with atoi(): leading digits count, anything
    # else is 0 (``maxqueue f x`` answers OK and means "unlimited").
    sign = -1 if word[:1] == b"-" else 1
    digits = word[1:] if word[:1] in b"+-" and word[:1] else word
    n = 0
    for c in digits:
        if not 48 <= c <= 57:
            break
        n = n * 10 + c - 48
    return sign * n


def _incomplete(word: bytes) -> AdminError:
    return AdminError(b"INVALID_ARGUMENTS",
                      b"An+incomplete+set+of+arguments+was+sent+to+this+command+" + word)


_SIMPLE_COMMANDS: dict[bytes, AdminRequest] = {
    b"status": Status(),
    b"prioritystatus": PriorityStatus(),
    b"workers": Workers(),
    b"getpid": GetPid(),
    b"version": Version(),
    b"verbose": Verbose(),
}


def parse_command(line: bytes, *, allow_shutdown: bool = False) -> AdminRequest:
    """Parse one admin line (without its newline) into a request.

    Follows what gearmand 1.1.20 was seen to answer: extra words after a
    simple command are ignored; a leading space makes an empty command word;
    numbers are read like C's ``atoi``.  Raises :class:`AdminError` with
    gearmand's code (``UNKNOWN_COMMAND``, ``INVALID_ARGUMENTS``,
    ``UNKNOWN_SHOW_ARGUMENTS`` or ``UNKNOWN_ERROR``).  ``shutdown`` is unknown
    unless ``allow_shutdown`` is set, as in gearmand 1.1.15 and later.  One
    deliberate difference: ``maxqueue`` with more than three limits is
    ``INVALID_ARGUMENTS`` here; gearmand 1.1.20 closes the connection.
    """
    words = line.split(b" ")
    # gearmand collapses runs of spaces between words, but a leading space
    # yields an empty command word.
    words = words[:1] + [w for w in words[1:] if w]
    first = words[0]
    cmd = first.lower()
    n = len(words)
    simple = _SIMPLE_COMMANDS.get(cmd)
    if simple is not None:
        return simple
    if cmd == b"maxqueue":
        if n == 2:
            return MaxQueue(words[1])
        if n == 3:
            v = max(0, _atoi(words[2]))
            return MaxQueue(words[1], (v, v, v))
        if n in (4, 5):
            # With two numbers the low limit keeps the default, as gearmand does.
            high, normal = (max(0, _atoi(w)) for w in words[2:4])
            low = max(0, _atoi(words[4])) if n == 5 else 0
            return MaxQueue(words[1], (high, normal, low))
        raise _incomplete(first)
    if cmd == b"show" and n > 1:
        rest = [w.lower() for w in words[1:]]
        if rest == [b"jobs"]:
            return ShowJobs()
        if rest == [b"unique", b"jobs"]:
            return ShowUniqueJobs()
        raise AdminError(b"UNKNOWN_SHOW_ARGUMENTS")
    if cmd == b"cancel" and n >= 3:
        # gearmand 1.1.20: only "cancel job HANDLE"; any other cancel of three
        # words or more is ERR UNKNOWN_ERROR (with fewer, an unknown command).
        if n == 3 and words[1].lower() == b"job":
            return CancelJob(words[2])
        raise AdminError(b"UNKNOWN_ERROR")
    if cmd in (b"create", b"drop"):
        # gearmand 1.1.20: anything but "create|drop function NAME" is
        # INVALID_ARGUMENTS, bare "create" and "drop" included.
        if n == 3 and words[1].lower() == b"function":
            return CreateFunction(words[2]) if cmd == b"create" else DropFunction(words[2])
        raise _incomplete(first)
    if cmd == b"shutdown" and allow_shutdown:
        if n == 1:
            return Shutdown()
        if n == 2 and words[1].lower() == b"graceful":
            return Shutdown(graceful=True)
        raise _incomplete(first)
    # gearmand glues the command word straight onto its text: a quirk we keep.
    raise AdminError(b"UNKNOWN_COMMAND", b"Unknown+server+command" + first)


def _arg(value: bytes) -> bytes:
    # The server splits on whitespace, so an argument holding any would be read
    # as several words (or as a second command after a newline).
    if not value or any(c in value for c in b" \t\r\n\0"):
        raise LocalProtocolError(f"admin argument must be one non-empty word, got {value!r}")
    return value


def encode_command(request: AdminRequest) -> bytes:
    """The line a client sends for ``request``, ended with ``\\r\\n`` as gearadmin does."""
    if isinstance(request, MaxQueue):
        line = b"maxqueue " + _arg(request.function)
        if request.limits is not None:
            line += b"".join(b" %d" % v for v in request.limits)
    elif isinstance(request, CancelJob):
        line = b"cancel job " + _arg(request.handle)
    elif isinstance(request, CreateFunction):
        line = b"create function " + _arg(request.function)
    elif isinstance(request, DropFunction):
        line = b"drop function " + _arg(request.function)
    elif isinstance(request, Shutdown):
        line = b"shutdown graceful" if request.graceful else b"shutdown"
    else:
        line = _SIMPLE_LINES[type(request)]
    return line + b"\r\n"


_SIMPLE_LINES: dict[type, bytes] = {
    Status: b"status",
    PriorityStatus: b"prioritystatus",
    Workers: b"workers",
    ShowJobs: b"show jobs",
    ShowUniqueJobs: b"show unique jobs",
    GetPid: b"getpid",
    Version: b"version",
    Verbose: b"verbose",
}


# Peers choose function names, unique ids and client ids, and the protocol
# lets them hold any byte but NUL (and NUL too, as a packet's last argument).
# Written raw into a reply, a newline would end a row early -- a name such as
# "x\n.\n" ends the whole list and leaves the admin client reading the rest as
# the next reply -- and a tab would shift columns.  So every control byte in
# them is written as "?".  gearmand 1.1.20 writes them raw (checked by hand).
_TEXT_SAFE = bytes(0x3F if b < 0x20 or b == 0x7F else b for b in range(256))


def _text(value: bytes) -> bytes:
    return value.translate(_TEXT_SAFE)


def format_status(rows: list[StatusRow]) -> bytes:
    """``status`` reply: ``NAME\\tTOTAL\\tRUNNING\\tWORKERS`` lines, then ``.``."""
    return b"".join(b"%s\t%d\t%d\t%d\n" % (_text(r.function), r.total, r.running,
                                          r.available_workers) for r in rows) + b".\n"


def format_priority_status(rows: list[PriorityStatusRow]) -> bytes:
    """``prioritystatus`` reply: ``NAME\\tHIGH\\tNORMAL\\tLOW\\tWORKERS`` lines, then ``.``."""
    return b"".join(b"%s\t%d\t%d\t%d\t%d\n" % (_text(r.function), r.high, r.normal, r.low,
                                              r.available_workers) for r in rows) + b".\n"


def format_workers(rows: list[WorkerRow]) -> bytes:
    """``workers`` reply: ``FD IP ID :`` then `` FUNC`` per function, then ``.``."""
    return b"".join(
        b"%d %s %s :%s\n" % (r.fd, _text(r.address), _text(r.client_id),
                             b"".join(b" " + _text(f) for f in r.functions))
        for r in rows) + b".\n"


def format_jobs(rows: list[JobRow]) -> bytes:
    """``show jobs`` reply: ``HANDLE\\tRETRIES\\tIGNORE\\tQUEUED`` lines, then ``.``."""
    return b"".join(b"%s\t%d\t%d\t%d\n" % (r.handle, r.retries, r.ignore, r.queued)
                    for r in rows) + b".\n"


def format_unique_jobs(uniques: list[bytes]) -> bytes:
    """``show unique jobs`` reply: one unique id per line, then ``.``."""
    return b"".join(_text(u) + b"\n" for u in uniques) + b".\n"


def format_ok(value: bytes | None = None) -> bytes:
    """``OK\\r\\n``, or ``OK value\\n`` (gearmand's two line endings)."""
    return b"OK\r\n" if value is None else b"OK " + value + b"\n"


def format_err(error: AdminError) -> bytes:
    """``ERR CODE text\\r\\n`` (or the bare text for gearmand's code-less errors)."""
    if not error.code:
        return b"ERR " + error.text + b"\r\n"
    if not error.text:
        return b"ERR " + error.code + b"\r\n"
    return b"ERR " + error.code + b" " + error.text + b"\r\n"


# -- client side ----------------------------------------------------------------------


def _split_fields(line: bytes, sep: bytes | None, n: int, what: str) -> list[bytes]:
    fields = line.split(sep) if sep is not None else line.split()
    if len(fields) != n:
        raise RemoteProtocolError(f"malformed {what} line: {line!r}")
    return fields


def _to_int(value: bytes, line: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        raise RemoteProtocolError(f"non-numeric field {value!r} in admin line {line!r}") from None


def _parse_row(request: AdminRequest, line: bytes) -> object:
    if isinstance(request, Status):
        f = _split_fields(line, b"\t", 4, "status")
        return StatusRow(f[0], _to_int(f[1], line), _to_int(f[2], line), _to_int(f[3], line))
    if isinstance(request, PriorityStatus):
        f = _split_fields(line, b"\t", 5, "prioritystatus")
        return PriorityStatusRow(f[0], *(_to_int(v, line) for v in f[1:]))
    if isinstance(request, ShowJobs):
        f = _split_fields(line, b"\t", 4, "show jobs")
        return JobRow(f[0], _to_int(f[1], line), f[2] != b"0", f[3] != b"0")
    if isinstance(request, Workers):
        # An IPv6 address holds colons too, so split on the first three spaces.
        f = line.split(b" ", 3)
        if len(f) != 4 or not f[3].startswith(b":"):
            raise RemoteProtocolError(f"malformed workers line: {line!r}")
        return WorkerRow(_to_int(f[0], line), f[1], f[2], tuple(f[3][1:].split()))
    return line  # show unique jobs


def _parse_err(line: bytes) -> AdminError:
    body = line[4:]
    code, _, text = body.partition(b" ")
    if code and code.replace(b"_", b"").isalpha() and code.upper() == code:
        return AdminError(code, text)
    return AdminError(b"", body)


class AdminClientConnection:
    """The client side of the admin protocol: commands out, typed results in.

    ``send(request)`` returns the bytes to write and remembers the command, so
    that replies, which carry no tag, are matched to commands in order.
    ``next_event()`` returns one :data:`AdminResult` per command, or
    :data:`NEED_DATA`.
    """

    def __init__(self, *, max_line_length: int = DEFAULT_MAX_LINE_LENGTH) -> None:
        self._buf = bytearray()
        self._pending: deque[AdminRequest] = deque()
        self._rows: list[object] = []
        self._closed = False
        self.max_line_length = max_line_length
        self.state = ConnectionState.OPEN

    @property
    def outstanding(self) -> int:
        """Commands sent whose reply has not been returned yet."""
        return len(self._pending)

    def send(self, request: AdminRequest) -> bytes:
        """Return the bytes for ``request`` and expect its reply."""
        if self.state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"admin connection is {self.state.value}")
        data = encode_command(request)
        self._pending.append(request)
        return data

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the server; ``b""`` means it closed."""
        if data:
            self._buf += data
        else:
            self._closed = True

    def _line(self) -> bytes | None:
        nl = self._buf.find(b"\n")
        if nl < 0:
            if self.max_line_length and len(self._buf) > self.max_line_length:
                self.state = ConnectionState.ERROR
                raise RemoteProtocolError(
                    f"admin reply line longer than {self.max_line_length} bytes")
            return None
        end = nl - 1 if nl and self._buf[nl - 1] == 13 else nl
        line = bytes(self._buf[:end])
        del self._buf[:nl + 1]
        return line

    def next_event(self) -> AdminResult | NeedData:
        """Return the next complete reply, or :data:`NEED_DATA`."""
        if self.state is ConnectionState.ERROR:
            raise RemoteProtocolError("admin connection is in the error state")
        while True:
            line = self._line()
            if line is None:
                if self._closed and (self._pending or self._buf):
                    self.state = ConnectionState.ERROR
                    raise RemoteProtocolError(
                        "server closed the connection before the admin reply was complete")
                return NEED_DATA
            if not self._pending:
                self.state = ConnectionState.ERROR
                raise RemoteProtocolError(f"admin reply with no command outstanding: {line!r}")
            request = self._pending[0]
            if line.startswith(b"ERR ") or line == b"ERR":
                self._pending.popleft()
                self._rows = []
                return _parse_err(line)
            if isinstance(request, _LIST_REPLIES):
                if line == b".":
                    self._pending.popleft()
                    rows, self._rows = self._rows, []
                    return rows  # type: ignore[return-value]
                try:
                    self._rows.append(_parse_row(request, line))
                except RemoteProtocolError:
                    self.state = ConnectionState.ERROR
                    raise
                continue
            self._pending.popleft()
            if line == b"OK":
                return AdminOk()
            if line.startswith(b"OK "):
                return AdminOk(line[3:])
            # Perl's Gearman::Server answers `version` with the bare version.
            if isinstance(request, Version):
                return AdminOk(line)
            self.state = ConnectionState.ERROR
            raise RemoteProtocolError(f"unexpected admin reply {line!r} to {request!r}")

    def events(self) -> Iterator[AdminResult]:
        """Yield every reply the buffered bytes complete."""
        while True:
            result = self.next_event()
            if isinstance(result, NeedData):
                return
            yield result




# -- what a reply gives the caller ------------------------------------------------------


def maxqueue_limits(limits: tuple[int, ...]) -> tuple[int, int, int] | None:
    """``maxqueue``'s limits as an admin client takes them: none (reset to the default),
    one for every priority, or three (high, normal, low)."""
    if not limits:
        return None
    if len(limits) == 1:
        return (int(limits[0]),) * 3
    if len(limits) == 3:
        return (int(limits[0]), int(limits[1]), int(limits[2]))
    raise ValueError("maxqueue takes no limit, one limit, or three (high, normal, low)")


def result_value(request: AdminRequest, result: AdminResult) -> object:
    """What an admin client's typed method returns for ``request``'s reply.

    Listings give their rows; ``getpid`` an int; ``version`` and ``verbose`` a
    str; the commands that only answer ``OK`` give ``None``.  An ``ERR`` reply
    is raised as the :class:`AdminError` it is.
    """
    if isinstance(result, AdminError):
        raise result
    if isinstance(request, _LIST_REPLIES):
        return result
    if not isinstance(result, AdminOk):
        raise RemoteProtocolError(f"unexpected admin reply {result!r} to {request!r}")
    value = result.value or b""
    if isinstance(request, GetPid):
        try:
            return int(value or b"0")
        except ValueError:
            raise RemoteProtocolError(f"getpid answered {value!r}, not a number") from None
    if isinstance(request, (Version, Verbose)):
        return value.decode("utf-8", "replace")
    return None
