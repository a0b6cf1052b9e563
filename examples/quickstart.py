"""The quick start: a job server, a reverse worker and a client, then everything stopped.

    python3 -m pip install . && python3 examples/quickstart.py [PORT]

It runs, with this Python, what you would type in three terminals::

    gearman-proto server --port PORT
    python3 examples/sync/reverse_worker.py 127.0.0.1:PORT
    python3 examples/sync/reverse_client.py 127.0.0.1:PORT     # prints !dlrow olleH

PORT defaults to a free one, so a gearmand already on 4730 is no obstacle.
The children run in examples/, not the repository root, where the source folder
``gearman_proto/`` (without ``adapters/``) would shadow a ``pip install .``.
"""

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(port, server, log, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            log.seek(0)
            sys.exit(f"the job server exited:\n{log.read().decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"the job server is not listening on port {port}")
            time.sleep(0.05)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else free_port()
    address = f"127.0.0.1:{port}"
    running = []
    with tempfile.TemporaryFile() as log:
        try:
            server = subprocess.Popen(
                [sys.executable, "-m", "gearman_proto.adapters.cli", "server", "--port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, cwd=HERE)
            running.append(server)
            wait_until_listening(port, server, log)
            print(f"job server listening on {address}", file=sys.stderr)
            running.append(subprocess.Popen(
                [sys.executable, str(HERE / "sync" / "reverse_worker.py"), address]))
            print("reverse worker started; the client says:", file=sys.stderr)
            sys.stderr.flush()
            client = subprocess.run(
                [sys.executable, str(HERE / "sync" / "reverse_client.py"), address], timeout=60)
            return client.returncode
        finally:
            for process in reversed(running):  # worker, then server
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


if __name__ == "__main__":
    sys.exit(main())
