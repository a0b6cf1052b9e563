"""Hostile bytes into the core, bounded, in the normal test run (hypothesis).

The checks are in ``fuzz/harness.py``, shared with the longer atheris runs
(``fuzz/fuzz.py``, see the README's Reliability section): only the documented
``RemoteProtocolError`` leaves the Decoder and ServerConnection, the hub lets
nothing escape, and the JobServer's bookkeeping stays consistent after every
step and after every peer left.  Inputs come from ``gearman_proto.strategies``:
mostly well-framed packets of every type a client or worker sends, with
arguments drawn from a few shared words (so separate packets talk about the
same jobs and functions), mixed with every kind of malformed message, admin
lines and raw garbage.

``GEARMAN_FUZZ_EXAMPLES`` sets the examples per test (default 300).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gearman_proto import strategies as gst
from gearman_proto.packets import REQ, RES, PacketType, Role

_path = Path(__file__).parents[2] / "fuzz" / "harness.py"
_spec = importlib.util.spec_from_file_location("fuzz_harness", _path)
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_harness"] = harness
_spec.loader.exec_module(harness)

EXAMPLES = int(os.environ.get("GEARMAN_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
fuzzed: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    print("FIGURES fuzzed " + " ".join(f"{k}={v}" for k, v in sorted(fuzzed.items())))


# The packets come from gearman_proto.strategies (the public strategies, also
# behind `gearman-proto fuzz`): every event a client or worker sends, with the
# shared default vocabulary (functions f, g, reverse; handles H:fuzz:1..6, as
# the harness's server names its jobs), so separate packets meet on the same jobs.
valid_packets = st.sampled_from([Role.CLIENT, Role.WORKER]).flatmap(gst.packets)
# Every kind of malformed message: bad magic, unknown types, wrong argument
# counts, oversized sizes, truncations, NULs in leading fields, non-decimal numbers.
bad_packets = gst.malformed_streams()


def packets() -> st.SearchStrategy[bytes]:
    return st.one_of(*[valid_packets] * 7, bad_packets)


admin_lines = gst.admin_lines(shutdown=True) | st.builds(
    lambda line, end: line + end, st.sampled_from(harness.ADMIN_LINES) | st.binary(max_size=40),
    st.sampled_from([b"\n", b"\r\n", b""]))
streams = st.lists(packets() | admin_lines | st.binary(max_size=16), max_size=12).map(b"".join)
good_streams = st.lists(valid_packets, min_size=1, max_size=6).map(b"".join)


@FUZZ
@given(streams | st.binary(max_size=600), st.lists(st.integers(0, 2000), max_size=8),
       st.sampled_from([REQ, RES]), st.booleans())
@pytest.mark.feature("reliability.hypothesis")
def test_decoder_only_raises_remote_protocol_error_and_ignores_splits(
        data: bytes, cuts: list[int], magic: bytes, allow_text: bool) -> None:
    fuzzed["decoder"] += 1
    harness.decoder(data, cuts, magic=magic, allow_text=allow_text)


@FUZZ
@given(streams | st.binary(max_size=600), st.booleans())
@pytest.mark.feature("reliability.hypothesis")
def test_server_connection_only_raises_remote_protocol_error(data: bytes, eof: bool) -> None:
    fuzzed["server_connection"] += 1
    harness.server_connection(data, eof)


ops = st.one_of(
    st.builds(harness.Op, st.just("open")),
    st.builds(harness.Op, st.just("send"), st.integers(0, 7), good_streams),
    st.builds(harness.Op, st.just("send"), st.integers(0, 7), good_streams),
    st.builds(harness.Op, st.just("send"), st.integers(0, 7), good_streams),
    st.builds(harness.Op, st.just("send"), st.integers(0, 7), streams),
    st.builds(harness.Op, st.just("close"), st.integers(0, 7)),
    st.builds(harness.Op, st.just("drop"), st.integers(0, 7)),
    st.builds(harness.Op, st.just("advance"), seconds=st.floats(0, 5)),
)


@FUZZ
@given(st.lists(ops, min_size=4, max_size=60), st.booleans(), st.sampled_from([None, 0, 1, 3]),
       st.sampled_from([0.0, 0.0, 2.0]))
@pytest.mark.feature("reliability.hypothesis")
def test_job_server_keeps_its_invariants_under_hostile_peers(
        script: list[object], durable: bool, job_retries: int | None,
        idle_timeout: float) -> None:
    fuzzed["job_server_scripts"] += 1
    fuzzed["job_server_steps"] += len(script)
    harness.hub(script, durable=durable, job_retries=job_retries,  # type: ignore[arg-type]
                idle_timeout=idle_timeout)


@FUZZ
@given(gst.conversations(connections=6, max_steps=30), st.booleans(),
       st.sampled_from([None, 0, 1]))
def test_job_server_keeps_its_invariants_through_whole_conversations(
        script: tuple[tuple[str, ...], list[gst.Step]], durable: bool,
        job_retries: int | None) -> None:
    """Clients, workers (CAN_DO, GRAB, WORK_* cycles) and admin peers talking at once,
    some ending with a malformed message: the same invariants hold."""
    fuzzed["conversations"] += 1
    harness.hub(harness.conversation_ops(script), durable=durable, job_retries=job_retries)


def test_the_harness_catches_a_broken_invariant() -> None:
    """The checks can fail: a job left in a queue with nobody waiting is caught."""
    from gearman_proto.broker import JobServer
    from gearman_proto.events import SubmitJob
    js = JobServer()
    js.connect(1)
    js.receive(1, SubmitJob(b"f", b"d", b""))
    (job,) = js._jobs.values()
    job.clients = ()
    with pytest.raises(AssertionError):
        harness.check_invariants(js)
    assert PacketType.CAN_DO in harness.CLIENT_AND_WORKER_TYPES
