"""diffusers → original CompVis (LDM) key names for single-file exports (conventions §2 "Exports").

The tables follow diffusers' ``scripts/convert_diffusers_to_original_stable_diffusion.py`` ("buyer
beware"), generalised from SD1's hard-coded 4 blocks × 2 layers to any UNet/VAE config with the
SD topology (``layers_per_block``, ``block_out_channels``, which blocks have cross-attention), so
the built-in MiniCanvas and the tiny test pipelines convert too. The inverse is diffusers'
``from_single_file`` (``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``,
``convert_ldm_clip_checkpoint``, ``convert_open_clip_checkpoint``); tests reload an export with it
and compare bit for bit.

Layout written (text encoders: the family's ``single_file_text_layout`` and
``single_file_prefixes``, models/families.py):

| component | CompVis prefix | notes |
|---|---|---|
| unet | ``model.diffusion_model.`` | ``input_blocks`` / ``middle_block`` / ``output_blocks`` |
| vae | ``first_stage_model.`` | encoder/decoder ``down``/``up`` (decoder ``up`` reversed); mid-block attention q/k/v/proj_out as 1×1 convolutions |
| text_encoder, ``clip`` layout (SD1; SDXL's first) | ``cond_stage_model.transformer.`` (SDXL: ``conditioner.embedders.0.transformer.``) | HF CLIP names, always with ``text_model.`` (the transformers ≥ 5.6 flattening is undone) |
| text_encoder (SD2), text_encoder_2 (SDXL), ``open_clip`` layout | ``cond_stage_model.model.`` (SDXL: ``conditioner.embedders.1.model.``) | OpenCLIP names: ``transformer.resblocks.N.attn.in_proj_*`` (q/k/v concatenated), ``ln_1``/``ln_2``, ``mlp.c_fc``/``mlp.c_proj``, ``ln_final``, ``positional_embedding``, ``token_embedding``, ``text_projection`` (transposed; only when the HF model has one) |

The OpenCLIP writer is the inverse of diffusers' ``convert_open_clip_checkpoint``. SD2: the HF
``CLIPTextModel`` is OpenCLIP-H's first 23 of 24 resblocks (SD2 reads the penultimate layer) and has
no ``text_projection``, so the file holds resblocks 0–22 and no ``text_projection``; diffusers
ignores ``resblocks.23`` and ``cond_stage_model.model.text_projection`` anyway
(``SD_2_TEXT_ENCODER_KEYS_TO_IGNORE``) and, with no ``text_projection``, splits ``in_proj`` at the
config's ``hidden_size``.
SDXL is the SGM layout (Stability-AI/generative-models): the UNet table is the same (no attention in
an SDXL ``DownBlock2D``/``UpBlock2D`` falls out of the block types; transformer depth lives inside
``attentions.N.transformer_blocks.M`` and keeps its names) plus ``add_embedding`` → ``label_emb.0``.
"""

from __future__ import annotations

from cu_cli._util.errors import IncompatibleError
from cu_cli.ckpt.keys import canonical_text_key

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
CLIP, OPEN_CLIP = "clip", "open_clip"  # the text-encoder layouts (Family.single_file_text_layout)

_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",  # SDXL text_time added embedding
    "add_embedding.linear_2.": "label_emb.0.2.",
}
_UNET_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"),
                ("conv_shortcut", "skip_connection"))
_VAE_ATTN = (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
             ("to_out.0.", "proj_out."), ("query.", "q."), ("key.", "k."), ("value.", "v."),
             ("proj_attn.", "proj_out."))
_OPEN_CLIP_TOP = {
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "text_model.text_projection.weight": "text_projection",  # cu's spelling (ckpt/keys.py)
}
# a constant arange buffer (saved by transformers < 4.31, so in older HF text encoders' files);
# OpenCLIP has no counterpart and diffusers' reload does not read one
_OPEN_CLIP_SKIP = ("text_model.embeddings.position_ids",)
_OPEN_CLIP_LAYER = (("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."),
                    ("mlp.fc2.", "mlp.c_proj."), ("self_attn.out_proj.", "attn.out_proj."))
_LAYERS = "text_model.encoder.layers."


def _layers(config: dict, what: str) -> int:
    lpb = config.get("layers_per_block", 2)
    if isinstance(lpb, (list, tuple)):
        if len(set(lpb)) != 1:
            raise IncompatibleError(f"single-file export: {what} with per-block layers_per_block "
                                    f"{list(lpb)} has no CompVis layout")
        lpb = lpb[0]
    return int(lpb)


def unet_prefixes(config: dict) -> list[tuple[str, str]]:
    """(diffusers prefix, CompVis prefix) for every UNet block of ``config`` (unet/config.json)."""
    n = len(config["block_out_channels"])
    L = _layers(config, "a UNet")
    down_attn = [t.startswith("CrossAttn") for t in config["down_block_types"]]
    up_attn = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    out: list[tuple[str, str]] = []
    for i in range(n):
        for j in range(L):
            k = (L + 1) * i + j + 1
            out.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{k}.0."))
            if down_attn[i]:
                out.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{k}.1."))
        if i < n - 1:
            out.append((f"down_blocks.{i}.downsamplers.0.conv.",
                        f"input_blocks.{(L + 1) * (i + 1)}.0.op."))
        for j in range(L + 1):
            k = (L + 1) * i + j
            out.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{k}.0."))
            if up_attn[i]:
                out.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{k}.1."))
        if i < n - 1:
            out.append((f"up_blocks.{i}.upsamplers.0.",
                        f"output_blocks.{(L + 1) * i + L}.{2 if up_attn[i] else 1}."))
    out.append(("mid_block.attentions.0.", "middle_block.1."))
    out += [(f"mid_block.resnets.{j}.", f"middle_block.{2 * j}.") for j in range(2)]
    return out


def unet_key(name: str, prefixes: list[tuple[str, str]]) -> str:
    """A diffusers UNet key (module-relative) → its CompVis key (with ``model.diffusion_model.``)."""
    for hf, sd in _UNET_TOP.items():
        if name.startswith(hf):
            return UNET_PREFIX + sd + name[len(hf):]
    for hf, sd in prefixes:
        if name.startswith(hf):
            rest = name[len(hf):]
            if ".resnets." in hf:
                for hf_part, sd_part in _UNET_RESNET:
                    if rest.startswith(hf_part + "."):
                        rest = sd_part + rest[len(hf_part):]
                        break
            return UNET_PREFIX + sd + rest
    raise IncompatibleError(f"single-file export: no CompVis name for UNet tensor {name!r} "
                            "(not an SD1/SD2-topology UNet)")


def vae_prefixes(config: dict) -> list[tuple[str, str]]:
    n = len(config["block_out_channels"])
    L = _layers(config, "a VAE")
    out: list[tuple[str, str]] = []
    for i in range(n):
        for j in range(L):
            out.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}."))
        if i < n - 1:
            out.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
            out.append((f"decoder.up_blocks.{i}.upsamplers.0.",
                        f"decoder.up.{n - 1 - i}.upsample."))
        for j in range(L + 1):
            out.append((f"decoder.up_blocks.{i}.resnets.{j}.",
                        f"decoder.up.{n - 1 - i}.block.{j}."))
    for part in ("encoder", "decoder"):
        out += [(f"{part}.mid_block.resnets.{k}.", f"{part}.mid.block_{k + 1}.") for k in range(2)]
        out.append((f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."))
        out.append((f"{part}.conv_norm_out.", f"{part}.norm_out."))
    return out


def vae_key(name: str, prefixes: list[tuple[str, str]]) -> tuple[str, bool]:
    """A diffusers VAE key → (CompVis key with ``first_stage_model.``, reshape-to-1×1-conv?)."""
    for hf, sd in prefixes:
        if name.startswith(hf):
            rest = name[len(hf):]
            if hf.endswith("attentions.0."):
                for hf_part, sd_part in _VAE_ATTN:
                    if rest.startswith(hf_part):
                        rest = sd_part + rest[len(hf_part):]
                        break
                conv = rest.endswith(".weight") and rest.split(".")[0] in ("q", "k", "v",
                                                                            "proj_out")
                return VAE_PREFIX + sd + rest, conv
            rest = rest.replace("conv_shortcut.", "nin_shortcut.")
            return VAE_PREFIX + sd + rest, False
    if name.split(".")[0] in ("quant_conv", "post_quant_conv") or \
            name.startswith(("encoder.conv_in.", "encoder.conv_out.", "decoder.conv_in.",
                             "decoder.conv_out.")):
        return VAE_PREFIX + name, False
    raise IncompatibleError(f"single-file export: no CompVis name for VAE tensor {name!r}")


def text_key(name: str, prefix: str = TEXT_PREFIX) -> str:
    """A CLIP text-encoder key (either spelling) → ``{prefix}text_model.…`` (default
    ``cond_stage_model.transformer.``; SDXL's first encoder:
    ``conditioner.embedders.0.transformer.``)."""
    return prefix + canonical_text_key(name)


def text_state(tensors: dict, layout: str, prefix: str) -> dict:
    """One text encoder's tensors (module-relative keys, either spelling) in ``layout``
    (``clip``: HF CLIP names; ``open_clip``: ``open_clip_state``) under ``prefix``."""
    if layout == CLIP:
        return {text_key(name, prefix): v for name, v in tensors.items()}
    if layout == OPEN_CLIP:
        return open_clip_state(tensors, prefix)
    raise IncompatibleError(f"single-file export: unknown text-encoder layout {layout!r}")


def _open_clip_layer_key(rest: str) -> str | None:
    """``N.<HF CLIP layer part>`` → ``transformer.resblocks.N.<OpenCLIP part>`` (None for q/k/v)."""
    n, part = rest.split(".", 1)
    for hf, oc in _OPEN_CLIP_LAYER:
        if part.startswith(hf):
            return f"transformer.resblocks.{n}.{oc}{part[len(hf):]}"
    if part.startswith(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
        return None
    raise IncompatibleError(f"single-file export: no OpenCLIP name for text-encoder tensor "
                            f"{_LAYERS + rest!r}")


def _fuse_qkv(qkv: dict, prefix: str) -> dict:
    """{(layer, weight|bias): {q, k, v}} → ``{prefix}transformer.resblocks.N.attn.in_proj_*``
    (q, k, v concatenated in that order)."""
    import torch

    out = {}
    for (n, kind), parts in sorted(qkv.items()):
        if sorted(parts) != ["k", "q", "v"]:
            raise IncompatibleError(f"single-file export: text-encoder layer {n} lacks one of "
                                    f"q/k/v_proj.{kind}")
        out[f"{prefix}transformer.resblocks.{n}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]])
    return out


def open_clip_state(tensors: dict, prefix: str) -> dict:
    """An HF CLIP text encoder (``CLIPTextModel`` or ``…WithProjection``, either key spelling) →
    OpenCLIP keys under ``prefix`` (SD2: ``cond_stage_model.model.``, SDXL's text_encoder_2:
    ``conditioner.embedders.1.model.``): q/k/v concatenated into ``attn.in_proj_weight``/
    ``in_proj_bias``, ``text_projection`` transposed, ``position_ids`` dropped (the inverse of
    diffusers' ``convert_open_clip_checkpoint``)."""
    out, qkv = {}, {}
    for name, v in tensors.items():
        name = canonical_text_key(name)
        if name in _OPEN_CLIP_SKIP:
            continue
        if name in _OPEN_CLIP_TOP:
            key = _OPEN_CLIP_TOP[name]
            out[prefix + key] = v.T.contiguous() if key == "text_projection" else v
        elif name.startswith(_LAYERS):
            key = _open_clip_layer_key(name[len(_LAYERS):])
            if key is None:
                n, _, proj, kind = name[len(_LAYERS):].split(".")
                qkv.setdefault((n, kind), {})[proj[0]] = v
            else:
                out[prefix + key] = v
        else:
            raise IncompatibleError(f"single-file export: no OpenCLIP name for text-encoder "
                                    f"tensor {name!r}")
    out.update(_fuse_qkv(qkv, prefix))
    return out
