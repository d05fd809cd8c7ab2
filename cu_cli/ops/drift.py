"""Parameter drift statistics (method-notes §11), accumulated in fp64 one key at a time.

K = the union of the keys stored in all compared files; Δ_k = W_k − W_k^ref, where a key absent
from a file equals the base (Δ_k = 0 there, but its entries still count in n and its ‖W_k^ref‖ in
the relative norm). Every state therefore shares the same denominators:
``l2 = sqrt(Σ_{k∈K} ‖Δ_k‖_F²)``, ``l1 = Σ_{k∈K} Σ_i |Δ_ki|``,
``l2_rel = l2 / sqrt(Σ_{k∈K} ‖W_k^ref‖_F²)``, ``mean_abs = l1 / n`` and ``mean_sq = l2² / n`` (the
per-element means L1-SP/L2-SP penalise) and ``frac_changed`` = share of the n entries with
|Δ| > tol, where ``n = Σ_{k∈K} numel(W_k)``.
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
    """Sum per-key statistics, one key at a time (nothing but scalars is kept).

    ``add`` takes the state's and the reference tensor of one key; ``add_delta`` an already formed
    Δ (fp64) with the reference's squared norm; ``add_zero`` a key where the state equals the
    reference (Δ = 0: it still counts in ``n`` and in ‖W_ref‖).
    """

    tol: float = 0.0
    sq: float = 0.0
    abs: float = 0.0
    ref_sq: float = 0.0
    n: int = 0
    changed: int = 0
    per_key: dict[str, dict] = field(default_factory=dict)
    blocks: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, w, w_ref) -> None:
        ref = w_ref.double()
        self.add_delta(key, w.double() - ref, float(ref.pow(2).sum()))

    def add_delta(self, key: str, d, ref_sq: float) -> None:
        sq = float(d.pow(2).sum())
        a = d.abs()
        self._record(key, sq, float(a.sum()), ref_sq, d.numel(), int((a > self.tol).sum()))

    def add_zero(self, key: str, numel: int, ref_sq: float) -> None:
        self._record(key, 0.0, 0.0, ref_sq, numel, 0)

    def _record(self, key: str, sq: float, ab: float, rsq: float, n: int, changed: int) -> None:
        self.sq += sq
        self.abs += ab
        self.ref_sq += rsq
        self.n += n
        self.changed += changed
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


@dataclass
class CosineAccumulator:
    """Cosine between two deltas fed one key at a time (a key given to neither is zero)."""

    dot: float = 0.0
    na: float = 0.0
    nb: float = 0.0

    def add(self, a, b) -> None:
        """``a``/``b``: the two deltas of one key (fp64 tensors, or None for zero)."""
        if a is not None:
            self.na += float(a.pow(2).sum())
        if b is not None:
            self.nb += float(b.pow(2).sum())
        if a is not None and b is not None:
            self.dot += float((a * b).sum())

    def result(self) -> float | None:
        if self.na == 0 or self.nb == 0:
            return None
        return self.dot / math.sqrt(self.na * self.nb)
