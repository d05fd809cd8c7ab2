"""Merge cu checkpoints made from one base (method-notes §9), streaming one key at a time.

Every input must match the base's architecture and weight fingerprint (exit 3). Keys may differ
between inputs: a key absent from a checkpoint means τ = 0 there (that checkpoint equals the base
for it). The output holds the union of the inputs' keys; with ``keys`` (a regex, ``re.search``)
only matching keys are merged and written, so keys outside the filter are **left at the base**
(dropped from the output; a warning counts them).

Memory: for each key the base tensor is read with ``Base.get_tensors([key])`` and each input's
tensor with ``load_tensors(path, [key])`` (file mapped only during the read), fed lazily to the
streaming ops in ``ops/merge.py``, and the merged tensor is written straight into the output's
temporary file (``write_checkpoint_stream``: header sized first, data streamed, header with the
payload hash written last). Peak ≈ a few float64 copies of the largest key, independent of the
number of inputs and of the state's size (``benchmarks/bench_merge.py``,
``benchmarks/merge_memory.py``).

The output's lineage is one new list ``[merge step]``: ``parents`` = input payload hashes,
``params`` = the resolved method/λ/weights/densities/keys, ``inputs`` = each input's lineage;
``cu.erased`` = the union of the inputs' erased concepts, in input order.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

from cu_cli._util.errors import IncompatibleError, UsageError
from cu_cli._util.fs import check_output_path
from cu_cli.ckpt.checkpoint import BaseIdentity, check_base, open_checkpoint, write_checkpoint_stream
from cu_cli.ckpt.format import load_tensors
from cu_cli.ckpt.lineage import make_step
from cu_cli.ops.merge import MERGE_METHODS


@dataclass(frozen=True)
class MergeRequest:
    paths: tuple[str, ...]  # input checkpoints, in order
    base: object  # cu_cli.models.base.Base
    out: str  # output .safetensors path
    method: str  # a key of MERGE_METHODS
    lam: float | None = None  # λ; None: 1
    weights: tuple[float, ...] | None = None  # w_i > 0; None: 1 each
    densities: tuple[float, ...] | None = None  # d_i in (0, 1]; one value applies to all; None: 1
    keys: str | None = None  # regex restricting merged keys; None: all
    force: bool = False  # overwrite an existing output
    argv: list[str] | None = None  # recorded in the lineage; None: sys.argv


@dataclass
class MergeResult:
    path: str
    payload_sha256: str
    method: str
    inputs: list[dict]  # {path, payload_sha256, weight, density}
    erased: list[str]
    keys: int
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"path": self.path, "payload_sha256": self.payload_sha256, "method": self.method,
                "inputs": self.inputs, "erased": self.erased, "keys": self.keys}


def validate(req: MergeRequest) -> tuple[float, list[float], list[float], re.Pattern | None]:
    """Usage checks (exit 2) before any file is read: λ, weights, densities, regex."""
    n = len(req.paths)
    if n < 1:
        raise UsageError("merge needs at least one checkpoint")
    if req.method not in MERGE_METHODS:
        raise UsageError(f"unknown --method {req.method!r} (known: {', '.join(MERGE_METHODS)})")
    uses = MERGE_METHODS[req.method]["params"]
    lam = 1.0 if req.lam is None else float(req.lam)
    if lam != lam or lam in (float("inf"), float("-inf")):
        raise UsageError(f"--lambda must be finite, got {lam}")
    weights = [1.0] * n if req.weights is None else [float(w) for w in req.weights]
    if len(weights) != n:
        raise UsageError(f"{len(weights)} weights for {n} checkpoints; give one --weight per "
                         "checkpoint")
    if any(not math.isfinite(w) for w in weights):
        raise UsageError(f"weights must be finite, got {weights}")
    if any(not w > 0 for w in weights):
        raise UsageError(f"weights must be > 0, got {weights}")
    dens = [1.0] * n if req.densities is None else [float(d) for d in req.densities]
    if len(dens) == 1:
        dens = dens * n
    if len(dens) != n:
        raise UsageError(f"{len(dens)} densities for {n} checkpoints")
    for d in dens:
        if not 0 < d <= 1:
            hint = " (a fraction, not a percentage: 40 % is 0.4)" if 1 < d <= 100 else ""
            raise UsageError(f"density/top-k must be in (0, 1], got {d}{hint}")
    if "lambda" not in uses and lam != 1.0:
        raise UsageError(f"--method {req.method} takes no --lambda")
    if "density" not in uses and any(d != 1.0 for d in dens):
        raise UsageError(f"--method {req.method} takes no --density/--topk")
    pattern = None
    if req.keys is not None:
        try:
            pattern = re.compile(req.keys)
        except re.error as e:
            raise UsageError(f"--keys {req.keys!r}: invalid regular expression ({e})")
    return lam, weights, dens, pattern


def run_merge(req: MergeRequest, progress=None) -> MergeResult:
    """Merge ``req.paths`` into ``req.out``; ``progress(done, total)`` is called per key."""
    import torch

    t0 = time.time()
    lam, weights, dens, pattern = validate(req)
    out = check_output_path(req.out, req.force, list(req.paths))
    base = req.base
    ident = BaseIdentity(base.id, base.arch, base.fingerprint)
    headers = [open_checkpoint(p) for p in req.paths]
    warnings: list[str] = []
    for h in headers:
        warnings += h.warnings + check_base(h, ident)

    all_keys = sorted(set().union(*(h.tensors for h in headers)))
    keys = [k for k in all_keys if pattern is None or pattern.search(k)]
    if not keys:
        raise UsageError(f"--keys {req.keys!r} matches none of the {len(all_keys)} keys of the "
                         "inputs")
    if len(keys) < len(all_keys):
        warnings.append(f"{len(all_keys) - len(keys)} key(s) outside --keys are left at the base "
                        "(not written)")
    shapes = base.shapes()
    for h in headers:
        for k in keys:
            if k in h.tensors and tuple(h.tensors[k]["shape"]) != shapes.get(k):
                what = "has no such tensor" if k not in shapes else f"has shape {shapes[k]}"
                raise IncompatibleError(f"{h.path}: tensor {k} {tuple(h.tensors[k]['shape'])} "
                                        f"does not fit the base, which {what}")

    fn = MERGE_METHODS[req.method]["fn"]
    done = [0]

    def produce(k: str):
        ref = base.get_tensors([k])[k]
        models = (load_tensors(h.path, [k])[k] if k in h.tensors else None for h in headers)
        out_t = fn(ref, models, weights, dens, lam).to(torch.float32)
        done[0] += 1
        if progress:
            progress(done[0], len(keys))
        return out_t

    erased: list[str] = []
    for h in headers:
        for c in h.json("cu.erased", []):
            if c not in erased:
                erased.append(c)
    hashes = [h.payload_sha256 for h in headers]
    params = {"method": req.method, "lambda": lam, "weights": weights, "densities": dens,
              "keys": req.keys}
    lineages = [h.json("cu.lineage", []) for h in headers]

    def step() -> dict:
        return make_step("merge", concepts=erased, method=req.method, params=params,
                         parents=hashes, argv=req.argv, wall_seconds=time.time() - t0,
                         inputs=lineages)

    payload = write_checkpoint_stream(out, {k: shapes[k] for k in keys}, produce, ident, step,
                                      parents=headers, erased=erased, lineage_before=[])
    inputs = [{"path": h.path, "payload_sha256": s, "weight": w, "density": d}
              for h, s, w, d in zip(headers, hashes, weights, dens)]
    return MergeResult(path=out, payload_sha256=payload, method=req.method, inputs=inputs,
                       erased=erased, keys=len(keys), warnings=warnings)
