"""Evaluate states on a protocol: sample the grid, classify, compute metrics (``cu eval`` API).

Each image is seeded from (protocol seed, prompt) so images are independent of batching, order and
which other states are evaluated (resumable, unlike the reference's global RNG). Base images are
cached on disk keyed by (base fingerprint, protocol, sampler settings, prompts, seeds, device and
dtype). Images are sampled ``batch_size`` at a time (default: by resolution and device).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from cu_cli._util.errors import UsageError
from cu_cli._util.log import get_logger
from cu_cli._util.seed import derive_seed
from cu_cli._util.text import concept_key
from cu_cli.ckpt.checkpoint import BaseIdentity, check_base, open_checkpoint
from cu_cli.ckpt.format import load_tensors
from cu_cli.evaluate.metrics import compute_metrics
from cu_cli.evaluate.protocols import Protocol, default_protocol, get_protocol

log = get_logger(__name__)


@dataclass
class EvalRequest:
    states: list[str] = field(default_factory=list)  # empty = the base itself
    base: str | None = None
    base_config: str | None = None
    protocol: str | None = None
    erased: list[str] | None = None  # override every state's cu.erased
    retain: list[str] | None = None  # override the protocol's in-domain retain set
    seeds: int | None = None  # use the first N protocol seeds
    seed_shift: int = 0  # add this to every protocol seed (held-out seeds; 0 = the protocol's)
    steps: int | None = None
    guidance: float | None = None
    classifier: str | None = None
    prompt_variant: str = "benchmark"
    cra_scope: str = "all"
    include_base: bool = False
    allow_base_mismatch: bool = False
    device: str = "cpu"  # cpu | cuda[:N] | mps | auto
    dtype: str = "fp32"  # precision of the frozen parts (models/precision.py)
    batch_size: int | None = None  # None: Pipeline.default_batch_size (by resolution, device)
    keep_images: bool = False  # keep images in memory for --grid
    progress: object = None  # callable(n_done_increment, total)


def _cache_dir() -> str:
    from cu_cli._util.fs import cache_root

    return os.path.join(cache_root(), "eval")


@dataclass
class EvalResult:
    """What ``cu eval`` measured; ``to_json()`` is the ``--json`` object (without the retention
    matrix and pictures, which evaluate/report.py adds). The loaded session, protocol and images
    stay available for pictures and similarity, never in the JSON."""

    protocol: str
    base: str
    classifier: str
    settings: dict
    states: list
    warnings: list
    seconds: float
    proto: Protocol = None
    session: object = None
    fingerprint: str = ""
    images: dict = field(default_factory=dict)  # state path -> (grid, uint8 images)

    @property
    def pipe(self):
        return self.session.pipe

    def to_json(self) -> dict:
        return {"protocol": self.protocol, "base": self.base, "classifier": self.classifier,
                "settings": self.settings, "states": self.states, "warnings": self.warnings,
                "seconds": self.seconds}


def _own_domain(proto: Protocol, erased: list[str]) -> tuple[list[str], list[str]]:
    """(erased concepts of the protocol's domain, those of its cross domain); any other name is
    kept, so that ``proto.match`` rejects it (exit 2)."""
    cross = {concept_key(c) for c in (proto.objects if proto.domain == "style" else proto.styles)}
    own = {concept_key(c) for c in proto.in_domain}
    other = [c for c in erased if concept_key(c) in cross and concept_key(c) not in own]
    return [c for c in erased if c not in other], other


def run_eval(req: EvalRequest) -> EvalResult:
    from cu_cli.models.base import base_for_states
    from cu_cli.models.precision import check_dtype, resolve_device
    from cu_cli.models.session import ModelSession
    from cu_cli.world.registry import get_world

    t0 = time.time()
    device, dtype = resolve_device(req.device), check_dtype(req.dtype)
    base = base_for_states(req.states, req.base, req.base_config)
    ident = BaseIdentity(base.id, base.arch, base.fingerprint)
    headers = [open_checkpoint(p) for p in req.states]
    warnings = []
    for h in headers:
        warnings += h.warnings + check_base(h, ident, req.allow_base_mismatch)
    erased_lists = [list(req.erased) if req.erased is not None else h.json("cu.erased", [])
                    for h in headers]
    all_erased = [c for e in erased_lists for c in e]
    name = req.protocol or default_protocol(get_world(base.world), req.erased or all_erased)
    proto = _override(get_protocol(name, req.prompt_variant), req)
    if req.erased is None:  # a state of a mixed stream: the protocol scores its own domain
        split = [_own_domain(proto, e) for e in erased_lists]
        erased_lists, dropped = [own for own, _ in split], [other for _, other in split]
        warnings += [f"{h.path}: erased {', '.join(map(repr, d))} not scored by protocol "
                     f"{proto.name} (a {'object' if proto.domain == 'style' else 'style'}; "
                     f"evaluate it with that domain's protocol)"
                     for h, d in zip(headers, dropped) if d]
    given = list(erased_lists)
    erased_lists = [proto.match(e, "--erased" if req.erased is not None else
                                f"{h.path}: erased concept") for e, h in zip(erased_lists, headers)]
    req_erased = proto.match(req.erased, "--erased") if req.erased else req.erased
    renamed = {a: b for e, m in zip(given + [req.erased or []], erased_lists + [req_erased or []])
               for a, b in zip(e, m) if a != b}
    warnings += [f"concept {a!r} is spelled {b!r} in protocol {proto.name}"
                 for a, b in renamed.items()]
    all_erased = [c for e in erased_lists for c in e]
    session = ModelSession(base, device, dtype)
    spec = req.classifier or proto.classifier
    classifiers = _classifiers(spec, proto, device)
    targets: list[tuple[str | None, list[str]]] = []
    if req.include_base or not req.states:  # the base is scored on every concept the states erased
        targets.append((None, list(req_erased or dict.fromkeys(all_erased))))
    targets += [(h.path, e) for h, e in zip(headers, erased_lists)]
    result = EvalResult(
        protocol=proto.name, base=base.id, classifier=spec,
        settings={"steps": proto.steps, "guidance": proto.guidance, "seeds": list(proto.seeds),
                  "template": proto.template, "device": device, "dtype": dtype},
        states=[], warnings=warnings, seconds=0.0, proto=proto, session=session,
        fingerprint=base.fingerprint)
    for path, erased in targets:
        tensors = load_tensors(path) if path is not None else {}
        with session.state(tensors, source=path or "base"):
            result.states.append(_score_state(result, path, erased, classifiers, req))
    result.seconds = round(time.time() - t0, 2)
    return result


def _classifiers(spec: str, proto: Protocol, device: str) -> tuple:
    """(in-domain, cross-domain) image classifiers of the protocol's concept lists."""
    from cu_cli.models.classifiers import load_image_classifier

    cross_domain = "object" if proto.domain == "style" else "style"
    clf_in = load_image_classifier(spec, proto.domain, list(proto.in_domain), device)
    clf_cross = load_image_classifier(
        spec, cross_domain, list(proto.objects if proto.domain == "style" else proto.styles),
        device)
    return clf_in, clf_cross


def _score_state(result: EvalResult, path, erased: list[str], classifiers, req) -> dict:
    """Sample the protocol grid with the weights now applied, classify, compute metrics."""
    ts = time.time()
    proto, pipe = result.proto, result.pipe
    clf_in, clf_cross = classifiers
    grid = proto.grid(erased)
    prompts = [proto.prompt(c, o) for c, o, _ in grid]
    seeds = [derive_seed(s, p) for (_, _, s), p in zip(grid, prompts)]
    if path is None:
        imgs = _cached_base_images(pipe, result.fingerprint, proto, prompts, seeds, req)
    else:
        imgs = pipe.sample(prompts, seeds, steps=proto.steps, guidance=proto.guidance,
                           batch_size=req.batch_size, progress=req.progress)
    pred_in, pred_cross = clf_in.predict(imgs), clf_cross.predict(imgs)
    rows = [{"concept": c, "other": o, "ok_primary": clf_in.classes[pi] == c,
             "ok_secondary": clf_cross.classes[pc] == o}
            for (c, o, _), pi, pc in zip(grid, pred_in, pred_cross)]
    metrics = compute_metrics(rows, erased, list(proto.retain_in), list(proto.retain_cross),
                              req.cra_scope)
    if req.keep_images:
        result.images[path] = (grid, imgs)
    return {"path": path, "erased": erased, "metrics": metrics, "images": len(imgs),
            "seconds": round(time.time() - ts, 2)}


def _override(proto: Protocol, req: EvalRequest) -> Protocol:
    from dataclasses import replace

    kw = {}
    if req.seeds is not None:
        if not 1 <= req.seeds <= len(proto.seeds):
            raise UsageError(f"--seeds must be 1..{len(proto.seeds)} for {proto.name}")
        kw["seeds"] = proto.seeds[:req.seeds]
    if req.seed_shift:
        kw["seeds"] = tuple(s + req.seed_shift for s in kw.get("seeds", proto.seeds))
    if req.steps is not None:
        kw["steps"] = req.steps
    if req.guidance is not None:
        kw["guidance"] = req.guidance
    if req.retain is not None:
        kw["retain_in"] = tuple(dict.fromkeys(proto.match(req.retain, "--retain")))
    return replace(proto, **kw) if kw else proto


def _cached_base_images(pipe, fingerprint: str, proto: Protocol, prompts, seeds, req) -> np.ndarray:
    from safetensors.numpy import load_file, save_file

    from cu_cli._util.fs import atomic_path

    key = hashlib.sha256(json.dumps({"base": fingerprint, "protocol": proto.name,
                                     "steps": proto.steps, "guidance": proto.guidance,
                                     "prompts": prompts, "seeds": seeds,
                                     "device": pipe.device.type, "dtype": pipe.dtype}
                                    ).encode()).hexdigest()[:32]
    path = os.path.join(_cache_dir(), f"{key}.safetensors")
    if os.path.exists(path):
        try:
            imgs = load_file(path)["images"]
            if req.progress:
                req.progress(len(imgs))
            return imgs
        except Exception:
            log.warning("base image cache %s unreadable; regenerating", path)
    imgs = pipe.sample(prompts, seeds, steps=proto.steps, guidance=proto.guidance,
                       batch_size=req.batch_size, progress=req.progress)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"images": np.ascontiguousarray(imgs)}, tmp)
    return imgs


def base_images_for(result: EvalResult, grid, req: EvalRequest) -> np.ndarray:
    """Base images of a state's grid (cached), for side-by-side pictures and similarity."""
    pipe, proto, fingerprint = result.pipe, result.proto, result.fingerprint
    prompts = [proto.prompt(c, o) for c, o, _ in grid]
    seeds = [derive_seed(s, p) for (_, _, s), p in zip(grid, prompts)]
    return _cached_base_images(pipe, fingerprint, proto, prompts, seeds, req)
