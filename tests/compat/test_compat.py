"""The python-gearman layer's own rules: resubmission, its errors, reports out of turn.

These use the pytest plugin's in-process ``gearman_server`` (and a second
server from ``start_gearman_server``), so they also show the plugin at work.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from gearman_proto.adapters import compat as gearman
from gearman_proto.adapters.pytest_plugin import GearmanServer, start_gearman_server
from gearman_proto.adapters.sync import Worker


@pytest.fixture
def second_server() -> Iterator[GearmanServer]:
    server = start_gearman_server()
    yield server
    server.stop()


@pytest.fixture
def reverse_on() -> Iterator[Any]:
    """``reverse_on(server)``: a blocking worker serving ``reverse`` there until the end."""
    running: list[tuple[Worker, threading.Thread]] = []

    def start(server: GearmanServer) -> None:
        worker = Worker(server.address)
        worker.register("reverse", lambda job: job.data[::-1])
        thread = threading.Thread(target=worker.work)
        thread.start()
        running.append((worker, thread))
        server.wait_for_workers("reverse")

    yield start
    for worker, thread in running:
        worker.stop()
        thread.join()


def test_a_lost_request_is_resubmitted_up_to_max_retries(
        gearman_server: GearmanServer, second_server: GearmanServer, reverse_on: Any) -> None:
    reverse_on(second_server)  # nobody serves `reverse` on the first server
    client = gearman.GearmanClient([gearman_server.servers, second_server.servers])
    try:
        request = client.submit_job("reverse", "abc", wait_until_complete=False,
                                    max_retries=1)
        assert request.state == gearman.JOB_CREATED
        assert request.job.connection == gearman_server.address
        gearman_server.stop()  # the job is lost with its server
        client.wait_until_jobs_completed([request], poll_timeout=10)
        assert (request.state, request.result) == (gearman.JOB_COMPLETE, b"cba")
        assert request.connection_attempts == 2
        assert request.job.connection == second_server.address
    finally:
        client.shutdown()


def test_beyond_max_retries_exceeded_connection_attempts(gearman_server: GearmanServer
                                                         ) -> None:
    client = gearman.GearmanClient([gearman_server.servers])
    try:
        request = client.submit_job("nobody-serves-this", "x", wait_until_complete=False)
        gearman_server.stop()
        with pytest.raises(gearman.ExceededConnectionAttempts, match="1 connection attempt"):
            client.wait_until_jobs_completed([request], poll_timeout=10)
    finally:
        client.shutdown()


def test_no_server_is_server_unavailable() -> None:
    client = gearman.GearmanClient(["127.0.0.1:1"])
    try:
        with pytest.raises(gearman.ServerUnavailable):
            client.submit_job("reverse", "x")
    finally:
        client.shutdown()


def test_a_bad_priority_is_refused_before_sending(gearman_server: GearmanServer) -> None:
    client = gearman.GearmanClient([gearman_server.servers])
    try:
        with pytest.raises(ValueError, match="PRIORITY_NONE, PRIORITY_LOW or PRIORITY_HIGH"):
            client.submit_job("reverse", "x", priority="URGENT")
    finally:
        client.shutdown()


def test_reports_on_an_ended_job_are_invalid_worker_state(gearman_server: GearmanServer
                                                          ) -> None:
    seen: list[BaseException] = []

    class StopAfterOneJob(gearman.GearmanWorker):
        def after_poll(self, any_activity: bool) -> bool:
            return not any_activity  # stop after the first job

    def callback(worker: gearman.GearmanWorker, job: gearman.GearmanJob) -> bytes:
        worker.send_job_failure(job)
        try:
            worker.send_job_status(job, 1, 2)
        except gearman.InvalidWorkerState as exc:
            seen.append(exc)
        return b"ignored"

    worker = StopAfterOneJob([gearman_server.servers])
    worker.register_task("fails", callback)
    thread = threading.Thread(target=worker.work, kwargs={"poll_timeout": 0.05})
    thread.start()
    gearman_server.wait_for_workers("fails")
    client = gearman.GearmanClient([gearman_server.servers])
    try:
        request = client.submit_job("fails", "x", poll_timeout=10)
        assert (request.state, request.result) == (gearman.JOB_FAILED, None)
    finally:
        client.shutdown()
        thread.join(10)
    assert not thread.is_alive()
    assert len(seen) == 1
