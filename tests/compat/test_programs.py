"""Programs written for python-gearman 2.0, changed only in their import, against real servers.

``programs/`` holds a worker, a client and an admin client in python-gearman's
documented style (``docs/compat.md``); each test runs them as child processes
against gearmand and against ``gearman-proto server`` and checks what they print.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gearman_proto.adapters.sync import AdminClient

PROGRAMS = Path(__file__).parent / "programs"
BOUND = 30.0


@pytest.fixture(params=["gearmand", "ours"])
def server(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("gearmand" if request.param == "gearmand" else "our_server")


def run(*args: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(PROGRAMS / args[0]), *args[1:]],
                          capture_output=True, text=True, timeout=BOUND)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.fixture
def workers(server: Any) -> Iterator[str]:
    """A prefix for this test's function names, with the python-gearman workers serving it."""
    prefix = f"compat-{uuid.uuid4().hex[:8]}-"
    address = f"{server.host}:{server.port}"
    procs = [subprocess.Popen([sys.executable, str(PROGRAMS / "worker.py"), address, kind,
                               name], stdout=subprocess.PIPE, text=True)
             for kind, name in (("plain", prefix), ("json", prefix + "sum"))]
    try:
        with AdminClient(server.address) as admin:
            deadline = time.monotonic() + BOUND
            while {r.function.decode() for r in admin.status() if r.available_workers} < {
                    prefix + "reverse", prefix + "sum"}:
                assert time.monotonic() < deadline, "the workers did not register"
                assert all(p.poll() is None for p in procs), "a worker exited"
                time.sleep(0.05)
        yield prefix
    finally:
        for p in procs:
            p.terminate()
            p.wait(BOUND)
            assert p.stdout is not None
            p.stdout.close()


def test_client_program(server: Any, workers: str) -> None:
    lines = run("client.py", f"{server.host}:{server.port}", workers)
    assert lines[0].startswith("Job ") and lines[0].endswith(
        "finished!  Result: COMPLETE - b'!dlrow olleH'")
    assert lines[1:4] == [
        "result b'!dlrow olleH'",
        "multiple [b'cba', b'zyx', b'321'] True",
        "progress b'done' [b'chunk 1', b'chunk 2', b'chunk 3'] [b'almost done'] 3 3",
    ]
    assert lines[4] == "fail FAILED True None"
    assert lines[5] == "explode FAILED b'cannot handle this'"
    assert lines[6:8] == ["background CREATED True True",
                          "status keys ['denominator', 'handle', 'known', 'numerator', "
                          "'running', 'time_received']"]
    assert lines[8].startswith("Job ") and lines[8].endswith(" timed out!")
    assert lines[9:] == ["timed out True CREATED", "json {'sum': 10}",
                         "unavailable ServerUnavailable True"]


def test_admin_program(server: Any, workers: str) -> None:
    lines = run("admin.py", f"{server.host}:{server.port}", workers)
    assert lines[0] == "ping True"
    assert "status reverse 0 0 1" in lines
    assert "version True" in lines
    assert "worker ['explode', 'fail', 'progress', 'reverse']" in lines
    assert lines[-1] == "maxqueue OK"


def test_worker_after_poll_stops_work(server: Any, tmp_path: Path) -> None:
    """``after_poll`` returning False makes ``work()`` return, as in python-gearman."""
    program = tmp_path / "stopping_worker.py"
    program.write_text(
        "import sys\n"
        "from gearman_proto.adapters import compat as gearman\n"
        "class W(gearman.GearmanWorker):\n"
        "    polls = 0\n"
        "    def after_poll(self, any_activity):\n"
        "        self.polls += 1\n"
        "        return self.polls < 3\n"
        "w = W([sys.argv[1]])\n"
        "w.register_task('never-called', lambda worker, job: job.data)\n"
        "w.work(poll_timeout=0.05)\n"
        "print('returned after', w.polls, 'polls')\n")
    proc = subprocess.run([sys.executable, str(program), f"{server.host}:{server.port}"],
                          capture_output=True, text=True, timeout=BOUND,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "returned after 3 polls\n"
