"""Balanced erase weights for a many-concept closed-form edit (a cu extension).

A simultaneous UCE edit of k concepts (Gandikota et al., arXiv 2308.14761) minimises one summed
erase residual, so a concept whose target K/V conflicts with the preserved states (a style that
shares its words with held styles) can stay far less erased than the others while the sum is
small. ``uce_weighting: balanced`` reweighs the concepts by iteratively reweighted least squares
toward equal *residual fractions*

    ρ_c = Σ_{e∈c} ‖W·c_e − v*_e‖² / Σ_{e∈c} ‖W_ref·c_e − v*_e‖²   (what is left of concept c's edit),

    w_c ← w_c · ρ_c / ρ̄,   ρ̄ = Σ_c N_c w_c ρ_c / Σ_c N_c w_c,   then Σ_c N_c w_c = N,

so the total erase weight (and with it the trade against the preserve metric) stays that of
``column`` weighting; only its split among the concepts moves. Each w_c stays in
[1/W_MAX, W_MAX]. Uses nothing but the edit's own least-squares residuals.
"""

from __future__ import annotations

import torch

BALANCE_ROUNDS = 6  # IRLS rounds (each one closed-form solve of every K/V weight)
W_MAX = 16.0  # bound on a concept's weight relative to the column weighting's 1


def rebalance(weights: torch.Tensor, rho: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """One IRLS step: per-concept weights (mean 1 over columns) moved toward equal ρ."""
    w, rho, n = weights.double(), rho.double().clamp_min(1e-12), counts.double()
    mean_rho = (n * w * rho).sum() / (n * w).sum()
    w = (w * rho / mean_rho).clamp(1.0 / W_MAX, W_MAX)
    w = w * n.sum() / (n * w).sum()
    return w.clamp(1.0 / W_MAX, W_MAX)
