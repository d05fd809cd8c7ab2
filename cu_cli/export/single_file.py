"""``cu export single-file``: base + state as one original-layout (CompVis/LDM) ``.safetensors``.

Every UNet, VAE and text-encoder tensor of the base, the state's values overlaid, renamed with the
tables of ``ckpt/compvis.py`` (diffusers' ``convert_diffusers_to_original_stable_diffusion.py``,
generalised to any SD-topology config): ``model.diffusion_model.*``, ``first_stage_model.*`` (VAE
mid-block attention as 1×1 convolutions), ``cond_stage_model.transformer.text_model.*``. The file
is what AUTOMATIC1111, ComfyUI and Forge load for SD1.x, and what
``StableDiffusionPipeline.from_single_file(F, config=BASE_DIR, local_files_only=True)`` reloads
(tested bit for bit on UNet, VAE and text encoder). Header: ModelSpec (``modelspec.hash_sha256`` =
``0x`` + data-section sha256) and the state's ``cu.*`` lineage (``cu.kind`` = ``export``).

Tensors keep the base's dtype (a state value is rounded to it, with a warning when that changes
it). SD2 files use the HF CLIP text-encoder layout (diffusers reads it; A1111/ComfyUI expect
OpenCLIP for SD2). SDXL (``conditioner.embedders.*``) is refused (exit 3).
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


def compvis_state(base, tensors: dict) -> tuple[dict, list[str]]:
    """The full CompVis-keyed state dict of ``base`` with ``tensors`` (canonical keys) overlaid."""
    import torch

    from cu_cli.models.families import get_family

    if not get_family(base.family).single_file_export:
        raise IncompatibleError("cu export single-file supports SD1.x and SD2.x bases; SDXL "
                                "(conditioner.embedders.*) is not implemented yet",
                                hint="use cu export diffusers for SDXL")
    shapes = base.shapes()
    comps = sorted({split_key(k)[0] for k in shapes})
    extra = [c for c in comps if c not in ("unet", "vae", "text_encoder")]
    if extra:
        raise IncompatibleError(f"base {base.id} has component(s) {extra} with no CompVis layout")
    unet_p = compvis.unet_prefixes(_config(base, "unet"))
    vae_p = compvis.vae_prefixes(_config(base, "vae"))
    ref = base.get_tensors(sorted(shapes))
    out, warnings, lossy = {}, [], 0
    for k in sorted(shapes):
        comp, name = split_key(k)
        v = ref[k]
        if k in tensors:
            new = tensors[k].to(v.dtype)
            if new.dtype != tensors[k].dtype and not torch.equal(new.to(tensors[k].dtype),
                                                                 tensors[k]):
                lossy += 1
            v = new
        if comp == "unet":
            key = compvis.unet_key(name, unet_p)
        elif comp == "vae":
            key, conv = compvis.vae_key(name, vae_p)
            if conv and v.dim() == 2:
                v = v.reshape(*v.shape, 1, 1)
        else:
            key = compvis.text_key(name)
        if key in out:
            raise IncompatibleError(f"single-file export: two tensors map to {key}")
        out[key] = v
    if lossy:
        warnings.append(f"{lossy} state tensor(s) rounded to the base's dtype")
    return out, warnings


def export_single_file(src: Source, out: str, force: bool = False, inputs=()) -> ExportResult:
    out = check_output_path(out, force, [*inputs, src.header.path, *src.base.files.values(),
                                         src.base.single_file])
    state, warnings = compvis_state(src.base, src.tensors)
    write_safetensors(out, state, metadata(src, "single-file"), derived=modelspec_hash)
    return ExportResult(path=out, format="single-file", components=["unet", "vae", "text_encoder"],
                        tensors=len(src.tensors), warnings=list(src.warnings) + warnings,
                        report={"file_tensors": len(state)})
