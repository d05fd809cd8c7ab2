"""Gradient projection orthogonal to protected text embeddings (method-notes §7.3).

With the basis C of ``cu project-basis`` (optionally deflated by the target's own directions,
``free_target``, erase/freeing.py), P = I − C(CᵀC + λI)⁻¹Cᵀ and every attn2 K/V weight gradient
becomes G·P after backward; with ``selft_remask`` the SelFT mask is applied again afterwards.
``project_update`` (a cu extension) also projects each optimizer update exactly,
W ← W_prev + (W − W_prev)·P, since Adam's per-element scaling breaks G·P's orthogonality.
The lineage records the leakage ‖ΔW·C‖_F/(‖ΔW‖_F‖C‖_F) of the request's update.
"""

from __future__ import annotations

from dataclasses import dataclass

from cu_cli._util.errors import CuError, UsageError
from cu_cli.erase.optfield import opt
from cu_cli.erase.regularizers import Regularizer


@dataclass(frozen=True)
class Options:
    free_target: str = opt("none", "With --basis: none (the reference) | concept (remove the "
                           "target's own embedding from the basis first).", str,
                           choices=("none", "concept"))
    project_update: bool = opt(False, "With --basis: also project each Adam update exactly (cu "
                               "extension).", bool)


class Projection(Regularizer):
    name = "projection"
    url = "https://arxiv.org/abs/2511.07970"
    Options = Options

    @classmethod
    def enabled(cls, cfg, plan) -> bool:
        if not plan.basis:
            if cfg.project_update or cfg.selft_remask:
                raise UsageError("--project-update / selft_remask need --basis (they would do "
                                 "nothing)")
            return False
        return True

    def prepare(self, ctx, plan) -> None:
        from cu_cli.ckpt.basis import read_basis
        from cu_cli.erase.engine import kv_keys
        from cu_cli.erase.freeing import target_directions
        from cu_cli.ops.projection import deflate, projector

        C, bh = read_basis(plan.basis, plan.base_identity, plan.allow_base_mismatch)
        T = target_directions(ctx.cfg.free_target, ctx.pipe, ctx.pairs, bh)
        self.C, self.freed = C, int(T.shape[1]) if T.numel() else 0
        self.kv = kv_keys(ctx.trainable)
        if not self.kv:
            raise UsageError(f"--basis has no effect with --params {ctx.cfg.params}: it projects "
                             "attn2.to_k/to_v weight gradients, and none are trainable")
        self.protected = deflate(C, T)  # what stays fixed (a closed form reads it)
        P = projector(self.protected)
        bad = [k for k in self.kv if ctx.trainable[k].shape[1] != P.shape[0]]
        if bad:
            raise CuError(f"basis dimension {P.shape[0]} does not match {bad[0]} "
                          f"(input dim {ctx.trainable[bad[0]].shape[1]})")
        self.P = P.to(next(iter(ctx.trainable.values())).device)
        self.masks = getattr(ctx, "selft_masks", None) if ctx.cfg.selft_remask else None
        self.exact = ctx.cfg.project_update
        self.info = {"path": plan.basis, "payload_sha256": bh.payload_sha256,
                     "shape": list(C.shape), "free_target": ctx.cfg.free_target,
                     "freed_directions": self.freed}

    def on_grad(self, tr: dict) -> None:
        from cu_cli.ops.projection import project_rows

        for k in self.kv:
            if tr[k].grad is not None:
                tr[k].grad = project_rows(tr[k].grad, self.P)
        if self.masks is not None:
            for k in self.kv:
                if tr[k].grad is not None:
                    tr[k].grad = tr[k].grad * self.masks[k]

    def before_opt_step(self, tr: dict) -> None:
        self.prev = {k: tr[k].detach().clone() for k in self.kv} if self.exact else None

    def after_opt_step(self, tr: dict) -> None:
        import torch

        from cu_cli.ops.projection import project_rows

        if self.prev is not None:
            with torch.no_grad():
                for k in self.kv:
                    tr[k].copy_(self.prev[k] + project_rows(tr[k] - self.prev[k], self.P))

    def measured(self, ctx, trained: dict) -> dict:
        from cu_cli.ops.projection import leakage

        leak = [leakage(trained[k] - ctx.parent_values[k].cpu(), self.C) for k in self.kv]
        return {"basis": self.info, "projection_leakage": {
            "mean": sum(leak) / max(len(leak), 1), "max": max(leak, default=0.0)}}
