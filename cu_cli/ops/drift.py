"""Parameter drift statistics (method-notes §11), accumulated in fp64 one key at a time.

For a key set K and deltas Δ_k = W_k − W_k^ref (a key absent from a state equals the base):
``l2 = sqrt(Σ_k ‖Δ_k‖_F²)``, ``l1 = Σ_k Σ_i |Δ_ki|``, ``l2_rel = l2 / sqrt(Σ_k ‖W_k^ref‖_F²)``,
``mean_abs``/``mean_sq`` = the per-element means L1-SP/L2-SP penalise, ``frac_changed`` = share
of entries with |Δ| > tol.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_BLOCK = re.compile(r"^unet\.(down_blocks|mid_block|up_blocks)")


def block_of(key: str) -> str:
    """``down`` / ``mid`` / ``up`` for UNet keys, else the component name."""
    m = _BLOCK.match(key)
    if m:
        return {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}[m.group(1)]
    return key.split(".", 1)[0]


@dataclass
class DriftAccumulator:
    """Sum per-key statistics; ``add`` takes fp tensors of equal shape."""

    tol: float = 0.0
    sq: float = 0.0
    abs: float = 0.0
    ref_sq: float = 0.0
    n: int = 0
    changed: int = 0
    per_key: dict[str, dict] = field(default_factory=dict)
    blocks: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, w, w_ref) -> None:
        d = w.double() - w_ref.double()
        sq = float(d.pow(2).sum())
        ab = float(d.abs().sum())
        rsq = float(w_ref.double().pow(2).sum())
        self.sq += sq
        self.abs += ab
        self.ref_sq += rsq
        self.n += d.numel()
        self.changed += int((d.abs() > self.tol).sum())
        self.per_key[key] = {"key": key, "l2": math.sqrt(sq),
                             "l2_rel": math.sqrt(sq / rsq) if rsq > 0 else None,
                             "block": block_of(key)}
        self.blocks[block_of(key)] = self.blocks.get(block_of(key), 0.0) + sq

    def result(self, top: int = 10) -> dict:
        layers = sorted(self.per_key.values(), key=lambda r: -r["l2"])[:top] if top else []
        return {
            "l2": math.sqrt(self.sq),
            "l1": self.abs,
            "l2_rel": math.sqrt(self.sq / self.ref_sq) if self.ref_sq > 0 else None,
            "mean_abs": self.abs / self.n if self.n else 0.0,
            "mean_sq": self.sq / self.n if self.n else 0.0,
            "frac_changed": self.changed / self.n if self.n else 0.0,
            "n_params": self.n,
            "blocks": {b: math.sqrt(v) for b, v in sorted(self.blocks.items())},
            "layers": layers,
        }


def cosine(a: dict, b: dict) -> float | None:
    """Cosine between two deltas given as ``{key: tensor}`` (missing keys are zero)."""
    dot = na = nb = 0.0
    for k in set(a) | set(b):
        if k in a and k in b:
            dot += float((a[k].double() * b[k].double()).sum())
        if k in a:
            na += float(a[k].double().pow(2).sum())
        if k in b:
            nb += float(b[k].double().pow(2).sum())
    if na == 0 or nb == 0:
        return None
    return dot / math.sqrt(na * nb)
