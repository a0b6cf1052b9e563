"""``gearman-proto fuzz`` against real servers (docs/fuzzing.md).

A short session against our own server, on every server flavour, finds
nothing (the model is the same core); the stored gearmand reproducers still do
what they recorded: the crash kills a fresh gearmand 1.1.20 (so we notice the
day Debian fixes it), the divergence is reported against gearmand and not
against ours.  And the fuzzer is a good citizen: no default target, a loopback
target unless told otherwise, bounded connections, one line per bad flag.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPRODUCERS = Path(__file__).parent / "reproducers"
CRASH = REPRODUCERS / "gearmand-1.1.20-crash-type-4294967295.json"
DIVERGENCE = REPRODUCERS / "gearmand-1.1.20-get-status-unique-64.json"
FUZZ = [sys.executable, "-m", "gearman_proto.adapters.cli", "fuzz"]


def fuzz(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FUZZ, *args], capture_output=True, text=True, timeout=timeout)


def summary(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("summary "))
    result: dict[str, Any] = json.loads(line.removeprefix("summary "))
    return result


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "trio"])
def test_a_short_session_against_our_server_finds_nothing(
        our_server_factory: Any, tmp_path: Path, loop: str) -> None:
    server = our_server_factory(loop=loop)
    out = fuzz(f"127.0.0.1:{server.port}", "--seconds", "120", "--cases", "20", "--seed", "7",
               "--output", str(tmp_path / "findings"))
    assert out.returncode == 0, out.stdout + out.stderr
    figures = summary(out)
    print(f"FIGURES fuzz_ours_{loop} cases={figures['cases']} steps={figures['steps']}")
    assert figures["cases"] == 20 and figures["findings"] == 0 and figures["steps"] >= 20
    assert not (tmp_path / "findings").exists()


def test_the_stored_crash_still_kills_a_fresh_gearmand(gearmand_factory: Any) -> None:
    gearmand = gearmand_factory()
    out = fuzz(f"127.0.0.1:{gearmand.port}", "--replay", str(CRASH), timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "replayed: crash" in out.stdout
    deadline = time.monotonic() + 15
    while gearmand.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # gearmand 1.1.20's SIGSEGV handler prints a stack trace and exits with 1.
    assert gearmand.proc.poll() not in (None, 0), "gearmand survived: is it fixed?"


def test_the_stored_divergence_is_gearmands_not_ours(gearmand_factory: Any,
                                                     our_server_factory: Any) -> None:
    gearmand, ours = gearmand_factory(), our_server_factory()
    out = fuzz(f"127.0.0.1:{gearmand.port}", "--replay", str(DIVERGENCE), timeout=60)
    assert out.returncode == 1 and "replayed: divergence" in out.stdout, out.stdout
    assert gearmand.proc.poll() is None
    out = fuzz(f"127.0.0.1:{ours.port}", "--replay", str(DIVERGENCE), timeout=60)
    assert out.returncode == 0 and "no finding" in out.stdout, out.stdout + out.stderr


def test_known_differences_are_counted_not_reported(gearmand_factory: Any,
                                                    tmp_path: Path) -> None:
    """A known difference excuses the divergence it names, and only that one."""
    gearmand = gearmand_factory()
    names = tmp_path / "known.txt"
    names.write_text("# the 64-byte unique\nunique-64\n")
    out = fuzz(f"127.0.0.1:{gearmand.port}", "--replay", str(DIVERGENCE),
               "--known-differences", str(names), timeout=60)
    assert out.returncode == 1, out.stdout  # GET_STATUS_UNIQUE is not a submission
    out = fuzz(f"127.0.0.1:{gearmand.port}", "--replay", str(DIVERGENCE),
               "--known-differences", "gearmand-1.1.20", timeout=60)
    assert out.returncode == 1, out.stdout  # nor any other documented difference


@pytest.mark.parametrize(("args", "message"), [
    ((), "HOST:PORT"),
    (("127.0.0.1",), "is not HOST:PORT"),
    (("192.0.2.1:4730",), "not a loopback address"),
    (("127.0.0.1:1", "--connections", "100"), "--connections must be 1 to 16"),
    (("127.0.0.1:1", "--known-differences", "/nonexistent/list"), "/nonexistent/list"),
    (("127.0.0.1:1", "--seconds", "0"), "--seconds must be > 0"),
])
def test_bad_invocations_get_one_line(args: tuple[str, ...], message: str) -> None:
    out = fuzz(*args, timeout=60)
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_target_that_is_not_there_is_named(tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = fuzz(f"127.0.0.1:{port}", "--seconds", "5", timeout=60)
    assert out.returncode == 2 and "connection refused" in out.stderr, out.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        out = fuzz(f"127.0.0.1:{listener.getsockname()[1]}", "--replay", str(bad),
                   "--timeout", "1", timeout=60)
    assert out.returncode == 2 and "not a gearman-proto-fuzz/1 file" in out.stderr, out.stderr
