"""The README is a front page and the docs are true to the tests they cite.

The tables of docs/ that cite tests are generated (``python -m tools.gen_docs``)
from the tests' ``feature`` markers; these tests fail when a page is out of date,
when a marker or a row cannot be right, when a link is broken or when the pages do
not build with mkdocs in strict mode.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tools/ is not installed; `python -m pytest` has it, `pytest` not
    sys.path.append(str(ROOT))

from tools import gen_docs  # noqa: E402
from tools.doc_tables import TABLES, Commands  # noqa: E402
from tools.gen_docs import Cited, DocsError  # noqa: E402

README = ROOT / "README.md"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_generated_tables_and_cited_commands_are_up_to_date() -> None:
    run = _run("-m", "tools.gen_docs", "--check")
    assert run.returncode == 0, run.stderr


def _cited(feature: str, nodeid: str, *columns: str, **params: str) -> Cited:
    function, _, rest = nodeid.partition("[")
    return Cited(feature=feature, columns=columns, nodeid=nodeid, function=function,
                 param_id=rest.rstrip("]"), params=params)


def _one_of_each(extra: list[Cited]) -> list[Cited]:
    """A test for every row, so only ``extra`` can make rendering fail."""
    cited = []
    for prefix, table in TABLES.items():
        for row in table.rows:
            if isinstance(table, Commands) and "{tests}" not in table.rows[row][2]:
                continue  # a long run by hand: no test may cite it
            column = ("client",) if prefix == "tools" else ()
            kit = {"kit": "sync"} if prefix == "adapters" else {}
            cited.append(_cited(f"{prefix}.{row}", f"tests/t.py::test_{row}", *column, **kit))
    return cited + extra


def test_every_row_cited_renders() -> None:
    tables = gen_docs.render(_one_of_each([]), {}, {})
    assert set(tables) == {t.name for t in TABLES.values()}
    assert "`tests/t.py::test_echo` |  |  |  |" in tables["interop-adapters"]


def test_a_marker_naming_no_row_is_refused() -> None:
    with pytest.raises(DocsError, match=r"tests/t.py::test_x: feature\('tools.nosuch'\)"):
        gen_docs.render(_one_of_each([_cited("tools.nosuch", "tests/t.py::test_x",
                                             "client")]), {}, {})


def test_a_row_no_test_cites_is_refused() -> None:
    cited = [c for c in _one_of_each([]) if c.feature != "differences.can-do-twice"]
    with pytest.raises(DocsError, match=r"differences.can-do-twice .* no collected test"):
        gen_docs.render(cited, {}, {})


def test_an_unknown_or_missing_column_is_refused() -> None:
    with pytest.raises(DocsError, match="names column 'perl'"):
        gen_docs.render(_one_of_each([_cited("tools.fail", "tests/t.py::test_x", "perl")]),
                        {}, {})
    with pytest.raises(DocsError, match="must name its column"):
        gen_docs.render(_one_of_each([_cited("tools.fail", "tests/t.py::test_x")]), {}, {})


def test_parametrisations_collapse_to_a_pattern_or_the_function() -> None:
    some = [_cited("adapters.echo", f"tests/t.py::test_e[asyncio-gearmand-{p}]",
                   anyio_backend="asyncio", target="gearmand") for p in ("HIGH", "LOW")]
    ours = _cited("adapters.echo", "tests/t.py::test_e[asyncio-ours-HIGH]",
                  anyio_backend="asyncio", target="ours")
    table = gen_docs.render(_one_of_each([*some, ours]), {"tests/t.py::test_e": 6}, {})
    row = next(line for line in table["interop-adapters"].splitlines() if line[2:6] == "ECHO")
    assert "`tests/t.py::test_e[asyncio-gearmand-*]`" in row
    assert "ours" not in row  # the anyio suite against our own server is not interop
    whole = gen_docs.render(_one_of_each(some), {"tests/t.py::test_e": 2}, {})
    assert "`tests/t.py::test_e` |" in whole["interop-adapters"]


def test_a_stale_or_missing_block_is_found(tmp_path: Path) -> None:
    tables = gen_docs.render(_one_of_each([]), {}, {})
    for name in {t.page for t in TABLES.values()}:
        (tmp_path / name).write_text("# a page\n" + "".join(
            f"<!-- BEGIN gen_docs {t.name} -->\nold\n<!-- END gen_docs {t.name} -->\n"
            for t in TABLES.values() if t.page == name) + "the rest\n")
    page = tmp_path / TABLES["differences"].page
    now, wanted = gen_docs.pages(tables, tmp_path)[page]
    assert now != wanted and "old" not in wanted
    assert wanted == ("# a page\n<!-- BEGIN gen_docs differences -->\n" + tables["differences"]
                      + "\n<!-- END gen_docs differences -->\nthe rest\n")
    page.write_text(wanted)
    assert gen_docs.pages(tables, tmp_path)[page] == (wanted, wanted)
    page.write_text("# a page, its block deleted\n")
    with pytest.raises(DocsError, match="has no <!-- BEGIN gen_docs differences -->"):
        gen_docs.pages(tables, tmp_path)


def test_a_command_naming_no_test_is_found() -> None:
    functions = ["tests/reliability/test_faults.py::test_workers_sigkilled_mid_job"]
    good = "`python -m pytest tests/reliability/test_faults.py -k sigkilled_mid_job -s`"
    assert gen_docs.bad_commands({"p": good}, functions) == []
    for bad in ("`python -m pytest tests/reliability/test_faults.py -k renamed -s`",
                "`python -m pytest tests/reliability/test_faults.py::test_renamed`",
                "`python -m pytest tests/reliability/test_gone.py`"):
        assert len(gen_docs.bad_commands({"p": bad}, functions)) == 1, bad


def test_readme_is_a_front_page_whose_links_resolve() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "no links to the docs"
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_every_page_is_in_the_site() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert [p for p in pages if f": {p}" not in nav] == []


def test_readme_test_command_reads_the_ci_package_list() -> None:
    text = README.read_text()
    assert ("apt-get update && apt-get install -y $(grep -v '^#' .ci/apt-packages) && "
            "pip install -e '.[test]' && python -m pytest") in text
    listed = subprocess.run(["sh", "-c", "grep -v '^#' .ci/apt-packages"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    assert "gearman-job-server" in listed and all(not p.startswith("#") for p in listed)


def test_docs_build_in_strict_mode(tmp_path: Path) -> None:
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        message = "mkdocs is not installed: pip install -e '.[docs]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    run = _run("-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "site" / "interoperability" / "index.html").exists()
