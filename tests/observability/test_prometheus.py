"""The example Prometheus files of docs/, checked by Debian's promtool, and a real scrape.

A real Prometheus (Debian's ``prometheus``) scrapes our server's /metrics and
answers a query with what the server holds: our exposition is what Prometheus
reads, not just what our parser reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _observability import BOUND, free_port, get, wait_until
from gearman_proto.adapters.sync import Client

pytestmark = pytest.mark.interop

DOCS = Path(__file__).resolve().parents[2] / "docs" / "prometheus"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: apt-get install prometheus"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.mark.parametrize("args", [["check", "config", "prometheus.yml"],
                                  ["check", "rules", "gearman-rules.yml"],
                                  ["test", "rules", "gearman-rules.test.yml"]],
                         ids=["config", "rules", "rule-tests"])
def test_promtool_accepts_the_examples(args: list[str]) -> None:
    proc = subprocess.run([tool("promtool"), *args], cwd=DOCS, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_real_prometheus_scrapes_the_server(http_server: Callable[..., Any],
                                              tmp_path: Path) -> None:
    binary = tool("prometheus")
    server, base = http_server()
    with Client([server.address]) as client:
        for i in range(4):
            client.submit("resize", b"%d" % i, background=True)
    target = base.removeprefix("http://").rstrip("/")
    config = (DOCS / "prometheus.yml").read_text().replace("127.0.0.1:9101", target)
    config = config.replace("scrape_interval: 15s", "scrape_interval: 1s")
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(DOCS / "gearman-rules.yml", tmp_path)
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        query = urllib.parse.quote('sum(gearman_jobs_queued{function="resize"})')
        url = f"http://127.0.0.1:{port}/api/v1/query?query={query}"

        def answered() -> bool:
            try:
                code, _, body = get(url)
            except OSError:
                return False
            result = json.loads(body)["data"]["result"] if code == 200 else []
            return bool(result) and result[0]["value"][1] == "4"
        wait_until(answered, "Prometheus to scrape 4 queued resize jobs")
        _code, _, body = get(f"http://127.0.0.1:{port}/api/v1/targets")
        (active,) = json.loads(body)["data"]["activeTargets"]
        assert active["health"] == "up", active.get("lastError")
    finally:
        proc.terminate()
        try:
            proc.wait(BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
