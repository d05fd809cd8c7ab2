"""``cu project-basis``'s Python API: build the protected embedding matrix C (method-notes §7).

Order: resolve the base (from the parent's header with ``--from``, fingerprint-checked), collect
candidates (vocabulary + aux files, target filtered out; §7.1), embed every prompt token-level
(§7.2, ``models/text.py``), then, by cosine to the target's concept embedding:

1. drop near-synonyms, candidates with cosine >= ``aux_max_sim`` (``--aux-max-sim``, default
   0.95: the reference's own de-dup cosine, i.e. a candidate the de-dup would treat as the same
   direction as the target; its K/V directions overlap the target's, so protecting it would
   suppress the erasure itself), and those below ``--min-sim`` (no floor by default);
2. keep the top M split evenly between domains (:func:`split_top_m`): each of the d domains that
   still has candidates gets floor(M/d) or ceil(M/d) slots (the M mod d extra slots go to the
   domains whose next candidate is most similar), a domain with fewer candidates than its slots
   leaves them to the next most similar candidates overall, so min(M, candidates) are kept. The
   domain is the candidate's: style / object / celebrity for the vocabulary, ``--kind``'s for a
   named ``--aux-file`` line (it is templated as that kind), and "prompt" for a full-prompt aux
   line (its domain is unknown);
3. put the parent's erased concepts first (never filtered by similarity, so the new update does
   not undo earlier erasures, as the reference inserts them first), the kept candidates after them
   by decreasing similarity, de-duplicate greedily (column 0 kept, a column kept only if its max
   cosine to the kept set is < ``dedup``) and write C (d × n) atomically.

The projector itself is built by ``erase --basis`` (§7.3, ``ops/projection.py``). Everything is a
pure function of the inputs (ties broken by prompt), so the same inputs give the same payload hash.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

from cu_cli._util.errors import CuError, UsageError
from cu_cli._util.fs import check_output_path
from cu_cli._util.log import get_logger
from cu_cli.basis import vocab as V
from cu_cli.ckpt.checkpoint import BaseIdentity, check_base, open_checkpoint

log = get_logger(__name__)

AUX_MAX_SIM = 0.95  # = the reference's de-dup cosine: "the same direction as the target"


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
    top_m: int = 200  # reference: 200 LLM prompts per request, split between domains
    dedup: float = 0.95  # reference de-dup cosine
    min_sim: float | None = None  # no similarity floor by default (the reference has none)
    aux_max_sim: float | None = None  # near-synonym ceiling; None: 0.95, off on the minicanvas
    # vocabulary (its concepts are distinct by construction and its 64-d encoder puts ordinary
    # neighbours above 0.95; never applied to erased concepts)
    include_erased: bool = True
    device: str = "cpu"  # resolved (auto → cuda when present)
    dtype: str = "fp32"  # precision of the text encoders (models/precision.py)
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
    from cu_cli.ckpt.basis import write_basis
    from cu_cli.models.base import base_for_states
    from cu_cli.models.text import EXTRACTION, token_embeddings

    t0 = time.time()
    target = (req.target or "").strip()
    if not target:
        raise UsageError("give a non-empty --concept")
    if req.top_m < 1:
        raise UsageError("--top-m must be at least 1")
    if req.aux_max_sim is not None and not math.isfinite(req.aux_max_sim):
        raise UsageError("--aux-max-sim must be a number (values above 1 disable the ceiling)")
    if req.kind is not None and req.kind not in V.KINDS:
        raise UsageError(f"--kind {req.kind!r}: choose one of {', '.join(V.KINDS)}")
    check_output_path(req.out, req.force, [req.parent, *req.aux_files])
    parent = open_checkpoint(req.parent) if req.parent else None
    base = base_for_states([req.parent] if req.parent else [], req.base, req.base_config)
    ident = BaseIdentity(base.id, base.arch, base.fingerprint)
    if parent is not None:
        check_base(parent, ident)
    from cu_cli.world.registry import WORLDS, get_world

    base_world = get_world(base.world)
    vocab = req.vocab or (base_world.basis_vocab if base_world else "builtin")
    if vocab not in V.VOCABS:
        raise UsageError(f"--vocab {vocab!r}: choose one of {', '.join(V.VOCABS)}")
    if base_world is not None and vocab == "builtin":
        raise UsageError(f"--vocab builtin on the {base_world.name} base: its candidates must be "
                         f"{base_world.name} concepts (use --vocab {base_world.basis_vocab} or none)")
    world = base_world or (get_world(vocab) if vocab in WORLDS else None)
    if req.aux_max_sim is None:
        from dataclasses import replace

        own = world is not None and vocab == world.basis_vocab
        req = replace(req, aux_max_sim=world.basis_max_sim if own else AUX_MAX_SIM)
    kind = req.kind or V.infer_kind(target, world)
    if kind is None:
        raise UsageError(f"--kind is required for {target!r} (style, object or celebrity)")

    erased, candidates, aux_info = _candidates(req, target, kind, vocab, world, parent,
                                               strict_world=base_world is not None)
    every = erased + candidates
    from cu_cli.models.precision import check_dtype, resolve_device

    pipe = base.load_pipeline(resolve_device(req.device), check_dtype(req.dtype))
    t_vec = token_embeddings(pipe, [V.TEMPLATES[kind].format(x=target)])[0]
    E = token_embeddings(pipe, [c.prompt for c in every])
    sims = concept_similarities(E, t_vec)
    n_e = len(erased)
    ranked = sorted(range(n_e, len(every)), key=lambda i: (-sims[i], every[i].prompt))
    near = [i for i in ranked if sims[i] >= req.aux_max_sim]
    if near:
        log.info("dropped %d near-synonym(s) of %r (cosine >= %s): %s", len(near), target,
                 req.aux_max_sim, ", ".join(repr(every[i].concept) for i in near[:5])
                 + (", ..." if len(near) > 5 else ""))
    ranked = [i for i in ranked if sims[i] < req.aux_max_sim]
    n_floor = 0
    if req.min_sim is not None:
        n_floor = sum(sims[i] < req.min_sim for i in ranked)
        ranked = [i for i in ranked if sims[i] >= req.min_sim]
    kept = [ranked[p] for p in split_top_m([every[i].domain for i in ranked], req.top_m)]
    order = list(range(n_e)) + kept
    if not order:
        floor = f"--min-sim {req.min_sim}" if req.min_sim is not None else "-1"
        raise CuError(f"no candidate for {target!r} has a cosine in [{floor}, --aux-max-sim "
                      f"{req.aux_max_sim}) ({len(near)} near-synonym(s) dropped, {n_floor} below "
                      "--min-sim)", hint="raise --aux-max-sim or lower --min-sim")
    domains: dict[str, dict[str, int]] = {}
    for i in ranked:
        domains.setdefault(every[i].domain, {"candidates": 0, "kept": 0})["candidates"] += 1
    for i in kept:
        domains[every[i].domain]["kept"] += 1
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
            "aux_max_sim": req.aux_max_sim, "include_erased": req.include_erased,
            "templates": V.TEMPLATES, "aux_files": aux_info,
            "parent": parent.payload_sha256 if parent else None, "candidates": len(candidates),
            "near_synonyms_dropped": len(near), "min_sim_dropped": n_floor,
            "domains": dict(sorted(domains.items())),
            "erased": n_e, "ranked_kept": len(kept), "dedup_dropped": len(order) - len(cols)},
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
    if strict_world:  # on a world base every named candidate must be a world concept
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


def concept_similarities(E, t_vec) -> list[float]:
    """Cosine of each row of E (candidate concept embeddings) to the target's, as floats."""
    import torch

    return torch.nn.functional.cosine_similarity(E, t_vec[None], dim=1).tolist()


def split_top_m(domains: list[str], m: int) -> list[int]:
    """Positions kept from a similarity-ranked list whose entries have these ``domains``: the top
    M split evenly between the d domains present. Each domain gets floor(M/d) slots and the M mod d
    extra slots (up to ceil(M/d) each) go to the domains whose next entry ranks highest; slots a
    domain cannot fill go to the next entries overall. Returns min(M, len) positions, ascending."""
    by: dict[str, list[int]] = {}
    for p, d in enumerate(domains):
        by.setdefault(d, []).append(p)
    if not by:
        return []
    slots, extra = divmod(m, len(by))
    nxt = sorted(by, key=lambda d: by[d][slots] if len(by[d]) > slots else len(domains))
    quota = {d: slots + (d in nxt[:extra]) for d in by}
    kept = {p for d, ps in by.items() for p in ps[:quota[d]]}
    for p in range(len(domains)):
        if len(kept) >= m:
            break
        kept.add(p)
    return sorted(kept)


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
    from cu_cli.ckpt.lineage import step_config, step_measured

    kinds: dict[str, str] = {}
    for step in parent.json("cu.lineage", []):
        params = {**step_config(step), **step_measured(step)}  # kinds: measured (old: params)
        for c, k in zip(step.get("concepts") or [], params.get("kinds") or []):
            if k in V.KINDS:
                kinds[c] = k
    out = []
    for c in parent.json("cu.erased", []):
        k = kinds.get(c) or V.infer_kind(c, world) or kind
        out.append(V.Candidate(c, V.TEMPLATES[k].format(x=c), k, "erased"))
    return V.unique(out)
