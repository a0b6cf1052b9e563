"""The dashboard in a real browser: Debian's chromium, headless, driven by chromium-driver.

The page loads from the server's own listener, shows a function with queued
jobs, a running job with its WORK_STATUS progress and a worker's client id,
updates when a job completes, and shows attacker-chosen names as text: a
function named ``<img src=x onerror=alert(1)>`` is a line of text, not an image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _observability import BOUND, wait_until, worker_for
from gearman_proto.adapters.sync import Client, Worker, WorkerJob

XSS = "<img src=x onerror=alert(1)>"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,900")


def _need(path: str | None, what: str) -> str:
    if path is None:
        message = f"{what} not found: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless chromium with a fresh profile, through selenium and Debian's chromedriver."""
    binary = _need(shutil.which("chromium"), "chromium")
    driver_path = _need(shutil.which("chromedriver"), "chromedriver")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "driver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(BOUND)
    try:
        yield driver
    finally:
        driver.quit()


def cells(driver: Any, table: str) -> list[list[str]]:
    """The text of every body cell of table ``#table``, row by row (read in the page)."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "return [...document.querySelectorAll(arguments[0])].map("
        "tr => [...tr.cells].map(td => td.textContent));", f"#{table} tbody tr")


def function_row(driver: Any, name: str) -> list[str] | None:
    return next((r for r in cells(driver, "functions") if r[0] == name), None)


def test_the_dashboard_shows_queues_progress_and_updates_live(
        http_server: Callable[..., Any], browser: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    server, base = http_server()
    release = threading.Event()
    holder = Worker([server.address], client_id="<b>holder</b>")

    def hold(job: WorkerJob) -> bytes:
        job.send_status(1, 4)
        release.wait(BOUND)
        return b"done"
    holder.register("slow", hold)
    thread = threading.Thread(target=holder.work, args=(1,), daemon=True)
    try:
        with Client([server.address]) as client:
            for i in range(3):
                client.submit("resize", b"img%d" % i, background=True)
            client.submit(XSS, b"x", background=True)
            client.submit("slow", b"x", background=True)
            thread.start()

            browser.get(base)
            wait_until(lambda: function_row(browser, "resize") is not None,
                       "the page to list resize")
            # columns: function, high, normal, low, scheduled, running, workers, submitted,
            # completed, ...
            assert function_row(browser, "resize")[1:4] == ["0", "3", "0"]

            # Attacker-chosen names are text: no element was made of them, no script ran.
            wait_until(lambda: function_row(browser, XSS) is not None, "the XSS row")
            assert browser.find_elements(By.TAG_NAME, "img") == []
            with pytest.raises(NoAlertPresentException):
                browser.switch_to.alert.text  # noqa: B018 (raises if an alert is open)

            # The running job with its WORK_STATUS, and its worker with its client id.
            wait_until(lambda: any(r[1] == "slow" and r[3].strip() == "1/4"
                                   for r in cells(browser, "running")),
                       "the running job's progress")
            assert any(r[2] == "<b>holder</b>" for r in cells(browser, "workers"))
            assert browser.find_elements(By.CSS_SELECTOR, "#workers b") == []

            # One resize job completes: the page follows without a reload.
            with worker_for(server.address, "resize", 1):
                pass
            wait_until(lambda: (function_row(browser, "resize") or [])[2:3] == ["2"]
                       and function_row(browser, "resize")[8] == "1",  # type: ignore[index]
                       "the page to show the completed job")
            assert browser.find_element(By.ID, "completed-total").text == "1"
            assert browser.find_element(By.ID, "live").get_attribute("class") == "pill ok"
    finally:
        release.set()
        holder.stop(graceful=False)
        if thread.is_alive():
            thread.join(BOUND)


def test_the_screenshot_script_makes_both_pictures(tmp_path: Path) -> None:
    """docs/screenshots.py, which made docs/img/, still works (a short load, a fresh dir)."""
    _need(shutil.which("chromium"), "chromium")
    _need(shutil.which("tmux"), "tmux")
    script = Path(__file__).resolve().parents[2] / "docs" / "screenshots.py"
    proc = subprocess.run([sys.executable, str(script), "--out", str(tmp_path),
                           "--seconds", "2"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    for name in ("dashboard.png", "top.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, name
