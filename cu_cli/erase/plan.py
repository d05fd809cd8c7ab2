"""``plan_erase``: a request resolved into an :class:`ErasePlan` without loading a model.

The plan holds the resolved configuration, the prompt pairs and the identity of every input —
the parent's payload hash, the base's id/arch/fingerprint, the basis's payload hash and the
contents of every prompt file — and :meth:`ErasePlan.key` hashes them: two runs with the same key
compute the same state (same seed, same device). The lineage stores the step as
``{"config", "inputs", "measured"}`` plus this key, so "does this file match the planned step?"
compares config and inputs only, never telemetry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

from cu_cli._util.errors import UsageError
from cu_cli._util.fs import check_output_path
from cu_cli._util.log import get_logger
from cu_cli.ckpt.checkpoint import BaseIdentity, check_base, open_checkpoint

log = get_logger(__name__)


@dataclass
class EraseRequest:
    concepts: list[str]
    out: str
    cfg: object = None  # EraseConfig (options given; the rest is resolved by the plan)
    base: str | None = None
    base_config: str | None = None
    parent: str | None = None
    basis: str | None = None
    anchor_prompts: list[str] | None = None
    preserve_prompts: list[str] | None = None  # --preserve FILE (cfg.preserve = "file")
    seed: int = 42
    device: str = "cpu"  # cpu | cuda[:N] | mps | auto (resolved by the plan)
    dtype: str = "fp32"  # precision of the frozen parts (models/precision.py)
    force: bool = False
    allow_base_mismatch: bool = False
    argv: list[str] | None = None
    progress: object = None  # callable(step, total, loss) or None
    phase: object = None  # callable(label, done, total): anchor images, SelFT scoring


@dataclass(frozen=True)
class ErasePlan:
    concepts: list[str]
    out: str
    config: object  # resolved EraseConfig
    pairs: list  # list[PromptPairs], one per concept
    seed: int
    device: str
    inputs: dict  # identities of everything read (see module docstring)
    base: object  # models.base.Base (resolved, not loaded)
    base_identity: BaseIdentity
    world: object  # the base's world (World) or None
    parent: str | None
    parent_header: object
    basis: str | None
    regularizers: tuple  # active regularizer classes, in prepare order
    preserve_file_prompts: list[str] | None = None
    allow_base_mismatch: bool = False
    argv: list[str] | None = None
    warnings: list[str] = field(default_factory=list)
    dtype: str = "fp32"

    def identity(self) -> dict:
        """What determines the output: op, concepts, seed, device, dtype, resolved config, inputs
        (dtype only below fp32, and options at their ``neutral`` value left out, so plans keep
        the keys they had before those options existed)."""
        from cu_cli.erase.options import identity_config

        out = {"op": "erase", "concepts": list(self.concepts), "seed": self.seed,
               "device": self.device, "config": identity_config(self.config.to_dict()),
               "inputs": self.inputs}
        if self.dtype != "fp32":
            out["dtype"] = self.dtype
        return out

    def key(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def _sha_lines(lines: list[str] | None) -> str | None:
    if lines is None:
        return None
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def plan_erase(req: EraseRequest) -> ErasePlan:
    """Resolve and check everything a request needs; reads headers and configs, loads no model."""
    from cu_cli.erase.options import EraseConfig
    from cu_cli.erase.presets import apply_preset, earlier_requests
    from cu_cli.models.base import base_for_states
    from cu_cli.world.registry import erase_presets, erase_profile, get_world

    from cu_cli.models.precision import check_dtype, resolve_device

    if not req.concepts or any(not c.strip() for c in req.concepts):
        raise UsageError("give at least one non-empty --concept")
    device, dtype = resolve_device(req.device), check_dtype(req.dtype)
    check_output_path(req.out, req.force, [req.parent, req.basis])
    parent = open_checkpoint(req.parent) if req.parent else None
    base = base_for_states([req.parent] if req.parent else [], req.base, req.base_config)
    ident = BaseIdentity(base.id, base.arch, base.fingerprint)
    warnings = check_base(parent, ident, req.allow_base_mismatch) if parent is not None else []
    world = get_world(base.world)
    given = req.cfg or EraseConfig()
    kind = given.kind or (world.infer_kind(req.concepts[0]) if world is not None else None)
    given = apply_preset(given, erase_presets(base.world), f"base {base.world or base.id}",
                         kind, earlier_requests(parent))
    cfg, pairs = _config_and_pairs(given, req, world, erase_profile(base.world))
    dropped = 0
    if parent is not None:
        from cu_cli.erase.prompts import without_erased

        erased = list(parent.json("cu.erased", []))
        for i, pair in enumerate(pairs):
            pairs[i], n = without_erased(pair, erased)
            dropped += n
    from cu_cli.erase.objectives import ERASE_OBJECTIVES
    from cu_cli.erase.regularizers import REGULARIZERS

    cfg = ERASE_OBJECTIVES[cfg.method].resolve_inputs(cfg, parent=parent)
    for reg in REGULARIZERS:
        cfg = reg.resolve_inputs(cfg, parent=parent)
    given = req.cfg or EraseConfig()
    for name in ("anchor_weight", "erased_weight"):
        if getattr(given, name, None) and not getattr(cfg, name):
            warnings.append(f"--{name.replace('_', '-')} is off for a {cfg.kind} request with "
                            "--anchor-scope auto (the holds are for object requests); pass "
                            "--anchor-scope request or chain to hold anyway")
    basis_header = None
    if req.basis:
        from cu_cli.ckpt.basis import read_basis_header

        basis_header = read_basis_header(req.basis, ident, req.allow_base_mismatch)
        warnings += _basis_warnings(basis_header, req, ident, parent)
    inputs = {"parent": parent.payload_sha256 if parent else None,
              "base": {"id": base.id, "arch": base.arch, "fingerprint": base.fingerprint},
              "basis": basis_header.payload_sha256 if basis_header else None,
              "anchor_prompts_sha256": _sha_lines(req.anchor_prompts),
              "preserve_prompts_file_sha256": _sha_lines(req.preserve_prompts)}
    if dropped:  # only then, so that the plans of chains that drop nothing keep their keys
        inputs["pairs_naming_erased_dropped"] = dropped
    plan = ErasePlan(concepts=list(req.concepts), out=req.out, config=cfg, pairs=pairs,
                     seed=req.seed, device=device, dtype=dtype, inputs=inputs, base=base,
                     base_identity=ident, world=world, parent=req.parent, parent_header=parent,
                     basis=req.basis, regularizers=(),
                     preserve_file_prompts=req.preserve_prompts,
                     allow_base_mismatch=req.allow_base_mismatch, argv=req.argv, warnings=warnings)
    regs = _active_regularizers(cfg, plan)
    ERASE_OBJECTIVES[cfg.method].check(cfg, regs)
    return replace(plan, regularizers=regs)


def _config_and_pairs(given, req: EraseRequest, world, profile: dict):
    """Resolved config and prompt pairs; an inferred kind is the first concept's."""
    from cu_cli.erase import prompts as P
    from cu_cli.erase.defaults import resolve
    from cu_cli.erase.objectives import ERASE_OBJECTIVES

    cfg = resolve(given, profile)
    need_anchor = ERASE_OBJECTIVES[cfg.method].needs.anchor_concept
    pairs = [P.build_pairs(c, cfg.kind, cfg.anchor, world, req.seed, cfg.match,
                           req.anchor_prompts, need_anchor=need_anchor,
                           caption_with=cfg.caption_with) for c in req.concepts]
    if cfg.kind is None:
        cfg = replace(cfg, kind=pairs[0].kind)
    return cfg, pairs


def _active_regularizers(cfg, plan: ErasePlan) -> tuple:
    from cu_cli.erase.regularizers import REGULARIZERS

    return tuple(r for r in REGULARIZERS if r.enabled(cfg, plan))


def _basis_warnings(bh, req, ident, parent_header=None) -> list[str]:
    """A basis built for another concept, chain or base is allowed, but never silently."""
    out = []
    target = bh.metadata.get("cu.basis.target")
    if target and target not in req.concepts:
        out.append(f"basis {req.basis} was built for {target!r}, not {', '.join(req.concepts)}")
    parent = (bh.json("cu.basis.params", {}) or {}).get("parent")
    if parent_header is not None and parent is not None:
        if parent != parent_header.payload_sha256:
            out.append(f"basis {req.basis} was built from another parent: earlier erasures of "
                       "this chain may be unprotected")
    if bh.metadata.get("cu.base.fingerprint") != ident.fingerprint:
        out.append(f"basis {req.basis} was made for another base (allowed by "
                   "--allow-base-mismatch)")
    return out
