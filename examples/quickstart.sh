#!/bin/sh
# The README's quick start:  pip install . && sh examples/quickstart.sh
# It runs examples/quickstart.py (a job server, the reverse worker and client; prints
# !dlrow olleH) with the Python that `pip install .` installed gearman-proto for.
here=$(cd "$(dirname "$0")" && pwd)
script=$(command -v gearman-proto 2>/dev/null)
from_script=$( [ -n "$script" ] && sed -n '1s/^#! *//p' "$script" )
for python in ${PYTHON:-} $from_script python3 python; do
    # Checked from examples/: in the repository root the source folder
    # gearman_proto/ (without adapters/) would shadow a `pip install .`.
    if (cd "$here" && "$python" -c 'import gearman_proto.adapters.cli') 2>/dev/null; then
        exec "$python" "$here/quickstart.py" "$@"
    fi
done
echo "quickstart: gearman-proto is not installed (run: pip install .)" >&2
exit 1
