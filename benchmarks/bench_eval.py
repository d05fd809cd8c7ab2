"""Benchmark MiniCanvas loading, sampling throughput and a full `cu eval` style protocol.

Writes docs/benchmarks-eval.md. Run on an otherwise idle machine:
    python benchmarks/bench_eval.py
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

LOAD = """
import time, json
t0 = time.time()
from cu_cli.models.base import resolve_base
b = resolve_base("minicanvas")
p = b.load_pipeline()
t1 = time.time()
from cu_cli.world.minicanvas import load_world
w = load_world()
prompts = [w.caption(o, s) for o in w.objects for s in w.styles][:512]
p.sample(prompts[:8], list(range(8)), steps=25, guidance=7.5)  # warm-up
t2 = time.time()
p.sample(prompts, list(range(len(prompts))), steps=25, guidance=7.5)
t3 = time.time()
print(json.dumps({"load_s": t1 - t0, "n": len(prompts), "sample_s": t3 - t2}))
"""


def main() -> None:
    work = tempfile.mkdtemp(prefix="cu-bench-eval-")
    env = {**os.environ, "CU_CACHE_DIR": os.path.join(work, "cache"),
           "XDG_CACHE_HOME": os.path.join(work, "xdg")}
    t = time.time()
    res = json.loads(subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True,
                                    env=env, check=True).stdout)
    proc_wall = time.time() - t
    state = os.path.join(work, "s.safetensors")
    subprocess.run([sys.executable, "-m", "cu_cli", "erase", "--concept", "neon stripes", "-o",
                    state, "-q"], check=True, env=env, capture_output=True)
    sys.path.insert(0, ROOT)
    from cu_cli.world.minicanvas import load_world

    seq = load_world().sequences["style"]
    args = [sys.executable, "-m", "cu_cli", "eval", state, "--json", "-q"]
    for s in seq:
        args += ["--erased", s]
    timings = []
    for _ in range(2):  # first call warms the fingerprint cache; both are full samplings
        t = time.time()
        out = json.loads(subprocess.run(args, capture_output=True, text=True, env=env,
                                        check=True).stdout)
        timings.append(time.time() - t)
    n_img = out["states"][0]["images"]
    lines = [
        "# MiniCanvas loading, sampling and evaluation benchmark\n",
        f"`python benchmarks/bench_eval.py`, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores.\n",
        "| measurement | value | target |", "|---|---|---|",
        f"| load built-in base (resolve + all components, offline, fresh process) | "
        f"{res['load_s']:.2f} s (process incl. imports {proc_wall:.1f} s) | < 5 s |",
        f"| sampling throughput, DDIM 25 steps, CFG 7.5, batched ({res['n']} images) | "
        f"{res['n'] / res['sample_s']:.1f} images/s | ≥ 10 images/s |",
        f"| `cu eval` full minicanvas-style protocol, one state, 12 erased ({n_img} images), "
        f"whole process | {timings[-1]:.1f} s (first call {timings[0]:.1f} s) | ≤ 60 s |",
    ]
    with open(os.path.join(ROOT, "docs", "benchmarks-eval.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
