"""The target's own text directions, removed from a projection basis before P is built (a cu
extension of method-notes §7.3; ``ops/projection.deflate``).

Gradient projection keeps W·c fixed for c ∈ span(C). When the protected neighbours' embeddings
span the target's embedding — always, in a vocabulary of composed names such as MiniCanvas's
"<palette> <texture>" styles — the projector also blocks the erasure. Modes:

- ``none`` (default): the reference behaviour (C as stored);
- ``concept``: remove each target's concept embedding as the basis computed it (§7.2: the basis's
  own template for its kind, mean over the concept's tokens after the prefix), one direction per
  target.

Measured on MiniCanvas (docs/results/projection.md): ``concept`` restores the erasure that ``none``
blocks, but leaves the nearest styles no better protected than no projection at all.
"""

from __future__ import annotations

import torch

from cu_cli._util.errors import CuError


def target_directions(mode: str, pipe, pairs, basis_header) -> torch.Tensor:
    """T (d × m) for ``mode``; empty (0 × 0) for ``none``."""
    from cu_cli.models.text import token_embeddings

    if mode == "none":
        return torch.zeros(0, 0)
    templates = (basis_header.json("cu.basis.params", {}) or {}).get("templates") or {}
    prompts = []
    for p in pairs:
        tpl = templates.get(p.kind) or templates.get("object")  # custom kinds: object template
        if not tpl:
            raise CuError(f"the basis records no template for kind {p.kind!r}; "
                          "--free-target concept needs a basis from `cu project-basis`")
        prompts.append(tpl.format(x=p.concept))
    return token_embeddings(pipe, prompts).T.contiguous()
