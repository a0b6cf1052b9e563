"""Every example runs as users run it: as a program, against our job server.

Each flavour's reverse worker and client run as subprocesses against a
server of the test's own (so no other "reverse" worker can answer for them);
the worker must then stop cleanly on Ctrl-C (SIGINT).  The quick start runs
whole (``quickstart.py``, and ``quickstart.sh`` which runs it with the Python
gearman-proto is installed for), on a port of its own, and must leave nothing
listening behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import ServerProcess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FLAVOURS = ["sync", "asyncio", "anyio", "trio"]
OTHER_LANGUAGES = ["php"]  # examples/php/: run by tests/interop/test_php.py
BOUND = 60
EXPECTED = {"anyio": "!dlrow olleH\nnamraeG\noiyna\n"}


def test_every_flavour_has_a_worker_and_a_client() -> None:
    assert sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()) == sorted(
        FLAVOURS + OTHER_LANGUAGES)
    for flavour in FLAVOURS:
        assert {p.name for p in (EXAMPLES / flavour).glob("*.py")} == {
            "reverse_worker.py", "reverse_client.py"}


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_reverse_example(flavour: str, our_server_factory: Callable[..., ServerProcess]
                         ) -> None:
    server = our_server_factory()
    address = f"{server.host}:{server.port}"
    worker = subprocess.Popen([sys.executable, str(EXAMPLES / flavour / "reverse_worker.py"),
                               address], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        client = subprocess.run([sys.executable, str(EXAMPLES / flavour / "reverse_client.py"),
                                 address], capture_output=True, text=True, timeout=BOUND)
        assert client.returncode == 0, client.stderr
        assert client.stdout == EXPECTED.get(flavour, "!dlrow olleH\n")
    finally:
        worker.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = worker.communicate(timeout=BOUND)
    assert worker.returncode == 0, err.decode()
    assert b"Traceback" not in err


def test_the_default_server_is_localhost_4730() -> None:
    """Without an argument the examples use the server gearmand users expect."""
    for flavour in FLAVOURS:
        for program in ("reverse_worker.py", "reverse_client.py"):
            assert '"localhost:4730"' in (EXAMPLES / flavour / program).read_text()


@pytest.mark.parametrize("command", [[sys.executable, "quickstart.py"], ["sh", "quickstart.sh"]],
                         ids=["py", "sh"])
def test_quickstart(tmp_path: Path, command: list[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHON": sys.executable}  # the shell script: this Python first
    run = subprocess.run([command[0], str(EXAMPLES / command[1]), str(port)], env=env,
                         capture_output=True, text=True, timeout=BOUND,
                         cwd=tmp_path)  # works from any directory
    assert run.returncode == 0, run.stderr
    assert run.stdout == "!dlrow olleH\n"
    with pytest.raises(ConnectionRefusedError):  # the server is gone
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
