"""Data codecs on every flavour: objects in, objects out, bytes by default."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from gearman_proto.adapters import JobException

from gearman_proto.codecs import JSON, PICKLE

if TYPE_CHECKING:
    from conftest import GM, ServerProcess

Fn = Callable[[str], str]


def test_json_objects_go_both_ways(gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("json")
    seen: list[Any] = []

    def total(job: Any) -> Any:
        seen.append((job.data, job.value))
        return {"sum": sum(job.value["numbers"]), "ok": True}
    worker = gm.worker(our_server, codec=JSON)
    worker.register(f, total)
    worker.start()
    client = gm.client(our_server, codec=JSON)
    assert client.do(f, {"numbers": [1, 2, 3]}) == {"sum": 6, "ok": True}
    # On the wire it is plain JSON, which a PHP or Perl peer can read.
    assert seen == [(b'{"numbers":[1,2,3]}', {"numbers": [1, 2, 3]})]
    # A bytes client sees the payload itself.
    assert gm.client(our_server).do(f, b'{"numbers":[4]}') == b'{"sum":4,"ok":true}'


def test_pickle_carries_python_objects(gm: GM, our_server: ServerProcess, fn: Fn) -> None:
    f = fn("pickle")
    worker = gm.worker(our_server, codec=PICKLE)
    worker.register(f, lambda job: (sorted(job.value), frozenset(job.value)))
    worker.start()
    client = gm.client(our_server, codec=PICKLE)
    assert client.do(f, {3, 1, 2}) == ([1, 2, 3], frozenset({1, 2, 3}))


def test_a_value_the_codec_cannot_carry_fails_the_job(gm: GM, our_server: ServerProcess,
                                                       fn: Fn) -> None:
    f = fn("unjsonable")
    worker = gm.worker(our_server, codec=JSON)
    worker.register(f, lambda job: object())
    worker.start()
    with pytest.raises(JobException, match="TypeError"):
        gm.client(our_server, codec=JSON).do(f, [1])
    # Bytes stay the default: a handler's non-bytes result is its error there too.
    plain = gm.worker(our_server)
    plain.register(f + "-plain", lambda job: 42)
    plain.start()
    with pytest.raises(JobException, match="TypeError: a handler returns bytes"):
        gm.client(our_server).do(f + "-plain", b"x")
