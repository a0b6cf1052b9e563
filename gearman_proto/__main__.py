"""``python -m gearman_proto``: the ``gearman-proto`` command (server, submit, work, admin).

The command lives with the adapters, which do I/O; importing the core never
runs this module, so the core stays free of I/O (tests/test_purity.py).
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("gearman_proto.adapters.cli", run_name="__main__", alter_sys=True)
