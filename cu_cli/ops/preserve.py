"""Retained-token penalty on cross-attention K/V (the preservation term of UCE: Gandikota et al.,
"Unified Concept Editing in Diffusion Models", WACV 2024, arXiv 2308.14761).

Cross-attention keys and values are linear in the text tokens: K = W·h. For the token states H
(d × N, every position of every preserved prompt, padding included, since the UNet attends to all of
them) the penalty is the mean squared change of their keys/values,

    L_pres = Σ_k ‖(W_k − W_k^ref)·H‖²_F / (N · Σ_k out_k) = Σ_k tr(ΔW_k M ΔW_kᵀ) / Σ_k out_k,
    M = H·Hᵀ / N  (d × d, computed once),

so its cost per step is a (out × d)·(d × d) product per layer, with no extra UNet call. If only
attn2 K/V train (``kv-xattn``) and ΔW·H = 0, a preserved prompt's output is exactly unchanged; the
penalty is the soft, weighted version of that constraint (gradient projection, §7.3, is the hard
one on concept tokens only). It is an L2-SP penalty whose metric is M instead of I.
"""

from __future__ import annotations

import torch


def second_moment(states: torch.Tensor) -> torch.Tensor:
    """M = H·Hᵀ/N for token states [B, L, d] (all positions) → [d, d] fp32."""
    h = states.reshape(-1, states.shape[-1]).double()
    return (h.T @ h / max(h.shape[0], 1)).float()


def preserve_penalty(params: dict[str, torch.Tensor], ref: dict[str, torch.Tensor],
                     keys: list[str], M: torch.Tensor) -> torch.Tensor:
    """L_pres over ``keys`` (2-D weights whose input dimension is the text width)."""
    rows = sum(params[k].shape[0] for k in keys)
    total = sum(((params[k] - ref[k]) @ M * (params[k] - ref[k])).sum() for k in keys)
    return total / max(rows, 1)
