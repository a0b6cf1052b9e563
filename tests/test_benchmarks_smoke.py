"""The benchmarks still run: each one's ``--smoke`` mode, with no assertion on any time.

Benchmarks are not tests (benchmarks/RESULTS.md has the figures); this only
keeps them from rotting.  The four run at once, as child processes, and each
test reads its benchmark's ``--json`` output and checks that the numbers are
sane: jobs done, rates positive, nothing refused.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _util

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("codec", "core", "e2e", "overhead")
HAVE_GEARMAND = shutil.which("gearmand") is not None or Path("/usr/sbin/gearmand").exists()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Start every benchmark's smoke run at once; results are collected on demand."""
    tmp = tmp_path_factory.mktemp("bench-smoke")
    procs = {}
    for name in BENCHMARKS:
        if name == "overhead" and not HAVE_GEARMAND:
            continue
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"benchmarks.{name}", "--smoke", "--json",
             str(tmp / f"{name}.json")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results: dict[str, Any] = {}

    def result(name: str) -> Any:
        if name not in procs:
            pytest.skip("gearmand is not installed")
        if name not in results:
            out, _ = procs[name].communicate(timeout=300)
            assert procs[name].returncode == 0, out
            results[name] = json.loads((tmp / f"{name}.json").read_text())
        return results[name]

    yield {"get": result}
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_codec(smoke: dict[str, Any]) -> None:
    data = smoke["get"]("codec")
    impls = {row["impl"] for row in data["rows"]}
    assert "ours: events (Decoder + JobAssign)" in impls
    for row in data["rows"]:
        assert row["count"] > 0 and _positive(row["per_s"]), row


def test_core(smoke: dict[str, Any]) -> None:
    data = smoke["get"]("core")
    assert {row["what"] for row in data["rows"]} >= {"bg", "fg", "bg unique"}
    for row in data["rows"]:
        assert row["jobs"] == 2000 and _positive(row["jobs_per_s"]), row
    for name, mem in data["memory"].items():
        assert mem["jobs"] > 0, name
        # A queued job costs some bytes, and surely less than 100 kB.
        assert 0 < mem["bytes_per_job"] < 100_000, (name, mem)


def test_e2e(smoke: dict[str, Any]) -> None:
    data = smoke["get"]("e2e")
    assert {row["scenario"] for row in data["rows"]} == {"bg", "fg1", "fgp"}
    assert "asyncio" in {row["server"] for row in data["rows"]}
    for row in data["rows"]:
        assert row["jobs"] == 200 and not row["errors"] and not row["timed_out"], row
        assert _positive(row["jobs_per_s"]) and _positive(row["p99_us"]), row


def test_overhead(smoke: dict[str, Any]) -> None:
    data = smoke["get"]("overhead")
    pairs = {(row["client"], row["worker"]) for row in data["rows"]}
    assert ("raw", "raw") in pairs and ("asyncio", "asyncio") in pairs
    for row in data["rows"]:
        assert row["jobs"] == 100 and _positive(row["jobs_per_s"]), row


def _perjob(tmp_path: Path, tool: str, binary: str, servers: str) -> tuple[list[Any], str]:
    """Run benchmarks.perjob --smoke with one tool: its JSON rows and what it printed."""
    if shutil.which(binary) is None or not HAVE_GEARMAND:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} and gearmand are needed (.ci/apt-packages lists them)")
        pytest.skip(f"{binary} or gearmand is not installed")
    out = tmp_path / "perjob.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.perjob", "--smoke", "--tools", tool,
         "--servers", servers, "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(out.read_text())["rows"], run.stdout


def test_perjob_counts_system_calls_per_job(tmp_path: Path) -> None:
    """benchmarks.perjob under strace: gearmand and ours each make some system calls per job."""
    rows, _ = _perjob(tmp_path, "syscalls", "strace", "gearmand,asyncio")
    assert {row["server"] for row in rows} == {"gearmand", "asyncio"}
    for row in rows:
        assert row["jobs"] == [50, 150] and _positive(row["per_job"]), row


def test_perjob_profiles_a_job_with_callgrind(tmp_path: Path) -> None:
    """benchmarks.perjob --tools callgrind keeps gearmand's two profiles and prints the
    benchmarks.profile_diff command for them, whose per-job total is the row's figure
    and whose rows count the receives and sends gearmand makes for the jobs."""
    (row,), stdout = _perjob(tmp_path, "callgrind", "valgrind", "gearmand")
    assert row["tool"] == "callgrind" and _positive(row["per_job"]), row
    command = next(line.split() for line in stdout.splitlines()
                   if "benchmarks.profile_diff" in line)
    assert command[:3] == ["python", "-m", "benchmarks.profile_diff"]
    diff = subprocess.run(
        [sys.executable, *command[1:], "--sort", "calls", "--match", "^(read|recv|write|send)$"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    head, _, *rows = diff.stdout.splitlines()
    assert f"{round(row['per_job']):,} instructions" in head, (head, row)
    calls = {line.split()[-1]: float(line.split()[2]) for line in rows}
    # A background job's packets come in by recv and go out by send or write;
    # how many a call carries depends on the timing (gearmand reads until EAGAIN,
    # and its threads wake each other through a pipe), so only that there are some.
    assert calls.get("recv", 0) > 0, diff.stdout
    assert calls.get("send", 0) + calls.get("write", 0) > 0, diff.stdout


def test_profile_diff_names_a_bad_argument() -> None:
    """A missing profile or a bad expression: one line naming it, no traceback."""
    for args in (["/nonexistent/a.out", "/nonexistent/b.out", "10"],
                 [__file__, __file__, "10", "--match", "("],
                 [__file__, __file__, "0"]):
        run = subprocess.run([sys.executable, "-m", "benchmarks.profile_diff", *args],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert run.stderr.splitlines()[-1].startswith("profile_diff.py: error: "), run.stderr


@pytest.mark.parametrize("kind", ["uvloop", pytest.param("gearmand", marks=pytest.mark.skipif(
    not HAVE_GEARMAND, reason="gearmand is not installed"))])
def test_a_benchmark_server_whose_port_was_taken_moves_to_another(kind: str,
                                                                 tmp_path: Path) -> None:
    """A port that free_port() gave out can be bound by a neighbour before the server binds it;
    the load must then go to the server, not to the neighbour that accepts there."""
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        taken = stranger.getsockname()[1]
        server = _util.Server(kind, tmp_path)
        server.port = taken
        with server:
            assert server.port != taken
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
                conn.sendall(b"version\n")
                answer = conn.recv(100)
    assert answer.startswith(b"OK "), answer
