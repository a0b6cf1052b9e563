"""Benchmarks of gearman-proto, side by side with gearmand and OpenStack's ``gear``.

Run from the repository root; each is one command (see ``benchmarks/RESULTS.md``)::

    python -m benchmarks.codec        # encode/decode rate, ours and gear's parser
    python -m benchmarks.core         # JobServer with no I/O; bytes per queued job
    python -m benchmarks.e2e          # loopback load against gearmand, gear and ours
    python -m benchmarks.overhead     # client/worker libraries driving gearmand

Every one takes ``--smoke`` (a run of a few seconds that only checks it works,
used by ``tests/test_benchmarks_smoke.py``) and ``--json PATH`` (the figures,
machine-readable).  Benchmarks are not tests: nothing here asserts a time.
"""
