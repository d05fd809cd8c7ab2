"""One unlearning request: plan → prepare → solve → write (``cu erase``'s Python API).

- :func:`~cu_cli.erase.plan.plan_erase` resolves the request without loading a model;
- :func:`prepare` loads the base, generates anchor images with the **root base** (before the
  parent is applied), applies the parent strictly, selects the trainable group, and prepares the
  objective, then each active regularizer in order;
- :func:`solve` runs the objective's loop through the engine (erase/engine.py);
- :func:`write` stores the union of the parent's keys and the trained ones atomically, with the
  lineage step ``{config, inputs, measured, key}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cu_cli._util.errors import UsageError
from cu_cli._util.log import get_logger
from cu_cli._util.seed import seed_everything
from cu_cli.ckpt.checkpoint import write_checkpoint
from cu_cli.ckpt.keys import split_key
from cu_cli.ckpt.lineage import make_step
from cu_cli.erase.plan import EraseRequest, ErasePlan, plan_erase

log = get_logger(__name__)
__all__ = ["EraseRequest", "EraseResult", "run_erase", "prepare", "solve", "write"]


@dataclass
class EraseResult:
    path: str
    payload_sha256: str
    plan_key: str
    wall_seconds: float
    final_loss: float
    steps: int
    trained_keys: int
    measured: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"path": self.path, "payload_sha256": self.payload_sha256, "key": self.plan_key,
                "wall_seconds": round(self.wall_seconds, 3), "final_loss": self.final_loss,
                "steps": self.steps, "trained_keys": self.trained_keys}


@dataclass
class Prepared:
    """Everything the loop needs: the session, the shared context, the objective, the engine."""

    session: object
    ctx: object
    objective: object
    engine: object
    names: list[str]
    parent_tensors: dict
    hooks: list


def run_erase(req: EraseRequest, plan: ErasePlan | None = None) -> EraseResult:
    """Plan (unless the caller already holds the plan of ``req``), prepare, solve, write."""
    import torch

    t0 = time.time()
    plan = plan or plan_erase(req)
    for w in plan.warnings:
        log.warning(w)
    with torch.enable_grad():
        work = prepare(plan, req.phase)
        t_loop = time.time()
        loss = solve(work, req.progress)
        loop_seconds = time.time() - t_loop
    return write(plan, work, loss, loop_seconds, t0)


def prepare(plan: ErasePlan, phase=None) -> Prepared:
    """``phase(label, done, total)``: progress of the slow phases (anchor images, SelFT)."""
    import torch

    from cu_cli.ckpt.format import load_tensors
    from cu_cli.erase.context import EraseContext
    from cu_cli.erase.engine import Engine
    from cu_cli.erase.lineage_pairs import lineage_pairs, own_free
    from cu_cli.erase.objectives import ERASE_OBJECTIVES
    from cu_cli.models.groups import group_names
    from cu_cli.models.session import ModelSession

    cfg = plan.config
    seed_everything(plan.seed)
    session = ModelSession(plan.base, plan.device, plan.dtype,  # the trained group stays fp32
                           keep=lambda unet: group_names(unet, cfg.params))
    objective = ERASE_OBJECTIVES[cfg.method]()
    ctx = EraseContext(pipe=session.pipe, cfg=cfg, pairs=plan.pairs, trainable={},
                       parent_values={}, gen=torch.Generator().manual_seed(plan.seed),
                       seed=plan.seed, world=plan.world, report=phase)
    _warn_cost(plan, session.pipe, objective)
    if objective.needs.anchor_images:  # from the root base, before the parent is applied
        _anchor_data(ctx, plan.base_identity.fingerprint, plan.seed,
                     forget=objective.needs.forget_images)
    parent_tensors = load_tensors(plan.parent) if plan.parent else {}
    session.apply(parent_tensors, source=plan.parent)
    _warn_truncated(ctx)
    names = _select_trainable(ctx, session, cfg.params)
    ctx.base_values = lambda: plan.base.get_tensors(names)
    ctx.earlier_pairs = lambda strict=None: own_free(
        lineage_pairs(plan, plan.world, cfg.match, strict), plan.concepts)
    objective.prepare(ctx)
    hooks = objective.hooks(ctx)
    regs = [R() for R in plan.regularizers]
    for reg in regs:
        reg.prepare(ctx, plan)
        hooks += reg.hooks()
    return Prepared(session, ctx, objective, Engine(ctx, regs), names, parent_tensors, hooks)


def _warn_cost(plan: ErasePlan, pipe, objective) -> None:
    """One line before a request that will run for long on a CPU (an estimate, not a promise)."""
    from cu_cli.erase.cost import estimate_seconds, format_duration

    if pipe.device.type != "cpu":
        return
    sec = estimate_seconds(pipe, plan.config, objective)
    if sec > 600:
        log.warning("this request needs ≈ %s on this CPU (%s UNet at %d px); a GPU (--device "
                    "cuda) takes minutes", format_duration(sec),
                    f"{sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.0f} M-parameter",
                    pipe.resolution)


def _warn_truncated(ctx) -> None:
    """Prompts longer than the text encoder's window are cut: say so, with the token count."""
    tok = ctx.pipe.tokenizer
    for pair in ctx.pairs:
        for p in dict.fromkeys(pair.target_prompts):
            n = len(tok(p).input_ids)
            if n > tok.model_max_length:
                log.warning("prompt %r has %d tokens; the text encoder reads the first %d",
                            p[:60], n, tok.model_max_length)
                return


def _select_trainable(ctx, session, group: str) -> list[str]:
    """Only the group requires grad; its parent values are kept (SP reference, teacher)."""
    from cu_cli.models.groups import group_names

    unet = session.pipe.unet
    names = group_names(unet, group)
    params = dict(unet.named_parameters())
    unet.requires_grad_(False)
    ctx.trainable = {k: params[split_key(k)[1]] for k in names}
    for p in ctx.trainable.values():
        p.requires_grad_(True)
    ctx.parent_values = {k: p.detach().clone() for k, p in ctx.trainable.items()}
    return names


def solve(work: Prepared, progress=None) -> float:
    """The objective's loop (or its closed-form solve); returns the last total loss (or the
    residual). Hooks are removed on every path."""
    ctx, objective, engine, steps = work.ctx, work.objective, work.engine, work.ctx.cfg.steps
    if objective.kind == "closed_form":
        try:
            return objective.solve(ctx, engine.regs)
        finally:
            for h in work.hooks:
                h.remove()
    loss = float("nan")
    try:
        ctx.unet.train()
        for step in range(steps):
            objective.before_step(ctx, engine, step)
            loss = engine.update(objective.loss(ctx, step))
            if progress:
                progress(step + 1, steps, loss)
    finally:
        ctx.unet.eval()
        for h in work.hooks:
            h.remove()
    return loss


def write(plan: ErasePlan, work: Prepared, loss: float, loop_seconds: float,
          t0: float) -> EraseResult:
    trained = _rounded(plan.config, work.session.values(work.names))
    tensors = {**{k: v.float() for k, v in work.parent_tensors.items()}, **trained}
    measured = _measured(plan, work, trained, loss, loop_seconds)
    measured["wall_seconds"] = round(time.time() - t0, 3)
    step = make_step("erase", concepts=plan.concepts, method=plan.config.method,
                     config=plan.config.to_dict(), inputs=plan.inputs, measured=measured,
                     key=plan.key(), parents=[plan.inputs["parent"]] if plan.inputs["parent"] else [],
                     seed=plan.seed, argv=plan.argv, device=plan.device, dtype=plan.dtype)
    parents = [plan.parent_header] if plan.parent_header is not None else []
    payload = write_checkpoint(plan.out, tensors, plan.base_identity, step, parents=parents)
    return EraseResult(path=plan.out, payload_sha256=payload, plan_key=plan.key(),
                       wall_seconds=measured["wall_seconds"], final_loss=loss,
                       steps=plan.config.steps, trained_keys=len(work.names), measured=measured)


def _rounded(cfg, trained: dict) -> dict:
    """Trained weights, rounded through ``save_dtype`` when it is lower than fp32 (warned)."""
    import torch

    if cfg.save_dtype == "float32":
        return trained
    dt = getattr(torch, cfg.save_dtype, None)
    if not isinstance(dt, torch.dtype):
        raise UsageError(f"--save-dtype {cfg.save_dtype!r} is not a torch dtype")
    log.warning("rounding trained weights through %s (small updates may vanish)", cfg.save_dtype)
    return {k: v.to(dt).float() for k, v in trained.items()}


def _measured(plan: ErasePlan, work: Prepared, trained: dict, loss: float,
              loop_seconds: float) -> dict:
    from cu_cli.ckpt.lineage import peak_memory_mb
    from cu_cli.erase.objectives import ERASE_OBJECTIVES

    ctx = work.ctx
    out = {"objective_url": ERASE_OBJECTIVES[plan.config.method].url,
           "prompt_pairs": sum(len(p.target_prompts) for p in plan.pairs),
           "anchors": [p.anchor for p in plan.pairs], "kinds": [p.kind for p in plan.pairs],
           "trainable_params": sum(p.numel() for p in ctx.trainable.values()),
           "loop_seconds": round(loop_seconds, 3), "final_loss": loss,
           "peak_memory_mb": peak_memory_mb()}
    for reg in work.engine.regs:
        out.update(reg.measured(ctx, trained))
    out.update(work.objective.measured())
    return out


def _anchor_data(ctx, fingerprint: str, seed: int, forget: bool) -> None:
    """Anchor (and forget) images from the root base; index = (pair, prompt) per image."""
    import numpy as np

    from cu_cli.erase.anchors import anchor_images

    cfg = ctx.cfg
    per_pair = max(1, cfg.anchor_images // len(ctx.pairs))
    imgs, fimgs, index = [], [], []
    total, done = per_pair * len(ctx.pairs) * (2 if forget else 1), [0]

    def tick(n: int) -> None:
        done[0] += n
        ctx.progress("anchor images", done[0], total)

    for p_i, pair in enumerate(ctx.pairs):
        im, idx = anchor_images(ctx.pipe, fingerprint, pair.anchor_prompts, per_pair,
                                cfg.anchor_steps, cfg.anchor_guidance, seed, progress=tick)
        imgs.append(im)
        index += [(p_i, int(j)) for j in idx]
        if forget:
            fi, _ = anchor_images(ctx.pipe, fingerprint, pair.target_prompts, per_pair,
                                  cfg.anchor_steps, cfg.anchor_guidance, seed, progress=tick)
            fimgs.append(fi)
    ctx.anchor_images = np.concatenate(imgs)
    ctx.anchor_index = index
    ctx.forget_images = np.concatenate(fimgs) if forget else None
