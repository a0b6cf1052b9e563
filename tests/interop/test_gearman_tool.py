"""libgearman's ``gearman`` tool (gearman-tools) against our server (issue 4 §2).

Client mode (``gearman -f``: foreground, ``-b``, ``-I``, ``-L``, ``-u``, ``-n``,
``-N``, ``-P``, ``-s``) with our worker, and worker mode (``gearman -w -f``)
serving our clients and the ``gearman`` client.  Every test runs against our
server and, to show the expectation is gearmand's own, against gearmand 1.1.20
(the ``server`` fixture); nothing here depends on which one answered.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
from gearman_proto.adapters.sync import AdminClient, Client, Worker

from gearman_proto.events import WorkData

if TYPE_CHECKING:
    from conftest import ServerProcess, Tool

BOUND = 15.0


@contextmanager
def our_worker(server: ServerProcess, fn: str, handler: Callable[[Any], Any],
               max_jobs: int = 1) -> Iterator[Worker]:
    """Our (sync) worker serving ``fn`` while the body runs."""
    worker = Worker([server.address], max_jobs=max_jobs)
    worker.register(fn, handler)
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop(graceful=False)
        thread.join(BOUND)


def gearman(tool: str, server: ServerProcess, *args: str) -> list[str]:
    return [tool, "-h", server.host, "-p", str(server.port), *args]


@pytest.mark.feature("tools.foreground", "client")
def test_client_foreground(gearman_tool: str, server: ServerProcess, run: Callable[..., Tool],
                           fresh: Callable[[str], str]) -> None:
    fn = fresh("cli-fg")
    seen: list[bytes] = []

    def handler(job: Any) -> bytes:
        seen.append(job.data)
        return job.data.upper()

    with our_worker(server, fn, handler):
        out = run(gearman(gearman_tool, server, "-f", fn), b"hello \x01 world\n")
    assert (out.returncode, out.stdout, out.stderr) == (0, b"HELLO \x01 WORLD\n", b"")
    assert seen == [b"hello \x01 world\n"]  # stdin, whole, is the workload


@pytest.mark.feature("tools.arguments", "client")
def test_client_data_from_arguments_and_dash_s(gearman_tool: str, server: ServerProcess,
                                               run: Callable[..., Tool],
                                               fresh: Callable[[str], str]) -> None:
    fn = fresh("cli-args")
    seen: list[bytes] = []
    with our_worker(server, fn, lambda job: seen.append(job.data) or b"<" + job.data + b">"):
        args = run(gearman(gearman_tool, server, "-f", fn, "from", "args"))
        empty = run(gearman(gearman_tool, server, "-s", "-f", fn))
    assert (args.returncode, args.stdout) == (0, b"<from><args>")  # a job per argument
    assert (empty.returncode, empty.stdout) == (0, b"<>")
    assert seen == [b"from", b"args", b""]


@pytest.mark.feature("tools.background", "client")
@pytest.mark.feature("tools.priorities", "client")
def test_client_background_and_priorities(gearman_tool: str, server: ServerProcess,
                                          run: Callable[..., Tool],
                                          fresh: Callable[[str], str]) -> None:
    """``-b`` queues and returns at once; ``-I`` / ``-L`` pick the priority (seen in
    ``prioritystatus``), and a worker then runs them HIGH, NORMAL, LOW."""
    fn = fresh("cli-bg")
    for flags, data in ((["-L"], b"low"), ([], b"normal"), (["-I"], b"high")):
        out = run(gearman(gearman_tool, server, "-b", *flags, "-f", fn), data)
        assert (out.returncode, out.stdout, out.stderr) == (0, b"", b"")
    with AdminClient(server.address) as admin:
        rows = {r.function: r for r in admin.priority_status()}
        row = rows[fn.encode()]
        assert (row.high, row.normal, row.low, row.available_workers) == (1, 1, 1, 0)
        seen: list[bytes] = []
        done = threading.Event()

        def handler(job: Any) -> bytes:
            seen.append(job.data)
            if len(seen) == 3:
                done.set()
            return b""

        with our_worker(server, fn, handler):
            assert done.wait(BOUND)
    assert seen == [b"high", b"normal", b"low"]


@pytest.mark.feature("tools.priorities", "client")
def test_client_foreground_high_and_low(gearman_tool: str, server: ServerProcess,
                                        run: Callable[..., Tool],
                                        fresh: Callable[[str], str]) -> None:
    fn = fresh("cli-prio")
    with our_worker(server, fn, lambda job: job.data[::-1]):
        high = run(gearman(gearman_tool, server, "-I", "-f", fn), b"high")
        low = run(gearman(gearman_tool, server, "-L", "-f", fn), b"low")
    assert (high.returncode, high.stdout) == (0, b"hgih")
    assert (low.returncode, low.stdout) == (0, b"wol")


@pytest.mark.feature("tools.unique", "client")
def test_client_unique_coalesces(gearman_tool: str, server: ServerProcess,
                                 fresh: Callable[[str], str],
                                 until: Callable[..., None]) -> None:
    """``-u``: the worker sees the unique id, and two ``gearman -u`` runs with the same
    id share one job (one run, both print its result)."""
    fn, unique = fresh("cli-unique"), fresh("u")
    procs = [subprocess.Popen(gearman(gearman_tool, server, "-u", unique, "-f", fn),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(2)]
    try:
        procs[0].stdin.write(b"first")  # type: ignore[union-attr]
        procs[0].stdin.close()  # type: ignore[union-attr]
        with Client([server.address]) as client:
            until(lambda: client.get_status_unique(unique).waiting == 1, "the first client")
            procs[1].stdin.write(b"second")  # type: ignore[union-attr]
            procs[1].stdin.close()  # type: ignore[union-attr]
            until(lambda: client.get_status_unique(unique).waiting == 2, "the second client")
        seen: list[tuple[bytes, bytes]] = []
        with our_worker(server, fn, lambda job: seen.append((job.unique, job.data)) or b"one"):
            outs = [(p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
            for p in procs:
                p.wait(BOUND)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == [(b"one", b""), (b"one", b"")]
    assert seen == [(unique.encode(), b"first")]


@pytest.mark.feature("tools.unique", "client")
def test_client_background_unique(gearman_tool: str, server: ServerProcess,
                                  run: Callable[..., Tool], fresh: Callable[[str], str]) -> None:
    fn, unique = fresh("cli-bg-unique"), fresh("u")
    assert run(gearman(gearman_tool, server, "-b", "-u", unique, "-f", fn), b"x").returncode == 0
    assert run(gearman(gearman_tool, server, "-b", "-u", unique, "-f", fn), b"y").returncode == 0
    with AdminClient(server.address) as admin:
        assert unique.encode() in admin.show_unique_jobs()
        rows = {r.function: r for r in admin.status()}
        assert rows[fn.encode()].total == 1  # coalesced


@pytest.mark.feature("tools.line-mode", "client")
def test_client_line_mode(gearman_tool: str, server: ServerProcess, run: Callable[..., Tool],
                          fresh: Callable[[str], str]) -> None:
    """``-n``: one job per input line (newline kept); ``-N`` strips it; ``-P`` prefixes
    each result with the function name."""
    fn = fresh("cli-lines")
    seen: list[bytes] = []

    def handler(job: Any) -> bytes:
        seen.append(job.data)
        return job.data.upper()

    with our_worker(server, fn, handler):
        n = run(gearman(gearman_tool, server, "-n", "-f", fn), b"one\ntwo\nthree\n")
        assert seen == [b"one\n", b"two\n", b"three\n"]
        seen.clear()
        big_n = run(gearman(gearman_tool, server, "-N", "-P", "-f", fn), b"one\ntwo\n")
        assert seen == [b"one", b"two"]
    assert (n.returncode, n.stdout) == (0, b"ONE\nTWO\nTHREE\n")
    assert (big_n.returncode, big_n.stdout) == (0, f"{fn}: ONE{fn}: TWO".encode())


@pytest.mark.feature("tools.fail", "client")
def test_client_sees_work_fail(gearman_tool: str, server: ServerProcess,
                               run: Callable[..., Tool], fresh: Callable[[str], str]) -> None:
    fn = fresh("cli-fail")

    def failing(job: Any) -> None:
        job.fail()

    with our_worker(server, fn, failing):
        out = run(gearman(gearman_tool, server, "-f", fn), b"x")
    assert (out.returncode, out.stdout, out.stderr) == (1, b"", b"Job failed\n")


@pytest.mark.feature("tools.exception", "client")
@pytest.mark.feature("differences.exception-as-fail")
def test_client_without_exceptions_sees_an_exception_as_a_failure(
        gearman_tool: str, server: ServerProcess, run: Callable[..., Tool],
        fresh: Callable[[str], str]) -> None:
    """The ``gearman`` client does not ask for the exceptions option, so a worker's
    WORK_EXCEPTION reaches it as WORK_FAIL.  Deliberate difference: gearmand 1.1.20 sends
    that WORK_FAIL with the handle's NUL terminator inside the packet, which libgearman
    does not match to its job, so the tool waits until its timeout; ours says "Job failed".
    (The bytes: test_differential.py::test_exception_to_clients_with_and_without_the_option.)"""
    fn = fresh("cli-exception")

    def raising(job: Any) -> None:
        raise ValueError("it went boom")

    with our_worker(server, fn, raising):
        out = run(gearman(gearman_tool, server, "-t", "1000", "-f", fn), b"x")
    assert out.stdout == b""
    if server.name == "gearmand":
        assert out.returncode == 0 and b"GEARMAN_TIMEOUT" in out.stderr
    else:
        assert (out.returncode, out.stderr) == (1, b"Job failed\n")


# -- worker mode ---------------------------------------------------------------------------


@contextmanager
def gearman_worker(tool: str, server: ServerProcess, *args: str
                   ) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(gearman(tool, server, "-w", *args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=BOUND)


def wait_for_worker(server: ServerProcess, fn: str, until: Callable[..., None]) -> None:
    with AdminClient(server.address) as admin:
        until(lambda: any(r.function == fn.encode() and r.available_workers
                          for r in admin.status()), "the gearman worker to register")


@pytest.mark.feature("tools.foreground", "worker")
@pytest.mark.feature("tools.background", "worker")
def test_worker_serves_our_client_and_the_gearman_client(
        gearman_tool: str, server: ServerProcess, run: Callable[..., Tool],
        fresh: Callable[[str], str], until: Callable[..., None]) -> None:
    """``gearman -w -f FN -- tr a-z A-Z``: each job's workload goes to the command's stdin,
    its stdout is the result; ``-c 3`` exits after three jobs."""
    fn = fresh("cli-worker")
    with gearman_worker(gearman_tool, server, "-c", "3", "-f", fn, "--",
                        "tr", "a-z", "A-Z") as proc:
        wait_for_worker(server, fn, until)
        with Client([server.address], result_timeout=BOUND) as client:
            assert client.do(fn, b"from our client") == b"FROM OUR CLIENT"
            job = client.submit(fn, b"background", background=True)
            until(lambda: not client.get_status(job.handle).known, "the background job")
        out = run(gearman(gearman_tool, server, "-f", fn), b"from gearman\n")
        assert (out.returncode, out.stdout) == (0, b"FROM GEARMAN\n")
        assert proc.wait(BOUND) == 0  # -c 3: done


@pytest.mark.feature("tools.line-mode", "worker")
def test_worker_line_mode_sends_work_data(gearman_tool: str, server: ServerProcess,
                                          fresh: Callable[[str], str],
                                          until: Callable[..., None]) -> None:
    """``gearman -w -n``: a WORK_DATA per output line, which our client streams."""
    fn = fresh("cli-worker-n")
    with gearman_worker(gearman_tool, server, "-n", "-c", "1", "-f", fn, "--",
                        "tr", "a-z", "A-Z") as proc:
        wait_for_worker(server, fn, until)
        with Client([server.address], result_timeout=BOUND) as client:
            job = client.submit(fn, b"one\ntwo\n")
            updates = list(job.updates())
            result = job.wait()
        assert proc.wait(BOUND) == 0
    h = job.handle
    # gearman-tools 1.1.20 sends each WORK_DATA with all the output so far, then an
    # empty result (the same against gearmand).
    assert updates == [WorkData(h, b"ONE\n"), WorkData(h, b"ONE\nTWO\n")]
    assert result == b""


@pytest.mark.feature("tools.no-command", "worker")
def test_worker_echoes_without_a_command(gearman_tool: str, server: ServerProcess,
                                         fresh: Callable[[str], str],
                                         until: Callable[..., None]) -> None:
    """``gearman -w -f FN`` with no command writes each workload to its own stdout."""
    fn = fresh("cli-worker-cat")
    with gearman_worker(gearman_tool, server, "-c", "2", "-f", fn) as proc:
        wait_for_worker(server, fn, until)
        with Client([server.address], result_timeout=BOUND) as client:
            assert client.do(fn, b"first;") == b""
            assert client.do(fn, b"second") == b""
        stdout, _ = proc.communicate(timeout=BOUND)
    assert (proc.returncode, stdout) == (0, b"first;second")
