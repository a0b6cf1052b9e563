"""Make the screenshots of docs/observability.md: the dashboard and ``gearman-proto top``.

Starts our job server with ``--http`` on free loopback ports, puts a small load
on it (workers that report progress, a function nobody serves), then

* photographs the dashboard with headless chromium (``--screenshot``), and
* runs ``gearman-proto top`` in a tmux of its own, captures the pane as text
  and photographs that text, rendered as a terminal, with chromium too.

    python docs/screenshots.py                 # writes docs/img/dashboard.png, top.png
    python docs/screenshots.py --out /tmp/img --seconds 5

Needs Debian's chromium and tmux.  Everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import html
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from gearman_proto.adapters.sync import Client, Worker, WorkerJob

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def screenshot(url: str, out: Path, size: tuple[int, int], budget_ms: int = 3000) -> None:
    """Photograph ``url`` with a fresh headless chromium profile."""
    binary = shutil.which("chromium")
    if binary is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                        f"--window-size={size[0]},{size[1]}",
                        f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=120)


def terminal_page(lines: list[str], title: str) -> str:
    """A page that shows captured terminal text as a terminal would."""
    body = html.escape("\n".join(lines))
    return ("<!DOCTYPE html><meta charset=utf-8><title>" + html.escape(title) + "</title>"
            "<style>body{margin:0;background:#1e1e1e}pre{margin:0;padding:12px 16px;"
            "color:#d4d4d4;font:14px/1.35 'DejaVu Sans Mono',monospace}</style>"
            f"<pre>{body}</pre>")


class Load:
    """Workers and clients that keep the server looking busy until :meth:`stop`."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.stopping = threading.Event()
        self.workers: list[Worker] = []
        self.threads: list[threading.Thread] = []

    def worker(self, function: str, client_id: str, seconds: float, max_jobs: int) -> None:
        w = Worker([self.address], client_id=client_id, max_jobs=max_jobs)

        def run(job: WorkerJob) -> bytes:
            for step in range(1, 5):
                job.send_status(step, 4)
                if self.stopping.wait(seconds / 4):
                    break
            return job.data[::-1]
        w.register(function, run)
        self.workers.append(w)
        self.threads.append(threading.Thread(target=w.work, daemon=True))

    def submitter(self) -> None:
        def run() -> None:
            rng = random.Random(1)
            with Client([self.address]) as client:
                for i in range(12):
                    client.submit("send-mail", b"mail %d" % i, background=True)
                while not self.stopping.wait(rng.uniform(0.02, 0.12)):
                    client.submit("resize", b"image %d" % rng.randrange(10**6), background=True)
                    if rng.random() < 0.5:
                        client.submit("thumbnail", b"t", background=True)
        self.threads.append(threading.Thread(target=run, daemon=True))

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for w in self.workers:
            w.stop(graceful=False)
        for t in self.threads:
            t.join(10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "img")
    p.add_argument("--seconds", type=float, default=20.0,
                   help="how long the load runs before the photographs (the chart's history)")
    args = p.parse_args(argv)
    tmux = shutil.which("tmux")
    if tmux is None:
        raise SystemExit("tmux not found: apt-get install tmux")
    args.out.mkdir(parents=True, exist_ok=True)
    port, http_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}/"
    server = subprocess.Popen([sys.executable, "-m", "gearman_proto.adapters.cli", "server",
                               "--port", str(port), "--http", f"127.0.0.1:{http_port}",
                               "--job-handle-prefix", "H:demo"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    sock = ["-L", f"gp-shots-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]
    load = None
    try:
        wait_for(base + "api/status")
        load = Load(("127.0.0.1", port))
        load.worker("resize", "resizer-1", 0.8, 4)
        load.worker("resize", "resizer-2", 0.8, 4)
        load.worker("thumbnail", "thumbs-a", 0.3, 2)
        load.submitter()
        load.start()
        time.sleep(args.seconds)

        screenshot(base, args.out / "dashboard.png", (1280, 900))

        top = [sys.executable, "-m", "gearman_proto.adapters.cli", "top",
               "-h", f"127.0.0.1:{port}", "-d", "1"]
        subprocess.run([tmux, *sock, "new-session", "-d", "-s", "top", "-x", "104", "-y", "14",
                        " ".join(top)], check=True, timeout=20)
        time.sleep(3.5)  # two refreshes: the growth column has a rate
        lines = subprocess.run([tmux, *sock, "capture-pane", "-p", "-t", "top"],
                               capture_output=True, text=True, check=True,
                               timeout=20).stdout.splitlines()
        page = args.out / "top.html"
        page.write_text(terminal_page(lines, "gearman-proto top"))
        screenshot(page.as_uri(), args.out / "top.png", (900, 270), budget_ms=500)
        page.unlink()
    finally:
        subprocess.run([tmux, *sock, "kill-server"], capture_output=True, timeout=20)
        if load is not None:
            load.stop()
        server.terminate()
        server.wait(20)
    print(f"wrote {args.out / 'dashboard.png'} and {args.out / 'top.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
