"""Closed-form cross-attention edits (UCE, Gandikota et al., WACV 2024, arXiv 2308.14761;
null-space variant after SPEED, arXiv 2503.07392).

For one K/V weight W (d_out × d_in) with token states as columns, reference W_ref (the parent, or
the base with ``reg_ref: base``), erase pairs (c_e, v*_e) and a preserve metric M (d_in × d_in,
e.g. λ_p·H_pH_pᵀ/N_p + λ_c·H_cH_cᵀ/N_c), the edit minimises

    E(ΔW) = (s/N)·Σ_e ‖(W_ref + ΔW)·c_e − v*_e‖² + tr(ΔW·M·ΔWᵀ) + λ·‖ΔW‖²_F.

With R = [v*_e − W_ref·c_e] and C = [c_e] the normal equations are ΔW·A = (s/N)·R·Cᵀ with
A = (s/N)·C·Cᵀ + M + λI — UCE's W_new = (Σ v*cᵀ + λ_p Σ W_ref c_p c_pᵀ + λW_ref)(Σ ccᵀ + λ_p Σ
c_p c_pᵀ + λI)⁻¹ written for the update. Restricted to a free subspace with orthonormal basis Q
(the null-space variant: ΔW = Y·Qᵀ, so ΔW·c = 0 for every c ⊥ Q): Y·(QᵀAQ) = (s/N)·R·Cᵀ·Q.
Solved in float64 with a Cholesky factorisation (``torch.linalg.solve`` when it fails), never an
explicit inverse; the condition number of the system is reported.
"""

from __future__ import annotations

import torch


def solve_update(W_ref: torch.Tensor, C: torch.Tensor, V: torch.Tensor, M: torch.Tensor | None,
                 lam: float, scale: float = 1.0, Q: torch.Tensor | None = None,
                 pull: torch.Tensor | None = None):
    """(ΔW, condition number). C: [d_in, N] erase states, V: [d_out, N] targets v*_e.
    ``pull`` = Σ_i D_i·M_i when part i of the metric holds its states at W_ref + D_i instead of
    W_ref (tr((ΔW − D_i)·M_i·(ΔW − D_i)ᵀ) adds D_i·M_i to the right-hand side)."""
    W = W_ref.double()
    C, V = C.double(), V.double()
    d = W.shape[1]
    n = max(C.shape[1], 1)
    A = (scale / n) * (C @ C.T) + lam * torch.eye(d, dtype=torch.float64)
    if M is not None:
        A = A + M.double()
    rhs = (scale / n) * (V - W @ C) @ C.T  # [d_out, d_in]
    if pull is not None:
        rhs = rhs + pull.double()
    if Q is not None:
        Q = Q.double()
        A, rhs = Q.T @ A @ Q, rhs @ Q
    cond = float(torch.linalg.cond(A)) if A.numel() else 1.0
    Y = _spd_solve(A, rhs.T).T
    dW = Y @ Q.T if Q is not None else Y
    return dW.to(W_ref.dtype), cond


def _spd_solve(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A⁻¹·B for symmetric positive (semi)definite A."""
    if A.numel() == 0:
        return B[:0]
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        return torch.cholesky_solve(B, L)
    return torch.linalg.solve(A, B)


def protected_directions(M: torch.Tensor, rtol: float) -> torch.Tensor:
    """Orthonormal eigenvectors (d × r) of a PSD metric with eigenvalue above ``rtol``·max."""
    evals, evecs = torch.linalg.eigh(M.double())
    return evecs[:, evals > rtol * float(evals.max().clamp_min(1e-300))]


def complement(B: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis Q (d × (d − r)) of the orthogonal complement of span(B) (B: d × m)."""
    U, sv, _ = torch.linalg.svd(B.double(), full_matrices=True)
    r = int((sv > sv.max() * rtol).sum()) if sv.numel() else 0
    return U[:, r:]
