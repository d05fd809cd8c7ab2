"""ESD — Erased Stable Diffusion (Gandikota et al., ICCV 2023, arXiv 2303.07345).

Teacher ε* = frozen parent θₙ₋₁. Per step: k ~ U{0..K−1}; from fresh noise the teacher runs k DDIM
steps (K-step schedule) with CFG ``start_guidance`` on the concept prompt → x_k, t = timesteps[k];
e_c = ε*(x_k,t,c), e_∅ = ε*(x_k,t,"") (the encoded empty string); loss =
MSE(ε_θ(x_k,t,c), sg[e_c − η·(e_c − e_∅)]). x_k always comes from the teacher (upstream ESD; the
reference's SD1 revision used the student), and ``scale_model_input`` is always called.
On a world base the concept prompts are the world's captions naming the concept; on real bases
the concept text itself (upstream ESD).
"""

from __future__ import annotations

from dataclasses import dataclass

from cu_cli.erase.objectives.base import Needs, Objective
from cu_cli.erase.optfield import opt


@dataclass(frozen=True)
class Options:
    negative_guidance: float | None = opt(
        None, "ESD: negative guidance η of the teacher's target.", float, ge=0)


class ESD(Objective):
    name = "esd"
    url = "https://arxiv.org/abs/2303.07345"
    needs = Needs(frozen_parent=True, anchor_concept=False)
    Options = Options
    # The reference's SD1.x revision (method-notes §3).
    defaults = dict(steps=1000, lr=1e-5, batch=1, clip=None, weight_decay=0.0,
                    negative_guidance=1.0, anchor_images=0, anchor_steps=50, anchor_guidance=6.0,
                    mask_border=1, hflip=True)

    @classmethod
    def reference_defaults(cls, cfg) -> dict:
        out = dict(cls.defaults)
        if cfg.params == "esd-u" and cfg.kind == "object":
            out["lr"] = 5e-6  # the reference's ESD object rate for esd-u (method-notes §3)
        return out

    @classmethod
    def step_forwards(cls, cfg) -> float:
        # teacher: on average K/2 CFG steps (2 forwards each), then 2 parent + 1 trained pass
        return cfg.batch * (cfg.ddim_steps + 5.0)

    def prepare(self, ctx) -> None:
        self.prompts = [p for pair in ctx.pairs for p in pair.concept_prompts]
        ctx.cond(self.prompts + [""])
        self.sch = ctx.pipe.ddim(ctx.cfg.ddim_steps)

    def _teacher_xk(self, ctx, k: int, c, u):
        import torch

        from cu_cli.models.families import Cond

        sch = self.sch
        with torch.no_grad():
            x = ctx.randn((len(c),) + ctx.pipe.latent_shape).to(c.device) * sch.init_noise_sigma
            ctx2 = Cond.cat([u, c])
            for t in sch.timesteps[:k]:
                inp = sch.scale_model_input(torch.cat([x, x]), t)
                e_u, e_c = ctx.eps_parent(inp, t, ctx2).chunk(2)
                x = sch.step(e_u + ctx.cfg.start_guidance * (e_c - e_u), t, x).prev_sample
        return x, sch.timesteps[k]

    def loss(self, ctx, step: int):
        import torch
        import torch.nn.functional as F

        b = ctx.cfg.batch
        idx = ctx.randint(len(self.prompts), b).tolist()
        c = ctx.cond([self.prompts[i] for i in idx])
        u = ctx.cond([""] * b)
        k = int(ctx.randint(len(self.sch.timesteps), 1))
        xk, t = self._teacher_xk(ctx, k, c, u)
        xin = self.sch.scale_model_input(xk, t)
        tt = torch.full((b,), int(t), dtype=torch.long, device=xin.device)
        e_c = ctx.eps_parent(xin, tt, c)
        e_0 = ctx.eps_parent(xin, tt, u)
        target = e_c - ctx.cfg.negative_guidance * (e_c - e_0)
        return F.mse_loss(ctx.eps(xin, tt, c), target)
