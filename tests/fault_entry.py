"""``python -m cu_cli`` for fault-injection runs, optionally paused in the middle of a write.

With ``CU_FAULT_PAUSE=<marker>`` and ``CU_FAULT_NAME=<output file name>``, the first ``os.fsync``
of that output's temp file (``.<name>.cu-tmp-<pid>``, fully written, not yet renamed) writes the
temp's path to the marker and sleeps, so a test can deliver SIGKILL or SIGINT exactly mid-write.
Nothing in cu itself is changed; without the variables this is plain ``python -m cu_cli``.
"""

import os
import sys
import time

marker, name = os.environ.get("CU_FAULT_PAUSE"), os.environ.get("CU_FAULT_NAME")
if marker and name:
    _real_fsync = os.fsync

    def _paused_fsync(fd):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if os.path.basename(path).startswith(f".{name}.cu-tmp-"):
            with open(marker + ".part", "w") as f:
                f.write(path)
            os.replace(marker + ".part", marker)
            time.sleep(120)
        return _real_fsync(fd)

    os.fsync = _paused_fsync

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cu_cli._util.signals import Interrupted, install  # noqa: E402

install()
try:
    from cu_cli.cli.app import main  # noqa: E402
except Interrupted:
    sys.stderr.write("Interrupted.\n")
    sys.exit(130)
main()
