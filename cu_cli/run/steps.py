"""A study expanded into steps: which erase (and merge) produces each state, where it is stored.

Pure: no model, no file read. Step k (1-based) writes ``DIR/steps/NN-<concept>.safetensors``; in
the independent setting state k is ``DIR/merged/NN.safetensors`` (the merge of steps 1..k; state 1
is step 1 itself); with ``project_basis`` a basis ``DIR/bases/NN-<concept>.safetensors`` is built
from each step's parent first.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    k: int
    label: str  # the concept of request k
    concepts: tuple[str, ...]  # erased by this step's erase call
    kind: str | None
    anchor: str | None
    parent: str | None  # parent state path (None: from the base)
    out: str  # this step's erase output
    basis: str | None  # basis file to build and use (projection), or None
    merge_inputs: tuple[str, ...]  # independent, k >= 2: the erase outputs merged into ``state``
    state: str  # the state measured after step k


def slug(text: str) -> str:
    """A file-name-safe form of a concept (no hyperparameters in names: conventions §2)."""
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s[:40] or "concept"


def expand(study, out_dir: str) -> list[Step]:
    steps, outs = [], []
    prev = None
    for i, req in enumerate(study.requests):
        k = i + 1
        out = os.path.join(out_dir, "steps", f"{k:02d}-{slug(req.concept)}.safetensors")
        if study.setting == "simultaneous":
            concepts = tuple(r.concept for r in study.requests[:k])
        else:
            concepts = (req.concept,)
        parent = prev if study.setting == "sequential" else None
        basis = (os.path.join(out_dir, "bases", f"{k:02d}-{slug(req.concept)}.safetensors")
                 if study.project_basis is not None else None)
        outs.append(out)
        merged = study.setting == "independent" and k >= 2
        state = os.path.join(out_dir, "merged", f"{k:02d}.safetensors") if merged else out
        steps.append(Step(k=k, label=req.concept, concepts=concepts, kind=req.kind,
                          anchor=req.anchor, parent=parent, out=out, basis=basis,
                          merge_inputs=tuple(outs) if merged else (), state=state))
        prev = out
    return steps
