"""``python -m cu_cli``: the ``cu`` entry point; interrupts are routed before the app imports."""

import sys

from cu_cli._util.signals import Interrupted, install

install()
try:
    from cu_cli.cli.app import main
except Interrupted:  # Ctrl-C while importing
    sys.stderr.write("Interrupted.\n")
    sys.exit(130)
main()
