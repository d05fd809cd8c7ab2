"""Retained-token K/V penalties (cu extensions on UCE's preservation term, arXiv 2308.14761).

Sources of token states H, each with its weight and its reference weights, fold into metrics on
the input (text) dimension of every trainable attn2 K/V weight (ops/preserve.py):

- ``preserve`` — the world's other captions (``world``) or a user's prompt file (erase/preserve.py),
  weight λ_p: M_p = H_p·H_pᵀ/N_p; with ``preserve_focus`` β, + β·M_near over the preserve
  prompts that name one of the concept's words;
- ``context`` — the request's own target-prompt positions before the concept's last token
  (erase/context_tokens.py), weight λ_c: M_c; ``context_extent: prompt`` extends them to every
  position before EOS, so the erasure acts only through EOS and the padding (a cu extension,
  measured in docs/erase.md; off by default);
- ``anchor`` — the request's own anchor prompts, every token position (the prompts the anchor
  images are drawn from: "a tree in neon dots style" when "arrow" is erased onto "tree"), weight
  λ_a, held at the **root base's** K/V (a cu extension, after ConAbl's regularization loss on the
  anchor concept, Kumari et al. 2023, arXiv 2303.13516 §3): the concept the target is mapped onto
  must keep being drawn, and in a chain every request pulls its anchor back to the base instead
  of leaving it where earlier requests moved it. Anchor prompts naming an erased concept stay at
  the parent's. When only attn2 K/V train, anchor prompts whose K/V equal the base's are drawn
  exactly as by the base. ``anchor_scope: chain`` adds the anchors of every earlier request of
  the parent's lineage (rebuilt from its recorded concepts, kinds and anchors), so that a later
  request cannot move what an earlier one mapped its target onto;
- ``word`` — the request's target prompts with a multi-word concept cut to each of its words
  alone ("a star in neon style" and "a star in fade style" for "neon fade"), weight λ_w, held at
  the parent's K/V: the erasure must act on the combination, not on a word it shares with its
  neighbours (neon dots, ocean fade), whose states resemble the word prompts' (a cu extension;
  built from the request's own prompts only);
- ``erased`` — the target prompts of every earlier request of the parent's lineage (rebuilt the
  same way), weight λ_e, held at the **parent's** K/V, which has them erased: the counterweight of
  the anchor hold, so that pulling an anchor back to the base does not pull the concepts mapped
  onto it back too (a cu extension; "keep previously erased concepts erased", issue 19).
  On a world base the earlier prompts are rebuilt exactly; on a real base from the default
  templates (seed 0), which need not be the very prompts an earlier request drew.

- ``keep`` — the model's vocabulary minus what the chain has erased (``World.keep_prompts``:
  every concept of the request's kind that neither the parent nor this request erased, in
  captions with concepts of the other kind outside the protocol's retain set, so no evaluation
  prompt is held), weight λ_k, held at the **root base's** K/V: what was never erased keeps the
  base's drawing however many requests come (a cu extension). A K/V edit that knows what to keep
  can erase every other style (docs/erase.md, "The vocabulary hold"); on a base without a world
  it is an error.

L = Σ_k [tr((W_k − W_k^parent)·M·(W_k − W_k^parent)ᵀ) + tr((W_k − W_k^0)·M_0·(W_k − W_k^0)ᵀ)]
/ Σ_k out_k with M = λ_c·M_c + λ_p·M_p + λ_w·M_w + λ_e·M_e (held at the parent) and M_0 = λ_a·M_a + λ_k·M_k (held at
the root base). The same parts are the closed-form preservation terms (``quadratics``), so UCE
gets every hold too.

``preserve_ref: base`` (a cu extension for chains) bounds the *cumulative* drift of what was never
erased: the states of prompts that name none of the parent's erased concepts (``cu.erased``) —
and the request's context tokens — are held at the root base's K/V, W_0·h, instead of the
parent's, so n requests cannot walk them away step by step; prompts naming an erased concept stay
at the parent's (erased) K/V. Then L = Σ_k [tr((W_k − W_k^0)·M_0·(W_k − W_k^0)ᵀ) +
tr((W_k − W_k^parent)·M_e'·(W_k − W_k^parent)ᵀ)] / Σ_k out_k, with M_0 now also holding those
prompts and the context tokens, and M_e' = λ_e·M_e + λ_w·M_w + the preserve prompts naming an
erased concept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cu_cli._util.log import get_logger
from cu_cli.erase.lineage_pairs import erased_before, lineage_kinds, lineage_pairs, own_free
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
    preserve_focus: float | None = opt(None, "Extra weight β on the preserve prompts that share a "
                                       "word with the concept (its nearest neighbours): M_p + "
                                       "β·M_near (a cu extension).", float, ge=0, neutral=0.0)
    anchor_weight: float | None = opt(None, "Hold the K/V of the request's anchor prompts at the "
                                      "root base's, weight λ_a (a cu extension).", float, ge=0,
                                      neutral=0.0)
    anchor_scope: str | None = opt(None, "Which anchors --anchor-weight holds: the request's "
                                   "own, (chain) also those of every earlier request in the "
                                   "parent's lineage, or auto: chain for an object request, "
                                   "and for any other kind no anchor or erased hold at all.",
                                   str,
                                   choices=("request", "chain", "auto"), neutral="request")
    context_extent: str = opt("concept", "Where the context penalty's positions end: before the "
                              "concept's last token (concept), before EOS (prompt: the erasure "
                              "then acts only through EOS and the padding), or through EOS "
                              "(eos); a cu extension.", str, choices=("concept", "prompt", "eos"),
                              flag=False, neutral="concept")
    erased_extent: str = opt("all", "Which positions of the earlier targets the erased hold "
                             "keeps: all, or summary (EOS and the padding: the states that have "
                             "seen the whole prompt; a cu extension).", str,
                             choices=("all", "summary"), flag=False, neutral="all")
    erased_kinds: str = opt("all", "Which earlier requests the erased hold covers: all, or "
                            "object (those of object requests only; what anchor_scope auto "
                            "gives a style request in a chain that erased objects).", str,
                            choices=("all", "object"), flag=False, neutral="all")
    erased_weight: float | None = opt(None, "Hold the K/V of the earlier requests' target prompts "
                                      "(the parent's lineage) at the parent's, erased, K/V, "
                                      "weight λ_e (a cu extension).", float, ge=0, neutral=0.0)
    word_weight: float | None = opt(None, "Hold the K/V of the request's target prompts with a "
                                    "multi-word concept cut to each of its words alone (\"a "
                                    "star in neon style\" for \"neon fade\") at the parent's, "
                                    "weight λ_w: erase the combination, not its parts (a cu "
                                    "extension).", float, ge=0, neutral=0.0)

    keep_weight: float | None = opt(None, "Hold the K/V of the world's vocabulary that the "
                                    "chain has not erased (its other concepts of the request's "
                                    "kind, in captions outside the evaluation grid) at the root "
                                    "base's, weight λ_k (a cu extension; needs a world base).",
                                    float, ge=0, neutral=0.0)
    keep_plain: bool = opt(False, "The vocabulary hold also holds each object not erased in its "
                           "caption without a style (\"a tree\"), a context no erasure of the "
                           "other kind removes (a cu extension).", bool, flag=False,
                           neutral=False)


class KVMetric(Regularizer):
    name = "kv-metric"
    url = "https://arxiv.org/abs/2308.14761"
    Options = Options
    defaults = dict(preserve="none", preserve_weight=0.25, context_weight=0.0,
                    preserve_ref="parent", anchor_weight=0.0, preserve_focus=0.0,
                    anchor_scope="request", erased_weight=0.0, word_weight=0.0,
                    keep_weight=0.0)

    @classmethod
    def resolve_inputs(cls, cfg, parent=None):
        """``anchor_scope: auto`` → ``chain`` for an object request (its anchor is an object,
        which the erase rewrites along with the target; from the base the chain is the request
        itself). Any other request gets no anchor hold; it keeps the erased hold only over the
        earlier *object* requests of a chain that has some (``erased_kinds: object``: in a mixed
        stream a style request would otherwise let erased objects come back), and otherwise no
        hold at all (weights 0, scope ``request``: the plan without them, bit for bit), as for
        an object request whose weights are both 0. Measured on MiniCanvas: docs/erase.md,
        "Anchor and erased holds", and docs/results.md, "The 24-request stream"."""
        from dataclasses import replace

        if cfg.anchor_scope != "auto":
            return cfg
        if cfg.kind == "object" and (cfg.anchor_weight or cfg.erased_weight):
            return replace(cfg, anchor_scope="chain")
        if cfg.erased_weight and "object" in lineage_kinds(parent):
            return replace(cfg, anchor_scope="request", anchor_weight=0.0,
                           erased_kinds="object")
        return replace(cfg, anchor_scope="request", anchor_weight=0.0, erased_weight=0.0)

    @classmethod
    def enabled(cls, cfg, plan) -> bool:
        from cu_cli._util.errors import UsageError

        if cfg.keep_plain and not cfg.keep_weight:
            raise UsageError("--set keep_plain=true extends the vocabulary hold: it needs "
                             "--keep-weight > 0")
        on = ((cfg.preserve != "none" and cfg.preserve_weight) or cfg.context_weight
              or cfg.anchor_weight or cfg.erased_weight or cfg.word_weight
              or cfg.keep_weight)
        return bool(on)

    def prepare(self, ctx, plan) -> None:
        from cu_cli.erase.engine import kv_keys

        self.keys = kv_keys(ctx.trainable)
        self.info = {"preserve_prompts": 0, "preserve_prompts_sha256": None, "context_tokens": 0,
                     "preserve_ref": ctx.cfg.preserve_ref, "anchor_prompts": 0}
        self.parts = []  # (metric M, reference values R): Σ_k tr((W_k − R_k)·M·(W_k − R_k)ᵀ)
        if not self.keys:
            log.warning("--preserve/--context-weight have no effect with --params %s (no "
                        "attn2.to_k/to_v weight trains)", ctx.cfg.params)
            return
        cfg = ctx.cfg
        erased = erased_before(plan) if cfg.preserve_ref == "base" else []
        clean, dirty = [], []  # metrics held at the base / at the parent
        chain_anchors = bool(cfg.anchor_weight) and cfg.anchor_scope == "chain"
        earlier = (own_free(lineage_pairs(plan, ctx.world, cfg.match), plan.concepts)
                   if chain_anchors or cfg.erased_weight else [])
        if cfg.anchor_weight:
            extra = [p for pair in earlier for p in pair.anchor_prompts] if chain_anchors else []
            for M, named in self._anchor_moments(ctx, extra, erased_before(plan)):
                (dirty if named else clean).append(cfg.anchor_weight * M)
        if cfg.word_weight:
            M_w = self._word_moment(ctx, plan)
            if M_w is not None:
                dirty.append(cfg.word_weight * M_w)
        if cfg.keep_weight:
            M_k = self._keep_moment(ctx, plan)
            if M_k is not None:
                clean.append(cfg.keep_weight * M_k)
        if cfg.erased_weight:
            held = [pair for pair in earlier
                    if cfg.erased_kinds == "all" or pair.kind == cfg.erased_kinds]
            M_e = self._erased_moment(ctx, [p for pair in held for p in pair.target_prompts])
            if M_e is not None:
                dirty.append(cfg.erased_weight * M_e)
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
        share of the prompts, so that their sum is the one moment M_p of all of them. With
        ``preserve_focus`` β the prompts naming one of the concept's words get β·M_near more."""
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
            states = self._states(ctx, group)
            share = len(group) / len(prompts)
            out.append((second_moment(states) * share if share != 1 else second_moment(states),
                        named))
        beta = ctx.cfg.preserve_focus or 0.0
        if beta:
            words = sorted({w for c in plan.concepts for w in c.replace("_", " ").split()})
            near = [p for p in prompts if names_any(p, words)]
            self.info["preserve_near_prompts"] = len(near)
            for named, group in sorted({k: [p for p in near if names_any(p, erased) == k]
                                        for k in (False, True)}.items()):
                if group:
                    M = second_moment(self._states(ctx, group)) * (beta * len(group) / len(near))
                    out.append((M, named))
        return out

    @staticmethod
    def _states(ctx, prompts: list[str]):
        import torch

        with torch.no_grad():
            return torch.cat([ctx.pipe.encode_text(prompts[i:i + 256]).float()
                              for i in range(0, len(prompts), 256)])

    def _anchor_moments(self, ctx, extra: list[str], erased: list[str]) -> list:
        """[(M, names an erased concept)] of the request's anchor prompts and ``extra`` (the
        chain's earlier anchors), all positions, each group weighted by its share so that the sum
        is the moment of all of them."""
        from cu_cli.erase.preserve import names_any
        from cu_cli.ops.preserve import second_moment

        prompts = list(dict.fromkeys([p for pair in ctx.pairs for p in pair.anchor_prompts]
                                     + extra))
        self.info["anchor_prompts"] = len(prompts)
        groups = {}
        for p in prompts:
            groups.setdefault(names_any(p, erased) if erased else False, []).append(p)
        out = []
        for named, group in sorted(groups.items()):
            share = len(group) / len(prompts)
            out.append((second_moment(ctx.embed(group).float()) * share, named))
        return out

    def _erased_moment(self, ctx, targets: list[str]):
        """Moment of the earlier requests' target prompts (all positions), None from a base."""
        from cu_cli.ops.preserve import second_moment

        prompts = list(dict.fromkeys(targets))
        self.info["erased_prompts"] = len(prompts)
        if not prompts:
            return None
        states = self._states(ctx, prompts)
        if ctx.cfg.erased_extent == "summary":
            from cu_cli.erase.context_tokens import summary_states

            states = summary_states(ctx.pipe, prompts, states)
        return second_moment(states)

    def _word_moment(self, ctx, plan):
        """Moment of the word prompts (erase/prompts.py ``word_prompts``), all positions; None
        when no concept has two words."""
        from cu_cli.erase.prompts import word_prompts
        from cu_cli.ops.preserve import second_moment

        prompts = word_prompts(ctx.pairs, plan.concepts + erased_before(plan), ctx.cfg.match)
        self.info["word_prompts"] = len(prompts)
        if not prompts:
            log.warning("--word-weight: no concept of this request has two words; the word "
                        "hold is off")
            return None
        return second_moment(self._states(ctx, prompts))

    def _keep_moment(self, ctx, plan):
        """Moment of the vocabulary hold's prompts (all positions); None when nothing is left.
        The vocabulary is that of the request's kind and, in a chain that mixes kinds, of every
        kind the parent's lineage erased (a style request of a mixed stream also holds the objects
        the stream has not erased, and the other way round)."""
        from cu_cli._util.errors import UsageError
        from cu_cli.erase.lineage_pairs import lineage_kinds
        from cu_cli.ops.preserve import second_moment

        if ctx.world is None:
            raise UsageError("--keep-weight holds a world's vocabulary: it needs a built-in "
                             "world base (MiniCanvas); on another base use --preserve FILE")
        erased = erased_before(plan) + plan.concepts
        others = sorted((lineage_kinds(plan.parent_header) - {ctx.cfg.kind}) & {"style", "object"})
        plain = bool(ctx.cfg.keep_plain)
        prompts = ctx.world.keep_prompts(ctx.cfg.kind, erased, plain)
        for kind in others:
            seen = set(prompts)
            prompts += [p for p in ctx.world.keep_prompts(kind, erased, plain) if p not in seen]
        if others:
            self.info["keep_kinds"] = [ctx.cfg.kind, *others]
        self.info["keep_prompts"] = len(prompts)
        if not prompts:
            log.warning("--keep-weight: the chain has erased the whole vocabulary of its kind; "
                        "the vocabulary hold is off")
            return None
        return second_moment(self._states(ctx, prompts))

    def _context_moment(self, ctx):
        from cu_cli.erase.context_tokens import context_states
        from cu_cli.ops.preserve import second_moment

        H = context_states(ctx.pipe, ctx.pairs, ctx.embed, extent=ctx.cfg.context_extent)
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
