"""The build backend: setuptools, plus mypy (which brings mypyc) when a compiled build
is asked for with ``GEARMAN_PROTO_USE_MYPYC=1``.

A plain ``pip install .`` needs nothing but setuptools and no C compiler; only the
compiled build needs mypyc at build time, so it is asked for only then.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools.build_meta import *  # noqa: F403  # every hook not overridden below


def _requires() -> list[str]:
    # setuptools' own hooks would run setup.py to find its setup_requires (it has
    # none), and setup.py imports mypyc for a compiled build: answer directly.
    # mypy 2.2 or later: events.py asks mypyc for acyclic classes (mypyc_attr(acyclic=True),
    # new in 2026), which an older mypyc refuses.
    return ["mypy>=2.2"] if os.environ.get("GEARMAN_PROTO_USE_MYPYC") == "1" else []


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires()


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires()
