"""One optimisation step in the order that is part of the method (method-notes §8):

1 forward + method loss (the objective); 2 + every regularizer's penalty terms, in order (L1/L2-SP,
then the retained-token K/V metric); 3 backward (SelFT's hooks mask gradients inside it);
4–5 ``on_grad`` (projection G ← G·P on attn2 K/V, then the optional SelFT re-mask); 6 global
grad-norm clip; 7 optimizer step, framed by ``before/after_opt_step`` (the exact
``--project-update``). A non-finite loss aborts the request (nothing is written).

The optimizer comes from :data:`OPTIMIZERS` (AdamW, β (0.9, 0.999), ε 1e-8, as every reference
script uses).
"""

from __future__ import annotations

import math

from cu_cli._util.errors import CuError
from cu_cli.ckpt.keys import is_xattn_kv


def kv_keys(trainable: dict) -> list[str]:
    """The trainable 2-D cross-attention K/V weights (what projection and --preserve act on)."""
    return [k for k, p in trainable.items() if is_xattn_kv(k) and p.dim() == 2]


def _adamw(params, cfg):
    import torch

    return torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=cfg.weight_decay or 0.0)


OPTIMIZERS = {"adamw": _adamw}


class Engine:
    def __init__(self, ctx, regularizers: list, optimizer: str = "adamw"):
        self.ctx, self.cfg = ctx, ctx.cfg
        self.regs = list(regularizers)
        self.opt = OPTIMIZERS[optimizer](list(ctx.trainable.values()), ctx.cfg)
        self.step_no = 0

    def update(self, loss, penalties: bool = True) -> float:
        """Steps 2–7 for an already computed method loss; returns the total loss value."""
        import torch

        tr = self.ctx.trainable
        total = loss
        if penalties:
            for reg in self.regs:
                for term in reg.terms(tr):
                    total = total + term
        value = float(total.detach())
        if not math.isfinite(value):
            raise CuError(f"loss became {value} at step {self.step_no + 1}; aborted, nothing written",
                          hint="lower --lr or the regularizer weights")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        for reg in self.regs:
            reg.on_grad(tr)
        if self.cfg.clip:
            torch.nn.utils.clip_grad_norm_(list(tr.values()), self.cfg.clip)
        for reg in self.regs:
            reg.before_opt_step(tr)
        self.opt.step()
        for reg in self.regs:
            reg.after_opt_step(tr)
        self.step_no += 1
        return value
