"""TIES merge operating points over k independent MiniCanvas erasures (issue 15, item 5).

Reads the erase outputs of a `cu run` study in the independent setting (``DIR/steps/NN-*.safetensors``,
each request erased from the base), merges the first k with `cu merge --method ties` at each
(λ, density) of a grid, evaluates every merge on the world's protocol (`cu eval`, the first
``--seeds`` protocol seeds) and writes docs/results/ties_sweep.{json,md}:

  cu run sample_requests/studies/minicanvas-styles-merge.yaml -o /work/runs/minicanvas-styles-merge
  python benchmarks/ties_sweep.py /work/runs/minicanvas-styles-merge --seeds 4

Merges and evaluations are written under ``DIR/sweep/`` and reused when present.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cu(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "cu_cli", *args], capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"failed: cu {' '.join(args)}")
    return res.stdout


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("study_dir")
    p.add_argument("--ks", default="2,4,8,12")
    p.add_argument("--lambdas", default="1,2,3,4")
    p.add_argument("--densities", default="0.3,1.0")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--tag", default="")
    a = p.parse_args()
    steps = sorted(glob.glob(os.path.join(a.study_dir, "steps", "*.safetensors")))
    work = os.path.join(a.study_dir, "sweep")
    os.makedirs(work, exist_ok=True)
    rows = []
    for k in [int(x) for x in a.ks.split(",")]:
        for lam in [float(x) for x in a.lambdas.split(",")]:
            for dens in [float(x) for x in a.densities.split(",")]:
                name = f"k{k:02d}-l{lam:g}-d{dens:g}"
                out, ev = os.path.join(work, name + ".safetensors"), os.path.join(work, name + ".json")
                if not os.path.exists(ev):
                    if not os.path.exists(out):
                        cu("merge", *steps[:k], "--method", "ties", "--lambda", str(lam),
                           "--density", str(dens), "-q", "-o", out)
                    with open(ev + ".tmp", "w") as f:
                        f.write(cu("eval", out, "--seeds", str(a.seeds), "--json", "-q"))
                    os.replace(ev + ".tmp", ev)
                m = json.load(open(ev))["states"][0]["metrics"]
                rows.append({"k": k, "lambda": lam, "density": dens, "ua": m["ua"],
                             "ra_i": m["ra_i"], "ra_c": m["ra_c"]})
                print(name, rows[-1], file=sys.stderr)
    res = os.path.join(ROOT, "docs", "results")
    tag = a.tag
    with open(os.path.join(res, f"ties_sweep{tag}.json"), "w") as f:
        json.dump({"study_dir": a.study_dir, "seeds": a.seeds, "rows": rows}, f, indent=1)
    lines = [f"# TIES merge of k independent MiniCanvas erasures: UA / RA-I / RA-C vs λ and density",
             "", f"Inputs: the erase outputs of `{os.path.basename(a.study_dir)}` (each request "
             "erased from the base); `cu merge --method ties --lambda λ --density d` of the first "
             f"k, `cu eval` with the first {a.seeds} protocol seeds. Made by "
             f"`python benchmarks/ties_sweep.py DIR --seeds {a.seeds}`.", "",
             "| k | λ | density | UA | RA-I | RA-C |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['k']} | {r['lambda']:g} | {r['density']:g} | {r['ua']:.1f} | "
                     f"{r['ra_i']:.1f} | {r['ra_c']:.1f} |")
    with open(os.path.join(res, f"ties_sweep{tag}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
