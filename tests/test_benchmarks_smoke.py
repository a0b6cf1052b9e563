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
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


def test_perjob_counts_system_calls_per_job(tmp_path: Path) -> None:
    """benchmarks.perjob under strace: gearmand and ours each make some system calls per job."""
    if shutil.which("strace") is None or not HAVE_GEARMAND:
        if os.environ.get("CI"):
            pytest.fail("strace and gearmand are needed (.ci/apt-packages lists them)")
        pytest.skip("strace or gearmand is not installed")
    out = tmp_path / "perjob.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.perjob", "--smoke", "--tools", "syscalls",
         "--servers", "gearmand,asyncio", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {row["server"] for row in rows} == {"gearmand", "asyncio"}
    for row in rows:
        assert row["jobs"] == [50, 150] and _positive(row["per_job"]), row
