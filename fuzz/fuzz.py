"""Coverage-guided fuzzing of the core with atheris (libFuzzer); not part of CI.

    pip install atheris
    python fuzz/fuzz.py decoder -atheris_runs=1000000
    python fuzz/fuzz.py server  -atheris_runs=1000000
    python fuzz/fuzz.py hub     -max_total_time=600 fuzz/corpus-hub
    python fuzz/fuzz.py conversation -max_len=8192 -len_control=0 -max_total_time=600

The first argument picks the target (see ``fuzz/harness.py`` for what each
checks; ``conversation`` is the hub fed by ``gearman_proto.strategies.conversations``
through hypothesis' ``fuzz_one_input``, so libFuzzer's coverage steers the
strategy); the rest are libFuzzer's flags (``-help=1`` lists them).  A crash
writes ``crash-<sha1>``; ``python fuzz/fuzz.py hub crash-<sha1>`` replays it.
The same checks run bounded under hypothesis in ``tests/reliability/test_fuzz.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import atheris

with atheris.instrument_imports():
    import gearman_proto
    import gearman_proto.admin
    import gearman_proto.broker
    import gearman_proto.hub
    import gearman_proto.packets
    import gearman_proto.server  # noqa: F401

import harness

_ARG_WORDS = (*harness.WORDS, b"exceptions", b"H:fuzz:4", b"g")


def _packet(fdp: atheris.FuzzedDataProvider) -> bytes:
    """A packet: mostly a well-formed one of a type a peer sends, built from shared words."""
    choice = fdp.ConsumeIntInRange(0, 9)
    if choice == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))  # raw bytes
    if choice == 1:
        line = harness.ADMIN_LINES[fdp.ConsumeIntInRange(0, len(harness.ADMIN_LINES) - 1)]
        return line + b"\r\n"
    ptype = harness.CLIENT_AND_WORKER_TYPES[
        fdp.ConsumeIntInRange(0, len(harness.CLIENT_AND_WORKER_TYPES) - 1)]
    spec = harness.SPECS[ptype]
    n = len(spec.args) + (fdp.ConsumeIntInRange(-1, 1) if choice == 2 else 0)
    args = []
    for _ in range(max(n, 0)):
        if fdp.ConsumeBool():
            args.append(_ARG_WORDS[fdp.ConsumeIntInRange(0, len(_ARG_WORDS) - 1)])
        else:
            args.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16)))
    return harness.packet_bytes(ptype, args)


def decoder(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cuts = [fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 6))]
    magic = harness.REQ if fdp.ConsumeBool() else b"\0RES"
    harness.decoder(fdp.ConsumeBytes(fdp.remaining_bytes()), cuts, magic=magic)


def server(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    eof = fdp.ConsumeBool()
    stream = b"".join(_packet(fdp) for _ in range(fdp.ConsumeIntInRange(0, 12)))
    harness.server_connection(stream + fdp.ConsumeBytes(fdp.remaining_bytes()), eof)


def hub(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    durable = fdp.ConsumeBool()
    retries = [None, 0, 1, 3][fdp.ConsumeIntInRange(0, 3)]
    idle = [0.0, 2.0][fdp.ConsumeIntInRange(0, 1)]
    ops = []
    while fdp.remaining_bytes() and len(ops) < 200:
        kind = fdp.ConsumeIntInRange(0, 9)
        conn = fdp.ConsumeIntInRange(0, 7)
        if kind == 0:
            ops.append(harness.Op("open"))
        elif kind <= 6:
            data = b"".join(_packet(fdp) for _ in range(fdp.ConsumeIntInRange(1, 4)))
            ops.append(harness.Op("send", conn, data))
        elif kind == 7:
            ops.append(harness.Op("close", conn))
        elif kind == 8:
            ops.append(harness.Op("drop", conn))
        else:
            ops.append(harness.Op("advance", seconds=fdp.ConsumeIntInRange(0, 5000) / 1000))
    harness.hub(ops, durable=durable, job_retries=retries, idle_timeout=idle)


def _conversation_target():  # type: ignore[no-untyped-def]
    from hypothesis import HealthCheck, given, settings

    from gearman_proto import strategies as gst

    @settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(gst.conversations(connections=6, max_steps=30))
    def conversation(script):  # type: ignore[no-untyped-def]
        harness.hub(harness.conversation_ops(script))

    return conversation.hypothesis.fuzz_one_input


TARGETS = {"decoder": decoder, "server": server, "hub": hub}
if len(sys.argv) > 1 and sys.argv[1] == "conversation":
    TARGETS["conversation"] = _conversation_target()


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python fuzz/fuzz.py {{{','.join([*TARGETS, 'conversation'])}}} "
                 "[libFuzzer flags]")
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
