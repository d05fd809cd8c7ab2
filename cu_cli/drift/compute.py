"""Drift over a chain of states (method-notes §11), streaming one key at a time.

For each state: ``l2``, ``l1``, ``l2_rel`` against the root base θ† over K = the state's stored keys
(other keys equal the base, Δ = 0), and ``l2_vs_parent`` against its parent over the union of both
key sets. The parent is found among the given states by payload hash; a first erase's parent is
the base; a parent that was not given gives ``null`` (never a guess).
"""

from __future__ import annotations

from dataclasses import dataclass

from cu_cli.ckpt.checkpoint import BaseIdentity, check_base, open_checkpoint
from cu_cli.ckpt.format import load_tensors
from cu_cli.ops.drift import DriftAccumulator, cosine


@dataclass(frozen=True)
class DriftRequest:
    paths: list[str]
    base: object  # cu_cli.models.base.Base
    top: int = 10  # per-layer rows to report
    tol: float = 0.0  # |Δ| above which an entry counts as changed
    allow_base_mismatch: bool = False


def run_drift(req: DriftRequest) -> dict:
    base = req.base
    ident = BaseIdentity(base.id, base.arch, base.fingerprint)
    headers = [open_checkpoint(p) for p in req.paths]
    warnings: list[str] = []
    for h in headers:
        warnings += h.warnings + check_base(h, ident, req.allow_base_mismatch)
    by_hash = {h.payload_sha256: h for h in headers}
    states, prev_delta = [], None
    for h in headers:
        keys = sorted(h.tensors)
        ref = base.get_tensors(keys)
        acc = DriftAccumulator(tol=req.tol)
        delta = {}
        for k in keys:
            w = load_tensors(h.path, [k])[k]
            acc.add(k, w, ref[k])
            delta[k] = w.double() - ref[k].double()
        row = {"path": h.path, "payload_sha256": h.payload_sha256,
               "erased": h.json("cu.erased", []), "steps": len(h.json("cu.lineage", []))}
        row.update(acc.result(req.top))
        parents = h.json("cu.parents", [])
        parent = by_hash.get(parents[0]) if len(parents) == 1 else None
        step_delta = None
        if not parents:
            row["l2_vs_parent"], row["parent"] = row["l2"], "base"
            step_delta = delta
        elif parent is not None:
            pkeys = sorted(set(parent.tensors) | set(keys))
            pref = base.get_tensors([k for k in pkeys if k not in h.tensors or k not in parent.tensors])
            step = DriftAccumulator(tol=req.tol)
            step_delta = {}
            for k in pkeys:
                w = load_tensors(h.path, [k])[k] if k in h.tensors else pref[k]
                wp = load_tensors(parent.path, [k])[k] if k in parent.tensors else pref[k]
                step.add(k, w, wp)
                step_delta[k] = w.double() - wp.double()
            row["l2_vs_parent"], row["parent"] = step.result(0)["l2"], parent.path
        else:
            row["l2_vs_parent"], row["parent"] = None, None
        row["cos_prev_step"] = cosine(step_delta, prev_delta) if (step_delta and prev_delta) else None
        prev_delta = step_delta
        states.append(row)
    return {"base": base.id, "states": states, "warnings": warnings}


def plot_drift(result: dict, out: str) -> None:
    """Line chart of drift along the chain (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cu_cli._util.fs import atomic_path

    xs = list(range(1, len(result["states"]) + 1))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(xs, [s["l2"] for s in result["states"]], "o-", label="‖θ − θ_base‖₂")
    step = [s["l2_vs_parent"] if s["l2_vs_parent"] is not None else float("nan")
            for s in result["states"]]
    ax.plot(xs, step, "s--", label="‖θ − θ_parent‖₂")
    ax.set_xlabel("state (request)")
    ax.set_ylabel("L2 drift")
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"Parameter drift from {result['base']}")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
