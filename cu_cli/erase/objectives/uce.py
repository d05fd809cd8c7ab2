"""UCE — Unified Concept Editing, a closed-form edit of the cross-attention K/V weights
(Gandikota et al., WACV 2024, arXiv 2308.14761), in cu's chain and regularizer framework.

Erase set: every token position of every target prompt, c_e = its text state, with target
v*_e = W_ref·c_anchor (``uce_eta`` η > 0: W_ref·(c_anchor − η·(c_e − c_anchor)), past the anchor,
away from the concept — ConAbl's η in K/V space, a cu extension; ``uce_push: contrast | both``
push along c_e − c̄ or c_e − (c_anchor + c̄)/2 instead, c̄ the concept's siblings in the same
prompt, erase/contrast.py), the same position of the paired
anchor prompt (for styles the style-free
caption): if every position's K/V equals the anchor prompt's, the UNet's cross-attention — the
only place text enters it — sees the anchor prompt, which is ConAbl's objective solved exactly.
Positions the two prompts share (CLIP is causal: the words before the concept) give r_e = 0 and
so act as preservation constraints of their own. Per K/V weight (ops/closed_form.py):

    min_ΔW (s/N)·Σ_e ‖(W_ref + ΔW)c_e − v*_e‖² + tr(ΔW·M·ΔWᵀ) + λ‖ΔW‖²_F,

with W_ref = θ^ref (``reg_ref``: the parent by default — λ is L2-SP toward it in closed form),
``uce_scope: chain`` (a cu extension): the erase set is every concept of the chain — this
request's and the earlier requests' (rebuilt from the parent's lineage, erase/lineage_pairs.py) —
and W_ref the root base's, so the state after request k is the simultaneous UCE edit of the first
k concepts (Gandikota et al. edit many concepts at once) and drift does not accumulate; in a
chain that mixes kinds each earlier concept keeps the push (η, direction, weighting) of its own
request (erase/lineage_pairs.py ``solved_with``), ``balanced`` weighting stays within a kind, and
a caption naming erased concepts of both kinds is dropped from both pairs (their two targets
would each keep the other's concept; cu extensions, docs/erase.md "Chains that mix kinds");
``uce_weighting: concept`` (a cu extension) weighs each column w_e = N/N_c(e), so every concept's
columns weigh s in total as in a request of its own — the mean over all N columns (``column``)
gives each of k concepts s/k against an unchanged M;
M = the retained-token metric of the K/V-metric regularizer (``--preserve`` prompts and the
request context; with ``--preserve world`` the previously erased concepts' captions are in it,
so they stay at their erased state), s = ``erase_scale``. ``uce_nullspace`` restricts ΔW to the
complement of M's span (SPEED, arXiv 2503.07392): ΔW·c_p = 0 exactly for the protected states;
with ``--basis`` the update is likewise restricted to the complement of the projection basis
(the closed form of gradient projection). Float64 Cholesky solves; the lineage records the sizes,
λs and condition numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from cu_cli._util.errors import UsageError
from cu_cli.erase.objectives.base import Needs, Objective
from cu_cli.erase.optfield import opt


@dataclass(frozen=True)
class Options:
    uce_lambda: float | None = opt(None, "UCE: ridge weight λ toward θref (the closed-form "
                                   "L2-SP).", float, gt=0)
    erase_scale: float | None = opt(None, "UCE: weight s of the erase term.", float, gt=0)
    uce_eta: float | None = opt(None, "UCE: push each target token's K/V past the anchor's, "
                                "v* = W_ref·(c_anc − η·(c_tgt − c_anc)) (negative guidance in K/V "
                                "space, a cu extension; 0 = UCE).", float, ge=0)
    uce_nullspace: bool = opt(False, "UCE: restrict the edit to the complement of the preserved "
                              "states' span (SPEED-style; needs --preserve or --context-weight).",
                              bool)
    uce_align: str | None = opt(None, "UCE: which target positions are rewritten: position (UCE: "
                                "position i to the anchor's i) or concept (a cu extension: the "
                                "words before the concept's last token keep their K/V; the rest "
                                "aligned with the anchor at EOS; erase/token_align.py).", str,
                                choices=("position", "concept"), neutral="position")
    uce_anchor: str | None = opt(None, "UCE: whose K/V the targets take — the reference's "
                                  "(ref: --reg-ref's state, UCE) or the root base's (base: in a "
                                  "chain the anchor's drawing cannot drift request by request; a "
                                  "cu extension, as --conabl-anchor base).", str,
                                  choices=("ref", "base"), neutral="ref")
    uce_scope: str | None = opt(None, "UCE: what each request solves for — its own concepts "
                                "from --reg-ref's state (request: UCE), or every concept the "
                                "chain has erased, rebuilt from the parent's lineage, from the "
                                "root base (chain: state k is the simultaneous edit of the first k "
                                "requests, so drift cannot accumulate; needs --reg-ref base and "
                                "--preserve-ref base; a cu extension).", str,
                                choices=("request", "chain"), neutral="request")
    uce_weighting: str | None = opt(None, "UCE: how the erase term weighs its token columns — "
                                    "column (each column s/N: k concepts share s, cu's UCE), "
                                    "concept (each concept's columns weigh s in total, as in a "
                                    "request of its own: a chain-scope edit of k concepts does not "
                                    "dilute each by 1/k) or balanced (the total stays s, moved "
                                    "toward the concepts the solve leaves least erased; "
                                    "ops/balance.py; both cu extensions).", str,
                                    choices=("column", "concept", "balanced"), neutral="column")
    uce_push: str | None = opt(None, "UCE: the direction η pushes each target K/V away from — "
                               "anchor (c_tgt − c_anc) or contrast (c_tgt − c̄, c̄ the mean state "
                               "of the same prompt with the concept replaced by each other concept "
                               "of its kind in the world's vocabulary: what the prompt shares with "
                               "its siblings, the object of a style caption, is not pushed) or "
                               "both (c_tgt − (c_anc + c̄)/2, the mean of the two); "
                               "erase/contrast.py; cu extensions).", str,
                               choices=("anchor", "contrast", "both"), neutral="anchor")
    uce_rtol: float = opt(1e-4, "UCE null space: eigenvalues of the preserve metric above rtol·max "
                          "are protected.", float, flag=False, gt=0)


def _pull(quads, key: str, W0):
    """Σ_i (R_i − W0)·M_i over the preserve parts whose reference R_i is not W0 (None if none)."""
    out = None
    for q in quads:
        D = q.ref[key].float().cpu() - W0
        if bool(D.any()):
            out = D @ q.metric.cpu() if out is None else out + D @ q.metric.cpu()
    return out


def _column_weights(owner: list[int], weighting: str):
    """√w per erase column for ``uce_weighting: concept`` — w_e = N / N_c(e), so that with the
    solve's s/N each concept's columns weigh s in total — or None (every column s/N)."""
    import torch

    if weighting != "concept" or not owner:
        return None
    ids = torch.tensor(owner)
    counts = torch.bincount(ids).double()
    return torch.sqrt(len(owner) / counts[ids]).float()


def _without_cross_kind_captions(pairs: list) -> tuple[list, int]:
    """In a solve over concepts of more than one kind, each pair without the prompts that name a
    solved concept of another kind: "a arrow in neon stripes style" is a target of both the style
    (→ "a arrow") and the object (→ "a tree in neon stripes style"), two targets that each keep
    the other's concept, and least squares would split the difference. (pairs, prompts dropped);
    a pair that would lose every prompt keeps them. One kind: unchanged (a cu extension)."""
    from cu_cli.erase.prompts import drop_naming

    if len({p.kind for p in pairs}) < 2:
        return pairs, 0
    out, dropped = [], 0
    for p in pairs:
        kept = drop_naming(p, [q.concept for q in pairs if q.kind != p.kind]) or p
        dropped += len(p.target_prompts) - len(kept.target_prompts)
        out.append(kept)
    return out, dropped


def _balance_groups(kinds: list[str], weightings: list[str]) -> list:
    """Index groups that ``balanced`` weighting rebalances among themselves: the balanced
    concepts of each kind (groups of one dropped). A chain of one kind is one group, as in
    ops/balance.py; in a chain mixing kinds the erase weight is not moved from one kind to the
    other (each kind keeps the share its columns give it)."""
    import torch

    out = []
    for kind in dict.fromkeys(kinds):
        idx = [i for i, (k, w) in enumerate(zip(kinds, weightings)) if k == kind and w == "balanced"]
        if len(idx) > 1:
            out.append(torch.tensor(idx, dtype=torch.long))
    return out


def _by_concept(col_values, owner, n: int):
    """Σ of a per-column value over each concept's columns (float64, length n)."""
    import torch

    return torch.zeros(n, dtype=torch.float64).index_add_(0, owner, col_values.double())


class UCE(Objective):
    name = "uce"
    url = "https://arxiv.org/abs/2308.14761"
    kind = "closed_form"
    needs = Needs()
    Options = Options
    # Closed form: no optimizer, no images; steps/lr/batch are placeholders the solve ignores.
    defaults = dict(steps=1, lr=1.0, batch=1, clip=None, weight_decay=0.0, anchor_images=0,
                    anchor_steps=1, anchor_guidance=1.0, mask_border=0, hflip=False,
                    uce_lambda=0.1, erase_scale=1.0, uce_eta=0.0,
                    uce_align="position", uce_anchor="ref", uce_scope="request",
                    uce_weighting="column", uce_push="anchor")

    @classmethod
    def check(cls, cfg, regularizers) -> None:
        names = {r.name for r in regularizers}
        if cfg.params != "kv-xattn":
            raise UsageError("--method uce edits the attn2 K/V weights: use --params kv-xattn")
        if names & {"sp", "selft"}:
            raise UsageError("--method uce: --l1/--l2 and --selft-topk are gradient-path "
                             "regularizers; its ridge toward --reg-ref is --uce-lambda")
        if cfg.uce_scope == "chain" and (cfg.reg_ref != "base" or (
                "kv-metric" in names and cfg.preserve_ref != "base")):
            raise UsageError("--uce-scope chain solves every erased concept from the root base: "
                             "it needs --reg-ref base and --preserve-ref base")
        if cfg.uce_nullspace and "kv-metric" not in names:
            raise UsageError("--uce-nullspace needs preserved states (--preserve or "
                             "--context-weight)")

    def prepare(self, ctx) -> None:
        """C = the target states of the rewritten (and kept) positions, A = the states whose K/V
        they must take (a kept position's own)."""
        import torch

        from cu_cli.erase.context_tokens import word_ids
        from cu_cli.erase.token_align import align

        from cu_cli.erase.contrast import sibling_states

        if ctx.cfg.uce_push in ("contrast", "both") and ctx.world is None:
            raise UsageError(f"--set uce_push={ctx.cfg.uce_push} takes the concept's siblings "
                             "from the world's vocabulary; this base has none (use uce_push "
                             "anchor)")
        cols_c, cols_a, cols_d, owner, missing, fallback = [], [], [], [], 0, 0
        eos = ctx.pipe.tokenizer.eos_token_id
        pairs = list(ctx.pairs)
        if ctx.cfg.uce_scope == "chain":  # the earlier requests, re-erased from the base
            pairs += ctx.earlier_pairs("--uce-scope chain")
        pairs, dropped = _without_cross_kind_captions(pairs)
        own = (ctx.cfg.uce_eta, ctx.cfg.uce_push, ctx.cfg.uce_weighting)
        opts = [p.solved_with or own for p in pairs]  # each concept's push, as it was requested
        eta_cols = []
        for n, pair in enumerate(pairs):
            push = opts[n][1]
            contrast = push in ("contrast", "both")
            concept = word_ids(ctx.pipe, pair.concept)
            tgt, anc = list(pair.target_prompts), list(pair.anchor_prompts)
            H_t, H_a = ctx.embed(tgt).float(), ctx.embed(anc).float()
            ids_t, ids_a = ctx.pipe.tokenize(tgt).tolist(), ctx.pipe.tokenize(anc).tolist()
            bar = (sibling_states(ctx, pair, tgt, ids_t, eos) if contrast
                   else [None] * len(tgt))
            for i in range(len(tgt)):
                al = align(ids_t[i], ids_a[i], concept, eos, ctx.cfg.uce_align)
                missing += not al.concept_found
                jt = al.keep + [j for j, _ in al.edit]
                cols_c.append(H_t[i, jt])
                cols_a.append(torch.cat([H_t[i, al.keep], H_a[i, [a for _, a in al.edit]]]))
                if contrast and bar[i] is not None:  # kept positions: C = A, no push
                    je = [j for j, _ in al.edit]
                    d = torch.cat([torch.zeros_like(H_t[i, al.keep]), H_t[i, je] - bar[i][je]])
                    both = push == "both"  # (the recorded states' float order)
                    cols_d.append(0.5 * (d + cols_c[-1] - cols_a[-1]) if both else d)
                else:  # uce_push anchor, or no sibling of this prompt's length
                    fallback += 1 if contrast else 0
                    cols_d.append(cols_c[-1] - cols_a[-1])
                owner += [n] * len(jt)
                eta_cols += [opts[n][0]] * len(jt)
        self.C = torch.cat(cols_c).T.contiguous().cpu()  # [d, N]
        self.A = torch.cat(cols_a).T.contiguous().cpu()
        self.D = torch.cat(cols_d).T.contiguous().cpu()  # the push direction of each column
        self.owner = torch.tensor(owner, dtype=torch.long)
        self.sqrt_w = _column_weights(owner, ctx.cfg.uce_weighting)
        # η per column only where concepts differ (a chain mixing kinds); else the scalar
        self.eta = (ctx.cfg.uce_eta if all(o[0] == ctx.cfg.uce_eta for o in opts)
                    else torch.tensor(eta_cols, dtype=self.D.dtype))
        self.groups = _balance_groups([p.kind for p in pairs], [o[2] for o in opts])
        self.align_info = {"align": ctx.cfg.uce_align, "prompts_without_concept": missing,
                           "scope": ctx.cfg.uce_scope, "push": ctx.cfg.uce_push,
                           "push_fallback_prompts": fallback,
                           "concepts_solved": [p.concept for p in pairs]}
        if dropped:
            self.align_info["cross_kind_prompts_dropped"] = dropped
        if any(o != own for o in opts):
            self.align_info["solved_with"] = {p.concept: list(o) for p, o in zip(pairs, opts)}

    def solve(self, ctx, regularizers) -> float:
        import torch

        from cu_cli.erase.engine import kv_keys
        from cu_cli.ops.balance import BALANCE_ROUNDS, rebalance
        from cu_cli.ops.closed_form import complement, protected_directions, solve_update

        cfg = ctx.cfg
        by_name = {r.name: r for r in regularizers}
        quads = by_name["kv-metric"].quadratics() if "kv-metric" in by_name else []
        M = sum(q.metric.cpu() for q in quads) if quads else None
        ref = ctx.parent_values if cfg.reg_ref == "parent" else ctx.base_values()
        anchor_ref = ctx.base_values() if cfg.uce_anchor == "base" else ref
        protected = []  # directions the edit must not touch (null-space variant, basis)
        if cfg.uce_nullspace:
            protected.append(protected_directions(M, cfg.uce_rtol))
        if "projection" in by_name:
            protected.append(by_name["projection"].protected.cpu().double())
        Q = complement(torch.cat(protected, dim=1)) if protected else None
        owner = self.owner
        n_concepts = int(owner.max()) + 1 if owner.numel() else 0
        keys = list(kv_keys(ctx.trainable))
        systems = []  # per key: W_ref, V, pull (fixed across balancing rounds)
        before = torch.zeros(n_concepts, dtype=torch.float64)
        for k in keys:
            W0 = ref[k].float().cpu()
            V = anchor_ref[k].float().cpu() @ (self.A - self.eta * self.D)
            systems.append((W0, V, _pull(quads, k, W0)))
            before += _by_concept(((W0 @ self.C - V) ** 2).sum(0), owner, n_concepts)

        def solve_all(sw):
            Cw = self.C if sw is None else self.C * sw
            out, conds, after = [], [], torch.zeros(n_concepts, dtype=torch.float64)
            for W0, V, pull in systems:
                Vw = V if sw is None else V * sw
                dW, cond = solve_update(W0, Cw, Vw, M, cfg.uce_lambda, cfg.erase_scale, Q, pull)
                W = W0 + dW
                out.append(W)
                conds.append(cond)
                after += _by_concept(((W @ self.C - V) ** 2).sum(0), owner, n_concepts)
            return out, conds, after

        with torch.no_grad():
            sw = self.sqrt_w  # weighted least squares: scale C and V by √w
            Ws, conds, after = solve_all(sw)
            weights = torch.ones(n_concepts, dtype=torch.float64)
            counts = torch.bincount(owner, minlength=n_concepts)
            if self.groups:
                for _ in range(BALANCE_ROUNDS):
                    rho = after / before.clamp_min(1e-30)
                    for g in self.groups:
                        weights[g] = rebalance(weights[g], rho[g], counts[g])
                    sw = weights.sqrt().float()[owner]
                    Ws, conds, after = solve_all(sw)
            for k, W in zip(keys, Ws):
                ctx.trainable[k].copy_(W.to(ctx.trainable[k].device))
        frac = (after / before.clamp_min(1e-30)).tolist()
        names = self.align_info["concepts_solved"]
        self.info = {"erase_tokens": int(self.C.shape[1]), **self.align_info,
                     "lambda": cfg.uce_lambda,
                     "eta": cfg.uce_eta, "anchor": cfg.uce_anchor,
                     "erase_scale": cfg.erase_scale, "weighting": cfg.uce_weighting,
                     "residual_fraction": {c: round(f, 4) for c, f in zip(names, frac)},
                     "concept_weight": {c: round(float(w), 4) for c, w in zip(names, weights)},
                     "preserve_metric": M is not None,
                     "free_dims": None if Q is None else int(Q.shape[1]),
                     "cond_max": max(conds), "cond_mean": sum(conds) / len(conds)}
        return float(after.sum()) / max(len(keys), 1) / max(int(self.C.shape[1]), 1)

    def measured(self) -> dict:
        return {"uce": self.info}
