"""Retained-token K/V penalties (cu extensions on UCE's preservation term, arXiv 2308.14761).

Two sources of token states H, each with its weight, fold into one metric on the input (text)
dimension of every trainable attn2 K/V weight (ops/preserve.py):

- ``preserve`` — the world's other captions (``world``) or a user's prompt file (erase/preserve.py),
  weight λ_p: M_p = H_p·H_pᵀ/N_p;
- ``context`` — the request's own target-prompt positions before the concept's last token
  (erase/context_tokens.py), weight λ_c: M_c.

L = Σ_k tr(ΔW_k·M·ΔW_kᵀ) / Σ_k out_k with M = λ_c·M_c + λ_p·M_p and ΔW = W − W_parent. The same
M is the closed-form preservation term (``quadratics``).

``preserve_ref: base`` (a cu extension for chains) bounds the *cumulative* drift of what was never
erased: the states of prompts that name none of the parent's erased concepts (``cu.erased``) —
and the request's context tokens — are held at the root base's K/V, W_0·h, instead of the
parent's, so n requests cannot walk them away step by step; prompts naming an erased concept stay
at the parent's (erased) K/V. Then L = Σ_k [tr((W_k − W_k^0)·M_0·(W_k − W_k^0)ᵀ) +
tr((W_k − W_k^parent)·M_e·(W_k − W_k^parent)ᵀ)] / Σ_k out_k.
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
    preserve_ref: str | None = opt(None, "Hold those K/V at the parent's, or (base) hold the "
                                   "prompts naming no erased concept at the root base's "
                                   "(bounds a chain's cumulative drift; a cu extension).", str,
                                   choices=("parent", "base"), neutral="parent")


def _erased_before(plan) -> list[str]:
    """The concepts the parent state has erased (its ``cu.erased``; none from a base)."""
    return list(plan.parent_header.json("cu.erased", [])) if plan.parent_header else []


class KVMetric(Regularizer):
    name = "kv-metric"
    url = "https://arxiv.org/abs/2308.14761"
    Options = Options
    defaults = dict(preserve="none", preserve_weight=0.25, context_weight=0.0,
                    preserve_ref="parent")

    @classmethod
    def enabled(cls, cfg, plan) -> bool:
        on = (cfg.preserve != "none" and cfg.preserve_weight) or cfg.context_weight
        return bool(on)

    def prepare(self, ctx, plan) -> None:
        from cu_cli.erase.engine import kv_keys

        self.keys = kv_keys(ctx.trainable)
        self.info = {"preserve_prompts": 0, "preserve_prompts_sha256": None, "context_tokens": 0,
                     "preserve_ref": ctx.cfg.preserve_ref}
        self.parts = []  # (metric M, reference values R): Σ_k tr((W_k − R_k)·M·(W_k − R_k)ᵀ)
        if not self.keys:
            log.warning("--preserve/--context-weight have no effect with --params %s (no "
                        "attn2.to_k/to_v weight trains)", ctx.cfg.params)
            return
        cfg = ctx.cfg
        erased = _erased_before(plan) if cfg.preserve_ref == "base" else []
        clean, dirty = [], []  # metrics held at the base / at the parent
        if cfg.preserve != "none" and cfg.preserve_weight:
            for M, named in self._preserve_moments(ctx, plan, erased):
                at_base = cfg.preserve_ref == "base" and not named
                (clean if at_base else dirty).append(cfg.preserve_weight * M)
        if cfg.context_weight:
            M_c = self._context_moment(ctx)
            if M_c is not None:
                (clean if cfg.preserve_ref == "base" else dirty).append(cfg.context_weight * M_c)
        dev = ctx.trainable[self.keys[0]].device
        if dirty:
            self.parts.append((sum(dirty).to(dev), ctx.parent_values))
        if clean:
            base = {k: v.to(dev, ctx.parent_values[k].dtype)
                    for k, v in ctx.base_values().items() if k in self.keys}
            self.parts.append((sum(clean).to(dev), base))

    def _preserve_moments(self, ctx, plan, erased: list[str]) -> list:
        """[(M, names an erased concept)] of the preserve prompts: one moment, or with
        ``erased`` two — the prompts naming an erased concept and the rest, each weighted by its
        share of the prompts, so that their sum is the one moment M_p of all of them."""
        import torch

        from cu_cli.erase.preserve import names_any, preserve_prompts
        from cu_cli.ops.preserve import second_moment

        prompts = preserve_prompts(ctx.cfg.preserve, plan.concepts, ctx.world,
                                   plan.preserve_file_prompts)
        if not prompts:
            log.warning("--preserve %s: no prompts left after removing targets and held-out "
                        "retain concepts; the penalty is off", ctx.cfg.preserve)
            return []
        self.info["preserve_prompts"] = len(prompts)
        self.info["preserve_prompts_sha256"] = "sha256:" + hashlib.sha256(
            "\n".join(prompts).encode()).hexdigest()
        groups = {}
        for p in prompts:
            groups.setdefault(names_any(p, erased), []).append(p)
        self.info["preserve_prompts_at_base"] = len(groups.get(False, [])) if erased else None
        out = []
        for named, group in sorted(groups.items()):
            with torch.no_grad():
                states = torch.cat([ctx.pipe.encode_text(group[i:i + 256]).float()
                                    for i in range(0, len(group), 256)])
            share = len(group) / len(prompts)
            out.append((second_moment(states) * share if share != 1 else second_moment(states),
                        named))
        return out

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

        if not self.parts:
            return []
        return [sum(preserve_penalty(tr, ref, self.keys, M) for M, ref in self.parts)]

    def quadratics(self) -> list[Quadratic]:
        rows = sum(self.parts[0][1][k].shape[0] for k in self.keys) if self.parts else 0
        return [Quadratic(weight=1.0 / max(rows, 1), metric=M, ref=ref, keys=self.keys)
                for M, ref in self.parts]

    def measured(self, ctx, trained: dict) -> dict:
        return dict(self.info)
