"""A Stable Diffusion pipeline as plain components, with batched, per-image-seeded sampling.

Sampling is DDIM (Song et al., arXiv 2010.02502, eta = 0) with classifier-free guidance
(Ho & Salimans, arXiv 2207.12598): eps = eps_u + w * (eps_c - eps_u). Every image draws its initial
latent from its own ``torch.Generator`` seeded by the caller, so an image does not depend on which
batch it was in or on what was sampled before it (the reference's global-RNG order bug).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Pipeline:
    """Loaded base components (SD1/SD2 topology; SDXL adds a second tokenizer/encoder)."""

    tokenizer: object
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict
    family: str = "sd1"
    tokenizer_2: object | None = None
    text_encoder_2: torch.nn.Module | None = None
    extra: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        cfg = self.unet.config
        return (cfg.in_channels, cfg.sample_size, cfg.sample_size)

    def to(self, device) -> "Pipeline":
        for m in (self.text_encoder, self.unet, self.vae, self.text_encoder_2):
            if m is not None:
                m.to(device)
        return self

    def eval_mode(self) -> "Pipeline":
        for m in (self.text_encoder, self.unet, self.vae, self.text_encoder_2):
            if m is not None:
                m.eval().requires_grad_(False)
        return self

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Token-level last hidden states, padded to the tokenizer's max length: [B, L, d]."""
        ids = self.tokenize(prompts).to(self.device)
        return self.text_encoder(ids)[0]

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer
        return tok(list(prompts), padding="max_length", max_length=tok.model_max_length,
                   truncation=True, return_tensors="pt").input_ids

    def noise_scheduler(self):
        """The DDPM training scheduler (for noising latents in objectives)."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.scheduler_config)

    def ddim(self, steps: int):
        from diffusers import DDIMScheduler

        sch = DDIMScheduler.from_config(self.scheduler_config)
        sch.set_timesteps(steps)
        return sch

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents -> uint8 images [B, H, W, 3]."""
        x = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()

    def initial_latents(self, seeds: list[int]) -> torch.Tensor:
        shape = self.latent_shape
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                            for s in seeds]).to(self.device)

    @torch.no_grad()
    def sample(self, prompts: list[str], seeds: list[int], steps: int = 25, guidance: float = 7.5,
               batch_size: int = 256, negative: str = "", progress=None) -> np.ndarray:
        """Generate one image per (prompt, seed); returns uint8 [N, H, W, 3]."""
        assert len(prompts) == len(seeds)
        out = []
        uncond_single = self.encode_text([negative])
        for start in range(0, len(prompts), batch_size):
            p = prompts[start:start + batch_size]
            cond = self.encode_text(p)
            uncond = uncond_single.expand(len(p), -1, -1)
            ctx = torch.cat([uncond, cond])
            sch = self.ddim(steps)
            lat = self.initial_latents(seeds[start:start + batch_size]) * sch.init_noise_sigma
            for t in sch.timesteps:
                inp = sch.scale_model_input(torch.cat([lat, lat]), t)
                eps = self.unet(inp, t, encoder_hidden_states=ctx).sample
                eps_u, eps_c = eps.chunk(2)
                lat = sch.step(eps_u + guidance * (eps_c - eps_u), t, lat).prev_sample
            out.append(self.decode(lat))
            if progress is not None:
                progress(len(p))
        return np.concatenate(out) if out else np.zeros((0,), np.uint8)
