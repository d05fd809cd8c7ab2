"""docs/cli.md must match the current --help texts (regenerate with tools/gen_cli_docs.py)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_docs_up_to_date():
    code = ("import sys; sys.path.insert(0, 'tools'); import gen_cli_docs; "
            "sys.stdout.write(gen_cli_docs.render())")
    fresh = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    with open(os.path.join(ROOT, "docs", "cli.md")) as f:
        assert f.read() == fresh, "docs/cli.md is stale: run python tools/gen_cli_docs.py"
