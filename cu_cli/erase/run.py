"""One unlearning request: parent state in, next state out (``cu erase``'s Python API).

Order: resolve base (from the parent's header when chaining; fingerprint-checked), anchor images
from the **root base** (before the parent is applied), apply the parent strictly, select the
trainable group, SelFT scoring on θₙ₋₁, then the optimisation loop (erase/engine.py) and an atomic
write of the union of the parent's keys and the trained ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from cu_cli._util.errors import CuError, UsageError
from cu_cli._util.fs import check_output_path
from cu_cli._util.log import get_logger
from cu_cli._util.seed import seed_everything
from cu_cli.ckpt.checkpoint import BaseIdentity, check_base, open_checkpoint, write_checkpoint
from cu_cli.ckpt.format import load_tensors
from cu_cli.ckpt.lineage import make_step
from cu_cli.erase.params import EraseConfig, resolve

log = get_logger(__name__)


@dataclass
class EraseRequest:
    concepts: list[str]
    out: str
    cfg: EraseConfig = field(default_factory=EraseConfig)
    base: str | None = None
    base_config: str | None = None
    parent: str | None = None
    basis: str | None = None
    anchor_prompts: list[str] | None = None
    preserve_prompts: list[str] | None = None  # --preserve FILE (cfg.preserve = "file")
    seed: int = 42
    device: str = "cpu"
    force: bool = False
    allow_base_mismatch: bool = False
    argv: list[str] | None = None
    progress: object = None  # callable(step, total, loss) or None


@dataclass
class EraseResult:
    path: str
    payload_sha256: str
    wall_seconds: float
    final_loss: float
    steps: int
    trained_keys: int
    params: dict


def run_erase(req: EraseRequest) -> EraseResult:
    import torch

    from cu_cli.erase import prompts as P
    from cu_cli.models.apply import apply_state, read_state
    from cu_cli.models.base import base_for_states
    from cu_cli.models.groups import PARAM_GROUPS, group_names

    t0 = time.time()
    if not req.concepts or any(not c.strip() for c in req.concepts):
        raise UsageError("give at least one non-empty --concept")
    check_output_path(req.out, req.force, [req.parent, req.basis])
    parent = open_checkpoint(req.parent) if req.parent else None
    base = base_for_states([req.parent] if req.parent else [], req.base, req.base_config)
    ident = BaseIdentity(base.id, base.arch, base.fingerprint)
    if parent is not None:
        for w in check_base(parent, ident, req.allow_base_mismatch):
            log.warning(w)
    if base.family == "sdxl":
        raise CuError("erase does not support SDXL bases yet (two text encoders, added time ids)")
    world = None
    if base.world == "minicanvas":
        from cu_cli.world.minicanvas import load_world

        world = load_world()
    cfg = resolve(req.cfg, base.world)
    if cfg.params not in PARAM_GROUPS:
        raise UsageError(f"--params {cfg.params!r}: choose one of {', '.join(PARAM_GROUPS)}")
    seed_everything(req.seed)
    torch.set_grad_enabled(True)

    pairs = [P.build_pairs(c, cfg.kind, cfg.anchor, world, req.seed, cfg.match, req.anchor_prompts,
                           need_anchor=cfg.method != "esd") for c in req.concepts]
    if cfg.kind is None:
        cfg = replace(cfg, kind=pairs[0].kind)
    if not req.basis and (cfg.project_update or cfg.selft_remask):
        raise UsageError("--project-update / selft_remask need --basis (they would do nothing)")
    if cfg.selft_remask and not cfg.selft_topk:
        raise UsageError("selft_remask needs --selft-topk")
    projector, basis_info, C, bh = None, None, None, None
    if req.basis:
        from cu_cli.ckpt.basis import read_basis

        C, bh = read_basis(req.basis, ident, req.allow_base_mismatch)
        for w in _basis_warnings(bh, req, ident, parent):
            log.warning(w)
        basis_info = {"path": req.basis, "payload_sha256": bh.payload_sha256, "shape": list(C.shape),
                      "free_target": cfg.free_target}

    pipe = base.load_pipeline(req.device)
    from cu_cli.erase.context import EraseContext, detach_bos_hooks
    from cu_cli.erase.objectives import ERASE_OBJECTIVES

    objective = ERASE_OBJECTIVES[cfg.method]["cls"]()
    gen = torch.Generator().manual_seed(req.seed)
    ctx = EraseContext(pipe=pipe, cfg=cfg, pairs=pairs, trainable={}, parent_values={}, gen=gen,
                       seed=req.seed, world=world)
    if objective.needs_anchor_images:  # from the root base, before the parent is applied
        _anchor_data(ctx, base.fingerprint, req.seed, forget=getattr(objective,
                                                                    "needs_forget_images", False))

    parent_tensors = load_tensors(req.parent) if parent is not None else {}
    if parent_tensors:
        apply_state(pipe, parent_tensors, source=req.parent)
    names = group_names(pipe.unet, cfg.params)
    unet_params = dict(pipe.unet.named_parameters())
    pipe.unet.requires_grad_(False)
    for k in names:
        unet_params[k[5:]].requires_grad_(True)
    ctx.trainable = {k: unet_params[k[5:]] for k in names}
    ctx.parent_values = {k: p.detach().clone() for k, p in ctx.trainable.items()}
    sp_ref = ctx.parent_values if cfg.reg_ref == "parent" else base.get_tensors(names)
    sp_ref = {k: v.float().to(req.device) for k, v in sp_ref.items()}
    if C is not None:
        from cu_cli.erase.freeing import target_directions
        from cu_cli.ops.projection import deflate
        from cu_cli.ops.projection import projector as make_projector

        T = target_directions(cfg.free_target, pipe, pairs, bh)
        basis_info["freed_directions"] = int(T.shape[1]) if T.numel() else 0
        projector = make_projector(deflate(C, T))

    objective.prepare(ctx)
    hooks = detach_bos_hooks(pipe.unet) if (cfg.method == "conabl" and cfg.detach_bos) else []
    masks, mask_hooks, selft_seconds = None, [], 0.0
    if cfg.selft_topk:
        from cu_cli.erase.selft import install_masks

        ts = time.time()
        masks, mask_hooks = install_masks(ctx, cfg.selft_topk)
        selft_seconds = time.time() - ts
    from cu_cli.erase.engine import Engine

    preserve_M, kept, kept_sha = _preserve_moment(ctx, req)
    context_M, context_tokens = _context_moment(ctx)
    metric = None
    if preserve_M is not None:
        metric = cfg.preserve_weight * preserve_M
    if context_M is not None:
        metric = cfg.context_weight * context_M + (0 if metric is None else metric)
    engine = Engine(ctx, sp_ref, projector, masks, metric)
    loss_val = float("nan")
    t_loop = time.time()
    try:
        pipe.unet.train()
        for step in range(cfg.steps):
            if hasattr(objective, "before_step"):
                objective.before_step(ctx, engine, step)
            loss_val = engine.update(objective.loss(ctx, step))
            if req.progress:
                req.progress(step + 1, cfg.steps, loss_val)
    finally:
        pipe.unet.eval()
        for h in hooks + mask_hooks:
            h.remove()
    loop_seconds = time.time() - t_loop

    trained = read_state(pipe, names)
    if cfg.save_dtype != "float32":
        dt = getattr(torch, cfg.save_dtype, None)
        if not isinstance(dt, torch.dtype):
            raise UsageError(f"--save-dtype {cfg.save_dtype!r} is not a torch dtype")
        log.warning("rounding trained weights through %s (small updates may vanish)", cfg.save_dtype)
        trained = {k: v.to(dt).float() for k, v in trained.items()}
    tensors = {**{k: v.float() for k, v in parent_tensors.items()}, **trained}
    extra = {"objective_url": ERASE_OBJECTIVES[cfg.method]["url"],
             "prompt_pairs": sum(len(p.target_prompts) for p in pairs),
             "anchors": [p.anchor for p in pairs], "kinds": [p.kind for p in pairs],
             "trainable_params": sum(p.numel() for p in ctx.trainable.values()),
             "loop_seconds": round(loop_seconds, 3), "selft_seconds": round(selft_seconds, 3),
             "final_loss": loss_val, "preserve_prompts": kept,
             "preserve_prompts_sha256": kept_sha, "context_tokens": context_tokens}
    if masks is not None:
        extra["selft_kept"] = int(sum(int(m.sum()) for m in masks.values()))
    if C is not None:
        from cu_cli.ops.projection import leakage

        leak = [leakage(trained[k] - ctx.parent_values[k].cpu(), C) for k in engine.kv]
        extra["basis"] = basis_info
        extra["projection_leakage"] = {"mean": sum(leak) / max(len(leak), 1),
                                       "max": max(leak, default=0.0)}
    wall = time.time() - t0
    step = make_step("erase", concepts=req.concepts, method=cfg.method,
                     params={**cfg.to_dict(), **extra}, parents=[parent.payload_sha256] if parent else [],
                     seed=req.seed, argv=req.argv, device=req.device, wall_seconds=wall)
    payload = write_checkpoint(req.out, tensors, ident, step, parents=[parent] if parent else [])
    return EraseResult(path=req.out, payload_sha256=payload, wall_seconds=wall, final_loss=loss_val,
                       steps=cfg.steps, trained_keys=len(names), params=extra)


def _preserve_moment(ctx, req: EraseRequest):
    """(M, number of preserved prompts, their sha256) of the retained-token penalty, or
    (None, 0, None) when it is off."""
    import hashlib

    from cu_cli.erase.engine import kv_keys
    from cu_cli.erase.preserve import preserve_prompts
    from cu_cli.ops.preserve import second_moment

    cfg = ctx.cfg
    if cfg.preserve == "none" or not cfg.preserve_weight:
        return None, 0, None
    prompts = preserve_prompts(cfg.preserve, req.concepts, ctx.world, req.preserve_prompts)
    if not prompts:
        log.warning("--preserve %s: no prompts left after removing targets and held-out "
                    "retain concepts; the penalty is off", cfg.preserve)
        return None, 0, None
    if not kv_keys(ctx.trainable):
        log.warning("--preserve has no effect with --params %s (no attn2.to_k/to_v weight trains)",
                    cfg.params)
        return None, 0, None
    import torch

    with torch.no_grad():
        states = torch.cat([ctx.pipe.encode_text(prompts[i:i + 256]).float()
                            for i in range(0, len(prompts), 256)])
    sha = "sha256:" + hashlib.sha256("\n".join(prompts).encode()).hexdigest()
    return second_moment(states), len(prompts), sha


def _context_moment(ctx):
    """(M_c, number of context token states) of the request-context penalty, or (None, 0)."""
    from cu_cli.erase.context_tokens import context_states
    from cu_cli.erase.engine import kv_keys
    from cu_cli.ops.preserve import second_moment

    if not ctx.cfg.context_weight or not kv_keys(ctx.trainable):
        return None, 0
    H = context_states(ctx.pipe, ctx.pairs, ctx.embed)
    if H.numel() == 0:
        log.warning("--context-weight: no target prompt contains its concept's tokens; "
                    "the context penalty is off")
        return None, 0
    return second_moment(H), int(H.shape[0])


def _basis_warnings(bh, req, ident, parent_header=None) -> list[str]:
    """A basis built for another concept, chain or base is allowed, but never silently."""
    out = []
    target = bh.metadata.get("cu.basis.target")
    if target and target not in req.concepts:
        out.append(f"basis {req.basis} was built for {target!r}, not {', '.join(req.concepts)}")
    parent = (bh.json("cu.basis.params", {}) or {}).get("parent")
    if parent_header is not None and parent is not None:
        if parent != parent_header.payload_sha256:
            out.append(f"basis {req.basis} was built from another parent: earlier erasures of "
                       "this chain may be unprotected")
    if bh.metadata.get("cu.base.fingerprint") != ident.fingerprint:
        out.append(f"basis {req.basis} was made for another base (allowed by "
                   "--allow-base-mismatch)")
    return out


def _anchor_data(ctx, fingerprint: str, seed: int, forget: bool) -> None:
    """Anchor (and forget) images from the root base; index = (pair, prompt) per image."""
    import numpy as np

    from cu_cli.erase.anchors import anchor_images

    cfg = ctx.cfg
    per_pair = max(1, cfg.anchor_images // len(ctx.pairs))
    imgs, fimgs, index = [], [], []
    for p_i, pair in enumerate(ctx.pairs):
        im, idx = anchor_images(ctx.pipe, fingerprint, pair.anchor_prompts, per_pair,
                                cfg.anchor_steps, cfg.anchor_guidance, seed)
        imgs.append(im)
        index += [(p_i, int(j)) for j in idx]
        if forget:
            fi, _ = anchor_images(ctx.pipe, fingerprint, pair.target_prompts, per_pair,
                                  cfg.anchor_steps, cfg.anchor_guidance, seed)
            fimgs.append(fi)
    ctx.anchor_images = np.concatenate(imgs)
    ctx.anchor_index = index
    ctx.forget_images = np.concatenate(fimgs) if forget else None
