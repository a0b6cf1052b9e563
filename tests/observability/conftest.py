"""Our job server with ``--http`` on, for the observability tests; helpers are in _observability."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the test modules import _observability

from _observability import free_ports, wait_http


@pytest.fixture
def http_server(our_server_factory: Callable[..., Any]) -> Callable[..., tuple[Any, str]]:
    """``factory(loop="asyncio", extra=())``: our server with --http on a free loopback port,
    as ``(ServerProcess, "http://127.0.0.1:PORT/")``; stopped after the test."""

    def factory(loop: str = "asyncio", extra: tuple[str, ...] = ()) -> tuple[Any, str]:
        job_port, port = free_ports(2)
        server = our_server_factory(job_port, extra=("--http", f"127.0.0.1:{port}", *extra),
                                    loop=loop)
        base = f"http://127.0.0.1:{port}/"
        wait_http(base)
        return server, base

    return factory
