"""``gearman-proto top`` against our server and against gearmand (admin protocol only).

``--once`` and ``--json`` run as scripts would run them; the live view runs in
a real pseudo-terminal: a tmux server of our own (its own socket), read with
``capture-pane`` and driven with ``send-keys``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _observability import BOUND, free_port, wait_until
from gearman_proto.adapters.sync import Client, Worker

pytestmark = pytest.mark.interop


def top_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gearman_proto.adapters.cli", "top", *args]


@pytest.fixture(params=["ours", "gearmand"])
def target(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh job server with jobs queued on two functions and one idle worker."""
    if request.param == "ours":
        server = request.getfixturevalue("our_server_factory")()
    else:
        server = request.getfixturevalue("gearmand_factory")()
    with Client([server.address]) as client:
        for i in range(2):
            client.submit("queue-a", b"%d" % i, background=True)
        client.submit("queue-b", b"x", background=True)
    worker = Worker([server.address])
    worker.register("idle-fn", lambda job: b"")
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        worker.stop(graceful=False)
        thread.join(BOUND)


def rows(lines: list[str]) -> dict[str, list[str]]:
    """The function table of a frame: name -> [queued, running, workers, growth]."""
    start = next(i for i, line in enumerate(lines) if line.startswith("FUNCTION"))
    return {line.split()[0]: line.split()[1:] for line in lines[start + 1:] if line.strip()}


def run_top(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(top_command(*args), capture_output=True, text=True, timeout=BOUND)


def test_once_prints_one_plain_frame(target: Any) -> None:
    wait_until(lambda: rows(run_top("-h", f"{target.host}:{target.port}", "--once")
                            .stdout.splitlines()).get("idle-fn", ["", "", "0"])[2] == "1",
               "the worker to register")
    proc = run_top("-h", f"{target.host}:{target.port}", "--once")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith(f"{target.host}:{target.port}") and " up " in line
               for line in lines)
    table = rows(lines)
    assert table["queue-a"][:3] == ["2", "0", "0"]
    assert table["queue-b"][:3] == ["1", "0", "0"]
    assert table["idle-fn"][:3] == ["0", "0", "1"]
    assert list(table)[:2] == ["queue-a", "queue-b"]  # sorted by queued jobs


def test_json_is_one_document(target: Any) -> None:
    proc = run_top("-h", f"{target.host}:{target.port}", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    (server,) = doc["servers"]
    assert server["up"] is True and server["version"]
    assert server["jobs"] == 3  # `show jobs`, which both servers have
    functions = {f["name"]: f for f in server["functions"]}
    assert functions["queue-a"]["queued"] == 2 and functions["queue-a"]["growth"] is None


def test_an_unreachable_server_is_shown_down_and_fails_the_exit_status(our_server: Any) -> None:
    dead = free_port()
    proc = run_top("-h", f"{our_server.host}:{our_server.port}", "-h", f"127.0.0.1:{dead}",
                   "--once")
    assert proc.returncode == 1
    down = [line for line in proc.stdout.splitlines() if line.startswith(f"127.0.0.1:{dead}")]
    assert len(down) == 1 and " DOWN " in down[0]
    assert "Traceback" not in proc.stderr


class Tmux:
    """A tmux server of our own (its own socket name), one session running one command."""

    def __init__(self, command: list[str]) -> None:
        binary = shutil.which("tmux")
        if binary is None:
            message = "tmux not found: apt-get install tmux"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.base = [binary, "-L", f"gp-top-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
        env = {**os.environ, "TERM": "xterm-256color"}
        subprocess.run([*self.base, "new-session", "-d", "-s", "top", "-x", "150", "-y", "30",
                        " ".join(command)], check=True, env=env, timeout=BOUND)

    def screen(self) -> list[str]:
        proc = subprocess.run([*self.base, "capture-pane", "-p", "-t", "top"],
                              capture_output=True, text=True, timeout=BOUND)
        return proc.stdout.splitlines()

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "top", *keys], check=True, timeout=BOUND)

    def alive(self) -> bool:
        return subprocess.run([*self.base, "has-session", "-t", "top"],
                              capture_output=True, timeout=BOUND).returncode == 0

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=BOUND)


@pytest.fixture
def tmux() -> Iterator[Callable[[list[str]], Tmux]]:
    started: list[Tmux] = []

    def start(command: list[str]) -> Tmux:
        started.append(Tmux(command))
        return started[-1]

    yield start
    for t in started:
        t.close()


def test_live_view_refreshes_sorts_and_quits_in_a_terminal(
        target: Any, tmux: Callable[[list[str]], Tmux]) -> None:
    term = tmux(top_command("-h", f"{target.host}:{target.port}", "-d", "0.3"))

    def table() -> dict[str, list[str]]:
        try:
            return rows(term.screen())
        except StopIteration:
            return {}
    wait_until(lambda: "queue-a" in table(), "the first frame")
    assert any("sorted by queued" in line for line in term.screen())
    assert list(table())[:2] == ["queue-a", "queue-b"]

    with Client([target.address]) as client:  # the queue grows: a positive rate shows
        for i in range(6):
            client.submit("queue-b", b"more%d" % i, background=True)
    wait_until(lambda: table().get("queue-b", ["0"])[0] == "7", "the refresh")
    assert list(table())[:2] == ["queue-b", "queue-a"]

    term.keys("n")
    wait_until(lambda: any("sorted by name" in line for line in term.screen()), "sort by name")
    assert list(table()) == ["idle-fn", "queue-a", "queue-b"]

    term.keys("q")
    wait_until(lambda: not term.alive(), "top to quit on q")


def test_growth_is_the_change_between_refreshes() -> None:
    from gearman_proto.adapters.top import ServerView, Top, render
    clock = iter([10.0, 12.0])
    top = Top([("127.0.0.1", 1)], clock=lambda: next(clock))
    first, second = ServerView("s:1", up=True), ServerView("s:1", up=True)
    # The pure part of a refresh: rows of `status`, turned into views with rates.
    from gearman_proto.admin import StatusRow
    for view, total in ((first, 4), (second, 10)):
        top.apply(view, [StatusRow(b"f", total, 1, 2)], [])
    assert first.functions[0].growth is None
    assert second.functions[0].growth == 3.0
    assert rows(render([second]))["f"] == ["9", "1", "2", "+3.0"]
