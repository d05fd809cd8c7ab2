"""A rough cost estimate of an erase request, for the one-line warning before a long CPU run.

Cost is counted in UNet forward-images (a backward ≈ 2 forwards): anchor (and forget) images ×
sampler steps × 2 (CFG), plus ``steps ×`` the objective's ``step_forwards(cfg)``. One
forward-image costs ≈ 8.8e-13 s per (UNet parameter × latent pixel) on a CPU: measured, SD1.5
topology (859.5 M parameters, 64×64 latents) on 2 cores ≈ 3 s (a ConAbl step of batch 4 ≈ 50 s).
"""

from __future__ import annotations

CPU_SECONDS_PER_PARAM_PIXEL = 8.8e-13


def forward_images(cfg, objective) -> float:
    n = 0.0
    if objective.needs.anchor_images:
        n += cfg.anchor_images * cfg.anchor_steps * 2 * (2 if objective.needs.forget_images else 1)
    if objective.kind == "iterative":
        n += cfg.steps * objective.step_forwards(cfg)
    return n


def estimate_seconds(pipe, cfg, objective) -> float:
    params = sum(p.numel() for p in pipe.unet.parameters())
    _, h, w = pipe.latent_shape
    return forward_images(cfg, objective) * params * h * w * CPU_SECONDS_PER_PARAM_PIXEL


def format_duration(sec: float) -> str:
    if sec >= 2 * 86400:
        return f"{sec / 86400:.1f} days"
    if sec >= 2 * 3600:
        return f"{sec / 3600:.1f} h"
    return f"{sec / 60:.0f} min"
