"""Tiny Stable-Diffusion-topology pipelines built in code (conventions.md §4).

SD1 variant: SD1.x's 16 cross-attention blocks and 32 K/V tensors at toy width, so group rules and
key tables are exercised for real. SD2 variant: cross_attention_dim 1024-style family marker
(v-prediction). SDXL variant: two text encoders and ``text_time`` additional embeddings.
``sgm=True`` (SDXL only): SDXL's own block topology (attention-less first down / last up block,
transformer depth 2 in the inner blocks) and a text_encoder_2 wider than text_encoder with its own
weights, as in SDXL (diffusers' ``from_single_file`` tells the two encoders apart by width).
"""

from __future__ import annotations

import os

import torch

WORDS = ["a", "in", "style", "of", "an", "image", "the", "star", "circle", "square", "neon",
         "stripes", "dots", "ember", "cat", "dog", "horse", "tree", "van", "gogh", "picasso"]


def tiny_components(family: str = "sd1", sgm: bool = False) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from cu_cli.models.minicanvas_arch import build_tokenizer

    tok = build_tokenizer(WORDS)
    tok.model_max_length = 16
    xdim = 16
    text_cfg = dict(vocab_size=len(tok), hidden_size=xdim, intermediate_size=32,
                    num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                    bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    te = CLIPTextModel(CLIPTextConfig(**text_cfg))
    unet_kw = dict(block_out_channels=(8, 8, 8, 8), layers_per_block=2, sample_size=8,
                   in_channels=4, out_channels=4,
                   down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                   up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                   cross_attention_dim=xdim, norm_num_groups=4, attention_head_dim=2)
    extra = {}
    if family == "sdxl":
        w2 = 24 if sgm else xdim
        torch.manual_seed(1 if sgm else 0)
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**{**text_cfg, "hidden_size": w2,
                                                            "projection_dim": w2}))
        unet_kw.update(cross_attention_dim=xdim + w2, addition_embed_type="text_time",
                       addition_time_embed_dim=4, projection_class_embeddings_input_dim=w2 + 6 * 4)
        if sgm:
            unet_kw.update(block_out_channels=(8, 8, 8), transformer_layers_per_block=(1, 2, 2),
                           down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 2,
                           up_block_types=("CrossAttnUpBlock2D",) * 2 + ("UpBlock2D",))
        extra = dict(text_encoder_2=te2, tokenizer_2=tok)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_kw)
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=[8] * 4,
                        norm_num_groups=4, layers_per_block=2, latent_channels=4, sample_size=64)
    sched = DDIMScheduler(steps_offset=1, beta_schedule="scaled_linear", beta_start=0.00085,
                          beta_end=0.012, clip_sample=False, set_alpha_to_one=False,
                          prediction_type="v_prediction" if family == "sd2" else "epsilon")
    return dict(unet=unet, vae=vae, text_encoder=te, tokenizer=tok, scheduler=sched, **extra)


def save_tiny(folder: str, family: str = "sd1", layout: str = "plain", sgm: bool = False) -> str:
    """``layout``: plain (fp32 files) | fp16 (fp16 weights, plain names) | variant (fp16
    ``*.fp16.safetensors`` files only) | sharded (``*.safetensors.index.json`` + shards)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    c = tiny_components(family, sgm)
    if layout in ("fp16", "variant"):
        for k in ("unet", "vae", "text_encoder", "text_encoder_2"):
            if k in c:
                c[k] = c[k].to(torch.float16)
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(**c)
    else:
        pipe = StableDiffusionPipeline(**c, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    os.makedirs(folder, exist_ok=True)
    kw = {"variant": "fp16"} if layout == "variant" else {}
    if layout == "sharded":
        kw["max_shard_size"] = "60KB"
    pipe.save_pretrained(folder, safe_serialization=True, **kw)
    return folder
