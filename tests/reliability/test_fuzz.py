"""Hostile bytes into the core, bounded, in the normal test run (hypothesis).

The checks are in ``fuzz/harness.py``, shared with the longer atheris runs
(``fuzz/fuzz.py``, see the README's Reliability section): only the documented
``RemoteProtocolError`` leaves the Decoder and ServerConnection, the hub lets
nothing escape, and the JobServer's bookkeeping stays consistent after every
step and after every peer left.  Inputs are mostly well-framed packets of
every type a client or worker sends, with arguments drawn from a few shared
words (so separate packets talk about the same jobs and functions), mixed
with wrong argument counts, admin lines and raw garbage.

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

from gearman_proto.packets import REQ, RES, SPECS, PacketType

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


words = st.sampled_from(harness.WORDS) | st.binary(max_size=24)
# Arguments by name: a few shared values, so separate packets meet on the same
# functions, uniques and handles (handles are H:fuzz:N, as the harness's server names them).
ARGS = {
    "function": st.sampled_from([b"f", b"g", b"f\0g"]),
    "unique": st.sampled_from([b"", b"u", b"v", b"-", b"x" * 65, b"u\0v"]),
    "handle": st.sampled_from([*(b"H:fuzz:%d" % i for i in range(1, 7)), b"H:\0"]),
    "data": st.sampled_from([b"", b"d", b"e"]) | st.binary(max_size=8),
    "reducer": st.sampled_from([b"", b"r"]),
    "aggregate": st.just(b""),
    "name": st.sampled_from([b"exceptions", b"frob"]),
    "client_id": st.binary(max_size=8),
    "epoch": st.sampled_from([b"0", b"1001", b"1003", b"99999"]),
    "timeout": st.sampled_from([b"0", b"1", b"1500"]),
}
NUMBER = st.sampled_from([b"0", b"1", b"7", b"100"])
T = PacketType
# Every type, and the ones a job's life goes through several times over.
LIKELY_TYPES = [*harness.CLIENT_AND_WORKER_TYPES,
                *[T.CAN_DO, T.CAN_DO_TIMEOUT, T.GRAB_JOB, T.GRAB_JOB_UNIQ, T.GRAB_JOB_ALL,
                  T.WORK_COMPLETE, T.WORK_FAIL, T.WORK_EXCEPTION, T.WORK_STATUS, T.WORK_DATA,
                  T.PRE_SLEEP, T.SUBMIT_JOB, T.SUBMIT_JOB_BG, T.SUBMIT_JOB_HIGH,
                  T.SUBMIT_JOB_LOW_BG, T.GET_STATUS, T.GET_STATUS_UNIQUE] * 4]


@st.composite
def valid_packets(draw: st.DrawFn) -> bytes:
    """A well-formed packet a client or worker may send, with shared argument values."""
    spec = SPECS[draw(st.sampled_from(LIKELY_TYPES))]
    args = [draw(ARGS.get(name, NUMBER)) for name in spec.args]
    return harness.packet_bytes(spec.type, args)


@st.composite
def bad_packets(draw: st.DrawFn) -> bytes:
    """Any type number, any argument count, any argument bytes."""
    ptype = draw(st.sampled_from(harness.CLIENT_AND_WORKER_TYPES)
                 | st.integers(0, 45) | st.just(2**32 - 1))
    spec = SPECS.get(ptype)
    n = len(spec.args) if spec else draw(st.integers(0, 3))
    n = draw(st.sampled_from([n, max(0, n - 1), n + 1]))
    return harness.packet_bytes(ptype, [draw(words) for _ in range(n)])


def packets() -> st.SearchStrategy[bytes]:
    return st.one_of(valid_packets(), valid_packets(), valid_packets(), valid_packets(),
                     valid_packets(), valid_packets(), valid_packets(), bad_packets())


admin_lines = st.builds(lambda line, end: line + end,
                        st.sampled_from(harness.ADMIN_LINES) | st.binary(max_size=40),
                        st.sampled_from([b"\n", b"\r\n", b""]))
streams = st.lists(packets() | admin_lines | st.binary(max_size=16), max_size=12).map(b"".join)
good_streams = st.lists(valid_packets(), min_size=1, max_size=6).map(b"".join)


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
