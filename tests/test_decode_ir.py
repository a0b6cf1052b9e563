"""``benchmarks.decode_ir`` still runs: each side's stream decodes to the count it expects.

The instruction counts it prints come from cachegrind and are not tests; this only
keeps the script that the decode figures of benchmarks/RESULTS.md name from rotting,
without valgrind (``--run`` is what it runs under valgrind).
"""

from __future__ import annotations

import pytest

from benchmarks import decode_ir


# Our two sides; gear's (a peer's parser, in the bench extra) is not ours to test.
@pytest.mark.parametrize("side", [s for s in decode_ir.SIDES if s != "gear"])
def test_each_side_decodes_its_whole_stream(side: str) -> None:
    # _run raises SystemExit naming the side if the events counted are not the packets sent.
    assert decode_ir.main(["--run", side, "300", "1"]) == 0
    assert decode_ir.main(["--run", side, "300", "0"]) == 0


def test_an_unknown_side_is_one_line() -> None:
    with pytest.raises(SystemExit) as exc:
        decode_ir.main(["--sides", "broker"])
    assert exc.value.code == 2
