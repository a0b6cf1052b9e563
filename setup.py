"""The optional compiled build: ``GEARMAN_PROTO_USE_MYPYC=1 pip install .``.

Without that variable this adds nothing to what pyproject.toml describes, and the
package installs as pure Python.  With it, mypyc compiles the core -- the same
source files -- into C extensions that sit beside them; ``gearman_proto.COMPILED``
says which one runs.  ``__init__.py`` stays Python (a compiled package
``__init__`` loses its star-imports), and so do the adapters, which do I/O, and
the two modules named below.
"""

from __future__ import annotations

import os

from setuptools import setup

# Every module of the core but the package's __init__.
COMPILED_MODULES = [
    "gearman_proto/packets.py",
    "gearman_proto/errors.py",
    "gearman_proto/events.py",
    "gearman_proto/codec.py",
    "gearman_proto/_connection.py",
    "gearman_proto/client.py",
    "gearman_proto/worker.py",
    "gearman_proto/server.py",
    "gearman_proto/lifecycle.py",
    "gearman_proto/broker.py",
    "gearman_proto/hub.py",
    "gearman_proto/session.py",
    "gearman_proto/policy.py",
]
# Left as Python: admin.py (the admin text protocol's parsers, off the hot path;
# AdminError is a dataclass over Exception, which mypyc cannot make native)
# and store.py (a durable server's
# job store: classes users subclass, which compiled classes refuse, and no cost
# to the in-memory server).

ext_modules = []
if os.environ.get("GEARMAN_PROTO_USE_MYPYC") == "1":
    from mypyc.build import mypycify

    # One shared library, inside the package (not a top-level module).
    ext_modules = mypycify(COMPILED_MODULES, opt_level="3", group_name="gearman_proto._core")

setup(ext_modules=ext_modules)
