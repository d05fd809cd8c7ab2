"""UCE request speed on MiniCanvas (issue 16): the closed-form solve ≤ 2 s and the whole
`cu erase --method uce` command (process start, base load, text encoding, solve, write) ≤ 10 s on
2 cores. Writes docs/benchmarks-uce.md. Run on an otherwise idle machine:

    python benchmarks/bench_uce.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STYLES = ["neon stripes", "ember dots", "ocean checks"]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for style in STYLES:
            out = os.path.join(d, "u.safetensors")
            t = time.time()
            subprocess.run([sys.executable, "-m", "cu_cli", "erase", "--method", "uce",
                            "--concept", style, "-q", "--force", "-o", out], check=True)
            wall = time.time() - t
            info = json.loads(subprocess.run([sys.executable, "-m", "cu_cli", "inspect", out,
                                              "--json"], capture_output=True, text=True,
                                             check=True).stdout)
            m = info["lineage"][-1]["measured"]
            rows.append((style, wall, m["loop_seconds"], m["uce"]["erase_tokens"],
                         m["preserve_prompts"], m["uce"]["cond_max"]))
    lines = ["# `cu erase --method uce` on MiniCanvas: speed", "",
             "Made by `python benchmarks/bench_uce.py` (2 CPU cores, idle machine). *solve* = the "
             "closed-form edit of the 32 attn2 K/V weights (lineage `measured.loop_seconds`); "
             "*command* = the whole `cu erase` process, Python start and base load included.", "",
             "| style | command s | solve s | erase tokens | preserved prompts | max cond |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {s} | {w:.1f} | {l:.2f} | {n} | {p} | {c:.3g} |" for s, w, l, n, p, c in rows]
    lines += ["", "Targets (issue 16): solve ≤ 2 s; whole command ≤ 10 s."]
    with open(os.path.join(ROOT, "docs", "benchmarks-uce.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
