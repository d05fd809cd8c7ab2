"""Global top-k selection across tensors (SelFT, method-notes §6; sparsification).

``global_topk_masks`` keeps the ⌊k·N⌋ largest scores over **all** tensors jointly (a tensor may get
none), as the reference's ``build_global_topk_mask_dict``; ties are broken by ``torch.topk`` order,
so exactly ⌊k·N⌋ entries are kept.
"""

from __future__ import annotations

import torch


def global_topk_masks(scores: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    names = list(scores)
    flat = torch.cat([scores[n].detach().flatten().float() for n in names])
    k = int(fraction * flat.numel())
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        keep[torch.topk(flat, k, sorted=False).indices] = True
    out, start = {}, 0
    for n in names:
        m = scores[n].numel()
        out[n] = keep[start:start + m].view_as(scores[n])
        start += m
    return out
