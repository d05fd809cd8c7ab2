"""Latent data shared by image-based objectives: encode once, sample noised batches."""

from __future__ import annotations

import torch


@torch.no_grad()
def encode_images(pipe, imgs) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, H, W, 3] -> posterior (mean, std) of the VAE, unscaled."""
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(pipe.device)
    means, stds = [], []
    n = min(64, pipe.vae_slice())
    for i in range(0, len(x), n):
        with pipe.autocast():
            d = pipe.vae.encode(x[i:i + n]).latent_dist
        means.append(d.mean.float())
        stds.append(d.std.float())
    return torch.cat(means), torch.cat(stds)


class LatentBatches:
    """z₀ = (μ + σ·ε)·scaling_factor for sampled images; z_t from the DDPM schedule."""

    def __init__(self, pipe, imgs):
        self.mean, self.std = encode_images(pipe, imgs)
        self.scale = pipe.vae.config.scaling_factor
        self.sched = pipe.noise_scheduler()
        self.prediction_type = pipe.prediction_type

    def __len__(self):
        return len(self.mean)

    def noised(self, ctx, idx: torch.Tensor):
        """(z_t, t, ε, z₀) for images ``idx``; t ~ U{0..T−1} per sample."""
        mean, std = self.mean[idx], self.std[idx]
        z0 = (mean + std * ctx.randn(mean.shape)) * self.scale
        if ctx.cfg.hflip:  # ≈ flipping the image (ConAbl --hflip, p = 0.5)
            flip = ctx.rand(len(idx)) < 0.5
            z0 = torch.where(flip[:, None, None, None], z0.flip(-1), z0)
        t = ctx.randint(self.sched.config.num_train_timesteps, len(idx))
        noise = ctx.randn(z0.shape)
        return self.sched.add_noise(z0, noise, t), t, noise, z0

    def target(self, z0, noise, t):
        """What the model should predict for ``prediction_type`` (ε or v)."""
        if self.prediction_type == "v_prediction":
            return self.sched.get_velocity(z0, noise, t)
        return noise


def border_mask(shape, border: int) -> torch.Tensor:
    """M_hw: ones with a zero frame of ``border`` latent pixels (ConAbl's 1-px border on 64×64)."""
    h, w = shape[-2:]
    m = torch.ones(h, w)
    if border > 0:
        m[:border] = 0
        m[-border:] = 0
        m[:, :border] = 0
        m[:, -border:] = 0
    return m
