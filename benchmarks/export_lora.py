"""LoRA export rank sweep: UA / RA-I / RA-C of a state vs its LoRA at several ranks (docs/export.md).

    python benchmarks/export_lora.py STATE [--ranks 1,2,4,8,full] [--dir OUT] [--base B]
                                           [--protocol minicanvas-style-wide]

A token ``eX`` in ``--ranks`` (e.g. ``e0.95``) exports with ``--energy X`` instead of a rank.

For each rank the state is exported with ``cu export lora --style peft`` (the same API), the file
is read back and fused exactly as ``fuse_lora`` does (W_base + (α/r)·B·A, α = r;
``cu_cli.export.lora.lora_to_tensors``), the fused weights are written as a cu state
(``OUT/fused_r<R>.safetensors``, lineage parent = STATE), and every state — the original first —
is scored in one ``cu eval`` run (``run_eval``; ``--protocol``, default the one the state's erased
concept selects; ``minicanvas-style-wide`` scores 160 images of the erased style instead of 40).
What is evaluated is therefore exactly what the LoRA file holds, in float32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("state")
    ap.add_argument("--ranks", default="1,2,4,8,full")
    ap.add_argument("--dir", default="/tmp/cu-export-lora")
    ap.add_argument("--base", default=None)
    ap.add_argument("--protocol", default=None,
                    help="cu eval protocol (default: the one the state's erased concept selects; "
                         "minicanvas-style-wide scores 160 images of the erased style, not 40)")
    args = ap.parse_args()

    from cu_cli.ckpt.checkpoint import BaseIdentity, open_checkpoint, write_checkpoint
    from cu_cli.ckpt.lineage import make_step
    from cu_cli.evaluate.run import EvalRequest, run_eval
    from cu_cli.export.lora import lora_to_tensors
    from cu_cli.export.run import ExportRequest, run_export
    from cu_cli.models.base import base_for_states

    os.makedirs(args.dir, exist_ok=True)
    base = base_for_states([args.state], args.base)
    ident = BaseIdentity(base.id, base.arch, base.fingerprint)
    parent = open_checkpoint(args.state)
    rows = [{"rank": "state", "file_bytes": os.path.getsize(args.state), "path": args.state,
             "worst_rel_error": 0.0, "min_energy": 1.0}]
    for r in args.ranks.split(","):
        lora = os.path.join(args.dir, f"lora_r{r}.safetensors")
        fused = os.path.join(args.dir, f"fused_r{r}.safetensors")
        for p in (lora, fused):
            if os.path.exists(p):
                os.remove(p)
        t0 = time.time()
        by_energy = r.startswith("e")
        res = run_export(ExportRequest("lora", args.state, lora, base=args.base,
                                       rank=None if by_energy else r,
                                       energy=float(r[1:]) if by_energy else None, style="peft"))
        secs = time.time() - t0
        tensors = lora_to_tensors(lora, base)
        step = make_step("lora-reconstruct", concepts=[], method="peft-fuse",
                         params={"rank": r, "lora": os.path.abspath(lora)},
                         parents=[parent.payload_sha256], argv=sys.argv)
        write_checkpoint(fused, tensors, ident, step, parents=[parent])
        rows.append({"rank": r, "file_bytes": os.path.getsize(lora), "path": fused,
                     "worst_rel_error": res.report["worst"]["rel_error"],
                     "min_energy": res.report["min_energy"], "export_seconds": round(secs, 2),
                     "params": res.report["params"],
                     "ranks": sorted({x["rank"] for x in res.report["per_tensor"]})})
    t0 = time.time()
    ev = run_eval(EvalRequest(states=[r["path"] for r in rows], base=args.base,
                              protocol=args.protocol, erased=parent.json("cu.erased", []),
                              include_base=True))
    for row, s in zip(rows, ev.states[1:]):
        row.update({k: s["metrics"][k] for k in ("ua", "ra_i", "ra_c")})
    base_m = ev.states[0]["metrics"]
    print(f"protocol {ev.protocol}, {ev.settings['steps']} steps, CFG {ev.settings['guidance']}, "
          f"{len(ev.settings['seeds'])} seeds; eval {time.time() - t0:.0f} s")
    print("| rank | ranks used | UA | RA-I | RA-C | worst rel. error | min energy | file size |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| base | | {base_m['ua']} | {base_m['ra_i']} | {base_m['ra_c']} | | | |")
    for row in rows:
        rk = row.get("ranks") or []
        used = "" if not rk else str(rk[0]) if len(rk) == 1 else f"{rk[0]}–{rk[-1]}"
        print(f"| {row['rank']} | {used} | {row['ua']} | {row['ra_i']} | {row['ra_c']} | "
              f"{row['worst_rel_error']:.3g} | {row['min_energy']:.4f} | "
              f"{row['file_bytes'] / 1024:.1f} KiB |")
    with open(os.path.join(args.dir, "results.json"), "w") as f:
        json.dump({"base": base_m, "rows": rows, "protocol": ev.protocol,
                   "settings": ev.settings}, f, indent=2, default=str)


if __name__ == "__main__":
    main()
