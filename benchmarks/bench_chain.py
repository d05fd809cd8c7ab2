"""Per-request wall time of a 12-request MiniCanvas chain with the chain preset (issue 19:
≤ 30 s per request on 2 cores): each request is its own `cu erase --preset chain --from PREV`
process (Python start, base load, lineage rebuild, text encoding, solve, write). Request k solves
every concept erased so far (docs/erase.md, "The chain preset": UCE in chain scope for both
kinds), so the erase set grows with k. Writes docs/benchmarks-chain.md (styles) or, with
``--kind object``, docs/benchmarks-chain-objects.md. Run on an otherwise idle machine:

    python benchmarks/bench_chain.py [--kind object]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    sys.path.insert(0, ROOT)
    from cu_cli.evaluate.protocols import get_protocol

    kind = sys.argv[sys.argv.index("--kind") + 1] if "--kind" in sys.argv else "style"
    if kind not in ("style", "object"):
        sys.exit("bench_chain.py: --kind style|object")
    order = list(get_protocol(f"minicanvas-{kind}").erase_order)
    rows, prev = [], None
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, CU_CACHE_DIR=os.path.join(d, "cache"))  # cold anchor-image cache
        for k, concept in enumerate(order, 1):
            out = os.path.join(d, f"{k:02d}.safetensors")
            src = ["--from", prev] if prev else []
            t = time.time()
            subprocess.run([sys.executable, "-m", "cu_cli", "erase", *src, "--concept", concept,
                            "--preset", "chain", "--seed", "42", "-q", "-o", out], check=True,
                           env=env)
            wall = time.time() - t
            info = json.loads(subprocess.run([sys.executable, "-m", "cu_cli", "inspect", out,
                                              "--json"], capture_output=True, text=True,
                                             check=True, env=env).stdout)
            m = info["lineage"][-1]["measured"]
            rows.append((k, concept, wall, m["loop_seconds"], m["uce"]["erase_tokens"],
                         len(m["uce"]["concepts_solved"])))
            prev = out
    walls = [r[2] for r in rows]
    summary = ["", f"Mean {sum(walls) / len(walls):.1f} s, max {max(walls):.1f} s per request. "
               "Target (issue 19): ≤ 30 s per request."]
    lines = [f"# A 12-request {kind} chain with `--preset chain` on MiniCanvas: speed", "",
             f"Made by `python benchmarks/bench_chain.py{'' if kind == 'style' else ' --kind object'}` "
             "(2 CPU cores, idle machine). *command* = the whole `cu erase --preset chain --from "
             "PREV` process, Python start and base load included; *solve* = the closed-form edit "
             f"(lineage `measured.loop_seconds`); request k solves all k {kind}s erased so far.",
             "", f"| k | {kind} | command s | solve s | erase tokens | {kind}s solved |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {s} | {w:.1f} | {l:.2f} | {n} | {c} |" for k, s, w, l, n, c in rows]
    name = "benchmarks-chain.md" if kind == "style" else "benchmarks-chain-objects.md"
    lines += summary
    with open(os.path.join(ROOT, "docs", name), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
