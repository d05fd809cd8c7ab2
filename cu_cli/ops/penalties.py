"""L1-SP and L2-SP penalties toward a reference model (method-notes §5; Li et al., arXiv 1802.01483).

L1SP = (1/N)·Σ_k Σ_i |θ_ki − θ^ref_ki|,  L2SP = (1/N)·Σ_k Σ_i (θ_ki − θ^ref_ki)²,
N = number of trainable elements: means, no ½, no square root. θ^ref is captured before the first
step (the parent state by default).
"""

from __future__ import annotations

import torch


def sp_penalties(params: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple:
    """(L1SP, L2SP) as differentiable scalars."""
    n = sum(p.numel() for p in params.values())
    l1 = sum((params[k] - ref[k]).abs().sum() for k in params) / n
    l2 = sum((params[k] - ref[k]).pow(2).sum() for k in params) / n
    return l1, l2
