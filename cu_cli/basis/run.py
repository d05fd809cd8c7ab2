"""``cu project-basis``'s Python API: build the protected embedding matrix C (method-notes §7).

Order: resolve the base (from the parent's header with ``--from``, fingerprint-checked), collect
candidates (vocabulary + aux files, target filtered out; §7.1), embed every prompt token-level
(§7.2, ``models/text.py``), rank by cosine to the target's concept embedding and keep the top M at
or above ``--min-sim``, put the parent's erased concepts first (so the new update does not undo
earlier erasures, as the reference inserts them first), de-duplicate greedily (column 0 kept, a
column kept only if its max cosine to the kept set is < ``dedup``) and write C (d × n) atomically.
The projector itself is built by ``erase --basis`` (§7.3, ``ops/projection.py``). Everything is a
pure function of the inputs, so the same inputs give the same payload hash.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from cu_cli._util.errors import CuError, UsageError
from cu_cli._util.fs import check_output_path
from cu_cli._util.log import get_logger
from cu_cli.basis import vocab as V
from cu_cli.ckpt.checkpoint import BaseIdentity, check_base, open_checkpoint

log = get_logger(__name__)


@dataclass
class BasisRequest:
    target: str
    out: str
    kind: str | None = None  # style | object | celebrity (inferred from the vocabulary if known)
    base: str | None = None
    base_config: str | None = None
    parent: str | None = None  # its cu.erased concepts are inserted first
    aux_files: list[str] = field(default_factory=list)
    vocab: str | None = None  # builtin | minicanvas | none (default: minicanvas on that base)
    top_m: int = 200  # reference: 200 LLM prompts per request; MiniCanvas has 31, all kept
    dedup: float = 0.95  # reference de-dup cosine
    min_sim: float | None = None  # no similarity floor by default (the reference has none)
    include_erased: bool = True
    device: str = "cpu"
    force: bool = False


@dataclass
class BasisResult:
    path: str
    payload_sha256: str
    target: str
    kind: str
    shape: list[int]
    columns: list[dict]  # column order: {concept, prompt, similarity, erased}
    wall_seconds: float


def run_basis(req: BasisRequest) -> BasisResult:
    import torch

    from cu_cli.ckpt.basis import write_basis
    from cu_cli.models.base import base_for_states
    from cu_cli.models.text import EXTRACTION, token_embeddings

    t0 = time.time()
    target = (req.target or "").strip()
    if not target:
        raise UsageError("give a non-empty --concept")
    if req.top_m < 1:
        raise UsageError("--top-m must be at least 1")
    if req.kind is not None and req.kind not in V.KINDS:
        raise UsageError(f"--kind {req.kind!r}: choose one of {', '.join(V.KINDS)}")
    check_output_path(req.out, req.force, [req.parent, *req.aux_files])
    parent = open_checkpoint(req.parent) if req.parent else None
    base = base_for_states([req.parent] if req.parent else [], req.base, req.base_config)
    ident = BaseIdentity(base.id, base.arch, base.fingerprint)
    if parent is not None:
        check_base(parent, ident)
    vocab = req.vocab or ("minicanvas" if base.world == "minicanvas" else "builtin")
    if vocab not in V.VOCABS:
        raise UsageError(f"--vocab {vocab!r}: choose one of {', '.join(V.VOCABS)}")
    if base.world == "minicanvas" and vocab == "builtin":
        raise UsageError("--vocab builtin on the MiniCanvas base: its candidates must be MiniCanvas "
                         "concepts (use --vocab minicanvas or none)")
    world = None
    if base.world == "minicanvas" or vocab == "minicanvas":
        from cu_cli.world.minicanvas import load_world

        world = load_world()
    kind = req.kind or V.infer_kind(target, world)
    if kind is None:
        raise UsageError(f"--kind is required for {target!r} (style, object or celebrity)")

    erased, candidates, aux_info = _candidates(req, target, kind, vocab, world, parent,
                                               strict_world=base.world == "minicanvas")
    every = erased + candidates
    pipe = base.load_pipeline(req.device)
    t_vec = token_embeddings(pipe, [V.TEMPLATES[kind].format(x=target)])[0]
    E = token_embeddings(pipe, [c.prompt for c in every])
    sims = torch.nn.functional.cosine_similarity(E, t_vec[None], dim=1).tolist()
    n_e = len(erased)
    ranked = sorted(range(n_e, len(every)), key=lambda i: (-sims[i], every[i].prompt))
    if req.min_sim is not None:
        ranked = [i for i in ranked if sims[i] >= req.min_sim]
    order = list(range(n_e)) + ranked[:req.top_m]
    if not order:
        raise CuError(f"no candidate reaches --min-sim {req.min_sim} for {target!r}",
                      hint="lower --min-sim")
    cols = [order[k] for k in greedy_dedup(E[order], req.dedup)]
    columns = [{"concept": every[i].concept, "prompt": every[i].prompt,
                "similarity": round(sims[i], 6), "erased": i < n_e} for i in cols]
    C = E[cols].T.contiguous()
    meta = {
        "cu.basis.target": target,
        "cu.basis.concepts": [c["concept"] for c in columns],
        "cu.basis.prompts": [c["prompt"] for c in columns],
        "cu.basis.similarities": [{k: c[k] for k in ("concept", "similarity", "erased")}
                                  for c in columns],
        "cu.basis.dedup_cos": str(req.dedup),
        "cu.basis.extraction": EXTRACTION,
        "cu.basis.params": {
            "kind": kind, "vocab": vocab, "top_m": req.top_m, "min_sim": req.min_sim,
            "include_erased": req.include_erased, "templates": V.TEMPLATES, "aux_files": aux_info,
            "parent": parent.payload_sha256 if parent else None, "candidates": len(candidates),
            "erased": n_e, "ranked_kept": len(order) - n_e, "dedup_dropped": len(order) - len(cols)},
    }
    payload = write_basis(req.out, C, ident, meta)
    log.info("basis for %r: %d candidates, %d erased first, %d columns after de-dup (d=%d)",
             target, len(candidates), n_e, len(cols), C.shape[0])
    return BasisResult(path=req.out, payload_sha256=payload, target=target, kind=kind,
                       shape=list(C.shape), columns=columns, wall_seconds=time.time() - t0)


def _candidates(req: BasisRequest, target: str, kind: str, vocab: str, world, parent,
                strict_world: bool):
    """(erased first, ranked candidates, aux file info) after the target filter (§7.1)."""
    aux_lines, aux_info = [], []
    for path in req.aux_files:
        lines, sha = V.read_aux_file(path)
        aux_lines += lines
        aux_info.append({"file": os.path.basename(path), "sha256": sha, "lines": len(lines)})
    aux = V.aux_candidates(aux_lines, kind)
    if strict_world:  # on MiniCanvas every named candidate must be a world concept
        bad = [c.concept for c in aux if c.domain != "prompt" and V.infer_kind(c.concept, world) is None]
        if bad:
            raise UsageError(f"--aux-file: {bad[0]!r} is not a MiniCanvas concept")
    erased = []
    if parent is not None and req.include_erased:
        for c in _erased_candidates(parent, kind, world):
            if V.excluded(c, target, kind):
                log.warning("erased concept %r contains the target %r; not protected", c.concept,
                            target)
            else:
                erased.append(c)
    taken = {V.prompt_key(c.prompt) for c in erased}
    pool = V.unique(V.vocab_candidates(vocab, world) + aux)
    candidates = [c for c in pool
                  if not V.excluded(c, target, kind) and V.prompt_key(c.prompt) not in taken]
    if not candidates and not erased:
        raise CuError(f"no auxiliary concepts left for {target!r} (vocabulary {vocab!r}, "
                      f"{len(aux_lines)} aux lines; candidates containing the target are dropped)",
                      hint="add concepts with --aux-file or use --vocab builtin")
    return erased, candidates, aux_info


def greedy_dedup(E, threshold: float) -> list[int]:
    """Row indices kept: row 0, then each row whose max cosine to the kept rows is < threshold."""
    import torch

    U = torch.nn.functional.normalize(E.double(), dim=1)
    kept: list[int] = []
    for j in range(U.shape[0]):
        if not kept or float((U[kept] @ U[j]).max()) < threshold:
            kept.append(j)
    return kept


def _erased_candidates(parent, kind: str, world) -> list[V.Candidate]:
    """The parent's ``cu.erased`` concepts, templated by the kind each was erased as (lineage),
    else by world/vocabulary membership, else by the current ``kind``."""
    kinds: dict[str, str] = {}
    for step in parent.json("cu.lineage", []):
        params = step.get("params") or {}
        for c, k in zip(step.get("concepts") or [], params.get("kinds") or []):
            if k in V.KINDS:
                kinds[c] = k
    out = []
    for c in parent.json("cu.erased", []):
        k = kinds.get(c) or V.infer_kind(c, world) or kind
        out.append(V.Candidate(c, V.TEMPLATES[k].format(x=c), k, "erased"))
    return V.unique(out)
