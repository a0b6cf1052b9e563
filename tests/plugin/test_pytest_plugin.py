"""The pytest plugin (gearman_proto.adapters.pytest_plugin), run through pytest's pytester.

Each test writes a test module as a user would, runs pytest on it in a fresh
directory (the plugin comes in through its ``pytest11`` entry point, as for a
user who installed the package) and checks the outcome.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HAS_GEARMAND = any(os.path.exists(p) for p in ("/usr/sbin/gearmand", "/usr/local/sbin/gearmand"))


def test_sync_test_with_a_worker_and_a_client(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import threading
        from gearman_proto.adapters.sync import Client, Worker

        def test_reverse(gearman_server):
            worker = Worker(gearman_server.address)
            worker.register("reverse", lambda job: job.data[::-1])
            thread = threading.Thread(target=worker.work)
            thread.start()
            try:
                gearman_server.wait_for_workers("reverse")
                assert gearman_server.job_server.status_rows()[0].available_workers == 1
                with Client(gearman_server.address) as client:
                    assert client.do("reverse", "Hello world!") == b"!dlrow olleH"
                    client.submit("reverse", "later", background=True)
                gearman_server.wait_until_empty("reverse")
                assert gearman_server.call(lambda js: js.job_count) == 0
            finally:
                worker.stop()
                thread.join()

        def test_each_test_gets_a_fresh_server(gearman_server):
            assert gearman_server.status() == []
            assert gearman_server.servers == f"127.0.0.1:{gearman_server.port}"
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_async_tests_on_asyncio_and_trio(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        import anyio
        from gearman_proto.adapters.anyio import Client, Worker

        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return request.param

        @pytest.mark.anyio
        async def test_reverse(gearman_server):
            worker = Worker(gearman_server.address)
            worker.register("reverse", lambda job: job.data[::-1])
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.work)
                await gearman_server.wait_for_workers_async("reverse")
                async with Client(gearman_server.address) as client:
                    assert await client.do("reverse", "abc") == b"cba"
                await gearman_server.wait_until_empty_async("reverse")
                worker.stop()
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_plain_asyncio_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import asyncio
        from gearman_proto.adapters.asyncio import Client, Worker

        def test_reverse(gearman_server):
            async def main():
                worker = Worker(gearman_server.address)
                worker.register("reverse", lambda job: job.data[::-1])
                running = asyncio.ensure_future(worker.work())
                await gearman_server.wait_for_workers_async("reverse")
                async with Client(gearman_server.address) as client:
                    result = await client.do("reverse", "abc")
                worker.stop()
                await running
                return result
            assert asyncio.run(main()) == b"cba"
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_session_server_is_shared(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        seen = []

        def test_one(gearman_server_session):
            seen.append(gearman_server_session.port)

        def test_two(gearman_server_session, gearman_server):
            seen.append(gearman_server_session.port)
            assert seen[0] == seen[1] != gearman_server.port
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_wait_that_never_ends_fails_with_what_it_waited_for(pytester: pytest.Pytester
                                                               ) -> None:
    pytester.makepyfile("""
        def test_nobody(gearman_server):
            gearman_server.wait_for_workers("nobody", timeout=0.2)
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*timed out after 0.2s waiting for 1 worker(s) for 'nobody'*"])


@pytest.mark.skipif(not HAS_GEARMAND and not os.environ.get("CI"),
                    reason="gearmand not found: apt-get install gearman-job-server")
def test_gearmand_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import threading
        from gearman_proto.adapters.sync import AdminClient, Client, Worker

        def test_against_gearmand(gearmand):
            worker = Worker(gearmand.address)
            worker.register("reverse", lambda job: job.data[::-1])
            thread = threading.Thread(target=worker.work)
            thread.start()
            try:
                gearmand.wait_for_workers("reverse")
                with Client(gearmand.address) as client:
                    assert client.do("reverse", "abc") == b"cba"
                gearmand.wait_until_empty("reverse")
                with AdminClient(gearmand.address) as admin:
                    assert admin.version().startswith("1.")   # libgearman's, not Perl's
            finally:
                worker.stop()
                thread.join()
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_gearmand_missing_skips_with_the_install_line(pytester: pytest.Pytester,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEARMAND", str(pytester.path / "no-such-gearmand"))
    pytester.makepyfile("""
        def test_needs_gearmand(gearmand):
            raise AssertionError("not reached")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*gearmand is not installed (apt-get install gearman-job-server)*"])
    required = pytester.runpytest("-p", "no:cacheprovider", "--gearmand-required")
    required.assert_outcomes(errors=1)
    required.stdout.fnmatch_lines(["*gearmand is not installed*"])


def test_the_plugin_is_registered_by_its_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--trace-config", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*gearman_proto.adapters.pytest_plugin*"])


def test_the_documented_example(pytester: pytest.Pytester) -> None:
    """docs/pytest-plugin.md's complete example runs and passes as it stands."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "pytest-plugin.md").read_text()
    block = doc.split("<!-- pytest-plugin-example -->\n```python\n", 1)[1].split("```", 1)[0]
    pytester.makepyfile(test_reverse=block)
    outcomes = {"passed": 5} if HAS_GEARMAND or os.environ.get("CI") else {
        "passed": 4, "skipped": 1}
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(**outcomes)
