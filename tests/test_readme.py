"""Every Python example in the README runs, and prints what the README says it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"


def _example(name: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- readme-example: {name} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"README example {name!r} not found"
    return match.group(1)


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_core_example_reverses_hello_world_in_memory() -> None:
    lines = _run(_example("core")).splitlines()
    assert lines == [
        "JobCreated(handle=b'H:gearman-proto:1')",
        "Noop()",
        "WorkComplete(handle=b'H:gearman-proto:1', data=b'!dlrow olleH')",
    ]


def test_asyncio_example_against_our_server(our_server: Any) -> None:
    code = _example("asyncio").replace("localhost:4730", f"127.0.0.1:{our_server.port}")
    assert _run(code).splitlines() == ["b'!dlrow olleH'"]
