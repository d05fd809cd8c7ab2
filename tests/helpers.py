"""Test helpers: hand-built checkpoints on a base."""

from __future__ import annotations

from cu_cli.ckpt.checkpoint import BaseIdentity, open_checkpoint, write_checkpoint
from cu_cli.ckpt.lineage import make_step


def base_identity(base) -> BaseIdentity:
    return BaseIdentity(base.id, base.arch, base.fingerprint)


def kv_keys(base) -> list[str]:
    return sorted(k for k in base.shapes() if ".attn2.to_k.weight" in k or ".attn2.to_v.weight" in k)


def make_ckpt(path, base, deltas: dict, concepts=("x",), parent: str | None = None,
              ident: BaseIdentity | None = None, measured: dict | None = None) -> str:
    """Write base[key] + delta for each key (float32), optionally as a child of ``parent``."""
    import torch

    parents = [open_checkpoint(parent)] if parent else []
    keys = sorted(set(deltas) | (set(parents[0].tensors) if parents else set()))
    from cu_cli.ckpt.format import load_tensors

    ref = base.get_tensors(keys)
    tensors = {}
    for k in keys:
        start = load_tensors(parent, [k])[k] if parent and k in parents[0].tensors else ref[k]
        tensors[k] = (start.float() + deltas.get(k, torch.zeros_like(start)).float()).contiguous()
    step = make_step("erase", concepts=list(concepts), method="test",
                     parents=[p.payload_sha256 for p in parents], seed=0, argv=["test"],
                     **({"measured": measured} if measured else {}))
    write_checkpoint(str(path), tensors, ident or base_identity(base), step, parents=parents)
    return str(path)


def kv_change(path, base, states) -> float:
    """Σ over the state's attn2 K/V tensors of ‖(W − W_base)·H‖ for token states ``states``."""
    from cu_cli.ckpt.format import load_tensors

    w = load_tensors(path)
    ref = base.get_tensors(sorted(w))
    h = states.reshape(-1, states.shape[-1]).double()
    return sum(float(((w[k] - ref[k]).double() @ h.T).norm()) for k in w
               if ".attn2.to_k." in k or ".attn2.to_v." in k)


def small_state(tiny: str, tmp_path_factory, folder: str) -> str:
    """A one-key checkpoint (base + 0.01 on the first attn2 K/V weight) erasing "cat"."""
    import torch

    from cu_cli.models.base import resolve_base

    base = resolve_base(tiny)
    k = kv_keys(base)[0]
    d = tmp_path_factory.mktemp(folder)
    return make_ckpt(d / "v.safetensors", base, {k: torch.ones(base.shapes()[k]) * 0.01}, ["cat"])
