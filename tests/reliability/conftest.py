"""Fixtures of the reliability suite; its helpers are in ``_support.py``.

The tests here run real processes on loopback: our server (``our_server_factory``
from ``tests/conftest.py``), worker processes from ``_worker.py`` killed with
SIGKILL, and raw sockets that speak the protocol through the core's own
connection classes, so what a test counts is exactly what went over the wire.

Long runs are marked ``soak`` and are not part of the default run (see
``pyproject.toml``); the README's Reliability section gives the commands.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the test modules import _support

from _support import workers  # noqa: F401  (the fixture, shared with the store tests)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: minutes-long run; skipped unless GEARMAN_SOAK_SECONDS is set")


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A seeded random generator; the seed is printed, and GEARMAN_SEED replays it."""
    seed = int(os.environ.get("GEARMAN_SEED", random.randrange(2**32)))
    print(f"GEARMAN_SEED={seed}")
    return random.Random(seed)
