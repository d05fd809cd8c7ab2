"""Sibling states for UCE's contrast push (``uce_push: contrast | both``, a cu extension).

UCE's push past the anchor (objectives/uce.py, η > 0) moves each target token's K/V along
−η·(c_tgt − c_anc). For a style caption "a circle in neon stripes style" and its style-free anchor
"a circle", the difference holds the style, but also everything the later positions of the two
prompts encode differently (CLIP is causal: the positions after the object word carry the
object too), so a strong push also pushes the object's drawing away.

The contrast push replaces the anchor by the *siblings* of the concept: with S the world's other
concepts of the same kind,

    c̄_j = (1/|S|)·Σ_{s∈S} h_j(prompt with the concept replaced by s),
    v*_e = W·(c_anc,e − η·(c_tgt,e − c̄_e)),

so the push is the direction that tells this concept apart from its siblings in the same
context: a position the siblings share with the target (the object's words, the template)
contributes nothing. ``uce_push: both`` pushes along the mean of the two directions,
c_tgt − (c_anc + c̄)/2. Only siblings whose prompt tokenises to the target's length are used (the
positions must line up); a prompt with none keeps the anchor push (counted in the lineage as
``push_fallback_prompts``). Uses the request's own prompts and the world's vocabulary only.
"""

from __future__ import annotations

from cu_cli.erase.prompts import replace_word
from cu_cli.erase.token_align import eos_index


def sibling_states(ctx, pair, prompts: list[str], ids: list[list[int]], eos_id: int) -> list:
    """Per target prompt, the mean per-token state [L, d] of its sibling prompts (or None): the
    concept replaced as ``--match`` finds it (``prompts.replace_word``)."""
    siblings = [c for c in ctx.world.concepts(pair.kind) if c != pair.concept]
    out = []
    for prompt, row in zip(prompts, ids):
        subs = (replace_word(prompt, pair.concept, s, ctx.cfg.match) for s in siblings)
        alts = [q for q, found in subs if found]
        if alts:
            rows = ctx.pipe.tokenize(alts).tolist()
            e = eos_index(row, eos_id)
            alts = [q for q, r in zip(alts, rows) if eos_index(r, eos_id) == e]
        out.append(ctx.embed(alts).float().mean(0) if alts else None)
    return out
