"""Retained-token K/V penalties (cu extensions on UCE's preservation term, arXiv 2308.14761).

Two sources of token states H, each with its weight, fold into one metric on the input (text)
dimension of every trainable attn2 K/V weight (ops/preserve.py):

- ``preserve`` — the world's other captions (``world``) or a user's prompt file (erase/preserve.py),
  weight λ_p: M_p = H_p·H_pᵀ/N_p;
- ``context`` — the request's own target-prompt positions before the concept's last token
  (erase/context_tokens.py), weight λ_c: M_c.

L = Σ_k tr(ΔW_k·M·ΔW_kᵀ) / Σ_k out_k with M = λ_c·M_c + λ_p·M_p and ΔW = W − W_parent. The same
M is the closed-form preservation term (``quadratic``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cu_cli._util.log import get_logger
from cu_cli.erase.optfield import opt
from cu_cli.erase.regularizers import Quadratic, Regularizer

log = get_logger(__name__)


@dataclass(frozen=True)
class Options:
    preserve: str | None = opt(None, "Keep these prompts' cross-attention K/V: world (the "
                               "base's world: its other concepts, protocol retain sets held out) "
                               "| none | a FILE of prompts.", str,
                               choices=("none", "world", "file"))
    preserve_weight: float | None = opt(None, "Weight λ_p of that retained-token penalty.",
                                        float, ge=0)
    context_weight: float | None = opt(None, "Keep the K/V of the request's own context tokens "
                                       "(target-prompt positions before the concept's last "
                                       "token), weight λ_c.", float, ge=0)


class KVMetric(Regularizer):
    name = "kv-metric"
    url = "https://arxiv.org/abs/2308.14761"
    Options = Options
    defaults = dict(preserve="none", preserve_weight=0.25, context_weight=0.0)

    @classmethod
    def enabled(cls, cfg, plan) -> bool:
        on = (cfg.preserve != "none" and cfg.preserve_weight) or cfg.context_weight
        return bool(on)

    def prepare(self, ctx, plan) -> None:
        from cu_cli.erase.engine import kv_keys

        self.keys = kv_keys(ctx.trainable)
        self.info = {"preserve_prompts": 0, "preserve_prompts_sha256": None, "context_tokens": 0}
        self.M = None
        if not self.keys:
            log.warning("--preserve/--context-weight have no effect with --params %s (no "
                        "attn2.to_k/to_v weight trains)", ctx.cfg.params)
            return
        cfg = ctx.cfg
        M_p = self._preserve_moment(ctx, plan) if cfg.preserve != "none" and cfg.preserve_weight \
            else None
        M_c = self._context_moment(ctx) if cfg.context_weight else None
        metric = None if M_p is None else cfg.preserve_weight * M_p
        if M_c is not None:
            metric = cfg.context_weight * M_c + (0 if metric is None else metric)
        self.M = None if metric is None else metric.to(ctx.trainable[self.keys[0]].device)
        self.ref = ctx.parent_values

    def _preserve_moment(self, ctx, plan):
        import torch

        from cu_cli.erase.preserve import preserve_prompts
        from cu_cli.ops.preserve import second_moment

        prompts = preserve_prompts(ctx.cfg.preserve, plan.concepts, ctx.world,
                                   plan.preserve_file_prompts)
        if not prompts:
            log.warning("--preserve %s: no prompts left after removing targets and held-out "
                        "retain concepts; the penalty is off", ctx.cfg.preserve)
            return None
        with torch.no_grad():
            states = torch.cat([ctx.pipe.encode_text(prompts[i:i + 256]).float()
                                for i in range(0, len(prompts), 256)])
        self.info["preserve_prompts"] = len(prompts)
        self.info["preserve_prompts_sha256"] = "sha256:" + hashlib.sha256(
            "\n".join(prompts).encode()).hexdigest()
        return second_moment(states)

    def _context_moment(self, ctx):
        from cu_cli.erase.context_tokens import context_states
        from cu_cli.ops.preserve import second_moment

        H = context_states(ctx.pipe, ctx.pairs, ctx.embed)
        if H.numel() == 0:
            log.warning("--context-weight: no target prompt contains its concept's tokens; "
                        "the context penalty is off")
            return None
        self.info["context_tokens"] = int(H.shape[0])
        return second_moment(H)

    def terms(self, tr: dict) -> list:
        from cu_cli.ops.preserve import preserve_penalty

        return [] if self.M is None else [preserve_penalty(tr, self.ref, self.keys, self.M)]

    def quadratic(self) -> Quadratic | None:
        if self.M is None:
            return None
        rows = sum(self.ref[k].shape[0] for k in self.keys)
        return Quadratic(weight=1.0 / max(rows, 1), metric=self.M, ref=self.ref, keys=self.keys)

    def measured(self, ctx, trained: dict) -> dict:
        return dict(self.info)
