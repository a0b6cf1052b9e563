"""DESIGN.md: the core imports nothing that does I/O; the adapters live apart."""

from __future__ import annotations

import json
import subprocess
import sys

IO_MODULES = {"socket", "ssl", "asyncio", "selectors", "select", "threading", "trio", "anyio",
              "sqlite3", "subprocess", "uvloop"}

CORE_MODULES = ["gearman_proto", "gearman_proto.packets", "gearman_proto.events",
                "gearman_proto.errors", "gearman_proto.admin", "gearman_proto.client",
                "gearman_proto.worker", "gearman_proto.server", "gearman_proto.broker",
                "gearman_proto.store", "gearman_proto.session", "gearman_proto.hub"]


def test_core_imports_no_io_module() -> None:
    # Some interpreters import threading at startup (site hooks, .pth files), so
    # what counts is what importing the core adds to a fresh interpreter.
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        f"for m in {CORE_MODULES!r}: __import__(m)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True, cwd="/")
    loaded = set(json.loads(out.stdout))
    assert "gearman_proto.broker" in loaded
    assert loaded & IO_MODULES == set()
    assert not any(m.startswith("gearman_proto.adapters") for m in loaded)


def test_core_ships_py_typed() -> None:
    import importlib.resources

    assert importlib.resources.files("gearman_proto").joinpath("py.typed").is_file()
