"""SelFT — selective fine-tuning: update only the globally most important weights (method-notes §6).

Score s = |θ ⊙ g| with g = Σ over timesteps of ∇_θ Σ(ε_θ(z,c_tgt) − sg ε_θ(z,c_anc))² (the ConAbl
objective as a sum), z_t from DDIM sampling (CFG ``start_guidance``) on the target with the parent
model; g is averaged over (target, anchor) pairs. Keep the global top ⌊k·N⌋ entries over all
trainable tensors jointly; apply as gradient hooks (``grad·mask``), so masking happens inside
backward, before projection and clipping. Recomputed on θₙ₋₁ every request; never saved.

Scoring modes (recorded in the lineage): ``reference`` — for each scored t_idx a fresh noise draw
and t_idx sampling steps (Σk = 1,225 CFG steps for 50); ``trajectory`` (default) — one trajectory
per pair, gradient taken at each scored step along it (49 sampling steps, one shared noise draw).
"""

from __future__ import annotations

import numpy as np
import torch

from cu_cli.ops.topk import global_topk_masks


def _objective(ctx, z, t, c_tgt, c_anc) -> torch.Tensor:
    with torch.no_grad():
        e_anc = ctx.eps(z, t, c_anc)
    return (ctx.eps(z, t, c_tgt) - e_anc).pow(2).sum()


@torch.no_grad()
def _cfg_step(ctx, sch, x, t, c, u):
    from cu_cli.models.families import Cond

    inp = sch.scale_model_input(torch.cat([x, x]), t)
    e_u, e_c = ctx.eps(inp, t, Cond.cat([u, c])).chunk(2)
    return sch.step(e_u + ctx.cfg.start_guidance * (e_c - e_u), t, x).prev_sample


def score(ctx) -> dict[str, torch.Tensor]:
    """|θ ⊙ g| per trainable tensor (canonical keys)."""
    cfg = ctx.cfg
    sch = ctx.pipe.ddim(cfg.ddim_steps)
    n_t = len(sch.timesteps)
    scored = sorted(set(np.linspace(0, n_t - 1, min(cfg.selft_timesteps, n_t)).round().astype(int)))
    pairs = [(pp.target_prompts[j], pp.anchor_prompts[j]) for pp in ctx.pairs
             for j in range(min(cfg.selft_pairs, len(pp.target_prompts)))]  # per concept
    u = ctx.cond([""])
    for p in ctx.trainable.values():
        p.grad = None
    for n_done, (tgt, anc) in enumerate(pairs):
        ctx.progress("SelFT scoring", n_done, len(pairs))
        c_t, c_a = ctx.cond([tgt]), ctx.cond([anc])
        if cfg.selft_scoring == "trajectory":
            x = ctx.randn((1,) + ctx.pipe.latent_shape) * sch.init_noise_sigma
            for i, t in enumerate(sch.timesteps):
                if i in scored:
                    _objective(ctx, sch.scale_model_input(x, t), t, c_t, c_a).backward()
                if i < scored[-1]:
                    x = _cfg_step(ctx, sch, x, t, c_t, u)
                else:
                    break
        else:
            for k in scored:
                x = ctx.randn((1,) + ctx.pipe.latent_shape) * sch.init_noise_sigma
                for t in sch.timesteps[:k]:
                    x = _cfg_step(ctx, sch, x, t, c_t, u)
                t = sch.timesteps[k]
                _objective(ctx, sch.scale_model_input(x, t), t, c_t, c_a).backward()
    scores = {}
    for k, p in ctx.trainable.items():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        scores[k] = (p.detach() * g / max(len(pairs), 1)).abs().cpu()
        p.grad = None
    return scores


def install_masks(ctx, fraction: float) -> tuple[dict, list]:
    """Compute masks and register gradient hooks; returns (masks, hook handles)."""
    with ctx.phase("selft"):  # its own noise stream: turning SelFT on leaves training draws alone
        scores = score(ctx)
    masks = {k: m.to(ctx.pipe.device) for k, m in global_topk_masks(scores, fraction).items()}
    handles = [p.register_hook(lambda g, m=masks[k]: g * m.to(g.dtype))
               for k, p in ctx.trainable.items()]
    return masks, handles
