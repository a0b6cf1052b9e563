"""The admin text protocol (PROTOCOL-NOTES §3): command parsing, gearmand's reply bytes, and
the client-side parser that turns those bytes back into typed results."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gearman_proto import NEED_DATA, ConnectionState, LocalProtocolError, RemoteProtocolError
from gearman_proto.admin import (
    AdminClientConnection,
    AdminError,
    AdminOk,
    CancelJob,
    CreateFunction,
    DropFunction,
    GetPid,
    JobRow,
    MaxQueue,
    PriorityStatus,
    PriorityStatusRow,
    ShowJobs,
    ShowUniqueJobs,
    Shutdown,
    Status,
    StatusRow,
    Verbose,
    Version,
    WorkerRow,
    Workers,
    encode_command,
    format_err,
    format_jobs,
    format_ok,
    format_priority_status,
    format_status,
    format_unique_jobs,
    format_workers,
    parse_command,
)


# §3.1: words split on runs of spaces, matched case-insensitively.
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"status", Status()),
        (b"STATUS", Status()),
        (b"prioritystatus", PriorityStatus()),
        (b"workers", Workers()),
        (b"workers  ", Workers()),
        # gearmand ignores words after a command that takes none.
        (b"status extra", Status()),
        (b"SHOW JOBS", ShowJobs()),
        (b"show jobs", ShowJobs()),
        (b"show   unique  jobs", ShowUniqueJobs()),
        (b"cancel job H:x:1", CancelJob(b"H:x:1")),
        (b"create function reverse", CreateFunction(b"reverse")),
        (b"drop function reverse", DropFunction(b"reverse")),
        (b"getpid", GetPid()),
        (b"version", Version()),
        (b"verbose", Verbose()),
    ],
)
def test_parse_command(line: bytes, expected: object) -> None:
    assert parse_command(line) == expected


# §3.2: maxqueue in its 1-, 2- and 4-argument forms; two numbers leave LOW at the default,
# negative numbers mean unlimited (0).
@pytest.mark.parametrize(
    ("line", "limits"),
    [
        (b"maxqueue f", None),
        (b"maxqueue f 10", (10, 10, 10)),
        (b"maxqueue f 1 2 3", (1, 2, 3)),
        (b"maxqueue f 1 2", (1, 2, 0)),
        (b"maxqueue f -5", (0, 0, 0)),
        # gearmand reads numbers with atoi(): junk is 0, leading digits count.
        (b"maxqueue f x", (0, 0, 0)),
        (b"maxqueue f 12abc", (12, 12, 12)),
    ],
)
def test_parse_maxqueue_forms(line: bytes, limits: tuple[int, int, int] | None) -> None:
    assert parse_command(line) == MaxQueue(b"f", limits)


# §3.2, checked against gearmand 1.1.20 by hand: these are the exact bytes it answers.
@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"bogus", b"ERR UNKNOWN_COMMAND Unknown+server+commandbogus\r\n"),
        (b"", b"ERR UNKNOWN_COMMAND Unknown+server+command\r\n"),
        (b"  status", b"ERR UNKNOWN_COMMAND Unknown+server+command\r\n"),
        (b"show", b"ERR UNKNOWN_COMMAND Unknown+server+commandshow\r\n"),
        (b"cancel job", b"ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n"),
        (b"maxqueue", b"ERR INVALID_ARGUMENTS "
         b"An+incomplete+set+of+arguments+was+sent+to+this+command+maxqueue\r\n"),
        (b"show everything", b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"),
        (b"show unique", b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n"),
        (b"create function", b"ERR INVALID_ARGUMENTS "
         b"An+incomplete+set+of+arguments+was+sent+to+this+command+create\r\n"),
        (b"drop function", b"ERR INVALID_ARGUMENTS "
         b"An+incomplete+set+of+arguments+was+sent+to+this+command+drop\r\n"),
        # Any create/drop but "create|drop function NAME" (tests/interop shows it).
        (b"create", b"ERR INVALID_ARGUMENTS "
         b"An+incomplete+set+of+arguments+was+sent+to+this+command+create\r\n"),
        (b"drop fn x", b"ERR INVALID_ARGUMENTS "
         b"An+incomplete+set+of+arguments+was+sent+to+this+command+drop\r\n"),
        (b"create function a b", b"ERR INVALID_ARGUMENTS "
         b"An+incomplete+set+of+arguments+was+sent+to+this+command+create\r\n"),
        # Any cancel of three words or more but "cancel job HANDLE".
        (b"cancel job a b", b"ERR UNKNOWN_ERROR\r\n"),
        (b"cancel jobs x", b"ERR UNKNOWN_ERROR\r\n"),
        # §3.3: shutdown was removed in gearmand 1.1.15; it is unknown unless enabled.
        (b"shutdown", b"ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"),
    ],
)
def test_bad_commands_get_gearmands_err_lines(line: bytes, reply: bytes) -> None:
    with pytest.raises(AdminError) as info:
        parse_command(line)
    assert format_err(info.value) == reply


def test_shutdown_is_opt_in() -> None:
    assert parse_command(b"shutdown", allow_shutdown=True) == Shutdown()
    assert parse_command(b"shutdown graceful", allow_shutdown=True) == Shutdown(graceful=True)


def test_reply_formats_match_gearmand() -> None:
    assert format_status([StatusRow(b"reverse", 3, 1, 2)]) == b"reverse\t3\t1\t2\n.\n"
    assert format_priority_status([PriorityStatusRow(b"f", 1, 2, 3, 0)]) == b"f\t1\t2\t3\t0\n.\n"
    assert format_workers([WorkerRow(7, b"127.0.0.1", b"-", (b"a", b"b")),
                           WorkerRow(8, b"127.0.0.1", b"me", ())]) == (
        b"7 127.0.0.1 - : a b\n8 127.0.0.1 me :\n.\n")
    assert format_jobs([JobRow(b"H:h:1", 0, False, True)]) == b"H:h:1\t0\t0\t1\n.\n"
    assert format_unique_jobs([b"u1", b"u2"]) == b"u1\nu2\n.\n"
    assert format_ok() == b"OK\r\n"
    assert format_ok(b"1.1.20") == b"OK 1.1.20\n"


def test_encode_command_is_what_gearadmin_sends() -> None:
    assert encode_command(Status()) == b"status\r\n"
    assert encode_command(ShowUniqueJobs()) == b"show unique jobs\r\n"
    assert encode_command(MaxQueue(b"f", (1, 2, 3))) == b"maxqueue f 1 2 3\r\n"
    assert encode_command(CancelJob(b"H:x:1")) == b"cancel job H:x:1\r\n"
    with pytest.raises(LocalProtocolError):
        encode_command(CancelJob(b"a b"))
    with pytest.raises(LocalProtocolError):
        encode_command(CreateFunction(b"x\r\nstatus"))


def _replies_for(requests: list[object], data: bytes, chunk: int | None = None) -> list[object]:
    conn = AdminClientConnection()
    for r in requests:
        conn.send(r)  # type: ignore[arg-type]
    results: list[object] = []
    pieces = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        conn.receive_data(piece)
        results.extend(conn.events())
    return results


SESSION = (
    b"reverse\t2\t1\t1\n.\n"                       # status
    b"f\t0\t1\t0\t3\n.\n"                          # prioritystatus
    b"33 127.0.0.1 - : reverse\n34 ::1 w1 :\n.\n"  # workers
    b"H:h:1\t0\t0\t1\n.\n"                         # show jobs
    b"u1\n.\n"                                     # show unique jobs
    b"OK\r\n"                                      # maxqueue
    b"OK 4242\n"                                   # getpid
    b"OK 1.1.20\n"                                 # version
    b"OK ERROR\n"                                  # verbose
    b"ERR UNKNOWN_JOB\r\n"                         # cancel job
    b"ERR function not found\r\n"                  # drop function
)
SESSION_REQUESTS = [Status(), PriorityStatus(), Workers(), ShowJobs(), ShowUniqueJobs(),
                    MaxQueue(b"f", (1, 1, 1)), GetPid(), Version(), Verbose(),
                    CancelJob(b"H:nope:1"), DropFunction(b"nope")]
SESSION_RESULTS = [
    [StatusRow(b"reverse", 2, 1, 1)],
    [PriorityStatusRow(b"f", 0, 1, 0, 3)],
    [WorkerRow(33, b"127.0.0.1", b"-", (b"reverse",)), WorkerRow(34, b"::1", b"w1", ())],
    [JobRow(b"H:h:1", 0, False, True)],
    [b"u1"],
    AdminOk(),
    AdminOk(b"4242"),
    AdminOk(b"1.1.20"),
    AdminOk(b"ERROR"),
    AdminError(b"UNKNOWN_JOB", b""),
    AdminError(b"", b"function not found"),
]


def test_client_parses_every_reply_kind_in_order() -> None:
    assert _replies_for(SESSION_REQUESTS, SESSION) == SESSION_RESULTS


@given(st.integers(min_value=1, max_value=40))
def test_client_parser_is_split_independent(chunk: int) -> None:
    assert _replies_for(SESSION_REQUESTS, SESSION, chunk) == SESSION_RESULTS


def test_lf_and_crlf_both_accepted() -> None:
    crlf = SESSION.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert _replies_for(SESSION_REQUESTS, crlf) == SESSION_RESULTS


def test_empty_list_reply() -> None:
    assert _replies_for([Status()], b".\n") == [[]]


def test_reply_without_a_command_is_a_remote_error() -> None:
    conn = AdminClientConnection()
    conn.receive_data(b"OK\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is ConnectionState.ERROR


def test_malformed_rows_are_remote_errors() -> None:
    conn = AdminClientConnection()
    conn.send(Status())
    conn.receive_data(b"reverse\tx\t0\t0\n.\n")
    with pytest.raises(RemoteProtocolError, match="non-numeric"):
        conn.next_event()


def test_close_mid_reply_is_a_remote_error() -> None:
    conn = AdminClientConnection()
    conn.send(Status())
    conn.receive_data(b"reverse\t1\t0\t0\n")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed"):
        conn.next_event()


def test_overlong_reply_line_is_refused() -> None:
    conn = AdminClientConnection(max_line_length=100)
    conn.send(ShowUniqueJobs())
    conn.receive_data(b"x" * 101)
    with pytest.raises(RemoteProtocolError, match="longer than 100"):
        conn.next_event()


def test_perl_server_bare_version_is_accepted() -> None:
    # §3.4: Perl's Gearman::Server answers `version` without OK.
    assert _replies_for([Version()], b"2.004\n") == [AdminOk(b"2.004")]


def test_format_then_parse_round_trip() -> None:
    rows = [StatusRow(b"a", 5, 2, 1), StatusRow(b"b", 0, 0, 0)]
    assert _replies_for([Status()], format_status(rows)) == [rows]
    workers = [WorkerRow(1, b"127.0.0.1", b"-", (b"x", b"y"))]
    assert _replies_for([Workers()], format_workers(workers)) == [workers]
