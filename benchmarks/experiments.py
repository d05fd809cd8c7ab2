"""MiniCanvas experiments behind the issue notes, run exactly as a user would: shell-style chains
of ``cu`` commands (subprocesses), results as JSON + Markdown under ``docs/results/``.

  python benchmarks/experiments.py single --n 6            # one default request per style
  python benchmarks/experiments.py chain --n 6 [--l2 W]   # sequential erasures, plain vs L2-SP
  python benchmarks/experiments.py projection             # erase with / without a projection basis
  python benchmarks/experiments.py ties --n 12            # TIES over independent erasures

Every output is reused when it exists (delete --work to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results")


def cu(*args: str, stdin: str | None = None) -> str:
    cmd = [sys.executable, "-m", "cu_cli", *args]
    t = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, input=stdin)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"failed ({res.returncode}): cu {' '.join(args)}")
    print(f"  cu {' '.join(args)}  [{time.time() - t:.1f}s]", file=sys.stderr)
    return res.stdout


def erase(work: str, name: str, concept: str, parent: str | None = None, *extra: str) -> str:
    out = os.path.join(work, name + ".safetensors")
    if not os.path.exists(out):
        args = ["erase", "--concept", concept, "-o", out, "-q", *extra]
        if parent:
            args += ["--from", parent]
        cu(*args)
    return out


def evaluate(paths: list[str], *extra: str) -> dict:
    return json.loads(cu("eval", *paths, "--json", "-q", *extra))


def drift(paths: list[str]) -> dict:
    return json.loads(cu("drift", *paths, "--json", "--per-layer", "0"))


def world():
    sys.path.insert(0, ROOT)
    from cu_cli.world.minicanvas import load_world

    return load_world()


def fmt(v) -> str:
    return "–" if v is None else f"{v:.1f}"


def num(v) -> str:
    return "–" if v is None else f"{v:.3f}"


# The session-3 MiniCanvas ConAbl settings (lr 3e-4, 150 steps, no context penalty, no ConAbl η):
# the bare variants and the v3 result pages (projection, TIES, similarity, erased) used them.
S3 = ["--context-weight", "0", "--conabl-eta", "0", "--lr", "3e-4", "--steps", "150"]
CHAIN_VARIANTS = {
    "plain": ["--preserve", "none", *S3],  # the bare objective, no cu extension
    "l2": ["--preserve", "none", "--l2", "{l2}", *S3],
    "world": S3,  # --preserve world only (the default until session 4)
    "default": [],  # today's defaults (--preserve world, --context-weight 4, --conabl-eta 0.05,
    # lr 6e-4, 120 steps)
    "retain": [*S3, "--preserve-weight", "1", "--steps", "250"],  # sample_requests/..._retain.yaml
}


def single(args) -> dict:
    """One request from the base for each of the first ``--n`` styles of the erase order, MiniCanvas
    defaults (the issue's single-style criterion, for every style rather than one)."""
    styles = world().sequences["style"][: args.n]
    paths = [erase(args.work, f"default_{i + 1}", s) for i, s in enumerate(styles)]
    ev = evaluate(paths)
    rows = [{"erased": s, **{k: st["metrics"][k] for k in ("ua", "ra_i", "ra_c")},
             "per_concept": st["metrics"]["per_concept"]} for s, st in zip(styles, ev["states"])]
    retained = [c for c in rows[0]["per_concept"] if c != styles[0]]
    md = ["# One style erased from the base, MiniCanvas defaults\n",
          "`cu erase --concept S` (ConAbl, MiniCanvas defaults: `--preserve world`, "
          "`--context-weight 4`, `--conabl-eta 0.05`, lr 6e-4, 120 steps; seed 42) for "
          f"each of the first {args.n} styles of the erase order, each evaluated with `cu eval` "
          "(erased style + 4 retained styles × 4 retained objects × 10 seeds).\n",
          "| erased | UA | RA-I | RA-C | " + " | ".join(retained) + " |",
          "|---|---|---|---|" + "---|" * len(retained)]
    for r in rows:
        md.append(f"| {r['erased']} | {fmt(r['ua'])} | {fmt(r['ra_i'])} | {fmt(r['ra_c'])} | "
                  + " | ".join(fmt(r["per_concept"].get(c)) for c in retained) + " |")
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("ua", "ra_i", "ra_c")}
    md.append(f"| **mean** | {fmt(mean['ua'])} | {fmt(mean['ra_i'])} | {fmt(mean['ra_c'])} |"
              + " |" * len(retained))
    return {"rows": rows, "mean": mean, "md": "\n".join(md) + "\n"}


def chain(args) -> dict:
    styles = world().sequences["style"][: args.n]
    rows = {}
    for name in args.variants.split(","):
        extra = [x.format(l2=f"{args.l2:g}") for x in CHAIN_VARIANTS[name]]
        label = " ".join(extra) or "MiniCanvas defaults"
        tag = name if name != "l2" else f"l2_{args.l2:g}"
        paths, parent = [], None
        for i, s in enumerate(styles):
            parent = erase(args.work, f"chain_{tag}_{i + 1}", s, parent, *extra)
            paths.append(parent)
        ev = evaluate(paths, "--with-base")
        dr = drift(paths)
        rows[label] = [{"step": i, "erased": s["erased"], "ua": s["metrics"]["ua"],
                        "ra_i": s["metrics"]["ra_i"], "ra_c": s["metrics"]["ra_c"],
                        "l2": None if i == 0 else dr["states"][i - 1]["l2"],
                        "l2_vs_parent": None if i == 0 else dr["states"][i - 1]["l2_vs_parent"]}
                       for i, s in enumerate(ev["states"])]
    md = [f"# Sequential style erasure on MiniCanvas ({args.n} requests)\n",
          "`cu erase` (ConAbl, kv-xattn, MiniCanvas defaults otherwise) chained with `--from`; each "
          "state evaluated with `cu eval --with-base` (minicanvas-style protocol: erased + 4 "
          "retained styles × 4 retained objects × 10 seeds). Drift from `cu drift`.\n"]
    for label, rs in rows.items():
        md += [f"\n## `{label}`\n", "| step | last erased | UA | RA-I | RA-C | ‖θ−θ₀‖ | ‖θ−θₙ₋₁‖ |",
               "|---|---|---|---|---|---|---|"]
        for r in rs:
            md.append(f"| {r['step']} | {r['erased'][-1] if r['step'] else 'base'} | "
                      f"{fmt(r['ua'])} | {fmt(r['ra_i'])} | {fmt(r['ra_c'])} | "
                      f"{num(r['l2'])} | {num(r['l2_vs_parent'])} |")
    return {"rows": rows, "md": "\n".join(md) + "\n"}


def projection(args) -> dict:
    w = world()
    target = args.target or w.sequences["style"][0]
    slug = target.replace(" ", "_")
    basis = os.path.join(args.work, f"basis_{slug}_{args.top_m}.safetensors")
    if not os.path.exists(basis):
        cu("project-basis", "--concept", target, "-o", basis, "--top-m", str(args.top_m), "-q")
    info = json.loads(cu("inspect", basis, "--json"))
    near = [c for c in info["basis"]["concepts"] if c in w.styles and c != target][: args.near]
    bare = CHAIN_VARIANTS["plain"]  # isolate the projection: no retained-token penalty
    models = {"plain": erase(args.work, f"proj_plain_{slug}", target, None, *bare)}
    for ft in ("none", "concept"):
        models[f"basis, --free-target {ft}"] = erase(
            args.work, f"proj_basis_{slug}_{args.top_m}_{ft}", target, None, *bare, "--basis",
            basis, "--free-target", ft)
    retain = os.path.join(args.work, "near.txt")
    with open(retain, "w") as f:
        f.write("\n".join(near) + "\n")
    ev = evaluate(list(models.values()), "--with-base", "--retain-file", retain)
    res = {"target": target, "near": near, "basis_concepts": info["basis"]["concepts"],
           "states": [{"name": n, "ua": s["metrics"]["ua"], "near_mean": s["metrics"]["ra_i"],
                       "per_concept": {c: s["metrics"]["per_concept"].get(c) for c in near}}
                      for n, s in zip(["base", *models], ev["states"])]}
    md = [f"# Gradient projection on MiniCanvas: erasing {target!r}\n",
          f"Basis: `cu project-basis --concept {target!r} --top-m {args.top_m}` "
          f"({', '.join(info['basis']['concepts'])}). Erase: MiniCanvas ConAbl defaults with "
          "`--preserve none` (projection alone). Nearest styles evaluated (`cu eval "
          f"--retain-file`): {', '.join(near)}.\n", "| model | UA | mean acc. of nearest styles | "
          + " | ".join(near) + " |", "|---|---|---|" + "---|" * len(near)]
    for s in res["states"]:
        md.append(f"| {s['name']} | {fmt(s['ua'])} | {fmt(s['near_mean'])} | "
                  + " | ".join(fmt(s["per_concept"][c]) for c in near) + " |")
    res["md"] = "\n".join(md) + "\n"
    return res


def ties(args) -> dict:
    styles = world().sequences["style"][: args.n]
    plain = CHAIN_VARIANTS["plain"]  # TIES vs the unregularized chain: both without --preserve
    singles = [erase(args.work, f"single_{i + 1}", s, None, *plain) for i, s in enumerate(styles)]
    merged = os.path.join(args.work, f"ties_{args.n}_{args.lam:g}_{args.density:g}.safetensors")
    if not os.path.exists(merged):
        cu("merge", *singles, "--method", "ties", "--lambda", str(args.lam), "--density",
           str(args.density), "-o", merged, "-q")
    seq, parent = [], None
    for i, s in enumerate(styles):
        parent = erase(args.work, f"chain_plain_{i + 1}", s, parent, *plain)
        seq.append(parent)
    ev = evaluate([merged, seq[-1]])
    res = {"styles": styles, "lambda": args.lam, "density": args.density,
           "ties": ev["states"][0]["metrics"], "sequential": ev["states"][1]["metrics"]}
    md = [f"# TIES over {args.n} independently erased styles vs the sequential chain\n",
          f"`cu merge --method ties --lambda {args.lam:g} --density {args.density:g}` over "
          f"{args.n} single-request states (each erased from the base); evaluated with "
          "`cu eval` on all erased styles.\n", "| model | UA | RA-I | RA-C |", "|---|---|---|---|"]
    for name, m in (("TIES merge", res["ties"]), (f"sequential chain ({args.n})", res["sequential"])):
        md.append(f"| {name} | {fmt(m['ua'])} | {fmt(m['ra_i'])} | {fmt(m['ra_c'])} |")
    res["md"] = "\n".join(md) + "\n"
    return res


def erased(args) -> dict:
    """Does projecting out previously erased concepts keep them erased (project-basis
    --include-erased, on by default)? Two requests: A from the base, then B from A."""
    w = world()
    a, b = w.sequences["style"][:2]
    bare = CHAIN_VARIANTS["plain"]
    first = erase(args.work, "erased_A", a, None, *bare)
    models = {"no basis": erase(args.work, "erased_B_plain", b, first, *bare)}
    for flag in ("--include-erased", "--no-include-erased"):
        basis = os.path.join(args.work, f"erased_basis{flag}.safetensors")
        if not os.path.exists(basis):
            cu("project-basis", "--concept", b, "--from", first, flag, "--top-m",
               str(args.top_m), "-o", basis, "-q")
        models[f"basis {flag}"] = erase(args.work, f"erased_B{flag}", b, first, *bare, "--basis",
                                        basis, "--free-target", "concept")
    ev = evaluate([first, *models.values()])
    res = {"first": a, "second": b, "states": [
        {"name": n, "acc_first": s["metrics"]["per_concept"].get(a),
         "acc_second": s["metrics"]["per_concept"].get(b), "ra_i": s["metrics"]["ra_i"],
         "ra_c": s["metrics"]["ra_c"]}
        for n, s in zip([f"after A ({a})", *models], ev["states"])]}
    md = [f"# Previously erased concepts in the basis: {a!r} then {b!r}\n",
          f"`cu erase --concept {a!r}` from the base, then `--concept {b!r}` from it: without a "
          f"basis, and with `cu project-basis --from A --top-m {args.top_m}` with and without "
          "`--include-erased` (erase `--free-target concept --preserve none`). A lower accuracy "
          "on the first concept = still erased.\n",
          f"| model | acc. {a} (erased first) | acc. {b} (erased second) | RA-I | RA-C |",
          "|---|---|---|---|---|"]
    for s in res["states"]:
        md.append(f"| {s['name']} | {fmt(s['acc_first'])} | {fmt(s['acc_second'])} | "
                  f"{fmt(s['ra_i'])} | {fmt(s['ra_c'])} |")
    res["md"] = "\n".join(md) + "\n"
    return res


def similarity(args) -> dict:
    """Accuracy drop of every non-erased style vs its text similarity to the erased one, over
    single-request states (each from the base, ``--preserve none`` as in the TIES experiment)."""
    w = world()
    styles = w.sequences["style"][: args.n]
    singles = [erase(args.work, f"single_{i + 1}", s, None, *CHAIN_VARIANTS["plain"])
               for i, s in enumerate(styles)]
    every = os.path.join(args.work, "all_styles.txt")
    with open(every, "w") as f:
        f.write("\n".join(w.styles) + "\n")
    ev = evaluate(singles, "--retain-file", every, "--seeds", "3", "--similarity")
    sim = ev["similarity"]
    states = ev["states"][1:]  # the base comes first (--similarity evaluates it)
    res = {"pearson_r_drop_vs_similarity": sim["pearson_r_drop_vs_similarity"],
           "n": sim["n"], "points": sim["points"]}
    md = [f"# Semantic sensitivity on MiniCanvas (single-style erasures)\n",
          f"`cu eval single_1 … single_{args.n} --retain-file <all 16 styles> --seeds 3 "
          "--similarity --json`: the states are `cu erase --preserve none` of each of the first "
          f"{args.n} styles of the erase order, each from the base. For every (state, non-erased "
          "style): accuracy drop vs the base against the cosine of the style's token-level text "
          "embedding to the erased style (models/text.py extraction).\n",
          f"Pearson r(drop, similarity) = **{sim['pearson_r_drop_vs_similarity']:.3f}** over "
          f"{sim['n']} points (the paper reports r = −0.627 between *retention* and similarity, "
          "i.e. the same sign as a positive r for the drop).\n",
          "| state (erased) | UA | mean accuracy of the other styles |", "|---|---|---|"]
    for st in states:
        others = [v for c, v in st["metrics"]["per_concept"].items()
                  if c in w.styles and c not in st["erased"]]
        md.append(f"| {', '.join(st['erased'])} | {fmt(st['metrics']['ua'])} | "
                  f"{fmt(sum(others) / len(others) if others else None)} |")
    md += ["", "| retained style | erased | similarity | drop (points) |", "|---|---|---|---|"]
    for p in sorted(sim["points"], key=lambda p: -p["similarity"])[:12]:
        md.append(f"| {p['concept']} | {os.path.basename(p['state'])} | {p['similarity']:.3f} | "
                  f"{p['drop']:.1f} |")
    res["md"] = "\n".join(md) + "\n"
    return res


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["single", "chain", "projection", "ties", "erased",
                                    "similarity"])
    p.add_argument("--work", default="/tmp/cu-experiments")
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--l2", type=float, default=25000.0)
    p.add_argument("--target", default=None)
    p.add_argument("--variants", default="plain,l2,default")
    p.add_argument("--top-m", type=int, default=12)
    p.add_argument("--near", type=int, default=6)
    p.add_argument("--lam", type=float, default=2.75)
    p.add_argument("--density", type=float, default=0.4)
    p.add_argument("--tag", default="")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    res = {"single": single, "chain": chain, "projection": projection, "ties": ties, "erased": erased,
            "similarity": similarity}[a.what](a)
    name = a.what + (f"_{a.tag}" if a.tag else "")
    with open(os.path.join(RESULTS, name + ".json"), "w") as f:
        json.dump({k: v for k, v in res.items() if k != "md"}, f, indent=1)
    with open(os.path.join(RESULTS, name + ".md"), "w") as f:
        f.write(res["md"])
    print(res["md"])


if __name__ == "__main__":
    main()
