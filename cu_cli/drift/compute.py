"""Drift over a chain of states (method-notes §11), streaming one key at a time.

K = the union of the keys stored in all the given files; a key absent from a file equals the base
(Δ = 0 there). For each state: ``l2``, ``l1``, ``l2_rel``, ``mean_abs``, ``mean_sq``,
``frac_changed`` against the root base θ† over that same K (so every row shares the denominators
``n_params`` and ‖θ†_K‖), and ``l2_vs_parent`` against its parent. The parent is found among the
given states by payload hash; a first erase's parent is the base; a parent that was not given
gives ``null`` (never a guess). ``cos_prev_step`` is the cosine between this row's step update and
the previous row's.

With a projection basis C (``--basis``), ``leakage`` reports ‖ΔW·C‖_F/(‖ΔW‖_F‖C‖_F) (§7.3) of the
state's step update ΔW = θ − θ_parent (``against: "parent"``), or θ − θ_base for a first erase or
when the parent was not given (``against: "base"``), over the 2-D ``attn2.to_k``/``attn2.to_v``
weights in K whose input dimension equals C's rows and whose update is non-zero: mean, max and
the number of keys.

Memory: the loop is key-major. Each key of the base is read once, each state's copy of it once
(a parent that is not the previous row is read again), and only one key's tensors are held at a
time; the step cosine is accumulated as running dot products, never as whole-state copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cu_cli._util.errors import IncompatibleError
from cu_cli.ckpt.checkpoint import BaseIdentity, check_base, open_checkpoint
from cu_cli.ckpt.format import load_tensors
from cu_cli.ckpt.keys import XATTN_KV as _KV
from cu_cli.ops.drift import CosineAccumulator, DriftAccumulator
from cu_cli.ops.projection import leakage

_BASE = -1  # step reference of a first erase (no parents)


@dataclass(frozen=True)
class DriftRequest:
    paths: list[str]
    base: object  # cu_cli.models.base.Base
    top: int = 10  # per-layer rows to report
    tol: float = 0.0  # |Δ| above which an entry counts as changed
    allow_base_mismatch: bool = False
    basis: str | None = None  # projection basis file: report the step update's leakage


def _step_ref(h, by_hash: dict[str, int]) -> int | None:
    """``_BASE`` for a first erase, the index of the parent among the given states, else None."""
    parents = h.json("cu.parents", [])
    if not parents:
        return _BASE
    if len(parents) == 1 and parents[0] in by_hash:
        return by_hash[parents[0]]
    return None


def _load(h, key: str):
    """State ``h``'s tensor of ``key`` in fp64, or None when the state equals the base there."""
    return load_tensors(h.path, [key])[key].double() if key in h.tensors else None


def check_shapes(headers, shapes: dict) -> None:
    """Exit 3 when a state holds a key the base lacks or a tensor of another shape (e.g. a
    transposed one), before any arithmetic."""
    for h in headers:
        for k, info in h.tensors.items():
            if k not in shapes:
                raise IncompatibleError(f"{h.path}: tensor {k} does not exist in the base")
            if tuple(info["shape"]) != tuple(shapes[k]):
                raise IncompatibleError(f"{h.path}: tensor {k} has shape {tuple(info['shape'])}, "
                                        f"the base has {tuple(shapes[k])}")


def run_drift(req: DriftRequest) -> dict:
    base = req.base
    ident = BaseIdentity(base.id, base.arch, base.fingerprint)
    headers = [open_checkpoint(p) for p in req.paths]
    warnings: list[str] = []
    for h in headers:
        warnings += h.warnings + check_base(h, ident, req.allow_base_mismatch)
    check_shapes(headers, base.shapes())
    C = None
    if req.basis:
        from cu_cli.ckpt.basis import read_basis

        C, _ = read_basis(req.basis, ident, req.allow_base_mismatch)
        C = C.double()
    by_hash = {h.payload_sha256: i for i, h in enumerate(headers)}
    refs = [_step_ref(h, by_hash) for h in headers]
    known = [r is not None for r in refs]
    n = len(headers)
    accs = [DriftAccumulator(tol=req.tol) for _ in headers]
    step_sq = [0.0] * n
    cos = [CosineAccumulator() for _ in headers]
    leaks: list[list[float]] = [[] for _ in headers]
    keys = sorted(set().union(*(h.tensors for h in headers)))
    for k in keys:
        ref = base.get_tensors([k])[k].double()
        ref_sq = float(ref.pow(2).sum())
        kv = (C is not None and _KV.search(k) is not None and ref.dim() == 2
              and ref.shape[1] == C.shape[0])
        prev_w = prev_step = None  # previous row's tensor (None: the base) and step (None: zero)
        for i, h in enumerate(headers):
            w = _load(h, k)
            d = None if w is None else w - ref
            if d is None:
                accs[i].add_zero(k, ref.numel(), ref_sq)
            else:
                accs[i].add_delta(k, d, ref_sq)
            j = refs[i]
            if j is None or j == _BASE:
                step = d
            else:
                wp = prev_w if j == i - 1 else _load(headers[j], k)
                step = None if w is None and wp is None else (
                    (ref if w is None else w) - (ref if wp is None else wp))
                if step is not None:
                    step_sq[i] += float(step.pow(2).sum())
            if i > 0 and known[i] and known[i - 1]:
                cos[i].add(step, prev_step)
            if kv and step is not None and float(step.norm()) > 0:
                leaks[i].append(leakage(step, C))  # θ − θ_base when the parent is unknown
            prev_w, prev_step = w, (step if known[i] else None)
    states = []
    for i, h in enumerate(headers):
        row = {"path": h.path, "payload_sha256": h.payload_sha256,
               "erased": h.json("cu.erased", []), "steps": len(h.json("cu.lineage", []))}
        row.update(accs[i].result(req.top))
        j = refs[i]
        if j == _BASE:
            row["l2_vs_parent"], row["parent"] = row["l2"], "base"
        elif j is not None:
            row["l2_vs_parent"], row["parent"] = math.sqrt(step_sq[i]), headers[j].path
        else:
            row["l2_vs_parent"], row["parent"] = None, None
        row["cos_prev_step"] = cos[i].result() if i > 0 and known[i] and known[i - 1] else None
        row["leakage"] = None if C is None else {
            "mean": sum(leaks[i]) / len(leaks[i]) if leaks[i] else None,
            "max": max(leaks[i]) if leaks[i] else None,
            "keys": len(leaks[i]),
            "against": "parent" if j is not None and j != _BASE else "base"}
        states.append(row)
    return {"base": base.id, "basis": req.basis, "states": states, "warnings": warnings}


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
