"""``submit`` on a terminal: the WORK_STATUS bar and Ctrl-C, as the user's screen shows them.

The command runs on a pseudo-terminal of its own (its controlling terminal, so
Ctrl-C typed at it is a real SIGINT from the line discipline), and what it wrote
is rendered by a VT100 emulator (pyte) into the lines the user would read.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from clitools import BOUND, Factory, at, name, terminal, working

if TYPE_CHECKING:
    from conftest import ServerProcess

pytest.importorskip("pyte")


def bar(num: int, den: int) -> str:
    done = 30 * num // den
    return f"[{'#' * done}{'.' * (30 - done)}] {num}/{den}"


def test_the_progress_bar_has_its_own_line(our_server: ServerProcess) -> None:
    f = name("progress")
    steps = [threading.Event() for _ in range(3)]

    def job_with_progress(job: Any) -> bytes:
        job.send_status(2, 4)
        steps[0].wait(BOUND)
        job.send_data(b"halfway\n")
        job.send_warning(b"careful\n")
        job.send_status(3, 4)
        steps[1].wait(BOUND)
        job.send_data(b"no newline")
        job.send_status(4, 4)
        steps[2].wait(BOUND)
        return b"done\n"
    with working(our_server.address, f, job_with_progress), \
            terminal("submit", *at(our_server), "-f", f, "x") as term:
        term.read(until=b"2/4")
        assert term.screen() == [bar(2, 4)]
        steps[0].set()
        term.read(until=b"3/4")
        # WORK_DATA and WORK_WARNING each on a line of their own, the bar below them.
        assert term.screen() == ["halfway", "careful", bar(3, 4)]
        steps[1].set()
        term.read(until=b"4/4")
        # Output that ends mid-line keeps its line; the bar goes on the next.
        assert term.screen() == ["halfway", "careful", "no newline", bar(4, 4)]
        steps[2].set()
        assert term.wait() == 0
        # The bar is gone at the end: only what the job said is left.
        assert term.screen() == ["halfway", "careful", "no newline", "done"]


def test_a_lost_server_is_said_on_a_clean_line(our_server_factory: Factory) -> None:
    server = our_server_factory()
    f = name("lost")
    hold = threading.Event()

    def half_then_hold(job: Any) -> bytes:
        job.send_status(1, 2)
        hold.wait(BOUND)
        return b"never seen"
    with working(server.address, f, half_then_hold), \
            terminal("submit", *at(server), "-f", f, "x") as term:
        term.read(until=b"1/2")
        server.stop(kill=True)
        code = term.wait()
        hold.set()
    screen = term.screen()
    assert code == 1
    said = [line for line in screen if "gearman-proto: " in line]
    assert said and said[0].startswith("gearman-proto: "), screen  # at a line's start
    assert not any("1/2" in line for line in screen), screen  # the bar was erased first


def wait_reading_stdin(pid: int) -> None:
    """Until the process sits in read(2) on its standard input (fd 0)."""
    read = {"x86_64": "0", "aarch64": "63"}.get(os.uname().machine)
    if read is None:
        pytest.skip("read(2)'s number unknown on this machine")
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            fields = []
        if fields[:2] == [read, "0x0"]:
            return
        time.sleep(0.05)
    pytest.fail("the command never read its standard input")


def test_one_ctrl_c_ends_submit_waiting_on_standard_input(our_server: ServerProcess) -> None:
    with terminal("submit", *at(our_server), "-f", name("typed")) as term:
        wait_reading_stdin(term.proc.pid)
        term.type(b"\x03")  # Ctrl-C, once
        assert term.wait() == 130
    assert "Traceback" not in "\n".join(term.screen())


def test_one_ctrl_c_ends_submit_waiting_for_a_result(our_server: ServerProcess) -> None:
    f = name("slow")
    taken, release = threading.Event(), threading.Event()

    def slow(job: Any) -> bytes:
        taken.set()
        release.wait(BOUND)
        return b""
    with working(our_server.address, f, slow), \
            terminal("submit", *at(our_server), "-f", f, "x") as term:
        assert taken.wait(BOUND)
        term.type(b"\x03")
        assert term.wait() == 130
        release.set()
    assert "Traceback" not in "\n".join(term.screen())
