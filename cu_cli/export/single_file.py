"""``cu export single-file``: base + state as one original-layout (CompVis/LDM) ``.safetensors``.

Every UNet, VAE and text-encoder tensor of the base, the state's values overlaid, renamed with the
tables of ``ckpt/compvis.py`` (diffusers' ``convert_diffusers_to_original_stable_diffusion.py``,
generalised to any SD-topology config): ``model.diffusion_model.*``, ``first_stage_model.*`` (VAE
mid-block attention as 1×1 convolutions), ``cond_stage_model.transformer.text_model.*``. The file
is what AUTOMATIC1111, ComfyUI and Forge load for SD1.x, and what
``StableDiffusionPipeline.from_single_file(F, config=BASE_DIR, local_files_only=True)`` reloads
(tested bit for bit on UNet, VAE and text encoder). Header: ModelSpec (``modelspec.hash_sha256`` =
``0x`` + data-section sha256) and the state's ``cu.*`` lineage (``cu.kind`` = ``export``).

SDXL bases get the original SGM layout (Stability-AI/generative-models, what A1111/ComfyUI load for
SDXL): the same UNet/VAE tables plus ``label_emb.0.*`` (the ``text_time`` added embedding), text
encoder 1 as ``conditioner.embedders.0.transformer.text_model.*`` (HF CLIP), text encoder 2 as
``conditioner.embedders.1.model.*`` (OpenCLIP: fused q/k/v ``in_proj``, transposed
``text_projection``); ``StableDiffusionXLPipeline.from_single_file`` reloads it bit for bit.

Tensors keep the base's dtype (a state value is rounded to it, with a warning when that changes
it). SD2 files use the HF CLIP text-encoder layout (diffusers reads it; A1111/ComfyUI expect
OpenCLIP for SD2).
"""

from __future__ import annotations

import json
import os

from cu_cli._util.errors import IncompatibleError
from cu_cli._util.fs import check_output_path
from cu_cli.ckpt import compvis
from cu_cli.ckpt.format import write_safetensors
from cu_cli.ckpt.keys import split_key
from cu_cli.export.common import Source, metadata, modelspec_hash
from cu_cli.export.diffusers_folder import ExportResult


def _config(base, comp: str) -> dict:
    try:
        with open(os.path.join(base.path, comp, "config.json")) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise IncompatibleError(f"base {base.id}: cannot read {comp}/config.json ({e})")


def _overlay(base, tensors: dict) -> tuple[dict, int]:
    """Every base tensor (canonical keys) with ``tensors`` overlaid in the base's dtype, and how
    many state values that rounding changed."""
    import torch

    shapes = base.shapes()
    ref = base.get_tensors(sorted(shapes))
    lossy = 0
    for k, t in tensors.items():
        if k not in ref:
            continue
        new = t.to(ref[k].dtype)
        if new.dtype != t.dtype and not torch.equal(new.to(t.dtype), t):
            lossy += 1
        ref[k] = new
    return ref, lossy


def _put(out: dict, key: str, v) -> None:
    if key in out:
        raise IncompatibleError(f"single-file export: two tensors map to {key}")
    out[key] = v


def compvis_state(base, tensors: dict) -> tuple[dict, list[str]]:
    """The full CompVis/SGM-keyed state dict of ``base``, ``tensors`` (canonical keys) overlaid."""
    from cu_cli.models.families import get_family

    fam = get_family(base.family)
    if not fam.single_file_export:
        raise IncompatibleError(f"cu export single-file has no layout for family {base.family}",
                                hint="use cu export diffusers")
    sdxl = "text_encoder_2" in fam.text_encoders  # SGM layout: conditioner.embedders.*
    allowed = ("unet", "vae") + tuple(fam.text_encoders)
    comps = sorted({split_key(k)[0] for k in base.shapes()})
    extra = [c for c in comps if c not in allowed]
    if extra:
        raise IncompatibleError(f"base {base.id} has component(s) {extra} with no CompVis layout")
    unet_p = compvis.unet_prefixes(_config(base, "unet"))
    vae_p = compvis.vae_prefixes(_config(base, "vae"))
    ref, lossy = _overlay(base, tensors)
    text_prefix = compvis.SDXL_TEXT_PREFIX if sdxl else compvis.TEXT_PREFIX
    out, te2 = {}, {}
    for k in sorted(ref):
        comp, name = split_key(k)
        v = ref[k]
        if comp == "unet":
            _put(out, compvis.unet_key(name, unet_p), v)
        elif comp == "vae":
            key, conv = compvis.vae_key(name, vae_p)
            _put(out, key, v.reshape(*v.shape, 1, 1) if conv and v.dim() == 2 else v)
        elif comp == "text_encoder":
            _put(out, compvis.text_key(name, text_prefix), v)
        else:
            te2[name] = v
    for key, v in compvis.open_clip_state(te2).items():
        _put(out, key, v)
    warnings = [f"{lossy} state tensor(s) rounded to the base's dtype"] if lossy else []
    return out, warnings


def export_single_file(src: Source, out: str, force: bool = False, inputs=()) -> ExportResult:
    out = check_output_path(out, force, [*inputs, src.header.path, *src.base.files.values(),
                                         src.base.single_file])
    state, warnings = compvis_state(src.base, src.tensors)
    write_safetensors(out, state, metadata(src, "single-file"), derived=modelspec_hash)
    from cu_cli.models.families import get_family

    comps = ["unet", "vae", *get_family(src.base.family).text_encoders]
    return ExportResult(path=out, format="single-file", components=comps,
                        tensors=len(src.tensors), warnings=list(src.warnings) + warnings,
                        report={"file_tensors": len(state)})
