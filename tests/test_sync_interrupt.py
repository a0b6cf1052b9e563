"""Ctrl-C in a blocking Worker.work(): the jobs in hand go back, the traceback is short."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from gearman_proto.adapters import sync
from gearman_proto.adapters.sync import AdminClient, Client

if TYPE_CHECKING:
    from conftest import ServerProcess

BOUND = 20.0

SCRIPT = textwrap.dedent("""
    import sys, time
    from gearman_proto.adapters.sync import Worker

    worker = Worker(sys.argv[1], max_jobs=2)

    @worker.task(sys.argv[2])
    def slow(job):
        print("started", flush=True)
        time.sleep(60)   # still running when Ctrl-C comes
        return b"late"

    worker.work()
""")


def test_ctrl_c_hands_the_jobs_back_and_ends_with_a_short_traceback(
        our_server: ServerProcess, tmp_path: Path) -> None:
    function = f"interrupt-{time.monotonic_ns()}"
    with Client(our_server.address) as client:
        client.submit(function, b"a", background=True)
        client.submit(function, b"b", background=True)
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script),
                             f"{our_server.host}:{our_server.port}", function],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        seen = b""
        while seen.count(b"started") < 2:  # two handlers print at once: lines may merge
            chunk = proc.stdout.read1(64)
            assert chunk, f"the worker ended before both jobs started: {seen!r}"
            seen += chunk
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=BOUND)
    finally:
        proc.kill()
    text = err.decode()
    # Ended by the interrupt, as a Python program does, and promptly.
    assert proc.returncode in (-signal.SIGINT, 1, 130), text
    assert text.rstrip().endswith("KeyboardInterrupt"), text
    # The traceback shows the program's own call and no event-loop or thread internals.
    assert "worker.work()" in text
    for internal in ("selectors.py", "threading.py", "concurrent/futures", "base_events.py"):
        assert internal not in text, text
    # Both jobs in hand went back to the server, to run again elsewhere.
    deadline = time.monotonic() + BOUND
    while True:
        with AdminClient(our_server.address) as admin:
            rows = {r.function: r for r in admin.status()}
        row = rows.get(function.encode())
        if row is not None and (row.total, row.running) == (2, 0):
            break
        assert time.monotonic() < deadline, f"the jobs were not requeued: {row}"
        time.sleep(0.05)


def test_ctrl_c_while_work_is_handed_to_its_thread_ends_as_short_and_leaves_no_thread(
        our_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C that lands while work() hands the worker to its I/O thread (a CI run caught
    it there, with both jobs already started): the same short KeyboardInterrupt from
    work(), and the I/O thread is stopped, not left running the worker."""
    submit = sync._Loop.submit

    def interrupted(loop: Any, coro: Any) -> Any:
        future = submit(loop, coro)  # the work is on its way to the thread ...
        signal.raise_signal(signal.SIGINT)  # ... and Ctrl-C comes before work() has it
        return future

    monkeypatch.setattr(sync._Loop, "submit", interrupted)
    worker = sync.Worker(our_server.address)
    worker.register(f"interrupt-{time.monotonic_ns()}", lambda job: job.data)
    with pytest.raises(KeyboardInterrupt) as raised:
        worker.work()
    innermost = traceback.extract_tb(raised.value.__traceback__)[-1]
    assert (Path(innermost.filename).name, innermost.name) == ("sync.py", "work")
    assert raised.value.__suppress_context__
    assert not [t for t in threading.enumerate() if t.name == "gearman-worker-io"]
