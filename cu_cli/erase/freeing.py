"""The target's own text directions, removed from a projection basis before P is built (a cu
extension of method-notes §7.3; ``ops/projection.deflate``).

Gradient projection keeps W·c fixed for c ∈ span(C). When the protected neighbours' embeddings
span the target's embedding — always, in a vocabulary of composed names such as MiniCanvas's
"<palette> <texture>" styles — the projector also blocks the erasure. Modes:

- ``none``: the reference behaviour (C as stored);
- ``concept``: each target's concept embedding as the basis computed it (§7.2: the basis's own
  template for its kind, mean over the concept's tokens after the prefix), one direction per
  target;
- ``tokens``: the hidden states at the target's token positions in every target prompt of the
  request, i.e. exactly the inputs whose K/V the erasure must move (more directions freed, less
  protection left).
"""

from __future__ import annotations

import torch

from cu_cli._util.errors import CuError


def target_directions(mode: str, pipe, pairs, basis_header) -> torch.Tensor:
    """T (d × m) for ``mode``; empty (d × 0) for ``none``."""
    from cu_cli.models.text import concept_token_states, token_embeddings

    if mode == "none":
        return torch.zeros(0, 0)
    if mode == "concept":
        templates = (basis_header.json("cu.basis.params", {}) or {}).get("templates") or {}
        prompts = []
        for p in pairs:
            tpl = templates.get(p.kind) or templates.get("style" if p.kind == "style" else "object")
            if not tpl:
                raise CuError(f"the basis records no template for kind {p.kind!r}; "
                              "use --free-target tokens or none")
            prompts.append(tpl.format(x=p.concept))
        return token_embeddings(pipe, prompts).T.contiguous()
    rows = [concept_token_states(pipe, list(dict.fromkeys(p.target_prompts)), p.concept)
            for p in pairs]
    return torch.cat(rows).T.contiguous()
