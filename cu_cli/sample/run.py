"""Sample states of one base for prompts × seeds (``cu sample`` API).

Rows are the base (with ``with_base``) then each state in order; columns are prompts × seeds. The
image for prompt p and the k-th seed starts from ``torch.Generator().manual_seed(seed + k)``, drawn
for that image alone and sampled in a batch of one, so it equals what diffusers'
``StableDiffusionPipeline(prompt=p, generator=torch.Generator().manual_seed(seed + k),
num_inference_steps=steps, guidance_scale=guidance)`` gives on a ``cu export diffusers`` folder of
the same state (DDIM, η = 0, classifier-free guidance with the empty negative prompt; tested on
MiniCanvas). Each state is applied to one loaded pipeline and restored afterwards
(``models/session.py``).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from cu_cli._util.errors import UsageError
from cu_cli.ckpt.checkpoint import BaseIdentity, check_base, open_checkpoint
from cu_cli.ckpt.format import load_tensors

MAX_IMAGES = 4096


@dataclass
class SampleRequest:
    prompts: list[str]
    states: list[str] = field(default_factory=list)
    base: str | None = None
    base_config: str | None = None
    seed: int = 0  # image k of a prompt uses seed + k
    n: int = 1  # images (seeds) per prompt
    steps: int = 25
    guidance: float = 7.5
    negative: str = ""
    with_base: bool = False  # base as the first row (always when no state is given)
    out: str | None = None  # grid PNG
    out_dir: str | None = None  # single PNGs
    force: bool = False
    allow_base_mismatch: bool = False
    device: str = "cpu"
    progress: object = None  # callable(n_images_done_increment)


@dataclass
class SampleResult:
    paths: list[str]
    rows: list[dict]  # {label, path, payload_sha256, erased}
    settings: dict
    warnings: list[str]
    seconds: float
    images: list = field(default_factory=list)  # per row: list of uint8 HxWx3 arrays

    def as_json(self) -> dict:
        return {"paths": self.paths, "rows": self.rows, "settings": self.settings,
                "warnings": self.warnings, "seconds": self.seconds}


def validate(req: SampleRequest) -> None:
    if not req.prompts:
        raise UsageError("give at least one --prompt")
    if req.out is None and req.out_dir is None:
        raise UsageError("give -o GRID.png or --out-dir DIR")
    if req.n < 1 or req.steps < 1:
        raise UsageError("--n and --steps must be >= 1")
    if req.seed < 0 or req.seed + req.n > 2 ** 63:
        raise UsageError(f"--seed must be in [0, 2^63 - n), got {req.seed}")
    rows = len(req.states) + (1 if req.with_base or not req.states else 0)
    if rows * len(req.prompts) * req.n > MAX_IMAGES:
        raise UsageError(f"{rows * len(req.prompts) * req.n} images requested (limit {MAX_IMAGES})")


def file_name(row: int, label: str, prompt_index: int, seed: int) -> str:
    """``<row>-<label>_p<prompt>_s<seed>.png`` (label reduced to [A-Za-z0-9_-])."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-")[:40] or "state"
    return f"{row:02d}-{stem}_p{prompt_index:02d}_s{seed}.png"


def planned_outputs(req: SampleRequest) -> list[str]:
    """Every file the request writes (checked before any work)."""
    out = [req.out] if req.out else []
    if req.out_dir:
        for i, label in enumerate(row_labels(req)):
            for p in range(len(req.prompts)):
                for k in range(req.n):
                    out.append(os.path.join(req.out_dir, file_name(i, label, p, req.seed + k)))
    return out


def row_labels(req: SampleRequest) -> list[str]:
    labels = ["base"] if req.with_base or not req.states else []
    return labels + [os.path.splitext(os.path.basename(s))[0] for s in req.states]


def run_sample(req: SampleRequest) -> SampleResult:
    from cu_cli.models.base import base_for_states
    from cu_cli.models.session import ModelSession
    from cu_cli.sample.grid import save_grid, save_png

    t0 = time.time()
    validate(req)
    base = base_for_states(req.states, req.base, req.base_config)
    ident = BaseIdentity(base.id, base.arch, base.fingerprint)
    headers = [open_checkpoint(p) for p in req.states]
    warnings: list[str] = []
    for h in headers:
        warnings += h.warnings + check_base(h, ident, req.allow_base_mismatch)
    session = ModelSession(base, req.device)
    labels = row_labels(req)
    targets = ([None] if len(labels) > len(headers) else []) + headers
    seeds = [req.seed + k for k in range(req.n)]
    rows, images, paths = [], [], []
    for i, (label, h) in enumerate(zip(labels, targets)):
        tensors = load_tensors(h.path) if h is not None else {}
        row_imgs = []
        with session.state(tensors, source=h.path if h else "base") as pipe:
            for p in req.prompts:
                for s in seeds:
                    img = pipe.sample([p], [s], steps=req.steps, guidance=req.guidance,
                                      batch_size=1, negative=req.negative)[0]
                    row_imgs.append(img)
                    if req.progress:
                        req.progress(1)
        payload = h.payload_sha256 if h else None
        erased = h.json("cu.erased", []) if h else []
        rows.append({"label": label, "path": h.path if h else None, "payload_sha256": payload,
                     "erased": erased})
        images.append(row_imgs)
        if req.out_dir:
            for j, img in enumerate(row_imgs):
                p_idx, k = divmod(j, req.n)
                path = os.path.join(req.out_dir, file_name(i, label, p_idx, seeds[k]))
                save_png(img, path, {
                    "prompt": req.prompts[p_idx], "negative_prompt": req.negative,
                    "seed": str(seeds[k]), "steps": str(req.steps),
                    "guidance": repr(float(req.guidance)), "scheduler": "DDIM (eta 0)",
                    "base": base.id, "base_fingerprint": base.fingerprint,
                    "cu.state": h.path if h else "base",
                    "cu.lineage_hash": payload or "base", "cu.erased": ", ".join(erased),
                    "Software": "cu sample"})
                paths.append(os.path.abspath(path))
    if req.out:
        cols = [f"{p}\nseed {s}" for p in req.prompts for s in seeds]
        save_grid([(f"{lab}" + (f" (erased: {', '.join(r['erased'])})" if r["erased"] else ""),
                    imgs) for lab, r, imgs in zip(labels, rows, images)], cols, req.out)
        paths.insert(0, os.path.abspath(req.out))
    settings = {"prompts": list(req.prompts), "seeds": seeds, "steps": req.steps,
                "guidance": req.guidance, "negative": req.negative, "scheduler": "ddim",
                "base": base.id}
    return SampleResult(paths=paths, rows=rows, settings=settings, warnings=warnings,
                        seconds=round(time.time() - t0, 2), images=images)
