"""Instructions per decoded event through the public client and worker API, by cachegrind.

The deterministic figure behind the decode rows of ``python -m benchmarks.codec``:
the same streams (JOB_ASSIGN_UNIQ with ``--payload`` bytes of data for the
worker; a JOB_CREATED and a WORK_COMPLETE per job for the client; gear's
``readPacket`` + four ``getArgument`` beside them), fed in 4096-byte reads to
``receive_data`` + ``events()``.  Each side is run under
``valgrind --tool=cachegrind`` twice, once decoding ``--events`` packets and
once building the same stream and decoding nothing, and the difference is
divided by the count, so start-up and the stream's construction cancel.
``PYTHONHASHSEED=0`` keeps the handles' hashes (and so the ``jobs`` dict's
probing) the same from run to run.

    python -m benchmarks.decode_ir                  # worker, client and gear, 8000 each
    python -m benchmarks.decode_ir --sides worker   # one side
    python -m benchmarks.decode_ir --run worker 8000 1   # one process, no valgrind

Which build it counts is the one this Python imports (``gearman_proto.COMPILED``
is printed beside each figure).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

SIDES = ("worker", "client", "gear")


def _run(side: str, n: int, decode: bool, payload: int) -> None:
    """Build ``side``'s stream of ``n`` packets and, if ``decode``, decode it once."""
    from benchmarks.codec import (
        _assign_args,
        _chunks,
        gear_parser,
        ours_client_connection,
        ours_worker_connection,
    )
    from gearman_proto.packets import RES, PacketType, encode_packet

    data = b"x" * payload
    assign = b"".join(encode_packet(RES, PacketType.JOB_ASSIGN_UNIQ, _assign_args(i, data))
                      for i in range(n))
    if side == "worker":
        run = ours_worker_connection(_chunks(assign, 4096), n, 1)
    elif side == "client":
        handles = [_assign_args(i, data)[0] for i in range(n)]
        stream = b"".join(encode_packet(RES, PacketType.JOB_CREATED, (h,)) for h in handles)
        stream += b"".join(encode_packet(RES, PacketType.WORK_COMPLETE, (h, data))
                           for h in handles)
        run = ours_client_connection(_chunks(stream, 4096), n, 1)
    else:
        def run() -> int:
            return gear_parser(assign, True)
    if decode:
        count = run()
        want = 2 * n if side == "client" else n
        if count != want:
            raise SystemExit(f"{side}: decoded {count} events, expected {want}")


def _instructions(side: str, n: int, decode: bool, payload: int) -> int:
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
           "--cachegrind-out-file=/dev/null", sys.executable, "-m", "benchmarks.decode_ir",
           "--payload", str(payload), "--run", side, str(n), "1" if decode else "0"]
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stderr
    match = re.search(r"I\s+refs:\s+([\d,]+)", out)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out}")
    return int(match.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=8000, help="packets per counted run")
    p.add_argument("--payload", type=int, default=100, help="job data bytes")
    p.add_argument("--sides", default=",".join(SIDES), help="of worker,client,gear")
    p.add_argument("--run", nargs=3, metavar=("SIDE", "N", "DECODE"),
                   help="(used under valgrind) build SIDE's stream of N and decode it if DECODE=1")
    args = p.parse_args(argv)
    if args.run:
        side, n, decode = args.run
        _run(side, int(n), decode == "1", args.payload)
        return 0
    import gearman_proto

    for side in args.sides.split(","):
        if side not in SIDES:
            p.error(f"--sides: unknown side {side!r} (of {', '.join(SIDES)})")
        n = args.events
        per = (_instructions(side, n, True, args.payload)
               - _instructions(side, n, False, args.payload)) / n
        unit = "per job (JOB_CREATED + WORK_COMPLETE)" if side == "client" else "per event"
        print(f"{side:7s} {per:10,.0f} instructions {unit}; compiled={gearman_proto.COMPILED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
