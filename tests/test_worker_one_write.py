"""The asyncio worker's per-job path, as ``benchmarks.library_instructions --in-process`` runs it.

A handler that returns at once has its result and the next grab written in one
write, in the read that brought the job: ``drive_worker`` raises unless N jobs
make N writes after the first (CAN_DO and the first grab) and all N are done.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_each_job_costs_one_write_of_its_result_and_the_next_grab() -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.library_instructions",
                           "--drive-worker", "300"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
