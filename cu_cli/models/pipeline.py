"""A Stable Diffusion pipeline as plain components, with batched, per-image-seeded sampling.

Sampling is DDIM (Song et al., arXiv 2010.02502, eta = 0) with classifier-free guidance
(Ho & Salimans, arXiv 2207.12598): eps = eps_u + w * (eps_c - eps_u). Every image draws its initial
latent from its own ``torch.Generator`` seeded by the caller, so an image does not depend on which
batch it was in or on what was sampled before it (the reference's global-RNG order bug).

Conditioning goes through the family adapter (models/families.py): ``encode`` returns a
:class:`~cu_cli.models.families.Cond` and :meth:`Pipeline.predict` is the one place the UNet is
called. Precision: ``dtype`` is the compute precision of the frozen parts; below fp32 every forward
runs under ``torch.autocast`` and the parameters listed as trained stay fp32 (models/precision.py).
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
    dtype: str = "fp32"  # compute precision of the frozen parts (fp32 | bf16 | fp16)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def adapter(self):
        from cu_cli.models.families import get_family

        return get_family(self.family)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        cfg = self.unet.config
        return (cfg.in_channels, cfg.sample_size, cfg.sample_size)

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """Image side in pixels: the UNet's sample size times the VAE's downsampling."""
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0]) * self.vae_scale \
            if size else self.adapter.default_resolution

    @property
    def prediction_type(self) -> str:
        """epsilon | v_prediction (the scheduler config, else the family's default)."""
        return self.scheduler_config.get("prediction_type") or self.adapter.default_prediction

    def default_batch_size(self) -> int:
        """Images per sampling batch: a pixel budget (2^20 on a CPU, 2^22 on a GPU), so that peak
        memory does not grow with the number of images (512²: 4 / 16; 1024²: 1 / 4; ≤ 64 px: 256)."""
        budget = 2 ** 22 if self.device.type != "cpu" else 2 ** 20
        return max(1, min(256, budget // self.resolution ** 2))

    def vae_slice(self) -> int:
        """Images per VAE encode/decode call (one at 512² and above, as ``enable_vae_slicing``)."""
        return max(1, 2 ** 18 // self.resolution ** 2)

    def autocast(self):
        from cu_cli.models.precision import autocast

        return autocast(self.device, self.dtype)

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
    def encode(self, prompts: list[str]):
        """The family's conditioning of ``prompts`` (a :class:`Cond`)."""
        with self.autocast():
            return self.adapter.encode(self, list(prompts))

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Token-level states the cross-attention K/V see, padded to the window: [B, L, d]."""
        return self.encode(prompts).hidden

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        from cu_cli.models.families import tokenize

        return tokenize(self.tokenizer, prompts)

    def predict(self, z, t, cond, params: dict | None = None) -> torch.Tensor:
        """UNet output (ε or v) for latents ``z`` at ``t`` under ``cond``; ``params`` overrides
        module parameters by name (``torch.func.functional_call``: the frozen parent)."""
        kwargs = self.adapter.unet_kwargs(cond)
        with self.autocast():
            if params is None:
                out = self.unet(z, t, **kwargs).sample
            else:
                out = torch.func.functional_call(self.unet, params, (z, t), kwargs).sample
        return out if self.dtype == "fp32" else out.float()

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
        """Latents -> uint8 images [B, H, W, 3], decoded :meth:`vae_slice` images at a time."""
        out, n = [], self.vae_slice()
        for i in range(0, len(latents), n):
            with self.autocast():
                x = self.vae.decode(latents[i:i + n] / self.vae.config.scaling_factor).sample
            x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            out.append(x.permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out)

    def initial_latents(self, seeds: list[int]) -> torch.Tensor:
        shape = self.latent_shape
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
                            for s in seeds]).to(self.device)

    @torch.no_grad()
    def sample(self, prompts: list[str], seeds: list[int], steps: int = 25, guidance: float = 7.5,
               batch_size: int | None = None, negative: str = "", progress=None) -> np.ndarray:
        """Generate one image per (prompt, seed); returns uint8 [N, H, W, 3]. ``batch_size``
        images at a time (default :meth:`default_batch_size`); ``progress(n)`` after each batch."""
        from cu_cli.models.families import Cond

        assert len(prompts) == len(seeds)
        batch_size = batch_size or self.default_batch_size()
        out = []
        uncond_single = self.encode([negative])
        for start in range(0, len(prompts), batch_size):
            p = prompts[start:start + batch_size]
            cond = self.encode(p)
            ctx = Cond.cat([uncond_single.expand(len(p)), cond])
            sch = self.ddim(steps)
            lat = self.initial_latents(seeds[start:start + batch_size]) * sch.init_noise_sigma
            for t in sch.timesteps:
                inp = sch.scale_model_input(torch.cat([lat, lat]), t)
                eps = self.predict(inp, t, ctx)
                eps_u, eps_c = eps.chunk(2)
                lat = sch.step(eps_u + guidance * (eps_c - eps_u), t, lat).prev_sample
            out.append(self.decode(lat))
            if progress is not None:
                progress(len(p))
        return np.concatenate(out) if out else np.zeros((0,), np.uint8)
