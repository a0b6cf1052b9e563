"""OpenStack gear's job server on 127.0.0.1:PORT until SIGTERM.

    python -m benchmarks._gear_server PORT
"""

from __future__ import annotations

import signal
import sys

import gear


def main() -> None:
    port = int(sys.argv[1])
    server = gear.Server(port, host="127.0.0.1")
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown() or sys.exit(0))
    signal.pause()


if __name__ == "__main__":
    main()
