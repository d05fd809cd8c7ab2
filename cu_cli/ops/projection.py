"""Gradient projection orthogonal to protected text embeddings (method-notes §7.3).

Cross-attention K/V weights W (out x d) act on text tokens c (d): K = W c. With C (d x n) holding
protected token embeddings as columns, the projector
    P = I − C (CᵀC + λI)⁻¹ Cᵀ,   λ = max(1e-4, 1e-6·tr(CᵀC)/n)
makes an SGD update G·P leave W·c unchanged to first order for c in span(C). If cond(CᵀC + λI) >
1e10 we fall back to P = I − C·pinv(C) (the reference's ``C @ pinv(C.T)`` is a shape error when
n ≠ d). All in fp32/fp64.
"""

from __future__ import annotations

import torch


def projector(C: torch.Tensor) -> torch.Tensor:
    """P (d x d, fp32) for basis columns C (d x n)."""
    C = C.double()
    d, n = C.shape
    gram = C.T @ C
    lam = max(1e-4, 1e-6 * float(torch.trace(gram)) / max(n, 1))
    reg = gram + lam * torch.eye(n, dtype=C.dtype)
    if torch.linalg.cond(reg) > 1e10:
        P = torch.eye(d, dtype=C.dtype) - C @ torch.linalg.pinv(C)
    else:
        P = torch.eye(d, dtype=C.dtype) - C @ torch.linalg.solve(reg, C.T)
    return P.float()


def exact_projector(C: torch.Tensor) -> torch.Tensor:
    """I − QQᵀ with Q an orthonormal basis of span(C) (rank by SVD, rtol 1e-6)."""
    U, S, _ = torch.linalg.svd(C.double(), full_matrices=False)
    r = int((S > S.max() * 1e-6).sum()) if S.numel() else 0
    Q = U[:, :r]
    return (torch.eye(C.shape[0], dtype=torch.float64) - Q @ Q.T).float()


def deflate(C: torch.Tensor, T: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """C − Q·Qᵀ·C with Q an orthonormal basis of span(T) (d x m; rank by SVD, rtol).

    Removes the target's own directions from a protected basis, so that P·t = t for t ∈ span(T):
    in a compositional vocabulary the target's embedding lies in the span of its neighbours
    ("neon stripes" ≈ "neon dots" + "ember stripes" − "ember dots"), and an undeflated P would
    block the erasure itself. A neighbour keeps protection for its component orthogonal to T.
    """
    if T.numel() == 0:
        return C
    U, S, _ = torch.linalg.svd(T.double(), full_matrices=False)
    Q = U[:, : int((S > S.max() * rtol).sum())]
    Cd = C.double()
    return (Cd - Q @ (Q.T @ Cd)).to(C.dtype)


def project_rows(G: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """G·P along the input (text) dimension of an (out x d) matrix."""
    return G @ P.to(G.dtype)


def leakage(delta: torch.Tensor, C: torch.Tensor) -> float:
    """‖ΔW·C‖_F / (‖ΔW‖_F ‖C‖_F): 0 when the update is invisible to the protected tokens."""
    num = float((delta.double() @ C.double()).norm())
    den = float(delta.double().norm() * C.double().norm())
    return num / den if den > 0 else 0.0
