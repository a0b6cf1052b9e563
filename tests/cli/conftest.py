"""The ``gearman-proto`` command's tests share helpers in ``clitools.py``, next to this file.

The suite imports test modules with ``--import-mode=importlib``, which puts no
test folder on ``sys.path``; this folder is added here so its test modules can
``from clitools import ...``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
