"""Shared state of one erase request: model, trainable weights, prompts, noise, and the UNet calls.

Only the trainable group requires grad; everything else runs frozen. The frozen copy of the
trainable tensors (the parent state) doubles as the SP reference and — through
``torch.func.functional_call`` — as ESD's teacher, so no second UNet is ever held in memory.

Conditioning is family-neutral: ``cond(prompts)`` is the UNet's conditioning (a ``Cond``: SDXL's
pooled embeds and time ids included), ``embed(prompts)`` its per-token hidden states (what the
cross-attention K/V see: UCE, the K/V metric, context tokens); both come from one cache.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from cu_cli.ckpt.keys import is_xattn_kv, split_key


@dataclass
class EraseContext:
    pipe: object  # cu_cli.models.pipeline.Pipeline
    cfg: object  # resolved EraseConfig
    pairs: list  # list[PromptPairs], one per concept
    trainable: dict[str, torch.nn.Parameter]  # canonical key -> parameter (in the UNet)
    parent_values: dict[str, torch.Tensor]  # canonical key -> frozen copy (parent state)
    gen: torch.Generator  # training draws (batches, timesteps, noise)
    seed: int = 0  # the request's --seed (phase streams derive from it)
    world: object | None = None
    anchor_images: object = None  # uint8 [N, H, W, 3] (numpy) or None
    anchor_index: object = None  # (pair, anchor prompt) per image, flattened over pairs
    forget_images: object = None  # EraseDiff: base samples of the target prompts
    selft_masks: dict | None = None  # SelFT's masks (projection re-applies them)
    base_values: object = None  # callable: the root base's values of the trainable keys
    earlier_pairs: object = None  # callable(strict): the chain's earlier requests' prompt pairs
    report: object = None  # callable(label, done, total): progress of slow phases
    _emb: dict = field(default_factory=dict)  # prompt -> one-row Cond
    _ref: dict = field(default_factory=dict)  # cached reference weights (the root base's)

    @property
    def unet(self):
        return self.pipe.unet

    def cond(self, prompts: list[str]):
        """Frozen UNet conditioning (a ``Cond``), computed once per prompt per request."""
        from cu_cli.models.families import Cond

        todo = [p for p in dict.fromkeys(prompts) if p not in self._emb]
        if todo:
            enc = self.pipe.encode(todo)
            for i, p in enumerate(todo):
                self._emb[p] = enc[i:i + 1]
        return Cond.cat([self._emb[p] for p in prompts])

    def embed(self, prompts: list[str]) -> torch.Tensor:
        """Per-token hidden states of ``prompts`` (what the cross-attention K/V see): [B, L, d]."""
        return self.cond(prompts).hidden

    def eps(self, z, t, cond) -> torch.Tensor:
        """Current (student) model output (ε or v, as the base predicts)."""
        return self.pipe.predict(z, t, cond)

    @torch.no_grad()
    def eps_parent(self, z, t, cond) -> torch.Tensor:
        """Output of the frozen parent θₙ₋₁ (trainable tensors swapped for their frozen copies)."""
        override = {split_key(k)[1]: v for k, v in self.parent_values.items()}
        return self.pipe.predict(z, t, cond, params=override)

    @torch.no_grad()
    def eps_base(self, z, t, cond) -> torch.Tensor:
        """Output of the root base θ₀ (its values of the trainable tensors, loaded once)."""
        if "base" not in self._ref:
            dev = self.pipe.device
            self._ref["base"] = {split_key(k)[1]: v.to(dev, self.parent_values[k].dtype)
                                 for k, v in self.base_values().items()}
        return self.pipe.predict(z, t, cond, params=self._ref["base"])

    def progress(self, label: str, done: int, total: int | None) -> None:
        if self.report is not None:
            self.report(label, done, total)

    def randint(self, high: int, n: int) -> torch.Tensor:
        """Drawn on the CPU generator (reproducible on any device), then moved."""
        return torch.randint(0, high, (n,), generator=self.gen).to(self.pipe.device)

    def randn(self, shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen).to(self.pipe.device)

    def rand(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.gen).to(self.pipe.device)

    @contextlib.contextmanager
    def phase(self, label: str):
        """Draw from a separate stream seeded by (seed, label), so optional phases (SelFT
        scoring, EraseDiff's inner loop) do not shift the training stream."""
        from cu_cli._util.seed import derive_seed

        saved = self.gen
        self.gen = torch.Generator().manual_seed(derive_seed(self.seed, label))
        try:
            yield
        finally:
            self.gen = saved


def detach_bos_hooks(unet) -> list:
    """Detach K/V at token 0 (``<|startoftext|>``) in cross-attention, as the Custom Diffusion
    processor used by ConAbl does (its code comment claims the opposite; method-notes §2)."""
    handles = []
    for name, mod in unet.named_modules():
        if is_xattn_kv(name + ".weight"):
            handles.append(mod.register_forward_hook(
                lambda m, inp, out: torch.cat([out[:, :1].detach(), out[:, 1:]], dim=1)))
    return handles
