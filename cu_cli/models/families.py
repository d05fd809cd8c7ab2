"""Model families as adapters: how SD 1.x, SD 2.x and SDXL are conditioned (the model layer's
only family dispatch; ``FAMILIES`` is the registry).

Each adapter gives

- ``matches(index, unet_cfg, sched_cfg)``: detection from configs only (no weights read);
- ``encode(pipe, prompts) -> Cond``: what the UNet is conditioned on. ``Cond.hidden`` is the
  per-token text state the cross-attention K/V see (UCE's closed form, the K/V metric, the
  projection basis and the context tokens all read it); SDXL adds ``pooled`` (text_encoder_2's
  projected pooled output) and ``time_ids`` (original size, crop top-left, target size), as the
  diffusers SDXL training scripts (``train_text_to_image_sdxl.py`` ``encode_prompt`` and
  ``compute_time_ids``) build them;
- ``unet_kwargs(cond)``: the UNet call's keyword arguments (SDXL: ``added_cond_kwargs`` with
  ``text_embeds`` and ``time_ids``);
- ``default_prediction`` / ``default_resolution``: used when the scheduler / UNet config does not
  say (the configs are the truth: SD 2.x-base is ε-prediction at 512², SD 2.x is v at 768²);
- ``pipeline_class`` and ``load_kwargs``: the diffusers class that loads a folder offline;
- ``single_file_prefixes``: the original-layout key prefixes of each component (``cu export
  single-file`` writes each text encoder under its prefix; ``ckpt/compvis.py`` holds the tables);
- ``single_file_text_layout``: each text encoder's key layout in a single file, ``clip`` (HF CLIP
  names, ``…transformer.text_model.*``) or ``open_clip`` (OpenCLIP names, ``…model.*``).

Text-embedding extraction for ``project-basis`` (models/text.py) is ``encode(...).hidden`` at
the positions found with the first tokenizer, so every family embeds text the way its UNet sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily (``cu --help`` must not pay for it)
    import torch


@dataclass
class Cond:
    """A batch of UNet conditioning: hidden [B, L, d]; SDXL also pooled [B, p], time_ids [B, 6]."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.hidden.shape[0]

    @property
    def device(self) -> torch.device:
        return self.hidden.device

    def _map(self, fn) -> "Cond":
        return Cond(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                       for f in fields(self)})

    def __getitem__(self, idx) -> "Cond":
        """Rows ``idx`` (a slice, a list or an index tensor)."""
        return self._map(lambda t: t[idx])

    def expand(self, n: int) -> "Cond":
        """A one-row Cond repeated to ``n`` rows (a view)."""
        return self._map(lambda t: t.expand(n, *t.shape[1:]))

    def to(self, *args, **kwargs) -> "Cond":
        return self._map(lambda t: t.to(*args, **kwargs))

    @staticmethod
    def cat(conds: list["Cond"]) -> "Cond":
        import torch

        first = conds[0]
        return Cond(**{f.name: None if getattr(first, f.name) is None
                       else torch.cat([getattr(c, f.name) for c in conds])
                       for f in fields(first)})


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Input ids padded to the tokenizer's window (what every SD pipeline does)."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


class Family:
    """SD 1.x: one CLIP-L text encoder, last hidden state, ε-prediction, 512²."""

    name = "sd1"
    doc = "Stable Diffusion 1.x: CLIP ViT-L/14 text encoder (last hidden state), eps, 512x512"
    default_prediction = "epsilon"
    default_resolution = 512
    pipeline_class = "StableDiffusionPipeline"
    text_encoders = ("text_encoder",)
    single_file_prefixes = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
                            "text_encoder": "cond_stage_model.transformer."}
    single_file_text_layout = {"text_encoder": "clip"}
    single_file_export = True  # cu export single-file writes this family's CompVis layout
    # ModelSpec (exports): architecture per prediction type, reference implementation
    modelspec_arch = {"epsilon": "stable-diffusion-v1"}
    implementation = "https://github.com/CompVis/stable-diffusion"

    def matches(self, index: dict, unet_cfg: dict, sched_cfg: dict) -> bool:
        return True  # the fallback

    def load_kwargs(self) -> dict:
        return dict(safety_checker=None, requires_safety_checker=False)

    def encode(self, pipe, prompts: list[str]) -> Cond:
        ids = tokenize(pipe.tokenizer, prompts).to(pipe.device)
        return Cond(hidden=pipe.text_encoder(ids)[0])

    def unet_kwargs(self, cond: Cond) -> dict:
        return {"encoder_hidden_states": cond.hidden}


class SD1(Family):
    pass


class SD2(Family):
    """SD 2.x: OpenCLIP-H (converted to a 23-layer CLIPTextModel: its last state is OpenCLIP's
    penultimate), v-prediction at 768² (the 512² base is ε: read from the scheduler config)."""

    name = "sd2"
    doc = "Stable Diffusion 2.x: OpenCLIP ViT-H text encoder, v-prediction (768) or eps (512-base)"
    default_prediction = "v_prediction"
    default_resolution = 768
    single_file_prefixes = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
                            "text_encoder": "cond_stage_model.model."}
    single_file_text_layout = {"text_encoder": "open_clip"}  # what A1111/ComfyUI load for SD2
    modelspec_arch = {"epsilon": "stable-diffusion-v2-512",
                      "v_prediction": "stable-diffusion-v2-768-v"}
    implementation = "https://github.com/Stability-AI/stablediffusion"

    def matches(self, index: dict, unet_cfg: dict, sched_cfg: dict) -> bool:
        return (unet_cfg.get("cross_attention_dim") == 1024
                or sched_cfg.get("prediction_type") == "v_prediction")


class SDXL(Family):
    """SDXL: two text encoders (penultimate hidden states concatenated, d = 768 + 1280), pooled
    projection of the second, micro-conditioning time ids; ε-prediction at 1024²."""

    name = "sdxl"
    doc = ("Stable Diffusion XL: CLIP-L + OpenCLIP-bigG (penultimate states concatenated), pooled "
           "text embeds and time ids as added conditioning, eps, 1024x1024")
    default_prediction = "epsilon"
    default_resolution = 1024
    pipeline_class = "StableDiffusionXLPipeline"
    text_encoders = ("text_encoder", "text_encoder_2")
    single_file_prefixes = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
                            "text_encoder": "conditioner.embedders.0.transformer.",
                            "text_encoder_2": "conditioner.embedders.1.model."}
    single_file_text_layout = {"text_encoder": "clip", "text_encoder_2": "open_clip"}
    single_file_export = True  # the SGM layout (conditioner.embedders.0 CLIP-L, .1 OpenCLIP)
    modelspec_arch = {"epsilon": "stable-diffusion-xl-v1-base"}
    implementation = "https://github.com/Stability-AI/generative-models"

    def matches(self, index: dict, unet_cfg: dict, sched_cfg: dict) -> bool:
        return "text_encoder_2" in index or unet_cfg.get("addition_embed_type") == "text_time"

    def load_kwargs(self) -> dict:
        return {}

    def encode(self, pipe, prompts: list[str]) -> Cond:
        import torch

        hidden, pooled = [], None
        for tok, te in ((pipe.tokenizer, pipe.text_encoder),
                        (pipe.tokenizer_2, pipe.text_encoder_2)):
            out = te(tokenize(tok, prompts).to(pipe.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]  # the last encoder's projected pooled output (text_embeds)
        h = torch.cat(hidden, dim=-1)
        res = pipe.resolution
        # (original_size, crops_coords_top_left, target_size): an uncropped image at the UNet's size
        time_ids = torch.tensor([[res, res, 0, 0, res, res]], dtype=h.dtype, device=h.device)
        return Cond(hidden=h, pooled=pooled.to(h.dtype), time_ids=time_ids.expand(len(prompts), 6))

    def unet_kwargs(self, cond: Cond) -> dict:
        return {"encoder_hidden_states": cond.hidden,
                "added_cond_kwargs": {"text_embeds": cond.pooled, "time_ids": cond.time_ids}}


# Detection order: the most specific first.
FAMILIES: dict[str, Family] = {f.name: f for f in (SDXL(), SD2(), SD1())}


def detect(index: dict, unet_cfg: dict, sched_cfg: dict) -> str:
    for name, fam in FAMILIES.items():
        if fam.matches(index, unet_cfg, sched_cfg):
            return name
    return "sd1"  # pragma: no cover (sd1 matches everything)


def get_family(name: str) -> Family:
    return FAMILIES[name]
