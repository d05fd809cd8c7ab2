"""Anchor images for ConAbl/EraseDiff: generated once by the **root base**, cached on disk.

Image i uses anchor prompt i mod P and its own seed ``seed + i`` (method-notes §2, cu). The cache
key covers the base fingerprint, prompts, sampler settings, seed, device and dtype, so every request of a chain
(and every chain) on the same base reuses the same images. Stored as uint8 images in a safetensors
file under ``$CU_CACHE_DIR`` (default ``$XDG_CACHE_HOME/cu``) ``/anchors/``.
"""

from __future__ import annotations

import hashlib
import json
import os

from cu_cli._util.fs import atomic_path, cache_root
from cu_cli._util.log import get_logger

log = get_logger(__name__)


def anchor_images(pipe, fingerprint: str, prompts: list[str], n: int, steps: int, guidance: float,
                  seed: int, progress=None):
    """uint8 images [n, H, W, 3] and the prompt index of each (numpy), from cache or generated."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    idx = [i % len(prompts) for i in range(n)]
    spec = {"base": fingerprint, "prompts": prompts, "n": n, "steps": steps,
            "guidance": guidance, "seed": seed, "sampler": "ddim",
            "device": pipe.device.type, "dtype": pipe.dtype}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]
    path = os.path.join(cache_root(), "anchors", f"{key}.safetensors")
    if os.path.exists(path):
        try:
            return load_file(path)["images"].numpy(), np.asarray(idx)
        except Exception:  # a corrupt cache entry is regenerated, never trusted
            log.warning("anchor cache entry %s unreadable; regenerating", path)
    log.info("generating %d anchor images with the base (cached for later requests)", n)
    imgs = pipe.sample([prompts[i] for i in idx], [seed + i for i in range(n)], steps=steps,
                       guidance=guidance, progress=progress)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"images": torch.from_numpy(np.ascontiguousarray(imgs))}, tmp, metadata={"spec": json.dumps(spec)})
    return imgs, np.asarray(idx)
