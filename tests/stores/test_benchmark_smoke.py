"""``python -m benchmarks.stores --smoke`` still runs: each store of ours, a few hundred jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_store_benchmark_smoke(postgresql: object, redis_server: object) -> None:
    del postgresql, redis_server  # only to fail (under CI) or skip without the databases
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.stores", "--smoke",
         "--kinds", "memory,sqlite:inline,postgresql,redis:inline"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table[1:]] == [
        "| memory", "| sqlite:inline", "| postgresql", "| redis:inline"]
    assert "jobs per store write" in result.stdout
