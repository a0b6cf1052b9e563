"""``python -m gearman_proto``, the sdist, and a clone used after ``pip install .``."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
from clitools import BOUND

import gearman_proto

ROOT = Path(__file__).resolve().parents[2]


def test_python_dash_m_gearman_proto_runs_the_command() -> None:
    run = subprocess.run([sys.executable, "-m", "gearman_proto", "--version"],
                         capture_output=True, timeout=BOUND, cwd="/")
    assert (run.returncode, run.stdout) == (0, f"gearman-proto {gearman_proto.__version__}\n"
                                               .encode())
    run = subprocess.run([sys.executable, "-m", "gearman_proto", "server", "-p", "99999"],
                         capture_output=True, timeout=BOUND, cwd="/")
    assert run.returncode == 2
    assert run.stderr.startswith(b"gearman-proto server: argument -p/--port: ")


def plain_venv(where: Path) -> Path:
    """A virtualenv that sees this one's packages (pytest, setuptools, ...) but not its
    editable gearman-proto: a .pth line adds the site-packages directory, whose own
    .pth files (the editable install's finder) are then not run."""
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path("
                           "'purelib'))"], capture_output=True, text=True, check=True,
                          timeout=BOUND).stdout.strip()
    Path(site, "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


@pytest.mark.slow
def test_the_sdist_carries_the_tests_and_runs_them_from_a_clone(tmp_path: Path) -> None:
    """Build the sdist, install it (not editable) in a fresh environment, unpack it and
    run tests from the unpacked tree, as `pip download` + the README's test command do.
    The tree's own gearman_proto/ comes first on sys.path there (python -m puts the
    current directory first): gearman_proto.adapters must still import."""
    pytest.importorskip("build")
    dist = tmp_path / "dist"
    made = subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir",
                           str(dist), str(ROOT)], capture_output=True, timeout=600)
    assert made.returncode == 0, made.stderr.decode()[-3000:]
    archive = next(dist.glob("gearman_proto-*.tar.gz"))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        for wanted in ("tests/cli/clitools.py", "tests/conftest.py", "examples/quickstart.py",
                       "benchmarks/core.py", "fuzz/fuzz.py", "MANIFEST.in",
                       ".ci/apt-packages", "docs/cli.md"):
            assert f"{top}/{wanted}" in names, wanted
        info = tar.extractfile(f"{top}/PKG-INFO")
        assert info is not None
        metadata = info.read().decode()
        assert "Name: gearman-proto" in metadata and "Requires-Python: >=3.10" in metadata
        tar.extractall(tmp_path / "unpacked", filter="data")
    python = plain_venv(tmp_path / "env")
    wheel = next(dist.glob("gearman_proto-*.whl"))
    # The dashboard's files are package data, not modules: a packaging change can
    # drop them with no import failing.
    with zipfile.ZipFile(wheel) as whl:
        shipped = set(whl.namelist())
    for page in ("index.html", "app.js", "style.css"):
        assert f"gearman_proto/adapters/dashboard/{page}" in shipped, page
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    tree = tmp_path / "unpacked" / top
    script = tree / "my_script.py"
    script.write_text("import gearman_proto.adapters.sync as s\nprint(s.__name__)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([python, "my_script.py"], cwd=tree, capture_output=True,
                         timeout=BOUND, env=env)
    assert (run.returncode, run.stdout) == (0, b"gearman_proto.adapters.sync\n"), run.stderr
    run = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_purity.py", "tests/test_packets.py",
                          "tests/cli/test_packaging.py::"
                          "test_python_dash_m_gearman_proto_runs_the_command"],
                         cwd=tree, capture_output=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout.decode()[-3000:]
