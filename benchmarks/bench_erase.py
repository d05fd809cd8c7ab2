"""Benchmark `cu erase` on MiniCanvas: wall time of one request, SelFT and regularizer overheads.

Writes docs/benchmarks-erase.md. Each run is a fresh `cu erase` process (as a user runs it);
wall time includes interpreter start, imports and model loading. Run on an otherwise idle machine:
    python benchmarks/bench_erase.py
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STYLE = "neon stripes"


REPEAT = int(os.environ.get("CU_BENCH_REPEAT", "2"))



def _p(step: dict) -> dict:
    """A lineage step's config and measurements in one dict (SelFT seconds 0 when off)."""
    from cu_cli.ckpt.lineage import step_config, step_measured

    return {"selft_seconds": 0.0, **step_config(step), **step_measured(step)}

def run(args: list[str], env: dict) -> tuple[float, dict]:
    """Best of REPEAT fresh processes (per-step time on 2 shared cores varies by ±30 %)."""
    best = None
    for i in range(REPEAT):
        res = _run_once(args[:-1] + [args[-1].replace(".safetensors", f".{i}.safetensors")], env)
        if best is None or _p(res[1])["loop_seconds"] < _p(best[1])["loop_seconds"]:
            best = res
    return best


def _run_once(args: list[str], env: dict) -> tuple[float, dict]:
    t = time.time()
    out = subprocess.run([sys.executable, "-m", "cu_cli", *args, "-q"], capture_output=True,
                         text=True, env=env)
    wall = time.time() - t
    if out.returncode:
        raise SystemExit(out.stderr)
    path = out.stdout.strip()
    info = json.loads(subprocess.run([sys.executable, "-m", "cu_cli", "inspect", path, "--json"],
                                     capture_output=True, text=True, env=env).stdout)
    return wall, info["lineage"][-1]


def main() -> None:
    work = tempfile.mkdtemp(prefix="cu-bench-erase-")
    env = {**os.environ, "CU_CACHE_DIR": os.path.join(work, "cache")}
    o = lambda n: ["-o", os.path.join(work, n + ".safetensors")]  # noqa: E731
    rows = []
    bare = ["--preserve", "none", "--context-weight", "0"]
    cold, st = _run_once(["erase", "--concept", STYLE, *o("cold")], env)  # once: caches fill
    rows.append(("default (--preserve world, --context-weight 4), caches cold", cold, st))
    warm, st = run(["erase", "--concept", STYLE, *bare, *o("warm")], env)
    rows.append(("bare objective (--preserve none --context-weight 0), caches warm", warm, st))
    dflt, st = run(["erase", "--concept", STYLE, *o("default")], env)
    rows.append(("default (--preserve world, --context-weight 4), caches warm", dflt, st))
    basis = os.path.join(work, "basis.safetensors")
    subprocess.run([sys.executable, "-m", "cu_cli", "project-basis", "--concept", STYLE, "-o",
                    basis, "-q"], check=True, env=env, capture_output=True)
    variants = [
        ("bare + SelFT (k=0.05, trajectory scoring)", [*bare, "--selft-topk", "0.05"]),
        ("bare + L1-SP + L2-SP", [*bare, "--l1", "50", "--l2", "25000"]),
        ("bare + L1-SP + L2-SP + projection", [*bare, "--l1", "50", "--l2", "25000", "--basis",
                                               basis]),
        ("default + L1-SP + L2-SP + projection", ["--l1", "50", "--l2", "25000", "--basis", basis]),
    ]
    for name, extra in variants:
        w, st = run(["erase", "--concept", STYLE, *extra, *o(str(len(rows)))], env)
        rows.append((name, w, st))
    base_loop = _p(rows[1][2])["loop_seconds"] / _p(rows[1][2])["steps"]
    lines = ["# `cu erase` benchmark (MiniCanvas)\n",
             f"`python benchmarks/bench_erase.py`, {time.strftime('%Y-%m-%d')}, "
             f"{platform.machine()}, {os.cpu_count()} cores, torch threads default. "
             f"One style ({STYLE!r}), ConAbl with the MiniCanvas defaults; each row is a fresh "
             "`cu erase` process (wall time includes start-up, imports and model loading; "
             "'cold' = empty anchor-image and fingerprint caches). Warm rows: the best of "
             f"{REPEAT} runs by loop time. 'vs bare step' compares the loop's time per step with "
             "the bare objective's.\n",
             "| run | wall s | loop s | s/step | vs bare step | SelFT scoring s | SelFT share of request |",
             "|---|---|---|---|---|---|---|"]
    for name, wall, st in rows:
        p = _p(st)
        per = p["loop_seconds"] / p["steps"]
        share = p["selft_seconds"] / wall if p["selft_seconds"] else 0.0
        lines.append(f"| {name} | {wall:.1f} | {p['loop_seconds']:.1f} | {per:.3f} | "
                     f"{100 * (per / base_loop - 1):+.0f} % | {p['selft_seconds']:.2f} | "
                     f"{100 * share:.0f} % |")
    lines.append("\nTargets (issue 4): one request ≤ 30 s; SelFT scoring ≤ 15 % of a request; "
                 "regularizers + projection ≤ 20 % per step over the bare objective.\n")
    lines.append("Run it with OpenMP's default wait policy: with `OMP_WAIT_POLICY=PASSIVE` the same "
                 "requests took about twice as long on this machine (2026-11-28: bare objective "
                 "34.3 s vs 17.0 s). The cold row's per-step excess is first-run warm-up, not a "
                 "regularizer (the warm default row runs the same penalties).\n")
    with open(os.path.join(ROOT, "docs", "benchmarks-erase.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
