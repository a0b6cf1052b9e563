"""Bad input against the RUNNING server: each case gets its documented answer, nobody else notices.

gearmand 1.1.20 can be killed by one malformed 12-byte header (an out-of-range
packet type); ours answers every case below as the README's Reliability section says --
an ERROR packet with gearmand's code (then a close, when the stream can no
longer be trusted), an ``ERR`` line, or a close -- while a foreground job runs
on other connections of the same server from the first case to the last,
streaming WORK_DATA the whole time, and a fresh connection still gets an echo
after every case.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from _support import Address, Raw, ServerProcess, packet

from gearman_proto import admin
from gearman_proto.events import AdminCommand, CanDo, SetClientId, SubmitJob
from gearman_proto.hub import ServerHub
from gearman_proto.packets import REQ, RES, Packet, PacketType, TextLine

T = PacketType


def header(magic: bytes, ptype: int, size: int) -> bytes:
    return struct.pack(">4sII", magic, ptype, size)


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    answer: str
    """``ERROR CODE`` (an ERROR packet), ``ERR PREFIX`` (a text line), or ``-`` (none)."""
    closes: bool
    """Whether the server then closes the connection."""
    half_close: bool = False
    """Shut down our sending side after the bytes (a truncated message, then EOF)."""


_OTHER = b"H:elsewhere:1"  # a handle this connection does not hold
CASES = [
    # -- framing: the stream can't be trusted any more -> ERROR, then close
    Case("bad magic", header(b"\0REX", T.ECHO_REQ, 0), "ERROR INVALID_MAGIC", True),
    Case("text-like magic", b"\0XYZ" + bytes(8), "ERROR INVALID_MAGIC", True),
    Case("RES magic sent to the server", header(RES, T.ECHO_REQ, 1) + b"x",
         "ERROR INVALID_MAGIC", True),
    Case("unknown type 43", header(REQ, 43, 0), "ERROR INVALID_COMMAND", True),
    Case("type 0", header(REQ, 0, 0), "ERROR INVALID_COMMAND", True),
    Case("unused type 5", header(REQ, 5, 0), "ERROR INVALID_COMMAND", True),
    Case("type 2**32-1", header(REQ, 2**32 - 1, 0), "ERROR INVALID_COMMAND", True),
    Case("oversized size field (4 GiB)", header(REQ, T.SUBMIT_JOB, 2**32 - 1),
         "ERROR ARGUMENT_TOO_LARGE", True),
    Case("size over --max-packet", header(REQ, T.ECHO_REQ, 1024 * 1024 + 1),
         "ERROR ARGUMENT_TOO_LARGE", True),
    Case("truncated header, then EOF", header(REQ, T.ECHO_REQ, 4)[:6],
         "ERROR UNKNOWN_ERROR", True, True),
    Case("truncated payload, then EOF", header(REQ, T.ECHO_REQ, 100) + b"x" * 10,
         "ERROR UNKNOWN_ERROR", True, True),
    Case("truncated admin line, then EOF", b"stat", "ERR UNKNOWN_ERROR", True, True),
    Case("too few arguments", header(REQ, T.SUBMIT_JOB, 3) + b"f\0u",
         "ERROR INVALID_ARGUMENTS", True),
    Case("arguments to an argument-less packet", header(REQ, T.GRAB_JOB, 3) + b"abc",
         "ERROR INVALID_ARGUMENTS", True),
    Case("NUL in a CAN_DO function name", packet(T.CAN_DO, b"fu\0nc"),
         "ERROR INVALID_ARGUMENTS", True),
    Case("NUL in a CANT_DO function name", packet(T.CANT_DO, b"fu\0nc"),
         "ERROR INVALID_ARGUMENTS", True),
    Case("NUL in a GET_STATUS handle (echoed first)", packet(T.GET_STATUS, b"H:\0x"),
         "ERROR INVALID_ARGUMENTS", True),
    Case("NUL in a GET_STATUS_UNIQUE unique (echoed first)",
         packet(T.GET_STATUS_UNIQUE, b"a\0b"), "ERROR INVALID_ARGUMENTS", True),
    Case("non-numeric WORK_STATUS", packet(T.WORK_STATUS, _OTHER, b"1a", b"2"),
         "ERROR INVALID_ARGUMENTS", True),
    Case("negative WORK_STATUS", packet(T.WORK_STATUS, _OTHER, b"-1", b"2"),
         "ERROR INVALID_ARGUMENTS", True),
    Case("21-digit WORK_STATUS", packet(T.WORK_STATUS, _OTHER, b"9" * 21, b"2"),
         "ERROR INVALID_ARGUMENTS", True),
    # (A short non-decimal timeout is read as gearmand reads it:
    # tests/interop/test_leniencies.py.)
    Case("21-byte CAN_DO_TIMEOUT timeout", packet(T.CAN_DO_TIMEOUT, b"f", b"9" * 21),
         "ERROR INVALID_ARGUMENTS", True),
    # (No "NUL in a CAN_DO_TIMEOUT name": the first NUL ends the name, and the rest is
    # a bent timeout, read as gearmand reads it.)
    Case("NOOP sent to the server", packet(T.NOOP), "ERROR INVALID_COMMAND", True),
    Case("JOB_CREATED sent to the server", packet(T.JOB_CREATED, b"H:x:1"),
         "ERROR INVALID_COMMAND", True),
    Case("a 1 MB line without a newline", b"x" * (1 << 20), "ERR ARGUMENT_TOO_LARGE", True),
    # -- a well-formed request the server refuses -> ERROR, connection stays open
    Case("unique of 65 bytes", packet(T.SUBMIT_JOB, b"f", b"u" * 65, b"d"),
         "ERROR ARGUMENT_TOO_LARGE", False),
    Case("reducer of 65 bytes", packet(T.SUBMIT_REDUCE_JOB, b"f", b"u", b"r" * 65, b"", b"d"),
         "ERROR ARGUMENT_TOO_LARGE", False),
    Case("WORK_COMPLETE for another worker's job", packet(T.WORK_COMPLETE, _OTHER, b"r"),
         "ERROR JOB_NOT_FOUND", False),
    Case("WORK_FAIL for another worker's job", packet(T.WORK_FAIL, _OTHER),
         "ERROR JOB_NOT_FOUND", False),
    Case("WORK_EXCEPTION for another worker's job", packet(T.WORK_EXCEPTION, _OTHER, b"e"),
         "ERROR JOB_NOT_FOUND", False),
    Case("WORK_DATA for another worker's job", packet(T.WORK_DATA, _OTHER, b"d"),
         "ERROR JOB_NOT_FOUND", False),
    Case("WORK_WARNING for another worker's job", packet(T.WORK_WARNING, _OTHER, b"w"),
         "ERROR JOB_NOT_FOUND", False),
    Case("WORK_STATUS for another worker's job", packet(T.WORK_STATUS, _OTHER, b"1", b"2"),
         "ERROR JOB_NOT_FOUND", False),
    Case("over-long handle (100 kB) in WORK_COMPLETE",
         packet(T.WORK_COMPLETE, b"H" * 100_000, b"r"), "ERROR JOB_NOT_FOUND", False),
    Case("SUBMIT_JOB_SCHED (never supported)",
         packet(T.SUBMIT_JOB_SCHED, b"f", b"u", b"1", b"2", b"3", b"4", b"5", b"d"),
         "ERROR INVALID_COMMAND", False),
    Case("ALL_YOURS", packet(T.ALL_YOURS), "ERROR INVALID_COMMAND", False),
    Case("unknown OPTION_REQ", packet(T.OPTION_REQ, b"frobnicate"),
         "ERROR UNKNOWN_OPTION", False),
    # -- admin garbage -> an ERR line, connection stays open
    Case("admin garbage", b"frobnicate the server\r\n", "ERR UNKNOWN_COMMAND", False),
    Case("admin binary garbage", b"\xff\xfe\x01\x02\r\n", "ERR UNKNOWN_COMMAND", False),
    Case("admin bad show", b"show me everything\r\n", "ERR UNKNOWN_SHOW_ARGUMENTS", False),
    Case("admin maxqueue without a function", b"maxqueue\r\n", "ERR INVALID_ARGUMENTS", False),
    Case("admin cancel job of a stranger", b"cancel job H:nope:1\r\n", "ERR UNKNOWN_JOB", False),
    Case("admin shutdown (not allowed)", b"shutdown\r\n", "ERR UNKNOWN_COMMAND", False),
]


def answer_of(item: Packet | TextLine | None) -> str:
    if item is None:
        return "-"
    if isinstance(item, TextLine):
        return item.line.decode("latin-1")
    if item.type == T.ERROR:
        return "ERROR " + item.args[0].decode("latin-1")
    return f"{T(item.type).name} {item.args!r}"


def send_and_read(address: Address, case: Case) -> tuple[str, bool]:
    """Send the case's bytes; return the first answer and whether the server then closed."""
    raw = Raw(address)
    try:
        if len(case.data) > 65536:
            # The server stops reading at its limit and closes: send from a
            # thread, so its answer is read as it comes.
            threading.Thread(target=_send_quietly, args=(raw.sock, case.data),
                             daemon=True).start()
        else:
            raw.send(case.data)
        if case.half_close:
            raw.sock.shutdown(socket.SHUT_WR)
        first = raw.read(timeout=10)
        got = answer_of(first)
        if first is None or case.half_close:
            return got, raw.read(timeout=10) is None
        # Still open?  The server answers in order: an echo now comes back,
        # unless the connection is closing.
        try:
            raw.send(packet(T.ECHO_REQ, b"still there?"))
        except OSError:
            return got, True
        after = raw.read(timeout=10)
        if after is None:
            return got, True
        assert after == Packet(RES, T.ECHO_RES, (b"still there?",)), f"{case.name}: {after}"
        return got, False
    finally:
        raw.close()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server closed on us, as it should


@contextmanager
def job_running_beside(address: Address) -> Iterator[list[bytes]]:
    """A foreground job whose worker sends WORK_DATA every 20 ms until the block ends.

    Yields the list of chunks the client received so far; on exit the job
    completes and every chunk must have arrived, in order, then WORK_COMPLETE.
    """
    worker, client = Raw(address), Raw(address)
    worker.send(packet(T.CAN_DO, b"beside"))
    client.send(packet(T.SUBMIT_JOB, b"beside", b"", b"payload"))
    created = client.read()
    assert isinstance(created, Packet) and created.type == T.JOB_CREATED, created
    handle = created.args[0]
    worker.send(packet(T.GRAB_JOB))
    assert worker.read() == Packet(RES, T.JOB_ASSIGN, (handle, b"beside", b"payload"))
    received: list[bytes] = []
    sent: list[bytes] = []
    stop = threading.Event()
    errors: list[str] = []

    def stream() -> None:
        n = 0
        while not stop.wait(0.02):
            chunk = b"%d" % n
            worker.send(packet(T.WORK_DATA, handle, chunk))
            sent.append(chunk)
            n += 1
            ready, _, _ = select.select([client.sock], [], [], 0)
            while ready:
                item = client.read(timeout=5)
                if item is None or item[:2] != (RES, T.WORK_DATA) or item.args[0] != handle:
                    errors.append(f"client got {item!r}")
                    return
                received.append(item.args[1])
                ready, _, _ = select.select([client.sock], [], [], 0)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        stop.set()
        thread.join(10)
    worker.send(packet(T.WORK_COMPLETE, handle, b"done"))
    while len(received) < len(sent):
        item = client.read(timeout=10)
        assert item is not None and item.type == T.WORK_DATA, item
        received.append(item.args[1])
    assert client.read(timeout=10) == Packet(RES, T.WORK_COMPLETE, (handle, b"done"))
    assert not errors, errors
    assert received == sent
    worker.close()
    client.close()


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@pytest.mark.feature("reliability.bad-input")
def test_bad_input_matrix_against_the_running_server(
        our_server_factory: Callable[..., ServerProcess], loop: str) -> None:
    server = our_server_factory(loop=loop, extra=("--max-packet", str(1024 * 1024)))
    wrong = []
    with job_running_beside(server.address) as streamed:
        for case in CASES:
            before = len(streamed)
            got, closed = send_and_read(server.address, case)
            expected = case.answer
            if not (got.startswith(expected) if expected != "-" else got == "-") or \
                    closed != case.closes:
                wrong.append(f"{case.name}: got {got!r} (closed={closed}), "
                             f"expected {expected!r} (closed={case.closes})")
            fresh = Raw(server.address)
            assert fresh.echo_works(), f"server unusable after {case.name}"
            fresh.close()
            deadline = time.monotonic() + 5
            while len(streamed) == before:  # the job beside kept flowing
                assert time.monotonic() < deadline, f"the job beside stalled at {case.name}"
                time.sleep(0.01)
        assert streamed
    assert not wrong, "\n".join(wrong)
    print(f"FIGURES bad_input_cases={len(CASES)} loop={loop} beside_chunks={len(streamed)}")


# -- what a hostile name could do to the admin replies ------------------------------------------


def test_control_bytes_in_names_cannot_forge_admin_reply_lines() -> None:
    """A newline in a function name, unique or client id would end a row -- or,
    with ``\\n.\\n``, the whole reply -- early; the admin replies write control
    bytes as ``?`` (gearmand 1.1.20 writes them raw)."""
    hub = ServerHub()
    worker, client, watcher = hub.open(b"127.0.0.1"), hub.open(b"127.0.0.1"), hub.open()
    evil = b"evil\n.\nstatus\t1"
    hub.broker.receive(worker, CanDo(evil))
    hub.broker.receive(worker, SetClientId(b"id\r\n.\n"))
    hub.broker.receive(client, SubmitJob(b"tab\tbed", b"data", b"u\n.\n", background=True))
    for line, request in ((b"status", admin.Status()), (b"workers", admin.Workers()),
                          (b"show unique jobs", admin.ShowUniqueJobs()),
                          (b"prioritystatus", admin.PriorityStatus())):
        ((_, reply),) = hub.broker.receive(watcher, AdminCommand(line))
        text = reply.text  # type: ignore[attr-defined]
        assert text.count(b"\n.\n") + text.startswith(b".\n") == 1, text
        parser = admin.AdminClientConnection()
        parser.send(request)
        parser.receive_data(text)
        rows = parser.next_event()
        assert isinstance(rows, list) and rows, text
    assert hub.broker.status_rows()[0].function == evil  # kept as sent, only written safely
