"""``cu export single-file``: base + state as one original-layout (CompVis/LDM) ``.safetensors``.

Every UNet, VAE and text-encoder tensor of the base, the state's values overlaid, renamed with the
tables of ``ckpt/compvis.py`` (diffusers' ``convert_diffusers_to_original_stable_diffusion.py``,
generalised to any SD-topology config): ``model.diffusion_model.*``, ``first_stage_model.*`` (VAE
mid-block attention as 1×1 convolutions), and each text encoder in its family's layout
(``Family.single_file_text_layout`` under ``Family.single_file_prefixes``):

- SD1.x: ``cond_stage_model.transformer.text_model.*`` (HF CLIP);
- SD2.x: ``cond_stage_model.model.*`` (OpenCLIP, as in the original SD2 checkpoints: fused q/k/v
  ``in_proj``, ``ln_1``/``ln_2``, ``mlp.c_fc``/``mlp.c_proj``, ``ln_final``). Only the HF
  encoder's layers are written: OpenCLIP-H's last resblock (``resblocks.23``) and
  ``text_projection`` are not in the HF SD2 ``CLIPTextModel`` (SD2 conditions on the penultimate
  layer), so an original SD2 file's loader finds those keys missing; diffusers ignores them;
- SDXL: the original SGM layout (Stability-AI/generative-models): ``label_emb.0.*`` (the
  ``text_time`` added embedding) in the UNet, text encoder 1 as
  ``conditioner.embedders.0.transformer.text_model.*`` (HF CLIP), text encoder 2 as
  ``conditioner.embedders.1.model.*`` (OpenCLIP, transposed ``text_projection``).

That is the layout AUTOMATIC1111, ComfyUI and Forge load (not tested here), and what
``StableDiffusionPipeline.from_single_file(F, config=BASE_DIR, local_files_only=True)``
(``StableDiffusionXLPipeline`` for SDXL) reloads: tested bit for bit on UNet, VAE and text
encoder(s) for tiny sd1, sd2 and SDXL bases. Header: ModelSpec (``modelspec.hash_sha256`` = ``0x`` +
data-section sha256) and the state's ``cu.*`` lineage (``cu.kind`` = ``export``).

Tensors keep the base's dtype (a state value is rounded to it, with a warning when that changes
it).
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


def _family(base):
    """The base's family, checked to have a single-file layout for every component it holds."""
    from cu_cli.models.families import get_family

    fam = get_family(base.family)
    if not fam.single_file_export:
        raise IncompatibleError(f"cu export single-file has no layout for family {base.family}",
                                hint="use cu export diffusers")
    allowed = ("unet", "vae") + tuple(fam.text_encoders)
    comps = sorted({split_key(k)[0] for k in base.shapes()})
    extra = [c for c in comps if c not in allowed]
    if extra:
        raise IncompatibleError(f"base {base.id} has component(s) {extra} with no CompVis layout")
    return fam


def _text_state(fam, texts: dict) -> dict:
    """Every text encoder's tensors (component -> module-relative keys) in the family's layout
    (``single_file_text_layout``) under its prefix (``single_file_prefixes``)."""
    out = {}
    for comp, tensors in texts.items():
        layout, prefix = fam.single_file_text_layout[comp], fam.single_file_prefixes[comp]
        for key, v in compvis.text_state(tensors, layout, prefix).items():
            _put(out, key, v)
    return out


def compvis_state(base, tensors: dict) -> tuple[dict, list[str]]:
    """The full CompVis/SGM-keyed state dict of ``base``, ``tensors`` (canonical keys) overlaid."""
    fam = _family(base)
    unet_p = compvis.unet_prefixes(_config(base, "unet"))
    vae_p = compvis.vae_prefixes(_config(base, "vae"))
    ref, lossy = _overlay(base, tensors)
    out, texts = {}, {}
    for k in sorted(ref):
        comp, name = split_key(k)
        v = ref[k]
        if comp == "unet":
            _put(out, compvis.unet_key(name, unet_p), v)
        elif comp == "vae":
            key, conv = compvis.vae_key(name, vae_p)
            _put(out, key, v.reshape(*v.shape, 1, 1) if conv and v.dim() == 2 else v)
        else:
            texts.setdefault(comp, {})[name] = v
    for key, v in _text_state(fam, texts).items():
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
