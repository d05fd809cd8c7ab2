"""Holistic style code: an auxiliary loss that makes each composed style name its own concept.

MiniCanvas styles are "<palette> <texture>" (issue #3: names composed of shared words). Trained
jointly with the UNet, the text encoder (v1) learned an almost exactly *additive* code for them:
96 % of the style-dependent variance of the caption states was explained by palette + texture
terms (docs/minicanvas.md). CLIP-style contrastive pretraining (Radford et al., ICML 2021) of the
same encoder against a small image tower, tried as an alternative, stayed 97 % additive too --
additive codes already separate 256 composed captions. With an additive code, a linear edit of the
cross-attention K/V (every method of arXiv 2511.07970) cannot remove "neon stripes" without moving
"neon dots" and "forest stripes" by about half as much, a limit of the toy, not of the methods:
CLIP also knows "Claude Monet" and "Claude Lorrain" as distinct entities although they share a
word.

The loss: at the EOS and padding positions (the holistic part of the sequence; the word positions
stay as they are, so the shared words still make neighbours similar) a normalised classifier with
*fixed* orthonormal class vectors ``q_c`` in the state space and a fixed scale (NormFace, Wang et
al., ACM MM 2017) predicts the style: ``CE(s * cos(h, q_c))``. It can only fall if a sizeable share
of each state points along its own style's ``q_c``, i.e. by making the code non-additive (16
orthonormal targets have rank 16 > 4 + 4 - 1). A learnable projection before the cosine does not
work: it reached a loss of 0.002 by amplifying a small non-additive residual (the state itself
went from 3 % to only 5.6 % non-additive). Shipped v3 (weight 0.1; 2000 steps without a margin,
then 1500 with margin 0.5): 56 % non-additive at EOS/padding (docs/minicanvas.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class StyleCodeHead(torch.nn.Module):
    """Fixed orthonormal class vectors ``q_c`` (seeded); states (B, L, d) -> cosine logits."""

    def __init__(self, dim: int, n_styles: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, n_styles, generator=g))
        self.register_buffer("q", q.T.contiguous())  # (n_styles, d), orthonormal rows
        self.scale = scale

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(h, dim=-1) @ self.q.T


def style_code_loss(head: StyleCodeHead, states: torch.Tensor, ids: torch.Tensor,
                    style: torch.Tensor, eos_id: int, keep: torch.Tensor,
                    margin: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the EOS-and-after positions of the rows where ``keep`` is true.

    ``states`` (B, L, d) text-encoder output, ``ids`` (B, L) token ids, ``style`` (B,) style index.
    ``margin`` m: CosFace's additive margin (Wang et al., CVPR 2018), the true class's logit is
    s·(cos − m). The best additive code's own-minus-neighbour cosine gap is 0.38 (tests), so with
    m > 0.38 the loss keeps pushing until the code is non-additive.
    """
    if not bool(keep.any()):
        return states.sum() * 0.0
    h, ids, style = states[keep], ids[keep], style[keep]
    after_eos = (ids == eos_id).cumsum(dim=1) > 0  # EOS and the padding after it (pad id = EOS)
    logits = head(h)  # (b, L, n)
    target = style[:, None].expand(-1, ids.shape[1])
    if margin:
        logits = logits - head.scale * margin * F.one_hot(target, logits.shape[-1])
    ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
    mask = after_eos.flatten().float()
    return (ce * mask).sum() / mask.sum()


@torch.no_grad()
def nonadditive_fraction(te, tok, world, obj: str) -> dict:
    """Share of the style-dependent variance of ``obj``'s caption states that a palette + texture
    (two-way additive) model does not explain: over all positions and over EOS-and-after."""
    pal = sorted({s.split()[0] for s in world.styles})
    tex = sorted({s.split()[1] for s in world.styles})
    caps = [world.caption(obj, f"{p} {t}") for p in pal for t in tex]
    ids = tok(caps, padding="max_length", max_length=tok.model_max_length,
              return_tensors="pt").input_ids
    h = te(ids)[0].reshape(len(pal), len(tex), ids.shape[1], -1)
    mu = h.mean((0, 1), keepdim=True)
    add = mu + (h.mean(1, keepdim=True) - mu) + (h.mean(0, keepdim=True) - mu)
    res, tot = (h - add).pow(2).sum((0, 1, 3)), (h - mu).pow(2).sum((0, 1, 3))
    eos = tok.eos_token_id
    tail = ((ids == eos).cumsum(1) > 0).all(0)  # positions that are EOS/padding in every caption
    return {"all_positions": float(res.sum() / tot.sum()),
            "eos_and_padding": float(res[tail].sum() / tot[tail].sum())}
