"""Model merging per tensor, with mergekit semantics (method-notes §9).

Inputs per tensor: the root base θ₀, checkpoints θ_i (absolute weights; ``None`` = the key is absent
from that checkpoint, i.e. θ_i = θ₀ and τ_i = 0), weights w_i (default 1), densities d_i (default 1)
and a global λ (default 1). Task vectors τ_i = θ_i − θ₀.

* ``uniform`` (mergekit ``linear``; model soups, Wortsman et al., arXiv 2203.05482):
  θ = Σ w_i θ_i / Σ w_i.
* ``task-arithmetic`` (Ilharco et al., "Editing Models with Task Arithmetic", arXiv 2212.04089):
  θ = θ₀ + λ · Σ w_i τ̂_i, not normalised; τ̂_i = τ_i trimmed to density d_i (no trim at d_i = 1).
* ``ties`` (Yadav et al., "TIES-Merging", arXiv 2306.01708; mergekit
  ``generalized_task_arithmetic.py::GTATask.execute`` + ``get_mask``, ``normalize`` on):
  trim τ̂_i = top ``k = int(d_i · numel)`` magnitudes of τ_i (exactly k, see ``ops/sparsify.py``);
  δ_i = w_i τ̂_i; elect s = +1 where Σ_i δ_i ≥ 0 else −1 (zero-sum ties go positive); keep δ_i where
  sign(δ_i) = s (zeros never agree, so trimmed entries drop out);
  merged = Σ_kept δ_i / Σ_{i agreeing} w_i (a zero divisor becomes 1); θ = θ₀ + λ · merged.

TIES is computed in one streaming pass: Σ_kept δ_i is P = Σ max(δ_i, 0) where s = +1 and
N = Σ min(δ_i, 0) where s = −1, with Σ_i δ_i = P + N; the divisors are Σ w_i [δ_i > 0] and
Σ w_i [δ_i < 0]. So each method holds a few accumulators per tensor, never all N inputs at once;
``models`` may be a lazy iterable. Arithmetic is float64; the result has the inputs' dtype.

Differences from the reference code (``Regularizers/Merge/src/ties.py``): λ is applied after the
disjoint mean (the reference scales each τ before trimming: equivalent); trimming keeps exactly k
entries (the reference's ``≥ k-th value`` threshold keeps ≈k+1 on ties); top-k/density is a fraction
in (0, 1], never a percentage; zero-sum signs go positive (not the tensor's majority sign); the
merge function is never silently forced to ``mean`` when λ ≠ 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from cu_cli.ops.sparsify import magnitude

F64 = torch.float64


def _inputs(models, weights, densities):
    for i, (t, w, d) in enumerate(zip(models, weights, densities, strict=True)):
        if w <= 0:
            raise ValueError(f"weight {i} must be > 0, got {w}")
        if not 0.0 < d <= 1.0:
            raise ValueError(f"density {i} must be in (0, 1], got {d}")
        yield t, float(w), float(d)


def _out_dtype(base: torch.Tensor, seen: torch.dtype | None) -> torch.dtype:
    return seen or base.dtype


def uniform(base: torch.Tensor, models: Iterable[torch.Tensor | None], weights: Sequence[float],
            densities: Sequence[float], lam: float = 1.0) -> torch.Tensor:
    """θ = Σ w_i θ_i / Σ w_i (absent θ_i = θ₀); ``densities`` and ``lam`` must be 1."""
    if lam != 1.0 or any(d != 1.0 for d in densities):
        raise ValueError("uniform merging takes no lambda or density")
    acc, total, dtype = torch.zeros(base.shape, dtype=F64, device=base.device), 0.0, None
    for t, w, _ in _inputs(models, weights, densities):
        dtype = dtype or (t.dtype if t is not None else None)
        acc.add_((base if t is None else t).to(F64), alpha=w)
        total += w
    if total == 0:
        raise ValueError("merge needs at least one input")
    return acc.div_(total).to(_out_dtype(base, dtype))


def task_arithmetic(base: torch.Tensor, models: Iterable[torch.Tensor | None],
                    weights: Sequence[float], densities: Sequence[float],
                    lam: float = 1.0) -> torch.Tensor:
    """θ = θ₀ + λ Σ w_i τ̂_i (τ̂_i = τ_i trimmed to density d_i; not normalised)."""
    b = base.to(F64)
    acc, n, dtype = torch.zeros_like(b), 0, None
    for t, w, d in _inputs(models, weights, densities):
        n += 1
        if t is None:
            continue  # τ_i = 0
        dtype = dtype or t.dtype
        acc.add_(magnitude(t.to(F64) - b, d), alpha=w)
    if n == 0:
        raise ValueError("merge needs at least one input")
    return torch.add(b, acc, alpha=lam).to(_out_dtype(base, dtype))


def ties(base: torch.Tensor, models: Iterable[torch.Tensor | None], weights: Sequence[float],
         densities: Sequence[float], lam: float = 1.0) -> torch.Tensor:
    """TIES: trim, elect sign (Σδ ≥ 0 → +), disjoint mean over agreeing models, θ₀ + λ·merged."""
    b = base.to(F64)
    pos, neg = torch.zeros_like(b), torch.zeros_like(b)  # Σ max(δ,0), Σ min(δ,0)
    pos_w, neg_w = torch.zeros_like(b), torch.zeros_like(b)  # Σ w[δ>0], Σ w[δ<0]
    n, dtype = 0, None
    for t, w, d in _inputs(models, weights, densities):
        n += 1
        if t is None:
            continue  # δ_i = 0 never agrees
        dtype = dtype or t.dtype
        delta = magnitude(t.to(F64) - b, d).mul_(w)
        pos.add_(delta.clamp(min=0))
        neg.add_(delta.clamp(max=0))
        pos_w.add_((delta > 0).to(F64), alpha=w)
        neg_w.add_((delta < 0).to(F64), alpha=w)
        del delta
    if n == 0:
        raise ValueError("merge needs at least one input")
    positive = (pos + neg) >= 0  # sign election; a zero sum goes positive
    kept = torch.where(positive, pos, neg)
    den = torch.where(positive, pos_w, neg_w)
    merged = kept.div_(den.masked_fill_(den == 0, 1.0))
    return torch.add(b, merged, alpha=lam).to(_out_dtype(base, dtype))


MERGE_METHODS: dict[str, dict] = {
    "uniform": {
        "fn": uniform,
        "doc": "Weighted average of the checkpoints: Σ w_i θ_i / Σ w_i (mergekit 'linear').",
        "url": "https://arxiv.org/abs/2203.05482",
        "params": ("weight",),
    },
    "task-arithmetic": {
        "fn": task_arithmetic,
        "doc": "θ₀ + λ Σ w_i τ_i, τ_i = θ_i − θ₀, not normalised; density < 1 trims each τ_i.",
        "url": "https://arxiv.org/abs/2212.04089",
        "params": ("weight", "density", "lambda"),
    },
    "ties": {
        "fn": ties,
        "doc": "TIES: trim each τ_i to its top density·numel magnitudes, elect signs, average the "
               "agreeing entries, θ₀ + λ·merged.",
        "url": "https://arxiv.org/abs/2306.01708",
        "params": ("weight", "density", "lambda"),
    },
}


def merge_tensors(method: str, base: torch.Tensor, models: Iterable[torch.Tensor | None],
                  weights: Sequence[float] | None = None, densities: Sequence[float] | None = None,
                  lam: float = 1.0) -> torch.Tensor:
    """Merge one tensor with a registered method; weights/densities default to 1 per model."""
    if method not in MERGE_METHODS:
        raise ValueError(f"unknown merge method {method!r} (known: {', '.join(MERGE_METHODS)})")
    models = list(models) if weights is None or densities is None else models
    weights = [1.0] * len(models) if weights is None else weights
    densities = [1.0] * len(weights) if densities is None else densities
    return MERGE_METHODS[method]["fn"](base, models, weights, densities, lam)


def merge_states(method: str, base: dict, states: Sequence[dict],
                 weights: Sequence[float] | None = None, densities: Sequence[float] | None = None,
                 lam: float = 1.0) -> dict:
    """Merge ``dict[str, Tensor]`` states over the union of their keys (absent key: τ = 0)."""
    keys = sorted(set().union(*(s.keys() for s in states)))
    return {k: merge_tensors(method, base[k], [s.get(k) for s in states], weights, densities, lam)
            for k in keys}
