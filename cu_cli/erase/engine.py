"""One optimisation step in the order that is part of the method (method-notes §8):

1 forward + method loss; 2 + λ₁·L1SP + λ₂·L2SP (θ^ref captured before the first step)
+ L_pres (retained-token penalties toward the parent, ops/preserve.py — the world/file prompts
with λ_p and the request's context tokens with λ_c, erase/context_tokens.py — folded into one
metric M = λ_p·M_p + λ_c·M_c; cu extensions);
3 backward (SelFT hooks mask gradients); 4 projection G ← G·P on attn2 K/V; 5 optional SelFT
re-mask; 6 global grad-norm clip; 7 optimizer step (then, with ``project_update``, the exact
W ← W_prev + (W − W_prev)·P). A non-finite loss aborts the request (nothing is written).
"""

from __future__ import annotations

import math
import re

import torch

from cu_cli._util.errors import CuError
from cu_cli.ops.penalties import sp_penalties
from cu_cli.ops.preserve import preserve_penalty
from cu_cli.ops.projection import project_rows

_KV = re.compile(r"\.attn2\.to_[kv]\.weight$")


def kv_keys(trainable: dict) -> list[str]:
    """The trainable 2-D cross-attention K/V weights (what projection and --preserve act on)."""
    return [k for k, p in trainable.items() if _KV.search(k) and p.dim() == 2]


class Engine:
    def __init__(self, ctx, sp_ref: dict, projector: torch.Tensor | None = None,
                 masks: dict | None = None, preserve_M: torch.Tensor | None = None):
        """``preserve_M``: the weighted metric λ_p·M_p + λ_c·M_c (None = no penalty)."""
        cfg = ctx.cfg
        self.ctx, self.cfg = ctx, cfg
        self.sp_ref = sp_ref
        self.P = None if projector is None else projector.to(next(iter(ctx.trainable.values())).device)
        self.masks = masks
        self.kv = kv_keys(ctx.trainable)
        if self.P is not None and not self.kv:
            from cu_cli._util.errors import UsageError

            raise UsageError(f"--basis has no effect with --params {cfg.params}: it projects "
                             "attn2.to_k/to_v weight gradients, and none are trainable")
        if self.P is not None:
            bad = [k for k in self.kv if ctx.trainable[k].shape[1] != self.P.shape[0]]
            if bad:
                raise CuError(f"basis dimension {self.P.shape[0]} does not match {bad[0]} "
                              f"(input dim {ctx.trainable[bad[0]].shape[1]})")
        self.M = None if preserve_M is None else preserve_M.to(ctx.trainable[self.kv[0]].device)
        params = list(ctx.trainable.values())
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                                     weight_decay=cfg.weight_decay or 0.0)
        self.step_no = 0

    def update(self, loss: torch.Tensor, penalties: bool = True) -> float:
        """Steps 2–7 for an already computed method loss; returns the total loss value."""
        cfg, tr = self.cfg, self.ctx.trainable
        total = loss
        if penalties and (cfg.l1 or cfg.l2):
            l1, l2 = sp_penalties(tr, self.sp_ref)
            total = total + cfg.l1 * l1 + cfg.l2 * l2
        if penalties and self.M is not None:
            total = total + preserve_penalty(tr, self.ctx.parent_values, self.kv, self.M)
        value = float(total.detach())
        if not math.isfinite(value):
            raise CuError(f"loss became {value} at step {self.step_no + 1}; aborted, nothing written",
                          hint="lower --lr or the regularizer weights")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if self.P is not None:
            for k in self.kv:
                g = tr[k].grad
                if g is not None:
                    tr[k].grad = project_rows(g, self.P)
            if cfg.selft_remask and self.masks is not None:
                for k in self.kv:
                    if tr[k].grad is not None:
                        tr[k].grad = tr[k].grad * self.masks[k]
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(list(tr.values()), cfg.clip)
        prev = {k: tr[k].detach().clone() for k in self.kv} if (cfg.project_update and
                                                                self.P is not None) else None
        self.opt.step()
        if prev is not None:
            with torch.no_grad():
                for k in self.kv:
                    tr[k].copy_(prev[k] + project_rows(tr[k] - prev[k], self.P))
        self.step_no += 1
        return value
