"""MiniCanvas architecture: a tiny Stable Diffusion (v1 topology) built from diffusers/transformers classes.

Components match ``StableDiffusionPipeline`` (Rombach et al., "High-Resolution Image Synthesis with
Latent Diffusion Models", CVPR 2022): an ``AutoencoderKL`` (32x32 RGB -> 4x8x8 latents), a
``CLIPTextModel`` with a ``CLIPTokenizer`` built in code over the world's vocabulary (every world
word is one token; other text falls back to characters), a ``UNet2DConditionModel`` with
cross-attention (``attn2.to_k``/``to_v`` exist, so every parameter group is real) and SD's DDPM
noise schedule (scaled_linear, beta 0.00085 -> 0.012, 1000 steps).
"""

from __future__ import annotations

import string

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 24  # SD pads to 77; MiniCanvas captions are <= 10 tokens, 24 keeps sampling fast

# A comment per default (nanoGPT style): sizes measured on 2 CPU cores, see docs/minicanvas.md.
TEXT_CONFIG = dict(
    hidden_size=64,  # = UNet cross_attention_dim
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=MAX_LENGTH,
    hidden_act="quick_gelu",  # as CLIP ViT-L/14
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
)
UNET_CONFIG = dict(
    sample_size=8,  # 8x8 latents
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 128),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=64,
    attention_head_dim=4,  # diffusers' legacy name: number of heads
    norm_num_groups=16,
)
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,  # two downsamples: 32 -> 8
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=32,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def build_tokenizer(words: list[str]) -> CLIPTokenizer:
    """A CLIP BPE tokenizer with merges for every world word, added word by word in sorted order.

    Most words become one token; four (heart, square, stripes, triangle) stay split into 3–7
    because a merge of an earlier word outranks theirs (e.g. "ring"'s r+i), as SD's BPE splits
    rare words. The shipped weights were trained with exactly this tokenizer, and the recipe
    rebuilds it in code when it resumes, so it must not change (tests/test_minicanvas.py).

    Characters a-z, digits and punctuation are always in the vocabulary, so any prompt encodes;
    unknown words become character tokens (distinct prompts get distinct ids).
    """
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab: dict[str, int] = {}
    for tok in [BOS, EOS] + chars + [c + "</w>" for c in chars]:
        vocab.setdefault(tok, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in sorted(set(words)):
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        cur = symbols[0]
        for sym in symbols[1:]:
            if (cur, sym) not in merges:
                merges.append((cur, sym))
            cur += sym
            vocab.setdefault(cur, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH,
                         bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=EOS)


def build_components(words: list[str], seed: int = 0) -> dict:
    """Fresh (untrained) MiniCanvas components, seeded."""
    tokenizer = build_tokenizer(words)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), **TEXT_CONFIG))
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(**VAE_CONFIG)
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, vae=vae,
                noise_scheduler=DDPMScheduler.from_config(SCHEDULER_CONFIG))


def save_pipeline(out_dir: str, components: dict) -> None:
    """Write a standard diffusers folder (safetensors) loadable with ``from_pretrained``."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=components["vae"], text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"], unet=components["unet"],
        scheduler=DDIMScheduler.from_config(SCHEDULER_CONFIG), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
