"""EraseDiff — bi-level unlearning, BOME-style (Wu et al., arXiv 2401.05779).

L_u = MSE(ε_θ(z_t,t,c_forget), sg[ε_θ(z_t,t,c_anchor)]) on noised forget images (base samples of
the target prompts); L_r = ‖ε_θ(z_t,t,c_r) − target‖² on remain images (base samples of the
anchor prompts). Per cycle: copy θ; K inner rounds of ``steps/cycles`` steps on L_u, recording the
last round's mean ℓ̄; restore θ (Adam moments are kept, as in the reference); then the same number
of outer steps on λ_bome·(L_u − ℓ̄) + w_r·L_r. ℓ̄ is a constant, so the inner phase changes no
gradient — only optimizer state; ``erasediff_inner=False`` skips it (method-notes §4).
"""

from __future__ import annotations

from dataclasses import dataclass

from cu_cli.erase.objectives.base import Needs, Objective
from cu_cli.erase.optfield import opt


@dataclass(frozen=True)
class Options:
    erasediff_cycles: int = opt(5, "EraseDiff: outer cycles (steps = cycles · steps per cycle).",
                                int, flag=False, ge=1)
    erasediff_inner: bool = opt(True, "EraseDiff: run the (gradient-inert) inner phase.", bool,
                                flag=False)
    erasediff_k: int = opt(2, "EraseDiff: inner rounds K.", int, flag=False, ge=1)
    erasediff_lambda: float = opt(0.1, "EraseDiff: λ_bome.", float, flag=False)
    erasediff_remain_weight: float = opt(1.0, "EraseDiff: remain-loss weight w_r (reference 0).",
                                         float, flag=False, ge=0)


class EraseDiff(Objective):
    name = "erasediff"
    url = "https://arxiv.org/abs/2401.05779"
    needs = Needs(anchor_images=True, forget_images=True)
    Options = Options
    # The reference's earlier SD1.x revision (method-notes §4).
    defaults = dict(steps=500, lr=1e-5, batch=4, clip=None, weight_decay=0.0, anchor_images=200,
                    anchor_steps=100, anchor_guidance=6.0, mask_border=1, hflip=True)

    def prepare(self, ctx) -> None:
        from cu_cli.erase.objectives.data import LatentBatches

        self.remain = LatentBatches(ctx.pipe, ctx.anchor_images)
        self.forget = LatentBatches(ctx.pipe, ctx.forget_images)
        self.remain_prompts = [ctx.pairs[p].anchor_prompts[j] for p, j in ctx.anchor_index]
        self.forget_prompts = [ctx.pairs[p].target_prompts[j] for p, j in ctx.anchor_index]
        ctx.cond(self.remain_prompts + self.forget_prompts)
        self.per_cycle = max(1, ctx.cfg.steps // ctx.cfg.erasediff_cycles)
        self.ell_bar = 0.0

    def unlearn_loss(self, ctx):
        import torch
        import torch.nn.functional as F

        idx = ctx.randint(len(self.forget), ctx.cfg.batch)
        zt, t, _, _ = self.forget.noised(ctx, idx)
        c_f = ctx.cond([self.forget_prompts[i] for i in idx.tolist()])
        c_a = ctx.cond([self.remain_prompts[i] for i in idx.tolist()])
        with torch.no_grad():
            e_a = ctx.eps(zt, t, c_a)
        return F.mse_loss(ctx.eps(zt, t, c_f), e_a)

    def remain_loss(self, ctx):
        import torch.nn.functional as F

        idx = ctx.randint(len(self.remain), ctx.cfg.batch)
        zt, t, noise, z0 = self.remain.noised(ctx, idx)
        c_r = ctx.cond([self.remain_prompts[i] for i in idx.tolist()])
        return F.mse_loss(ctx.eps(zt, t, c_r), self.remain.target(z0, noise, t))

    def before_step(self, ctx, engine, step: int) -> None:
        """At each cycle start: the inner phase (if enabled), then restore θ."""
        if step % self.per_cycle or not ctx.cfg.erasediff_inner:
            return
        import torch

        saved = {k: p.detach().clone() for k, p in ctx.trainable.items()}
        with ctx.phase(f"erasediff-inner-{step}"):  # own stream: --no-inner leaves the rest alone
            for _ in range(ctx.cfg.erasediff_k):
                vals = [engine.update(self.unlearn_loss(ctx), penalties=False)
                        for _ in range(self.per_cycle)]
        self.ell_bar = float(sum(vals) / len(vals))
        with torch.no_grad():
            for k, p in ctx.trainable.items():
                p.copy_(saved[k])

    def loss(self, ctx, step: int):
        lu = self.unlearn_loss(ctx)
        total = ctx.cfg.erasediff_lambda * (lu - self.ell_bar)
        if ctx.cfg.erasediff_remain_weight:
            total = total + ctx.cfg.erasediff_remain_weight * self.remain_loss(ctx)
        return total
