"""``benchmarks.decode_ir`` still runs: each side's stream decodes to the count it expects.

The instruction counts it prints come from cachegrind and are not tests; this only
keeps the script that the decode figures of benchmarks/RESULTS.md name from rotting,
without valgrind (``--run`` is what it runs under valgrind).
"""

from __future__ import annotations

import pytest

from benchmarks import decode_ir


@pytest.mark.parametrize("side", decode_ir.SIDES)
def test_each_side_decodes_its_whole_stream(side: str) -> None:
    if side == "gear":
        pytest.importorskip("gear")
    # _run raises SystemExit naming the side if the events counted are not the packets sent.
    assert decode_ir.main(["--run", side, "300", "1"]) == 0
    assert decode_ir.main(["--run", side, "300", "0"]) == 0


def test_an_unknown_side_is_one_line() -> None:
    with pytest.raises(SystemExit) as exc:
        decode_ir.main(["--sides", "broker"])
    assert exc.value.code == 2
