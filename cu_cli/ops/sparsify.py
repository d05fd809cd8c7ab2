"""Magnitude sparsification of task vectors (TIES "trim"; mergekit ``sparsify.py::magnitude``).

``magnitude(τ, d)`` keeps exactly ``k = int(d · numel)`` entries of ``τ`` with the largest ``|τ|`` and
zeroes the rest. Ties at the threshold are broken by flat (row-major) index, lowest first, so the
result is deterministic and always has exactly ``k`` kept positions. ``k = 0`` (e.g. a 1-element
bias at density 0.5) trims the whole tensor; mergekit asserts instead.

Differences from the reference code (method-notes §9): its threshold ``|τ| ≥ k-th value`` keeps
≈k+1 entries when values tie; here the count is exact. Density is a fraction in (0, 1], never a
percentage.
"""

from __future__ import annotations

import torch


def topk_mask(x: torch.Tensor, density: float) -> torch.Tensor:
    """Boolean mask of the ``int(density · numel)`` largest-magnitude entries of ``x``."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    a = x.detach().abs().flatten()
    n = a.numel()
    k = int(density * n)
    if k >= n:
        return torch.ones_like(x, dtype=torch.bool)
    mask = torch.zeros(n, dtype=torch.bool, device=x.device)
    if k > 0:
        # k-th largest |x| = (n-k+1)-th smallest; O(n) selection instead of a full sort.
        t = torch.kthvalue(a, n - k + 1).values
        mask = a > t
        need = k - int(mask.sum())
        if need > 0:  # fill with entries equal to the threshold, lowest flat index first
            mask[torch.nonzero(a == t).flatten()[:need]] = True
    return mask.view_as(x)


def magnitude(x: torch.Tensor, density: float) -> torch.Tensor:
    """``x`` with all but its top ``int(density · numel)`` magnitudes set to zero."""
    if density == 1.0:
        return x
    return torch.where(topk_mask(x, density), x, torch.zeros((), dtype=x.dtype, device=x.device))
