"""Low-rank factorisation of a weight difference for LoRA export (pure torch, no I/O).

ΔW = W_state − W_base is factorised by a truncated SVD (Eckart–Young: the best rank-r
approximation in Frobenius norm), ΔW ≈ B·A with B = U_r·√S_r (out × r) and A = √S_r·V_rᵀ (r × in),
the split LoRA uses (Hu et al., "LoRA", arXiv 2106.09685: W + B·A with scale α/r; cu writes
α = r, so the scale is 1). A convolution kernel (out, in, kh, kw) is factorised as the matrix
(out, in·kh·kw); A is reshaped back to a (r, in, kh, kw) kernel and B to a 1×1 kernel, which is how
peft's ``lora.Conv2d`` and kohya's ``lora_down``/``lora_up`` hold it. The SVD runs in float64.

Retained energy of rank r = Σ_{i<r} s_i² / Σ s_i² (1 for ΔW = 0); the reconstruction error reported
is the relative Frobenius error ‖ΔW − B·A‖ / ‖ΔW‖ measured in float32 on the factors as written.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LowRank:
    """One factorised tensor: ``down`` (A) and ``up`` (B) in float32, shapes as LoRA stores them."""

    down: torch.Tensor  # (r, in) or (r, in, kh, kw)
    up: torch.Tensor  # (out, r) or (out, r, 1, 1)
    rank: int
    full_rank: int  # min(out, in·kh·kw): the rank that reproduces ΔW exactly
    energy: float  # retained energy in [0, 1]
    rel_error: float  # ‖ΔW − B·A‖_F / ‖ΔW‖_F (0 when ΔW = 0)
    max_abs_error: float  # max |ΔW − B·A|


def is_factorisable(t: torch.Tensor) -> bool:
    """A LoRA can carry a matrix (Linear) or a 4-D kernel (Conv2d); not biases or norms."""
    return t.dim() in (2, 4)


def as_matrix(delta: torch.Tensor) -> torch.Tensor:
    return delta.reshape(delta.shape[0], -1)


def rank_for_energy(s: torch.Tensor, energy: float) -> int:
    """Smallest r with Σ_{i<r} s_i² ≥ energy · Σ s_i² (at least 1)."""
    e = s.double() ** 2
    total = float(e.sum())
    if total == 0.0:
        return 1
    cum = torch.cumsum(e, 0) / total
    # tolerance: energy 1.0 must pick the full numerical rank, not fail on rounding
    r = int((cum < energy - 1e-12).sum()) + 1
    return max(1, min(r, s.numel()))


def factorise(delta: torch.Tensor, rank: int | None = None, energy: float | None = None) -> LowRank:
    """Truncated SVD of ``delta`` at ``rank`` (clipped to the full rank) or at retained ``energy``."""
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank and energy")
    if not is_factorisable(delta):
        raise ValueError(f"cannot factorise a {delta.dim()}-D tensor")
    m = as_matrix(delta).double()
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    full = s.numel()
    r = min(int(rank), full) if rank is not None else rank_for_energy(s, float(energy))
    root = s[:r].sqrt()
    up = (u[:, :r] * root).float()
    down = (root[:, None] * vh[:r]).float()
    total = float((s ** 2).sum())
    kept = float((s[:r] ** 2).sum())
    recon = up @ down
    err = as_matrix(delta).float() - recon
    norm = float(as_matrix(delta).float().norm())
    rel = float(err.norm()) / norm if norm > 0 else 0.0
    if delta.dim() == 4:
        down = down.reshape(r, *delta.shape[1:])
        up = up.reshape(delta.shape[0], r, 1, 1)
    return LowRank(down=down.contiguous(), up=up.contiguous(), rank=r, full_rank=full,
                   energy=kept / total if total > 0 else 1.0, rel_error=rel,
                   max_abs_error=float(err.abs().max()) if err.numel() else 0.0)


def reconstruct(down: torch.Tensor, up: torch.Tensor, shape, scale: float = 1.0) -> torch.Tensor:
    """scale · B·A reshaped to ``shape`` (float32): what a LoRA loader adds to the weight."""
    d = down.reshape(down.shape[0], -1).float()
    u = up.reshape(up.shape[0], -1).float()
    return (scale * (u @ d)).reshape(tuple(shape))
