"""Every Python example in the README and in docs/ runs, and prints what the page says.

An example is a ``python`` block right after a ``<!-- readme-example: NAME -->``
comment, in README.md or in a page of docs/.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE = re.compile(r"<!-- readme-example: ([\w-]+) -->\n```python\n(.*?)```", re.S)


def _examples() -> dict[str, str]:
    found: dict[str, str] = {}
    for page in PAGES:
        for name, code in EXAMPLE.findall(page.read_text()):
            assert name not in found, f"example {name!r} appears twice"
            found[name] = code
    return found


def _example(name: str) -> str:
    examples = _examples()
    assert name in examples, f"example {name!r} not found in README.md or docs/"
    return examples[name]


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_example_is_run_here() -> None:
    """An example added to a page without a test here would never run."""
    assert sorted(_examples()) == ["asyncio", "core", "epoch", "sync", "trio"]


def test_core_example_reverses_hello_world_in_memory() -> None:
    lines = _run(_example("core")).splitlines()
    assert lines == [
        "JobCreated(handle=b'H:gearman-proto:1')",
        "Noop()",
        "WorkComplete(handle=b'H:gearman-proto:1', data=b'!dlrow olleH')",
    ]


def test_epoch_example_is_held_until_its_time() -> None:
    lines = _run(_example("epoch")).splitlines()
    assert lines == [
        "[(1, JobCreated(handle=b'H:gearman-proto:1'))]",
        "1060.0",
        "[]",
        "[(2, Noop())]",
        "[(2, JobAssign(handle=b'H:gearman-proto:1', function=b'report', data=b'q3',"
        " unique=b'', reducer=None))]",
    ]


def _against(name: str, port: int) -> str:
    return _run(_example(name).replace("localhost:4730", f"127.0.0.1:{port}"))


def test_sync_example_against_our_server(our_server: Any) -> None:
    assert _against("sync", our_server.port).splitlines() == ["b'!dlrow olleH'"]


def test_asyncio_example_against_our_server(our_server: Any) -> None:
    assert _against("asyncio", our_server.port).splitlines() == ["b'!dlrow olleH'"]


def test_trio_example_against_our_server(our_server: Any) -> None:
    assert _against("trio", our_server.port).splitlines() == ["b'!dlrow olleH'"]
