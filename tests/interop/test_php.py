"""The PHP bridge: PHP's pecl gearman (Debian php-gearman, over libgearman) with our Python code.

``examples/php/client.php`` calls ``examples/php/python_worker.py`` (ours), and
``examples/php/python_client.py`` (ours) calls ``examples/php/worker.php``,
through gearmand and through ``gearman-proto server``: the classic Gearman use
case of a PHP web application handing work to another language, both ways.
Each server is the module's own, so no other test's worker can answer.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gearman_proto.adapters.sync import AdminClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "php"
BOUND = 30.0
FUNCTIONS = {"reverse", "progress", "fail", "explode"}

COMMON = """\
reverse: !dlrow olleH
high: hgih
low: wol
background: submitted
background done: yes
"""
UPDATES = """\
task t1 complete: eno
task t2 complete: owt
task t3 complete: eerht
task t4 status: 1/3
task t4 data: part 1 of job
task t4 status: 2/3
task t4 data: part 2 of job
task t4 status: 3/3
task t4 data: part 3 of job
task t4 complete: all parts of job
"""
PHP_CLIENT = COMMON + """\
fail: GEARMAN_WORK_FAIL
explode: GEARMAN_WORK_EXCEPTION
""" + UPDATES + """\
task t5 fail
task t6 exception: ValueError: cannot handle that
"""
PYTHON_CLIENT = COMMON + """\
fail: JobFailed
explode: JobException: cannot handle this
""" + UPDATES


@pytest.fixture(scope="session")
def php() -> str:
    """PHP's command line with the gearman extension (Debian php-cli, php-gearman)."""
    path = shutil.which("php")
    ok = path is not None and subprocess.run(
        [path, "-r", "exit(class_exists('GearmanClient') ? 0 : 1);"],
        capture_output=True).returncode == 0
    if not ok:
        message = "php with the gearman extension not found: apt-get install php-cli php-gearman"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(path)


@pytest.fixture(scope="module", params=["gearmand", "ours"])
def address(request: pytest.FixtureRequest, module_servers: Callable[..., Any]) -> str:
    """``host:port`` of this module's gearmand, or of its ``gearman-proto server``."""
    server = module_servers(request.param)
    return f"{server.host}:{server.port}"


def serving(command: list[str], address: str) -> Iterator[subprocess.Popen[str]]:
    """Run a worker until its four functions are registered; stop it (SIGTERM) after."""
    proc = subprocess.Popen([*command, address], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        host, port = address.rsplit(":", 1)
        with AdminClient((host, int(port))) as admin:
            deadline = time.monotonic() + BOUND
            while FUNCTIONS - {r.function.decode() for r in admin.status()
                               if r.available_workers}:
                assert proc.poll() is None, f"the worker exited: {proc.communicate()}"
                assert time.monotonic() < deadline, "the worker did not register"
                time.sleep(0.05)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=BOUND)
        assert proc.returncode in (0, -signal.SIGTERM), err
        # The only tracebacks are those of the handler that raises on purpose,
        # which the worker logs (at WARNING) with the job they ended.
        assert err.count("Traceback") == err.count("(explode) raised ValueError"), err


@pytest.fixture
def python_worker(address: str) -> Iterator[subprocess.Popen[str]]:
    yield from serving([sys.executable, str(EXAMPLES / "python_worker.py")], address)


@pytest.fixture
def php_worker(php: str, address: str) -> Iterator[subprocess.Popen[str]]:
    yield from serving([php, str(EXAMPLES / "worker.php")], address)


def test_php_client_calls_our_python_worker(php: str, address: str,
                                            python_worker: subprocess.Popen[str]) -> None:
    run = subprocess.run([php, str(EXAMPLES / "client.php"), address], capture_output=True,
                         text=True, timeout=BOUND)
    assert run.returncode == 0, run.stderr
    assert run.stdout == PHP_CLIENT
    assert "Warning" not in run.stderr, run.stderr


def test_our_python_client_calls_a_php_worker(address: str,
                                              php_worker: subprocess.Popen[str]) -> None:
    run = subprocess.run([sys.executable, str(EXAMPLES / "python_client.py"), address],
                         capture_output=True, text=True, timeout=BOUND)
    assert run.returncode == 0, run.stderr
    assert run.stdout == PYTHON_CLIENT
