"""Issue 11.1: a full disk costs the batch that did not fit, never the server.

``--queue sqlite:D/q.db`` on a 512 KiB tmpfs, background jobs of 4 KiB:
once the disk is full every durable submission gets ``ERROR QUEUE_ERROR``
(never JOB_CREATED), everything else -- ECHO, foreground jobs, admin -- is
answered as before, and once the file system grows durable submissions are
acknowledged again, with no restart.  On both server loops.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from _support import RawClient, status_of, tmpfs

from gearman_proto.events import EchoReq, EchoRes, Error, JobCreated, SubmitJob

if TYPE_CHECKING:
    from conftest import ServerProcess


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs, unmounted after the test."""
    with tmpfs(tmp_path / "disk", "512k") as mount:
        yield mount


def submit_batch(client: RawClient, start: int, count: int, size: int = 4096) -> list[object]:
    """``count`` background jobs in one send; the answers (one per job)."""
    client.send(*(SubmitJob(b"f", b"x" * size, b"j%d" % (start + i), background=True)
                  for i in range(count)))
    got: list[object] = []
    while len(got) < count:
        events = client.poll(10)
        assert events, f"no answer after {len(got)} of {count}"
        got.extend(events)
    return got


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_a_full_disk_refuses_durable_jobs_and_serves_the_rest(
        small_disk: Path, our_server_factory: Callable[..., ServerProcess], loop: str) -> None:
    server = our_server_factory(extra=("--queue", f"sqlite:{small_disk}/q.db"), loop=loop)
    client = RawClient(server.address)
    answers: list[object] = []
    n = 0
    while not any(isinstance(a, Error) for a in answers):
        assert n < 2000, "the disk never filled"
        answers.extend(submit_batch(client, n, 20))
        n += 20
    refused = [a for a in answers if isinstance(a, Error)]
    assert {a.code for a in refused} == {b"QUEUE_ERROR"}
    assert b"database or disk is full" in refused[0].text
    acked = sum(isinstance(a, JobCreated) for a in answers)
    # Still full: refused again, and nothing else is affected.
    assert all(isinstance(a, Error) for a in submit_batch(client, n, 20))
    n += 20
    client.send(EchoReq(b"still there"))
    assert client.poll(10) == [EchoRes(b"still there")]
    fg = client  # a foreground submission needs no disk
    fg.send(SubmitJob(b"g", b"fg", b"fg1"))
    assert isinstance(fg.poll(10)[0], JobCreated)
    assert status_of(server.address)[b"f"].total == acked  # only acknowledged jobs are queued
    # The disk grows: durable submissions are acknowledged again, no restart.
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    again = submit_batch(client, n, 20)
    assert all(isinstance(a, JobCreated) for a in again), again
    assert status_of(server.address)[b"f"].total == acked + 20
    client.close()
