"""Write the docs' tables that cite tests, from the tests' ``feature`` markers.

    python -m tools.gen_docs            # rewrite the tables in docs/
    python -m tools.gen_docs --check    # exit 1, naming each stale page, if one is out of date

Both also check every ``python -m pytest ...`` command written in README.md and
docs/: each test path, ``path::test`` and ``-k word`` it names must select a
collected test.

The tests are collected (``pytest --collect-only``, in this process, with a plugin
that reads each item's markers), so every test id in a table is one pytest collects
today: a renamed or removed test changes the table, and ``--check`` (run by
``tests/test_docs.py``) fails until the page is regenerated.  What a row says lives in
``tools/doc_tables.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.doc_tables import TABLES, Commands, Matrix

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


class DocsError(Exception):
    """A marker or a table that cannot be right: the message names the test or the row."""


@dataclass(frozen=True)
class Cited:
    """One collected test under one ``feature`` marker."""

    feature: str  # "TABLE.ROW"
    columns: tuple[str, ...]  # named in the marker; empty: the table's rule decides
    nodeid: str  # tests/x.py::test_f[a-b]
    function: str  # tests/x.py::test_f
    param_id: str  # a-b, or "" when not parametrised
    params: dict[str, str]


class _Collector:
    """A pytest plugin that keeps the ``feature`` markers of the collected tests."""

    def __init__(self) -> None:
        self.cited: list[Cited] = []
        self.counts: dict[str, int] = {}  # function -> its collected items
        self.files: dict[str, set[str]] = {}  # file -> its test functions
        self.errors: list[str] = []

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.errors.append(f"{report.nodeid}: {report.longreprtext}")

    def pytest_collection_modifyitems(self, items: Sequence[Any]) -> None:
        for item in items:
            function = item.nodeid.split("[", 1)[0]
            self.counts[function] = self.counts.get(function, 0) + 1
            self.files.setdefault(function.split("::", 1)[0], set()).add(function)
            callspec = getattr(item, "callspec", None)
            for mark in item.iter_markers("feature"):
                if not mark.args or not all(isinstance(a, str) for a in mark.args):
                    raise DocsError(f"{item.nodeid}: feature() takes a row id and column "
                                    f"names, as strings; got {mark.args!r}")
                self.cited.append(Cited(
                    feature=mark.args[0], columns=tuple(mark.args[1:]), nodeid=item.nodeid,
                    function=function, param_id=callspec.id if callspec else "",
                    params={k: str(v) for k, v in callspec.params.items()} if callspec else {}))


def collect(paths: Iterable[str] = ("tests",)) -> _Collector:
    """Collect the tests under ``paths`` (relative to the repository) and their markers."""
    import pytest  # only this needs it; the rendering below is plain Python

    collector = _Collector()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider",
                            "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
                            *(str(ROOT / p) for p in paths)], plugins=[collector])
    if collector.errors or code not in (0, 5):  # 5: nothing collected
        detail = "\n".join(collector.errors) or out.getvalue()[-3000:]
        raise DocsError(f"collecting the tests failed (pytest exit {int(code)}):\n{detail}")
    return collector


def _code(text: str) -> str:
    return f"`{text}`"


def _citations(cited: Sequence[Cited], counts: dict[str, int]) -> list[str]:
    """The tests of one cell, shortest first: a whole function when all its
    parametrisations are here, else its ids with ``*`` where they differ."""
    by_function: dict[str, list[Cited]] = {}
    for c in cited:
        if c.nodeid not in {x.nodeid for x in by_function.get(c.function, [])}:
            by_function.setdefault(c.function, []).append(c)
    out = []
    for function, group in by_function.items():
        if not group[0].param_id or (len(group) > 1 and len(group) == counts.get(function, 0)):
            out.append(_code(function))
        elif len(group) == 1:
            out.append(_code(group[0].nodeid))
        else:
            tokens = [c.param_id.split("-") for c in group]
            if len({len(t) for t in tokens}) != 1:
                out.extend(_code(c.nodeid) for c in group)
                continue
            pattern: list[str] = []
            for column in zip(*tokens, strict=True):
                token = column[0] if len(set(column)) == 1 else "*"
                if not (token == "*" and pattern and pattern[-1] == "*"):
                    pattern.append(token)
            out.append(_code(f"{function}[{'-'.join(pattern)}]"))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _matrix(table: Matrix, prefix: str, rows: dict[str, list[Cited]],
            counts: dict[str, int]) -> str:
    lines = ["| " + " | ".join([table.corner, *table.columns.values()]) + " |",
             "| " + " | ".join(["---"] * (1 + len(table.columns))) + " |"]
    for row, words in table.rows.items():
        cells: dict[str, list[Cited]] = {key: [] for key in table.columns}
        for c in rows.get(row, []):
            if c.columns:
                columns: tuple[str, ...] = c.columns
            elif len(table.columns) == 1:
                columns = tuple(table.columns)
            elif table.column_of is not None:
                found = table.column_of(c.params)
                if found is None:
                    continue
                columns = (found,)
            else:
                raise DocsError(f"{c.nodeid}: feature({c.feature!r}) must name its column: "
                                f"one of {', '.join(table.columns)}")
            for column in columns:
                if column not in cells:
                    raise DocsError(f"{c.nodeid}: feature({c.feature!r}) names column "
                                    f"{column!r}; {prefix} has {', '.join(table.columns)}")
                cells[column].append(c)
        if not any(cells.values()):
            raise DocsError(f"row {prefix}.{row} ({words}) is cited by no collected test")
        texts = []
        for key, tests in cells.items():
            text = ", ".join(_citations(tests, counts))
            note = table.notes.get((row, key))
            texts.append(f"{text} {note}" if note and text else text)
        lines.append("| " + " | ".join(_cell(t) for t in [words, *texts]) + " |")
    return "\n".join(lines)


def _commands(table: Commands, prefix: str, rows: dict[str, list[Cited]],
              files: dict[str, set[str]]) -> str:
    lines = ["| " + " | ".join(table.header) + " |", "| --- | --- | --- |"]
    for row, (what, figure, command) in table.rows.items():
        functions = list(dict.fromkeys(c.function for c in rows.get(row, [])))
        if "{tests}" in command:
            if not functions:
                raise DocsError(f"row {prefix}.{row} ({what}) is cited by no collected test")
            targets = []
            for function in functions:  # a whole file when every test in it is cited
                path = function.split("::", 1)[0]
                if files.get(path, set()) <= set(functions):
                    if path not in targets:
                        targets.append(path)
                else:
                    targets.append(function)
            command = command.replace("{tests}", " ".join(targets))
        elif functions:
            raise DocsError(f"row {prefix}.{row} runs by hand; {functions[0]} cannot cite it")
        text = _code(command)
        if row in table.notes:
            text += " " + table.notes[row]
        lines.append("| " + " | ".join(_cell(t) for t in (what, figure, text)) + " |")
    return "\n".join(lines)


def render(cited: Sequence[Cited], counts: dict[str, int],
           files: dict[str, set[str]]) -> dict[str, str]:
    """Every table's Markdown, by table name; a marker naming an unknown row is an error."""
    by_table: dict[str, dict[str, list[Cited]]] = {prefix: {} for prefix in TABLES}
    for c in cited:
        prefix, _, row = c.feature.partition(".")
        table = TABLES.get(prefix)
        if table is None or row not in table.rows:
            raise DocsError(f"{c.nodeid}: feature({c.feature!r}) names no row of "
                            f"tools/doc_tables.py")
        by_table[prefix].setdefault(row, []).append(c)
    out = {}
    for prefix, table in TABLES.items():
        if isinstance(table, Matrix):
            out[table.name] = _matrix(table, prefix, by_table[prefix], counts)
        else:
            out[table.name] = _commands(table, prefix, by_table[prefix], files)
    return out


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- BEGIN gen_docs {re.escape(name)} -->\n)(.*?)"
                      rf"(<!-- END gen_docs {re.escape(name)} -->)", re.S)


def fill(page: str, text: str, tables: dict[str, str]) -> str:
    """``text`` with each table of ``tables`` written between its markers."""
    for name, markdown in tables.items():
        match = _block(name).search(text)
        if match is None:
            raise DocsError(f"docs/{page} has no <!-- BEGIN gen_docs {name} --> ... "
                            f"<!-- END gen_docs {name} --> block")
        text = text[:match.start(2)] + markdown + "\n" + text[match.end(2):]
    return text


def pages(tables: dict[str, str], docs: Path = DOCS) -> dict[Path, tuple[str, str]]:
    """Each page holding a table: (its text now, its text with the tables written)."""
    wanted: dict[str, dict[str, str]] = {}
    for table in TABLES.values():
        wanted.setdefault(table.page, {})[table.name] = tables[table.name]
    out = {}
    for page, its_tables in wanted.items():
        path = docs / page
        text = path.read_text()
        out[path] = (text, fill(page, text, its_tables))
    return out


_PYTEST = re.compile(r"python -m pytest\b([^`#\n]*)")


def _selects(target: str, word: str | None, functions: Iterable[str]) -> bool:
    """Whether ``pytest target [-k word]`` collects something."""
    path, _, name = target.partition("::")
    chosen = [f for f in functions
              if f == f"{path}::{name}" or (not name and (f.startswith(path.rstrip("/") + "/")
                                                          or f.split("::")[0] == path))]
    return any(word is None or word in f.split("::", 1)[1] for f in chosen)


def bad_commands(texts: dict[str, str], functions: Iterable[str]) -> list[str]:
    """The pytest commands in ``texts`` (page name -> text) that select no collected test."""
    functions = list(functions)
    bad = []
    for page, text in texts.items():
        for match in _PYTEST.finditer(text):
            try:
                args = shlex.split(match.group(1))
            except ValueError:
                args = match.group(1).split()
            word = args[args.index("-k") + 1] if "-k" in args[:-1] else None
            if word is not None and not re.fullmatch(r"\w+", word):
                word = None  # an expression: pytest's to judge
            targets = [a for a in args if a.startswith("tests")]
            for target in targets or ["tests"]:
                if not _selects(target.split("[", 1)[0], word, functions):
                    bad.append(f"{page}: `python -m pytest{match.group(1).rstrip()}` "
                               f"selects no test ({target}{f' -k {word}' if word else ''})")
    return bad


def command_pages() -> dict[str, str]:
    """README.md and every page of docs/, by name."""
    paths = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    return {str(p.relative_to(ROOT)): p.read_text() for p in paths}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gen_docs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a page is out of date")
    args = parser.parse_args(argv)
    try:
        found = collect()
        result = pages(render(found.cited, found.counts, found.files))
    except DocsError as exc:
        print(f"gen_docs: {exc}", file=sys.stderr)
        return 2
    bad = bad_commands(command_pages(), found.counts)
    for line in bad:
        print(f"gen_docs: {line}", file=sys.stderr)
    stale = [path for path, (now, wanted) in result.items() if now != wanted]
    for path in stale:
        name = path.relative_to(ROOT)
        if args.check:
            print(f"gen_docs: {name} is out of date: run python -m tools.gen_docs",
                  file=sys.stderr)
        else:
            path.write_text(result[path][1])
            print(f"gen_docs: wrote {name}")
    return 1 if bad or (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
